#pragma once
// Owns: what every phase of the benchmark shares: the options, the record of databases and
// name bases this run created (for cleanup), functional failures, interruption (SIGINT/SIGTERM)
// and the clock/deadline helpers. Every loop in the benchmark is bounded by a deadline and
// gives up early once interrupted() is true.
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "tests/support/harness.hpp"

namespace couchgate::bench {

using json = nlohmann::json;
using steady = std::chrono::steady_clock;

struct size_spec {
  int dbs = 0;
  int docs_per_db = 0;
  std::string label() const { return std::to_string(dbs) + "x" + std::to_string(docs_per_db); }
};

struct options {
  bool smoke = false;
  std::vector<size_spec> sizes;
  int steady_dbs = 1000;
  int rate = 100;             // writes per second in the steady-state phase
  double seconds = 60;        // steady-state write window
  int users = 1000;           // provisioning burst
  double provision_rate = 0;  // provisioning: users created per second, one request each (0 = all at once)
  bool provision_backlog = false;  // provisioning: the users written before couchgate starts (its first reconcile)
  int signups = 200;          // sign-up phase: sign-ups through the front door
  int signup_concurrency = 16;  // ... sent this many at a time
  double builtin_timeout = 300;
  std::string builtin_url;    // how the server's replicator reaches the server; empty = COUCHDB_URL
  std::string out = "bench-results.json";
  std::string plots;          // directory; empty = no plots
  std::string logs;           // directory to keep couchgate's logs in; empty = discard them
  std::set<std::string> skip; // fanin ceiling builtin restore steady provisioning front live signup
  json couchgate_overrides = json::object();  // JSON merge patch applied to every couchgate config
  std::string log_level = "info";
  bool user_passwords = false;
  int threads = 4;            // bench-side parallelism for seeding, deleting and verifying
  // Client phases (issues #13 and #14).
  int front_users = 32;       // front door: concurrent replicating clients (one user each)
  int front_docs = 200;       // front door: documents each client pushes (and pulls) per segment
  int front_batch = 100;      // front door: PouchDB's batch_size
  int front_rounds = 10;      // front door: rounds of the four segments (direct, front, front, direct)
  bool front_tls = false;     // front door over TLS (a self-signed certificate) instead of plain HTTP
  int front_direct_tls_port = 0;  // with front_tls: the server's own TLS port ([ssl]) for the direct segments
  int live_clients = 10000;   // live feeds: longpoll clients, one per user database
  int live_rate = 100;        // live feeds: writes per second into random user databases
  double live_seconds = 600;  // live feeds: seconds of writing, per half (direct, through couchgate)
  // live feeds: which halves run (a server that cannot hold C direct clients, e.g. its open-files
  // limit below 2 x C, still lets the couchgate half be measured alone).
  bool live_direct = true, live_front = true;
  // live feeds: where the front half's writer writes: straight to the server as its admin (the
  // half "front"), and/or through couchgate's front door as each database's user (the half
  // "front_write_through": couchgate's write-through wakes).
  bool live_writes_server = true, live_writes_front = false;
  bool skipped(const std::string& what) const { return skip.count(what) > 0; }
};

class context {
 public:
  options opt;
  pid_t server_pid = -1;      // COUCHGATE_SERVER_PID when set (the local pouchdb-server)
  bool pouchdb = false;       // the server is pouchdb-server (GET / has "express-pouchdb")

  // fresh_names() that also remembers the name base, so cleanup can find every database of
  // this run even after a phase failed half-way.
  test::names fresh(const std::string& stem);
  // The couchgate config every phase starts from: names, selection role and admin port from
  // base_config, couchgate's defaults for the rest, then the log level and --couchgate-config.
  json couchgate_config(const test::names& n) const;

  void created(const std::string& db);
  void dropped(const std::string& db);
  std::vector<std::string> created_dbs() const;
  std::vector<std::string> name_bases() const;

  // A functional failure (not a timing): reported, and the exit status becomes 1.
  void fail(const std::string& what);
  std::vector<std::string> failures() const;

 private:
  mutable std::mutex mu_;
  std::set<std::string> dbs_;
  std::vector<std::string> bases_;
  std::vector<std::string> failures_;
};

// Progress on stderr, prefixed with the time since the benchmark started.
void note(const std::string& line);

void install_signal_handlers();
bool interrupted();

double seconds_since(steady::time_point t0);
double round_to(double v, int decimals = 3);
std::string pad(long long value, int width);
std::string iso_now();

// Calls pred every period until it returns true, the deadline passes or the run is
// interrupted. Returns pred's last value.
bool poll_until(const std::function<bool()>& pred, std::chrono::duration<double> deadline,
                std::chrono::milliseconds period);

// Nearest-rank percentile of an ascending vector (empty -> -1).
double percentile(const std::vector<double>& sorted, double p);
// {"count", "p50", "p95", "p99", "max"} of values (rounded to decimals); {"count": 0} when empty.
json latency_summary(std::vector<double> values, int decimals = 1);

}  // namespace couchgate::bench
