// Server outages under load: couchgate talks to the server through the fault proxy
// (tests/support/fault_proxy), 20 writers keep writing into 20 user databases directly on the
// server, and the server "goes away" twice (every connection cut, new ones refused: what a
// client sees of a restart). couchgate must reconnect with backoff and converge (the central
// database equals the union of the sources), and log exactly one line when each outage begins
// and one when it ends — not a warning per failed request (a restart under 20 writers used to
// log 200 warnings in 15 s). Outages and backoff are visible in /metrics.
//
// (The test server is pouchdb-server --in-memory: stopping the process would lose its data, so
// the outage is made by the proxy, which looks the same to couchgate as a stopped server.)
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "policy/naming.hpp"
#include "tests/integration/fixtures.hpp"
#include "tests/support/convergence.hpp"
#include "tests/support/fault_proxy.hpp"
#include "tests/support/harness.hpp"

using namespace couchgate::test;
using namespace std::chrono_literals;

TEST_CASE("two server outages under 20 writers: one log line per outage and per recovery, and fan-in converges") {
  fault_proxy proxy;
  auto n = fresh_names("outlog");
  json cfg = fault_config(n, proxy);
  cfg["log"]["level"] = "info";
  std::map<std::string, std::string> db_owner;
  for (int i = 0; i < 20; ++i) {
    const std::string u = "w" + std::to_string(i) + "-" + n.role;
    REQUIRE(create_user(u, {n.role}).status == 201);
    db_owner[couchgate::policy::user_db_name(n.prefix, u)] = u;
  }
  couchgate_process cg(cfg, proxy_env(proxy));
  cg.start();
  REQUIRE_MESSAGE(cg.wait_ready(120s), tail(cg.log()));
  for (const auto& [db, owner] : db_owner)
    REQUIRE_MESSAGE(eventually([&] { return couch().get("/" + enc(db)).status == 200; }, 60s), db);

  // 20 writers, one per database, straight to the server.
  std::vector<std::string> dbs;
  for (const auto& [db, owner] : db_owner) dbs.push_back(db);
  paced_writers writers(dbs, 20ms);

  const std::string began = "CouchDB unreachable";
  const std::string ended = "CouchDB answers again";
  const int warnings_before = count_lines(cg.log(), " warning [");
  const double errors_before = cg.metric("couchgate_replication_errors_total").value_or(0);
  const int outages = 2;
  for (int o = 0; o < outages; ++o) {
    CAPTURE(o);
    // Wait until couchgate is replicating again before the next outage.
    REQUIRE_MESSAGE(eventually([&] { return count_lines(cg.log(), ended) == o; }, 60s), tail(cg.log()));
    proxy.refuse(true);
    proxy.cut();
    // Down for at least 4 s, and until couchgate has noticed (the outage line is written).
    const auto down = std::chrono::steady_clock::now();
    CHECK_MESSAGE(eventually([&] { return count_lines(cg.log(), began) == o + 1; }, 30s), tail(cg.log()));
    eventually([&] { return std::chrono::steady_clock::now() - down >= 4s; }, 10s);
    REQUIRE_MESSAGE(cg.running(), tail(cg.log()));
    proxy.refuse(false);
    CHECK_MESSAGE(eventually([&] { return count_lines(cg.log(), ended) == o + 1; }, 60s), tail(cg.log()));
  }
  writers.stop();

  db_state want;
  const std::string diff = wait_central_converged(n.central, db_owner, 120s, &want);
  const bool converged = diff.empty();
  CHECK_MESSAGE(converged, diff << tail(cg.log()));
  const std::string log = cg.log();
  const int warnings = count_lines(log, " warning [") - warnings_before;
  const int errors = count_lines(log, " error [");
  MESSAGE(outages << " outages under 20 writers (" << writers.written() << " documents written): " << warnings
                  << " warning lines, " << count_lines(log, began) << " '" << began << "', " << count_lines(log, ended)
                  << " '" << ended << "', " << errors << " error lines; central holds " << want.size() << " documents");
  CHECK(count_lines(log, began) == outages);
  CHECK(count_lines(log, ended) == outages);
  // Every warning of the run is one of those lines.
  CHECK_MESSAGE(warnings == 2 * outages, log);
  CHECK(errors == 0);
  // Visible in /metrics: the outages, and the failed turns retried with backoff.
  CHECK(cg.metric("couchgate_couchdb_outages_total") == outages);
  CHECK(cg.metric("couchgate_couchdb_unreachable") == 0);
  CHECK(cg.metric("couchgate_couchdb_transport_errors_total").value_or(0) > 0);
  MESSAGE("replication errors counted during the outages: "
          << cg.metric("couchgate_replication_errors_total").value_or(0) - errors_before);
  CHECK(cg.terminate() == 0);
}
