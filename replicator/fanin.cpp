// Owns: the fan-in worker loop and its bookkeeping (see fanin.hpp).
#include "replicator/fanin.hpp"

#include <algorithm>

#include "replicator/logger.hpp"
#include "replicator/outage.hpp"

namespace couchgate::replicator {

namespace {
std::shared_ptr<spdlog::logger> log() {
  static auto l = named_logger("fanin");
  return l;
}
}  // namespace

std::optional<std::uint64_t> changes_behind(const json& answer) {
  if (!answer.is_object()) return std::nullopt;
  auto rows = answer.find("results");
  auto pending = answer.find("pending");
  if (rows == answer.end() || !rows->is_array() || pending == answer.end() || !pending->is_number_integer()) return std::nullopt;
  if (pending->is_number_unsigned()) return rows->size() + pending->get<std::uint64_t>();
  if (pending->get<std::int64_t>() < 0) return std::nullopt;
  return rows->size() + static_cast<std::uint64_t>(pending->get<std::int64_t>());
}

fanin::fanin(couch_client& client, state_store& state, registry& metrics, fanin_options opts)
    : client_(client),
      state_(state),
      opts_(std::move(opts)),
      epoch_(client, opts_.central_db),
      sched_(scheduler::options{opts_.max_active, opts_.backoff}, random_uniform_source()),
      docs_(metrics.add_counter("couchgate_replicated_docs_total", "Document revisions written to the central database")),
      bytes_(metrics.add_counter("couchgate_replicated_bytes_total", "JSON bytes written to the central database")),
      stemmed_(metrics.add_counter("couchgate_stemmed_histories_total",
                                   "Revisions written whose history no longer reaches a leaf central had (the source's revs_limit "
                                   "stemmed it): central keeps both leaves; listed in GET /failures")),
      inline_(metrics.add_counter("couchgate_replicated_inline_docs_total",
                                  "Of the revisions written, those taken from the _changes body without a _bulk_get")),
      rounds_(metrics.add_counter("couchgate_replication_batches_total", "Replication rounds (coalesced batches) run")),
      central_requests_(metrics.add_counter("couchgate_replication_requests_total", "HTTP requests made by replication rounds")),
      skipped_design_(metrics.add_counter("couchgate_replication_skipped_docs_total",
                                          "Documents never sent to the central database (design documents in unchanged-id mode)")),
      doc_write_failures_(metrics.add_counter("couchgate_doc_write_failures_total",
                                              "Documents the central database refused or the source could not give (recorded, not retried)")),
      lag_(metrics.add_histogram("couchgate_replication_lag_seconds",
                                 "Time from a source becoming dirty to its changes being checkpointed in the central database")),
      central_resets_(metrics.add_counter("couchgate_central_resets_total",
                                          "Times every source was re-read because the central database was new, replaced or older than the checkpoints")),
      unannounced_(metrics.add_counter("couchgate_fanin_unannounced_total",
                                       "Sources whose verify read (fanin.verify_interval) found changes no _db_updates event had "
                                       "marked: an event lost, or one still on its way")) {
  for (auto k : all_couch_error_kinds) {
    errors_[k] = &metrics.add_counter("couchgate_replication_errors_total", "Replication errors by kind",
                                      std::string("kind=\"") + to_string(k) + "\"");
  }
  metrics.add_callback("couchgate_sources", "Known source databases", [this] { return double(counts().known); });
  metrics.add_callback("couchgate_sources_dirty", "Source databases waiting for a turn", [this] { return double(counts().dirty); });
  metrics.add_callback("couchgate_sources_active", "Source databases in a running round", [this] { return double(counts().active); });
  metrics.add_callback("couchgate_sources_backing_off", "Source databases backing off after an error",
                       [this] { return double(counts().backing_off); });
  metrics.add_callback("couchgate_central_missing", "1 while the central database is missing",
                       [this] { return central_missing_.load() ? 1.0 : 0.0; });
  metrics.add_callback("couchgate_replication_lag_max_seconds", "Largest replication lag observed", [this] { return lag_.max(); });
  metrics.add_callback("couchgate_replication_lag_p99_seconds", "99th percentile replication lag (from the histogram)",
                       [this] { return lag_.quantile(0.99); });
}

fanin::~fanin() { stop(); }

result<state_store::load_outcome> fanin::load() {
  bool created = false;
  auto marker = epoch_.load_or_create(created);
  if (!marker.ok()) return marker.error();
  state_.set_marker(marker.value());
  auto loaded = state_.load_checkpoints();
  if (!loaded.ok()) return loaded.error();
  if (loaded.value().voided > 0) {
    if (!created) {
      // Older than the checkpoints: a new epoch, so that a voided checkpoint whose zero is not
      // stored yet can never match again once the generation climbs past it.
      auto fresh = epoch_.renew();
      if (!fresh.ok()) return fresh.error();
      state_.set_marker(fresh.value());
    }
    central_resets_.inc();
    log()->warn("central database {} {}: {} sources are read again from the start (documents already there are not written again)",
                opts_.central_db,
                created ? "is new or has no epoch marker" : "does not match the stored checkpoints (older, or another epoch)",
                loaded.value().voided);
  }
  return loaded;
}

std::optional<std::string> fanin::central_problem() const {
  if (central_missing_.load()) return "central database " + opts_.central_db + " is missing (fan-in paused; it is created again)";
  return std::nullopt;
}

void fanin::request_target_check() {
  std::lock_guard lk(mu_);
  check_requested_ = true;
  cv_.notify_one();
}

void fanin::restart_all(const epoch_stamp& marker, const char* why) {
  const std::size_t n = state_.reset_all(marker);
  central_resets_.inc();
  std::size_t sources = 0;
  {
    std::lock_guard lk(mu_);
    auto now = sched_clock::now();
    sched_.retry_backoffs(now);
    verify_marked_.clear();  // every source is read from its start, for a known reason
    for (const auto& entry : sources_) sched_.mark_dirty(entry.first, now);
    sources = sources_.size();
    cv_.notify_all();
  }
  log()->warn("central database {}: {}; all {} sources are read again from the start ({} checkpoints reset, epoch {})",
              opts_.central_db, why, sources, n, marker.epoch);
}

void fanin::check_targets() {
  if (auto s = state_.check_db(); !s.ok() && s.error().kind != couch_error_kind::cancelled) {
    log()->debug("state database check: {}", s.error().describe());
  }
  auto v = epoch_.check();
  if (!v.ok()) {
    log()->debug("central database check: {}", v.error().describe());
    return;
  }
  switch (v.value()) {
    case central_verdict::same:
      if (central_missing_.exchange(false)) log()->info("central database {} is back", opts_.central_db);
      return;
    case central_verdict::replaced:
      central_missing_.store(false);
      restart_all(epoch_.current(), to_string(v.value()));
      return;
    case central_verdict::missing_db:
      if (!central_missing_.exchange(true)) {
        // Created again at the next check, not at once: an operator restoring it gets to go first.
        log()->warn("central database {} is missing; fan-in paused, /readyz reports it; creating it again in {} ms",
                    opts_.central_db, opts_.target_check_interval.count());
        return;
      }
      if (!opts_.create_central) return;
      if (auto e = opts_.create_central()) {
        log()->debug("central database {} not created yet: {}", opts_.central_db, e->describe());
        return;
      }
      [[fallthrough]];
    case central_verdict::new_marker:
    case central_verdict::older: {
      auto marker = epoch_.renew();
      if (!marker.ok()) {
        log()->debug("central database {}: cannot write its epoch marker: {}", opts_.central_db, marker.error().describe());
        return;
      }
      central_missing_.store(false);
      restart_all(marker.value(), v.value() == central_verdict::missing_db ? "was missing and is created again" : to_string(v.value()));
      return;
    }
  }
}

void fanin::add_source(const std::string& db, const policy::owner& owner) {
  std::lock_guard lk(mu_);
  auto [it, fresh] = sources_.try_emplace(db);
  it->second.owner = owner;
  if (fresh && !created_empty_.count(db)) {
    sched_.mark_dirty(db, sched_clock::now());
    cv_.notify_one();
  }
}

void fanin::created_empty(const std::string& db) {
  std::lock_guard lk(mu_);
  // Each entry lasts until the database's first announced change; a bound on the ones that
  // never get one (dropping them only costs the read this saves).
  if (created_empty_.size() >= max_created_empty) created_empty_.clear();
  created_empty_.insert(db);
}

void fanin::not_created(const std::string& db) {
  std::lock_guard lk(mu_);
  created_empty_.erase(db);
}

void fanin::mark_created(const std::string& db) {
  {
    std::lock_guard lk(mu_);
    if (created_empty_.count(db)) return;
  }
  mark_dirty(db);
}

void fanin::remove_source(const std::string& db) {
  std::lock_guard lk(mu_);
  sources_.erase(db);
  created_empty_.erase(db);
  verify_marked_.erase(db);
  sched_.remove(db);
}

void fanin::source_recreated(const std::string& db) {
  auto r = state_.reset_checkpoint(db);
  if (!r.ok()) {
    // An outage is logged once by the transport (outage.hpp): its failures at debug.
    log()->log(outage_error(r.error()) ? spdlog::level::debug : spdlog::level::warn,
               "db={} could not reset checkpoint after recreation: {}", db, r.error().describe());
  }
  mark_dirty(db);
}

bool fanin::mark_dirty(const std::string& db) {
  std::lock_guard lk(mu_);
  created_empty_.erase(db);  // a change: it holds something now (added later, it is added dirty)
  verify_marked_.erase(db);  // announced
  auto it = sources_.find(db);
  if (it == sources_.end()) return false;
  sched_.mark_dirty(db, sched_clock::now());
  cv_.notify_one();
  return true;
}

bool fanin::verify(const std::string& db) {
  std::lock_guard lk(mu_);
  if (!sources_.count(db)) return false;
  // Due or in a turn: read anyway. (A source added while created_empty() has no entry yet.)
  if (const auto phase = sched_.phase(db); phase && *phase != source_phase::idle) return false;
  created_empty_.erase(db);  // its first change may be the one whose event was lost
  verify_marked_.insert(db);
  sched_.mark_dirty(db, sched_clock::now());
  cv_.notify_one();
  return true;
}

void fanin::mark_all_dirty() {
  std::lock_guard lk(mu_);
  verify_marked_.clear();  // every source is read for a known reason
  auto now = sched_clock::now();
  for (const auto& entry : sources_) sched_.mark_dirty(entry.first, now);
  cv_.notify_all();
}

bool fanin::knows(const std::string& db) const {
  std::lock_guard lk(mu_);
  return sources_.count(db) > 0;
}

std::vector<std::string> fanin::sources() const {
  std::lock_guard lk(mu_);
  std::vector<std::string> out;
  out.reserve(sources_.size());
  for (const auto& [db, s] : sources_) out.push_back(db);
  return out;
}

void fanin::start() {
  std::lock_guard lk(mu_);
  stopping_ = false;
  for (std::size_t i = 0; i < std::max<std::size_t>(1, opts_.workers); ++i) threads_.emplace_back([this] { worker(); });
}

void fanin::stop() {
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
  threads_.clear();
  if (drain_flush_.valid()) drain_flush_.wait();
}

bool fanin::drain(std::chrono::milliseconds grace) {
  const auto deadline = std::chrono::steady_clock::now() + grace;
  bool ended = true;
  {
    std::unique_lock lk(mu_);
    stopping_ = true;
    cv_.notify_all();
    ended = cv_.wait_until(lk, deadline, [this] { return rounds_running_ == 0; });
  }
  if (!ended) log()->warn("fan-in rounds still running after {} ms; their progress is read again at the next start", grace.count());
  // The last write gets what is left of the grace; a server that does not answer in time is
  // cut off by the pool's shutdown, which ends this write too (stop() waits for it).
  drain_flush_ = std::async(std::launch::async, [this] { flush_checkpoints(); });
  if (drain_flush_.wait_until(std::max(deadline, std::chrono::steady_clock::now() + std::chrono::seconds(1))) != std::future_status::ready) {
    log()->warn("checkpoints not written within the stop grace; they are read again at the next start");
    return false;
  }
  return ended;
}

void fanin::flush_checkpoints() {
  if (!state_.has_unflushed()) return;
  auto r = state_.flush([this] { return epoch_.bump(); });
  std::string problem;
  if (!r.ok()) {
    if (r.error().kind == couch_error_kind::cancelled) return;
    errors_[r.error().kind]->inc();
    // The central database gone, or its marker no longer ours: the next check tells which.
    if (r.error().kind == couch_error_kind::not_found || r.error().kind == couch_error_kind::conflict) request_target_check();
    if (outage_error(r.error())) {  // the pool logs the outage once (outage.hpp)
      log()->debug("could not write checkpoints: {} (kept in memory; retried)", r.error().describe());
      return;
    }
    problem = "could not write checkpoints: " + r.error().describe();
  } else if (!r.value().refused.empty()) {
    errors_[couch_error_kind::bad_request]->inc();
    problem = state_.db() + " refused the checkpoints of " + std::to_string(r.value().refused.size()) + " source(s), first " +
              r.value().first_error;
  }
  // One line per kind of trouble and one when it ends, not one per attempt.
  std::lock_guard lk(flush_log_mu_);
  if (problem == last_flush_error_) return;
  if (!problem.empty()) log()->warn("{} (kept in memory; retried)", problem);
  else log()->info("checkpoints written again");
  last_flush_error_ = problem;
}

std::optional<source_status> fanin::status(const std::string& db) const {
  std::optional<source_status> out;
  {
    std::lock_guard lk(mu_);
    auto it = sources_.find(db);
    if (it == sources_.end()) return out;
    out.emplace();
    out->db = db;
    out->owner = it->second.owner;
    out->docs_written = it->second.docs_written;
    out->doc_write_failures = it->second.doc_write_failures;
    out->last_success = it->second.last_success;
    out->last_error = it->second.last_error;
    out->failures = sched_.failures(db);
    out->active = sched_.is_active(db);
    out->phase = sched_.phase(db).value_or(source_phase::idle);
  }
  auto cp = state_.checkpoint(db);
  out->checkpoint = cp ? *cp : json(nullptr);
  return out;
}

std::vector<refused_doc> fanin::refused(const std::string& db) const {
  std::lock_guard lk(mu_);
  std::vector<refused_doc> out;
  for (const auto& r : refused_) {
    if (db.empty() || r.db == db) out.push_back(r);
  }
  return out;
}

void fanin::record_refused(const doc_failure& f) {
  doc_write_failures_.inc();
  if (auto it = sources_.find(f.unit); it != sources_.end()) ++it->second.doc_write_failures;
  log()->warn("db={} doc={} rev={} not replicated: {}: {} (recorded; not retried)", f.source_db, f.source_id, f.rev, f.error,
              f.reason);
  refused_.push_back(refused_doc{f.source_db, f.source_id, f.rev, f.error, f.reason, std::chrono::system_clock::now()});
  if (refused_.size() > max_refused) refused_.pop_front();
}

void fanin::record_stemmed(const stemmed_history& s) {
  const bool known = std::any_of(refused_.begin(), refused_.end(), [&](const refused_doc& r) {
    return r.db == s.source_db && r.id == s.source_id && r.rev == s.rev && r.error == "stemmed_history";
  });
  if (known) return;
  stemmed_.inc();
  std::string reason = "the source's history of " + s.rev + " reaches back to generation " + std::to_string(s.history_from) +
                       " only, not to the central database's leaf " + s.stale_leaf +
                       " (more edits than the source's revs_limit while couchgate was behind): central keeps both leaves, "
                       "a conflict the source does not have; restore does not write " + s.stale_leaf;
  log()->warn("db={} doc={} rev={}: stemmed history: {}", s.source_db, s.source_id, s.rev, reason);
  refused_.push_back(refused_doc{s.source_db, s.source_id, s.rev, "stemmed_history", std::move(reason), std::chrono::system_clock::now()});
  if (refused_.size() > max_refused) refused_.pop_front();
}

scheduler::counts fanin::counts() const {
  std::lock_guard lk(mu_);
  return sched_.count(sched_clock::now());
}

bool fanin::idle() const {
  auto c = counts();
  return c.dirty == 0 && c.active == 0 && c.backing_off == 0;
}

void fanin::worker() {
  const std::size_t per_round = std::max<std::size_t>(1, opts_.max_active / std::max<std::size_t>(1, opts_.workers));
  std::unique_lock lk(mu_);
  next_check_ = std::chrono::steady_clock::now() + opts_.target_check_interval;
  while (!stopping_) {
    if (opts_.target_check_interval.count() > 0 && (check_requested_ || std::chrono::steady_clock::now() >= next_check_)) {
      check_requested_ = false;
      next_check_ = std::chrono::steady_clock::now() + opts_.target_check_interval;
      ++rounds_running_;
      lk.unlock();
      check_targets();
      lk.lock();
      --rounds_running_;
      cv_.notify_all();
      continue;
    }
    if (central_missing_.load()) {  // nothing can be written: wait for the next check
      cv_.wait_until(lk, next_check_, [this] { return stopping_ || check_requested_; });
      continue;
    }
    if (opts_.checkpoint_interval.count() > 0 && std::chrono::steady_clock::now() >= next_flush_ && state_.has_unflushed()) {
      next_flush_ = std::chrono::steady_clock::now() + opts_.checkpoint_interval;
      ++rounds_running_;  // drain waits for this write as for a round
      lk.unlock();
      flush_checkpoints();
      lk.lock();
      --rounds_running_;
      cv_.notify_all();
      continue;
    }
    auto batch = sched_.take(per_round, sched_clock::now());
    if (batch.empty()) {
      auto wake = sched_.next_wakeup();
      // Wake for the checkpoint write too when one is waiting (a fresh advance notifies).
      if (opts_.checkpoint_interval.count() > 0 && state_.has_unflushed()) {
        if (!wake || *wake > next_flush_) wake = next_flush_;
      }
      if (opts_.target_check_interval.count() > 0 && (!wake || *wake > next_check_)) wake = next_check_;
      if (wake) cv_.wait_until(lk, *wake);
      else cv_.wait_for(lk, std::chrono::seconds(5));
      continue;
    }
    ++rounds_running_;
    lk.unlock();
    run_round(batch);
    lk.lock();
    --rounds_running_;
    cv_.notify_all();
  }
}

void fanin::run_round(const std::vector<std::string>& dbs) {
  rounds_.inc();
  struct turn {
    std::string db;
    policy::owner owner;
    json since;
    std::uint64_t epoch = 0;
    bool include_docs = false;
    std::size_t first_generation_rows = 0;
    pending_json call;
    std::optional<feed_page> page;
    std::optional<couch_error> error;
    bool removed = false;
  };
  std::vector<turn> turns;
  turns.reserve(dbs.size());
  {
    std::lock_guard lk(mu_);
    for (const auto& db : dbs) {
      auto it = sources_.find(db);
      if (it == sources_.end()) continue;
      turn t;
      t.db = db;
      t.owner = it->second.owner;
      t.include_docs = opts_.inline_docs && it->second.include_docs;
      turns.push_back(std::move(t));
    }
  }

  // 1. One _changes per source, all in flight together.
  for (auto& t : turns) {
    auto at = state_.start_position(t.db);
    t.since = std::move(at.seq);
    t.epoch = at.epoch;
    changes_query q;
    q.since = t.since;
    q.limit = opts_.turn_docs;
    q.include_docs = t.include_docs;
    t.call = client_.changes(t.db, q);
  }
  std::size_t requests = turns.size();
  std::vector<change_row> rows;
  std::size_t skipped = 0;
  for (auto& t : turns) {
    auto answer = t.call.text();
    if (!answer.ok()) {
      if (answer.error().kind == couch_error_kind::not_found) t.removed = true;
      else t.error = answer.error();
      continue;
    }
    auto page = parse_changes(answer.value());
    if (!page.ok()) {
      t.error = page.error();
      continue;
    }
    for (auto& c : page.value().changes) {
      if (first_generation(c)) ++t.first_generation_rows;
      auto central = policy::to_central_id(opts_.ids, t.owner, c.id);
      if (!central) {
        ++skipped;
        continue;
      }
      auto body = inline_revision(c);
      rows.push_back(change_row{t.db, t.db, c.id, opts_.central_db, std::move(*central), std::move(c.revs), std::move(body)});
    }
    t.page = std::move(page.value());
  }
  if (skipped) skipped_design_.inc(skipped);
  {
    std::lock_guard lk(mu_);
    const auto now = sched_clock::now();
    std::vector<std::string> unannounced;
    for (const auto& t : turns) {
      if (!t.page) continue;
      sched_.progress(t.db, source_event::fetched, now);
      if (verify_marked_.erase(t.db) && !t.page->changes.empty()) unannounced.push_back(t.db);
    }
    if (!unannounced.empty()) {
      unannounced_.inc(unannounced.size());
      unannounced_unlogged_ += unannounced.size();
      const auto at = std::chrono::steady_clock::now();
      const bool warn = at - unannounced_logged_ >= std::chrono::minutes(1);
      if (warn) unannounced_logged_ = at;
      log()->log(warn ? spdlog::level::warn : spdlog::level::debug,
                 "{} source(s) had changes no _db_updates event announced (found by the verify read; db={} the "
                 "latest): the feed loses events, or announces them late",
                 warn ? unannounced_unlogged_ : unannounced.size(), unannounced.back());
      if (warn) unannounced_unlogged_ = 0;
    }
  }

  // 2. The coalesced protocol round against the central database.
  transfer_result res = transfer(client_, rows, opts_.transfer, caps_);
  requests += res.requests;
  for (const auto& [unit, e] : res.failed) {
    if (e.kind == couch_error_kind::not_found) {  // a source gone mid-round, or the central database
      request_target_check();
      break;
    }
  }
  {
    std::lock_guard lk(mu_);
    const auto now = sched_clock::now();
    for (const auto& t : turns) {
      if (t.page && !res.failed.count(t.db)) sched_.progress(t.db, source_event::written, now);
    }
  }
  docs_.inc(res.docs_written);
  bytes_.inc(res.bytes_written);
  inline_.inc(res.docs_inline);

  // 3. Checkpoint every source whose documents all arrived.
  std::vector<state_store::advance_to> cps;
  for (auto& t : turns) {
    if (t.removed || t.error || !t.page) continue;
    if (auto f = res.failed.find(t.db); f != res.failed.end()) {
      t.error = f->second;
      continue;
    }
    if (!t.page->last_seq.is_null() && t.page->last_seq != t.since) cps.push_back({t.db, t.page->last_seq, t.epoch});
  }
  if (!cps.empty()) {
    state_.advance(cps);  // written by the next due flush (worker loop), or right here:
    if (opts_.checkpoint_interval.count() == 0) {
      ++requests;
      auto saved = state_.flush([this] { return epoch_.bump(); });
      for (auto& t : turns) {
        if (t.error || t.removed || !t.page) continue;
        if (!saved.ok()) {
          t.error = saved.error();
        } else if (std::find(saved.value().refused.begin(), saved.value().refused.end(), t.db) != saved.value().refused.end()) {
          t.error = couch_error{couch_error_kind::bad_request, 0, "checkpoint refused", saved.value().first_error};
        }
      }
    }
  }
  central_requests_.inc(requests);

  // 4. Tell the scheduler.
  std::lock_guard lk(mu_);
  auto now = sched_clock::now();
  // Refused documents of turns that go on (a failed turn meets them again when it is retried).
  for (const auto& f : res.doc_failures) {
    auto t = std::find_if(turns.begin(), turns.end(), [&](const turn& x) { return x.db == f.unit; });
    if (t != turns.end() && !t->error && !t->removed) record_refused(f);
  }
  for (const auto& st : res.stemmed) record_stemmed(st);
  for (auto& t : turns) {
    auto it = sources_.find(t.db);
    if (t.removed) {
      log()->info("db={} is gone; dropped from fan-in", t.db);
      if (it != sources_.end()) sources_.erase(it);
      sched_.remove(t.db);
      continue;
    }
    if (it == sources_.end()) continue;  // removed while the round ran
    auto& s = it->second;
    if (t.error) {
      if (t.error->kind == couch_error_kind::cancelled) {  // shutting down: retried at next start
        sched_.fail(t.db, now);
        continue;
      }
      errors_[t.error->kind]->inc();
      // An error re-sending cannot cure shows the source as `failed`; it is retried the same way.
      auto delay = sched_.fail(t.db, now, t.error->retryable());
      const bool central_gone = central_missing_.load() || check_requested_;
      if (!(central_gone && t.error->kind == couch_error_kind::not_found) &&
          (s.last_error != t.error->describe() || s.docs_written == 0)) {
        log()->log(outage_error(*t.error) ? spdlog::level::debug : spdlog::level::warn,
                   "db={} replication failed: {} (retry in {} ms)", t.db, t.error->describe(), delay.count());
      }
      s.last_error = t.error->describe();
      continue;
    }
    bool more = t.page->changes.size() >= opts_.turn_docs;
    std::size_t written = 0;
    if (auto w = res.written_by_unit.find(t.db); w != res.written_by_unit.end()) written = w->second;
    s.docs_written += written;
    log()->debug("db={} turn since={} changes={} resume={} written={}", t.db, t.since.dump(), t.page->changes.size(),
                 t.page->last_seq.dump(), written);
    s.last_success = std::chrono::system_clock::now();
    s.last_error.clear();
    s.include_docs = include_docs_next(s.include_docs, t.first_generation_rows, t.page->changes.size());
    if (auto lag = sched_.complete(t.db, more, now)) lag_.observe(std::chrono::duration<double>(*lag).count());
  }
  cv_.notify_all();
}

}  // namespace couchgate::replicator
