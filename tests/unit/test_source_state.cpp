// The per-source state machine (replicator/source_state.hpp): every transition, with an injected
// clock and pinned randomness, backoff timing included.
#include <doctest/doctest.h>

#include <chrono>
#include <vector>

#include "replicator/source_state.hpp"

namespace r = couchgate::replicator;
using namespace std::chrono_literals;
using r::source_event;
using r::source_phase;

namespace {

struct machine {
  r::source_state s;
  r::source_clock::time_point now = r::source_clock::time_point() + 1h;
  r::backoff_policy backoff{100ms, 1000ms};
  double jitter = 0.0;  // equal jitter at 0: exactly half the exponential delay
  r::source_step last;
  r::source_step on(source_event e) {
    last = r::step(s, e, now, backoff, [this] { return jitter; });
    s = last.next;
    return last;
  }
};

}  // namespace

TEST_CASE("source_state: a change queues an idle source once; the turn goes fetching, writing, checkpointing, idle") {
  machine m;
  CHECK(m.on(source_event::changed).enqueue);
  CHECK(m.s.phase == source_phase::dirty);
  CHECK_FALSE(m.on(source_event::changed).enqueue);  // already queued: keeps its place
  CHECK(m.on(source_event::taken).next.phase == source_phase::fetching);
  CHECK(m.on(source_event::fetched).next.phase == source_phase::writing);
  CHECK(m.on(source_event::written).next.phase == source_phase::checkpointing);
  m.now += 250ms;
  auto done = m.on(source_event::turn_succeeded);
  CHECK(done.next.phase == source_phase::idle);
  CHECK_FALSE(done.enqueue);
  REQUIRE(done.lag);
  CHECK(*done.lag == 250ms);  // from the first change to caught up
  CHECK_FALSE(m.s.dirty_since);
}

TEST_CASE("source_state: a change during any phase of the turn is rerun after it, never lost") {
  for (auto at : {source_event::taken, source_event::fetched, source_event::written}) {
    machine m;
    m.on(source_event::changed);
    m.on(source_event::taken);
    if (at != source_event::taken) m.on(source_event::fetched);
    if (at == source_event::written) m.on(source_event::written);
    CHECK(r::in_turn(m.s.phase));
    CHECK_FALSE(m.on(source_event::changed).enqueue);
    CHECK(m.s.dirty_again);
    auto done = m.on(source_event::turn_succeeded);
    CHECK(done.enqueue);
    CHECK(done.next.phase == source_phase::dirty);
    CHECK_FALSE(done.next.dirty_again);
  }
}

TEST_CASE("source_state: a turn that hit its cap goes to the back of the queue and is not yet caught up") {
  machine m;
  m.on(source_event::changed);
  m.on(source_event::taken);
  auto more = m.on(source_event::turn_more);
  CHECK(more.enqueue);
  CHECK(more.next.phase == source_phase::dirty);
  CHECK_FALSE(more.lag);
  CHECK(m.s.dirty_since);
}

TEST_CASE("source_state: backoff doubles per failure up to the cap, retries exactly at ready_at, success resets it") {
  machine m;
  m.on(source_event::changed);
  std::vector<std::chrono::milliseconds> delays;
  for (int i = 0; i < 6; ++i) {
    m.on(source_event::taken);
    m.on(source_event::fetched);
    auto f = m.on(source_event::turn_failed);
    REQUIRE(f.wake_at);
    CHECK(f.next.phase == source_phase::backing_off);
    CHECK_FALSE(f.enqueue);
    delays.push_back(std::chrono::duration_cast<std::chrono::milliseconds>(*f.wake_at - m.now));
    // A change does not shorten the wait; a look just before ready_at does nothing.
    CHECK_FALSE(m.on(source_event::changed).enqueue);
    m.now = *f.wake_at - 1ms;
    CHECK(m.on(source_event::backoff_elapsed).ignored);
    CHECK(m.s.phase == source_phase::backing_off);
    m.now = *f.wake_at;
    CHECK(m.on(source_event::backoff_elapsed).enqueue);
    CHECK(m.s.phase == source_phase::dirty);
  }
  // equal jitter at 0: half of min(cap, base * 2^(n-1))
  CHECK(delays == std::vector<std::chrono::milliseconds>{50ms, 100ms, 200ms, 400ms, 500ms, 500ms});
  CHECK(m.s.failures == 6);
  m.on(source_event::taken);
  m.on(source_event::turn_succeeded);
  CHECK(m.s.failures == 0);
  CHECK(m.s.phase == source_phase::idle);

  // Jitter spreads within [d/2, d).
  machine j;
  j.jitter = 0.999;
  j.on(source_event::changed);
  j.on(source_event::taken);
  auto f = j.on(source_event::turn_failed);
  const auto d = std::chrono::duration_cast<std::chrono::milliseconds>(*f.wake_at - j.now);
  CHECK(d >= 50ms);
  CHECK(d < 100ms);
}

TEST_CASE("source_state: an error re-sending cannot cure is `failed`, still retried after its backoff") {
  machine m;
  m.on(source_event::changed);
  m.on(source_event::taken);
  auto f = m.on(source_event::turn_refused);
  CHECK(f.next.phase == source_phase::failed);
  REQUIRE(f.wake_at);
  m.now = *f.wake_at;
  CHECK(m.on(source_event::backoff_elapsed).enqueue);
  CHECK(m.s.phase == source_phase::dirty);
  CHECK(m.s.failures == 1);
}

TEST_CASE("source_state: retry_now ends a backoff at once and clears the failures") {
  machine m;
  m.on(source_event::changed);
  m.on(source_event::taken);
  m.on(source_event::turn_failed);
  m.on(source_event::taken);  // ignored: not queued
  CHECK(m.last.ignored);
  auto r = m.on(source_event::retry_now);
  CHECK(r.enqueue);
  CHECK(m.s.failures == 0);
  CHECK(m.s.phase == source_phase::dirty);
}

TEST_CASE("source_state: events that do not apply are ignored and change nothing") {
  machine m;
  for (auto e : {source_event::taken, source_event::fetched, source_event::written, source_event::turn_succeeded,
                 source_event::turn_more, source_event::turn_failed, source_event::turn_refused,
                 source_event::backoff_elapsed, source_event::retry_now}) {
    auto s = m.on(e);
    CHECK_MESSAGE(s.ignored, r::to_string(e));
    CHECK(m.s.phase == source_phase::idle);
  }
  m.on(source_event::changed);
  CHECK(m.on(source_event::written).ignored);  // not in a turn
  CHECK(m.on(source_event::turn_failed).ignored);
  CHECK(m.s.phase == source_phase::dirty);
  CHECK(m.s.failures == 0);
}
