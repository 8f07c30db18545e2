#pragma once
// Owns: the benchmark's own CouchDB connection: one keep-alive admin connection per object
// (cpp-httplib, like the test harness, so couchgate's client cannot flatter itself), plus the
// few request shapes the phases share. Not thread-safe: one bench_client per thread.
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tests/support/harness.hpp"

namespace httplib {
class Client;
}

namespace couchgate::bench {

using test::json;
using test::reply;

// Where a bench_client connects and as whom: the server as its admin by default; the front
// door, or the server as a plain user, for the client phases.
struct endpoint {
  std::string host;
  int port = 0;
  std::string user, password;  // Basic auth; empty user = anonymous
  bool tls = false;            // https, certificate not verified (the bench's own self-signed one)
  static endpoint server_admin();
};

class bench_client {
 public:
  explicit bench_client(std::chrono::seconds read_timeout = std::chrono::seconds(120));
  bench_client(const endpoint& to, std::chrono::seconds read_timeout);
  ~bench_client();
  bench_client(const bench_client&) = delete;
  bench_client& operator=(const bench_client&) = delete;

  reply get(const std::string& target);
  reply put(const std::string& target, const std::string& body);
  reply post(const std::string& target, const std::string& body);
  reply del(const std::string& target);

  // Cookie authentication: the Cookie header sent with the next requests ("" = none).
  void use_cookie(std::string cookie) { cookie_ = std::move(cookie); }
  // The AuthSession cookie ("AuthSession=...", no attributes) the last answer set, "" when none.
  const std::string& session_cookie() const { return session_cookie_; }

 private:
  reply call(const char* method, const std::string& target, const std::string* body);
  std::unique_ptr<httplib::Client> cli_;
  std::string cookie_, session_cookie_;
};

// "/" + percent-encoded database name.
std::string db_path(const std::string& db);
// The server URL (base, default COUCHDB_URL) with the admin credentials in it, for
// _replicator documents.
std::string url_with_credentials(std::string base = {});
// doc_count of a database; nullopt when it cannot be read (missing, server down).
std::optional<std::uint64_t> doc_count(bench_client& c, const std::string& db);
// A seq as a query parameter value: numbers as digits, strings as they are (opaque).
std::string seq_param(const json& seq);
// One line describing a failed reply, for messages.
std::string describe(const reply& r);

}  // namespace couchgate::bench
