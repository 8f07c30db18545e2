// Implementation of the integration test harness (see harness.hpp).
#include "tests/support/harness.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <unordered_set>

#include "policy/naming.hpp"

namespace couchgate::test {

namespace {
std::string getenv_or(const char* k, const std::string& d) {
  const char* v = std::getenv(k);
  return v && *v ? std::string(v) : d;
}
std::string read_file(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}
}  // namespace

namespace {
std::atomic<const server_env*> overridden{nullptr};
}  // namespace

server_override::server_override(server_env e) : env_(std::move(e)) { overridden = &env_; }
server_override::~server_override() { overridden = nullptr; }

const server_env& env() {
  if (const server_env* o = overridden.load()) return *o;
  static server_env e = [] {
    server_env s;
    s.url = getenv_or("COUCHDB_URL", "");
    if (s.url.empty()) throw std::runtime_error("COUCHDB_URL is not set: run the tests through tests/run.sh");
    s.user = getenv_or("COUCHDB_USER", "");
    s.password = getenv_or("COUCHDB_PASSWORD", "");
    // Credentials inside the URL: split them out.
    auto scheme = s.url.find("://");
    auto at = s.url.find('@', scheme + 3);
    if (at != std::string::npos) {
      std::string userinfo = s.url.substr(scheme + 3, at - scheme - 3);
      auto colon = userinfo.find(':');
      if (s.user.empty()) s.user = userinfo.substr(0, colon);
      if (s.password.empty() && colon != std::string::npos) s.password = userinfo.substr(colon + 1);
      s.url = s.url.substr(0, scheme + 3) + s.url.substr(at + 1);
    }
    while (!s.url.empty() && s.url.back() == '/') s.url.pop_back();
    std::string hostport = s.url.substr(scheme + 3);
    auto slash = hostport.find('/');
    if (slash != std::string::npos) hostport = hostport.substr(0, slash);
    auto colon = hostport.rfind(':');
    s.host = hostport.substr(0, colon);
    s.port = colon == std::string::npos ? 80 : std::stoi(hostport.substr(colon + 1));
    s.pouchdb = getenv_or("COUCHGATE_TEST_SERVER", "") == "pouchdb";
    register_basic_secret(s.user, s.password);
    return s;
  }();
  return e;
}

std::string b64(const std::string& s) {
  static const char* t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::size_t i = 0;
  for (; i + 2 < s.size(); i += 3) {
    unsigned v = (unsigned char)s[i] << 16 | (unsigned char)s[i + 1] << 8 | (unsigned char)s[i + 2];
    out += {t[v >> 18], t[(v >> 12) & 63], t[(v >> 6) & 63], t[v & 63]};
  }
  if (i + 1 == s.size()) {
    unsigned v = (unsigned char)s[i] << 16;
    out += {t[v >> 18], t[(v >> 12) & 63], '=', '='};
  } else if (i + 2 == s.size()) {
    unsigned v = (unsigned char)s[i] << 16 | (unsigned char)s[i + 1] << 8;
    out += {t[v >> 18], t[(v >> 12) & 63], t[(v >> 6) & 63], '='};
  }
  return out;
}

void register_secret(const std::string& secret) {
  static std::mutex mu;
  const char* file = std::getenv("COUCHGATE_TEST_SECRETS");
  if (file == nullptr || *file == '\0' || secret.size() < 6 || secret.find_first_of("\r\n") != std::string::npos) return;
  std::lock_guard lk(mu);
  std::ofstream(file, std::ios::app) << secret << "\n";
}

void register_basic_secret(const std::string& user, const std::string& password) {
  if (password.empty()) return;
  register_secret(password);
  register_secret(b64(user + ":" + password));
}

const std::string& signup_password() {
  static const std::string password = [] {
    std::string p = "correct-horse-1";
    register_secret(p);
    return p;
  }();
  return password;
}

std::string make_temp_dir(const std::string& stem) {
  const char* run = std::getenv("COUCHGATE_TEST_RUN_DIR");
  std::string tmpl = std::string(run != nullptr && *run != '\0' ? run : "/tmp") + "/" + stem + "-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr) throw std::runtime_error("mkdtemp " + tmpl + " failed");
  return buf.data();
}

couch::couch() : user_(env().user), password_(env().password) {}
couch::couch(std::string user, std::string password) : user_(std::move(user)), password_(std::move(password)) {
  register_basic_secret(user_, password_);
}

reply couch::call(const std::string& method, const std::string& target, const std::string* body) const {
  httplib::Client cli(env().host, env().port);
  cli.set_connection_timeout(10);
  cli.set_read_timeout(60);
  if (!user_.empty()) cli.set_basic_auth(user_.c_str(), password_.c_str());
  httplib::Headers h{{"Accept", "application/json"}};
  httplib::Result res{nullptr, httplib::Error::Unknown};
  if (method == "GET") res = cli.Get(target.c_str(), h);
  else if (method == "DELETE") res = cli.Delete(target.c_str(), h);
  else if (method == "PUT") res = cli.Put(target.c_str(), h, body ? *body : std::string(), "application/json");
  else res = cli.Post(target.c_str(), h, body ? *body : std::string(), "application/json");
  reply r;
  if (!res) return r;
  r.status = res->status;
  r.raw = res->body;
  r.body = json::parse(res->body, nullptr, false);
  return r;
}

reply couch::get(const std::string& target) const { return call("GET", target, nullptr); }
reply couch::put(const std::string& target, const json& body) const {
  std::string b = body.dump();
  return call("PUT", target, &b);
}
reply couch::post(const std::string& target, const json& body) const {
  std::string b = body.dump();
  return call("POST", target, &b);
}
reply couch::del(const std::string& target) const { return call("DELETE", target, nullptr); }

std::string enc(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') out.push_back(static_cast<char>(c));
    else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  return out;
}

const std::string& run_token() {
  static const std::string run = [] {
    std::mt19937 rng(std::random_device{}());
    std::string s;
    for (int i = 0; i < 6; ++i) s.push_back("abcdefghijklmnopqrstuvwxyz"[rng() % 26]);
    return s;
  }();
  return run;
}

std::string unique(const std::string& stem) {
  static std::atomic<int> n{0};
  return stem + "-" + run_token() + std::to_string(++n);
}

bool made_by_run(const std::string& name, const std::string& token) {
  // unique() writes "-<token><n>": the token after a dash and before a digit, as it is or
  // hex-encoded (couch_peruser's userdb-<hex> naming of a user name made by unique()).
  for (std::size_t at = name.find("-" + token); at != std::string::npos; at = name.find("-" + token, at + 1)) {
    const auto after = at + 1 + token.size();
    if (after < name.size() && std::isdigit(static_cast<unsigned char>(name[after]))) return true;
  }
  const auto hex = policy::hex_encode("-" + token);
  for (std::size_t at = name.find(hex); at != std::string::npos; at = name.find(hex, at + 1)) {
    const auto after = at + hex.size();
    if (after + 1 < name.size() && name[after] == '3' && std::isdigit(static_cast<unsigned char>(name[after + 1])))
      return true;
  }
  return false;
}

leftovers remove_leftovers(const std::string& token) {
  leftovers out;
  const couch c;
  if (auto all = c.get("/_all_dbs"); all.status == 200 && all.body.is_array()) {
    for (const auto& db : all.body) {
      if (!db.is_string() || !made_by_run(db.get<std::string>(), token)) continue;
      const auto r = c.del("/" + enc(db.get<std::string>()));
      (r.status == 200 || r.status == 202 || r.status == 404 ? out.databases : out.failed) += 1;
    }
  } else {
    ++out.failed;
  }
  const std::string users = "/_users/_all_docs?startkey=%22org.couchdb.user%3A%22&endkey=%22org.couchdb.user%3B%22";
  if (auto all = c.get(users); all.status == 200 && all.body.is_object() && all.body["rows"].is_array()) {
    json gone = json::array();
    for (const auto& row : all.body["rows"]) {
      if (!row.is_object() || !row["id"].is_string() || !row["value"].is_object() || !row["value"]["rev"].is_string())
        continue;
      if (!made_by_run(row["id"].get<std::string>(), token)) continue;
      gone.push_back({{"_id", row["id"]}, {"_rev", row["value"]["rev"]}, {"_deleted", true}});
    }
    if (!gone.empty()) {
      const auto r = c.post("/_users/_bulk_docs", json{{"docs", gone}});
      if (r.status == 201 && r.body.is_array()) {
        for (const auto& one : r.body) (one.is_object() && one.contains("ok") ? out.users : out.failed) += 1;
      } else {
        out.failed += static_cast<int>(gone.size());
      }
    }
  } else {
    ++out.failed;
  }
  return out;
}

bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds deadline) {
  auto end = std::chrono::steady_clock::now() + deadline;
  for (;;) {
    if (pred()) return true;
    if (std::chrono::steady_clock::now() >= end) return pred();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

bool server_alive() { return couch().get("/").status == 200; }

reply create_user(const std::string& name, const std::vector<std::string>& roles, const std::string& password) {
  register_basic_secret(name, password);
  json doc{{"_id", "org.couchdb.user:" + name}, {"name", name}, {"type", "user"}, {"roles", roles}, {"password", password}};
  return couch().put("/_users/" + enc("org.couchdb.user:" + name), doc);
}

bool db_usable_by(const std::string& db, const std::string& user) {
  auto sec = couch().get("/" + enc(db) + "/_security");
  if (sec.status != 200 || !sec.body.is_object()) return false;
  for (const char* part : {"members", "admins"}) {
    const auto it = sec.body.find(part);
    if (it == sec.body.end() || !it->is_object()) continue;
    const auto names = it->find("names");
    if (names == it->end() || !names->is_array()) continue;
    for (const auto& n : *names)
      if (n.is_string() && n.get<std::string>() == user) return true;
  }
  return false;
}

reply delete_user(const std::string& name) {
  couch c;
  auto cur = c.get("/_users/" + enc("org.couchdb.user:" + name));
  if (cur.status != 200) return cur;
  return c.del("/_users/" + enc("org.couchdb.user:" + name) + "?rev=" + enc(cur.body["_rev"].get<std::string>()));
}

names fresh_names(const std::string& stem) {
  std::string u = unique(stem);
  return names{"t" + u + "-userdb-", "t" + u + "-state", "t" + u + "-central", "role-" + u};
}

json base_config(const names& n) {
  json cfg{
      {"couchdb", {{"request_timeout", "30s"}, {"feed_timeout", "10s"}, {"heartbeat", "1s"}}},
      {"state_db", n.state},
      {"provisioning",
       {{"db_prefix", n.prefix}, {"select", {{"roles_any", {n.role}}}}, {"reconcile_interval", "10m"}, {"batch", 200}}},
      {"fanin", {{"central_db", n.central}, {"max_connections", 8}, {"sweep_interval", "200ms"}, {"sweep_rate", 2000}}},
      {"admin_api", {{"address", "127.0.0.1"}, {"port", 0}}},
      {"log", {{"level", "debug"}}},
  };
  // pouchdb-server gap: its validation plugin replaces the `_revisions` of every write into a
  // database that has a validate_doc_update with the stored document's history, so a
  // new_edits:false update of an existing document is silently dropped (201 []) and new ones lose
  // their history. CouchDB runs the guard correctly, so there every test runs with it (it is off
  // by default); on pouchdb only the guard test turns it on.
  cfg["fanin"]["central_guard"] = !env().pouchdb;
  return cfg;
}

couchgate_process::couchgate_process(json config, std::map<std::string, std::string> extra_env)
    : env_(std::move(extra_env)) {
  dir_ = make_temp_dir("couchgate-test");
  write_config(std::move(config));
}

void couchgate_process::write_config(json config) {
  config_ = std::move(config);
  config_["admin_api"]["port_file"] = dir_ + "/port";
  // Written whole, then renamed: a reload never reads half a file.
  { std::ofstream(dir_ + "/config.yaml.new") << config_.dump(2) << "\n"; }
  std::rename((dir_ + "/config.yaml.new").c_str(), (dir_ + "/config.yaml").c_str());
}

void couchgate_process::reload(json config) {
  write_config(std::move(config));
  if (pid_ > 0) ::kill(pid_, SIGHUP);
}

couchgate_process::~couchgate_process() {
  if (pid_ > 0) kill9();
}

void couchgate_process::start() {
  std::remove((dir_ + "/port").c_str());
  port_ = 0;
  pid_t child = fork();
  if (child == 0) {
    int err = open((dir_ + "/stderr.log").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    int out = open((dir_ + "/stdout.log").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(err, 2);
    dup2(out, 1);
    for (const auto& [k, v] : env_) setenv(k.c_str(), v.c_str(), 1);
    std::string cfg = dir_ + "/config.yaml";
    const char* bin = couchgate_binary();
    execl(bin, bin, "run", "--config", cfg.c_str(), static_cast<char*>(nullptr));
    // Said where the test shows the log (e.g. errno 26, ETXTBSY: the binary is being rebuilt);
    // no allocation after fork.
    char why[] = "harness: exec of the couchgate binary failed: errno 000\n";
    const int e = errno;
    const std::size_t at = sizeof(why) - 5;
    why[at] = static_cast<char>('0' + e / 100 % 10);
    why[at + 1] = static_cast<char>('0' + e / 10 % 10);
    why[at + 2] = static_cast<char>('0' + e % 10);
    (void)!write(2, why, sizeof(why) - 1);
    _exit(127);
  }
  pid_ = child;
}

bool couchgate_process::running() {
  if (pid_ <= 0) return false;
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) == pid_) {
    pid_ = -1;
    return false;
  }
  return true;
}

bool couchgate_process::wait_ready(std::chrono::milliseconds deadline) {
  bool exited = false;
  const bool ready = eventually(
      [this, &exited] {
        if (!running()) return exited = true;  // no use waiting longer
        if (port_ == 0) {
          std::string p = read_file(dir_ + "/port");
          if (p.empty()) return false;
          port_ = std::atoi(p.c_str());
        }
        return admin_get("/readyz").status == 200;
      },
      deadline);
  return ready && !exited;
}

void couchgate_process::kill9() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

std::optional<int> couchgate_process::wait_exit(std::chrono::milliseconds deadline) {
  if (pid_ <= 0) return std::nullopt;
  int status = 0;
  const auto end = std::chrono::steady_clock::now() + deadline;
  while (waitpid(pid_, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > end) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  pid_ = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

int couchgate_process::terminate() {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  int status = 0;
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (waitpid(pid_, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > end) {
      ::kill(pid_, SIGKILL);
      waitpid(pid_, &status, 0);
      pid_ = -1;
      return -9;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  pid_ = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

reply couchgate_process::admin_get(const std::string& target) const {
  reply r;
  if (port_ == 0) return r;
  httplib::Client cli("127.0.0.1", port_);
  cli.set_read_timeout(30);
  auto res = cli.Get(target.c_str());
  if (!res) return r;
  r.status = res->status;
  r.raw = res->body;
  r.body = json::parse(res->body, nullptr, false);
  return r;
}

std::optional<double> couchgate_process::metric(const std::string& name, const std::string& labels) const {
  auto r = admin_get("/metrics");
  if (r.status != 200) return std::nullopt;
  std::istringstream in(r.raw);
  std::string line;
  std::optional<double> sum;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    auto sp = line.rfind(' ');
    std::string key = line.substr(0, sp);
    std::string base = key.substr(0, key.find('{'));
    if (base != name) continue;
    if (!labels.empty() && key.find(labels) == std::string::npos) continue;
    sum = sum.value_or(0) + std::stod(line.substr(sp + 1));
  }
  return sum;
}

std::string couchgate_process::log() const { return read_file(dir_ + "/stderr.log"); }

long proc_status_kib(pid_t pid, const std::string& field) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::atol(line.c_str() + field.size() + 1);
  }
  return -1;
}

int count_lines(const std::string& text, const std::string& needle) {
  int n = 0;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) n += line.find(needle) != std::string::npos ? 1 : 0;
  return n;
}

std::unordered_set<std::string> socket_inodes(pid_t pid, int* fd_count) {
  std::unordered_set<std::string> out;
  std::string dir = pid == 0 ? std::string("/proc/self/fd") : "/proc/" + std::to_string(pid) + "/fd";
  int n = 0;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] == '.') continue;
      ++n;
      char buf[128];
      std::string link = dir + "/" + e->d_name;
      ssize_t len = readlink(link.c_str(), buf, sizeof buf - 1);
      if (len <= 0) continue;
      buf[len] = 0;
      std::string target(buf);
      if (target.rfind("socket:[", 0) == 0) out.insert(target.substr(8, target.size() - 9));
    }
    closedir(d);
  } else {
    n = -1;
  }
  if (fd_count) *fd_count = n;
  return out;
}

std::vector<std::string> connections_to_server_inodes() {
  char port_hex[8];
  std::snprintf(port_hex, sizeof port_hex, "%04X", env().port);
  // The kernel writes /proc/net/tcp a page at a time while connections come and go: one read can
  // list a socket twice (seen as couchgate holding 10 sockets while ss and its own pool counted
  // 8). Each inode is listed once.
  std::unordered_set<std::string> seen;
  std::vector<std::string> out;
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream f(table);
    std::string line;
    std::getline(f, line);  // header
    while (std::getline(f, line)) {
      std::istringstream ls(line);
      std::string sl, local, remote, st, queues, tr, retr, uid, timeout, inode;
      ls >> sl >> local >> remote >> st >> queues >> tr >> retr >> uid >> timeout >> inode;
      if (st != "01") continue;  // ESTABLISHED
      auto colon = remote.rfind(':');
      if (colon == std::string::npos || remote.substr(colon + 1) != port_hex) continue;  // client side only
      if (inode == "0" || !seen.insert(inode).second) continue;
      out.push_back(inode);
    }
  }
  return out;
}

int connections_to_server(pid_t pid) {
  auto held = socket_inodes(pid);
  int n = 0;
  for (const auto& inode : connections_to_server_inodes()) n += held.count(inode) ? 1 : 0;
  return n;
}

const char* couchgate_binary() {
  const char* bin = std::getenv("COUCHGATE_TEST_BINARY");
  return bin && *bin ? bin : COUCHGATE_BINARY;
}

run_result run_couchgate(const std::vector<std::string>& args, const std::map<std::string, std::string>& extra_env) {
  std::string dir = make_temp_dir("couchgate-run");
  pid_t child = fork();
  if (child == 0) {
    int out = open((dir + "/out").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int err = open((dir + "/err").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(out, 1);
    dup2(err, 2);
    for (const auto& [k, v] : extra_env) setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(couchgate_binary()));
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(couchgate_binary(), argv.data());
    _exit(127);
  }
  int status = 0;
  waitpid(child, &status, 0);
  run_result r;
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = read_file(dir + "/out");
  r.err = read_file(dir + "/err");
  return r;
}


struct paced_writers::counters {
  std::atomic<bool> writing{true};
  std::atomic<int> written{0}, refused{0};
};

paced_writers::paced_writers(const std::vector<std::string>& dbs, std::chrono::milliseconds pace)
    : counts_(std::make_shared<counters>()) {
  for (const auto& db : dbs) {
    threads_.emplace_back([counts = counts_, db, pace] {
      couch c;
      for (int k = 0; counts->writing.load(); ++k) {
        if (c.put("/" + enc(db) + "/w" + std::to_string(k), json{{"k", k}}).status == 201) ++counts->written;
        else ++counts->refused;  // e.g. the server is down: that write is not made
        std::this_thread::sleep_for(pace);  // pacing of a writer, not a wait for a condition
      }
    });
  }
}

paced_writers::~paced_writers() { stop(); }

void paced_writers::stop() {
  counts_->writing = false;
  for (auto& t : threads_)
    if (t.joinable()) t.join();
}

int paced_writers::written() const { return counts_->written.load(); }
int paced_writers::refused() const { return counts_->refused.load(); }

}  // namespace couchgate::test
