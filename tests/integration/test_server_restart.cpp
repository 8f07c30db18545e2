// A real server restart: the server process is stopped (SIGTERM) and started again, twice, while
// 10 writers keep writing into 10 user databases. couchgate must notice, retry with backoff (no
// storm of attempts), log exactly one line when each outage begins and one when it ends, and
// converge: the central database equals the union of the user databases.
//
// The server here is a pouchdb-server that this test owns (tests/support/owned_server: data on
// disk, so it survives its restart), whatever server the rest of the suite runs against: the
// suite's own pouchdb-server keeps its data in memory and an external CouchDB is not the test's
// to stop. (tests/integration/test_outage_log.cpp makes the same outage with the fault proxy
// in front of the suite's server, CouchDB included.)
//
// To restart a server of your own instead (a private CouchDB, say), give the shell commands
// that stop and start it: COUCHGATE_RESTART_STOP and COUCHGATE_RESTART_START; the test then
// uses the suite's server (COUCHDB_URL), runs them, and waits until it is gone / answers again.
// E.g. COUCHGATE_RESTART_STOP='pkill -f couchchaos@'
//      COUCHGATE_RESTART_START='cd /tmp/chaos-couchdb && (nohup ./bin/couchdb >>couchdb.out 2>&1 &)'
#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <optional>
#include <chrono>
#include <map>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "policy/naming.hpp"
#include "tests/integration/fixtures.hpp"
#include "tests/support/convergence.hpp"
#include "tests/support/harness.hpp"
#include "tests/support/owned_server.hpp"

using namespace couchgate::test;
using namespace std::chrono_literals;
using std::chrono::steady_clock;

namespace {

double seconds_since(steady_clock::time_point t) { return std::chrono::duration<double>(steady_clock::now() - t).count(); }

std::string getenv_str(const char* k) {
  const char* v = std::getenv(k);
  return v ? v : "";
}

// The server this test restarts: its own pouchdb-server, or the suite's with the commands above.
class restartable_server {
 public:
  restartable_server() : stop_cmd_(getenv_str("COUCHGATE_RESTART_STOP")), start_cmd_(getenv_str("COUCHGATE_RESTART_START")) {
    if (stop_cmd_.empty() || start_cmd_.empty()) {
      owned_.emplace(COUCHGATE_SOURCE_DIR "/tests/server/node_modules/.bin/pouchdb-server");
      use_.emplace(owned_->env());
    }
  }
  const server_env& env() const { return couchgate::test::env(); }
  std::string kind() const { return owned_ ? "a pouchdb-server the test owns" : "the server of COUCHDB_URL"; }
  void stop() {
    if (owned_) return owned_->stop();
    REQUIRE(std::system(stop_cmd_.c_str()) != -1);
    REQUIRE_MESSAGE(eventually([] { return !server_alive(); }, 60s), "still answering after " << stop_cmd_);
  }
  void start() {
    if (owned_) return owned_->start();
    REQUIRE(std::system(start_cmd_.c_str()) != -1);
    REQUIRE_MESSAGE(eventually([] { return couch().get("/_all_dbs").status == 200; }, 120s), "not answering after " << start_cmd_);
  }
  std::string output() const { return owned_ ? owned_->output() : std::string(); }

 private:
  std::string stop_cmd_, start_cmd_;
  std::optional<owned_server> owned_;
  std::optional<server_override> use_;  // destroyed before owned_
};

}  // namespace

TEST_CASE("a real server restart under 10 writers: backoff, one log line per outage and per recovery, convergence") {
  restartable_server server;
  MESSAGE("restarting " << server.kind() << " at " << server.env().url);
  auto n = fresh_names("restart");
  json cfg = base_config(n);
  cfg["couchdb"]["request_timeout"] = "5s";
  cfg["couchdb"]["feed_timeout"] = "3s";
  cfg["log"]["level"] = "info";
  std::map<std::string, std::string> db_owner;
  for (int i = 0; i < 10; ++i) {
    const std::string u = "w" + std::to_string(i) + "-" + n.role;
    REQUIRE(create_user(u, {n.role}).status == 201);
    db_owner[couchgate::policy::user_db_name(n.prefix, u)] = u;
  }
  couchgate_process cg(cfg, {{"COUCHDB_URL", server.env().url},
                             {"COUCHDB_USER", server.env().user},
                             {"COUCHDB_PASSWORD", server.env().password}});
  cg.start();
  REQUIRE_MESSAGE(cg.wait_ready(120s), tail(cg.log()));
  for (const auto& [db, owner] : db_owner)
    REQUIRE_MESSAGE(eventually([&] { return couch().get("/" + enc(db)).status == 200; }, 60s), db << tail(cg.log()));

  std::vector<std::string> dbs;
  for (const auto& [db, owner] : db_owner) dbs.push_back(db);
  paced_writers writers(dbs, 30ms);  // a refused write is not made while the server is down

  const std::string began = "CouchDB unreachable";
  const std::string ended = "CouchDB answers again";
  const int warnings_before = count_lines(cg.log(), " warning [");
  const int outages = 2;
  std::vector<double> reconnect_s;
  for (int o = 0; o < outages; ++o) {
    CAPTURE(o);
    REQUIRE_MESSAGE(eventually([&] { return count_lines(cg.log(), ended) == o; }, 60s), tail(cg.log()));
    // Up for a while with the writers writing, then down.
    const int before = writers.written();
    REQUIRE(eventually([&] { return writers.written() >= before + 100; }, 60s));
    server.stop();
    const auto down = steady_clock::now();
    CHECK_MESSAGE(eventually([&] { return count_lines(cg.log(), began) == o + 1; }, 30s), tail(cg.log()));
    // Down for at least 4 s (several backoff rounds).
    eventually([&] { return seconds_since(down) >= 4; }, 10s);
    REQUIRE_MESSAGE(cg.running(), tail(cg.log()));
    server.start();
    const auto up = steady_clock::now();
    CHECK_MESSAGE(eventually([&] { return count_lines(cg.log(), ended) == o + 1; }, 60s), tail(cg.log()) << server.output());
    reconnect_s.push_back(seconds_since(up));
  }
  const auto last_up = steady_clock::now();
  const int before_end = writers.written();
  REQUIRE(eventually([&] { return writers.written() >= before_end + 100; }, 60s));
  writers.stop();

  db_state want;
  const std::string diff = wait_central_converged(n.central, db_owner, 120s, &want);
  const bool converged = diff.empty();
  CHECK_MESSAGE(converged, diff << tail(cg.log()));
  const double converge_s = seconds_since(last_up);
  const std::string log = cg.log();
  const int warnings = count_lines(log, " warning [") - warnings_before;
  CHECK(count_lines(log, began) == outages);
  CHECK(count_lines(log, ended) == outages);
  CHECK_MESSAGE(warnings == 2 * outages, log);
  CHECK(count_lines(log, " error [") == 0);
  // Backoff, not a storm: the recovery line says how many requests failed during the outage.
  const std::regex recovery(R"(CouchDB answers again after ([0-9.]+) s unreachable \(([0-9]+) requests failed meanwhile\))");
  int recoveries = 0;
  for (auto it = std::sregex_iterator(log.begin(), log.end(), recovery); it != std::sregex_iterator(); ++it) {
    const double lasted = std::stod((*it)[1]);
    const long failed = std::stol((*it)[2]);
    MESSAGE("outage of " << lasted << " s: " << failed << " requests failed meanwhile");
    CHECK(failed < 40 * std::max(5.0, lasted));
    ++recoveries;
  }
  CHECK(recoveries == outages);
  CHECK(cg.metric("couchgate_couchdb_outages_total") == outages);
  CHECK(cg.metric("couchgate_couchdb_unreachable") == 0);
  CHECK(cg.metric("couchgate_couchdb_transport_errors_total").value_or(0) > 0);
  MESSAGE(outages << " real server restarts under 10 writers (" << writers.written() << " documents written, "
                  << writers.refused() << " writes refused while down): " << warnings << " warning lines; "
                  << "recovery noticed " << reconnect_s[0] << " s and " << reconnect_s[1]
                  << " s after each start; converged " << converge_s << " s after the last; central holds " << want.size()
                  << " documents; lost: " << std::string(converged ? "nothing" : "see above"));
  CHECK(cg.terminate() == 0);
}
