#pragma once
// Owns: the marker that ties fan-in checkpoints to the central database they describe.
// A `_local/couchgate-epoch` document in the central database holds a random epoch id, its
// creation time and a generation that every checkpoint write raises first; each checkpoint in
// the state database carries the (epoch, generation) it was written under. A checkpoint counts
// only for a central database whose marker has the same epoch and at least its generation, so a
// central database that is new (no marker: deleted and recreated, or restored from a copy
// without `_local` documents) or older than the checkpoints (a file backup: smaller generation)
// makes every source start again from 0 — `_revs_diff` makes that cheap for what is there.
// CouchDB's replicator keeps a checkpoint on both sides for the same reason.
// Thread-safe.
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>

#include "replicator/transport/couch_client.hpp"

namespace couchgate::replicator {

struct epoch_stamp {
  std::string epoch;
  std::uint64_t generation = 0;
  json to_json() const { return json{{"epoch", epoch}, {"generation", generation}}; }
  // nullopt unless an object with a non-empty string epoch and an unsigned generation.
  static std::optional<epoch_stamp> from_json(const json& j);
  bool operator==(const epoch_stamp&) const = default;
};

// Pure: is a checkpoint written under `checkpoint` valid for a central database whose marker is
// `marker`? (A checkpoint without a stamp, from before markers existed, is not.)
bool checkpoint_matches(const std::optional<epoch_stamp>& checkpoint, const epoch_stamp& marker);

// What a look at the central database found, compared with the marker this process holds.
enum class central_verdict {
  same,          // our marker (or a later generation of it: another couchgate raised it)
  missing_db,    // the central database does not exist
  new_marker,    // exists, but has no marker: recreated or restored without `_local` documents
  replaced,      // another epoch: recreated and marked by someone else
  older,         // our epoch, smaller generation: restored from an older file backup
};
const char* to_string(central_verdict v);
// Pure: the verdict for a marker read back (nullopt = no marker document) against ours.
central_verdict judge_marker(const std::optional<epoch_stamp>& found, const epoch_stamp& ours);

class central_epoch {
 public:
  static constexpr const char* marker_id = "_local/couchgate-epoch";

  central_epoch(couch_client& client, std::string central_db) : client_(client), db_(std::move(central_db)) {}

  const std::string& db() const { return db_; }
  // Reads the marker; when there is none, writes a fresh epoch (created = true).
  result<epoch_stamp> load_or_create(bool& created);
  // Replaces whatever marker is there with a fresh epoch (the checkpoints are reset with it).
  result<epoch_stamp> renew();
  // Raises the generation before checkpoints are written under it (one PUT; a conflict re-reads
  // once). Fails with not_found when the central database is gone, and with conflict when the
  // marker is no longer ours (check() tells what happened).
  result<epoch_stamp> bump();
  // Reads the marker (and on a 404 the database) and judges it. A later generation of our epoch
  // and a replaced epoch are adopted (current() returns them). Serialised with bump() and
  // renew(): what it reads is judged against the marker we held when the read went out.
  result<central_verdict> check();
  // The marker held (empty epoch before load_or_create).
  epoch_stamp current() const;

 private:
  // GET of the marker: nullopt when the document is missing; not_found error when the database is.
  result<std::optional<std::pair<epoch_stamp, std::string>>> read();
  result<std::string> write(const epoch_stamp& s, const std::string& rev);
  epoch_stamp hold(const epoch_stamp& s, const std::string& rev);  // becomes ours; returns it
  couch_client& client_;
  std::string db_;
  mutable std::mutex mu_;
  epoch_stamp ours_;
  std::string rev_;  // of the marker document, as last written or read
  std::mutex bump_mu_;
};

// A fresh random epoch id (32 hex digits).
std::string new_epoch_id();

}  // namespace couchgate::replicator
