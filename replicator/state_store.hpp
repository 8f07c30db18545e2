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
  // Forget a checkpoint (the source was recreated): the next turn starts from 0.
  result<bool> reset_checkpoint(const std::string& source);
  // Re-reads one checkpoint from the server (another process, e.g. restore, may have reset it).
  result<bool> refresh_checkpoint(const std::string& source);

  result<std::optional<json>> get_value(const std::string& key);
  result<bool> put_value(const std::string& key, const json& value);

  static std::string checkpoint_id(const std::string& source) { return "checkpoint:" + source; }

 private:
  result<std::size_t> write(std::vector<json> docs, bool retry_conflicts);
  couch_client& client_;
  std::string db_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::string> revs_;    // doc id -> rev
  std::unordered_map<std::string, json> checkpoints_;    // source db -> seq
};

}  // namespace couchgate::replicator
