#pragma once
// Owns: how many sockets to CouchDB the daemon's pool may open. `fanin.max_connections` is the
// budget for work (replication, provisioning, checkpoints); the change feeds' longpolls, which
// hold a socket for as long as nothing happens, come on top of it, one each, so they never take
// the work's sockets (issue #18: with the feeds inside the budget, provisioning ran on 6 of 8).
// Pure: decided from the config alone.
#include <cstddef>

#include "gateway/config.hpp"

namespace couchgate::gateway {

struct connection_budget {
  std::size_t work = 0;   // fanin.max_connections
  std::size_t feeds = 0;  // longpolls the config runs: _users (provisioning), _db_updates (fan-in, unless sweeping)
  std::size_t total() const { return work + feeds; }  // the pool's hard cap
};

connection_budget budget_for(const config& cfg);

}  // namespace couchgate::gateway
