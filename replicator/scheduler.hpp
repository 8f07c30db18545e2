#pragma once
// Owns: which databases replicate next, and each one's replication state: one source_state per
// known database (source_state.hpp: idle, dirty, fetching, writing, checkpointing, backing_off,
// failed), moved only by its pure transition function; the scheduler keeps the ready queue and
// the backoff index that the transitions ask for. Time and randomness are passed in, so
// fairness, backoff and rerun-when-dirty are unit-tested without a server or a sleep.
//
// Rules:
// - At most max_active databases are active at once.
// - Ready databases are served first-come-first-served by the time they became ready, so a
//   database that always has more work (more_pending) goes to the back of the queue each turn
//   and can never starve the others.
// - mark_dirty on an active database is remembered and the database is requeued when its turn
//   completes: a change during a turn is never lost.
// - A failed turn backs off that database alone (capped, jittered exponential); marking it dirty
//   does not shorten the backoff. A success resets its failure count.
// - remove() forgets a database (deleted source); a turn that completes for a removed
//   database is ignored.
// An idle database costs one map entry and nothing else (no timer, socket or thread).
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "replicator/backoff.hpp"
#include "replicator/source_state.hpp"

namespace couchgate::replicator {

using sched_clock = std::chrono::steady_clock;

class scheduler {
 public:
  struct options {
    std::size_t max_active = 16;
    backoff_policy backoff{};
  };
  struct counts {
    std::size_t known = 0, dirty = 0, active = 0, backing_off = 0;
  };

  scheduler(options opts, uniform_source rnd);

  void mark_dirty(const std::string& db, sched_clock::time_point now);
  // Up to `limit` ready databases (bounded by max_active - active), now active.
  std::vector<std::string> take(std::size_t limit, sched_clock::time_point now);
  // Where a running turn is (source_event::fetched, then written); ignored otherwise.
  void progress(const std::string& db, source_event e, sched_clock::time_point now);
  // A turn finished. more_pending: the turn hit its doc/byte cap, run again (at the back).
  // Returns the replication lag when the database is now caught up (first change -> now).
  std::optional<sched_clock::duration> complete(const std::string& db, bool more_pending, sched_clock::time_point now);
  // A turn failed; returns the backoff chosen. `retryable` false: an error re-sending as is
  // cannot cure (the database is shown `failed`; still retried after the backoff).
  std::chrono::milliseconds fail(const std::string& db, sched_clock::time_point now, bool retryable = true);
  void remove(const std::string& db);
  // Every backing-off database is ready now, its failure count cleared (what made them fail is
  // known to be over, e.g. the central database was created again).
  void retry_backoffs(sched_clock::time_point now);

  // When the earliest backing-off database becomes ready (nullopt if none backs off).
  std::optional<sched_clock::time_point> next_wakeup() const;
  counts count(sched_clock::time_point now) const;
  std::uint32_t failures(const std::string& db) const;
  bool is_active(const std::string& db) const;
  // Its state (nullopt: not known).
  std::optional<source_phase> phase(const std::string& db) const;

 private:
  // Backing-off databases ordered by ready_at (ties keep insertion order).
  using backoff_index = std::multimap<sched_clock::time_point, std::string>;
  struct entry {
    source_state s;
    std::uint64_t ticket = 0;              // valid while dirty: matches its queue_ slot
    backoff_index::iterator backoff_it{};  // valid while backing_off or failed
  };
  // A queue slot is live only if its database is still known, queued, and holds this ticket;
  // anything else (removed, or removed and re-added) is a stale slot that take() skips.
  struct slot {
    std::string db;
    std::uint64_t ticket = 0;
  };
  // Runs the transition and does what it asks (queue, backoff index, counts); returns it.
  source_step apply(const std::string& db, entry& e, source_event ev, sched_clock::time_point now);
  void promote_backoffs(sched_clock::time_point now);

  options opts_;
  uniform_source rnd_;
  std::unordered_map<std::string, entry> entries_;
  std::deque<slot> queue_;  // ready, FIFO; may hold stale slots (checked on take)
  backoff_index backoffs_;
  std::uint64_t next_ticket_ = 0;
  std::size_t queued_ = 0;
  std::size_t active_ = 0;
};

}  // namespace couchgate::replicator
