#pragma once
// Owns: couchgate's own state in its CouchDB state database: replication checkpoints (one
// document per source database, "checkpoint:<db>"), feed positions ("feed:<name>") and restores
// under way ("restore:<db>"). Document
// revisions are cached so that writes are single, batched `_bulk_docs` calls. On a conflict a
// feed position or a reset re-reads the revision and retries once; an advanced checkpoint gives
// way instead (the other writer's checkpoint is adopted: see flush).
// Every checkpoint carries the central database's epoch stamp it was written under
// (central_epoch.hpp); one written under another epoch, or a later generation than the central
// database's marker, counts as none. A state database deleted while couchgate runs is created
// again by the next write, which then stores every checkpoint held in memory.
// Thread-safe.
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "replicator/central_epoch.hpp"
#include "replicator/transport/couch_client.hpp"

namespace couchgate::replicator {

class state_store {
 public:
  state_store(couch_client& client, std::string db) : client_(client), db_(std::move(db)) {}

  const std::string& db() const { return db_; }
  // Creates the database when missing and makes it admin-only.
  result<bool> ensure_db();
  // Reads every checkpoint document into memory. With a marker (see set_marker), checkpoints
  // whose stamp does not match it are void (their sources start from 0) and counted.
  struct load_outcome {
    std::size_t loaded = 0;
    std::size_t voided = 0;
  };
  result<load_outcome> load_checkpoints();

  // The central database's marker the checkpoints are tied to: written into every checkpoint,
  // and what stored checkpoints (load, adoption) are checked against.
  void set_marker(const epoch_stamp& marker);
  // The central database is new or older than the checkpoints: every source starts again from
  // 0 under `marker` (turns already running cannot advance their source afterwards; the zeros
  // reach the state database with the next flush). Returns how many checkpoints were reset.
  std::size_t reset_all(const epoch_stamp& marker);

  // The state database was found missing and could not be created again yet (see write()).
  bool missing() const { return missing_.load(); }
  // Looks whether the state database still exists; creates it again (and rewrites every
  // checkpoint held) when it is gone. Errors other than a failed re-creation are returned.
  result<bool> check_db();

  std::optional<json> checkpoint(const std::string& source) const;

  // Where a turn starts: the checkpoint (0 when none) and the source's epoch. The epoch changes
  // whenever the checkpoint is replaced from outside the turns (reset_checkpoint, or adopting
  // another writer's checkpoint), so a turn that started before cannot move it afterwards.
  struct position {
    json seq = 0;
    std::uint64_t epoch = 0;
  };
  position start_position(const std::string& source) const;

  struct advance_to {
    std::string source;
    json seq;
    std::uint64_t epoch = 0;  // from start_position() when the turn began
  };
  // Deferred persistence (what CouchDB's replicator does with checkpoint_interval): advance()
  // moves the checkpoints in memory at once, so the next turn starts there; flush() writes
  // every one advanced since the last flush in one request. A crash in between only means
  // those changes are read again (the central database already has them: nothing is written
  // twice). An entry whose epoch is stale is dropped (returns how many were taken). Another
  // writer's checkpoint (restore, a second couchgate) wins a conflict and is adopted; one
  // flush runs at a time (a second call waits for it).
  std::size_t advance(const std::vector<advance_to>& cps);
  struct flush_outcome {
    std::size_t written = 0;
    std::vector<std::string> refused;  // sources whose row the server refused (kept, retried)
    std::string first_error;
  };
  // `stamp` (when given) is called after the checkpoints to write were taken and before they
  // are written: it raises the central marker's generation and returns the stamp they carry
  // (central_epoch::bump). When it fails, nothing is written and the error is returned.
  result<flush_outcome> flush(const std::function<result<epoch_stamp>()>& stamp = {});
  bool has_unflushed() const;
  // Forget a checkpoint (the source was recreated): the next turn starts from 0. When the reset
  // cannot be stored, it is kept pending: the next flush writes it (over any other writer's).
  result<bool> reset_checkpoint(const std::string& source);
  // The same for many sources, write_batch of them per request (restore resets every database it
  // created). Returns the sources whose reset was not stored (each kept pending, as above).
  std::map<std::string, couch_error> reset_checkpoints(const std::vector<std::string>& sources);
  static constexpr std::size_t write_batch = 1000;
  // Re-reads one checkpoint from the server (another process, e.g. restore, may have reset it).
  result<bool> refresh_checkpoint(const std::string& source);

  // Restores under way ("restore:<db>", written by `couchgate restore`): a database restore
  // created or resumed and has not finished with. A rerun continues into it without --merge.
  // Each call below is one request per write_batch databases.
  result<std::unordered_set<std::string>> load_restores();  // the databases (none when the state database is missing)
  // Records them (`value` says what restore is doing) / removes their records. Return the
  // databases whose record was not stored / not removed.
  std::map<std::string, couch_error> mark_restores(const std::vector<std::string>& dbs, const json& value);
  std::map<std::string, couch_error> clear_restores(const std::vector<std::string>& dbs);
  static std::string restore_id(const std::string& db) { return "restore:" + db; }

  result<std::optional<json>> get_value(const std::string& key);
  // True once written; an error when it was not, also when the server answered (an error row, a
  // conflict again after one retry with the current revision).
  result<bool> put_value(const std::string& key, const json& value);

  static std::string checkpoint_id(const std::string& source) { return "checkpoint:" + source; }

 private:
  // What one _bulk_docs did with each id (filled when given).
  struct write_rows {
    std::unordered_set<std::string> written;
    std::unordered_set<std::string> conflicts;  // only when retry_conflicts is false
    std::unordered_set<std::string> failed;     // any other error row, or no row at all
    std::string first_error;
  };
  // Documents get the cached revision unless fill_revs is false (then they are written with the
  // _rev they carry, or as new documents).
  result<std::size_t> write(std::vector<json> docs, bool retry_conflicts, write_rows* rows = nullptr, bool fill_revs = true);
  json checkpoint_doc(const std::string& source, const json& seq) const;  // mu_ held
  // Every document whose id starts with "<prefix>:", their revisions cached.
  result<json> docs_with_prefix(const std::string& prefix);
  // value: writes the records; nullptr: deletes them.
  std::map<std::string, couch_error> write_restores(const std::vector<std::string>& dbs, const json* value);
  // The state database answered not_found: create it again (once for concurrent callers), and
  // put every checkpoint held back into unflushed_. True when it exists again.
  bool recreate_db();
  static std::optional<epoch_stamp> stamp_of(const json& doc);
  std::uint64_t epoch_locked(const std::string& source) const;  // mu_ held
  // Re-reads a checkpoint another writer stored; on failure it is retried by the next flush.
  void adopt(const std::string& source);
  couch_client& client_;
  std::string db_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::string> revs_;    // doc id -> rev
  std::unordered_map<std::string, json> checkpoints_;    // source db -> seq
  std::unordered_map<std::string, json> unflushed_;      // source db -> seq advanced, not yet written
  std::unordered_map<std::string, std::uint64_t> epochs_;  // source db -> see start_position
  std::vector<std::string> adopt_pending_;                // conflicts whose re-read failed
  std::unordered_set<std::string> reset_pending_;         // resets not stored yet (see reset_checkpoint)
  std::mutex flush_mu_;
  std::optional<epoch_stamp> marker_;                     // guarded by mu_
  std::atomic<bool> missing_{false};
  std::atomic<bool> existed_{false};  // seen or made by this process (a later 404 means it was deleted)
  std::mutex recreate_mu_;
};

}  // namespace couchgate::replicator
