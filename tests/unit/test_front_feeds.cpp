// Parked live feeds (issue 14), the pure parts: which `_changes` requests are parked and what
// is sent upstream for them, one feed's decisions with an injected clock (heartbeat, timeout,
// re-validation, limit, rows vs park, the check/park race), and the subscription registry
// (coalescing, the sweep's seq comparison, the per-user cap, counters).
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "gateway/front/feed_park.hpp"

namespace f = couchgate::gateway::front;
using namespace std::chrono_literals;

namespace {
f::feed_request parsed(std::string_view q, std::string_view last_event_id = {}) {
  auto r = f::parse_feed_request(q, last_event_id);
  REQUIRE(std::holds_alternative<f::feed_request>(r));
  return std::get<f::feed_request>(r);
}
}  // namespace

TEST_CASE("feeds: which _changes queries are live feeds") {
  CHECK(f::live_feed_kind("?feed=longpoll&since=3") == f::feed_kind::longpoll);
  CHECK(f::live_feed_kind("feed=continuous") == f::feed_kind::continuous);
  CHECK(f::live_feed_kind("?feed=eventsource") == f::feed_kind::eventsource);
  CHECK_FALSE(f::live_feed_kind("?since=0&limit=5"));
  CHECK_FALSE(f::live_feed_kind("?feed=normal"));
  CHECK_FALSE(f::live_feed_kind("?feed=longpoll&descending=true"));  // answered at once: passed through
  CHECK(f::live_feed_kind("?feed=longpoll&descending=false") == f::feed_kind::longpoll);
}

TEST_CASE("feeds: parameters parsed; the upstream read drops feed, heartbeat and timeout") {
  const auto r = parsed("?style=all_docs&feed=longpoll&heartbeat=10000&since=12-g1AA%2Bx&limit=100&seq_interval=100");
  CHECK(r.kind == f::feed_kind::longpoll);
  CHECK(r.since == "12-g1AA+x");
  REQUIRE(r.limit);
  CHECK(*r.limit == 100);
  REQUIRE(r.heartbeat);
  CHECK(*r.heartbeat == 10000ms);
  CHECK(r.passthrough == "style=all_docs&seq_interval=100");
  CHECK(f::upstream_changes_query(r, r.since, 40) == "?style=all_docs&seq_interval=100&since=12-g1AA%2Bx&limit=40");
  CHECK(f::upstream_changes_query(parsed("feed=continuous"), "0", std::nullopt) == "?since=0");

  CHECK(parsed("feed=longpoll&heartbeat=true").heartbeat == f::changes_timeout_default);
  CHECK_FALSE(parsed("feed=longpoll&heartbeat=false").heartbeat);
  CHECK(parsed("feed=longpoll&timeout=1500").timeout == 1500ms);
  CHECK(parsed("feed=longpoll&timeout=900000").timeout == 60000ms);  // capped as CouchDB's changes_timeout
  CHECK(parsed("feed=longpoll").timeout == 60000ms);
  CHECK(parsed("feed=eventsource", "42").since == "42");           // Last-Event-ID
  CHECK(parsed("feed=eventsource&since=7", "42").since == "7");    // since wins
  CHECK(parsed("feed=longpoll&filter=_doc_ids&doc_ids=%5B%22a%22%5D").passthrough ==
        "filter=_doc_ids&doc_ids=%5B%22a%22%5D");

  // Huge values (found writing the front_request fuzz target): a timeout above 2^63 ms once
  // turned negative (an immediate timeout), a heartbeat overflowed the clock or turned negative.
  CHECK(parsed("feed=longpoll&timeout=18446744073709551615").timeout == 60000ms);
  CHECK(parsed("feed=longpoll&timeout=9300000000000000000").timeout == 60000ms);
  CHECK(parsed("feed=longpoll&heartbeat=4294967295").heartbeat == 4294967295ms);
  for (const char* bad : {"feed=longpoll&heartbeat=4294967296", "feed=longpoll&heartbeat=99999999999999",
                          "feed=longpoll&heartbeat=18446744073709551615"}) {
    CAPTURE(bad);
    CHECK(std::holds_alternative<std::string>(f::parse_feed_request(bad)));
  }
  for (const char* bad : {"feed=longpoll&limit=-1", "feed=longpoll&limit=x", "feed=longpoll&heartbeat=0",
                          "feed=longpoll&heartbeat=abc", "feed=longpoll&timeout=soon", "feed=longpoll&since=%zz"}) {
    CAPTURE(bad);
    CHECK(std::holds_alternative<std::string>(f::parse_feed_request(bad)));
  }
}

TEST_CASE("feeds: keys read as CouchDB reads them (decoded, any case): none reaches the server's read as a live feed") {
  // CouchDB lower-cases and decodes each key, the last one winning: "Feed=continuous" after
  // "feed=longpoll" is a continuous feed to it. Passed through, each wake read would have been a
  // continuous feed holding a pool connection.
  const auto r = parsed("?feed=longpoll&Feed=continuous&Heartbeat=1000&TIMEOUT=5&%66eed=longpoll&Style=all_docs");
  CHECK(r.kind == f::feed_kind::longpoll);
  REQUIRE(r.heartbeat);
  CHECK(*r.heartbeat == 1000ms);
  CHECK(r.timeout == 5ms);
  CHECK(r.passthrough == "Style=all_docs");
  const auto q = f::upstream_changes_query(r, "0", std::nullopt);
  for (const char* word : {"eed", "eartbeat", "IMEOUT", "imeout"}) {
    CAPTURE(word);
    CHECK(q.find(word) == std::string::npos);
  }
  CHECK(parsed("?%66eed=continuous").kind == f::feed_kind::continuous);
  CHECK(parsed("?feed=live").kind == f::feed_kind::continuous);  // CouchDB: live is continuous
  CHECK(parsed("?feed=longpoll&Last-Event-ID=9").since == "9");   // a since, to CouchDB
  CHECK(parsed("?feed=longpoll&SINCE=4&limit=2").since == "4");
  CHECK(f::live_feed_kind("?FEED=longpoll") == f::feed_kind::longpoll);
  CHECK(f::live_feed_kind("?feed=live") == f::feed_kind::continuous);
  CHECK(f::live_feed_kind("?%66eed=eventsource") == f::feed_kind::eventsource);
  CHECK_FALSE(f::live_feed_kind("?feed=longpoll&Descending=true"));
  CHECK_FALSE(f::live_feed_kind("?feed=longpoll&feed=normal"));  // the last one wins
}

TEST_CASE("feeds: longpoll answers rows at once, parks on none, times out without a heartbeat") {
  const auto t0 = f::feed_clock::time_point{} + 1h;
  f::feed_state s(parsed("feed=longpoll&since=5&timeout=3000"), t0, t0 + 10s);
  CHECK(s.phase() == f::feed_phase::checking);
  auto d = s.on_fetched(0, "5", false, t0);
  CHECK(d.park);
  CHECK_FALSE(d.send_rows);
  CHECK(s.phase() == f::feed_phase::parked);
  CHECK(s.next_deadline() == t0 + 3s);  // no heartbeat: the timeout
  CHECK(s.due(t0 + 2999ms) == f::feed_due::none);
  CHECK(s.due(t0 + 3s) == f::feed_due::timeout);
  s.on_wake();
  CHECK(s.phase() == f::feed_phase::fetching);
  d = s.on_fetched(2, "9", false, t0 + 1s);
  CHECK(d.send_rows);
  CHECK(d.end);
  CHECK(s.phase() == f::feed_phase::done);
  CHECK(s.since() == "9");
}

TEST_CASE("feeds: a wake during the check or a fetch reads again instead of parking (the check/park race)") {
  const auto t0 = f::feed_clock::time_point{} + 1h;
  f::feed_state s(parsed("feed=longpoll&since=5&heartbeat=10000"), t0, t0 + 10s);
  auto d = s.on_fetched(0, "5", true, t0);
  CHECK(d.fetch_again);
  CHECK_FALSE(d.park);
  CHECK(s.phase() == f::feed_phase::fetching);
  d = s.on_fetched(0, "5", false, t0);
  CHECK(d.park);
}

TEST_CASE("feeds: heartbeats keep the feed open for ever; re-validation comes at the session cache lifetime") {
  const auto t0 = f::feed_clock::time_point{} + 1h;
  f::feed_state s(parsed("feed=longpoll&since=5&heartbeat=1000&timeout=2000"), t0, t0 + 2500ms);
  s.on_fetched(0, "5", false, t0);
  CHECK(s.next_deadline() == t0 + 1s);
  CHECK(s.due(t0 + 1s) == f::feed_due::heartbeat);
  s.heartbeat_sent(t0 + 1s);
  CHECK(s.due(t0 + 1500ms) == f::feed_due::none);
  CHECK(s.due(t0 + 2s) == f::feed_due::heartbeat);  // timeout=2000 does not end a feed with a heartbeat
  s.heartbeat_sent(t0 + 2s);
  CHECK(s.next_deadline() == t0 + 2500ms);
  CHECK(s.due(t0 + 2500ms) == f::feed_due::revalidate);
  s.revalidated(t0 + 12500ms);
  CHECK(s.next_deadline() == t0 + 3s);
  CHECK(s.due(t0 + 3s) == f::feed_due::heartbeat);
  CHECK(s.due(t0 + 100s) == f::feed_due::revalidate);  // the most urgent first
}

TEST_CASE("feeds: continuous sends rows and parks again until its limit; since=now resolved by the check") {
  const auto t0 = f::feed_clock::time_point{} + 1h;
  f::feed_state s(parsed("feed=continuous&since=now&limit=3&heartbeat=5000"), t0, t0 + 10s);
  CHECK(s.fetch_limit() == 3u);
  auto d = s.on_fetched(0, "17-abc", false, t0);
  CHECK(d.park);
  CHECK(s.since() == "17-abc");  // "now" becomes the check's last_seq
  s.on_wake();
  d = s.on_fetched(2, "19-abc", false, t0);
  CHECK(d.send_rows);
  CHECK_FALSE(d.end);
  CHECK(d.park);
  CHECK(s.fetch_limit() == 1u);
  CHECK(s.since() == "19-abc");
  s.on_wake();
  d = s.on_fetched(1, "20-abc", false, t0);
  CHECK(d.send_rows);
  CHECK(d.end);
  CHECK(s.phase() == f::feed_phase::done);

  // A read without rows keeps the client's since (a last_seq may count a write it did not return).
  f::feed_state k(parsed("feed=continuous&since=4"), t0, t0 + 10s);
  k.on_fetched(0, "6", false, t0);
  CHECK(k.since() == "4");
  // Eventsource without limit never ends on rows.
  f::feed_state e(parsed("feed=eventsource&since=0"), t0, t0 + 10s);
  d = e.on_fetched(50, "50", false, t0);
  CHECK(d.send_rows);
  CHECK_FALSE(d.end);
}

TEST_CASE("feed registry: a change wakes each parked subscriber of its database once; bursts coalesce") {
  f::feed_registry reg(10);
  int woken_a = 0, woken_b = 0, woken_other = 0;
  const auto a = reg.subscribe("db1", "alice", [&] { ++woken_a; }, 100);
  const auto b = reg.subscribe("db1", "alice", [&] { ++woken_b; }, 100);
  const auto o = reg.subscribe("db2", "bob", [&] { ++woken_other; }, 100);
  REQUIRE((a && b && o));
  reg.park(*a, 5);
  reg.park(*b, 5);
  reg.park(*o, 5);
  CHECK(reg.stats().parked == 3);
  reg.notify("db1");
  reg.notify("db1");
  reg.notify("db1");
  CHECK(woken_a == 1);
  CHECK(woken_b == 1);
  CHECK(woken_other == 0);
  CHECK(reg.stats().wakes == 2);
  CHECK(reg.stats().coalesced == 4);
  CHECK(reg.take_wake(*a));
  CHECK_FALSE(reg.take_wake(*a));  // one fetch for the burst
  CHECK(reg.stats().fetches == 1);
  reg.notify("unknown-db");
  CHECK(reg.stats().wakes == 2);
}

TEST_CASE("feed registry: a taken wake says when the first change of its burst was announced") {
  auto t = f::feed_clock::time_point{} + std::chrono::seconds(100);
  f::feed_registry reg(10, [&] { return t; });
  const auto s = reg.subscribe("db", "u", [] {}, 0);
  REQUIRE(s);
  reg.park(*s, 1);
  reg.notify("db");
  t += std::chrono::milliseconds(700);
  reg.notify("db");  // coalesced: the wake's latency counts from the first change
  t += std::chrono::milliseconds(300);
  const auto first = reg.take_wake(*s);
  REQUIRE(first);
  CHECK(*first == f::feed_clock::time_point{} + std::chrono::seconds(100));
  reg.notify("db");  // a new burst after the take
  const auto second = reg.take_wake(*s);
  REQUIRE(second);
  CHECK(*second == f::feed_clock::time_point{} + std::chrono::seconds(101));
}

TEST_CASE("feed registry: a change while reading leaves a pending wake that the reader takes before parking") {
  f::feed_registry reg(10);
  int calls = 0;
  const auto s = reg.subscribe("db", "u", [&] { ++calls; }, 0);
  REQUIRE(s);
  reg.notify("db");           // between subscribe and the end of the first check
  CHECK(calls == 0);          // not parked: no wake call, a mark
  CHECK(reg.take_wake(*s));   // the feed reads again instead of parking
  reg.park(*s, 3);
  reg.unpark(*s);
  CHECK(reg.stats().parked == 0);
}

TEST_CASE("feed registry: the sweep wakes subscribers that know less than the database's update_seq") {
  f::feed_registry reg(10);
  int calls = 0;
  const auto s = reg.subscribe("db", "u", [&] { ++calls; }, 0);
  REQUIRE(s);
  reg.park(*s, 7);
  reg.observe("db", 7);
  CHECK(calls == 0);
  reg.observe("db", 9);
  CHECK(calls == 1);
  CHECK(reg.take_wake(*s));
  // A filtered read found nothing: it still saw everything up to 9, so 9 wakes nobody again.
  reg.park(*s, 7);
  reg.observe("db", 9);
  CHECK(calls == 1);
  reg.observe("db", 10);
  CHECK(calls == 2);
  // No seq known: any observation wakes once, then the wake's seq is what it knows.
  const auto t = reg.subscribe("db2", "u", [&] { ++calls; }, 0);
  reg.park(*t, std::nullopt);
  reg.observe("db2", 1);
  CHECK(calls == 3);
  CHECK(reg.take_wake(*t));
  reg.park(*t, std::nullopt);
  reg.observe("db2", 1);
  CHECK(calls == 3);
  CHECK(reg.watched().size() == 2);
}

TEST_CASE("feed registry: per-user cap, unsubscribe releases; notify_all wakes everyone; bytes estimated") {
  f::feed_registry reg(2);
  const auto a = reg.subscribe("db", "alice", nullptr, 1000);
  const auto b = reg.subscribe("db", "alice", nullptr, 1000);
  CHECK(a);
  CHECK(b);
  CHECK_FALSE(reg.subscribe("db", "alice", nullptr, 1000));
  const auto c = reg.subscribe("db", "bob", nullptr, 1000);
  CHECK(c);
  CHECK(reg.stats().subscribed == 3);
  CHECK(reg.stats().bytes >= 3000);
  reg.unsubscribe(*a);
  CHECK(reg.subscribe("db", "alice", nullptr, 1000));
  reg.park(*b, 1);
  reg.park(*c, 1);
  reg.notify_all();
  CHECK(reg.take_wake(*b));
  CHECK(reg.take_wake(*c));
  reg.unsubscribe(*b);
  reg.unsubscribe(*c);
  reg.unsubscribe(*b);  // twice: harmless
  CHECK(reg.stats().parked == 0);
  CHECK(reg.stats().subscribed == 1);
}

TEST_CASE("feed registry: a user's changed document marks each of their feeds for a credential check; parked ones are woken") {
  f::feed_registry reg(3);
  int woken_a = 0, woken_b = 0, woken_bob = 0;
  const auto a = reg.subscribe("db-alice", f::feed_owner("alice", "k1"), [&] { ++woken_a; }, 0);
  const auto b = reg.subscribe("db-shared", f::feed_owner("alice", "k2"), [&] { ++woken_b; }, 0);
  const auto bob = reg.subscribe("db-bob", f::feed_owner("bob", "k3"), [&] { ++woken_bob; }, 0);
  const auto anon = reg.subscribe("db-shared", f::feed_owner("", "k4"), nullptr, 0);
  REQUIRE(a);
  REQUIRE(b);
  REQUIRE(bob);
  REQUIRE(anon);
  CHECK(f::feed_owner("", "k4") != f::feed_owner("k4", ""));  // a name never passes for a credential key
  reg.park(*a, 1);
  reg.park(*bob, 1);
  // b is reading: it is not woken, and sees the mark before it parks.
  reg.recheck_user(f::feed_owner("alice", {}));
  CHECK(woken_a == 1);
  CHECK(woken_b == 0);
  CHECK(woken_bob == 0);
  CHECK_FALSE(reg.take_wake(*a));  // no change of the database is pending: no read
  CHECK(reg.take_recheck(*a));
  CHECK_FALSE(reg.take_recheck(*a));  // taken once
  CHECK(reg.take_recheck(*b));
  CHECK_FALSE(reg.take_recheck(*bob));
  CHECK_FALSE(reg.take_recheck(*anon));
  // Twice before it is taken: one wake.
  reg.recheck_user(f::feed_owner("alice", {}));
  reg.recheck_user(f::feed_owner("alice", {}));
  CHECK(woken_a == 2);
  // Unsubscribed feeds are no longer the user's; the cap counts what is left.
  reg.unsubscribe(*a);
  reg.unsubscribe(*b);
  reg.recheck_user(f::feed_owner("alice", {}));
  CHECK(woken_a == 2);
  CHECK(reg.subscribe("db-alice", f::feed_owner("alice", "k1"), nullptr, 0));
  CHECK(reg.subscribe("db-alice", f::feed_owner("alice", "k1"), nullptr, 0));
  CHECK(reg.subscribe("db-alice", f::feed_owner("alice", "k1"), nullptr, 0));
  CHECK_FALSE(reg.subscribe("db-alice", f::feed_owner("alice", "k1"), nullptr, 0));
  reg.recheck_user(f::feed_owner("nobody", {}));  // no feeds: nothing happens
}

TEST_CASE("feed read gate: at most `limit` turns; the rest wait in line, deliveries before first checks, each in order") {
  f::feed_read_gate gate(2);
  std::vector<int> woken;
  const auto wake = [&](int who) { return [&woken, who] { woken.push_back(who); }; };
  CHECK(gate.enter(1, false, wake(1)));
  CHECK(gate.enter(2, true, wake(2)));
  CHECK(gate.enter(1, false, wake(1)));  // asked again while holding it: still its turn
  CHECK_FALSE(gate.enter(3, false, wake(3)));
  CHECK_FALSE(gate.enter(4, true, wake(4)));
  CHECK_FALSE(gate.enter(5, false, wake(5)));
  CHECK_FALSE(gate.enter(6, true, wake(6)));
  CHECK_FALSE(gate.enter(3, false, wake(3)));  // asked again while in line: one place
  CHECK(gate.reading() == 2);
  CHECK(gate.waiting() == 4);
  // A turn ends: handed to the oldest delivery, then the next, then the first checks in order.
  gate.leave(1);
  CHECK(woken == std::vector<int>{4});
  CHECK(gate.enter(4, true, wake(4)));
  CHECK(gate.reading() == 2);
  gate.leave(2);
  CHECK(woken == std::vector<int>{4, 6});
  // One that leaves the line (its feed ended) is skipped.
  gate.leave(3);
  CHECK(gate.waiting() == 1);
  gate.leave(4);
  CHECK(woken == std::vector<int>{4, 6, 5});
  // A handed-over turn counts before it is taken; leaving without taking it passes it on.
  CHECK(gate.reading() == 2);
  gate.leave(5);
  gate.leave(6);
  CHECK(gate.reading() == 0);
  CHECK(gate.waiting() == 0);
  gate.leave(6);  // neither: nothing happens
  CHECK(gate.enter(7, false, wake(7)));
  // A new feed does not pass those in line: with the line empty it reads at once, otherwise waits.
  CHECK(gate.enter(8, false, wake(8)));
  CHECK_FALSE(gate.enter(9, false, wake(9)));
  gate.leave(7);
  CHECK(woken.back() == 9);
  CHECK(f::feed_read_gate(0).limit() == 1);
}

TEST_CASE("feed read gate: ten thousand feeds that left the line are skipped; the one still waiting gets the turn") {
  f::feed_read_gate gate(1);
  REQUIRE(gate.enter(0, false, nullptr));
  for (std::uint64_t i = 1; i <= 10000; ++i) {
    CHECK_FALSE(gate.enter(i, false, nullptr));
    gate.leave(i);
  }
  CHECK(gate.waiting() == 0);
  CHECK_FALSE(gate.enter(20000, false, nullptr));
  gate.leave(0);  // the only one still waiting gets the turn
  CHECK(gate.enter(20000, false, nullptr));
  CHECK(gate.reading() == 1);
}

TEST_CASE("feeds: a feed waiting for its turn to read looks up at its next heartbeat, or at its end without one") {
  const auto t0 = f::feed_clock::time_point{} + 1h;
  f::feed_state beating(parsed("feed=longpoll&since=5&heartbeat=1000"), t0, t0 + 10s);
  CHECK(beating.turn_deadline() == t0 + 1s);
  CHECK(beating.on_busy(t0 + 1s) == f::feed_busy::heartbeat);
  beating.heartbeat_sent(t0 + 1s);
  CHECK(beating.turn_deadline() == t0 + 2s);
  f::feed_state quiet(parsed("feed=longpoll&since=5&timeout=3000"), t0, t0 + 1s);
  CHECK(quiet.turn_deadline() == t0 + 3s);  // not the re-validation: that waits for the parked loop
  CHECK(quiet.on_busy(t0 + 3s) == f::feed_busy::timeout);
  f::feed_state now(parsed("feed=longpoll&since=now&timeout=3000"), t0, t0 + 10s);
  CHECK(now.on_busy(t0 + 3s) == f::feed_busy::refuse);  // never read: no position to answer with
}

TEST_CASE("feeds: a busy pool makes a read queue up to the feed's own end, not 503 after the pool's wait") {
  const auto t0 = f::feed_clock::time_point{} + 1h;
  const auto pool_wait = 5000ms;
  // The first exchange (the credential's check, the first read): the feed's timeout or heartbeat.
  CHECK(f::feed_pool_wait(parsed("feed=longpoll&since=5&timeout=30000"), pool_wait) == 30000ms);
  CHECK(f::feed_pool_wait(parsed("feed=longpoll&since=5"), pool_wait) == 60000ms);  // CouchDB's default timeout
  CHECK(f::feed_pool_wait(parsed("feed=continuous&heartbeat=10000"), pool_wait) == 10000ms);
  CHECK(f::feed_pool_wait(parsed("feed=longpoll&timeout=100"), pool_wait) == pool_wait);  // never less than the pool's

  SUBCASE("longpoll with a timeout: waits until it, then times out as CouchDB would (no 503)") {
    f::feed_state s(parsed("feed=longpoll&since=5&timeout=30000"), t0, t0 + 600s);
    CHECK(s.pool_wait(t0, pool_wait) == 30000ms);
    CHECK(s.pool_wait(t0 + 20s, pool_wait) == 10000ms);  // what is left of it
    CHECK(s.pool_wait(t0 + 29s, pool_wait) == pool_wait);
    // A read after a wake carries a write: it waits as a plain request does, whatever is left
    // of the feed, and queues again while the feed goes on.
    CHECK(s.pool_wait(t0, pool_wait, true) == pool_wait);
    CHECK(s.pool_wait(t0 + 20s, pool_wait, true) == pool_wait);
    CHECK(s.on_busy(t0 + 10s) == f::feed_busy::retry);  // woken early: queue again
    CHECK(s.on_busy(t0 + 30s) == f::feed_busy::timeout);
  }
  SUBCASE("since=now never resolved: 503 at the timeout (there is no seq to answer with)") {
    f::feed_state s(parsed("feed=longpoll&since=now&timeout=30000"), t0, t0 + 600s);
    CHECK(s.on_busy(t0 + 10s) == f::feed_busy::retry);
    CHECK(s.on_busy(t0 + 30s) == f::feed_busy::refuse);
  }
  SUBCASE("a feed with a heartbeat waits until the heartbeat is due, writes it, and queues again") {
    f::feed_state s(parsed("feed=continuous&since=5&heartbeat=10000"), t0, t0 + 600s);
    CHECK(s.pool_wait(t0, pool_wait) == 10000ms);
    CHECK(s.on_busy(t0 + 10s) == f::feed_busy::heartbeat);
    s.heartbeat_sent(t0 + 10s);
    CHECK(s.pool_wait(t0 + 10s, pool_wait) == 10000ms);
    CHECK(s.pool_wait(t0 + 25s, pool_wait) == pool_wait);  // heartbeat overdue: at least the pool's wait
  }
}

TEST_CASE("feeds: a delivery slower than the threshold is warned about, at most once per period") {
  f::delivery_lag_warning w(5s, 60s);
  const auto t0 = f::feed_clock::time_point{} + 1000s;
  CHECK_FALSE(w.due(t0, 5s));         // at the threshold: not late
  CHECK(w.due(t0, 6s));               // the first late one
  CHECK_FALSE(w.due(t0 + 1s, 30s));   // within the minute: once is enough
  CHECK_FALSE(w.due(t0 + 59s, 6s));
  CHECK_FALSE(w.due(t0 + 61s, 1s));   // the minute is over, but this one was on time
  CHECK(w.due(t0 + 62s, 7s));         // late again: warned again
  CHECK_FALSE(w.due(t0 + 63s, 7s));
}
