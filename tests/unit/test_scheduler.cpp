#include <doctest/doctest.h>

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "replicator/scheduler.hpp"

using couchgate::replicator::backoff_policy;
using couchgate::replicator::sched_clock;
using couchgate::replicator::scheduler;
using namespace std::chrono_literals;
using strings = std::vector<std::string>;

namespace {

const sched_clock::time_point t0 = sched_clock::time_point{} + 1h;

scheduler make(std::size_t max_active, backoff_policy bp = {1000ms, 8000ms}) {
  scheduler::options o;
  o.max_active = max_active;
  o.backoff = bp;
  return scheduler{o, [] { return 0.5; }};
}

void check_counts(const scheduler& s, std::size_t known, std::size_t dirty, std::size_t active,
                  std::size_t backing_off) {
  const auto c = s.count(t0);
  CHECK(c.known == known);
  CHECK(c.dirty == dirty);
  CHECK(c.active == active);
  CHECK(c.backing_off == backing_off);
}

}  // namespace

TEST_CASE("scheduler: unknown db marked dirty becomes known and queued") {
  auto s = make(4);
  check_counts(s, 0, 0, 0, 0);
  s.mark_dirty("a", t0);
  check_counts(s, 1, 1, 0, 0);
  CHECK_FALSE(s.is_active("a"));
  CHECK(s.take(10, t0) == strings{"a"});
  CHECK(s.is_active("a"));
  check_counts(s, 1, 0, 1, 0);
  s.complete("a", false, t0);
  check_counts(s, 1, 0, 0, 0);
  CHECK(s.take(10, t0).empty());
}

TEST_CASE("scheduler: at most max_active at once, and take's limit is honoured") {
  auto s = make(2);
  for (auto db : {"a", "b", "c", "d", "e"}) s.mark_dirty(db, t0);
  CHECK(s.take(10, t0) == strings{"a", "b"});
  CHECK(s.take(10, t0).empty());
  check_counts(s, 5, 3, 2, 0);
  s.complete("a", false, t0);
  CHECK(s.take(10, t0) == strings{"c"});
  CHECK(s.take(10, t0).empty());
  s.complete("b", false, t0);
  s.complete("c", false, t0);
  CHECK(s.take(1, t0) == strings{"d"});
  CHECK(s.take(0, t0).empty());
  CHECK(s.take(5, t0) == strings{"e"});
  check_counts(s, 5, 0, 2, 0);
}

TEST_CASE("scheduler: max_active 0 never activates anything") {
  auto s = make(0);
  s.mark_dirty("a", t0);
  CHECK(s.take(10, t0).empty());
  check_counts(s, 1, 1, 0, 0);
}

TEST_CASE("scheduler: FIFO fairness, more_pending goes to the back") {
  auto s = make(1);
  for (auto db : {"a", "b", "c"}) s.mark_dirty(db, t0);
  std::string turns;
  for (int i = 0; i < 12; ++i) {
    auto got = s.take(10, t0 + std::chrono::seconds{i});
    REQUIRE(got.size() == 1);
    turns += got[0];
    s.complete(got[0], true, t0 + std::chrono::seconds{i});
  }
  CHECK(turns == "abcabcabcabc");
  check_counts(s, 3, 3, 0, 0);
}

TEST_CASE("scheduler: a hot db never takes two turns in a row while others wait") {
  auto s = make(1);
  s.mark_dirty("hot", t0);
  std::string prev;
  long hot_turns = 0, other_turns = 0;
  for (int i = 0; i < 2000; ++i) {
    const auto now = t0 + std::chrono::milliseconds{i};
    // Others become dirty now and then; "hot" always has a million more docs pending.
    if (i % 3 == 0) s.mark_dirty("x" + std::to_string(i % 7), now);
    if (i % 5 == 0) s.mark_dirty("y" + std::to_string(i % 4), now);
    const std::size_t waiting = s.count(now).dirty;
    auto got = s.take(1, now);
    REQUIRE(got.size() == 1);
    if (prev == "hot" && got[0] == "hot") {
      CHECK(waiting == 1);  // only legal when nobody else was queued
    }
    if (got[0] == "hot") {
      ++hot_turns;
      s.complete("hot", true, now);
    } else {
      ++other_turns;
      s.complete(got[0], false, now);
    }
    prev = got[0];
  }
  CHECK(hot_turns > 0);
  CHECK(other_turns > 0);
}

TEST_CASE("scheduler: marking a queued db keeps its place and does not duplicate it") {
  auto s = make(10);
  s.mark_dirty("a", t0);
  s.mark_dirty("b", t0);
  s.mark_dirty("a", t0 + 1s);
  s.mark_dirty("a", t0 + 2s);
  check_counts(s, 2, 2, 0, 0);
  CHECK(s.take(10, t0 + 3s) == strings{"a", "b"});
  CHECK(s.take(10, t0 + 3s).empty());
}

TEST_CASE("scheduler: an idle db marked dirty joins the back of the queue") {
  auto s = make(1);
  s.mark_dirty("a", t0);
  CHECK(s.take(1, t0) == strings{"a"});
  s.complete("a", false, t0);
  s.mark_dirty("b", t0 + 1s);
  s.mark_dirty("a", t0 + 2s);
  CHECK(s.take(1, t0 + 3s) == strings{"b"});
}

TEST_CASE("scheduler: dirty while active is rerun once, not lost") {
  auto s = make(4);
  s.mark_dirty("a", t0);
  CHECK(s.take(4, t0) == strings{"a"});
  SUBCASE("once") { s.mark_dirty("a", t0 + 1s); }
  SUBCASE("twice") {
    s.mark_dirty("a", t0 + 1s);
    s.mark_dirty("a", t0 + 2s);
  }
  check_counts(s, 1, 0, 1, 0);
  s.complete("a", false, t0 + 3s);
  check_counts(s, 1, 1, 0, 0);
  CHECK(s.take(4, t0 + 3s) == strings{"a"});
  CHECK(s.take(4, t0 + 3s).empty());
  s.complete("a", false, t0 + 4s);
  check_counts(s, 1, 0, 0, 0);
  CHECK(s.take(4, t0 + 4s).empty());
}

TEST_CASE("scheduler: the rerun goes behind databases already waiting") {
  auto s = make(1);
  s.mark_dirty("a", t0);
  CHECK(s.take(1, t0) == strings{"a"});
  s.mark_dirty("b", t0 + 1s);
  s.mark_dirty("a", t0 + 2s);
  s.complete("a", false, t0 + 3s);
  CHECK(s.take(1, t0 + 3s) == strings{"b"});
  s.complete("b", false, t0 + 4s);
  CHECK(s.take(1, t0 + 4s) == strings{"a"});
}

TEST_CASE("scheduler: backoff grows exponentially, caps, and retries at exactly ready_at") {
  auto s = make(4);  // base 1s, cap 8s, rnd 0.5 -> 750, 1500, 3000, 6000, 6000
  s.mark_dirty("a", t0);
  auto now = t0;
  for (auto want : {750ms, 1500ms, 3000ms, 6000ms, 6000ms, 6000ms}) {
    CAPTURE(want.count());
    REQUIRE(s.take(4, now) == strings{"a"});
    CHECK(s.fail("a", now) == want);
    CHECK_FALSE(s.is_active("a"));
    check_counts(s, 1, 0, 0, 1);
    CHECK(s.next_wakeup() == now + want);
    CHECK(s.take(4, now + want - 1ms).empty());
    now += want;
  }
  CHECK(s.failures("a") == 6);
  CHECK(s.take(4, now) == strings{"a"});
}

TEST_CASE("scheduler: a failed db retries even if nobody marks it dirty") {
  auto s = make(4);
  s.mark_dirty("a", t0);
  REQUIRE(s.take(4, t0) == strings{"a"});
  s.fail("a", t0);
  CHECK(s.take(4, t0 + 10s) == strings{"a"});
}

TEST_CASE("scheduler: success resets the failure count") {
  auto s = make(4);
  s.mark_dirty("a", t0);
  auto now = t0;
  for (int i = 0; i < 3; ++i) {
    REQUIRE(s.take(4, now) == strings{"a"});
    now += s.fail("a", now);
  }
  CHECK(s.failures("a") == 3);
  REQUIRE(s.take(4, now) == strings{"a"});
  s.complete("a", false, now);
  CHECK(s.failures("a") == 0);
  s.mark_dirty("a", now);
  REQUIRE(s.take(4, now) == strings{"a"});
  CHECK(s.fail("a", now) == 750ms);
}

TEST_CASE("scheduler: one failing db does not delay others") {
  auto s = make(1);
  s.mark_dirty("a", t0);
  s.mark_dirty("b", t0);
  REQUIRE(s.take(1, t0) == strings{"a"});
  s.fail("a", t0);
  CHECK(s.take(1, t0) == strings{"b"});
  s.complete("b", false, t0);
  s.mark_dirty("c", t0 + 1ms);
  CHECK(s.take(1, t0 + 1ms) == strings{"c"});
  CHECK(s.failures("b") == 0);
  CHECK(s.failures("c") == 0);
}

TEST_CASE("scheduler: marking a backing-off db dirty does not shorten its backoff") {
  auto s = make(4);
  s.mark_dirty("a", t0);
  REQUIRE(s.take(4, t0) == strings{"a"});
  REQUIRE(s.fail("a", t0) == 750ms);
  s.mark_dirty("a", t0 + 1ms);
  s.mark_dirty("a", t0 + 2ms);
  check_counts(s, 1, 0, 0, 1);
  CHECK(s.next_wakeup() == t0 + 750ms);
  CHECK(s.take(4, t0 + 100ms).empty());
  CHECK(s.take(4, t0 + 749ms).empty());
  CHECK(s.take(4, t0 + 750ms) == strings{"a"});
  CHECK(s.take(4, t0 + 750ms).empty());  // retried once, not once per mark
}

TEST_CASE("scheduler: dirty while active then failing retries once after the backoff") {
  auto s = make(4);
  s.mark_dirty("a", t0);
  REQUIRE(s.take(4, t0) == strings{"a"});
  s.mark_dirty("a", t0 + 1ms);
  REQUIRE(s.fail("a", t0 + 2ms) == 750ms);
  check_counts(s, 1, 0, 0, 1);
  CHECK(s.take(4, t0 + 100ms).empty());
  CHECK(s.take(4, t0 + 752ms) == strings{"a"});
  s.complete("a", false, t0 + 800ms);
  CHECK(s.take(4, t0 + 800ms).empty());
}

TEST_CASE("scheduler: ready backoffs are appended in ready_at order, behind queued ones") {
  auto s = make(3);
  for (auto db : {"a", "b", "c"}) s.mark_dirty(db, t0);
  REQUIRE(s.take(3, t0) == strings{"a", "b", "c"});
  // a fails twice (750, then 1500: ready at 2250ms), b once (750 at 750ms: ready at 1500ms).
  s.fail("a", t0);
  REQUIRE(s.take(1, t0 + 750ms) == strings{"a"});
  s.fail("a", t0 + 750ms);
  s.fail("b", t0 + 750ms);
  check_counts(s, 3, 0, 1, 2);
  CHECK(s.next_wakeup() == t0 + 1500ms);
  s.complete("c", true, t0 + 1s);         // c waits in the queue before either is ready
  CHECK(s.take(3, t0 + 10s) == strings{"c", "b", "a"});
  CHECK_FALSE(s.next_wakeup().has_value());
}

TEST_CASE("scheduler: next_wakeup is the earliest ready_at") {
  auto s = make(4);
  CHECK_FALSE(s.next_wakeup().has_value());
  s.mark_dirty("a", t0);
  s.mark_dirty("b", t0);
  REQUIRE(s.take(4, t0) == strings{"a", "b"});
  s.fail("a", t0 + 5s);
  CHECK(s.next_wakeup() == t0 + 5s + 750ms);
  s.fail("b", t0);
  CHECK(s.next_wakeup() == t0 + 750ms);
  CHECK(s.take(4, t0 + 750ms) == strings{"b"});
  CHECK(s.next_wakeup() == t0 + 5s + 750ms);
  CHECK(s.take(4, t0 + 6s) == strings{"a"});
  CHECK_FALSE(s.next_wakeup().has_value());
}

TEST_CASE("scheduler: remove while active frees the slot; a late complete or fail is ignored") {
  auto s = make(1);
  s.mark_dirty("a", t0);
  s.mark_dirty("b", t0);
  REQUIRE(s.take(1, t0) == strings{"a"});
  s.remove("a");
  check_counts(s, 1, 1, 0, 0);
  CHECK_FALSE(s.is_active("a"));
  CHECK(s.take(1, t0) == strings{"b"});
  SUBCASE("complete") { s.complete("a", true, t0 + 1s); }
  SUBCASE("fail") { CHECK(s.fail("a", t0 + 1s) == 0ms); }
  check_counts(s, 1, 0, 1, 0);
  CHECK(s.is_active("b"));
  CHECK(s.failures("a") == 0);
  CHECK_FALSE(s.next_wakeup().has_value());
  CHECK(s.take(1, t0 + 1s).empty());  // still bounded by max_active
}

TEST_CASE("scheduler: complete or fail for a db never seen is ignored") {
  auto s = make(2);
  s.mark_dirty("a", t0);
  REQUIRE(s.take(2, t0) == strings{"a"});
  s.complete("nope", false, t0);
  CHECK(s.fail("nope", t0) == 0ms);
  check_counts(s, 1, 0, 1, 0);
}

TEST_CASE("scheduler: complete or fail for a db that is not active is ignored") {
  auto s = make(2);
  s.mark_dirty("a", t0);  // queued, not active
  s.complete("a", false, t0);
  CHECK(s.fail("a", t0) == 0ms);
  check_counts(s, 1, 1, 0, 0);
  CHECK(s.take(2, t0) == strings{"a"});
}

TEST_CASE("scheduler: remove while queued; take skips the stale slot") {
  auto s = make(4);
  for (auto db : {"a", "b", "c"}) s.mark_dirty(db, t0);
  s.remove("b");
  check_counts(s, 2, 2, 0, 0);
  CHECK(s.take(4, t0) == strings{"a", "c"});
  check_counts(s, 2, 0, 2, 0);
}

TEST_CASE("scheduler: remove then re-add goes to the back, not to the stale slot") {
  auto s = make(1);
  s.mark_dirty("a", t0);
  s.mark_dirty("b", t0);
  s.remove("a");
  s.mark_dirty("a", t0 + 1s);
  check_counts(s, 2, 2, 0, 0);
  CHECK(s.take(1, t0 + 2s) == strings{"b"});
  s.complete("b", false, t0 + 2s);
  CHECK(s.take(1, t0 + 2s) == strings{"a"});
  s.complete("a", false, t0 + 2s);
  CHECK(s.take(1, t0 + 2s).empty());
  check_counts(s, 2, 0, 0, 0);
}

TEST_CASE("scheduler: removed while active and re-added; the old turn's completion is ignored") {
  auto s = make(2);
  s.mark_dirty("a", t0);
  REQUIRE(s.take(2, t0) == strings{"a"});
  s.remove("a");
  s.mark_dirty("a", t0 + 1s);  // recreated: queued afresh
  s.complete("a", false, t0 + 2s);  // the old turn finishing
  check_counts(s, 1, 1, 0, 0);
  CHECK(s.take(2, t0 + 2s) == strings{"a"});
}

TEST_CASE("scheduler: remove while backing off") {
  auto s = make(4);
  s.mark_dirty("a", t0);
  s.mark_dirty("b", t0);
  REQUIRE(s.take(4, t0) == strings{"a", "b"});
  s.fail("a", t0);
  s.fail("b", t0 + 1s);
  s.remove("a");
  check_counts(s, 1, 0, 0, 1);
  CHECK(s.next_wakeup() == t0 + 1s + 750ms);
  CHECK(s.take(4, t0 + 10s) == strings{"b"});
  s.remove("b");
  s.remove("b");  // twice is harmless
  s.remove("never");
  check_counts(s, 0, 0, 0, 0);
  CHECK_FALSE(s.next_wakeup().has_value());
  // Re-added after removal: a fresh start with no failures.
  s.mark_dirty("a", t0 + 11s);
  CHECK(s.failures("a") == 0);
  CHECK(s.take(4, t0 + 11s) == strings{"a"});
}

TEST_CASE("scheduler: counts across all states") {
  auto s = make(2);
  for (auto db : {"a", "b", "c", "d", "e"}) s.mark_dirty(db, t0);
  REQUIRE(s.take(2, t0) == strings{"a", "b"});
  s.fail("a", t0);
  REQUIRE(s.take(2, t0) == strings{"c"});
  s.complete("b", false, t0);
  // a backing off, b idle, c active, d and e queued.
  check_counts(s, 5, 2, 1, 1);
}

TEST_CASE("scheduler: 10000 known idle databases cost nothing active") {
  auto s = make(16);
  for (int i = 0; i < 10000; ++i) s.mark_dirty("db" + std::to_string(i), t0);
  check_counts(s, 10000, 10000, 0, 0);
  std::size_t served = 0;
  for (;;) {
    auto got = s.take(100, t0);
    if (got.empty()) break;
    CHECK(got.size() <= 16);
    for (const auto& db : got) s.complete(db, false, t0);
    served += got.size();
  }
  CHECK(served == 10000);
  check_counts(s, 10000, 0, 0, 0);
  CHECK_FALSE(s.next_wakeup().has_value());
  CHECK(s.take(100, t0 + 1h).empty());
}

TEST_CASE("scheduler: retry_backoffs makes every backing-off database ready at once, failures cleared") {
  auto s = make(4);
  s.mark_dirty("a", t0);
  s.mark_dirty("b", t0);
  s.mark_dirty("c", t0);
  CHECK(s.take(3, t0) == strings{"a", "b", "c"});
  s.fail("a", t0);
  s.fail("b", t0);
  s.complete("c", false, t0);
  CHECK(s.take(4, t0 + 1ms).empty());  // backing off
  s.retry_backoffs(t0 + 1ms);
  check_counts(s, 3, 2, 0, 0);
  CHECK(s.failures("a") == 0);
  CHECK(!s.next_wakeup());
  CHECK(s.take(4, t0 + 1ms) == strings{"a", "b"});
  // A later failure starts its backoff from the first step again.
  CHECK(s.fail("a", t0 + 2ms) == s.fail("b", t0 + 2ms));
  CHECK(s.failures("a") == 1);
}
