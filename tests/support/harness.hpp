#pragma once
// Test-side support for integration tests: a small CouchDB client of its own (cpp-httplib, not
// couchgate's code, so a bug in couchgate's client cannot hide itself), unique names, polling
// with deadlines, a couchgate child process, and counting a process's sockets from /proc.
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

namespace couchgate::test {

using json = nlohmann::json;

struct server_env {
  std::string url;       // http://host:port, no credentials
  std::string host;
  int port = 0;
  std::string user, password;
  bool pouchdb = false;  // COUCHGATE_TEST_SERVER=pouchdb: adapt to its documented gaps
};
const server_env& env();

// While it lives, env() (and so couch(), create_user(), base_config()...) is `e`: for a test
// that owns its server (tests/support/owned_server.hpp). Make it before starting threads that
// call env(), end it after they stopped; not nested.
class server_override {
 public:
  explicit server_override(server_env e);
  ~server_override();
  server_override(const server_override&) = delete;
  server_override& operator=(const server_override&) = delete;

 private:
  server_env env_;
};

struct reply {
  int status = 0;  // 0 = transport failure
  json body;       // discarded JSON when the body was not JSON
  std::string raw;
};

class couch {
 public:
  // Admin by default; pass name/password for a user, or empty name for anonymous.
  couch();
  couch(std::string user, std::string password);
  reply get(const std::string& target) const;
  reply put(const std::string& target, const json& body) const;
  reply post(const std::string& target, const json& body) const;
  reply del(const std::string& target) const;

 private:
  reply call(const std::string& method, const std::string& target, const std::string* body) const;
  std::string user_, password_;
};

std::string enc(const std::string& s);  // percent-encode a path segment
std::string b64(const std::string& s);  // standard base64 with padding

// The run's secret register (tests/run.sh sets COUCHGATE_TEST_SECRETS and, at the end, scans
// every log the run wrote for each line of it): every password, Basic value, cookie and token a
// test uses goes here. Values shorter than 6 characters or with line breaks are not kept.
void register_secret(const std::string& secret);
void register_basic_secret(const std::string& user, const std::string& password);  // both forms
// The password the sign-up tests give their users ("correct-horse-1"), registered at first use.
const std::string& signup_password();
// A fresh directory for a test's files and the logs of what it starts: under
// $COUCHGATE_TEST_RUN_DIR when set (tests/run.sh scans it), else under /tmp.
std::string make_temp_dir(const std::string& stem);
std::string unique(const std::string& stem);  // lowercase, unique per run and call
// The run's token in every unique() name ("<stem>-<token><n>").
const std::string& run_token();
// Whether a database or document name was made by unique() with `token` (as it is, or
// hex-encoded as couch_peruser names a user's database).
bool made_by_run(const std::string& name, const std::string& token);
// Deletes the databases and `_users` documents whose names were made with `token` (run_token():
// this run's, so a shared server keeps nothing of a run). Names hashed instead of hex-encoded
// (policy/naming.hpp, long user names under the default prefix) are not recognised. Counts what
// was deleted and what could not be.
struct leftovers {
  int databases = 0, users = 0, failed = 0;
};
leftovers remove_leftovers(const std::string& token);

// Polls pred every 50 ms until it is true or the deadline passes. Returns pred's last value.
bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds deadline);

// True when the server answers GET /.
bool server_alive();

// Writers straight to the server, one thread per database, each putting `w<k>` documents one
// after another, `pace` apart, until stop() (the destructor stops them too, so a failed REQUIRE
// never leaves threads running). written() counts the 201s, refused() the rest.
class paced_writers {
 public:
  paced_writers(const std::vector<std::string>& dbs, std::chrono::milliseconds pace);
  ~paced_writers();
  paced_writers(const paced_writers&) = delete;
  paced_writers& operator=(const paced_writers&) = delete;
  void stop();  // waits until every writer has made its last write
  int written() const;
  int refused() const;

 private:
  struct counters;
  std::shared_ptr<counters> counts_;
  std::vector<std::thread> threads_;
};

// Creates a `_users` document (admin write).
reply create_user(const std::string& name, const std::vector<std::string>& roles, const std::string& password = "pw-123456");
reply delete_user(const std::string& name);

// True once `db`'s `_security` names `user` as a member or admin (what couchgate's policy
// writes for a database's owner): the user can use it. Not the mere presence of "members":
// CouchDB 3.x creates every database with `{"members":{"roles":["_admin"]},...}` (admin-only,
// `[couchdb] default_security`), so that is there before couchgate's `_security` write lands.
bool db_usable_by(const std::string& db, const std::string& user);

// couchgate as a child process with a generated YAML config.
class couchgate_process {
 public:
  explicit couchgate_process(json config, std::map<std::string, std::string> extra_env = {});
  ~couchgate_process();
  couchgate_process(const couchgate_process&) = delete;
  couchgate_process& operator=(const couchgate_process&) = delete;

  void start();
  bool wait_ready(std::chrono::milliseconds deadline);
  void kill9();
  int terminate();  // SIGTERM and wait; returns the exit status
  // Waits (at most `deadline`) for it to exit on its own; its exit status, or nullopt if it still runs.
  std::optional<int> wait_exit(std::chrono::milliseconds deadline);
  // Rewrites the config file (the admin API's port_file kept) and sends SIGHUP.
  void reload(json config);
  bool running();
  pid_t pid() const { return pid_; }
  int admin_port() const { return port_; }
  reply admin_get(const std::string& target) const;
  // A metric's value (sum over its label sets), or nullopt when absent.
  std::optional<double> metric(const std::string& name, const std::string& labels = {}) const;
  std::string log() const;  // its stderr so far
  const std::string& dir() const { return dir_; }

 private:
  void write_config(json config);
  json config_;
  std::map<std::string, std::string> env_;
  std::string dir_;
  pid_t pid_ = -1;
  int port_ = 0;
};

// A field of /proc/<pid>/status in KiB ("VmRSS", "VmHWM" = peak resident memory), -1 when absent.
long proc_status_kib(pid_t pid, const std::string& field);
// False in an AddressSanitizer build (tests/sanitize.sh address): resident memory then says
// nothing about couchgate (freed blocks wait in ASan's quarantine, 256 MB by default; redzones
// and shadow on every allocation), so tests report their RSS bounds instead of checking them.
#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool rss_is_meaningful = false;
#else
inline constexpr bool rss_is_meaningful = true;
#endif
// Lines of `text` containing `needle`.
int count_lines(const std::string& text, const std::string& needle);

// The YAML every test starts from: credentials come from the environment, the admin API on a
// free port, names unique to the test.
struct names {
  std::string prefix;   // user db prefix
  std::string state;
  std::string central;
  std::string role;     // selection role
};
names fresh_names(const std::string& stem);
// A config object (JSON is valid YAML) that tests adjust before starting couchgate.
json base_config(const names& n);

// Established TCP connections from pid to the test server's port, read from /proc.
// Socket inodes a process holds (pid 0 = this one; empty when it is gone), and its fd count (-1
// when unreadable).
std::unordered_set<std::string> socket_inodes(pid_t pid, int* fd_count = nullptr);
// Inodes of established client-side connections to the server's port, each listed once.
std::vector<std::string> connections_to_server_inodes();
// How many of those the process holds.
int connections_to_server(pid_t pid);

// Runs `couchgate ARGS...` to completion; returns exit status, stdout and stderr.
struct run_result {
  int status = -1;
  std::string out, err;
};
run_result run_couchgate(const std::vector<std::string>& args, const std::map<std::string, std::string>& extra_env = {});
// The couchgate binary every test runs: COUCHGATE_TEST_BINARY when set (another build, e.g. an
// older one to compare), else the one built with the tests.
const char* couchgate_binary();

}  // namespace couchgate::test
