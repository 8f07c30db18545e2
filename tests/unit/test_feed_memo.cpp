// Skipping the first check of a re-issued longpoll (issue 14, feed_memo.hpp): the key, the pure
// decision with an injected clock, the bounded store, and the registry's rule that no change
// announced after a read STARTED may be skipped over (a follower restart or sweep mode never
// skips).
#include <doctest/doctest.h>

#include <string>

#include "gateway/front/feed_memo.hpp"
#include "gateway/front/feed_park.hpp"

namespace f = couchgate::gateway::front;
using namespace std::chrono_literals;

namespace {
f::feed_request longpoll(std::string since, std::string_view rest = "") {
  auto r = f::parse_feed_request("feed=longpoll&since=" + since + (rest.empty() ? "" : "&") + std::string(rest));
  REQUIRE(std::holds_alternative<f::feed_request>(r));
  return std::get<f::feed_request>(r);
}
const f::feed_clock::time_point t0{};
}  // namespace

TEST_CASE("feed memo: the key is the feed apart from since") {
  const auto a = f::feed_memo_key("cred1", "GET", "?feed=longpoll&since=5-x&style=all_docs&timeout=1000", "");
  CHECK(a == f::feed_memo_key("cred1", "GET", "feed=longpoll&style=all_docs&since=9-y&timeout=1000", ""));
  CHECK(a != f::feed_memo_key("cred2", "GET", "feed=longpoll&since=5-x&style=all_docs&timeout=1000", ""));
  CHECK(a != f::feed_memo_key("cred1", "GET", "feed=longpoll&since=5-x&timeout=1000", ""));
  CHECK(a != f::feed_memo_key("cred1", "POST", "feed=longpoll&since=5-x&style=all_docs&timeout=1000", ""));
  CHECK(f::feed_memo_key("c", "POST", "feed=longpoll", R"({"doc_ids":["a"]})") !=
        f::feed_memo_key("c", "POST", "feed=longpoll", R"({"doc_ids":["b"]})"));
  // `sincex=` is another parameter, not since.
  CHECK(f::feed_memo_key("c", "GET", "feed=longpoll&sincex=1", "") != f::feed_memo_key("c", "GET", "feed=longpoll", ""));
}

TEST_CASE("feed memo: an answer is complete unless the limit or pending says more is there") {
  CHECK(f::answer_complete(0, std::nullopt, std::nullopt));
  CHECK(f::answer_complete(3, std::nullopt, 0LL));
  CHECK_FALSE(f::answer_complete(3, std::nullopt, 2LL));
  CHECK_FALSE(f::answer_complete(100, 100, std::nullopt));  // PouchDB's batch_size: maybe more
  CHECK(f::answer_complete(99, 100, 0LL));
}

TEST_CASE("feed memo: the decision: same since, not expired, same generation, follower live, longpoll only") {
  const f::answered_feed rec{"k", "12-abc", 3, t0 + 10s};
  const auto r = longpoll("12-abc");
  CHECK(f::may_skip_first_check(&rec, r, true, 3, t0 + 1s));
  CHECK_FALSE(f::may_skip_first_check(nullptr, r, true, 3, t0 + 1s));
  CHECK_FALSE(f::may_skip_first_check(&rec, longpoll("11-abc"), true, 3, t0 + 1s));  // another since
  CHECK_FALSE(f::may_skip_first_check(&rec, r, true, 3, t0 + 10s));                  // expired with the session cache
  CHECK_FALSE(f::may_skip_first_check(&rec, r, true, 4, t0 + 1s));                   // follower restarted since
  CHECK_FALSE(f::may_skip_first_check(&rec, r, false, 3, t0 + 1s));                  // sweep mode
  CHECK_FALSE(f::may_skip_first_check(&rec, longpoll("12-abc", "limit=0"), true, 3, t0 + 1s));
  auto cont = r;
  cont.kind = f::feed_kind::continuous;
  CHECK_FALSE(f::may_skip_first_check(&rec, cont, true, 3, t0 + 1s));
  const f::answered_feed now_rec{"k", "now", 3, t0 + 10s};
  CHECK_FALSE(f::may_skip_first_check(&now_rec, longpoll("now"), true, 3, t0 + 1s));
}

TEST_CASE("feed memo: the store is bounded per database and in all; a database's change forgets its records") {
  f::answered_feeds store(4, 2);
  const auto rec = [](std::string key) { return f::answered_feed{std::move(key), "1", 1, t0 + 1h}; };
  store.put("db1", rec("a"));
  store.put("db1", rec("b"));
  store.put("db1", rec("c"));  // per-database cap 2: "a" goes
  CHECK(store.size() == 2);
  CHECK(store.find("db1", "a") == nullptr);
  CHECK(store.find("db1", "c") != nullptr);
  store.put("db1", rec("c"));  // replaced, not added
  CHECK(store.size() == 2);
  store.put("db2", rec("x"));
  store.put("db3", rec("y"));
  CHECK(store.size() == 4);
  CHECK(store.find("db2", "x") != nullptr);  // db2 used: db1 is now the least recently used
  store.put("db4", rec("z"));
  CHECK(store.size() <= 4);
  CHECK(store.find("db1", "c") == nullptr);
  CHECK(store.find("db4", "z") != nullptr);
  CHECK(store.bytes() > 0);
  store.forget_db("db4");
  CHECK(store.find("db4", "z") == nullptr);
  store.clear();
  CHECK(store.size() == 0);
  CHECK(store.bytes() == 0);
}

TEST_CASE("feed registry: a re-issued longpoll skips its first check only when nothing was announced since the read started") {
  f::feed_registry reg(10);
  const auto r = longpoll("7-x");
  const auto sub = [&] { return *reg.subscribe("db", "u", [] {}, 0); };
  // A feed answered from "7-x" ends (unsubscribes); its client re-issues the request (subscribes).
  const auto answered_and_reissued = [&] {
    const auto id = sub();
    const auto mark = reg.mark_read("db");
    reg.remember("db", "k", "7-x", mark, t0 + 1h);
    reg.unsubscribe(id);
    sub();
  };

  SUBCASE("sweep mode (follower not live): never remembered, never skipped") {
    answered_and_reissued();
    CHECK_FALSE(reg.skip_first_check("db", "k", r, t0));
  }
  reg.set_follower_live(true);
  SUBCASE("nothing announced: the next request from that since skips; from another since it reads") {
    answered_and_reissued();
    CHECK_FALSE(reg.skip_first_check("db", "k", longpoll("6-x"), t0));
    CHECK_FALSE(reg.skip_first_check("db", "other-key", r, t0));
    CHECK(reg.skip_first_check("db", "k", r, t0));
    CHECK_FALSE(reg.skip_first_check("db", "k", r, t0 + 1h));  // the session cache lifetime
    CHECK(reg.stats().skipped == 1);
    CHECK(reg.stats().reads == 1);
    CHECK(reg.stats().remembered == 1);
  }
  SUBCASE("answers without a read pass the record's expiry on: the chain ends a lifetime after the last real read") {
    answered_and_reissued();  // the real read, remembered until t0 + 1h
    // The re-issued feed skips its read, times out and is remembered with what it was handed,
    // again and again (a write whose announcement CouchDB never made stays unread meanwhile)...
    for (auto at = t0; at < t0 + 1h; at += 20min) {
      const auto expires = reg.skip_first_check("db", "k", r, at);
      REQUIRE(expires.has_value());
      CHECK(*expires == t0 + 1h);
      reg.remember("db", "k", "7-x", reg.mark_read("db", false), *expires);
    }
    // ... until the first read's lifetime is over: the next one reads.
    CHECK_FALSE(reg.skip_first_check("db", "k", r, t0 + 1h + 1s));
  }
  SUBCASE("a change announced DURING the read (after its mark): not remembered") {
    sub();
    const auto mark = reg.mark_read("db");
    reg.notify("db");
    reg.remember("db", "k", "7-x", mark, t0 + 1h);
    CHECK_FALSE(reg.skip_first_check("db", "k", r, t0));
  }
  SUBCASE("a change of another database does not matter; one of this database after the answer forgets it") {
    sub();
    reg.subscribe("other", "u2", [] {}, 0);
    const auto mark = reg.mark_read("db");
    reg.notify("other");
    reg.remember("db", "k", "7-x", mark, t0 + 1h);
    CHECK(reg.stats().remembered == 1);
    reg.notify("db");  // also when nobody is subscribed to it
    CHECK_FALSE(reg.skip_first_check("db", "k", r, t0));
  }
  SUBCASE("announced with no subscriber between the answer and the re-issue: forgotten") {
    const auto id = sub();
    const auto mark = reg.mark_read("db");
    reg.remember("db", "k", "7-x", mark, t0 + 1h);
    reg.unsubscribe(id);
    reg.notify("db");
    sub();
    CHECK_FALSE(reg.skip_first_check("db", "k", r, t0));
  }
  SUBCASE("a follower restart (notify_all) or a switch to sweep mode forgets everything, also marks taken before") {
    sub();
    const auto mark = reg.mark_read("db");
    reg.notify_all();
    reg.remember("db", "k", "7-x", mark, t0 + 1h);
    CHECK_FALSE(reg.skip_first_check("db", "k", r, t0));
    const auto mark2 = reg.mark_read("db");
    reg.remember("db", "k", "7-x", mark2, t0 + 1h);
    reg.set_follower_live(false);
    reg.set_follower_live(true);
    CHECK_FALSE(reg.skip_first_check("db", "k", r, t0));
  }
  SUBCASE("a read of a database without subscribers is never remembered") {
    const auto mark = reg.mark_read("db");
    sub();
    reg.remember("db", "k", "7-x", mark, t0 + 1h);
    CHECK_FALSE(reg.skip_first_check("db", "k", r, t0));
  }
}
