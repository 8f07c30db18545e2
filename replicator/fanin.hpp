#pragma once
// Owns: continuous one-way replication of every known source database (user databases and the
// shared database) into the central database. Change detection (db_updates or sweep) calls
// mark_dirty; worker threads take dirty databases from the scheduler, a batch at a time, and
// run one transfer() round for the whole batch: one `_changes` per source, then coalesced
// `_revs_diff` / `_bulk_docs` on the central database, then one batched checkpoint write.
// Checkpoints advance only after the central database acknowledged the documents.
// Checkpoints are tied to the central database through its epoch marker (central_epoch.hpp):
// every `target_check_interval` (and at once when a round or a _db_updates event suggests it)
// one worker looks at the marker and the state database. A central database that is missing
// pauses the rounds (central_problem() says so for /readyz) and is created again at the next
// check; a new, replaced or older one makes every source start again from 0, once, with one
// warning.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "policy/id_map.hpp"
#include "replicator/central_epoch.hpp"
#include "replicator/transport/couch_client.hpp"
#include "replicator/metrics.hpp"
#include "replicator/scheduler.hpp"
#include "replicator/state_store.hpp"
#include "replicator/transfer.hpp"

namespace couchgate::replicator {

struct fanin_options {
  std::string central_db;
  policy::id_mode ids = policy::id_mode::namespaced;
  std::size_t max_active = 64;
  std::size_t workers = 2;       // rounds in flight at once
  std::size_t turn_docs = 500;   // changes per source per turn
  bool inline_docs = true;       // take first-generation bodies from _changes (include_docs_next)
  // How often advanced checkpoints are written to the state database (0 = after every round,
  // inside it). In between they live in memory; see state_store::advance.
  std::chrono::milliseconds checkpoint_interval{1000};
  transfer_options transfer{};
  backoff_policy backoff{};
  // How often the central database's marker and the state database are looked at.
  std::chrono::milliseconds target_check_interval{5000};
  // Creates the central database again (with its _security), after it was found missing at two
  // checks in a row. Empty: never (it stays missing until someone creates it).
  std::function<std::optional<couch_error>()> create_central;
};

// A document the central database refused (or the source could not give): recorded, counted,
// and passed over so its source's checkpoint moves on (see transfer.hpp). The same listing
// (GET /failures) has the documents whose history the source stemmed (error "stemmed_history":
// written, but central keeps an older leaf beside them, see transfer.hpp's stemmed_history).
struct refused_doc {
  std::string db, id, rev;
  std::string error, reason;
  std::chrono::system_clock::time_point when;
};

struct source_status {
  std::string db;
  policy::owner owner;
  json checkpoint;                 // null when none yet
  std::uint64_t docs_written = 0;
  std::uint64_t doc_write_failures = 0;
  std::optional<std::chrono::system_clock::time_point> last_success;
  std::string last_error;
  std::uint32_t failures = 0;
  bool active = false;
  source_phase phase = source_phase::idle;  // the scheduler's state of it (source_state.hpp)
};

// How many changes a source has after a checkpoint, from its `_changes?since=<checkpoint>&limit=1`
// answer: the rows plus CouchDB's `pending`. nullopt when the answer has no `pending` (pouchdb-
// server): the caller then compares update_seq with the checkpoint. (update_seq alone overcounts
// on CouchDB: a `_security` write raises it without a `_changes` row.)
std::optional<std::uint64_t> changes_behind(const json& answer);

class fanin {
 public:
  fanin(couch_client& client, state_store& state, registry& metrics, fanin_options opts);
  ~fanin();

  // At start, after the central database exists: reads (or writes) its epoch marker and loads
  // the checkpoints valid for it; when some are not, one warning names why and how many
  // sources start again from 0.
  result<state_store::load_outcome> load();
  // Why the central database cannot take documents now (nullopt when it can).
  std::optional<std::string> central_problem() const;
  // Look at the central and state databases soon (e.g. _db_updates said one was deleted).
  void request_target_check();
  const std::string& central_db() const { return opts_.central_db; }
  epoch_stamp central_marker() const { return epoch_.current(); }

  // Known sources. add_source marks the database dirty (a first turn catches it up).
  void add_source(const std::string& db, const policy::owner& owner);
  void remove_source(const std::string& db);
  // couchgate is creating this database itself (said just before its PUT; the PUT answering 201
  // before its _security): it holds nothing, so its `created` event (mark_created) and its addition as a source cost no read
  // (issue #18: a third of provisioning's requests were these reads). The first change announced
  // for it (mark_dirty: an `updated` event, the sweep seeing update_seq move, which couchgate's
  // own _security write does) ends that, whether it is a source yet or not: a user who writes
  // between the creation and the `created` event is read as usual.
  void created_empty(const std::string& db);
  // created_empty() was said of a database that was not created after all (it existed: 412, or
  // an error): forgotten, without a read (a source it already is was read, or its changes are
  // announced; one added after this is dirty as usual).
  void not_created(const std::string& db);
  // A `created` event: dirty, unless created_empty() said it holds nothing.
  void mark_created(const std::string& db);
  static constexpr std::size_t max_created_empty = 100000;
  // The database was deleted and created again: its old checkpoint means nothing now.
  void source_recreated(const std::string& db);
  // Returns false for databases that are not sources.
  bool mark_dirty(const std::string& db);
  void mark_all_dirty();
  // The verify pass (change_detector, db_updates mode) reads a source again that no event
  // marked: dirty unless a turn is already due or running. When that read finds changes, no
  // event had announced them (a `_db_updates` event lost, or one still on its way): counted in
  // couchgate_fanin_unannounced_total and logged (at warn at most once a minute). False for
  // databases that are not sources or already due.
  bool verify(const std::string& db);
  bool knows(const std::string& db) const;
  std::vector<std::string> sources() const;

  void start();
  // Graceful stop, while the HTTP pool still runs: no new rounds start, the running ones may end
  // (for at most `grace`), then every checkpoint still in memory is written. False when rounds
  // were still running at the deadline (their progress is read again at the next start).
  bool drain(std::chrono::milliseconds grace);
  void stop();  // joins the round threads (after drain, or after the pool was shut down)
  // Writes the checkpoints advanced since the last write (also called by the rounds when due);
  // failures and refused rows are logged and counted, and stay for the next write.
  void flush_checkpoints();

  std::optional<source_status> status(const std::string& db) const;
  // The most recent refused documents (at most max_refused, oldest first); of one source when
  // `db` is given.
  std::vector<refused_doc> refused(const std::string& db = {}) const;
  static constexpr std::size_t max_refused = 1000;
  scheduler::counts counts() const;
  // True when no database is dirty, active or backing off.
  bool idle() const;

 private:
  struct source {
    policy::owner owner;
    std::uint64_t docs_written = 0;
    std::uint64_t doc_write_failures = 0;
    std::optional<std::chrono::system_clock::time_point> last_success;
    std::string last_error;
    bool include_docs = true;    // ask _changes for bodies (see include_docs_next)
  };
  void worker();
  void run_round(const std::vector<std::string>& dbs);
  void record_refused(const doc_failure& f);  // with mu_ held
  // A revision written whose history no longer reaches a leaf central had (transfer.hpp):
  // listed with the refused documents (error "stemmed_history"), once; with mu_ held.
  void record_stemmed(const stemmed_history& s);
  // One look at the central and state databases (see the header comment); worker thread.
  void check_targets();
  // Every source starts again from 0 under `marker`; backoffs end.
  void restart_all(const epoch_stamp& marker, const char* why);
  std::chrono::steady_clock::time_point next_check_{};  // guarded by mu_
  bool check_requested_ = false;                         // guarded by mu_
  std::atomic<bool> central_missing_{false};
  std::string last_flush_error_;                         // guarded by flush_log_mu_: logged once per change
  std::mutex flush_log_mu_;
  std::chrono::steady_clock::time_point next_flush_{};  // guarded by mu_

  couch_client& client_;
  state_store& state_;
  fanin_options opts_;
  central_epoch epoch_;
  protocol_caps caps_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::size_t rounds_running_ = 0;  // rounds and periodic checkpoint writes in progress
  std::future<void> drain_flush_;
  scheduler sched_;
  std::unordered_map<std::string, source> sources_;
  std::unordered_set<std::string> created_empty_;  // see created_empty(); guarded by mu_
  // Sources verify() marked, until their turn reads them or an event marks them; guarded by mu_.
  std::unordered_set<std::string> verify_marked_;
  std::uint64_t unannounced_unlogged_ = 0;                 // guarded by mu_
  std::chrono::steady_clock::time_point unannounced_logged_{};  // guarded by mu_
  std::deque<refused_doc> refused_;
  std::vector<std::thread> threads_;

  counter& docs_;
  counter& bytes_;
  counter& stemmed_;
  counter& inline_;
  counter& rounds_;
  counter& central_requests_;
  std::map<couch_error_kind, counter*> errors_;
  counter& skipped_design_;
  counter& doc_write_failures_;
  histogram& lag_;
  counter& central_resets_;
  counter& unannounced_;
};

}  // namespace couchgate::replicator
