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

// A configured number from the config API's answer (CouchDB answers a JSON string, "500").
// nullopt when it is not a non-negative integer.
std::optional<std::uint64_t> parse_config_uint(const json& answer);

// CouchDB's built-in max_dbs_open, in effect while the config does not set the key.
inline constexpr std::uint64_t couchdb_default_max_dbs_open = 500;
// The value in effect, from the config API's answer: the configured one; CouchDB's default when
// the key is not set (CouchDB 3.5 then answers 404 {"error":"not_found","reason":
// "unknown_config_value"}: a default server, exactly the one that needs the warning); nullopt
// when it cannot be told (no config API, as on pouchdb-server, or any other failure).
std::optional<std::uint64_t> max_dbs_open_in_effect(const result<json>& answer);

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

// `[global_changes]`: CouchDB's `_db_updates` is a feed of the `_global_changes` database, which
// each node's global_changes app writes from the events it heard: gathered for max_event_delay
// (25 ms by default), then written every max_write_delay (500 ms by default: an event waits a
// quarter of a second on average, up to half a second, before any follower can see it), and not
// at all when update_db is "false" (a tuning some operators use to save the writes): the feed
// then stays silent whatever changes.
inline constexpr std::uint64_t couchdb_default_max_write_delay_ms = 500;
inline constexpr std::uint64_t couchdb_default_max_event_delay_ms = 25;
// What couchgate recommends when clients' live feeds wait on it: the delay of a write made
// directly on the server before a parked feed hears of it.
inline constexpr std::uint64_t recommended_max_write_delay_ms = 100;

// update_db in effect, from GET /_node/<node>/_config/global_changes/update_db: false only for
// "false" (as CouchDB reads it); true when unset (404 unknown_config_value); nullopt when it
// cannot be told (no config API, as on pouchdb-server; not an admin; unreachable).
std::optional<bool> update_db_in_effect(const result<json>& answer);

struct global_changes_settings {
  bool update_db = true;
  std::uint64_t max_write_delay_ms = couchdb_default_max_write_delay_ms;
  std::uint64_t max_event_delay_ms = couchdb_default_max_event_delay_ms;
};
// From GET /_node/<node>/_config/global_changes (an object of strings; unset keys are absent and
// take CouchDB's defaults, as does a number that is not one: CouchDB ignores such a change at
// runtime, and fails to start global_changes with it at boot). The values are the config's, not
// necessarily what the node runs with: update_db turned on at runtime after being off is not
// applied before a restart. nullopt when the answer is not an object (no config API, refused,
// unreachable).
std::optional<global_changes_settings> parse_global_changes(const result<json>& answer);

// One line for the log when live feeds wait on the feed and max_write_delay is above the
// recommended one; nullopt otherwise (update_db off is the change detector's to say: it sweeps).
std::optional<std::string> max_write_delay_warning(const global_changes_settings& s, bool live_feeds);

}  // namespace couchgate::replicator
