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
  // Users the `_users` feed provisions at once (each a chain: create, then `_security`). By
  // Little's law the users in flight are the rate times each one's time, and on a busy server a
  // chain takes 150-300 ms (a create alone 70-150 ms on CouchDB 3.5.0, 2 cores), so 100 users/s
  // need 15-30 in flight. Twice the work sockets (16) capped provisioning near 50 users/s and
  // queued the rest in the feed: at 50 new users/s p99 1.2 s against the server's own 158 ms
  // (the bench doing the same work itself); eight times (64) gave p99 242-256 ms. The pool still
  // sends at most `work` requests at once; the rest wait in it, not in the feed.
  std::size_t provisioning_window() const { return 8 * work; }
};

connection_budget budget_for(const config& cfg);

}  // namespace couchgate::gateway
