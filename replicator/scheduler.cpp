// Owns: the ready queue and backoff index over the per-source state machines (see scheduler.hpp).
#include "replicator/scheduler.hpp"

#include <algorithm>
#include <utility>

namespace couchgate::replicator {

scheduler::scheduler(options opts, uniform_source rnd) : opts_(std::move(opts)), rnd_(std::move(rnd)) {}

source_step scheduler::apply(const std::string& db, entry& e, source_event ev, sched_clock::time_point now) {
  const source_phase before = e.s.phase;
  source_step st = step(e.s, ev, now, opts_.backoff, rnd_);
  if (st.ignored) return st;
  e.s = st.next;
  const source_phase after = e.s.phase;
  // Leaving a phase.
  if (before == source_phase::dirty && after != source_phase::dirty) --queued_;
  if (in_turn(before) && !in_turn(after)) --active_;
  if (waiting_out_backoff(before) && !waiting_out_backoff(after)) backoffs_.erase(e.backoff_it);
  // Entering one.
  if (in_turn(after) && !in_turn(before)) ++active_;
  if (st.wake_at) e.backoff_it = backoffs_.emplace(*st.wake_at, db);
  if (st.enqueue) {
    e.ticket = ++next_ticket_;
    queue_.push_back(slot{db, e.ticket});
    ++queued_;
  }
  return st;
}

void scheduler::mark_dirty(const std::string& db, sched_clock::time_point now) {
  auto it = entries_.try_emplace(db).first;  // unknown: becomes known, idle, then dirty
  apply(it->first, it->second, source_event::changed, now);
}

void scheduler::promote_backoffs(sched_clock::time_point now) {
  while (!backoffs_.empty() && backoffs_.begin()->first <= now) {
    const std::string db = backoffs_.begin()->second;
    auto it = entries_.find(db);
    if (it == entries_.end() || apply(it->first, it->second, source_event::backoff_elapsed, now).ignored) {
      backoffs_.erase(backoffs_.begin());  // not expected: an index entry without its backoff
    }
  }
}

std::vector<std::string> scheduler::take(std::size_t limit, sched_clock::time_point now) {
  promote_backoffs(now);
  std::vector<std::string> out;
  if (active_ >= opts_.max_active) return out;
  const std::size_t n = std::min(limit, opts_.max_active - active_);
  while (out.size() < n && !queue_.empty()) {
    slot s = std::move(queue_.front());
    queue_.pop_front();
    auto it = entries_.find(s.db);
    if (it == entries_.end() || it->second.s.phase != source_phase::dirty || it->second.ticket != s.ticket) {
      continue;  // stale slot
    }
    apply(it->first, it->second, source_event::taken, now);
    out.push_back(std::move(s.db));
  }
  return out;
}

void scheduler::progress(const std::string& db, source_event e, sched_clock::time_point now) {
  if (e != source_event::fetched && e != source_event::written) return;
  auto it = entries_.find(db);
  if (it != entries_.end()) apply(it->first, it->second, e, now);
}

std::optional<sched_clock::duration> scheduler::complete(const std::string& db, bool more_pending, sched_clock::time_point now) {
  auto it = entries_.find(db);
  if (it == entries_.end()) return std::nullopt;  // removed: ignored
  return apply(it->first, it->second, more_pending ? source_event::turn_more : source_event::turn_succeeded, now).lag;
}

std::chrono::milliseconds scheduler::fail(const std::string& db, sched_clock::time_point now, bool retryable) {
  auto it = entries_.find(db);
  if (it == entries_.end()) return std::chrono::milliseconds{0};  // removed: ignored
  auto st = apply(it->first, it->second, retryable ? source_event::turn_failed : source_event::turn_refused, now);
  if (st.ignored || !st.wake_at) return std::chrono::milliseconds{0};
  return std::chrono::duration_cast<std::chrono::milliseconds>(*st.wake_at - now);
}

void scheduler::remove(const std::string& db) {
  auto it = entries_.find(db);
  if (it == entries_.end()) return;
  const source_phase p = it->second.s.phase;
  if (p == source_phase::dirty) --queued_;  // its queue slot is now stale
  if (in_turn(p)) --active_;
  if (waiting_out_backoff(p)) backoffs_.erase(it->second.backoff_it);
  entries_.erase(it);
}

void scheduler::retry_backoffs(sched_clock::time_point now) {
  // In ready_at order, as they would have become ready.
  std::vector<std::string> dbs;
  dbs.reserve(backoffs_.size());
  for (const auto& [at, db] : backoffs_) dbs.push_back(db);
  for (const auto& db : dbs) {
    auto it = entries_.find(db);
    if (it != entries_.end()) apply(it->first, it->second, source_event::retry_now, now);
  }
}

std::optional<sched_clock::time_point> scheduler::next_wakeup() const {
  if (backoffs_.empty()) return std::nullopt;
  return backoffs_.begin()->first;
}

scheduler::counts scheduler::count(sched_clock::time_point /*now*/) const {
  counts c;
  c.known = entries_.size();
  c.dirty = queued_;
  c.active = active_;
  c.backing_off = backoffs_.size();
  return c;
}

std::uint32_t scheduler::failures(const std::string& db) const {
  auto it = entries_.find(db);
  return it == entries_.end() ? 0 : it->second.s.failures;
}

bool scheduler::is_active(const std::string& db) const {
  auto it = entries_.find(db);
  return it != entries_.end() && in_turn(it->second.s.phase);
}

std::optional<source_phase> scheduler::phase(const std::string& db) const {
  auto it = entries_.find(db);
  if (it == entries_.end()) return std::nullopt;
  return it->second.s.phase;
}

}  // namespace couchgate::replicator
