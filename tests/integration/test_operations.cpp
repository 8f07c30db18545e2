// What operators and their tools see of a running daemon: the /metrics text as Prometheus'
// own checker reads it (and the Grafana dashboard's series in it), the systemd notifications (READY, STATUS, WATCHDOG, STOPPING) on a
// NOTIFY_SOCKET the test binds, and `couchgate health`, the container's HEALTHCHECK.
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>
#include <regex>
#include <set>
#include <vector>

#include "policy/naming.hpp"
#include "tests/support/harness.hpp"

using namespace couchgate::test;
using namespace std::chrono_literals;

namespace {

std::string temp_dir() {
  char tmpl[] = "/tmp/couchgate-ops-XXXXXX";
  return mkdtemp(tmpl);
}

// Runs a shell command, returning its exit status and combined output.
std::pair<int, std::string> shell(const std::string& command) {
  std::string out;
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  std::size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

// A unix datagram socket bound where NOTIFY_SOCKET points, collecting every notification.
class notify_socket {
 public:
  notify_socket() : path_(temp_dir() + "/notify") {
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    REQUIRE(path_.size() < sizeof addr.sun_path);
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path_.c_str());
    REQUIRE(bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  }
  ~notify_socket() {
    close(fd_);
    unlink(path_.c_str());
  }
  const std::string& path() const { return path_; }

  // Reads whatever arrived within `wait`; each datagram split into its lines.
  void drain(std::chrono::milliseconds wait) {
    pollfd p{fd_, POLLIN, 0};
    while (poll(&p, 1, static_cast<int>(wait.count())) > 0) {
      char buf[4096];
      ssize_t n = recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) break;
      std::string msg(buf, static_cast<std::size_t>(n)), line;
      for (char c : msg + "\n") {
        if (c != '\n') {
          line += c;
        } else if (!line.empty()) {
          lines_.push_back(line);
          line.clear();
        }
      }
      wait = 0ms;  // then take only what is already queued
    }
  }
  std::size_t count(const std::string& line) const {
    std::size_t n = 0;
    for (const auto& l : lines_) n += l == line ? 1 : 0;
    return n;
  }
  bool any_starting_with(const std::string& prefix) const {
    for (const auto& l : lines_)
      if (l.rfind(prefix, 0) == 0) return true;
    return false;
  }
  const std::vector<std::string>& lines() const { return lines_; }

 private:
  std::string path_;
  int fd_ = -1;
  std::vector<std::string> lines_;
};

// A free loopback port: bound, noted and released (the daemon binds it a moment later).
int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  socklen_t len = sizeof addr;
  REQUIRE(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  close(fd);
  return ntohs(addr.sin_port);
}

// The couchgate series a PromQL text names (a histogram by its family: `_bucket` dropped).
std::set<std::string> series_named_in(const std::string& text) {
  static const std::regex series_name("couchgate_[a-z0-9_]+");
  std::set<std::string> out;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), series_name); it != std::sregex_iterator(); ++it) {
    std::string name = it->str();
    if (name.ends_with("_bucket")) name.resize(name.size() - 7);
    out.insert(name);
  }
  return out;
}

// Whether the /metrics text declares the family `name`.
bool exports(const std::string& metrics_text, const std::string& name) {
  return metrics_text.find("# TYPE " + name + " ") != std::string::npos;
}

std::string joined(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

}  // namespace

TEST_CASE("metrics: promtool check metrics accepts /metrics of a daemon that provisioned and replicated") {
  auto [found, where] = shell("command -v promtool");
  REQUIRE_MESSAGE(found == 0, "promtool not found: install Debian's prometheus package (deploy/install-deps.sh does)");

  auto n = fresh_names("promtool");
  json cfg = base_config(n);
  // The front door and sign-up too (plain HTTP on a free loopback port), so their families are
  // checked as well.
  cfg["front"] = {{"enabled", true}, {"allow_insecure", true}, {"address", "127.0.0.1"}, {"port", 0}};
  cfg["identities"] = {{"enabled", true}, {"db", n.state + "-ids"}};
  couchgate_process cg(cfg);
  cg.start();
  REQUIRE_MESSAGE(cg.wait_ready(60s), cg.log());
  // A user and a document, so the counters, the labelled families and the lag histogram all
  // carry real values rather than only their zero defaults.
  const std::string user = "metrics-" + n.role;
  REQUIRE(create_user(user, {n.role}).status == 201);
  const std::string db = couchgate::policy::user_db_name(n.prefix, user);
  REQUIRE_MESSAGE(eventually([&] { return couch().get("/" + enc(db)).status == 200; }, 60s), cg.log());
  REQUIRE(couch().put("/" + enc(db) + "/doc-1", json{{"v", 1}}).status == 201);
  REQUIRE_MESSAGE(eventually([&] { return cg.metric("couchgate_replicated_docs_total").value_or(0) >= 1; }, 60s), cg.log());

  auto metrics = cg.admin_get("/metrics");
  REQUIRE(metrics.status == 200);
  CHECK(metrics.raw.find("couchgate_replication_lag_seconds_bucket{le=\"+Inf\"}") != std::string::npos);
  // Memory: the resident size is the process's own (a few MB at least, below what a test
  // daemon could reach); the heap figures are malloc's (allocated bytes need not be resident).
  const double rss = cg.metric("process_resident_memory_bytes").value_or(-1);
  const double heap = cg.metric("couchgate_heap_in_use_bytes").value_or(-1);
  CHECK(rss > 4e6);
  CHECK(rss < 4e9);
  // (0 under AddressSanitizer, whose allocator glibc's mallinfo2 does not see.)
  CHECK(heap >= 0);
  CHECK(heap < 4e9);
  CHECK(cg.metric("couchgate_heap_free_bytes").value_or(-1) >= 0);
  const std::string file = cg.dir() + "/metrics.txt";
  { std::ofstream(file) << metrics.raw; }
  {
    // promtool exits 3 on any lint problem (a counter without _total, a missing HELP, ...) and
    // on text it cannot parse.
    auto [status, out] = shell("promtool check metrics < " + file);
    INFO("promtool said:\n" << out << "\n/metrics was:\n" << metrics.raw);
    CHECK(status == 0);
    CHECK(out.find("error") == std::string::npos);
  }

  // deploy/grafana-dashboard.json plots only series this daemon exports (front door included).
  std::ifstream dashboard_file(std::string(COUCHGATE_SOURCE_DIR) + "/deploy/grafana-dashboard.json");
  auto dashboard = json::parse(dashboard_file, nullptr, false);
  REQUIRE(dashboard.is_object());
  std::set<std::string> plotted;
  for (const auto& panel : dashboard["panels"]) {
    for (const auto& target : panel["targets"]) {
      plotted.merge(series_named_in(target["expr"].get<std::string>()));
    }
  }
  CHECK(plotted.size() >= 10);
  // The front door's cumulative counts are counters named _total (rate() needs a counter).
  for (const char* name : {"couchgate_front_client_connections_refused_total", "couchgate_front_tls_handshake_failures_total",
                           "couchgate_front_client_timeouts_total", "couchgate_front_header_too_large_total",
                           "couchgate_front_body_too_large_total"}) {
    CAPTURE(name);
    CHECK(metrics.raw.find("# TYPE " + std::string(name) + " counter\n") != std::string::npos);
    CHECK(plotted.count(name) == 1);
  }
  for (const auto& name : plotted) {
    CHECK_MESSAGE(exports(metrics.raw, name), "deploy/grafana-dashboard.json plots " << name << ", which /metrics does not export");
  }

  // deploy/prometheus-alerts.yml: valid rules, each firing when tests/alerts/alerts.test.yml says
  // (and none on a healthy daemon), on series this daemon exports.
  const std::string rules = std::string(COUCHGATE_SOURCE_DIR) + "/deploy/prometheus-alerts.yml";
  {
    auto [status, out] = shell("promtool check rules " + rules + " 2>&1");
    INFO("promtool said:\n" << out);
    CHECK(status == 0);
  }
  {
    auto [status, out] = shell("cd " + std::string(COUCHGATE_SOURCE_DIR) + " && promtool test rules tests/alerts/alerts.test.yml 2>&1");
    INFO("promtool said:\n" << out);
    CHECK(status == 0);
  }
  std::ifstream rules_file(rules);
  const std::set<std::string> alerted =
      series_named_in(std::string((std::istreambuf_iterator<char>(rules_file)), std::istreambuf_iterator<char>()));
  CHECK(alerted.size() >= 15);
  for (const auto& name : alerted) {
    CHECK_MESSAGE(exports(metrics.raw, name), "deploy/prometheus-alerts.yml names " << name << ", which /metrics does not export");
  }
  CHECK(cg.terminate() == 0);
}

TEST_CASE("systemd: READY=1, STATUS=, WATCHDOG=1 and STOPPING=1 arrive on NOTIFY_SOCKET") {
  // While CouchDB cannot be reached, STATUS= says so (systemctl status shows it); nothing says READY.
  {
    notify_socket sock;
    auto n = fresh_names("notifydown");
    json cfg = base_config(n);
    cfg["couchdb"]["url"] = "http://127.0.0.1:9";  // discard port: nothing listens
    couchgate_process cg(cfg, {{"NOTIFY_SOCKET", sock.path()}, {"COUCHDB_URL", ""}});
    cg.start();
    CHECK_MESSAGE(eventually(
                      [&] {
                        sock.drain(50ms);
                        return sock.any_starting_with("STATUS=CouchDB at http://127.0.0.1:9 not reachable");
                      },
                      30s),
                  joined(sock.lines()) << cg.log());
    CHECK(sock.count("READY=1") == 0);
    CHECK(cg.terminate() == 0);
  }

  notify_socket sock;
  auto n = fresh_names("notify");
  // 300 ms: the daemon must send WATCHDOG=1 at least every 150 ms (it aims at a third).
  couchgate_process cg(base_config(n), {{"NOTIFY_SOCKET", sock.path()}, {"WATCHDOG_USEC", "300000"}});
  cg.start();
  REQUIRE_MESSAGE(cg.wait_ready(60s), cg.log());
  CHECK_MESSAGE(eventually(
                    [&] {
                      sock.drain(50ms);
                      return sock.count("READY=1") == 1 && sock.any_starting_with("STATUS=") && sock.count("WATCHDOG=1") >= 5;
                    },
                    30s),
                joined(sock.lines()));
  CHECK(cg.terminate() == 0);
  sock.drain(200ms);
  CHECK_MESSAGE(sock.count("STOPPING=1") == 1, joined(sock.lines()));
  CHECK_MESSAGE(sock.count("READY=1") == 1, joined(sock.lines()));
}

TEST_CASE("health: exit 0 while the admin API answers, 1 once it is gone; --ready; COUCHGATE_ADMIN_PORT wins") {
  auto n = fresh_names("health");
  couchgate_process cg(base_config(n));
  cg.start();
  REQUIRE_MESSAGE(cg.wait_ready(60s), cg.log());
  const std::string config = cg.dir() + "/config.yaml";

  // admin_api.port is 0 in the test config: the bound port comes from admin_api.port_file.
  auto ok = run_couchgate({"health", "--config", config});
  CHECK_MESSAGE(ok.status == 0, ok.out << ok.err);
  CHECK(ok.out.find("healthy") != std::string::npos);
  auto ready = run_couchgate({"health", "--ready", "--config", config});
  CHECK_MESSAGE(ready.status == 0, ready.out << ready.err);

  // The environment names the address and port (what the container passes): a port nothing
  // listens on is unhealthy, the daemon's port is healthy without any port_file lookup.
  // (Loopback: a wildcard address is probed on loopback too, see the unit tests, but binding one
  // needs an admin token.)
  auto elsewhere = run_couchgate({"health", "--timeout", "2", "--config", config},
                                 {{"COUCHGATE_ADMIN_ADDRESS", "127.0.0.2"}, {"COUCHGATE_ADMIN_PORT", "9"}});
  CHECK_MESSAGE(elsewhere.status == 1, elsewhere.out << elsewhere.err);
  CHECK(elsewhere.err.find("127.0.0.2:9") != std::string::npos);
  auto by_env = run_couchgate({"health", "--config", config},
                              {{"COUCHGATE_ADMIN_ADDRESS", "127.0.0.1"}, {"COUCHGATE_ADMIN_PORT", std::to_string(cg.admin_port())}});
  CHECK_MESSAGE(by_env.status == 0, by_env.out << by_env.err);
  auto bad_env = run_couchgate({"health", "--config", config}, {{"COUCHGATE_ADMIN_PORT", "http"}});
  CHECK(bad_env.status == 1);  // Docker reserves exit 2: a bad config is "unhealthy" too
  CHECK(bad_env.err.find("COUCHGATE_ADMIN_PORT") != std::string::npos);

  CHECK(cg.terminate() == 0);
  auto gone = run_couchgate({"health", "--timeout", "2", "--config", config});
  CHECK_MESSAGE(gone.status == 1, gone.out << gone.err);
  CHECK(gone.err.find("unhealthy") != std::string::npos);
}

TEST_CASE("COUCHGATE_ADMIN_ADDRESS and COUCHGATE_ADMIN_PORT move the admin API's listener") {
  auto n = fresh_names("adminenv");
  json cfg = base_config(n);
  const int port = free_port();
  cfg["admin_api"]["address"] = "192.0.2.1";  // TEST-NET-1: binding it would fail, so the environment must win
  couchgate_process cg(cfg, {{"COUCHGATE_ADMIN_ADDRESS", "127.0.0.1"}, {"COUCHGATE_ADMIN_PORT", std::to_string(port)}});
  cg.start();
  REQUIRE_MESSAGE(cg.wait_ready(60s), cg.log());
  CHECK(cg.admin_port() == port);
  CHECK(cg.log().find("admin API on http://127.0.0.1:" + std::to_string(port)) != std::string::npos);
  CHECK(cg.terminate() == 0);
}
