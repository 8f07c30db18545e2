// Owns: applying the provisioning policy to `_users` (see provisioner.hpp).
#include "gateway/provisioner.hpp"


#include <algorithm>
#include <set>
#include <system_error>
#include <variant>
#include <unordered_map>

#include "policy/naming.hpp"
#include "replicator/answers.hpp"
#include "replicator/backoff.hpp"
#include "replicator/logger.hpp"
#include "replicator/outage.hpp"
#include "policy/security.hpp"

namespace couchgate::gateway {

using replicator::couch_error_kind;
using replicator::json;
using replicator::pending_json;

namespace {
std::shared_ptr<spdlog::logger> log() {
  static auto l = replicator::named_logger("provision");
  return l;
}
constexpr const char* users_feed_key = "users";
constexpr std::size_t pipeline_chunk = 256;  // users in flight at once inside one apply() (reconcile)
}  // namespace

provisioner::provisioner(replicator::couch_client& client, replicator::state_store& state,
                         replicator::registry& metrics, provisioning_config cfg, provisioner_hooks hooks, std::size_t window)
    : client_(client),
      state_(state),
      cfg_(std::move(cfg)),
      hooks_(std::move(hooks)),
      waking_(client.wire(), bell_),
      feed_client_(waking_, client.limits()),
      window_(window == 0 ? 1 : window),
      policy_(live_policy::of(cfg_)),
      users_seen_(metrics.add_counter("couchgate_users_seen_total", "User documents processed (feed and reconcile)")),
      dbs_created_(metrics.add_counter("couchgate_databases_provisioned_total", "User databases created")),
      dbs_deleted_(metrics.add_counter("couchgate_databases_deleted_total", "User databases deleted by the on_delete: delete policy")),
      security_writes_(metrics.add_counter("couchgate_security_writes_total", "_security objects written (they differed)")),
      errors_(metrics.add_counter("couchgate_provisioning_errors_total", "Failed provisioning actions (retried)")),
      malformed_(metrics.add_counter("couchgate_malformed_user_docs_total", "User documents skipped as malformed (each once while it stays so)")),
      reconnects_(metrics.add_counter("couchgate_feed_reconnects_total", "Feed reconnects after an error", "feed=\"users\"")),
      reconciles_(metrics.add_counter("couchgate_reconciles_total", "Completed reconcile passes")),
      orphans_(metrics.add_gauge("couchgate_orphan_databases", "Databases with the user prefix and no matching user (reported, never deleted by reconcile)")),
      pending_(metrics.add_gauge("couchgate_users_feed_pending", "Changes in _users not processed yet (CouchDB's pending count)")) {}

provisioner::~provisioner() { stop(); }

live_policy provisioner::policy() const {
  std::lock_guard lk(mu_);
  return policy_;
}

void provisioner::update_policy(const provisioning_config& fresh) {
  {
    std::lock_guard lk(mu_);
    policy_ = live_policy::of(fresh);
    reconcile_requested_ = true;
  }
  bell_->ring();
  log()->info("policy updated; reconciling every user database");
}

std::string provisioner::db_for(const std::string& name) const { return policy::user_db_name(cfg_.db_prefix, name); }

void provisioner::record(const std::string& name, const std::string& db, policy::user_action a, const std::string& error) {
  std::lock_guard lk(mu_);
  auto& u = users_[name];
  u.name = name;
  u.db = db;
  u.action = a;
  u.done = error.empty();
  u.last_error = error;
  u.updated = std::chrono::system_clock::now();
}

std::optional<std::string> provisioner::owner_of(const std::string& db) const {
  if (auto name = policy::user_from_db_name(cfg_.db_prefix, db)) return name;
  std::lock_guard lk(mu_);
  auto it = hashed_owner_.find(db);
  if (it == hashed_owner_.end()) return std::nullopt;
  return it->second;
}

void provisioner::database_created(const std::string& db, bool recreated) {
  if (db.rfind(cfg_.db_prefix, 0) != 0) return;
  {
    std::lock_guard lk(mu_);
    if (auto it = self_created_.find(db); it != self_created_.end()) {
      self_created_.erase(it);
      if (!recreated) return;  // our own create: apply() writes its _security
    }
    created_queue_.push_back(db);
  }
  bell_->ring();
}

bool provisioner::caller_ready(const std::string& name) const {
  auto u = user(name);
  return u && u->done && u->action == policy::user_action::ensure;
}

bool provisioner::ensure_caller(const policy::session_user& who, policy::token_user_action& decided) {
  decided = policy::token_user_action::not_token;
  if (auto u = user(who.name); u && u->done) {
    if (u->action == policy::user_action::ensure) return true;  // caller_ready
    // Applied as a user the policy does not select (or a deleted one): while CouchDB's answer
    // gives roles the policy still does not select, nothing changed and nothing is asked (the
    // selection reads only the name and the roles). Given the selected role, or recreated with
    // it, the caller's database is made below.
    if (!policy::matches(policy().select, policy::user_doc{who.name, who.roles, false})) return true;
  }
  // Not applied yet: a `_users` document written a moment ago (the feed has not brought it yet),
  // or a JWT caller with none. Until its `_security` is written the database is CouchDB's
  // admin-only default (or missing), so the caller's request would get 403 or 404.
  auto doc = client_.get_doc(cfg_.users_db, "org.couchdb.user:" + who.name).get();
  if (!doc.ok() && doc.error().kind != couch_error_kind::not_found) return false;
  if (doc.ok()) {
    if (who.authenticated == "jwt") decided = policy::token_user_action::has_user_doc;
    auto parsed = policy::parse_user_doc(doc.value(), false, doc.value().dump().size());
    const auto* u = std::get_if<policy::user_doc>(&parsed);
    if (u == nullptr || u->name != who.name) return true;  // malformed: skipped here as by the feed
    return apply({*u}) == 0;
  }
  if (who.authenticated != "jwt") return true;  // no `_users` document (a server admin): none of couchgate's
  auto info = client_.db_info(db_for(who.name)).get();
  if (!info.ok() && info.error().kind != couch_error_kind::not_found) return false;
  decided = policy::decide_token_user(who, policy().select, false, info.ok());
  if (decided != policy::token_user_action::provision) return true;
  return apply({policy::user_doc{who.name, who.roles, false}}) == 0;
}

void provisioner::forget_self_created(const std::string& db) {
  std::lock_guard lk(mu_);
  self_created_.erase(db);
}

void provisioner::note_self_created(const std::string& db) {
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lk(mu_);
  // Sweep mode never reports creations: entries older than a minute are dropped, so the map
  // holds at most a minute of provisioning.
  if (self_created_.size() >= 1024) {
    std::erase_if(self_created_, [&](const auto& e) { return now - e.second > std::chrono::minutes(1); });
  }
  self_created_[db] = now;
}

void provisioner::apply_created() {
  std::vector<std::string> dbs;
  {
    std::lock_guard lk(mu_);
    dbs.swap(created_queue_);
  }
  if (dbs.empty()) return;
  const live_policy p = policy();
  struct job {
    std::string db, name;
    json want;
    pending_json read;
  };
  std::vector<job> jobs;
  for (const auto& db : dbs) {
    auto name = owner_of(db);
    if (!name) continue;
    std::optional<user_state> u = user(*name);
    if (!u || u->db != db || u->action == policy::user_action::delete_db) continue;  // nothing decided for it
    job j{db, *name, policy::render_security(p.security, u->action == policy::user_action::ensure ? std::optional(*name) : std::nullopt), {}};
    j.read = client_.get_security(db);
    jobs.push_back(std::move(j));
  }
  std::vector<std::pair<job*, pending_json>> writes;
  for (auto& j : jobs) {
    auto r = j.read.get();
    if (!r.ok()) {
      if (r.error().kind != couch_error_kind::not_found && r.error().kind != couch_error_kind::cancelled) {
        errors_.inc();
        // An outage is logged once by the transport (outage.hpp): its failures at debug.
        log()->log(replicator::outage_error(r.error()) ? spdlog::level::debug : spdlog::level::warn,
                   "user={} db={} created again, but its _security cannot be read: {} (the next reconcile repairs it)",
                   j.name, j.db, r.error().describe());
      }
      continue;
    }
    if (!policy::security_equal(r.value(), j.want)) writes.emplace_back(&j, client_.put_security(j.db, j.want));
  }
  for (auto& [j, call] : writes) {
    auto r = call.get();
    if (!r.ok()) {
      if (r.error().kind == couch_error_kind::cancelled) continue;
      errors_.inc();
      log()->warn("user={} db={} created again, but its _security cannot be written: {} (the next reconcile repairs it)", j->name,
                  j->db, r.error().describe());
      continue;
    }
    security_writes_.inc();
    log()->info("user={} db={} created again; _security applied", j->name, j->db);
  }
}

std::optional<user_state> provisioner::user(const std::string& name) const {
  std::lock_guard lk(mu_);
  auto it = users_.find(name);
  if (it == users_.end()) return std::nullopt;
  return it->second;
}

std::size_t provisioner::known_users() const {
  std::lock_guard lk(mu_);
  return users_.size();
}

std::vector<std::optional<policy::direct_verdict>> provisioner::verdicts(const std::vector<const policy::user_doc*>& users,
                                                                        const live_policy& p, std::vector<bool>& unreleased) {
  std::vector<std::optional<policy::direct_verdict>> out(users.size(), policy::direct_verdict{});
  unreleased.assign(users.size(), false);
  if (!hooks_.admit || !hooks_.user_gone) return out;
  // A deleted user's reservations are released; a selected live user gets its reservations and
  // may be excluded (identities.on_duplicate: exclude).
  std::vector<const policy::user_doc*> live;
  std::vector<std::size_t> at;
  for (std::size_t i = 0; i < users.size(); ++i) {
    if (users[i]->deleted) {
      {
        std::lock_guard lk(mu_);
        look_again_.erase(users[i]->name);
      }
      if (!hooks_.user_gone(users[i]->name)) unreleased[i] = true;  // its database is still handled
    } else if (policy::decide(p.select, p.on_delete, *users[i]) == policy::user_action::ensure) {
      live.push_back(users[i]);
      at.push_back(i);
    }
  }
  if (!live.empty()) {
    auto v = hooks_.admit(live);
    for (std::size_t k = 0; k < at.size() && k < v.size(); ++k) out[at[k]] = std::move(v[k]);
  }
  return out;
}

std::optional<provisioner::user_chain> provisioner::begin_chain(const policy::user_doc& u,
                                                                const std::optional<policy::direct_verdict>& v,
                                                                const live_policy& p, const std::set<std::string>* existing,
                                                                replicator::couch_client& via, std::size_t& retryable) {
  user_chain j;
  j.u = u;
  j.action = policy::decide(p.select, p.on_delete, u);
  j.db = db_for(u.name);
  j.via = &via;
  users_seen_.inc();
  if (!policy::user_from_db_name(cfg_.db_prefix, j.db)) {
    std::lock_guard lk(mu_);
    hashed_owner_[j.db] = u.name;
  }
  if (j.action == policy::user_action::ensure) {
    {
      std::lock_guard lk(mu_);
      if (v && v->look_again) look_again_[u.name] = u;
      else look_again_.erase(u.name);
    }
    if (!v) {
      ++retryable;
      record(u.name, j.db, j.action, "its name and e-mail reservations could not be checked (retried)");
      return std::nullopt;
    }
    if (!v->provision) {
      record(u.name, j.db, j.action, "excluded: its name or e-mail address is reserved by another user (identities.on_duplicate: exclude)");
      return std::nullopt;
    }
  } else if (!u.deleted) {
    bool was_conflicting = false;
    {
      std::lock_guard lk(mu_);
      was_conflicting = look_again_.erase(u.name) > 0;
    }
    // No longer selected: it is not listed as a conflict any more (its reservations stay).
    if (was_conflicting && hooks_.user_gone) hooks_.user_gone(u.name);
  }
  // Reconcile knows which databases exist: a user who is not (or no longer) selected and
  // has no database needs nothing, and thousands of unselected users cost no request.
  if (existing && j.action != policy::user_action::ensure && !existing->count(j.db)) return std::nullopt;
  if (j.action == policy::user_action::ensure && existing && existing->count(j.db)) {
    // Reconcile just listed it: its `_security` is read and compared, without first asking to
    // create it again (a 412 for each of 10 000 users every reconcile_interval).
    j.want = policy::render_security(p.security, u.name);
    j.listed = true;
    j.call = via.get_security(j.db);
    j.at = user_chain::stage::second;
  } else if (j.action == policy::user_action::ensure) {
    j.want = policy::render_security(p.security, u.name);
    if (hooks_.creating) hooks_.creating(j.db, true);
    // Noted before the PUT: `_db_updates` may announce the creation before its 201 is read here.
    note_self_created(j.db);
    j.call = via.create_db(j.db, cfg_.q, cfg_.n);
  } else if (j.action == policy::user_action::revoke_owner) {
    j.want = policy::render_security(p.security, std::nullopt);
    j.call = via.get_security(j.db);
  } else {
    // Look first: some servers answer 200 to deleting a database that does not exist.
    j.call = via.db_info(j.db);
  }
  return j;
}

void provisioner::advance(user_chain& j) {
  using stage = user_chain::stage;
  auto r = j.call.get();
  auto& via = *j.via;
  if (j.at == stage::first) {
    j.at = stage::over;
    if (j.action == policy::user_action::ensure) {
      if (r.ok()) {
        j.second_writes = true;
        dbs_created_.inc();
        j.call = via.put_security(j.db, j.want, true);
        j.at = stage::second;
      } else if (r.error().kind == couch_error_kind::conflict) {  // it existed: read its _security
        forget_self_created(j.db);
        if (hooks_.creating) hooks_.creating(j.db, false);
        j.call = via.get_security(j.db, true);
        j.at = stage::second;
      } else {
        // (A create the server made but whose answer was lost is announced, not forgotten: then
        // the announcement applies the user once more, which is harmless.)
        forget_self_created(j.db);
        if (hooks_.creating) hooks_.creating(j.db, false);
        j.error = r.error();
      }
    } else if (j.action == policy::user_action::revoke_owner) {
      if (r.ok()) {
        if (!policy::security_equal(r.value(), j.want)) {
          j.second_writes = true;
          j.call = via.put_security(j.db, j.want, true);
          j.at = stage::second;
        }
      } else if (r.error().kind != couch_error_kind::not_found) {
        j.error = r.error();
      }
    } else {
      if (r.ok()) {
        j.call = via.delete_db(j.db, true);
        j.at = stage::second;
      } else if (r.error().kind != couch_error_kind::not_found) {
        j.error = r.error();
      }
    }
    return;
  }
  const bool repair = j.at == stage::repair;
  j.at = stage::over;
  if (!r.ok()) {
    if (j.listed && !repair && r.error().kind == couch_error_kind::not_found) {
      // Deleted since it was listed: made again, as for a user seen for the first time.
      j.listed = false;
      if (hooks_.creating) hooks_.creating(j.db, true);
      note_self_created(j.db);
      j.call = via.create_db(j.db, cfg_.q, cfg_.n);
      j.at = stage::first;
      return;
    }
    j.error = r.error();
    return;
  }
  if (repair) {
    security_writes_.inc();
    log()->info("user={} db={} _security repaired", j.u.name, j.db);
  } else if (j.action == policy::user_action::delete_db) {
    dbs_deleted_.inc();
    log()->info("user={} db={} deleted (on_delete: delete)", j.u.name, j.db);
  } else if (j.second_writes) {
    security_writes_.inc();
  } else if (!policy::security_equal(r.value(), j.want)) {
    j.call = via.put_security(j.db, j.want, true);
    j.at = stage::repair;
  }
}

bool provisioner::conclude(const user_chain& j) {
  if (j.error) {
    if (j.error->kind == couch_error_kind::cancelled) return true;
    errors_.inc();
    log()->log(replicator::outage_error(*j.error) ? spdlog::level::debug : spdlog::level::warn,
               "user={} db={} provisioning failed: {}", j.u.name, j.db, j.error->describe());
    record(j.u.name, j.db, j.action, j.error->describe());
    return j.error->retryable() || j.error->kind == couch_error_kind::conflict;
  }
  record(j.u.name, j.db, j.action, "");
  if (j.action == policy::user_action::delete_db) {
    if (hooks_.source_removed) hooks_.source_removed(j.db);
  } else if (j.action == policy::user_action::ensure && hooks_.source_added) {
    // A revoked user's database keeps its data and stays a source; reconcile registers it.
    hooks_.source_added(j.db, policy::owner{policy::owner::kind::user, j.u.name});
  }
  if (j.second_writes && j.action == policy::user_action::ensure) log()->debug("user={} db={} provisioned", j.u.name, j.db);
  return j.unreleased;
}

std::size_t provisioner::apply(const std::vector<policy::user_doc>& input, const std::set<std::string>* existing) {
  // Last document per name wins (a feed batch may hold several revisions of one user).
  std::vector<policy::user_doc> users;
  {
    std::unordered_map<std::string, std::size_t> pos;
    for (const auto& u : input) {
      auto [it, fresh] = pos.emplace(u.name, users.size());
      if (fresh) users.push_back(u);
      else users[it->second] = u;
    }
  }
  const live_policy p = policy();
  std::size_t retryable = 0;
  for (std::size_t off = 0; off < users.size(); off += pipeline_chunk) {
    if (stop_.requested()) return retryable + (users.size() - off);  // stopping: the rest waits for the next start
    const std::size_t end = std::min(users.size(), off + pipeline_chunk);
    std::vector<const policy::user_doc*> chunk;
    for (std::size_t i = off; i < end; ++i) chunk.push_back(&users[i]);
    std::vector<bool> unreleased;
    const auto v = verdicts(chunk, p, unreleased);
    retryable += static_cast<std::size_t>(std::count(unreleased.begin(), unreleased.end(), true));
    std::vector<user_chain> chains;
    for (std::size_t i = 0; i < chunk.size(); ++i) {
      if (auto c = begin_chain(*chunk[i], v[i], p, existing, client_, retryable)) chains.push_back(std::move(*c));
    }
    // In rounds: every chain's request of a round is in flight together.
    for (bool left = true; left;) {
      left = false;
      for (auto& c : chains) {
        if (c.at == user_chain::stage::over) continue;
        advance(c);
        left = left || c.at != user_chain::stage::over;
      }
    }
    for (const auto& c : chains) {
      if (conclude(c)) ++retryable;
    }
  }
  return retryable;
}

void provisioner::skip_malformed(const policy::user_doc_error& e, const char* where) {
  const std::string id = e.doc_id.empty() ? "(no id)" : e.doc_id;
  if (!malformed_seen_.first(id, e.reason)) return;  // reported already, and still so
  malformed_.inc();
  log()->warn("{}skipping user document {}: {}", where, id, e.reason);
}

bool provisioner::reconcile() {
  auto started = std::chrono::steady_clock::now();
  // 1. Every user document, a page at a time.
  std::vector<policy::user_doc> users;
  std::set<std::string> user_names;
  std::string startkey;
  bool ok = true;
  for (;;) {
    if (stop_.requested()) return false;  // stopping: the next start reconciles
    std::string q = "include_docs=true&limit=1000";
    if (!startkey.empty()) q += "&skip=1&startkey=" + replicator::encode_query_value(json(startkey).dump());
    auto r = client_.all_docs(cfg_.users_db, q).text();
    auto rows = r.ok() ? replicator::parse_all_docs(r.value()) : replicator::result<std::vector<replicator::listed_doc>>(r.error());
    if (!rows.ok()) {
      log()->warn("reconcile: cannot list {}: {}", cfg_.users_db, rows.error().describe());
      return false;
    }
    for (const auto& row : rows.value()) {
      auto parsed = replicator::user_of(row);
      if (auto* u = std::get_if<policy::user_doc>(&parsed)) {
        user_ok(*u);
        user_names.insert(u->name);
        users.push_back(std::move(*u));
      } else if (auto* e = std::get_if<policy::user_doc_error>(&parsed)) {
        skip_malformed(*e, "reconcile: ");
      }
    }
    if (rows.value().size() < 1000) break;
    startkey = rows.value().back().id;
  }
  // 2. Existing databases.
  auto dbs = client_.all_dbs().get();
  if (!dbs.ok() || !dbs.value().is_array()) {
    log()->warn("reconcile: cannot list databases: {}", dbs.ok() ? "not an array" : dbs.error().describe());
    return false;
  }
  std::set<std::string> existing;
  for (const auto& d : dbs.value()) {
    if (d.is_string() && d.get<std::string>().rfind(cfg_.db_prefix, 0) == 0) existing.insert(d.get<std::string>());
  }
  // 3. Apply the policy to every user (idempotent; writes only what differs).
  if (apply(users, &existing) > 0) ok = false;
  // 4. Databases with the prefix and no user: reported, never deleted here.
  std::set<std::string> expected;
  for (const auto& n : user_names) expected.insert(db_for(n));
  std::size_t orphans = 0;
  for (const auto& db : existing) {
    if (expected.count(db)) continue;
    ++orphans;
    if (orphans <= 10) log()->warn("reconcile: db={} has the user prefix but no user{}", db, orphans == 10 ? " (further ones not listed)" : "");
    // Its data still belongs to someone: keep replicating it if the owner is recoverable.
    if (auto owner = policy::user_from_db_name(cfg_.db_prefix, db); owner && hooks_.source_added) {
      hooks_.source_added(db, policy::owner{policy::owner::kind::user, *owner});
    }
  }
  // Revoked users whose database still exists keep being replicated.
  for (const auto& u : users) {
    auto db = db_for(u.name);
    if (existing.count(db) && hooks_.source_added) hooks_.source_added(db, policy::owner{policy::owner::kind::user, u.name});
  }
  orphans_.set(static_cast<double>(orphans));
  if (ok) reconciles_.inc();
  log()->info("reconcile: {} users, {} user databases, {} orphans, {} in {} ms", users.size(), existing.size(), orphans,
              ok ? "complete" : "incomplete (retrying)",
              std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count());
  return ok;
}

void provisioner::start() {
  stop_.reset();
  ended_.reset();
  thread_ = std::thread([this] {
    run();
    ended_.request();
  });
}

void provisioner::request_stop() {
  stop_.request();
  bell_->ring();
}

bool provisioner::wait_stopped(std::chrono::milliseconds d) { return !thread_.joinable() || !ended_.sleep_for(d); }

void provisioner::stop() {
  request_stop();
  if (thread_.joinable()) thread_.join();
}

replicator::json provisioner::start_position() {
  auto stored = state_.get_value(users_feed_key);
  if (!stored.ok()) return nullptr;
  if (stored.value()) return *stored.value();
  // First start ever: the reconcile that follows covers everything up to here.
  auto info = client_.db_info(cfg_.users_db).get();
  if (const json* seq = info.ok() ? replicator::wire::find(info.value(), "update_seq") : nullptr) return *seq;
  return nullptr;
}

void provisioner::run() {
  const auto rnd = replicator::random_uniform_source();
  replicator::backoff_policy bp{};
  std::uint32_t failures = 0;
  // The feed's start is taken *before* the first reconcile: a user written while it lists
  // _users is then seen by the feed, not skipped until the next reconcile. Readiness waits for
  // both.
  json since = nullptr;
  while (!stop_.requested()) {
    if (since.is_null()) since = start_position();
    if (!since.is_null()) {
      {
        std::lock_guard lk(mu_);
        reconcile_requested_ = false;  // this pass reads the policy in force now
      }
      if (reconcile()) break;
    }
    if (!stop_.sleep_for(replicator::backoff_delay(bp, ++failures, rnd))) return;
  }
  if (stop_.requested()) return;
  ready_.store(true);
  const auto interval = policy().reconcile_interval;
  if (interval.count() > 0) next_reconcile_ = std::chrono::steady_clock::now() + interval;
  follow(std::move(since));
}

feed_failure_level feed_failure_log_level(feed_failure_count& f, bool outage_error, std::uint64_t outages_now) {
  const bool outage_between = outages_now != f.outages_seen;
  f.outages_seen = outages_now;
  if (outage_error || outage_between) f.in_a_row = 0;
  if (outage_error) return feed_failure_level::debug;
  return ++f.in_a_row > 1 ? feed_failure_level::warn : feed_failure_level::info;
}

std::chrono::milliseconds reconcile_retry_delay(std::uint32_t failures, std::chrono::seconds interval,
                                                const replicator::uniform_source& rnd) {
  constexpr std::uint32_t quick = 5;
  if (failures > quick) return interval.count() > 0 ? std::chrono::milliseconds(interval) : std::chrono::minutes(10);
  const replicator::backoff_policy bp{std::chrono::seconds(1), std::chrono::seconds(60)};
  return replicator::backoff_delay(bp, failures, rnd);
}

bool provisioner::reconcile_due() const {
  std::lock_guard lk(mu_);
  return reconcile_requested_ || std::chrono::steady_clock::now() >= next_reconcile_;
}

void provisioner::reconcile_if_due() {
  {
    std::lock_guard lk(mu_);
    if (!reconcile_requested_ && std::chrono::steady_clock::now() < next_reconcile_) return;
    if (reconcile_requested_) reconcile_failures_ = 0;  // a reload's pass gets the quick retries again
    reconcile_requested_ = false;
  }
  const bool ok = reconcile();
  const auto interval = policy().reconcile_interval;
  const auto now = std::chrono::steady_clock::now();
  if (!ok) {
    next_reconcile_ = now + reconcile_retry_delay(++reconcile_failures_, interval, rnd_);
    return;
  }
  reconcile_failures_ = 0;
  next_reconcile_ = interval.count() > 0 ? now + interval : std::chrono::steady_clock::time_point::max();
}

void provisioner::look_again_if_due() {
  const auto now = std::chrono::steady_clock::now();
  std::vector<policy::user_doc> docs;
  {
    std::lock_guard lk(mu_);
    if (look_again_.empty() || now < next_look_again_) return;
    for (const auto& [name, u] : look_again_) docs.push_back(u);
  }
  next_look_again_ = now + look_again_interval;
  apply(docs);
}

void provisioner::follow(json since) {
  using clock = std::chrono::steady_clock;
  feed_position position(state_, users_feed_key, [bell = bell_] { bell->ring(); });
  // However the feed ends (stopping): what is done is not applied again at the next start.
  struct save_at_exit {
    feed_position& p;
    ~save_at_exit() { p.finish(); }
  } saved_at_exit{position};
  const auto rnd = replicator::random_uniform_source();
  const replicator::backoff_policy bp{};
  feed_work work(window_);
  pending_json feed;                      // the _users read in flight, if any
  auto feed_at = clock::time_point::min();  // when the next read may go (backoff after a failure)
  std::uint32_t feed_failures = 0;   // in a row, for the backoff
  feed_failure_count failed_reads;    // in a row, for the log level
  // Chains with a request in flight, by their row; rows whose chain failed, waiting to retry.
  std::map<feed_work::ticket, user_chain> running;
  struct retry {
    policy::user_doc u;
    clock::time_point at{};
  };
  std::map<feed_work::ticket, retry> retrying;
  std::map<feed_work::ticket, std::uint32_t> failures;  // of the rows in flight that failed before
  // A row whose chain failed in a way worth retrying: retried alone, after a backoff that grows
  // with its failures. Meanwhile the position stays before it, and it leaves its place in the
  // window to the rows behind it (feed_work::retrying).
  const auto retry_later = [&](feed_work::ticket id, policy::user_doc u, clock::time_point now) {
    const auto n = ++failures[id];
    retrying[id] = retry{std::move(u), now + replicator::backoff_delay(bp, n, rnd)};
    work.retrying(id);
  };
  // A row done with (finished, failed for good, or superseded): its name may start again.
  const auto row_over = [&](feed_work::ticket id) {
    failures.erase(id);
    work.finished(id);
  };

  const auto take_answers = [&](clock::time_point now) {
    for (auto it = running.begin(); it != running.end();) {
      auto& c = it->second;
      while (c.at != user_chain::stage::over && c.call.ready()) advance(c);
      if (c.at != user_chain::stage::over) {
        ++it;
        continue;
      }
      if (conclude(c)) {
        retry_later(it->first, std::move(c.u), now);
      } else {
        row_over(it->first);
      }
      it = running.erase(it);
    }
  };

  while (!stop_.requested()) {
    const std::uint64_t seen = bell_->rings();
    // A reconcile (periodic, or a reload's) waits for the chains in flight and starts none
    // meanwhile: a chain carries the policy it started with, and one that finished after the
    // reconcile would write the old policy's _security back.
    // (Decided on `running` alone, which only this thread changes: testing reconcile_due() here
    // and again in reconcile_if_due() let a reload that landed between the two run its
    // reconcile beside the chains in flight; the ASan build's timing showed it.)
    const bool reconcile_waits = !running.empty() && reconcile_due();
    if (running.empty()) reconcile_if_due();
    apply_created();
    look_again_if_due();
    auto now = clock::now();

    // 1. The feed's answer: its rows join the work; the next read goes out at once (below).
    if (feed.valid() && feed.ready()) {
      auto r = feed.text();
      feed = pending_json();
      if (!r.ok()) {
        if (r.error().kind == couch_error_kind::cancelled) return;
        reconnects_.inc();
        if (r.error().kind == couch_error_kind::timeout) {
          // The longpoll ended on the client's clock (CouchDB ignores `timeout` on a feed with a
          // heartbeat): the wait itself spaced the attempts, so reconnect at once. (A connection
          // silent for three heartbeats is a network failure: backed off below.)
          log()->debug("_users feed: {}; reconnecting", r.error().describe());
        } else {
          auto delay = replicator::backoff_delay(bp, ++feed_failures, rnd);
          const auto level = feed_failure_log_level(failed_reads, replicator::outage_error(r.error()),
                                                    hooks_.outages ? hooks_.outages() : 0);
          log()->log(level == feed_failure_level::debug  ? spdlog::level::debug
                     : level == feed_failure_level::info ? spdlog::level::info
                                                         : spdlog::level::warn,
                     "_users feed failed: {} (retry in {} ms)", r.error().describe(), delay.count());
          feed_at = now + delay;
        }
      } else if (auto page = replicator::parse_changes(r.value()); !page.ok()) {
        reconnects_.inc();
        log()->warn("_users feed answer unreadable: {}", page.error().describe());
        feed_at = now + replicator::backoff_delay(bp, ++feed_failures, rnd);
      } else {
        feed_failures = 0;
        failed_reads.in_a_row = 0;
        for (const auto& row : page.value().changes) {
          auto parsed = replicator::user_of(row);
          if (auto* u = std::get_if<policy::user_doc>(&parsed)) {
            if (hooks_.user_changed) hooks_.user_changed(u->name);
            user_ok(*u);
            work.arrived(std::move(*u));
          } else if (auto* e = std::get_if<policy::user_doc_error>(&parsed)) {
            if (auto name = policy::user_name_from_doc_id(e->doc_id); name && hooks_.user_changed) hooks_.user_changed(*name);
            skip_malformed(*e, "");
          }
        }
        if (page.value().pending) pending_.set(*page.value().pending);
        if (!page.value().last_seq.is_null() && page.value().last_seq != since) {
          since = page.value().last_seq;
          work.reached(since);
        }
      }
    }
    // 2. The next read, unless a window's worth of rows waits already for the chains in flight:
    // reading on while they wait only splits the same rows over more requests (at 100 new
    // users/s on CouchDB 3.5.0, 572-635 `_users` reads for 1 000 users against 40-57 this way;
    // each read costs the server a few ms). Rows written meanwhile come with the next read.
    if (!feed.valid() && now >= feed_at && work.waiting() < window_) {
      replicator::changes_query q;
      q.since = since;
      q.limit = cfg_.batch;
      q.include_docs = true;
      q.all_docs_style = false;
      q.feed = replicator::changes_query::feed_kind::longpoll;
      feed = feed_client_.changes(cfg_.users_db, q);
    }
    // 3. Answers to the chains: each takes its next step; a finished one frees its name.
    take_answers(now);
    // 4. Chains to start: retries that are due, then the rows the window lets in (none while a
    // reconcile waits for the chains in flight). A failed row whose name has a newer row waiting
    // is not retried: the newer revision supersedes it (a deletion is not held up by the user's
    // older, failing revision).
    std::vector<feed_work::started> start;
    for (auto it = retrying.begin(); it != retrying.end();) {
      if (work.superseded(it->second.u.name)) {
        log()->debug("user {}: a newer revision arrived; the failed one is not retried", it->second.u.name);
        row_over(it->first);
        it = retrying.erase(it);
        continue;
      }
      if (reconcile_waits || it->second.at > now || !work.resume(it->first)) {
        ++it;  // (not resumed: the window is full; asked again when a chain ends)
        continue;
      }
      start.push_back({it->first, std::move(it->second.u)});
      it = retrying.erase(it);
    }
    if (!reconcile_waits) {
      for (auto& s : work.take()) start.push_back(std::move(s));
    }
    if (!start.empty()) {
      const live_policy p = policy();
      std::vector<const policy::user_doc*> users;
      for (const auto& s : start) users.push_back(&s.user);
      std::vector<bool> unreleased;
      const auto v = verdicts(users, p, unreleased);
      for (std::size_t i = 0; i < start.size(); ++i) {
        std::size_t retryable = 0;
        if (auto c = begin_chain(start[i].user, v[i], p, nullptr, feed_client_, retryable)) {
          c->unreleased = unreleased[i];
          running.emplace(start[i].id, std::move(*c));
        } else if (retryable > 0) {
          retry_later(start[i].id, std::move(start[i].user), now);
        } else {
          row_over(start[i].id);
        }
      }
    }
    // 5. The position: to where every user before it is done, stored at most every second.
    if (auto done = work.moved()) position.moved(*done);
    position.save_if_due();
    // 6. Sleep until an answer, a request from another thread, or the next thing due.
    if (!start.empty()) continue;  // answers given before submit returned are looked at at once
    auto until = position.due();
    if (!feed.valid() && work.waiting() < window_) until = std::min(until, feed_at);
    if (reconcile_waits) {
      if (running.empty()) continue;  // the last chain just ended: reconcile now
    } else {
      // (A retry due but not resumed waits for a chain in flight to end: its answer wakes this.)
      for (const auto& [id, r] : retrying) {
        if (r.at > now) until = std::min(until, r.at);
      }
      until = std::min(until, next_reconcile_);
    }
    {
      std::lock_guard lk(mu_);
      if (!look_again_.empty()) until = std::min(until, next_look_again_);
      if ((reconcile_requested_ && !reconcile_waits) || !created_queue_.empty()) continue;
    }
    bell_->wait(seen, until);
  }
  // Stopping: the chains whose answers are in are counted, so the position stored at exit
  // covers them (their users are not applied again at the next start). Nothing new starts.
  take_answers(clock::now());
  if (auto done = work.moved()) position.moved(*done);
}

feed_position::~feed_position() {
  if (writer_.joinable()) writer_.join();
}

void feed_position::moved(const json& to) {
  pending_ = to;
  save_if_due();
}

std::chrono::steady_clock::time_point feed_position::due() const {
  if (!pending_ || writing_) return std::chrono::steady_clock::time_point::max();
  return last_save_ + provisioner::position_save_interval;
}

void feed_position::start_write() {
  writing_ = std::move(pending_);
  pending_.reset();
  last_save_ = std::chrono::steady_clock::now();
  {
    std::lock_guard lk(mu_);
    outcome_.reset();
  }
  auto write = [this, value = *writing_] {
    auto r = state_.put_value(key_, value);
    {
      std::lock_guard lk(mu_);
      outcome_ = std::move(r);
    }
    if (ended_) ended_();
  };
  try {
    writer_ = std::thread(write);
  } catch (const std::system_error& e) {
    // No thread to be had (the process's limit): this write waits here instead.
    log()->warn("no thread for the _users feed position write ({}): written from the feed's own", e.what());
    write();
  }
}

void feed_position::take_ended(bool wait) {
  if (!writing_) return;
  if (!wait) {
    std::lock_guard lk(mu_);
    if (!outcome_) return;
  }
  if (writer_.joinable()) writer_.join();
  auto saved = std::move(*outcome_);
  auto value = std::move(*writing_);
  writing_.reset();
  if (saved.ok()) return;
  if (saved.error().kind == couch_error_kind::cancelled) {
    // Stopping, and the server did not answer in time: nothing is lost, the users since the
    // stored position are applied again (idempotent) at the next start.
    log()->info("stopping before the _users feed position was stored: the users since the last one stored are "
                "looked at again at the next start");
    return;
  }
  log()->warn("could not store the _users feed position: {}", saved.error().describe());
  if (!pending_) pending_ = std::move(value);  // kept: written again when due, unless a newer one waits
}

void feed_position::save_if_due() {
  take_ended(false);
  if (writing_ || !pending_ || std::chrono::steady_clock::now() < due()) return;
  start_write();
}

void feed_position::finish() {
  take_ended(true);
  if (!pending_) return;
  start_write();
  take_ended(true);
}

}  // namespace couchgate::gateway
