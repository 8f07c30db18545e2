// The front door (issue 13) end to end, with real clients: couchgate runs with a `front:`
// listener in front of the test server, and Node scripts under tests/clients/ play the
// clients (PouchDB 9 from the npm lockfile; raw TLS sockets for the path table; a stand-in
// TLS-terminating proxy for the scheme header). This file sets the stage (users, their
// databases, certificates, a recording proxy between couchgate and the server), runs one
// script per test case and checks its exit status, then scans every line couchgate logged for
// the credentials, cookies and tokens the scripts used.
//
// A couchgate built without the front door (its config rejects the `front` key) skips every
// case here with a message saying so. COUCHGATE_FULL=1 enlarges the sync workload (100 1 MiB
// attachments instead of 5).
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "policy/naming.hpp"
#include "tests/integration/fixtures.hpp"
#include "tests/support/harness.hpp"

using namespace couchgate::test;
using namespace std::chrono_literals;
using couchgate::policy::user_db_name;

namespace {

const std::string clients_dir = std::string(COUCHGATE_SOURCE_DIR) + "/tests/clients";

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string random_hex(std::size_t bytes) {
  std::ifstream r("/dev/urandom", std::ios::binary);
  std::string out;
  static const char* hex = "0123456789abcdef";
  for (std::size_t i = 0; i < bytes; ++i) {
    auto c = static_cast<unsigned char>(r.get());
    out += hex[c >> 4];
    out += hex[c & 15];
  }
  return out;
}

// Why the front door cannot be tested with this binary, or empty when it can: a build without
// it rejects the `front` key (unknown keys are config errors).
const std::string& front_missing() {
  static const std::string why = [] {
    std::string dir = make_temp_dir("couchgate-front-probe");
    { std::ofstream(dir + "/probe.yaml") << "front:\n  enabled: false\n"; }
    auto r = run_couchgate({"check-config", dir + "/probe.yaml"});
    return r.status == 0 ? std::string()
                         : "this couchgate has no front door (check-config of `front: {enabled: false}` exited " +
                               std::to_string(r.status) + ": " + tail(r.err, 300) + ")";
  }();
  return why;
}

#define SKIP_WITHOUT_FRONT_DOOR()                                 \
  do {                                                             \
    if (!front_missing().empty()) {                                \
      MESSAGE("skipped: " << front_missing());                     \
      return;                                                      \
    }                                                              \
  } while (0)

// A child process (node) with its output in a file; killed when it goes out of scope.
class child {
 public:
  child(const std::vector<std::string>& argv, const std::map<std::string, std::string>& extra_env, std::string out_file)
      : out_(std::move(out_file)) {
    pid_ = fork();
    if (pid_ == 0) {
      int fd = open(out_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      dup2(fd, 1);
      dup2(fd, 2);
      for (const auto& [k, v] : extra_env) setenv(k.c_str(), v.c_str(), 1);
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      execvp(args[0], args.data());
      _exit(127);
    }
  }
  ~child() { stop(); }
  child(const child&) = delete;
  child& operator=(const child&) = delete;

  // Exit status, or -1 when it had to be killed at the deadline.
  int wait(std::chrono::seconds deadline) {
    auto end = std::chrono::steady_clock::now() + deadline;
    int status = 0;
    while (pid_ > 0) {
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      if (std::chrono::steady_clock::now() > end) {
        stop();
        return -1;
      }
      std::this_thread::sleep_for(50ms);
    }
    return -1;
  }
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
  }
  std::string output() const { return slurp(out_); }

 private:
  std::string out_;
  pid_t pid_ = -1;
};

void install_client_deps() {
  static const int status = std::system(("bash " + clients_dir + "/install.sh 1>&2").c_str());
  REQUIRE_MESSAGE(status == 0, "tests/clients/install.sh failed (npm ci of PouchDB): see its output above");
}

// One test case's scratch directory: certificates, parameters, port files, script output.
struct stage {
  std::string dir;
  stage() : dir(make_temp_dir("couchgate-front")) {}
  std::string path(const std::string& name) const { return dir + "/" + name; }

  // A CA and a server certificate for 127.0.0.1 signed by it (openssl CLI).
  void make_certificates() const {
    std::string cmd = "cd '" + dir + "' && ( " +
                      "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=couchgate-test-ca && "
                      "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1 && "
                      "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nbasicConstraints=CA:FALSE\\n' > ext.cnf && "
                      "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 "
                      "-extfile ext.cnf ) >openssl.log 2>&1";
    int status = std::system(cmd.c_str());
    REQUIRE_MESSAGE(status == 0, "openssl failed: " << slurp(path("openssl.log")));
  }
};

struct test_user {
  std::string name, password, db;
  json to_json() const { return {{"name", name}, {"password", password}, {"db", db}}; }
};

// Users with the selection role and random passwords, whose databases couchgate provisions.
std::vector<test_user> make_users(const names& n, const std::vector<std::string>& stems) {
  std::vector<test_user> out;
  for (const auto& s : stems) {
    test_user u{s + "-" + n.role, "pw-" + random_hex(12), ""};
    u.db = user_db_name(n.prefix, u.name);
    auto r = create_user(u.name, {n.role}, u.password);
    REQUIRE_MESSAGE(r.status == 201, r.raw);
    out.push_back(u);
  }
  return out;
}

void wait_provisioned(const std::vector<test_user>& users, couchgate_process& cg) {
  for (const auto& u : users) {
    INFO("user " << u.name << " db " << u.db);
    REQUIRE_MESSAGE(eventually([&] { return db_usable_by(u.db, u.name); }, 60s), tail(cg.log()));
  }
}

// base_config plus a front door on a free loopback port and a shared database.
json front_config(const names& n, const stage& st) {
  json cfg = base_config(n);
  cfg["front"] = {{"enabled", true}, {"address", "127.0.0.1"}, {"port", 0}, {"port_file", st.path("front-port")}};
  cfg["shared"] = {{"enabled", true}, {"db", n.state + "-shared"}, {"member_roles", {n.role}}};
  // The scripts tell couchgate's own requests at the recording proxy by the admin's Basic header
  // (a session cookie could be a client's as well); cookie authentication has its own test
  // (test_session.cpp).
  cfg["couchdb"]["auth"] = "basic";
  return cfg;
}
void with_tls(json& cfg, const stage& st) {
  cfg["front"]["tls"] = {{"cert_file", st.path("server.crt")}, {"key_file", st.path("server.key")}};
}

int front_port(const stage& st, couchgate_process& cg) {
  int port = 0;
  bool ok = eventually(
      [&] {
        port = std::atoi(slurp(st.path("front-port")).c_str());
        return port > 0;
      },
      30s);
  REQUIRE_MESSAGE(ok, "front.port_file " << st.path("front-port") << " never written: " << tail(cg.log()));
  return port;
}

// The recording proxy (tests/clients/record-proxy.js) between couchgate and the server.
struct recorder {
  const stage& st;
  std::unique_ptr<child> proc;
  std::string url;
  explicit recorder(const stage& s) : st(s) {
    std::remove(st.path("record-port").c_str());
    proc = std::make_unique<child>(
        std::vector<std::string>{"node", clients_dir + "/record-proxy.js", env().url, st.path("record-port"), st.path("record.jsonl")},
        std::map<std::string, std::string>{}, st.path("record-proxy.out"));
    int port = 0;
    bool ok = eventually(
        [&] {
          port = std::atoi(slurp(st.path("record-port")).c_str());
          return port > 0;
        },
        30s);
    REQUIRE_MESSAGE(ok, "record-proxy did not start: " << slurp(st.path("record-proxy.out")));
    url = "http://127.0.0.1:" + std::to_string(port);
  }
  // COUCHDB_URL in the environment overrides the file's url (the test process has one, which
  // couchgate inherits), so the proxy goes there too.
  std::map<std::string, std::string> couchgate_env() const {
    std::map<std::string, std::string> e{{"COUCHDB_URL", url}};
    if (!env().user.empty()) e["COUCHDB_USER"] = env().user;
    if (!env().password.empty()) e["COUCHDB_PASSWORD"] = env().password;
    return e;
  }
};

json base_params(const stage& st, const std::string& front_url, const std::vector<test_user>& users) {
  json p{{"front", front_url},
         {"ca_file", st.path("ca.crt")},
         {"server", {{"url", env().url}, {"user", env().user}, {"password", env().password}}},
         {"secrets_out", st.path("secrets.json")},
         {"full", std::getenv("COUCHGATE_FULL") != nullptr && *std::getenv("COUCHGATE_FULL") != '\0'}};
  p["users"] = json::array();
  for (const auto& u : users) p["users"].push_back(u.to_json());
  return p;
}

// Runs tests/clients/<script> with the parameters; CHECKs its exit status, showing its output
// (and couchgate's log tail) when it failed.
void run_script(const stage& st, const std::string& script, const json& params, couchgate_process& cg,
                std::chrono::seconds deadline = 600s) {
  std::string pfile = st.path(script + ".params.json");
  { std::ofstream(pfile) << params.dump(2); }
  std::string out = st.path(script + ".out");
  std::remove(out.c_str());
  // The test's CA for a TLS front door (a plain one has none: Node would warn it cannot load it).
  std::map<std::string, std::string> env;
  if (const std::string ca = st.path("ca.crt"); std::filesystem::exists(ca)) env["NODE_EXTRA_CA_CERTS"] = ca;
  child node({"node", clients_dir + "/" + script, pfile}, env, out);
  int status = node.wait(deadline);
  std::string text = node.output();
  MESSAGE(script << " exited " << status << "; its output:\n" << tail(text, 6000));
  CHECK_MESSAGE(status == 0, script << " failed (exit " << status << "); couchgate's log tail:\n" << tail(cg.log(), 3000));
}

// No line couchgate logged (stderr and stdout) contains any of the secrets: the users'
// passwords, the server admin's, every cookie and token the scripts used or received.
void check_log_clean(const stage& st, couchgate_process& cg, const std::vector<test_user>& users) {
  std::vector<std::string> secrets;
  for (const auto& u : users) secrets.push_back(u.password);
  if (!env().password.empty()) secrets.push_back(env().password);
  json extra = json::parse(slurp(st.path("secrets.json")), nullptr, false);
  if (extra.is_array())
    for (const auto& s : extra)
      if (s.is_string() && s.get<std::string>().size() >= 6) secrets.push_back(s.get<std::string>());
  std::string logged = cg.log() + slurp(cg.dir() + "/stdout.log");
  CHECK_MESSAGE(!logged.empty(), "couchgate logged nothing: the scan would prove nothing");
  std::istringstream in(logged);
  std::string line;
  int lines = 0, dirty = 0;
  while (std::getline(in, line)) {
    ++lines;
    for (const auto& s : secrets) {
      if (line.find(s) != std::string::npos) {
        ++dirty;
        // The secret itself is not printed: the line is shown with it masked.
        std::string shown = line;
        for (auto pos = shown.find(s); pos != std::string::npos; pos = shown.find(s)) shown.replace(pos, s.size(), "<SECRET>");
        FAIL_CHECK("couchgate logged a credential: " << shown.substr(0, 500));
      }
    }
  }
  MESSAGE("log scan: " << lines << " lines, " << secrets.size() << " secrets, " << dirty << " hits");
}

}  // namespace

TEST_CASE("front door: PouchDB 9 syncs /me and /shared over TLS; users never see each other's documents") {
  SKIP_WITHOUT_FRONT_DOOR();
  install_client_deps();
  stage st;
  st.make_certificates();
  auto n = fresh_names("front-sync");
  json cfg = front_config(n, st);
  with_tls(cfg, st);
  couchgate_process cg(cfg);
  cg.start();
  REQUIRE_MESSAGE(cg.wait_ready(60s), cg.log());
  auto users = make_users(n, {"alice", "bob"});
  wait_provisioned(users, cg);
  REQUIRE_MESSAGE(eventually([&] { return couch().get("/" + enc(n.state + "-shared")).status == 200; }, 60s), tail(cg.log()));
  int port = front_port(st, cg);

  json p = base_params(st, "https://127.0.0.1:" + std::to_string(port), users);
  p["shared"] = n.state + "-shared";
  p["bob_marker"] = "BOB-MARKER-" + random_hex(8);
  run_script(st, "sync.js", p, cg);
  CHECK(cg.running());
  check_log_clean(st, cg, users);
  CHECK(cg.terminate() == 0);
}

TEST_CASE("front door: PouchDB pulls a burst of attachments past the per-user cap; 1 MiB transfer times") {
  SKIP_WITHOUT_FRONT_DOOR();
  install_client_deps();
  stage st;
  st.make_certificates();
  auto n = fresh_names("front-burst");
  json cfg = front_config(n, st);
  with_tls(cfg, st);
  cfg["front"]["allow_insecure"] = true;  // plain HTTP on the same port too, to time it without TLS
  // PouchDB fetches a batch's attachments all at once (here 44 requests): far above this cap.
  cfg["front"]["max_requests_per_user"] = 2;
  couchgate_process cg(cfg);
  cg.start();
  REQUIRE_MESSAGE(cg.wait_ready(60s), cg.log());
  auto users = make_users(n, {"alice"});
  wait_provisioned(users, cg);
  const std::string port = std::to_string(front_port(st, cg));

  json p = base_params(st, "https://127.0.0.1:" + port, users);
  p["front_plain"] = "http://127.0.0.1:" + port;
  p["small"] = 40;
  p["big"] = p["full"].get<bool>() ? 20 : 4;
  p["timing_out"] = st.path("timing.json");
  run_script(st, "burst.js", p, cg, 300s);
  MESSAGE("1 MiB attachment GETs, medians: " << slurp(st.path("timing.json")));
  CHECK(cg.metric("couchgate_front_user_limited_total").value_or(-1) == 0);
  CHECK(cg.running());
  check_log_clean(st, cg, users);
  CHECK(cg.terminate() == 0);
}

TEST_CASE("front door: crafted paths never reach another user's database; plain HTTP on the TLS port is refused") {
  SKIP_WITHOUT_FRONT_DOOR();
  install_client_deps();
  stage st;
  st.make_certificates();
  recorder rec(st);
  auto n = fresh_names("front-paths");
  json cfg = front_config(n, st);
  with_tls(cfg, st);
  // Every selected user is a member of every user database, and admin of their own (to write
  // a design document): CouchDB's _security alone would let alice read bob's data, so only
  // couchgate's routing keeps her out (paths.js checks that control first).
  cfg["provisioning"]["security"] = {{"owner_is_admin", true}, {"member_roles", {n.role}}};
  couchgate_process cg(cfg, rec.couchgate_env());
  cg.start();
  REQUIRE_MESSAGE(cg.wait_ready(60s), cg.log());
  auto users = make_users(n, {"alice", "bob"});
  wait_provisioned(users, cg);
  int port = front_port(st, cg);

  std::string marker = "BOB-MARKER-" + random_hex(8);
  auto bob_doc = couch().put("/" + enc(users[1].db) + "/bob-private", json{{"secret", marker}});
  REQUIRE_MESSAGE(bob_doc.status == 201, bob_doc.raw);
  REQUIRE(couch().put("/" + enc(users[0].db) + "/alice-doc", json{{"mine", true}}).status == 201);

  json p = base_params(st, "https://127.0.0.1:" + std::to_string(port), users);
  p["bob_marker"] = marker;
  p["alice_marker"] = "ALICE-MARKER-" + random_hex(8);
  p["bob_doc"] = "bob-private";
  p["bob_rev"] = bob_doc.body["rev"];
  p["record_file"] = st.path("record.jsonl");
  run_script(st, "paths.js", p, cg, 300s);
  CHECK(cg.running());
  check_log_clean(st, cg, users);
  CHECK(cg.terminate() == 0);
}

TEST_CASE("front door behind a TLS-terminating proxy: the scheme header counts only from trusted peers") {
  SKIP_WITHOUT_FRONT_DOOR();
  install_client_deps();
  stage st;
  recorder rec(st);
  auto n = fresh_names("front-scheme");
  json cfg = front_config(n, st);
  cfg["front"]["require_secure"] = true;

  struct variant {
    std::string label;
    json trusted;
    std::string header;  // empty: the default (X-Forwarded-Proto)
    std::string expect;
  };
  const std::vector<variant> variants = {
      {"trusted proxy on loopback", {"127.0.0.1/32", "::1/128"}, "", "honoured"},
      {"proxy outside front.trusted_proxies", {"10.255.0.0/16"}, "", "ignored"},
      {"configured scheme_header", {"127.0.0.1/32"}, "X-Test-Scheme", "honoured"},
  };
  std::vector<test_user> users;
  for (const auto& v : variants) {
    CAPTURE(v.label);
    json c = cfg;
    c["front"]["trusted_proxies"] = v.trusted;
    if (!v.header.empty()) c["front"]["scheme_header"] = v.header;
    std::remove(st.path("front-port").c_str());
    couchgate_process cg(c, rec.couchgate_env());
    cg.start();
    REQUIRE_MESSAGE(cg.wait_ready(60s), cg.log());
    if (users.empty()) users = make_users(n, {"alice"});
    wait_provisioned(users, cg);
    int port = front_port(st, cg);
    json p = base_params(st, "http://127.0.0.1:" + std::to_string(port), users);
    p["record_file"] = st.path("record.jsonl");
    p["expect"] = v.expect;
    if (!v.header.empty()) p["header"] = v.header;
    run_script(st, "scheme.js", p, cg, 120s);
    CHECK(cg.running());
    check_log_clean(st, cg, users);
    CHECK(cg.terminate() == 0);
  }
}

TEST_CASE("front door without TLS: plain HTTP is refused unless front.allow_insecure") {
  SKIP_WITHOUT_FRONT_DOOR();
  install_client_deps();
  stage st;
  recorder rec(st);
  auto n = fresh_names("front-plain");
  json cfg = front_config(n, st);
  std::vector<test_user> users;

  SUBCASE("neither TLS nor allow_insecure nor require_secure") {
    // Either the configuration is refused up front (exit 2, naming the front section), or the
    // daemon runs and refuses every plain request without forwarding its credential.
    { std::ofstream(st.path("plain.yaml")) << cfg.dump(2); }
    auto check = run_couchgate({"check-config", st.path("plain.yaml")});
    if (check.status == 2) {
      CHECK_MESSAGE(check.err.find("front") != std::string::npos, check.err);
      MESSAGE("check-config refuses a plain front door without allow_insecure: " << tail(check.err, 400));
      return;
    }
    couchgate_process cg(cfg, rec.couchgate_env());
    cg.start();
    REQUIRE_MESSAGE(cg.wait_ready(60s), cg.log());
    users = make_users(n, {"alice"});
    wait_provisioned(users, cg);
    json p = base_params(st, "http://127.0.0.1:" + std::to_string(front_port(st, cg)), users);
    p["record_file"] = st.path("record.jsonl");
    p["expect"] = "refused";
    run_script(st, "scheme.js", p, cg, 120s);
    check_log_clean(st, cg, users);
    CHECK(cg.terminate() == 0);
  }
  SUBCASE("allow_insecure: true") {
    cfg["front"]["allow_insecure"] = true;
    couchgate_process cg(cfg, rec.couchgate_env());
    cg.start();
    REQUIRE_MESSAGE(cg.wait_ready(60s), cg.log());
    users = make_users(n, {"bea"});
    wait_provisioned(users, cg);
    json p = base_params(st, "http://127.0.0.1:" + std::to_string(front_port(st, cg)), users);
    p["record_file"] = st.path("record.jsonl");
    p["expect"] = "open";
    run_script(st, "scheme.js", p, cg, 120s);
    check_log_clean(st, cg, users);
    CHECK(cg.terminate() == 0);
  }
}

// ---------------------------------------------------------------------------------------------
// Parked live feeds (issue 14): tests/clients/live.js plays the clients.

namespace {

long rss_kib(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  }
  return -1;
}

// A plain front door with a small upstream pool (the cap the sockets are checked against).
json live_config(const names& n, const stage& st, int pool) {
  json cfg = front_config(n, st);
  cfg["front"]["allow_insecure"] = true;
  cfg["front"]["upstream"] = {{"max_connections", pool}};
  cfg["front"]["feed_sweep_interval"] = "200ms";
  cfg["fanin"]["max_connections"] = 3;  // couchgate's own pool (fan-in, provisioning, the feed sweep): its minimum
  return cfg;
}

json live_params(const stage& st, int port, couchgate_process& cg, const std::vector<test_user>& users,
                 const std::string& mode) {
  json p = base_params(st, "http://127.0.0.1:" + std::to_string(port), users);
  p["admin"] = "http://127.0.0.1:" + std::to_string(cg.admin_port());
  p["mode"] = mode;
  p["log_file"] = cg.dir() + "/stderr.log";
  return p;
}

}  // namespace

TEST_CASE("live feeds: 50 PouchDB live syncs park in couchgate; every write reaches its own client over a bounded pool") {
  SKIP_WITHOUT_FRONT_DOOR();
  install_client_deps();
  stage st;
  auto n = fresh_names("live-many");
  const int pool = 4;
  const bool full = std::getenv("COUCHGATE_FULL") != nullptr && *std::getenv("COUCHGATE_FULL") != '\0';
  const int clients = full ? 200 : 50;
  const json cfg = live_config(n, st, pool);
  couchgate_process cg(cfg);
  cg.start();
  REQUIRE_MESSAGE(cg.wait_ready(60s), cg.log());
  std::vector<std::string> stems;
  for (int i = 0; i < clients; ++i) stems.push_back("u" + std::to_string(i));
  auto users = make_users(n, stems);
  wait_provisioned(users, cg);
  const int port = front_port(st, cg);
  const long rss_before = rss_kib(cg.pid());

  // Sampled from /proc while the clients run: couchgate's sockets to the server's port (its
  // own pool included: fanin.max_connections plus the change feeds), the front pool's own count,
  // and memory once every feed is parked.
  std::atomic<bool> done{false};
  int max_sockets = 0;
  std::string at_max;  // what the pools said when the most sockets were seen
  double max_front_open = 0, max_parked = 0;
  long rss_parked = -1;
  std::thread sampler([&] {
    while (!done.load()) {
      if (const int now = connections_to_server(cg.pid()); now > max_sockets) {
        max_sockets = now;
        at_max = "couchgate_couchdb_connections " +
                 std::to_string(cg.metric("couchgate_couchdb_connections").value_or(-1)) +
                 ", couchgate_front_upstream_open " + std::to_string(cg.metric("couchgate_front_upstream_open").value_or(-1));
      }
      max_front_open = std::max(max_front_open, cg.metric("couchgate_front_upstream_open").value_or(0));
      const double parked = cg.metric("couchgate_front_feeds_parked").value_or(0);
      if (parked >= max_parked) {
        max_parked = parked;
        if (parked >= clients) rss_parked = std::max(rss_parked, rss_kib(cg.pid()));
      }
      std::this_thread::sleep_for(50ms);
    }
  });
  json p = live_params(st, port, cg, users, "many");
  p["writes"] = 3;
  run_script(st, "live.js", p, cg, 180s);
  done = true;
  sampler.join();

  // fanin.max_connections for work plus a socket per change feed (gateway/connection_budget.hpp).
  const int fanin_pool = static_cast<int>(cg.metric("couchgate_couchdb_connections_max").value_or(0));
  CHECK(fanin_pool >= cfg["fanin"]["max_connections"].get<int>());
  CHECK(fanin_pool <= cfg["fanin"]["max_connections"].get<int>() + 2);
  MESSAGE("upstream sockets: at most " << max_sockets << " from couchgate (front pool " << pool << " + fan-in pool "
                                       << fanin_pool << "); front pool open at most " << max_front_open
                                       << "; feeds parked at most " << max_parked << "; at the most: " << at_max
                                       << "; peaks: couchgate_couchdb_connections_peak "
                                       << cg.metric("couchgate_couchdb_connections_peak").value_or(-1));
  // Every client parked at once is live.js's own check (it reads the gauge until it shows them
  // all, then writes: run_script fails on any failed check). This sampler may miss that moment
  // (it can be milliseconds before the first write wakes a feed; under ASan a sample takes
  // long): it must at least have seen feeds parked.
  CHECK(max_parked > 0);
  CHECK(max_front_open <= pool);
  CHECK(cg.metric("couchgate_front_upstream_peak").value_or(99) <= pool);
  CHECK(max_sockets <= pool + fanin_pool);
  CHECK(max_sockets < clients);  // a socket per waiting client would be `clients`
  CHECK(cg.metric("couchgate_front_feed_wakes_total").value_or(0) >= clients);
  CHECK(cg.metric("couchgate_front_feed_wake_fetches_total").value_or(0) >= clients);
  // The wakes that brought rows are timed (announced -> answer written), the pool's waits too.
  CHECK(cg.metric("couchgate_front_feed_wake_seconds_count").value_or(0) >= 1);
  // Its parts: the turn to read and the read, observed for each delivering read.
  CHECK(cg.metric("couchgate_front_feed_turn_wait_seconds_count").value_or(0) >= 1);
  CHECK(cg.metric("couchgate_front_feed_read_seconds_count").value_or(0) >= 1);
  CHECK(cg.metric("couchgate_front_upstream_wait_seconds_count").value_or(0) >= clients);
  if (rss_parked > 0 && rss_before > 0) {
    MESSAGE("memory: RSS " << rss_before << " KiB before, " << rss_parked << " KiB with " << clients
                           << " feeds parked: about " << (rss_parked - rss_before) * 1024 / clients
                           << " bytes per parked client (upper bound: includes the syncs' first reads); feed state estimate "
                           << cg.metric("couchgate_front_feed_bytes_estimate").value_or(0) << " bytes open now");
  }
  CHECK(cg.running());
  check_log_clean(st, cg, users);
  CHECK(cg.terminate() == 0);
}

TEST_CASE("live feeds: many clients connecting at once queue for the pool: no 503, never more sockets than the pool") {
  SKIP_WITHOUT_FRONT_DOOR();
  install_client_deps();
  stage st;
  auto n = fresh_names("live-burst");
  json cfg = live_config(n, st, 1);
  cfg["front"]["upstream"]["wait_timeout"] = "0ms";  // a normal request would get 503 at once
  couchgate_process cg(cfg);
  cg.start();
  REQUIRE_MESSAGE(cg.wait_ready(60s), cg.log());
  std::vector<std::string> stems;
  for (int i = 0; i < 30; ++i) stems.push_back("b" + std::to_string(i));
  auto users = make_users(n, stems);
  wait_provisioned(users, cg);
  run_script(st, "live.js", live_params(st, front_port(st, cg), cg, users, "burst"), cg, 120s);
  CHECK(cg.metric("couchgate_front_upstream_peak").value_or(99) <= 1);
  CHECK(cg.running());
  check_log_clean(st, cg, users);
  CHECK(cg.terminate() == 0);
}

namespace {
// A parked PouchDB live sync whose credential stops being valid on the server (`how`: the
// password changes, or the user is deleted) must end with a 401. PouchDB's live pull sends
// `heartbeat=10000` and no timeout, so the parked feed never ends by itself: the 401 comes from
// couchgate asking about the credential again, at the session cache lifetime (`ttl`) at the
// latest, or when the provisioner's `_users` feed reads the user's changed document.
void check_revoked_while_parked(const std::string& how, const std::string& ttl, int deadline_ms) {
  install_client_deps();
  stage st;
  auto n = fresh_names("live-revoke");
  json cfg = live_config(n, st, 4);
  cfg["front"]["session_cache_ttl"] = ttl;
  cfg["front"]["route_cache_ttl"] = ttl;
  cfg["provisioning"]["on_delete"] = "keep";  // a deleted user's database stays: only the credential goes
  couchgate_process cg(cfg);
  cg.start();
  REQUIRE_MESSAGE(cg.wait_ready(60s), cg.log());
  auto users = make_users(n, {"carol"});
  wait_provisioned(users, cg);
  json p = live_params(st, front_port(st, cg), cg, users, "revoke");
  p["revoke"] = how;
  p["deadline_ms"] = deadline_ms;
  run_script(st, "live.js", p, cg, 120s);
  CHECK(cg.log().find("credential no longer accepted; live feed ended with 401") != std::string::npos);
  CHECK(cg.running());
  check_log_clean(st, cg, users);
  CHECK(cg.terminate() == 0);
}
}  // namespace

TEST_CASE("live feeds: a parked client whose password changes gets 401 within the session cache lifetime") {
  SKIP_WITHOUT_FRONT_DOOR();
  check_revoked_while_parked("password", "1s", 30000);
}

TEST_CASE("live feeds: a parked client whose user is deleted gets 401 within the session cache lifetime") {
  SKIP_WITHOUT_FRONT_DOOR();
  check_revoked_while_parked("delete", "1s", 30000);
}

// With a session cache lifetime of 10 minutes the only way to a 401 within the deadline is the
// changed `_users` document (front_door::user_changed): the check waits 1 s for CouchDB's own
// credential cache, then goes as a normal request. (Checked: the password case fails without
// it. A deleted user's feed may also be woken by the provisioner's `_security` rewrite of the
// database, whose read gets the 401 too.)
TEST_CASE("live feeds: a parked client gets 401 soon after its password changes, long before the session cache lifetime") {
  SKIP_WITHOUT_FRONT_DOOR();
  check_revoked_while_parked("password", "10m", 20000);
}

TEST_CASE("live feeds: a parked client gets 401 soon after its user is deleted, long before the session cache lifetime") {
  SKIP_WITHOUT_FRONT_DOOR();
  check_revoked_while_parked("delete", "10m", 20000);
}

TEST_CASE("live feeds: a write between the first check and the park is delivered; filters, continuous, eventsource, cap") {
  SKIP_WITHOUT_FRONT_DOOR();
  install_client_deps();
  stage st;
  auto n = fresh_names("live-race");
  json cfg = live_config(n, st, 4);
  cfg["front"]["max_parked_per_user"] = 2;
  couchgate_process cg(cfg, {{"COUCHGATE_TEST_FEED_CHECK_DELAY_MS", "1500"}});
  cg.start();
  REQUIRE_MESSAGE(cg.wait_ready(60s), cg.log());
  auto users = make_users(n, {"dave"});
  wait_provisioned(users, cg);
  run_script(st, "live.js", live_params(st, front_port(st, cg), cg, users, "race"), cg, 120s);
  CHECK(cg.running());
  check_log_clean(st, cg, users);
  CHECK(cg.terminate() == 0);
}
