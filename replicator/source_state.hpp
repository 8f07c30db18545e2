#pragma once
// Owns: the replication state of one source database and its only transition function. Pure:
// the next state and what to do about it are a function of (state, event, now, backoff policy,
// randomness), so every path, backoff timing included, is unit-tested without a clock or a
// server. The scheduler keeps one source_state per database and acts on the step's output.
//
//   idle --changed--> dirty --taken--> fetching --fetched--> writing --written--> checkpointing
//     ^                 ^                 |  (any of the three in-turn phases)          |
//     |                 |                 +--turn_failed--> backing_off | failed --backoff_elapsed / retry_now--> dirty
//     +--turn_succeeded-+-- (dirty again when the turn hit its cap, or a change arrived meanwhile)
//
// - A change during a turn is remembered (dirty_again) and the database is queued again when the
//   turn ends: never lost.
// - A failed turn backs off (capped, jittered exponential in the number of failures in a row); a
//   change does not shorten it. `failed` is a backoff after an error that re-sending as is
//   cannot cure (retryable() false: forbidden, bad_request, ...): still retried when the backoff
//   ends (someone may fix _security meanwhile), but shown as such.
// - A success clears the failure count.
// - Events that make no sense in a state (a late completion for a database no longer in a turn)
//   are ignored, and say so.
#include <chrono>
#include <cstdint>
#include <optional>

#include "replicator/backoff.hpp"

namespace couchgate::replicator {

using source_clock = std::chrono::steady_clock;

enum class source_phase { idle, dirty, fetching, writing, checkpointing, backing_off, failed };
const char* to_string(source_phase p);
inline bool in_turn(source_phase p) {
  return p == source_phase::fetching || p == source_phase::writing || p == source_phase::checkpointing;
}
inline bool waiting_out_backoff(source_phase p) { return p == source_phase::backing_off || p == source_phase::failed; }

enum class source_event {
  changed,          // the source has changes (a feed event, the sweep, a new source)
  taken,            // the scheduler gave it a turn
  fetched,          // its _changes arrived
  written,          // the central database took the documents
  turn_succeeded,   // checkpoint advanced; nothing more pending
  turn_more,        // succeeded, but the turn hit its cap: more to read
  turn_failed,      // retryable error: back off
  turn_refused,     // an error re-sending cannot cure as is: back off as `failed`
  backoff_elapsed,  // now >= ready_at
  retry_now,        // what made it fail is over (e.g. the central database is back): no wait
};
const char* to_string(source_event e);

struct source_state {
  source_phase phase = source_phase::idle;
  bool dirty_again = false;            // changed during the turn
  std::uint32_t failures = 0;          // failed turns in a row
  source_clock::time_point ready_at{}; // backing_off / failed: when it is retried
  std::optional<source_clock::time_point> dirty_since;  // for the lag: first change not yet replicated
};

struct source_step {
  source_state next;
  bool enqueue = false;                       // put it at the back of the ready queue
  std::optional<source_clock::time_point> wake_at;  // backing off until then
  std::optional<std::chrono::steady_clock::duration> lag;  // caught up: dirty_since -> now
  bool ignored = false;                       // the event does not apply in this state
};

source_step step(const source_state& s, source_event e, source_clock::time_point now, const backoff_policy& backoff,
                 const uniform_source& rnd);

}  // namespace couchgate::replicator
