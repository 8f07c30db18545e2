#pragma once
// Owns: judging the CouchDB server's `[couchdb] max_dbs_open` against the shards couchgate keeps
// busy. CouchDB keeps at most max_dbs_open shard files open (an LRU, 500 by default); fan-in
// touches every source's shards, so with more shards than that the server reopens evicted
// shards on every pass (about half of a _changes request's server CPU, issue 18). Pure: the
// daemon reads the value (GET /_node/_local/_config/couchdb/max_dbs_open, at start and
// periodically) and reports the verdict.
#include <cstdint>
#include <optional>
#include <string>

#include "replicator/transport/couch_client.hpp"

namespace couchgate::replicator {

// The configured value from the config API's answer (CouchDB answers a JSON string, "500").
// nullopt when it is not a non-negative integer.
std::optional<std::uint64_t> parse_max_dbs_open(const json& answer);

struct shard_estimate {
  std::uint64_t needed = 0;       // shards couchgate keeps busy
  std::uint64_t recommended = 0;  // what to set max_dbs_open to
};
// sources: user (and shared) databases fanned in; q: their shards (0 = the server's default,
// taken as CouchDB's 2). Plus couchgate's own databases (central, state, _users,
// _global_changes: at most 8 shards each at CouchDB's defaults). Recommended: a quarter more,
// rounded up to a hundred, at least CouchDB's default 500.
shard_estimate estimate_shards(std::uint64_t sources, std::uint64_t q);

// One line for the log: nullopt when max_dbs_open suffices.
std::optional<std::string> max_dbs_open_warning(std::uint64_t max_dbs_open, const shard_estimate& e, std::uint64_t sources,
                                                std::uint64_t q);

}  // namespace couchgate::replicator
