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
  std::size_t feeds = 0;  // longpolls the config runs: _users (provisioning), _db_updates (fan-in or front door, unless sweeping)
  std::size_t total() const { return work + feeds; }  // the pool's hard cap
  // Users the `_users` feed provisions at once (each a chain: create, then `_security`, one
  // request in flight at a time): twice the work sockets keeps every socket busy with the next
  // request already queued; more only queues longer inside the pool, which sends at most `work`
  // at once. (Session 34 tried eight times: what looked like a window too small at 50 new
  // users/s was the bench's tap delaying each feed answer ~40 ms (Nagle); with the tap fixed,
  // alternating runs on the same CouchDB 3.5.0 gave p99 270/1569 ms for 16 and 295/1123 ms for
  // 64: no difference beyond the spread of back-to-back runs, whose server was still busy with
  // the previous run's work, 1-minute load 1-15.)
  std::size_t provisioning_window() const { return 2 * work; }
};

connection_budget budget_for(const config& cfg);

}  // namespace couchgate::gateway
