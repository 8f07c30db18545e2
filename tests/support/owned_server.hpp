#pragma once
// A pouchdb-server process that one test owns, its databases on disk (leveldb in a directory of
// its own), so that it can be stopped and started again with its data: a real server restart.
// The suite's shared server cannot be restarted by a test (pouchdb-server --in-memory loses
// everything; a real CouchDB is not the test's to stop). Use it with server_override
// (harness.hpp) so that the test's own client talks to it.
#include <sys/types.h>

#include <string>

#include "tests/support/harness.hpp"

namespace couchgate::test {

class owned_server {
 public:
  // `pouchdb_server`: the executable (tests/server/node_modules/.bin/pouchdb-server, installed
  // by tests/server/start-server.sh). Picks a free loopback port and a random admin password,
  // starts the server and waits until it answers. Throws std::runtime_error when it cannot.
  explicit owned_server(std::string pouchdb_server);
  ~owned_server();  // stops it and removes its directory
  owned_server(const owned_server&) = delete;
  owned_server& operator=(const owned_server&) = delete;

  // SIGTERM (SIGKILL after 10 s) and wait until the process is gone.
  void stop();
  // Starts it again on the same port with the same data; waits (at most 30 s) until it answers
  // and accepts the admin credential. Throws std::runtime_error when it does not.
  void start();
  bool running();

  // The connection values for server_override and the couchgate under test (pouchdb = true).
  const server_env& env() const { return env_; }
  // The server's own output (for failure messages).
  std::string output() const;

 private:
  std::string bin_, dir_;
  server_env env_;
  pid_t pid_ = -1;
};

}  // namespace couchgate::test
