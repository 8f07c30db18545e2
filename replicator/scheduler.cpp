#include "replicator/scheduler.hpp"

#include <algorithm>
#include <utility>

namespace couchgate::replicator {

scheduler::scheduler(options opts, uniform_source rnd) : opts_(std::move(opts)), rnd_(std::move(rnd)) {}

void scheduler::enqueue(const std::string& db, entry& e, sched_clock::time_point now) {
  e.st = state::queued;
  e.ready_at = now;
  e.ticket = ++next_ticket_;
  queue_.push_back(slot{db, e.ticket});
  ++queued_;
}

void scheduler::mark_dirty(const std::string& db, sched_clock::time_point now) {
  auto it = entries_.try_emplace(db).first;  // unknown: becomes known, idle, then queued
  entry& e = it->second;
  switch (e.st) {
    case state::idle:
      enqueue(it->first, e, now);
      break;
    case state::queued:
      break;  // keeps its place
    case state::active:
      e.dirty_while_active = true;
      break;
    case state::backing_off:
      // Nothing to remember: a failed database is always retried when its backoff ends, and
      // that retry picks up this change. The backoff is not shortened.
      break;
  }
}

void scheduler::promote_backoffs(sched_clock::time_point now) {
  while (!backoffs_.empty() && backoffs_.begin()->first <= now) {
    auto node = backoffs_.extract(backoffs_.begin());
    auto it = entries_.find(node.mapped());
    if (it != entries_.end() && it->second.st == state::backing_off) {
      // ready_at stays "now" of the promotion: the queue is ordered by when databases arrive.
      enqueue(it->first, it->second, now);
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
    if (it == entries_.end() || it->second.st != state::queued || it->second.ticket != s.ticket) {
      continue;  // stale slot
    }
    entry& e = it->second;
    e.st = state::active;
    e.dirty_while_active = false;
    --queued_;
    ++active_;
    out.push_back(std::move(s.db));
  }
  return out;
}

void scheduler::complete(const std::string& db, bool more_pending, sched_clock::time_point now) {
  auto it = entries_.find(db);
  if (it == entries_.end() || it->second.st != state::active) return;  // removed: ignored
  entry& e = it->second;
  --active_;
  e.failures = 0;
  const bool again = more_pending || e.dirty_while_active;
  e.dirty_while_active = false;
  if (again) {
    enqueue(it->first, e, now);
  } else {
    e.st = state::idle;
  }
}

std::chrono::milliseconds scheduler::fail(const std::string& db, sched_clock::time_point now) {
  auto it = entries_.find(db);
  if (it == entries_.end() || it->second.st != state::active) {
    return std::chrono::milliseconds{0};  // removed: ignored
  }
  entry& e = it->second;
  --active_;
  if (e.failures < UINT32_MAX) ++e.failures;
  const auto delay = backoff_delay(opts_.backoff, e.failures, rnd_);
  e.st = state::backing_off;
  e.dirty_while_active = false;  // the retry covers it
  e.ready_at = now + delay;
  e.backoff_it = backoffs_.emplace(e.ready_at, it->first);
  return delay;
}

void scheduler::remove(const std::string& db) {
  auto it = entries_.find(db);
  if (it == entries_.end()) return;
  switch (it->second.st) {
    case state::idle:
      break;
    case state::queued:
      --queued_;  // its queue slot is now stale
      break;
    case state::active:
      --active_;
      break;
    case state::backing_off:
      backoffs_.erase(it->second.backoff_it);
      break;
  }
  entries_.erase(it);
}

void scheduler::retry_backoffs(sched_clock::time_point now) {
  while (!backoffs_.empty()) {
    auto node = backoffs_.extract(backoffs_.begin());
    auto it = entries_.find(node.mapped());
    if (it == entries_.end() || it->second.st != state::backing_off) continue;
    it->second.failures = 0;
    enqueue(it->first, it->second, now);
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
  return it == entries_.end() ? 0 : it->second.failures;
}

bool scheduler::is_active(const std::string& db) const {
  auto it = entries_.find(db);
  return it != entries_.end() && it->second.st == state::active;
}

}  // namespace couchgate::replicator
