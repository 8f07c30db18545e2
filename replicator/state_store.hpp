#pragma once
// Owns: couchgate's own state in its CouchDB state database: replication checkpoints (one
// document per source database, "checkpoint:<db>") and feed positions ("feed:<name>"). Document
// revisions are cached so that writes are single, batched `_bulk_docs` calls; a conflict (another
// couchgate, or an operator) re-reads the revision and retries once.
// Thread-safe.
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "replicator/couch_client.hpp"

namespace couchgate::replicator {

class state_store {
 public:
  state_store(couch_client& client, std::string db) : client_(client), db_(std::move(db)) {}

  const std::string& db() const { return db_; }
  // Creates the database when missing and makes it admin-only.
  result<bool> ensure_db();
  // Reads every checkpoint document into memory.
  result<std::size_t> load_checkpoints();

  std::optional<json> checkpoint(const std::string& source) const;
  // Writes the given checkpoints in one request. Returns how many were written.
  result<std::size_t> save_checkpoints(const std::vector<std::pair<std::string, json>>& cps);
  // Deferred persistence (what CouchDB's replicator does with checkpoint_interval): advance()
  // moves the checkpoints in memory at once, so the next turn starts there; flush() writes
  // every one advanced since the last flush in one request. A crash in between only means
  // those changes are read again (the central database already has them: nothing is written
  // twice). Another writer's checkpoint (restore, a second couchgate) wins a conflict and is
  // adopted. One flush at a time; a concurrent call returns 0 at once.
  void advance(const std::vector<std::pair<std::string, json>>& cps);
  result<std::size_t> flush();
  bool has_unflushed() const;
  // Forget a checkpoint (the source was recreated): the next turn starts from 0.
  result<bool> reset_checkpoint(const std::string& source);
  // Re-reads one checkpoint from the server (another process, e.g. restore, may have reset it).
  result<bool> refresh_checkpoint(const std::string& source);

  result<std::optional<json>> get_value(const std::string& key);
  result<bool> put_value(const std::string& key, const json& value);

  static std::string checkpoint_id(const std::string& source) { return "checkpoint:" + source; }

 private:
  // conflicts: when given (and retry_conflicts is false), receives the ids that conflicted.
  result<std::size_t> write(std::vector<json> docs, bool retry_conflicts, std::vector<std::string>* conflicts = nullptr);
  static json checkpoint_doc(const std::string& source, const json& seq);
  couch_client& client_;
  std::string db_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::string> revs_;    // doc id -> rev
  std::unordered_map<std::string, json> checkpoints_;    // source db -> seq
  std::unordered_map<std::string, json> unflushed_;      // source db -> seq advanced, not yet written
  std::mutex flush_mu_;
};

}  // namespace couchgate::replicator
