#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/config.hpp"
#include "gateway/config_table.hpp"

namespace cg = couchgate::gateway;
using couchgate::policy::id_mode;
using couchgate::policy::on_delete;
using std::chrono::milliseconds;
using std::chrono::seconds;

namespace {

cg::env_lookup env_of(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    const auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

cg::env_lookup no_env() { return env_of({}); }

cg::load_result load(const std::string& yaml, const cg::env_lookup& env = no_env()) {
  return cg::load_config_text(yaml, env);
}

std::vector<cg::config_error> errors_at(const cg::load_result& r, std::string_view path) {
  std::vector<cg::config_error> out;
  std::copy_if(r.errors.begin(), r.errors.end(), std::back_inserter(out),
               [&](const cg::config_error& e) { return e.path == path; });
  return out;
}

// The one error reported at path (fails the test when there are none or several).
cg::config_error only_error_at(const cg::load_result& r, std::string_view path) {
  const auto found = errors_at(r, path);
  INFO(cg::format_errors("test.yaml", r.errors));
  REQUIRE(found.size() == 1);
  return found.front();
}

bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

std::string all_text(const cg::load_result& r) { return cg::format_errors("test.yaml", r.errors); }

// The single error of a one-key configuration, checked for path and message fragment.
void check_single_error(const std::string& yaml, std::string_view path, std::string_view fragment) {
  const auto r = load(yaml);
  INFO("yaml: ", yaml);
  INFO(all_text(r));
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].path == path);
  CHECK(contains(r.errors[0].message, fragment));
}

class temp_file {
 public:
  temp_file(const std::string& name, const std::string& content)
      : path_((std::filesystem::temp_directory_path() /
               ("couchgate-test-config-" + std::to_string(::getpid()) + "-" + name))
                  .string()) {
    std::ofstream out(path_, std::ios::binary);
    out << content;
  }
  ~temp_file() { std::remove(path_.c_str()); }
  temp_file(const temp_file&) = delete;
  temp_file& operator=(const temp_file&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string example_path() { return std::string(COUCHGATE_SOURCE_DIR) + "/deploy/couchgate.example.yaml"; }

void check_defaults(const cg::config& c) {
  CHECK(c.couchdb.url == "http://127.0.0.1:5984");
  CHECK(c.couchdb.username.empty());
  CHECK(c.couchdb.password.empty());
  CHECK(c.couchdb.password_file.empty());
  CHECK(c.couchdb.request_timeout == seconds{30});
  CHECK(c.couchdb.feed_timeout == seconds{60});
  CHECK(c.couchdb.heartbeat == milliseconds{10000});
  CHECK(c.state_db == "couchgate");
  CHECK(c.provisioning.enabled);
  CHECK(c.provisioning.users_db == "_users");
  CHECK(c.provisioning.db_prefix == "userdb-");
  CHECK(c.provisioning.select.roles_any.empty());
  CHECK(c.provisioning.select.roles_all.empty());
  CHECK(c.provisioning.select.roles_none.empty());
  CHECK(c.provisioning.select.names.empty());
  CHECK_FALSE(c.provisioning.security.owner_is_admin);
  CHECK(c.provisioning.security.member_names.empty());
  CHECK(c.provisioning.security.member_roles.empty());
  CHECK(c.provisioning.security.admin_names.empty());
  CHECK(c.provisioning.security.admin_roles.empty());
  CHECK(c.provisioning.on_delete == on_delete::keep);
  CHECK(c.provisioning.reconcile_interval == seconds{600});
  CHECK(c.provisioning.batch == 500);
  CHECK(c.provisioning.q == 1);
  CHECK(c.provisioning.n == 0);
  CHECK(c.fanin.enabled);
  CHECK(c.fanin.central_db == "couchgate-central");
  CHECK(c.fanin.ids == id_mode::namespaced);
  CHECK(c.fanin.max_connections == 8);
  CHECK(c.fanin.max_active == 64);
  CHECK(c.fanin.rounds == 2);
  CHECK(c.fanin.batch_docs == 1000);
  CHECK(c.fanin.batch_bytes == 8u << 20);
  CHECK(c.fanin.max_bytes_in_flight == 128u << 20);
  CHECK(c.fanin.turn_docs == 500);
  CHECK(c.fanin.inline_docs);
  CHECK(c.fanin.detection == cg::detection_mode::automatic);
  CHECK(c.fanin.create_global_changes);
  CHECK_FALSE(c.fanin.central_guard);
  CHECK(c.fanin.sweep_rate == 200.0);
  CHECK(c.fanin.sweep_interval == seconds{5});
  CHECK(c.fanin.checkpoint_interval == seconds{1});
  CHECK_FALSE(c.shared.enabled);
  CHECK(c.shared.db == "shared");
  CHECK(c.shared.member_roles.empty());
  CHECK(c.shared.admin_roles.empty());
  CHECK(c.admin_api.address == "127.0.0.1");
  CHECK(c.admin_api.port == 8490);
  CHECK(c.admin_api.port_file.empty());
  CHECK(c.admin_api.token.empty());
  CHECK(c.admin_api.token_file.empty());
  CHECK_FALSE(c.admin_api.allow_unauthenticated);
  CHECK(c.log.level == "info");
  CHECK(c.log.format == cg::log_format::text);
}

}  // namespace

TEST_CASE("config: empty input, comments only and a bare document separator give the defaults") {
  for (const std::string text : {"", "\n", "# nothing here\n", "---\n", "---\n# only a comment\n"}) {
    CAPTURE(text);
    const auto r = load(text);
    INFO(all_text(r));
    CHECK(r.errors.empty());
    check_defaults(r.cfg);
  }
  const auto d = cg::default_config(no_env());
  CHECK(d.errors.empty());
  check_defaults(d.cfg);
}

TEST_CASE("config: the example file loads without errors and states the defaults") {
  const auto r = cg::load_config_file(example_path(), no_env());
  INFO(cg::format_errors(example_path(), r.errors));
  REQUIRE(r.errors.empty());
  check_defaults(r.cfg);
}

TEST_CASE("config: the quickstart's file loads, with the front door and sign-up on") {
  const std::string path = std::string(COUCHGATE_SOURCE_DIR) + "/deploy/couchgate.quickstart.yaml";
  const auto r = cg::load_config_file(path, no_env());
  INFO(cg::format_errors(path, r.errors));
  REQUIRE(r.errors.empty());
  CHECK(r.cfg.front.enabled);
  CHECK(r.cfg.front.allow_insecure);
  CHECK(r.cfg.front.address == "127.0.0.1");
  CHECK(r.cfg.identities.enabled);
}

TEST_CASE("config: the example file names every key of the schema") {
  std::ifstream in(example_path());
  REQUIRE(in);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (const char* key :
       {"couchdb:", "url:", "username:", "password:", "password_file:", "request_timeout:", "feed_timeout:",
        "heartbeat:", "state_db:", "provisioning:", "users_db:", "db_prefix:", "select:", "roles_any:", "roles_all:",
        "roles_none:", "names:", "security:", "owner_is_admin:", "member_names:", "member_roles:", "admin_names:",
        "admin_roles:", "on_delete:", "reconcile_interval:", "batch:", "q:", "n:", "fanin:", "central_db:", "ids:",
        "max_connections:", "max_active:", "rounds:", "batch_docs:", "batch_bytes:", "max_bytes_in_flight:", "turn_docs:", "inline_docs:", "detection:",
        "create_global_changes:", "central_guard:", "sweep_rate:", "sweep_interval:", "checkpoint_interval:", "shared:", "db:", "admin_api:", "address:",
        "port:", "port_file:", "token:", "token_file:", "allow_unauthenticated:", "log:", "level:", "format:",
        "identities:", "max_name_bytes:", "min_password_chars:", "profile_fields:", "signup_deadline:",
        "provision_wait:", "intent_timeout:", "retention:", "rate_limit:", "rate_window:"}) {
    const std::string k = key;
    CAPTURE(k);
    CHECK((contains(text, "\n" + k) || contains(text, " " + k)));
  }
}

TEST_CASE("config: every key is read") {
  const auto r = load(R"(
couchdb:
  url: https://couch.example.com:6984/db-proxy/
  username: admin
  request_timeout: 45
  feed_timeout: 2m
  heartbeat: 250ms
state_db: gate-state
provisioning:
  enabled: false
  users_db: _users
  db_prefix: u-
  select: {roles_any: [a, b], roles_all: [c], roles_none: [d], names: [alice]}
  security:
    owner_is_admin: true
    member_names: [m1]
    member_roles: [friends]
    admin_names: [a1]
    admin_roles: [moderators]
  on_delete: delete
  reconcile_interval: 0
  batch: 10000
  q: 1
  n: 3
fanin:
  enabled: false
  central_db: central
  ids: unchanged
  max_connections: 3
  max_active: 1
  rounds: 64
  batch_docs: 100000
  batch_bytes: 64KiB
  turn_docs: 1
  inline_docs: false
  detection: sweep
  create_global_changes: false
  central_guard: true
  sweep_rate: 0.5
  sweep_interval: 1h
  checkpoint_interval: 0
shared: {enabled: true, db: common, member_roles: [staff], admin_roles: [boss]}
admin_api: {address: "::1", port: 0, port_file: /tmp/port}
log: {level: critical, format: json}
)");
  INFO(all_text(r));
  REQUIRE(r.errors.empty());
  const auto& c = r.cfg;
  CHECK(c.couchdb.url == "https://couch.example.com:6984/db-proxy");  // trailing '/' removed
  CHECK(c.couchdb.username == "admin");
  CHECK(c.couchdb.request_timeout == seconds{45});
  CHECK(c.couchdb.feed_timeout == seconds{120});
  CHECK(c.couchdb.heartbeat == milliseconds{250});
  CHECK(c.state_db == "gate-state");
  CHECK_FALSE(c.provisioning.enabled);
  CHECK(c.provisioning.db_prefix == "u-");
  CHECK(c.provisioning.select.roles_any == std::vector<std::string>{"a", "b"});
  CHECK(c.provisioning.select.roles_all == std::vector<std::string>{"c"});
  CHECK(c.provisioning.select.roles_none == std::vector<std::string>{"d"});
  CHECK(c.provisioning.select.names == std::vector<std::string>{"alice"});
  CHECK(c.provisioning.security.owner_is_admin);
  CHECK(c.provisioning.security.member_names == std::vector<std::string>{"m1"});
  CHECK(c.provisioning.security.member_roles == std::vector<std::string>{"friends"});
  CHECK(c.provisioning.security.admin_names == std::vector<std::string>{"a1"});
  CHECK(c.provisioning.security.admin_roles == std::vector<std::string>{"moderators"});
  CHECK(c.provisioning.on_delete == on_delete::remove);
  CHECK(c.provisioning.reconcile_interval == seconds{0});
  CHECK(c.provisioning.batch == 10000);
  CHECK(c.provisioning.q == 1);
  CHECK(c.provisioning.n == 3);
  CHECK_FALSE(c.fanin.enabled);
  CHECK(c.fanin.central_db == "central");
  CHECK(c.fanin.ids == id_mode::unchanged);
  CHECK(c.fanin.max_connections == 3);
  CHECK(c.fanin.max_active == 1);
  CHECK(c.fanin.rounds == 64);
  CHECK(c.fanin.batch_docs == 100000);
  CHECK(c.fanin.batch_bytes == 65536);
  CHECK(c.fanin.turn_docs == 1);
  CHECK_FALSE(c.fanin.inline_docs);
  CHECK(c.fanin.detection == cg::detection_mode::sweep);
  CHECK_FALSE(c.fanin.create_global_changes);
  CHECK(c.fanin.central_guard);
  CHECK(c.fanin.sweep_rate == 0.5);
  CHECK(c.fanin.sweep_interval == seconds{3600});
  CHECK(c.fanin.checkpoint_interval == milliseconds{0});
  CHECK(c.shared.enabled);
  CHECK(c.shared.db == "common");
  CHECK(c.shared.member_roles == std::vector<std::string>{"staff"});
  CHECK(c.shared.admin_roles == std::vector<std::string>{"boss"});
  CHECK(c.admin_api.address == "::1");
  CHECK(c.admin_api.port == 0);
  CHECK(c.admin_api.port_file == "/tmp/port");
  CHECK(c.log.level == "critical");
  CHECK(c.log.format == cg::log_format::json);
}

TEST_CASE("config: enum values") {
  CHECK(load("fanin: {detection: auto}\n").cfg.fanin.detection == cg::detection_mode::automatic);
  CHECK(load("fanin: {detection: db_updates}\n").cfg.fanin.detection == cg::detection_mode::db_updates);
  CHECK(load("fanin: {ids: namespaced}\n").cfg.fanin.ids == id_mode::namespaced);
  CHECK(load("provisioning: {on_delete: keep}\n").cfg.provisioning.on_delete == on_delete::keep);
  for (const char* level : {"trace", "debug", "info", "warn", "error", "critical", "off"}) {
    CAPTURE(level);
    const auto r = load(std::string("log: {level: ") + level + "}\n");
    CHECK(r.errors.empty());
    CHECK(r.cfg.log.level == level);
  }
  check_single_error("log: {level: warning}\n", "log.level",
                     "expected one of trace, debug, info, warn, error, critical, off, got 'warning'");
  check_single_error("log: {format: xml}\n", "log.format", "expected one of text, json, got 'xml'");
  check_single_error("fanin: {detection: poll}\n", "fanin.detection", "expected one of auto, db_updates, sweep");
  check_single_error("fanin: {ids: raw}\n", "fanin.ids", "expected one of namespaced, unchanged");
  check_single_error("provisioning: {on_delete: remove}\n", "provisioning.on_delete",
                     "expected one of keep, delete, got 'remove'");
}

TEST_CASE("config: durations") {
  const auto heartbeat = [](const std::string& v) { return load("couchdb: {heartbeat: " + v + "}\n"); };
  CHECK(heartbeat("250ms").cfg.couchdb.heartbeat == milliseconds{250});
  CHECK(heartbeat("\"30s\"").cfg.couchdb.heartbeat == milliseconds{30000});
  CHECK(heartbeat("10m").cfg.couchdb.heartbeat == milliseconds{600000});
  CHECK(heartbeat("2h").cfg.couchdb.heartbeat == milliseconds{7200000});
  CHECK(heartbeat("7").cfg.couchdb.heartbeat == milliseconds{7000});  // a bare integer is seconds
  CHECK(heartbeat("1500ms").cfg.couchdb.heartbeat == milliseconds{1500});
  CHECK(heartbeat("\"5 s\"").cfg.couchdb.heartbeat == milliseconds{5000});

  CHECK(load("provisioning: {reconcile_interval: 0}\n").cfg.provisioning.reconcile_interval == seconds{0});
  CHECK(load("provisioning: {reconcile_interval: 2000ms}\n").cfg.provisioning.reconcile_interval == seconds{2});
  CHECK(load("fanin: {sweep_interval: 0s}\n").cfg.fanin.sweep_interval == seconds{0});

  const char* expected = "expected a duration: an integer number of seconds or an integer with unit ms, s, m or h";
  check_single_error("couchdb: {heartbeat: abc}\n", "couchdb.heartbeat", expected);
  check_single_error("couchdb: {heartbeat: 1.5s}\n", "couchdb.heartbeat", "got '1.5s'");
  check_single_error("couchdb: {heartbeat: [1]}\n", "couchdb.heartbeat", "got a list");
  check_single_error("couchdb: {heartbeat: 3d}\n", "couchdb.heartbeat", "unknown duration unit 'd' in '3d'; use ms, s, m or h");
  check_single_error("couchdb: {heartbeat: -5s}\n", "couchdb.heartbeat", "must not be negative, got '-5s'");
  check_single_error("couchdb: {heartbeat: 0}\n", "couchdb.heartbeat", "must be at least 1ms");
  check_single_error("couchdb: {heartbeat: 99999999999999h}\n", "couchdb.heartbeat", "is too large");
  check_single_error("couchdb: {request_timeout: 1500ms}\n", "couchdb.request_timeout",
                     "must be a whole number of seconds, got '1500ms'");
  check_single_error("couchdb: {request_timeout: 0}\n", "couchdb.request_timeout", "must be at least 1s, got '0'");
  check_single_error("couchdb: {feed_timeout: 0s}\n", "couchdb.feed_timeout", "must be at least 1s");
  check_single_error("provisioning: {reconcile_interval: -1}\n", "provisioning.reconcile_interval",
                     "must not be negative");
  check_single_error("fanin: {sweep_interval: 5x}\n", "fanin.sweep_interval", "unknown duration unit 'x'");
}

TEST_CASE("config: sizes") {
  const auto bytes = [](const std::string& v) { return load("fanin: {batch_bytes: " + v + "}\n"); };
  CHECK(bytes("65536").cfg.fanin.batch_bytes == 65536);
  CHECK(bytes("64KiB").cfg.fanin.batch_bytes == 65536);
  CHECK(bytes("100000B").cfg.fanin.batch_bytes == 100000);
  CHECK(bytes("8MiB").cfg.fanin.batch_bytes == 8u << 20);
  CHECK(bytes("\"3 MiB\"").cfg.fanin.batch_bytes == 3u << 20);
  CHECK(bytes("2GiB").cfg.fanin.batch_bytes == std::size_t{2} << 30);
  for (const char* ok : {"65536", "64KiB", "8MiB", "2GiB"}) CHECK(bytes(ok).errors.empty());

  check_single_error("fanin: {batch_bytes: 8MB}\n", "fanin.batch_bytes",
                     "unknown size unit 'MB' in '8MB'; use B, KiB, MiB or GiB");
  check_single_error("fanin: {batch_bytes: 8kib}\n", "fanin.batch_bytes", "use B, KiB, MiB or GiB");
  check_single_error("fanin: {batch_bytes: lots}\n", "fanin.batch_bytes",
                     "expected a size: an integer number of bytes or an integer with unit B, KiB, MiB or GiB");
  check_single_error("fanin: {batch_bytes: 1.5MiB}\n", "fanin.batch_bytes", "got '1.5MiB'");
  check_single_error("fanin: {batch_bytes: 65535}\n", "fanin.batch_bytes",
                     "must be at least 64KiB (65536 bytes), got '65535'");
  check_single_error("fanin: {batch_bytes: 63KiB}\n", "fanin.batch_bytes", "must be at least 64KiB");
  CHECK(load("fanin: {max_bytes_in_flight: 64MiB}\n").cfg.fanin.max_bytes_in_flight == 64u << 20);
  check_single_error("fanin: {max_bytes_in_flight: 1000KiB}\n", "fanin.max_bytes_in_flight", "must be at least 1MiB");
  check_single_error("fanin: {batch_bytes: -1MiB}\n", "fanin.batch_bytes", "must not be negative");
  check_single_error("fanin: {batch_bytes: 99999999999999GiB}\n", "fanin.batch_bytes", "is too large");
  check_single_error("fanin: {batch_bytes: {a: 1}}\n", "fanin.batch_bytes", "got a map");
}

TEST_CASE("config: integer ranges") {
  struct range_case {
    std::string section, key;
    long long low, high;  // high < 0: no upper bound
  };
  const std::vector<range_case> cases{
      {"fanin", "max_connections", 3, 1024}, {"fanin", "max_active", 1, -1}, {"fanin", "rounds", 1, 64},       {"fanin", "batch_docs", 1, 100000},
      {"fanin", "turn_docs", 1, -1},         {"admin_api", "port", 0, 65535},      {"provisioning", "batch", 1, 10000},
      {"provisioning", "q", 0, 1024},        {"provisioning", "n", 0, 16},
  };
  for (const auto& c : cases) {
    const std::string path = c.section + "." + c.key;
    CAPTURE(path);
    const auto at = [&](long long v) { return load(c.section + ":\n  " + c.key + ": " + std::to_string(v) + "\n"); };
    CHECK(at(c.low).errors.empty());
    const auto below = at(c.low - 1);
    const auto e = only_error_at(below, path);
    CHECK(e.line == 2);
    CHECK(contains(e.message, c.high < 0 ? "must be at least " + std::to_string(c.low)
                                         : "must be between " + std::to_string(c.low) + " and " +
                                               std::to_string(c.high)));
    CHECK(contains(e.message, "got '" + std::to_string(c.low - 1) + "'"));
    CHECK(below.errors.size() == 1);
    if (c.high >= 0) {
      CHECK(at(c.high).errors.empty());
      CHECK(only_error_at(at(c.high + 1), path).line == 2);
    } else {
      CHECK(at(1000000).errors.empty());
    }
  }
  CHECK(contains(only_error_at(load("fanin: {max_connections: 2}\n"), "fanin.max_connections").message,
                 "replication, provisioning and checkpoints share them"));
  check_single_error("fanin: {max_active: 99999999999999999999999}\n", "fanin.max_active", "is too large");
  check_single_error("fanin: {max_active: -99999999999999999999999}\n", "fanin.max_active", "must be at least 1");
  check_single_error("admin_api: {port: 99999999999999999999999}\n", "admin_api.port", "must be between 0 and 65535");
}

TEST_CASE("config: sweep_rate is a positive number") {
  CHECK(load("fanin: {sweep_rate: 1e3}\n").cfg.fanin.sweep_rate == 1000.0);
  CHECK(load("fanin: {sweep_rate: 12}\n").cfg.fanin.sweep_rate == 12.0);
  check_single_error("fanin: {sweep_rate: 0}\n", "fanin.sweep_rate", "must be a number greater than 0, got '0'");
  check_single_error("fanin: {sweep_rate: -3}\n", "fanin.sweep_rate", "greater than 0");
  check_single_error("fanin: {sweep_rate: fast}\n", "fanin.sweep_rate", "expected a number, got 'fast'");
  check_single_error("fanin: {sweep_rate: .inf}\n", "fanin.sweep_rate", "expected a number");
  check_single_error("fanin: {sweep_rate: 1e999}\n", "fanin.sweep_rate", "greater than 0");
}

TEST_CASE("config: front.drain_timeout stays under the unit's stop timeout") {
  check_single_error("front: {drain_timeout: 25s}\n", "front.drain_timeout", "must be at most 20s");
  CHECK(load("front: {drain_timeout: 20s}\n").errors.empty());
  CHECK(load("front: {drain_timeout: 0}\n").errors.empty());
}

TEST_CASE("config: identities without provisioning is refused, naming why") {
  check_single_error("provisioning: {enabled: false}\nidentities: {enabled: true}\n", "identities.enabled",
                     "needs provisioning.enabled: true");
  CHECK(load("identities: {enabled: true}\n").errors.empty());
  CHECK(load("provisioning: {enabled: false}\nidentities: {enabled: false}\n").errors.empty());
}

TEST_CASE("config: wrong types name what was expected and what was found") {
  check_single_error("fanin: {max_connections: abc}\n", "fanin.max_connections", "expected an integer, got 'abc'");
  check_single_error("fanin: {max_connections: 8.5}\n", "fanin.max_connections", "expected an integer, got '8.5'");
  check_single_error("fanin: {max_connections: }\n", "fanin.max_connections", "expected an integer, got null");
  check_single_error("fanin: {enabled: yes}\n", "fanin.enabled", "expected true or false, got 'yes'");
  check_single_error("fanin: {enabled: [true]}\n", "fanin.enabled", "expected true or false, got a list");
  check_single_error("state_db: [a, b]\n", "state_db", "expected a string, got a list");
  check_single_error("admin_api: {port_file: }\n", "admin_api.port_file", "expected a string, got null");
  check_single_error("shared: {member_roles: staff}\n", "shared.member_roles",
                     "expected a list of strings (e.g. [a, b] or []), got 'staff'");
  check_single_error("shared: {admin_roles: [ok, {a: 1}]}\n", "shared.admin_roles[1]", "expected a string, got a map");
  check_single_error("provisioning: {select: {names: [alice, '']}}\n", "provisioning.select.names[1]",
                     "must not be an empty string");
  check_single_error("fanin: 5\n", "fanin", "expected a map of settings, got '5'");
  check_single_error("couchdb: [a]\n", "couchdb", "expected a map of settings, got a list");
  check_single_error("couchdb: {url: {host: x}}\n", "couchdb.url", "got a map");
  check_single_error("admin_api: {address: ''}\n", "admin_api.address", "must not be empty");
  // A section left empty (every key commented out) keeps its defaults.
  const auto r = load("fanin:\n  # max_connections: 4\nshared:\n");
  CHECK(r.errors.empty());
  CHECK(r.cfg.fanin.max_connections == 8);
  // Long values are cut and control characters escaped, so a message stays on one line.
  const auto long_value = load("fanin:\n  max_active: |\n    " + std::string(200, 'x') + "\n    second line\n");
  const auto e = only_error_at(long_value, "fanin.max_active");
  CHECK(contains(e.message, "..."));
  CHECK_FALSE(contains(e.message, "\n"));
  CHECK(e.message.size() < 200);
}

TEST_CASE("config: unknown keys, with a hint for near misses") {
  const auto r = load("fanin:\n  max_conections: 4\n");
  const auto e = only_error_at(r, "fanin.max_conections");
  CHECK(e.line == 2);
  CHECK(e.message == "unknown key 'max_conections'; did you mean 'max_connections'?");
  CHECK(r.errors.size() == 1);

  const auto top = load("fannin:\n  enabled: true\n");
  CHECK(only_error_at(top, "fannin").message == "unknown key 'fannin'; did you mean 'fanin'?");

  const auto far = load("log:\n  colour: true\n");
  const auto far_error = only_error_at(far, "log.colour");
  CHECK(contains(far_error.message, "unknown key 'colour'"));
  CHECK_FALSE(contains(far_error.message, "did you mean"));
  CHECK(contains(far_error.message, "expected one of: level, format"));

  const auto nested = load("provisioning:\n  select:\n    role_any: [a]\n  security:\n    owner_is_admn: true\n");
  CHECK(only_error_at(nested, "provisioning.select.role_any").message ==
        "unknown key 'role_any'; did you mean 'roles_any'?");
  CHECK(only_error_at(nested, "provisioning.select.role_any").line == 3);
  CHECK(only_error_at(nested, "provisioning.security.owner_is_admn").line == 5);
  CHECK(nested.errors.size() == 2);
}

TEST_CASE("config: duplicate keys are errors") {
  const auto r = load("fanin:\n  max_active: 4\n  max_active: 5\n");
  const auto e = only_error_at(r, "fanin.max_active");
  CHECK(e.line == 3);
  CHECK(contains(e.message, "duplicate key 'max_active' (first set on line 2)"));
  CHECK(r.cfg.fanin.max_active == 4);
}

TEST_CASE("config: YAML structure errors") {
  const auto syntax = load("fanin:\n  max_active: 4\n  batch_docs: [1, 2\n");
  INFO(all_text(syntax));
  REQUIRE(syntax.errors.size() == 1);
  CHECK(syntax.errors[0].path.empty());
  CHECK(syntax.errors[0].line >= 3);
  CHECK(contains(syntax.errors[0].message, "invalid YAML"));

  const auto bad_indent = load("fanin:\n  max_active: 4\n    batch_docs: 1\n");
  REQUIRE(bad_indent.errors.size() == 1);
  CHECK(bad_indent.errors[0].line == 3);

  const auto scalar = load("just a string\n");
  REQUIRE(scalar.errors.size() == 1);
  CHECK(contains(scalar.errors[0].message, "the top level must be a map"));
  CHECK(scalar.errors[0].line == 1);

  const auto list = load("- a\n- b\n");
  REQUIRE(list.errors.size() == 1);
  CHECK(contains(list.errors[0].message, "got a list"));

  const auto two = load("fanin: {}\n---\nlog: {}\n");
  REQUIRE(two.errors.size() == 1);
  CHECK(contains(two.errors[0].message, "expected a single YAML document, found 2"));

  const auto complex_key = load("? [a, b]\n: 1\n");
  REQUIRE(complex_key.errors.size() == 1);
  CHECK(contains(complex_key.errors[0].message, "expected a key name, got a list"));
}

TEST_CASE("config: several errors are all reported, once each, with their lines") {
  const auto r = load(R"(couchdb:
  url: ftp://example.com
  request_timeout: soon
fanin:
  max_conections: 4
  max_active: 0
  batch_bytes: 1KiB
  detection: psychic
shared:
  enabled: true
  db: Shared
log:
  level: loud
state_db: couchgate-central
)");
  INFO(all_text(r));
  const std::vector<std::pair<std::string, int>> expected{
      {"couchdb.url", 2},     {"couchdb.request_timeout", 3}, {"fanin.max_conections", 5},
      {"fanin.max_active", 6}, {"fanin.batch_bytes", 7},       {"fanin.detection", 8},
      {"shared.db", 11},       {"log.level", 13},             {"state_db", 14},
      {"shared.member_roles", 10},
  };
  for (const auto& [path, line] : expected) {
    CAPTURE(path);
    CHECK(only_error_at(r, path).line == line);
  }
  CHECK(r.errors.size() == expected.size());
  // Reported in file order.
  CHECK(std::is_sorted(r.errors.begin(), r.errors.end(),
                       [](const cg::config_error& a, const cg::config_error& b) { return a.line < b.line; }));
  // state_db clashes with the default central_db.
  CHECK(contains(only_error_at(r, "state_db").message, "fanin.central_db"));
}

TEST_CASE("config: couchdb.url") {
  CHECK(load("couchdb: {url: 'http://localhost:5984'}\n").errors.empty());
  CHECK(load("couchdb: {url: 'https://[::1]:6984/'}\n").cfg.couchdb.url == "https://[::1]:6984");
  CHECK(load("couchdb: {url: 'HTTP://h'}\n").cfg.couchdb.url == "http://h");
  CHECK(load("couchdb: {url: 'http://h/a/b//'}\n").cfg.couchdb.url == "http://h/a/b");

  for (const char* bad : {"ftp://h", "h:5984", "http://", "http:///db", "http://h:0", "http://h:70000", "http://h:",
                          "http://h:x", "http://h?x=1", "http://h/#f", "http://h o", "http://[]:1", ""}) {
    const std::string b = bad;
    CAPTURE(b);
    const auto r = load(std::string("couchdb:\n  url: \"") + bad + "\"\n");
    const auto e = only_error_at(r, "couchdb.url");
    CHECK(e.line == 2);
    CHECK(contains(e.message, "expected an http:// or https:// URL with a host"));
    CHECK(r.errors.size() == 1);
  }
  check_single_error("couchdb: {url: 'http://h/a@b'}\n", "couchdb.url", "percent-encode");
}

TEST_CASE("config: credentials in the URL are split out and percent-decoded") {
  const auto r = load("couchdb:\n  url: http://ad%40min:p%3Ass%2Fw@couch:5984/\n");
  INFO(all_text(r));
  REQUIRE(r.errors.empty());
  CHECK(r.cfg.couchdb.url == "http://couch:5984");
  CHECK(r.cfg.couchdb.username == "ad@min");
  CHECK(r.cfg.couchdb.password == "p:ss/w");

  const auto user_only = load("couchdb: {url: 'http://bob@couch'}\n");
  CHECK(user_only.cfg.couchdb.username == "bob");
  CHECK(user_only.cfg.couchdb.password.empty());

  // An unencoded '@' in the password still splits at the last '@' of the host part.
  const auto at = load("couchdb: {url: 'http://u:p@ss@couch'}\n");
  CHECK(at.cfg.couchdb.password == "p@ss");
  CHECK(at.cfg.couchdb.url == "http://couch");

  // Explicit keys win over the URL's user info.
  const auto explicit_keys = load("couchdb: {url: 'http://u:urlpw@couch', username: admin, password: keypw}\n");
  CHECK(explicit_keys.cfg.couchdb.username == "admin");
  CHECK(explicit_keys.cfg.couchdb.password == "keypw");

  const auto bad = load("couchdb:\n  url: http://u:p%zzsecret@couch\n");
  const auto e = only_error_at(bad, "couchdb.url");
  CHECK(e.line == 2);
  CHECK(contains(e.message, "percent-encoding"));
  CHECK_FALSE(contains(all_text(bad), "zzsecret"));
}

TEST_CASE("config: redact_url") {
  CHECK(cg::redact_url("http://a:b@h:1/x") == "http://h:1/x");
  CHECK(cg::redact_url("https://user@h") == "https://h");
  CHECK(cg::redact_url("http://u:p%40ss@[::1]:5984/db") == "http://[::1]:5984/db");
  CHECK(cg::redact_url("http://u:p@ss@h/") == "http://h/");
  CHECK(cg::redact_url("http://h:1/x") == "http://h:1/x");
  CHECK(cg::redact_url("http://h/path@x") == "http://h/path@x");
  CHECK(cg::redact_url("") == "");
  CHECK(cg::redact_url("not a url") == "not a url");
  const std::string secret = "Sup3rS3cret";
  CHECK_FALSE(contains(cg::redact_url("http://admin:" + secret + "@couch:5984"), secret));
  CHECK_FALSE(contains(cg::redact_url("admin:" + secret + "@couch:5984"), secret));
}

TEST_CASE("config: database names") {
  check_single_error("state_db: Couchgate\n", "state_db", "expected a CouchDB database name");
  check_single_error("state_db: _state\n", "state_db", "reserved for CouchDB's system databases");
  check_single_error("state_db: ''\n", "state_db", "got ''");
  check_single_error("state_db: 1db\n", "state_db", "a lowercase letter first");
  check_single_error("fanin: {central_db: 'a b'}\n", "fanin.central_db", "expected a CouchDB database name");
  check_single_error("shared: {db: 'x!'}\n", "shared.db", "expected a CouchDB database name");
  check_single_error("state_db: " + std::string(239, 'a') + "\n", "state_db", "at most 238 characters");
  CHECK(load("state_db: " + std::string(238, 'a') + "\n").errors.empty());
  CHECK(load("state_db: a0_$()+/-\n").errors.empty());
  CHECK(load("provisioning: {users_db: _users}\n").errors.empty());
  CHECK(load("provisioning: {users_db: _auth}\n").errors.empty());
  CHECK(load("provisioning: {users_db: people}\n").errors.empty());
  check_single_error("provisioning: {users_db: _}\n", "provisioning.users_db", "or '_' for a system database");
  check_single_error("provisioning: {users_db: Users}\n", "provisioning.users_db", "expected a CouchDB database name");

  check_single_error("provisioning: {db_prefix: ''}\n", "provisioning.db_prefix", "expected a non-empty prefix");
  check_single_error("provisioning: {db_prefix: 'user/'}\n", "provisioning.db_prefix", "got 'user/'");
  check_single_error("provisioning: {db_prefix: 'Userdb-'}\n", "provisioning.db_prefix", "lowercase letter");
  check_single_error("provisioning: {db_prefix: " + std::string(174, 'u') + "}\n", "provisioning.db_prefix",
                     "at most 173 characters");
  CHECK(load("provisioning: {db_prefix: " + std::string(173, 'u') + "}\n").errors.empty());
  CHECK(load("provisioning: {db_prefix: 'p_$()+-'}\n").errors.empty());
}

TEST_CASE("config: database names must differ and must not look like user databases") {
  const auto same = load("state_db: x\nfanin:\n  central_db: x\nshared:\n  db: x\n");
  INFO(all_text(same));
  CHECK(same.errors.size() == 2);
  CHECK(only_error_at(same, "fanin.central_db").line == 3);
  CHECK(contains(only_error_at(same, "fanin.central_db").message, "must differ from state_db (both are 'x')"));
  CHECK(only_error_at(same, "shared.db").line == 5);

  check_single_error("shared: {db: couchgate}\n", "shared.db", "must differ from state_db");
  // Blamed on the key that was set, not on the default it clashes with.
  check_single_error("provisioning: {users_db: couchgate}\n", "provisioning.users_db", "must differ from state_db");
  check_single_error("provisioning: {users_db: couchgate-central}\n", "provisioning.users_db",
                     "must differ from fanin.central_db");

  const auto prefixed = load("fanin:\n  central_db: userdb-central\n");
  const auto e = only_error_at(prefixed, "fanin.central_db");
  CHECK(e.line == 2);
  CHECK(contains(e.message, "starts with provisioning.db_prefix 'userdb-'"));
  CHECK(prefixed.errors.size() == 1);

  // When only the prefix was set, the clash is reported at the prefix, once per database.
  const auto by_prefix = load("provisioning:\n  db_prefix: couch\n");
  INFO(all_text(by_prefix));
  const auto prefix_errors = errors_at(by_prefix, "provisioning.db_prefix");
  REQUIRE(prefix_errors.size() == 2);
  CHECK(prefix_errors[0].line == 2);
  CHECK(contains(prefix_errors[0].message, "'couch' is the start of state_db 'couchgate'"));
  CHECK(contains(prefix_errors[1].message, "fanin.central_db 'couchgate-central'"));
  CHECK(by_prefix.errors.size() == 2);

  // An invalid name is reported once, not again as a clash.
  const auto invalid = load("state_db: X\nfanin: {central_db: X}\n");
  CHECK(invalid.errors.size() == 2);
}

TEST_CASE("config: an enabled shared database needs member roles") {
  const auto r = load("shared:\n  enabled: true\n");
  const auto e = only_error_at(r, "shared.member_roles");
  CHECK(e.line == 2);
  CHECK(contains(e.message, "must not be empty when shared.enabled is true"));
  CHECK(r.errors.size() == 1);
  CHECK(only_error_at(load("shared:\n  enabled: true\n  member_roles: []\n"), "shared.member_roles").line == 3);
  CHECK(load("shared: {enabled: true, member_roles: [staff]}\n").errors.empty());
  CHECK(load("shared: {enabled: false}\n").errors.empty());
}

TEST_CASE("config: password_file") {
  const temp_file secret("pw", "file-secret-value\n");
  const auto r = load("couchdb:\n  username: admin\n  password_file: " + secret.path() + "\n");
  INFO(all_text(r));
  REQUIRE(r.errors.empty());
  CHECK(r.cfg.couchdb.password == "file-secret-value");
  CHECK(r.cfg.couchdb.password_file == secret.path());
  CHECK(r.cfg.couchdb.username == "admin");

  const temp_file crlf("crlf", "crlf-secret\r\n");
  CHECK(load("couchdb: {password_file: " + crlf.path() + "}\n").cfg.couchdb.password == "crlf-secret");

  const std::string missing = "/nonexistent/couchgate/pw";
  const auto unreadable = load("couchdb:\n  password_file: " + missing + "\n");
  const auto e = only_error_at(unreadable, "couchdb.password_file");
  CHECK(e.line == 2);
  CHECK(contains(e.message, "cannot read the password file '" + missing + "'"));
  CHECK(unreadable.errors.size() == 1);

  const temp_file empty("empty", "\n");
  check_single_error("couchdb: {password_file: " + empty.path() + "}\n", "couchdb.password_file", "is empty");

  const auto both = load("couchdb:\n  password: pw-in-yaml\n  password_file: " + secret.path() + "\n");
  const auto both_error = only_error_at(both, "couchdb.password_file");
  CHECK(both_error.line == 3);
  CHECK(contains(both_error.message, "cannot be used together with couchdb.password"));
  CHECK(both.errors.size() == 1);
  CHECK_FALSE(contains(all_text(both), "pw-in-yaml"));
  CHECK_FALSE(contains(all_text(both), "file-secret-value"));

  // Empty values mean "not set", as in the example file.
  CHECK(load("couchdb: {password: '', password_file: ''}\n").errors.empty());

  // COUCHDB_PASSWORD wins, and then the file is not needed.
  const auto env_wins = load("couchdb: {password_file: " + missing + "}\n", env_of({{"COUCHDB_PASSWORD", "envpw"}}));
  CHECK(env_wins.errors.empty());
  CHECK(env_wins.cfg.couchdb.password == "envpw");
}

TEST_CASE("config: environment overrides and their precedence") {
  const std::string file = "couchdb:\n  url: http://fileuser:filepw@file-host:5984\n";

  const auto file_only = load(file);
  CHECK(file_only.cfg.couchdb.url == "http://file-host:5984");
  CHECK(file_only.cfg.couchdb.username == "fileuser");
  CHECK(file_only.cfg.couchdb.password == "filepw");

  // COUCHDB_URL without user info moves the server and keeps the file's credentials.
  const auto url_only = load(file, env_of({{"COUCHDB_URL", "https://env-host"}}));
  CHECK(url_only.cfg.couchdb.url == "https://env-host");
  CHECK(url_only.cfg.couchdb.username == "fileuser");
  CHECK(url_only.cfg.couchdb.password == "filepw");

  // COUCHDB_URL's user info replaces the file's credentials.
  const auto url_creds = load(file, env_of({{"COUCHDB_URL", "http://envuser:env%2Fpw@env-host:1234"}}));
  CHECK(url_creds.errors.empty());
  CHECK(url_creds.cfg.couchdb.url == "http://env-host:1234");
  CHECK(url_creds.cfg.couchdb.username == "envuser");
  CHECK(url_creds.cfg.couchdb.password == "env/pw");

  // COUCHDB_USER and COUCHDB_PASSWORD win over COUCHDB_URL's user info.
  const auto all = load(file, env_of({{"COUCHDB_URL", "http://envuser:envpw@env-host"},
                                      {"COUCHDB_USER", "admin"},
                                      {"COUCHDB_PASSWORD", "adminpw"}}));
  CHECK(all.cfg.couchdb.url == "http://env-host");
  CHECK(all.cfg.couchdb.username == "admin");
  CHECK(all.cfg.couchdb.password == "adminpw");

  const auto user_only = load(file, env_of({{"COUCHDB_USER", "other"}}));
  CHECK(user_only.cfg.couchdb.username == "other");
  CHECK(user_only.cfg.couchdb.password == "filepw");

  // The environment wins over explicit file keys too.
  const auto over_keys = load("couchdb: {username: a, password: b}\n", env_of({{"COUCHDB_PASSWORD", "c"}}));
  CHECK(over_keys.cfg.couchdb.username == "a");
  CHECK(over_keys.cfg.couchdb.password == "c");

  // Empty variables count as unset.
  const auto empty = load(file, env_of({{"COUCHDB_URL", ""}, {"COUCHDB_USER", ""}, {"COUCHDB_PASSWORD", ""}}));
  CHECK(empty.cfg.couchdb.url == "http://file-host:5984");
  CHECK(empty.cfg.couchdb.username == "fileuser");
  CHECK(empty.cfg.couchdb.password == "filepw");

  // default_config applies the environment and validates it.
  const auto d = cg::default_config(env_of({{"COUCHDB_URL", "http://u:p@h:1/"}}));
  CHECK(d.errors.empty());
  CHECK(d.cfg.couchdb.url == "http://h:1");
  CHECK(d.cfg.couchdb.username == "u");
  CHECK(d.cfg.couchdb.password == "p");

  const auto bad = cg::default_config(env_of({{"COUCHDB_URL", "ftp://h"}}));
  REQUIRE(bad.errors.size() == 1);
  CHECK(bad.errors[0].path == "couchdb.url");
  CHECK(bad.errors[0].line == 0);
  CHECK(contains(bad.errors[0].message, "COUCHDB_URL"));

  // A valid COUCHDB_URL replaces an invalid file URL.
  CHECK(load("couchdb: {url: 'ftp://x'}\n", env_of({{"COUCHDB_URL", "http://h"}})).errors.empty());
}

TEST_CASE("config: no password ever appears in an error message") {
  const std::string pw = "Hunter2Secret";
  const auto check_clean = [&](const cg::load_result& r, std::size_t expected_errors) {
    const std::string text = all_text(r);
    INFO(text);
    CHECK(r.errors.size() == expected_errors);
    CHECK_FALSE(contains(text, pw));
    CHECK_FALSE(contains(text, "Hunter2"));
  };
  // A URL with a password that is invalid for another reason.
  check_clean(load("couchdb:\n  url: ftp://admin:" + pw + "@host\n"), 1);
  check_clean(load("couchdb:\n  url: http://admin:" + pw + "@host:99999\n"), 1);
  check_clean(load("couchdb:\n  url: http://admin:" + pw + "@\n"), 1);
  check_clean(load("couchdb:\n  url: 'http://admin:" + pw + "@host/x?y'\n"), 1);
  // A password with an unencoded '/' ends the host part early: the URL is rejected without echo.
  check_clean(load("couchdb:\n  url: http://admin:Hunter2/Secret@host\n"), 1);
  check_clean(load("couchdb:\n  url: http://admin:Hunter2%ZZSecret@host\n"), 1);
  check_clean(cg::default_config(env_of({{"COUCHDB_URL", "ftp://admin:" + pw + "@host"}})), 1);
  check_clean(cg::default_config(env_of({{"COUCHDB_URL", "http://admin:" + pw + "@host/a@b"}})), 1);
  check_clean(cg::default_config(env_of({{"COUCHDB_URL", "admin:" + pw + "@host"}})), 1);
  // Wrong-typed passwords are described by kind, never by content.
  check_clean(load("couchdb:\n  password: [" + pw + "]\n"), 1);
  check_clean(load("couchdb:\n  password: {" + pw + ": " + pw + "}\n"), 1);
  check_clean(load("couchdb:\n  password: " + pw + "\n  pasword: " + pw + "\n"), 1);
  // The password copied into another key: the echo of that value is hidden.
  check_clean(load("couchdb:\n  password: " + pw + "\nfanin:\n  max_active: " + pw + "\n"), 1);
  check_clean(load("couchdb:\n  password: " + pw + "\nstate_db: " + pw + "\n"), 1);
  check_clean(load("couchdb:\n  password: " + pw + "\n  " + pw + ": 1\n"), 1);
  check_clean(load("fanin:\n  max_active: x" + pw + "x\n", env_of({{"COUCHDB_PASSWORD", pw}})), 1);
  check_clean(load("log:\n  level: " + pw + "\n", env_of({{"COUCHDB_URL", "http://u:" + pw + "@h"}})), 1);
  // Password file content.
  const temp_file secret("leak", pw + "\n");
  check_clean(load("couchdb:\n  password_file: " + secret.path() + "\nstate_db: " + pw + "\n"), 1);
  check_clean(load("couchdb:\n  password: other\n  password_file: " + secret.path() + "\n"), 1);
  // The hidden echo still says where the problem is.
  const auto hidden = load("couchdb:\n  password: " + pw + "\nfanin:\n  max_active: " + pw + "\n");
  const auto e = only_error_at(hidden, "fanin.max_active");
  CHECK(e.line == 4);
  CHECK(contains(e.message, "expected an integer"));
  CHECK(contains(e.message, "hidden"));
}

TEST_CASE("config: format_errors") {
  const std::vector<cg::config_error> errors{
      {"fanin.max_connections", 12, "must be between 3 and 1024, got '2'"},
      {"couchdb.url", 0, "bad"},
      {"", 3, "invalid YAML: x"},
  };
  CHECK(cg::format_errors("/etc/couchgate.yaml", errors) ==
        "/etc/couchgate.yaml:12: fanin.max_connections: must be between 3 and 1024, got '2'\n"
        "/etc/couchgate.yaml: couchdb.url: bad\n"
        "/etc/couchgate.yaml:3: invalid YAML: x\n");
  CHECK(cg::format_errors("f", {}).empty());
}

TEST_CASE("config: load_config_file") {
  const temp_file file("file.yaml", "fanin:\n  max_active: 7\n  max_active_x: 1\n");
  const auto r = cg::load_config_file(file.path(), no_env());
  CHECK(r.cfg.fanin.max_active == 7);
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].line == 3);

  const std::string missing = "/nonexistent/couchgate.yaml";
  const auto m = cg::load_config_file(missing, no_env());
  REQUIRE(m.errors.size() == 1);
  CHECK(contains(m.errors[0].message, missing));
  CHECK(contains(m.errors[0].message, "cannot read"));

  const auto dir = cg::load_config_file(std::filesystem::temp_directory_path().string(), no_env());
  REQUIRE(dir.errors.size() == 1);
  CHECK(contains(dir.errors[0].message, "cannot read"));
}

TEST_CASE("config: process_env reads the process environment") {
  const auto env = cg::process_env();
  ::setenv("COUCHGATE_TEST_CONFIG_VAR", "value-1", 1);
  CHECK(env("COUCHGATE_TEST_CONFIG_VAR") == std::optional<std::string>("value-1"));
  ::unsetenv("COUCHGATE_TEST_CONFIG_VAR");
  CHECK_FALSE(env("COUCHGATE_TEST_CONFIG_VAR").has_value());
}

namespace {
// One changed key each, with the name a reload reports for it.
struct key_change {
  std::string key;
  std::function<void(cg::config&)> change;
};

std::vector<key_change> live_key_changes() {
  return {
      {"provisioning.select.roles_any", [](cg::config& c) { c.provisioning.select.roles_any = {"app"}; }},
      {"provisioning.select.roles_all", [](cg::config& c) { c.provisioning.select.roles_all = {"a"}; }},
      {"provisioning.select.roles_none", [](cg::config& c) { c.provisioning.select.roles_none = {"banned"}; }},
      {"provisioning.select.names", [](cg::config& c) { c.provisioning.select.names = {"alice"}; }},
      {"provisioning.security.owner_is_admin", [](cg::config& c) { c.provisioning.security.owner_is_admin = true; }},
      {"provisioning.security.member_names", [](cg::config& c) { c.provisioning.security.member_names = {"bob"}; }},
      {"provisioning.security.member_roles", [](cg::config& c) { c.provisioning.security.member_roles = {"support"}; }},
      {"provisioning.security.admin_names", [](cg::config& c) { c.provisioning.security.admin_names = {"carol"}; }},
      {"provisioning.security.admin_roles", [](cg::config& c) { c.provisioning.security.admin_roles = {"moderator"}; }},
      {"provisioning.on_delete", [](cg::config& c) { c.provisioning.on_delete = on_delete::remove; }},
      {"provisioning.reconcile_interval", [](cg::config& c) { c.provisioning.reconcile_interval = seconds{60}; }},
      {"identities.rate_limit", [](cg::config& c) { c.identities.rate_limit = 5; }},
      {"identities.rate_window", [](cg::config& c) { c.identities.rate_window = seconds{5}; }},
      {"log.level", [](cg::config& c) { c.log.level = "debug"; }},
      {"log.format", [](cg::config& c) { c.log.format = cg::log_format::json; }},
  };
}

std::vector<key_change> restart_key_changes() {
  return {
      {"couchdb.url", [](cg::config& c) { c.couchdb.url = "http://10.0.0.1:5984"; }},
      {"couchdb.username", [](cg::config& c) { c.couchdb.username = "admin2"; }},
      {"couchdb.password", [](cg::config& c) { c.couchdb.password = "other"; }},
      {"couchdb.password_file", [](cg::config& c) { c.couchdb.password_file = "/run/pw"; }},
      {"couchdb.request_timeout", [](cg::config& c) { c.couchdb.request_timeout = seconds{5}; }},
      {"couchdb.feed_timeout", [](cg::config& c) { c.couchdb.feed_timeout = seconds{5}; }},
      {"couchdb.heartbeat", [](cg::config& c) { c.couchdb.heartbeat = milliseconds{500}; }},
      {"state_db", [](cg::config& c) { c.state_db = "other-state"; }},
      {"provisioning.enabled", [](cg::config& c) { c.provisioning.enabled = false; }},
      {"provisioning.users_db", [](cg::config& c) { c.provisioning.users_db = "_users2"; }},
      {"provisioning.db_prefix", [](cg::config& c) { c.provisioning.db_prefix = "u-"; }},
      {"provisioning.batch", [](cg::config& c) { c.provisioning.batch = 10; }},
      {"fanin.enabled", [](cg::config& c) { c.fanin.enabled = false; }},
      {"fanin.central_db", [](cg::config& c) { c.fanin.central_db = "c2"; }},
      {"fanin.ids", [](cg::config& c) { c.fanin.ids = id_mode::unchanged; }},
      {"fanin.max_connections", [](cg::config& c) { c.fanin.max_connections = 4; }},
      {"fanin.max_active", [](cg::config& c) { c.fanin.max_active = 4; }},
      {"fanin.rounds", [](cg::config& c) { c.fanin.rounds = 3; }},
      {"fanin.batch_docs", [](cg::config& c) { c.fanin.batch_docs = 4; }},
      {"fanin.batch_bytes", [](cg::config& c) { c.fanin.batch_bytes = 4096; }},
      {"fanin.turn_docs", [](cg::config& c) { c.fanin.turn_docs = 4; }},
      {"fanin.inline_docs", [](cg::config& c) { c.fanin.inline_docs = false; }},
      {"fanin.detection", [](cg::config& c) { c.fanin.detection = cg::detection_mode::sweep; }},
      {"fanin.create_global_changes", [](cg::config& c) { c.fanin.create_global_changes = false; }},
      {"fanin.central_guard", [](cg::config& c) { c.fanin.central_guard = true; }},
      {"fanin.sweep_rate", [](cg::config& c) { c.fanin.sweep_rate = 5; }},
      {"fanin.sweep_interval", [](cg::config& c) { c.fanin.sweep_interval = milliseconds{100}; }},
      {"fanin.checkpoint_interval", [](cg::config& c) { c.fanin.checkpoint_interval = milliseconds{0}; }},
      {"shared.enabled", [](cg::config& c) { c.shared.enabled = true; }},
      {"shared.db", [](cg::config& c) { c.shared.db = "s2"; }},
      {"shared.member_roles", [](cg::config& c) { c.shared.member_roles = {"all"}; }},
      {"shared.admin_roles", [](cg::config& c) { c.shared.admin_roles = {"mods"}; }},
      {"identities.enabled", [](cg::config& c) { c.identities.enabled = true; }},
      {"identities.signup_deadline", [](cg::config& c) { c.identities.signup_deadline = seconds{5}; }},
      {"admin_api.address", [](cg::config& c) { c.admin_api.address = "0.0.0.0"; }},
      {"admin_api.port", [](cg::config& c) { c.admin_api.port = 9000; }},
      {"admin_api.port_file", [](cg::config& c) { c.admin_api.port_file = "/tmp/port"; }},
      {"admin_api.token", [](cg::config& c) { c.admin_api.token = "0123456789abcdef"; }},
      {"admin_api.allow_unauthenticated", [](cg::config& c) { c.admin_api.allow_unauthenticated = true; }},
  };
}

using keys = std::vector<std::string>;

// One changed key: reported once, in its list only; applying the live keys takes it or leaves it.
void check_one_change(const key_change& k, bool live) {
  CAPTURE(k.key);
  const cg::config running;
  cg::config fresh;
  k.change(fresh);
  REQUIRE_FALSE(running == fresh);
  CHECK(cg::live_changes(running, fresh) == (live ? keys{k.key} : keys{}));
  CHECK(cg::restart_needed(running, fresh) == (live ? keys{} : keys{k.key}));
  cg::config applied = running;
  cg::apply_live_keys(applied, fresh);
  CHECK(applied == (live ? fresh : running));
}
}  // namespace

TEST_CASE("config reload: identical configurations change nothing") {
  const cg::config a;
  CHECK(cg::restart_needed(a, a).empty());
  CHECK(cg::live_changes(a, a).empty());
  const auto example = cg::load_config_file(example_path(), no_env());
  REQUIRE(example.errors.empty());
  CHECK(cg::restart_needed(example.cfg, cg::load_config_file(example_path(), no_env()).cfg).empty());
}

TEST_CASE("config reload: log, the provisioning policy and the sign-up rate limit are applied live, never listed as needing a restart") {
  for (const auto& k : live_key_changes()) check_one_change(k, true);
}

TEST_CASE("config reload: every other key is listed as needing a restart, and not applied") {
  for (const auto& k : restart_key_changes()) check_one_change(k, false);
}

TEST_CASE("config reload: several changes are listed once each, in a stable order; applying keeps the restart ones") {
  const cg::config running;
  cg::config fresh;
  for (const auto& k : restart_key_changes()) k.change(fresh);
  for (const auto& k : live_key_changes()) k.change(fresh);
  // Every changed key once, in the table's order (= the example's order).
  keys expected_restart, expected_live;
  for (const auto& k : cg::config_keys()) {
    for (const auto& c : restart_key_changes()) {
      if (c.key == k.name && (expected_restart.empty() || expected_restart.back() != c.key)) expected_restart.push_back(c.key);
    }
    for (const auto& c : live_key_changes()) {
      if (c.key == k.name && (expected_live.empty() || expected_live.back() != c.key)) expected_live.push_back(c.key);
    }
  }
  CHECK(expected_restart.size() == restart_key_changes().size());
  CHECK(cg::restart_needed(running, fresh) == expected_restart);
  CHECK(cg::live_changes(running, fresh) == expected_live);
  CHECK(expected_restart.front() == "couchdb.url");
  CHECK(expected_live.back() == "log.format");
  cg::config applied = running;
  cg::apply_live_keys(applied, fresh);
  CHECK(cg::live_changes(applied, fresh).empty());
  CHECK(cg::restart_needed(applied, fresh) == cg::restart_needed(running, fresh));
  CHECK(applied.couchdb == running.couchdb);
  CHECK(applied.fanin == running.fanin);
}

TEST_CASE("config reload: changed credentials are named by key only, never by value") {
  const std::string old_pw = "old-Secret-7341", new_pw = "new-Secret-9052";
  const auto running = load("couchdb:\n  url: http://usr-Alpha:" + old_pw + "@127.0.0.1:5984\n");
  const auto fresh = load("couchdb:\n  url: http://usr-Beta:" + new_pw + "@127.0.0.1:5984\n");
  REQUIRE(running.errors.empty());
  REQUIRE(fresh.errors.empty());
  REQUIRE(fresh.cfg.couchdb.password == new_pw);
  const auto restart = cg::restart_needed(running.cfg, fresh.cfg);
  CHECK(restart == keys{"couchdb.username", "couchdb.password"});
  for (const auto& k : restart) {
    CHECK_FALSE(contains(k, old_pw));
    CHECK_FALSE(contains(k, new_pw));
    CHECK_FALSE(contains(k, "usr-"));
  }
  CHECK(cg::live_changes(running.cfg, fresh.cfg).empty());
}

TEST_CASE("config reload: an edited file") {
  const std::string before = "provisioning:\n  security:\n    member_roles: [friends]\nfanin:\n  max_active: 8\n";
  const std::string after =
      "provisioning:\n  security:\n    member_roles: [friends, support]\nfanin:\n  max_active: 16\nlog:\n  level: debug\n";
  const auto a = load(before), b = load(after);
  REQUIRE(a.errors.empty());
  REQUIRE(b.errors.empty());
  CHECK(cg::restart_needed(a.cfg, b.cfg) == keys{"fanin.max_active"});
  CHECK(cg::live_changes(a.cfg, b.cfg) == keys{"provisioning.security.member_roles", "log.level"});
}

// ---------------------------------------------------------------------------------------------
// The admin API's token (issue 12, item 4)

TEST_CASE("config: a non-loopback admin API needs a token unless allow_unauthenticated says otherwise") {
  const auto open = load("admin_api: {address: 0.0.0.0}\n");
  const auto e = only_error_at(open, "admin_api.address");
  CHECK(e.line == 1);
  CHECK(contains(e.message, "has no token"));
  CHECK(contains(e.message, "admin_api.token_file"));
  CHECK(contains(e.message, "COUCHGATE_ADMIN_TOKEN"));
  CHECK(contains(e.message, "allow_unauthenticated"));
  for (const char* address : {"::", "192.168.1.10", "couchgate.example.com", "[::]"}) {
    CAPTURE(address);
    CHECK(errors_at(load(std::string("admin_api: {address: '") + address + "'}\n"), "admin_api.address").size() == 1);
  }
  for (const char* address : {"127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"}) {
    CAPTURE(address);
    CHECK(load(std::string("admin_api: {address: '") + address + "'}\n").errors.empty());
  }
  CHECK(load("admin_api: {address: 0.0.0.0, allow_unauthenticated: true}\n").errors.empty());
  const auto with_token = load("admin_api: {address: 0.0.0.0, token: tok-0123456789abcdef}\n");
  CHECK(with_token.errors.empty());
  CHECK(with_token.cfg.admin_api.token == "tok-0123456789abcdef");
  // The environment variable (Dockerfile, compose) gives the token and wins over the file.
  const auto env_token = load("admin_api: {address: 0.0.0.0, token: file-0123456789abcdef}\n",
                              env_of({{"COUCHGATE_ADMIN_TOKEN", "env-0123456789abcdef"}}));
  CHECK(env_token.errors.empty());
  CHECK(env_token.cfg.admin_api.token == "env-0123456789abcdef");
}

TEST_CASE("config: admin_api.token_file, and bad tokens") {
  const temp_file file("token", "file-token-0123456789\n");
  const auto r = load("admin_api: {address: 0.0.0.0, token_file: " + file.path() + "}\n");
  CHECK(r.errors.empty());
  CHECK(r.cfg.admin_api.token == "file-token-0123456789");
  const temp_file empty("token-empty", "\n");
  CHECK(contains(only_error_at(load("admin_api: {token_file: " + empty.path() + "}\n"), "admin_api.token_file").message,
                 "is empty"));
  const auto both = load("admin_api: {token: x-0123456789abcdef, token_file: " + file.path() + "}\n");
  CHECK(contains(only_error_at(both, "admin_api.token_file").message, "cannot be used together"));
  CHECK_FALSE(contains(all_text(both), "0123456789"));
  const auto short_token = load("admin_api: {token: short-tok}\n");
  CHECK(contains(only_error_at(short_token, "admin_api.token").message, "at least 16"));
  CHECK_FALSE(contains(all_text(short_token), "short-tok"));
  const auto spaced = load("admin_api: {token: 'has a space 0123456789'}\n");
  CHECK(contains(only_error_at(spaced, "admin_api.token").message, "printable ASCII"));
  CHECK_FALSE(contains(all_text(spaced), "has a space"));
}

TEST_CASE("config: the credential's setting is named (never its value) for messages about a refused login") {
  CHECK(load("").cfg.couchdb.credential_source.empty());
  CHECK(load("", env_of({{"COUCHDB_USER", "admin"}, {"COUCHDB_PASSWORD", "pw"}})).cfg.couchdb.credential_source ==
        "the environment variable COUCHDB_USER and the environment variable COUCHDB_PASSWORD");
  const temp_file pw("cred-pw", "secret-in-file\n");
  const auto file = load("couchdb: {username: admin, password_file: " + pw.path() + "}\n");
  CHECK(file.cfg.couchdb.credential_source == "couchdb.username and couchdb.password_file");
  CHECK(load("couchdb: {url: 'http://admin:pw@h'}\n").cfg.couchdb.credential_source == "the user info of couchdb.url");
  CHECK(cg::default_config(env_of({{"COUCHDB_URL", "http://admin:pw@h"}})).cfg.couchdb.credential_source ==
        "the user info of the environment variable COUCHDB_URL");
  CHECK(load("couchdb: {username: admin}\n").cfg.couchdb.credential_source == "couchdb.username (no password is set)");
  CHECK_FALSE(contains(file.cfg.couchdb.credential_source, "secret"));
}

// ---------------------------------------------------------------------------------------------
// Secrets in every form (issue 12, item 5): a value echoed in an error message is hidden when it
// could reveal a secret, whatever form the secret takes there.

namespace {
// Loads, then checks that no form of `secret` (nor `pieces`) is in any message, and that there is
// exactly `errors` problems.
void check_hidden(const cg::load_result& r, std::size_t errors, const std::vector<std::string>& forbidden) {
  const std::string text = all_text(r);
  INFO(text);
  CHECK(r.errors.size() == errors);
  for (const auto& f : forbidden) {
    CAPTURE(f);
    CHECK_FALSE(contains(text, f));
  }
}
}  // namespace

TEST_CASE("config secrets: the raw password echoed in another key is hidden") {
  check_hidden(load("state_db: 'Admin-Pass-42'\n", env_of({{"COUCHDB_PASSWORD", "Admin-Pass-42"}})), 1, {"Admin-Pass-42"});
}

TEST_CASE("config secrets: the percent-encoded password is hidden, in either hex case") {
  const auto env = env_of({{"COUCHDB_PASSWORD", "admin-pass"}});
  check_hidden(load("state_db: 'admin%2Dpass'\n", env), 1, {"admin%2Dpass", "%2Dpass", "admin-pass"});
  check_hidden(load("state_db: 'admin%2dpass'\n", env), 1, {"admin%2dpass", "admin-pass"});
  // Wholly encoded, in a key that echoes its value.
  check_hidden(load("log: {level: '%61%64%6d%69%6e%2d%70%61%73%73'}\n", env), 1, {"%61%64%6d", "admin-pass"});
  // The password given encoded in the URL and echoed decoded elsewhere, and the reverse.
  check_hidden(load("couchdb: {url: 'http://u:s3cr%2Ft-word@h'}\nlog: {level: 's3cr/t-word'}\n"), 1, {"s3cr/t-word", "s3cr%2Ft"});
  check_hidden(load("couchdb: {url: 'http://u:s3cr%2Ft-word@h'}\nlog: {level: 's3cr%2ft-word'}\n"), 1, {"s3cr%2ft-word"});
}

TEST_CASE("config secrets: any part of a URL's user info is hidden") {
  // A piece of the password (6 characters in a row) is enough to hide the value.
  check_hidden(load("couchdb: {url: 'http://admin:Tr0ub4dor-and-3@h'}\nstate_db: 'X-tr0ub4dor'\nlog: {level: 'Tr0ub4dor'}\n"),
               2, {"Tr0ub4dor", "4dor-and"});
  // "user:password" as written, elsewhere.
  check_hidden(load("couchdb: {url: 'http://admin:pw%40x12@h'}\nlog: {level: 'admin:pw%40x12'}\n"), 1, {"pw%40x12", "pw@x12"});
  // An invalid URL that carries user info is never echoed.
  check_hidden(load("couchdb: {url: 'ftp://admin:Tr0ub4dor-and-3@h'}\n"), 1, {"Tr0ub4dor", "admin:"});
  check_hidden(cg::default_config(env_of({{"COUCHDB_URL", "http://admin:Tr0ub4dor%2Dand-3@h:99999"}})), 1,
               {"Tr0ub4dor", "%2Dand"});
}

TEST_CASE("config secrets: a prefix or any piece of a password_file's content is hidden") {
  const temp_file secret("pieces", "CorrectHorseBattery\nsecond-line-staple\n");
  const std::string key = "couchdb: {password_file: " + secret.path() + "}\n";
  check_hidden(load(key + "log: {level: 'correcthorse'}\n"), 1, {"correcthorse", "CorrectHorse"});
  check_hidden(load(key + "log: {level: 'CorrectHorse'}\n"), 1, {"CorrectHorse"});
  check_hidden(load(key + "log: {level: 'second-line'}\n"), 1, {"second-line"});
  check_hidden(load(key + "log: {level: 'Battery%0Asecond'}\n"), 1, {"Battery"});
  // An unrelated short value is still shown (only pieces of 6+ characters of a secret count).
  const auto shown = load(key + "log: {level: 'verbose'}\n");
  CHECK(contains(all_text(shown), "'verbose'"));
}

TEST_CASE("config secrets: the admin API token is hidden like a password") {
  const std::string tok = "Adm1nT0ken-0123456789";
  check_hidden(load("admin_api: {token: '" + tok + "'}\nstate_db: '" + tok + "'\n"), 1, {tok, "Adm1nT0ken"});
  check_hidden(load("state_db: 'adm1nt0ken%2D0123'\n", env_of({{"COUCHGATE_ADMIN_TOKEN", tok}})), 1, {"t0ken", "T0ken"});
  const temp_file file("tok", tok + "\n");
  check_hidden(load("admin_api: {token_file: " + file.path() + "}\nlog: {level: '" + tok.substr(0, 10) + "'}\n"), 1,
               {tok.substr(0, 10)});
}
