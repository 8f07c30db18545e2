#pragma once
// Owns: per-user databases. Follows `_users/_changes` (longpoll, resumed from the position
// stored in the state database at most every second: feed_position; never replayed from 0
// after the first start), applies the policy to every user document, and reconciles everything
// at start and periodically. The feed is pipelined (issue #18, see follow()): the next read goes
// out at once, each user's requests start as soon as its row arrives, and the stored position
// only covers users who are done. Reconcile runs on the same thread and holds the feed meanwhile.
// The policy (select, security, on_delete, reconcile_interval) can be replaced while it runs
// (update_policy, on SIGHUP): a reconcile then brings every user database in line at once.
// All writes are idempotent (412 on create is success, `_security` written only when it
// differs), so two processes or a restart mid-way end in the same state.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "gateway/config.hpp"
#include "gateway/feed_work.hpp"
#include "policy/id_map.hpp"
#include "policy/identity.hpp"
#include "policy/users.hpp"
#include "replicator/backoff.hpp"
#include "replicator/transport/couch_client.hpp"
#include "replicator/transport/waking_transport.hpp"
#include "replicator/metrics.hpp"
#include "replicator/report_once.hpp"
#include "replicator/state_store.hpp"
#include "replicator/stop_flag.hpp"

namespace couchgate::gateway {

struct user_state {
  std::string name;
  std::string db;
  policy::user_action action = policy::user_action::ensure;
  bool done = false;            // the last action completed
  std::string last_error;
  std::chrono::system_clock::time_point updated{};
};

// The part of provisioning_config a reload may replace. Each apply() works on one copy.
struct live_policy {
  policy::criteria select;
  policy::security_template security;
  policy::on_delete on_delete = policy::on_delete::keep;
  std::chrono::seconds reconcile_interval{0};
  static live_policy of(const provisioning_config& c) { return {c.select, c.security, c.on_delete, c.reconcile_interval}; }
  bool operator==(const live_policy&) const = default;
};

// How long after a failed reconcile pass the next one runs: soon at first (1 s doubling to
// 60 s, jittered), so a reload's pass is not lost to one blip; from the 6th failure in a row on,
// the normal `interval` (10 minutes when periodic reconcile is off), so a user whose database
// keeps failing does not turn into a full `_users` scan every minute.
std::chrono::milliseconds reconcile_retry_delay(std::uint32_t failures, std::chrono::seconds interval,
                                                const replicator::uniform_source& rnd);

// How a failed read of the `_users` feed is logged. A failure that is part of an outage at debug
// (the transport logs the outage once); a single other failure (a server answering 500 while it
// starts, right after an outage) at info; the second in a row at warning. An outage between two
// failed reads separates them, whether the feed saw it or only other requests did (the feed may
// be backing off all through one): `outages_now` is the transport's count of outages begun.
struct feed_failure_count {
  std::uint32_t in_a_row = 0;
  std::uint64_t outages_seen = 0;  // outages begun when the last failed read was counted
};
enum class feed_failure_level { debug, info, warn };
feed_failure_level feed_failure_log_level(feed_failure_count& f, bool outage_error, std::uint64_t outages_now);

struct provisioner_hooks {
  std::function<void(const std::string& db, const policy::owner&)> source_added;
  std::function<void(const std::string& db)> source_removed;
  // (db, true) just before the provisioner asks CouchDB to create a user's database: if that
  // answers 201 the database holds nothing (fanin::created_empty; said before the request, as
  // its `created` event may be read before the answer). (db, false): it answered otherwise (412:
  // it existed; an error), so nothing is known (fanin::not_created).
  std::function<void(const std::string& db, bool creating)> creating;
  // Unique identities (gateway/identities, when enabled): before a selected live user is
  // provisioned, admit() makes its reservations and says whether it may be (nullopt: could not
  // be checked, retried); a verdict with look_again is applied again every look_again_interval.
  // user_gone(name): the user was deleted, or is no longer selected after a conflict: its
  // conflicts are forgotten and, if it no longer exists, its reservations released (false: retried).
  std::function<std::vector<std::optional<policy::direct_verdict>>(const std::vector<const policy::user_doc*>&)> admit;
  std::function<bool(const std::string& name)> user_gone;
  // Every user document the `_users` feed reads (written, deleted, or malformed now), by name,
  // whether selected or not: the front door asks about that user's credentials again
  // (front_door::user_changed). Called on the provisioner's thread; must not block.
  std::function<void(const std::string& name)> user_changed;
  // The transport's count of outages begun (http_pool_stats::outages), for feed_failure_log_level;
  // unset: only the feed's own failures separate its failed reads.
  std::function<std::uint64_t()> outages;
};

// The `_users` feed's position in the state database, stored at most every
// provisioner::position_save_interval instead of after every batch (issue #18): moved() to where
// every user before it has its database and `_security` (feed_work's done-up-to position, so the
// stored position never covers a user who is not done; a crash only means the users since are
// applied again, which is idempotent). The provisioner's thread only.
//
// The write runs beside the feed, on a thread of its own: the state database is reached over the
// work connections, behind the users' creates, and a loop that waited for it stopped
// provisioning for that long every second (67-149 ms on CouchDB 3.5.0 at 50 new users/s,
// session 35). One write at a time; a position that moves meanwhile is written next. `ended` is
// called (on the writer's thread) once a write's outcome can be taken: it wakes the feed's loop.
class feed_position {
 public:
  feed_position(replicator::state_store& state, std::string key, std::function<void()> ended = {})
      : state_(state), key_(std::move(key)), ended_(std::move(ended)) {}
  ~feed_position();  // waits for a write in flight (finish() first to store the last position)
  feed_position(const feed_position&) = delete;
  feed_position& operator=(const feed_position&) = delete;
  // The feed moved past every user up to `to`: a write starts now when the last one started long
  // enough ago (and has ended), else when due().
  void moved(const replicator::json& to);
  // When the position not stored yet is to be written (max() when there is none, or while a
  // write is in flight: its end calls `ended`).
  std::chrono::steady_clock::time_point due() const;
  // Takes the outcome of a write that has ended (a failed one's position is written again when
  // due, unless a newer one is waiting) and starts the next write when due. Never waits.
  void save_if_due();
  // Stopping: waits for the write in flight, then stores the last position, if it is not yet.
  void finish();

 private:
  void start_write();
  void take_ended(bool wait);

  replicator::state_store& state_;
  std::string key_;
  std::function<void()> ended_;
  std::optional<replicator::json> pending_;  // not written yet
  std::optional<replicator::json> writing_;  // the write in flight (or ended, outcome not taken)
  std::thread writer_;
  std::mutex mu_;                                      // guards outcome_
  std::optional<replicator::result<bool>> outcome_;    // the write's, once it has ended
  std::chrono::steady_clock::time_point last_save_{};
};

class provisioner {
 public:
  // The `_users` feed position is stored at most this often (see feed_position).
  static constexpr std::chrono::milliseconds position_save_interval{1000};
  // How often users whose reservations conflict (or wait on an intent) are looked at again.
  static constexpr std::chrono::seconds look_again_interval{2};

  // `window`: users the `_users` feed provisions at once (each a chain of requests, one at a
  // time: create, then `_security`); the daemon gives connection_budget::provisioning_window()
  // (twice the work connections: the pool always has the next request queued).
  provisioner(replicator::couch_client& client, replicator::state_store& state, replicator::registry& metrics,
              provisioning_config cfg, provisioner_hooks hooks, std::size_t window = 16);
  ~provisioner();

  void start();
  void stop();
  // Stopping in two steps, so the `_users` feed position is stored while the pool still runs
  // (the daemon shuts the pool next): request_stop() asks the thread to end and returns at once;
  // wait_stopped() waits at most `d` for it to have ended (true when it has).
  void request_stop();
  bool wait_stopped(std::chrono::milliseconds d);
  bool ready() const { return ready_.load(); }

  // Swaps in fresh's live policy (its other keys are ignored: they need a restart) and requests
  // a reconcile, which starts at once, beside the _users longpoll if one is open (or after the
  // first reconcile, or the feed batch being applied, finished).
  void update_policy(const provisioning_config& fresh);
  // The policy in force (a copy: the caller works on one consistent version).
  live_policy policy() const;

  // One full pass; false if anything failed (it is retried by the next pass).
  bool reconcile();
  // Applies the policy to these users (deduplicated by name, last wins). With `existing` (the
  // databases that exist), users needing no database are skipped without a request. Returns the
  // number of users whose action failed with a retryable error.
  std::size_t apply(const std::vector<policy::user_doc>& users, const std::set<std::string>* existing = nullptr);

  // A caller CouchDB has just authenticated whose database the front door is about to use:
  // unless caller_ready(), the policy is applied to this user now (a `_users` document
  // the feed has not brought yet is read and applied as the feed would; a JWT caller without
  // one gets a database when policy::decide_token_user says so; `decided` tells what it said).
  // Blocking: asks CouchDB with couchgate's own credentials. False when CouchDB could not be
  // asked or the database not made.
  bool ensure_caller(const policy::session_user& who, policy::token_user_action& decided);
  // The policy gave this user their database and `_security` (by this provisioner's record; no
  // I/O): false for a user not yet applied, deleted, or not selected.
  bool caller_ready(const std::string& name) const;

  std::optional<user_state> user(const std::string& name) const;
  std::size_t known_users() const;
  std::string db_for(const std::string& name) const;

  // The user a database belongs to: decoded from a hex name, or, for the hashed long form
  // (which cannot be decoded), looked up in the names seen by apply() (every reconcile reads
  // all of `_users`, so a restart finds them again). nullopt when no user is known for it.
  std::optional<std::string> owner_of(const std::string& db) const;
  // A database was created (a `_db_updates` event, or seen again by the sweep): if it belongs
  // to a user, its `_security` is brought in line with the policy at once (a recreated database
  // has CouchDB's admin-only default). Queued; the provisioner's thread, woken, applies it at
  // once (a few databases at a time, pipelined). Unless `recreated` (it surely existed
  // before), a database this provisioner has just created itself is skipped: that is the event
  // of its own create, whose _security it writes itself.
  void database_created(const std::string& db, bool recreated);

 private:
  void run();
  // Where the _users feed starts: the stored position, or on a first start the current
  // update_seq. Null when neither can be read yet.
  replicator::json start_position();
  // The `_users` feed, pipelined (issue #18): the next read goes out while the users of the last
  // are provisioned, each user's chain starts as soon as its row arrives (feed_work: the window,
  // one revision per name), every answer wakes the thread (waking_transport), and the position
  // moves to where every user before it is done. Reconcile, created databases and look-agains
  // run on the same thread between answers.
  void follow(replicator::json since);

  // One user's requests, one after the other: create (or read _security, or look at the
  // database before deleting it), then _security (write, or read), then a repair write if it
  // differs. Many users' chains are in flight at once.
  struct user_chain {
    enum class stage { first, second, repair, over };
    policy::user_doc u;
    policy::user_action action = policy::user_action::ensure;
    std::string db;
    replicator::json want;
    replicator::couch_client* via = nullptr;
    replicator::pending_json call;
    stage at = stage::first;
    bool second_writes = false;  // the second request writes _security (created, or revoked)
    bool unreleased = false;     // its reservations could not be released: retried after it ends
    bool listed = false;         // reconcile listed its database: `_security` read first, no create
    std::optional<replicator::couch_error> error;
  };
  // Identities first (when on): a deleted user's reservations are released (when that fails,
  // `unreleased` says so for it); a selected live user gets its reservations and a verdict
  // (nullopt: could not be checked). One entry per user, the default verdict for users not asked about.
  std::vector<std::optional<policy::direct_verdict>> verdicts(const std::vector<const policy::user_doc*>& users,
                                                              const live_policy& p, std::vector<bool>& unreleased);
  // The chain for one user, its first request sent through `via`; nullopt when the user needs
  // nothing now (excluded, not selected and without a database, or its verdict could not be had:
  // then `retryable` is counted).
  std::optional<user_chain> begin_chain(const policy::user_doc& u, const std::optional<policy::direct_verdict>& v,
                                        const live_policy& p, const std::set<std::string>* existing,
                                        replicator::couch_client& via, std::size_t& retryable);
  // Takes the answer of the chain's request (waiting for it) and sends the next one, if any.
  void advance(user_chain& c);
  // Records, logs and tells the hooks how a finished chain ended. True when it failed in a way
  // worth retrying (or its reservations are still to be released).
  bool conclude(const user_chain& c);
  // Runs a reconcile if one was requested or is due, and schedules the next one.
  void reconcile_if_due();
  bool reconcile_due() const;  // requested by a reload, or the periodic pass is due
  void record(const std::string& name, const std::string& db, policy::user_action a, const std::string& error);
  // Applies the queued database_created() calls.
  void apply_created();
  void note_self_created(const std::string& db);
  void forget_self_created(const std::string& db);  // the create did not happen (412, an error)
  // Applies again the users admit() asked to look at again, when due.
  void look_again_if_due();

  replicator::couch_client& client_;
  replicator::state_store& state_;
  const provisioning_config cfg_;  // as started: read only its fixed keys (users_db, db_prefix, batch, q, n)
  provisioner_hooks hooks_;
  std::atomic<bool> ready_{false};

  mutable std::mutex mu_;  // guards users_, policy_, reconcile_requested_
  // Rung on every answer of the feed pipeline, a reconcile requested, a database created, stop.
  std::shared_ptr<replicator::doorbell> bell_ = std::make_shared<replicator::doorbell>();
  replicator::waking_transport waking_;
  replicator::couch_client feed_client_;  // client_'s transport, behind waking_
  const std::size_t window_;
  live_policy policy_;
  bool reconcile_requested_ = false;
  replicator::stop_flag stop_;
  replicator::stop_flag ended_;  // "requested" once the thread has ended
  std::map<std::string, user_state> users_;
  std::unordered_map<std::string, std::string> hashed_owner_;  // hashed db name -> user name
  std::vector<std::string> created_queue_;                    // see database_created
  std::map<std::string, policy::user_doc> look_again_;        // see provisioner_hooks::admit
  // Databases created by apply() lately (their `created` event needs nothing): name -> when.
  std::unordered_map<std::string, std::chrono::steady_clock::time_point> self_created_;
  std::thread thread_;
  // Worker thread only.
  std::chrono::steady_clock::time_point next_reconcile_ = std::chrono::steady_clock::time_point::max();
  std::uint32_t reconcile_failures_ = 0;
  std::chrono::steady_clock::time_point next_look_again_{};
  replicator::uniform_source rnd_ = replicator::random_uniform_source();

  replicator::counter& users_seen_;
  replicator::counter& dbs_created_;
  replicator::counter& dbs_deleted_;
  replicator::counter& security_writes_;
  replicator::counter& errors_;
  replicator::counter& malformed_;
  // A malformed user document is logged and counted once while it stays so (every reconcile
  // pass and the feed read it again); `where` prefixes the log line.
  replicator::report_once malformed_seen_;
  void skip_malformed(const policy::user_doc_error& e, const char* where);
  void user_ok(const policy::user_doc& u) { malformed_seen_.forget("org.couchdb.user:" + u.name); }
  replicator::counter& reconnects_;
  replicator::counter& reconciles_;
  replicator::gauge& orphans_;
  replicator::gauge& pending_;
};

}  // namespace couchgate::gateway
