// Owns: wiring the components together and the start/stop sequence (see daemon.hpp).
#include "gateway/daemon.hpp"

#include <malloc.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <thread>

#ifdef COUCHGATE_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "gateway/admin_api.hpp"
#include "gateway/connection_budget.hpp"
#include "gateway/databases.hpp"
#include "gateway/feed_notifier.hpp"
#include "gateway/identities.hpp"
#include "gateway/front/front_door.hpp"
#include "gateway/logging.hpp"
#include "gateway/provisioner.hpp"
#include "policy/naming.hpp"
#include "replicator/backoff.hpp"
#include "replicator/change_detector.hpp"
#include "replicator/transport/couch_client.hpp"
#include "replicator/fanin.hpp"
#include "replicator/byte_budget.hpp"
#include "replicator/outage.hpp"
#include "replicator/transport/http_pool.hpp"
#include "replicator/transport/session_auth.hpp"
#include "replicator/logger.hpp"
#include "replicator/metrics.hpp"
#include "replicator/transport/transport_metrics.hpp"
#include "replicator/server_limits.hpp"
#include "replicator/state_store.hpp"
#include "replicator/wire_json.hpp"

namespace couchgate::gateway {

using replicator::json;
namespace r = replicator;

namespace {
std::shared_ptr<spdlog::logger> log() {
  static auto l = r::named_logger("daemon");
  return l;
}

std::string iso_time(std::chrono::system_clock::time_point t);

// The refused documents as the admin API shows them.
json refused_json(const std::vector<r::refused_doc>& list) {
  json out = json::array();
  for (const auto& f : list) {
    out.push_back({{"db", f.db}, {"id", f.id}, {"rev", f.rev}, {"error", f.error}, {"reason", f.reason}, {"when", iso_time(f.when)}});
  }
  return out;
}

std::string iso_time(std::chrono::system_clock::time_point t) {
  auto tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// Resident set size from /proc/self/statm (0 when it cannot be read).
std::size_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::size_t pages_total = 0, pages_resident = 0;
  if (!(statm >> pages_total >> pages_resident)) return 0;
  return pages_resident * static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
}

#if defined(__GLIBC__) && __GLIBC_PREREQ(2, 33)
// malloc's bytes in use (small blocks and mmapped ones) and bytes it keeps free.
std::pair<std::size_t, std::size_t> heap_use() {
  const struct mallinfo2 m = mallinfo2();
  return {m.uordblks + m.hblkhd, m.fordblks};
}
#endif

void notify(const char* state) {
#ifdef COUCHGATE_HAVE_SYSTEMD
  sd_notify(0, state);
#else
  (void)state;
#endif
}

std::string join(const std::vector<std::string>& keys) {
  std::string out;
  for (const auto& k : keys) out += (out.empty() ? "" : ", ") + k;
  return out;
}

// Every client connection (and parked live feed) is a descriptor: the soft limit goes up to the
// hard one (deploy/couchgate.service sets LimitNOFILE to fit front.max_connections).
void raise_open_files_limit(std::size_t wanted) {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0) return;
  if (lim.rlim_cur < lim.rlim_max) {
    rlimit raised = lim;
    raised.rlim_cur = lim.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) lim = raised;
  }
  const auto cur = static_cast<unsigned long long>(lim.rlim_cur);
  log()->info("open files limit (RLIMIT_NOFILE): {}", cur);
  if (wanted > 0 && lim.rlim_cur != RLIM_INFINITY && cur < wanted + 256) {
    log()->warn("open files limit {} is below front.max_connections ({}) plus couchgate's own: raise LimitNOFILE", cur,
                wanted);
  }
}

r::detection to_detection(detection_mode m) {
  switch (m) {
    case detection_mode::db_updates: return r::detection::db_updates;
    case detection_mode::sweep: return r::detection::sweep;
    default: return r::detection::automatic;
  }
}
}  // namespace

struct daemon::impl {
  config cfg;
  std::string config_path;
  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;
  bool reload = false;
  std::atomic<bool> couch_ok{false};
  std::atomic<bool> setup_done{false};

  r::registry metrics;
  // In front of pool: the credential (cookie or Basic). Declared first so that it outlives the
  // pool, whose shutdown still runs its callbacks.
  std::unique_ptr<r::session_auth> auth;
  std::unique_ptr<r::http_pool> pool;
  std::unique_ptr<r::byte_budget> attachment_budget;  // fanin.max_bytes_in_flight (before fan, which uses it)
  std::unique_ptr<r::couch_client> client;
  std::unique_ptr<r::state_store> state;
  std::unique_ptr<r::fanin> fan;
  std::unique_ptr<r::change_detector> detector;
  std::unique_ptr<provisioner> prov;
  std::unique_ptr<identities> ids;
  std::unique_ptr<admin_api> api;
  std::unique_ptr<front_door> front;  // clients' entry point (front.enabled)
  std::unique_ptr<feed_notifier> feeds;  // wakes the front door's parked live feeds
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  // The server's max_dbs_open (-1 until read, or when it cannot be read) against the shards
  // fan-in keeps busy (replicator/server_limits.hpp); written by the main loop.
  std::atomic<std::int64_t> max_dbs_open{-1};
  std::atomic<std::uint64_t> shards_needed{0};
  std::atomic<std::uint64_t> shards_recommended{0};
  std::int64_t limits_warned_for = -2;  // main loop only: the value last warned about
  // The server's [global_changes] (replicator/server_limits.hpp): -1 until read or when it
  // cannot be read; update_db 1/0. Written by the main loop.
  std::atomic<std::int64_t> max_write_delay_ms{-1};
  std::atomic<int> update_db{-1};
  std::string global_changes_warned;  // main loop only: the warning last given

  // Judges the answer to GET /_node/_local/_config/global_changes (update_db off is the
  // detector's to warn about): one warning when live feeds wait on _db_updates and its writes
  // are delayed more than recommended; again only when the value changes.
  void judge_global_changes(const r::result<json>& answer) {
    const auto settings = r::parse_global_changes(answer);
    if (!settings) {
      max_write_delay_ms.store(-1);
      update_db.store(-1);
      return;  // no config API (pouchdb-server), or not now: the detector's probe judges the feed
    }
    max_write_delay_ms.store(static_cast<std::int64_t>(settings->max_write_delay_ms));
    update_db.store(settings->update_db ? 1 : 0);
    // Live feeds wait on _db_updates only while the detector follows it.
    const bool feeds_wait = feeds != nullptr && detector && detector->active_mode() == r::detection::db_updates;
    const auto warning = r::max_write_delay_warning(*settings, feeds_wait);
    if (!warning) {
      global_changes_warned.clear();
      return;
    }
    if (*warning == global_changes_warned) return;
    global_changes_warned = *warning;
    log()->warn("{}", *warning);
  }

  // Judges the answer to GET /_node/_local/_config/couchdb/max_dbs_open; one warning when it
  // becomes too small (or the configured value changed), none while it stays so.
  void judge_limits(const r::result<json>& answer) {
    const std::uint64_t sources = fan ? fan->counts().known : 0;
    const auto e = r::estimate_shards(sources, cfg.provisioning.q);
    shards_needed.store(e.needed);
    shards_recommended.store(e.recommended);
    const std::optional<std::uint64_t> value = r::max_dbs_open_in_effect(answer);
    if (!value) {
      if (max_dbs_open.exchange(-1) != -1 || limits_warned_for == -2) {
        log()->info("CouchDB's max_dbs_open cannot be read ({}); not checked",
                    answer.ok() ? "not a number" : answer.error().describe());
      }
      limits_warned_for = -1;
      return;
    }
    max_dbs_open.store(static_cast<std::int64_t>(*value));
    auto warning = r::max_dbs_open_warning(*value, e, sources, cfg.provisioning.q);
    if (!warning) {
      limits_warned_for = -1;
      return;
    }
    if (limits_warned_for == static_cast<std::int64_t>(*value)) return;
    limits_warned_for = static_cast<std::int64_t>(*value);
    log()->warn("{}", *warning);
  }

  bool wait(std::chrono::milliseconds d) {
    std::unique_lock lk(mu);
    return !cv.wait_for(lk, d, [this] { return stop; });
  }
  bool stopping() {
    std::lock_guard lk(mu);
    return stop;
  }

  int exit_code = 0;  // set by setup() when couchgate must not go on (2: the credential was refused)

  std::pair<bool, std::string> ready() const {
    if (pool) {
      auto s = pool->stats();
      if (s.credential_held) {
        return {false, "CouchDB refused the credential (" + credential_setting() + "); couchgate sends nothing for " +
                           std::to_string(std::chrono::ceil<std::chrono::seconds>(s.held_for).count()) +
                           " s so that the account is not locked, then tries once"};
      }
    }
    if (!couch_ok.load()) return {false, "CouchDB is not reachable"};
    if (!setup_done.load()) return {false, "setting up databases"};
    if (prov && !prov->ready()) return {false, "first reconcile not finished"};
    if (state && state->missing()) return {false, "state database " + cfg.state_db + " is missing (it is created again)"};
    if (fan) {
      if (auto why = fan->central_problem()) return {false, *why};
    }
    return {true, ""};
  }

  // The registry holds every family (the pool's, the session's and the daemon's own are
  // registered in run()); the front door renders its own.
  std::string render_metrics() const {
    std::string out = metrics.render();
    if (front) out += front->render_metrics();
    return out;
  }

  void register_daemon_metrics() {
    // Memory: what the kernel counts (RSS) beside what malloc holds for live objects and keeps
    // free without giving it back; RSS far above the live heap is fragmentation, not a leak.
    metrics.add_callback("process_resident_memory_bytes", "Resident memory size in bytes (/proc/self/statm)",
                         [] { return static_cast<double>(resident_bytes()); });
#if defined(__GLIBC__) && __GLIBC_PREREQ(2, 33)
    metrics.add_callback("couchgate_heap_in_use_bytes", "Bytes malloc has handed out and not had back (mallinfo2)",
                         [] { return static_cast<double>(heap_use().first); });
    metrics.add_callback("couchgate_heap_free_bytes",
                         "Bytes malloc holds free without returning them to the system (mallinfo2 fordblks)",
                         [] { return static_cast<double>(heap_use().second); });
#endif
    metrics.add_counter_callback(
        "couchgate_wire_rejected_total",
        "Answers, rows and documents from CouchDB refused as malformed (wrong types, not JSON, too deep)",
        [] { return static_cast<double>(r::wire::rejected()); });
    metrics.add_callback("couchgate_couchdb_max_dbs_open", "CouchDB's [couchdb] max_dbs_open (-1 when it cannot be read)",
                         [this] { return static_cast<double>(max_dbs_open.load()); });
    metrics.add_callback("couchgate_couchdb_shards_needed",
                         "Shards fan-in keeps busy (sources x q plus couchgate's own databases)",
                         [this] { return static_cast<double>(shards_needed.load()); });
    metrics.add_callback("couchgate_couchdb_max_dbs_open_recommended", "The max_dbs_open couchgate recommends",
                         [this] { return static_cast<double>(shards_recommended.load()); });
    metrics.add_callback("couchgate_couchdb_global_changes_max_write_delay_seconds",
                         "CouchDB's [global_changes] max_write_delay: how late _db_updates reports a change at most "
                         "(-1 when it cannot be read)",
                         [this] {
                           const auto ms = max_write_delay_ms.load();
                           return ms < 0 ? -1.0 : static_cast<double>(ms) / 1000.0;
                         });
    metrics.add_callback("couchgate_couchdb_global_changes_update_db",
                         "CouchDB's [global_changes] update_db as configured on the node couchgate talks to: 1 on, 0 off "
                         "(-1 when it cannot be read). Whether _db_updates records is the detector's to judge (its "
                         "canary): couchgate_db_updates_silent",
                         [this] { return static_cast<double>(update_db.load()); });
    metrics.add_callback("couchgate_up", "1 when ready", [this] { return ready().first ? 1.0 : 0.0; });
  }

  json status() const {
    json j;
    j["version"] = COUCHGATE_VERSION;
    j["couchdb"] = redact_url(cfg.couchdb.url);
    auto [ok, why] = ready();
    j["ready"] = ok;
    if (!ok) j["not_ready_reason"] = why;
    j["uptime_seconds"] = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started).count();
    j["state_db"] = cfg.state_db;
    // How changed databases are heard of (the fan-in's and the front door's live feeds' one follower).
    j["detection"] = detector ? r::to_string(detector->active_mode()) : "off";
    if (fan) {
      auto c = fan->counts();
      j["fanin"] = {{"central_db", cfg.fanin.central_db},
                    {"ids", cfg.fanin.ids == policy::id_mode::namespaced ? "namespaced" : "unchanged"},
                    {"detection", detector ? r::to_string(detector->active_mode()) : "off"},
                    {"db_updates_silent", detector && detector->feed_silent()},
                    {"sources", c.known},
                    {"dirty", c.dirty},
                    {"active", c.active},
                    {"backing_off", c.backing_off}};
    }
    {
      const auto dbs_open = max_dbs_open.load();
      j["couchdb_limits"] = {{"max_dbs_open", dbs_open >= 0 ? json(dbs_open) : json(nullptr)},
                             {"shards_needed", shards_needed.load()},
                             {"recommended_max_dbs_open", shards_recommended.load()},
                             {"too_small", dbs_open >= 0 && static_cast<std::uint64_t>(dbs_open) < shards_needed.load()}};
      const auto write_delay = max_write_delay_ms.load();
      const int updates = update_db.load();
      j["couchdb_limits"]["global_changes"] = {
          {"update_db", updates < 0 ? json(nullptr) : json(updates == 1)},
          {"max_write_delay_ms", write_delay >= 0 ? json(write_delay) : json(nullptr)},
          {"recommended_max_write_delay_ms", r::recommended_max_write_delay_ms}};
    }
    if (prov) j["provisioning"] = {{"users_db", cfg.provisioning.users_db}, {"users", prov->known_users()}, {"ready", prov->ready()}};
    if (pool) {
      auto s = pool->stats();
      j["connections"] = {{"open", s.open_sockets}, {"peak", s.peak_sockets}, {"max", pool->max_connections()}, {"in_flight", s.in_flight}};
      j["credential"] = {{"setting", credential_setting()},
                         {"state", s.credential_held ? "refused" : s.credential_accepted ? "accepted" : "not yet checked"},
                         {"held_for_seconds", std::chrono::ceil<std::chrono::seconds>(s.held_for).count()},
                         {"rejections", s.auth_rejections}};
      j["load"] = {{"overloaded_answers", s.overloaded},
                   {"pace_ms", s.pace.count()},
                   {"delay_ms", s.delay.count()},
                   {"queued", s.queued}};
    }
    return j;
  }

  std::optional<json> user_status(const std::string& name) {
    std::string db = policy::user_db_name(cfg.provisioning.db_prefix, name);
    json j{{"name", name}, {"db", db}};
    bool known = false;
    if (prov) {
      if (auto u = prov->user(name)) {
        known = true;
        const char* action = u->action == policy::user_action::ensure ? "ensure"
                             : u->action == policy::user_action::revoke_owner ? "revoke_owner" : "delete_db";
        j["provisioning"] = {{"action", action}, {"done", u->done}, {"last_error", u->last_error}, {"updated", iso_time(u->updated)}};
      }
    }
    if (fan) {
      if (auto s = fan->status(db)) {
        known = true;
        json rep{{"checkpoint", s->checkpoint}, {"docs_written", s->docs_written}, {"failures", s->failures},
                 {"active", s->active}, {"last_error", s->last_error}};
        rep["last_success"] = s->last_success ? json(iso_time(*s->last_success)) : json(nullptr);
        rep["doc_write_failures"] = s->doc_write_failures;
        rep["state"] = r::to_string(s->phase);  // idle, dirty, fetching, writing, checkpointing, backing_off, failed
        rep["refused_docs"] = refused_json(fan->refused(db));
        auto info_call = client->db_info(db);
        r::changes_query q;
        q.since = s->checkpoint.is_null() ? json(0) : s->checkpoint;
        q.limit = 1;
        q.all_docs_style = false;
        auto changes_call = client->changes(db, q);
        auto info = info_call.get();
        auto changes = changes_call.get();
        std::optional<std::uint64_t> behind;
        if (changes.ok()) behind = r::changes_behind(changes.value());
        if (info.ok() && info.value().contains("update_seq")) {
          rep["update_seq"] = info.value()["update_seq"];
          auto a = r::couch_client::seq_number(info.value()["update_seq"]);
          auto b = r::couch_client::seq_number(s->checkpoint.is_null() ? json(0) : s->checkpoint);
          if (!behind && a && b) behind = *a >= *b ? *a - *b : 0;
        }
        if (behind) rep["behind"] = *behind;
        j["replication"] = rep;
      }
    }
    if (!known) return std::nullopt;
    return j;
  }

  void add_source(const std::string& db, const policy::owner& o) {
    if (fan) fan->add_source(db, o);
  }
  // A database was created (or created again): one that belongs to a user (a hex name, or a
  // hashed one the provisioner knows) is a source at once and gets its _security back.
  void db_created(const std::string& db, bool recreated) {
    auto owner = prov ? prov->owner_of(db) : policy::user_from_db_name(cfg.provisioning.db_prefix, db);
    if (!owner) return;
    if (fan && !fan->knows(db)) fan->add_source(db, policy::owner{policy::owner::kind::user, *owner});
    if (prov) prov->database_created(db, recreated);
  }

  // SIGHUP: applies the keys the config table marks live (gateway/config_table.cpp) and hands
  // each running part its new values; names every other changed key in one warning; keeps the
  // running configuration when the file is invalid. The front door's certificate files are
  // re-read on every SIGHUP, the file changed or not (certificate rotation).
  void reload_config() {
    if (config_path.empty()) return;
    auto fresh = load_config_file(config_path, process_env());
    if (!fresh.errors.empty()) {
      log()->error("reload of {} rejected:\n{}", config_path, format_errors(config_path, fresh.errors));
      reload_front_tls(cfg.front.tls);
      return;
    }
    if (!reload_front_tls(fresh.cfg.front.tls)) fresh.cfg.front.tls = cfg.front.tls;  // keep what is in use
    const auto applied = live_changes(cfg, fresh.cfg);
    const auto restart = restart_needed(cfg, fresh.cfg);
    const bool policy_changed = live_policy::of(cfg.provisioning) != live_policy::of(fresh.cfg.provisioning);
    setup_logging(fresh.cfg.log);
    apply_live_keys(cfg, fresh.cfg);  // member-wise: the admin API threads read the other keys
    if (front) front->apply_limits(cfg);
    log()->info("reloaded {}: {}", config_path, applied.empty() ? "nothing to apply" : "applied " + join(applied));
    if (!restart.empty()) log()->warn("reload of {}: changed keys need a restart to take effect: {}", config_path, join(restart));
    if (policy_changed && prov) prov->update_policy(cfg.provisioning);
  }

  // The front door's certificate and key, re-read; false (logged) when they cannot be used.
  bool reload_front_tls(const front_tls_config& tls) {
    if (!front || (tls.cert_file.empty() && cfg.front.tls.cert_file.empty())) return true;
    std::string error;
    if (!front->reload_tls(tls, error)) {
      log()->error("front door: keeping the previous TLS certificate: {}", error);
      return false;
    }
    log()->info("front door: TLS certificate re-read (new connections use it)");
    return true;
  }

  // Which setting the credential came from, never its value.
  std::string credential_setting() const {
    return cfg.couchdb.credential_source.empty() ? "not set (no COUCHDB_USER, COUCHDB_PASSWORD or couchdb.username)"
                                                 : "set by " + cfg.couchdb.credential_source;
  }

  // At start a refused credential is not retried: each retry is a failed login, and CouchDB
  // locks the account (for every client from this address) after a few. Exit 2 naming the
  // setting instead; a supervisor's restart loop is held off by the same rule (one attempt).
  bool refused_credential(const std::string& what, const r::couch_error& e) {
    if (e.kind != r::couch_error_kind::unauthorized) return false;
    log()->critical("CouchDB at {} refused couchgate's credential ({}: {}); the credential is {}. Check the user "
                    "name and password (the user must be a server admin). Not retrying: CouchDB locks an account "
                    "after a few failed logins.",
                    redact_url(cfg.couchdb.url), what, e.describe(), credential_setting());
    exit_code = 2;
    return true;
  }

  // Waits for CouchDB and creates couchgate's own databases. False when stopping.
  bool setup() {
    auto rnd = r::random_uniform_source();
    r::backoff_policy bp{};
    std::uint32_t failures = 0;
    auto retry = [&](const std::string& what, const r::couch_error& e) {
      if (refused_credential(what, e)) return false;
      auto delay = r::backoff_delay(bp, ++failures, rnd);
      log()->log(r::outage_error(e) ? spdlog::level::debug : spdlog::level::warn, "{}: {} (retry in {} ms)", what,
                 e.describe(), delay.count());
      notify(("STATUS=" + what).c_str());  // systemctl status shows why it is not ready yet
      return wait(delay);
    };
    for (;;) {
      auto info = client->server_info().get();
      if (info.ok()) break;
      couch_ok.store(false);
      if (refused_credential("connecting", info.error())) return false;
      if (!retry("CouchDB at " + redact_url(cfg.couchdb.url) + " not reachable", info.error())) return false;
    }
    couch_ok.store(true);
    log()->info("connected to CouchDB at {}", redact_url(cfg.couchdb.url));
    for (;;) {
      auto s = state->ensure_db();
      if (s.ok()) break;
      if (!retry("cannot prepare state database " + cfg.state_db, s.error())) return false;
    }
    if (cfg.fanin.enabled) {
      while (auto e = ensure_central_db(*client, cfg.fanin.central_db, cfg.fanin.central_guard)) {
        if (!retry("cannot prepare central database " + cfg.fanin.central_db, *e)) return false;
      }
      for (;;) {
        auto l = fan->load();
        if (l.ok()) {
          log()->info("loaded {} checkpoints (central epoch {})", l.value().loaded, fan->central_marker().epoch);
          break;
        }
        if (!retry("cannot load checkpoints", l.error())) return false;
      }
    }
    if (ids) {
      while (auto e = ids->ensure_db()) {
        if (!retry("cannot prepare identities database " + cfg.identities.db, *e)) return false;
      }
    }
    if (cfg.shared.enabled) {
      while (auto e = ensure_shared_db(*client, cfg.shared.db, cfg.shared.member_roles, cfg.shared.admin_roles)) {
        if (!retry("cannot prepare shared database " + cfg.shared.db, *e)) return false;
      }
      if (fan) fan->add_source(cfg.shared.db, policy::owner{policy::owner::kind::shared, ""});
    }
    setup_done.store(true);
    return true;
  }
};

daemon::daemon(config cfg, std::string config_path) : impl_(std::make_unique<impl>()) {
  impl_->cfg = std::move(cfg);
  impl_->config_path = std::move(config_path);
}

daemon::~daemon() = default;

void daemon::request_stop() {
  {
    std::lock_guard lk(impl_->mu);
    impl_->stop = true;
  }
  impl_->cv.notify_all();
}

void daemon::request_reload() {
  {
    std::lock_guard lk(impl_->mu);
    impl_->reload = true;
  }
  impl_->cv.notify_all();
}

int daemon::run() {
  auto& d = *impl_;
  const auto& cfg = d.cfg;
  raise_open_files_limit(cfg.front.enabled ? cfg.front.max_connections : 0);

  // The credential is session_auth's to send (cookie, or Basic as it decides); the pool has none.
  // fanin.max_connections for work plus one socket per change feed (connection_budget.hpp).
  const connection_budget budget = budget_for(cfg);
  r::http_pool::options pool_options{cfg.couchdb.url, "", "", budget.total(), std::string("couchgate/") + COUCHGATE_VERSION};
  pool_options.feed_connections = budget.feeds;  // kept for the feeds: work never queues them
  d.pool = std::make_unique<r::http_pool>(std::move(pool_options));
  d.auth = std::make_unique<r::session_auth>(*d.pool, r::session_options_for(cfg.couchdb.username, cfg.couchdb.password,
                                                                             cfg.couchdb.auth, cfg.couchdb.request_timeout));
  r::register_transport_metrics(d.metrics, *d.pool, *d.auth);
  d.register_daemon_metrics();
  d.client = std::make_unique<r::couch_client>(
      *d.auth, r::timeouts{cfg.couchdb.request_timeout, cfg.couchdb.feed_timeout, cfg.couchdb.heartbeat});
  d.state = std::make_unique<r::state_store>(*d.client, cfg.state_db);

  // Every component exists before the admin API's thread can look at them (they are started
  // only after setup); the pointers never change while that thread runs.
  if (cfg.fanin.enabled) {
    r::fanin_options fo;
    fo.central_db = cfg.fanin.central_db;
    fo.ids = cfg.fanin.ids;
    fo.max_active = cfg.fanin.max_active;
    fo.workers = cfg.fanin.rounds;
    fo.checkpoint_interval = cfg.fanin.checkpoint_interval;
    fo.turn_docs = cfg.fanin.turn_docs;
    fo.inline_docs = cfg.fanin.inline_docs;
    fo.transfer.batch_docs = cfg.fanin.batch_docs;
    fo.transfer.batch_bytes = cfg.fanin.batch_bytes;
    d.attachment_budget = std::make_unique<r::byte_budget>(cfg.fanin.max_bytes_in_flight);
    fo.transfer.budget = d.attachment_budget.get();
    d.metrics.add_callback("couchgate_attachment_bytes_in_flight",
                           "Bytes leased for documents with attachments being copied (fanin.max_bytes_in_flight)",
                           [b = d.attachment_budget.get()] { return static_cast<double>(b->in_use()); });
    d.metrics.add_callback("couchgate_attachment_bytes_in_flight_peak", "Most bytes leased at once for documents with attachments",
                           [b = d.attachment_budget.get()] { return static_cast<double>(b->peak()); });
    fo.target_check_interval = cfg.fanin.target_check_interval;
    fo.create_central = [&d] { return ensure_central_db(*d.client, d.cfg.fanin.central_db, d.cfg.fanin.central_guard); };
    d.fan = std::make_unique<r::fanin>(*d.client, *d.state, d.metrics, fo);
  }
  // One `_db_updates` follower for the fan-in and the front door's live feeds; the front door
  // alone (fan-in off) needs it too: without it its parked feeds would only hear of a change
  // from the bounded sweep (feed_notifier.hpp), minutes at thousands of databases.
  if (cfg.fanin.enabled || cfg.front.enabled) {
    r::detector_options dop;
    dop.mode = to_detection(cfg.fanin.detection);
    dop.create_global_changes = cfg.fanin.create_global_changes;
    dop.sweep_rate = cfg.fanin.sweep_rate;
    dop.sweep_interval = cfg.fanin.sweep_interval;
    dop.node_check_interval = cfg.fanin.node_check_interval;
    dop.verify_interval = cfg.fanin.verify_interval;
    d.detector = std::make_unique<r::change_detector>(*d.client, *d.state, d.fan.get(), d.metrics, dop,
                                                      [&d](const std::string& db, bool recreated) { d.db_created(db, recreated); });
  }
  if (cfg.provisioning.enabled) {
    provisioner_hooks hooks{[&d](const std::string& db, const policy::owner& o) { d.add_source(db, o); },
                            [&d](const std::string& db) {
                              if (d.fan) d.fan->remove_source(db);
                            }};
    hooks.creating = [&d](const std::string& db, bool creating) {
      if (!d.fan) return;
      if (creating) d.fan->created_empty(db);
      else d.fan->not_created(db);
    };
    if (cfg.identities.enabled) {
      // Users made without couchgate get their reservations (d.ids exists before the provisioner starts).
      hooks.admit = [&d](const std::vector<const policy::user_doc*>& users) { return d.ids->admit(users); };
      hooks.user_gone = [&d](const std::string& name) { return d.ids->release_deleted(name); };
    }
    // A user's document changed: the front door (created below, before the provisioner starts)
    // asks about their credentials again, so a parked live feed of a revoked password ends now.
    hooks.outages = [&d] { return static_cast<std::uint64_t>(d.pool->stats().outages); };
    hooks.user_changed = [&d](const std::string& name) {
      if (d.front) d.front->user_changed(name);
    };
    d.prov = std::make_unique<provisioner>(*d.client, *d.state, d.metrics, cfg.provisioning, std::move(hooks),
                                           budget.provisioning_window());
  }

  if (cfg.identities.enabled) {
    d.ids = std::make_unique<identities>(*d.client, d.metrics, cfg.identities, cfg.provisioning.users_db,
                                         [&d](const std::string& name) {
                                           if (!d.prov) return true;
                                           auto u = d.prov->user(name);
                                           return u && u->done && u->action == policy::user_action::ensure;
                                         });
  }
  if (cfg.front.enabled) {
    try {
      front::local_handler local;
      if (d.ids) local = [&d](const front::local_request& r) { return d.ids->serve(r); };
      front::caller_provisioner provision;
      if (d.prov) {
        provision.ready = [&d](const std::string& name) { return d.prov->caller_ready(name); };
        provision.ensure = [&d](const policy::session_user& who) {
          policy::token_user_action decided = policy::token_user_action::not_token;
          const bool ok = d.prov->ensure_caller(who, decided);
          if (ok && decided == policy::token_user_action::provision) {
            log()->info("front door: provisioned the database of JWT user '{}'", who.name);
          }
          return ok;
        };
      }
      d.front = std::make_unique<front_door>(cfg, d.metrics, std::move(local), std::move(provision));
      d.feeds = std::make_unique<feed_notifier>(*d.client, d.front->feeds(), d.detector.get(),
                                                feed_notifier_options{cfg.front.feed_sweep_interval, cfg.fanin.sweep_rate,
                                                                      cfg.fanin.verify_interval});
      if (d.detector) d.detector->set_listener(d.feeds->listener());
    } catch (const std::exception& e) {
      log()->critical("front door: {}", e.what());
      return 1;
    }
  }

  d.api = std::make_unique<admin_api>(admin_handlers{
      [&d] { return d.ready(); }, [&d] { return d.render_metrics(); }, [&d] { return d.status(); },
      [&d](const std::string& u) { return d.user_status(u); },
      [&d] { return json{{"refused_docs", refused_json(d.fan ? d.fan->refused() : std::vector<r::refused_doc>{})}}; },
      [&d]() -> std::optional<json> {
        if (!d.ids) return std::nullopt;
        return json{{"conflicts", d.ids->conflicts()}, {"on_duplicate", policy::to_string(d.cfg.identities.on_duplicate)}};
      }},
      cfg.admin_api.token);
  std::string err;
  int port = d.api->start(cfg.admin_api.address, cfg.admin_api.port, err);
  if (port < 0) {
    log()->critical("admin API: {}", err);
    return 1;
  }
  log()->info("admin API on http://{}:{}{}", cfg.admin_api.address, port,
              cfg.admin_api.token.empty() ? " (no token: open to whoever can reach it)" : " (bearer token required)");
  if (!cfg.admin_api.port_file.empty()) std::ofstream(cfg.admin_api.port_file) << port << "\n";
  if (d.front) {
    const int front_port = d.front->start(err);
    if (front_port < 0) {
      log()->critical("front door: {}", err);
      d.api->stop();
      return 1;
    }
    log()->info("front door on {}://{}:{}", cfg.front.tls.cert_file.empty() ? "http" : "https", cfg.front.address,
                front_port);
    if (!cfg.front.port_file.empty()) std::ofstream(cfg.front.port_file) << front_port << "\n";
  }

  const bool ok = d.setup();
  if (ok) {
    if (d.fan) d.fan->start();
    if (d.detector) d.detector->start();
    if (d.feeds) d.feeds->start();
    if (d.prov) d.prov->start();
    if (d.ids) d.ids->start();
  }

  // Main loop: readiness notification, watchdog, CouchDB liveness, reload.
  bool notified_ready = false;
  std::uint64_t watchdog_usec = 0;
#ifdef COUCHGATE_HAVE_SYSTEMD
  if (sd_watchdog_enabled(0, &watchdog_usec) <= 0) watchdog_usec = 0;
#endif
  auto tick = std::chrono::milliseconds(watchdog_usec ? std::max<std::uint64_t>(watchdog_usec / 3000, 100) : 2000);
  auto next_probe = std::chrono::steady_clock::now();
  r::pending_json probe;
  // max_dbs_open and [global_changes]: read at start and every 10 minutes (an operator may change
  // them meanwhile).
  auto next_limits = std::chrono::steady_clock::now();
  r::pending_json limits;
  r::pending_json global_changes;  // [global_changes], read with max_dbs_open
  while (ok) {
    {
      std::unique_lock lk(d.mu);
      // Until ready, readiness is looked at every 100 ms, so READY=1 and the "ready" line follow
      // the first reconcile closely instead of up to a whole tick later.
      const auto wait = notified_ready ? tick : std::min<std::chrono::milliseconds>(tick, std::chrono::milliseconds(100));
      d.cv.wait_for(lk, wait, [&d] { return d.stop || d.reload; });
      if (d.stop) break;
      if (d.reload) {
        d.reload = false;
        lk.unlock();
        d.reload_config();
      }
    }
    // CouchDB liveness, probed without blocking this loop (the watchdog must keep ticking while
    // a hung server holds the probe for up to request_timeout).
    if (probe.valid() && probe.ready()) {
      auto info = probe.get();
      probe = r::pending_json();
      bool was = d.couch_ok.exchange(info.ok());
      // The pool logs each outage once, when it begins and when it ends (replicator/outage.hpp).
      if (was && !info.ok()) log()->debug("CouchDB not reachable: {}", info.error().describe());
      if (!was && info.ok()) log()->debug("CouchDB reachable again");
    }
    if (!probe.valid() && std::chrono::steady_clock::now() >= next_probe) {
      next_probe = std::chrono::steady_clock::now() + std::chrono::seconds(5);
      probe = d.client->server_info();
    }
    if (limits.valid() && limits.ready()) {
      d.judge_limits(limits.get());
      limits = r::pending_json();
    }
    if (global_changes.valid() && global_changes.ready()) {
      d.judge_global_changes(global_changes.get());
      global_changes = r::pending_json();
    }
    if (!limits.valid() && !global_changes.valid() && std::chrono::steady_clock::now() >= next_limits &&
        (!d.prov || d.prov->ready())) {
      next_limits = std::chrono::steady_clock::now() + std::chrono::minutes(10);
      limits = d.client->request("GET", "/_node/_local/_config/couchdb/max_dbs_open");
      if (d.detector) global_changes = d.client->request("GET", "/_node/_local/_config/global_changes");
    }
    if (!notified_ready && d.ready().first) {
      notified_ready = true;
      notify("READY=1\nSTATUS=ready");
      log()->info("ready");
    }
    if (watchdog_usec) notify("WATCHDOG=1");
  }

  log()->info("stopping");
  notify("STOPPING=1");
  // Rounds end and checkpoints are written while the pool still runs; whatever is cut off is
  // read again at the next start.
  if (d.front) d.front->stop(d.cfg.front.drain_timeout);
  if (d.feeds) d.feeds->stop();
  // The provisioner ends its feed (or its reconcile, between pages) and stores its position
  // while the pool still runs, within 2 s of being asked (a server that hangs gets its requests
  // cancelled by the pool's shutdown).
  const auto prov_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  if (d.prov) d.prov->request_stop();
  if (d.fan) d.fan->drain(std::chrono::seconds(5));
  if (d.prov) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(prov_deadline - std::chrono::steady_clock::now());
    if (!d.prov->wait_stopped(std::max(left, std::chrono::milliseconds(0)))) {
      log()->info("provisioning had not finished within 2 s of the stop; its requests in flight are cancelled");
    }
  }
  d.pool->shutdown();
  if (d.ids) d.ids->stop();
  if (d.prov) d.prov->stop();
  if (d.detector) d.detector->stop();
  if (d.fan) d.fan->stop();
  d.api->stop();
  log()->info("stopped");
  return d.exit_code;
}

}  // namespace couchgate::gateway
