// The `front:` section: every key read, the TLS rule (enabled needs TLS, require_secure or an
// explicit allow_insecure), trusted proxy CIDRs, unknown keys, and reload classification.
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <fstream>
#include <functional>
#include <utility>
#include <vector>
#include <string>

#include "gateway/config.hpp"

namespace cg = couchgate::gateway;
using std::chrono::milliseconds;
using std::chrono::seconds;

namespace {
cg::load_result load(const std::string& yaml) {
  return cg::load_config_text(yaml, [](const std::string&) -> std::optional<std::string> { return std::nullopt; });
}
bool has_error(const cg::load_result& r, const std::string& path, const std::string& words) {
  for (const auto& e : r.errors) {
    if (e.path == path && e.message.find(words) != std::string::npos) return true;
  }
  return false;
}
std::string temp_file(const std::string& content) {
  char tmpl[] = "/tmp/couchgate-front-XXXXXX";
  std::string dir = mkdtemp(tmpl);
  std::string path = dir + "/f.pem";
  std::ofstream(path) << content;
  return path;
}
}  // namespace

TEST_CASE("front config: off by default, with the documented defaults") {
  const auto r = load("");
  REQUIRE(r.errors.empty());
  const auto& f = r.cfg.front;
  CHECK_FALSE(f.enabled);
  CHECK(f.scheme_header == "X-Forwarded-Proto");
  CHECK_FALSE(f.allow_insecure);
  CHECK_FALSE(f.require_secure);
  // One user's in-flight share is well below the upstream pool; more of its requests queue.
  CHECK(f.max_requests_per_user == 16);
  CHECK(f.user_queue_length == 1024);
  CHECK(f.user_queue_timeout == seconds{60});
  CHECK(f.upstream.max_connections == 64);
  CHECK(f.upstream.wait_timeout == seconds{30});
  CHECK(f.max_requests_per_user < f.upstream.max_connections);
  CHECK_FALSE(f.cors.enable);
  CHECK(f.cors.origins.empty());
  CHECK(f.cors.max_age == 600);
}

TEST_CASE("front config: every key is read") {
  const std::string cert = temp_file("cert");
  const std::string key = temp_file("key");
  const auto r = load("front:\n  enabled: true\n  address: 0.0.0.0\n  port: 0\n  port_file: /tmp/p\n"
                      "  tls:\n    cert_file: " + cert + "\n    key_file: " + key + "\n"
                      "  allow_insecure: false\n  require_secure: false\n"
                      "  trusted_proxies: [10.0.0.0/8, '::1', 192.168.1.7]\n  scheme_header: $WSIS\n"
                      "  threads: 2\n  max_connections: 500\n  max_body_bytes: 64MiB\n  max_header_bytes: 16KiB\n"
                      "  header_timeout: 5s\n  idle_timeout: 2m\n  session_cache_ttl: 1500ms\n  route_cache_ttl: 15m\n"
                      "  max_requests_per_user: 8\n  user_queue_length: 100\n  user_queue_timeout: 20s\n"
                      "  auth_failure_limit: 5\n  auth_failure_window: 30s\n"
                      "  cors:\n    enable: true\n    origins: ['https://a.example', '*']\n    credentials: true\n"
                      "    methods: [GET, PUT]\n    headers: [Authorization, X-Foo]\n    max_age: 3600\n"
                      "  upstream:\n    max_connections: 4\n    wait_timeout: 250ms\n    read_timeout: 90s\n");
  INFO(cg::format_errors("t.yaml", r.errors));
  REQUIRE(r.errors.empty());
  const auto& f = r.cfg.front;
  CHECK(f.enabled);
  CHECK(f.address == "0.0.0.0");
  CHECK(f.port == 0);
  CHECK(f.port_file == "/tmp/p");
  CHECK(f.tls.cert_file == cert);
  CHECK(f.tls.key_file == key);
  CHECK(f.trusted_proxies == std::vector<std::string>{"10.0.0.0/8", "::1", "192.168.1.7"});
  CHECK(f.scheme_header == "$WSIS");
  CHECK(f.threads == 2);
  CHECK(f.max_connections == 500);
  CHECK(f.max_body_bytes == 64u << 20);
  CHECK(f.max_header_bytes == 16u << 10);
  CHECK(f.header_timeout == seconds{5});
  CHECK(f.idle_timeout == seconds{120});
  CHECK(f.session_cache_ttl == milliseconds{1500});
  CHECK(f.route_cache_ttl == std::chrono::minutes{15});
  CHECK(cg::config{}.front.route_cache_ttl == std::chrono::minutes{10});  // the default
  CHECK(f.max_requests_per_user == 8);
  CHECK(f.user_queue_length == 100);
  CHECK(f.user_queue_timeout == seconds{20});
  CHECK(f.cors.enable);
  CHECK(f.cors.origins == std::vector<std::string>{"https://a.example", "*"});
  CHECK(f.cors.credentials);
  CHECK(f.cors.methods == std::vector<std::string>{"GET", "PUT"});
  CHECK(f.cors.headers == std::vector<std::string>{"Authorization", "X-Foo"});
  CHECK(f.cors.max_age == 3600);
  CHECK(f.auth_failure_limit == 5);
  CHECK(f.auth_failure_window == seconds{30});
  CHECK(f.upstream.max_connections == 4);
  CHECK(f.upstream.wait_timeout == milliseconds{250});
  CHECK(f.upstream.read_timeout == seconds{90});
}

TEST_CASE("front config: enabled without TLS needs require_secure or an explicit allow_insecure") {
  const auto bare = load("front:\n  enabled: true\n");
  CHECK(has_error(bare, "front.enabled", "needs TLS"));
  CHECK(load("front:\n  enabled: true\n  allow_insecure: true\n").errors.empty());
  CHECK(load("front:\n  enabled: true\n  require_secure: true\n  trusted_proxies: [127.0.0.1]\n").errors.empty());
  // require_secure with nobody trusted would refuse everything.
  CHECK(has_error(load("front:\n  enabled: true\n  require_secure: true\n"), "front.trusted_proxies", "must list"));
  CHECK(has_error(load("front:\n  enabled: true\n  require_secure: true\n  allow_insecure: true\n  trusted_proxies: [::1]\n"),
                  "front.allow_insecure", "cannot be true together"));
  // Disabled: nothing is required.
  CHECK(load("front:\n  enabled: false\n").errors.empty());
}

TEST_CASE("front config: TLS files come in pairs and must be readable") {
  const std::string cert = temp_file("x");
  CHECK(has_error(load("front:\n  enabled: true\n  tls:\n    cert_file: " + cert + "\n"), "front.tls.key_file",
                  "must be set together"));
  const auto missing = load("front:\n  enabled: true\n  tls:\n    cert_file: /nonexistent/c.pem\n    key_file: " + cert + "\n");
  CHECK(has_error(missing, "front.tls.cert_file", "cannot read"));
}

TEST_CASE("front config: bad values are all reported with their key") {
  const auto r = load("front:\n  enabled: true\n  allow_insecure: true\n  trusted_proxies: [10.0.0.0/33, nonsense, 10.1.0.0/16]\n"
                      "  scheme_header: 'X Proto'\n  max_body_bytes: 10\n  upstream:\n    max_connections: 0\n"
                      "    max_conections: 3\n  prot: 80\n");
  INFO(cg::format_errors("t.yaml", r.errors));
  CHECK(has_error(r, "front.trusted_proxies[0]", "CIDR"));
  CHECK(has_error(r, "front.trusted_proxies[1]", "CIDR"));
  CHECK_FALSE(has_error(r, "front.trusted_proxies[2]", "CIDR"));
  CHECK(has_error(r, "front.scheme_header", "header name"));
  CHECK(has_error(r, "front.max_body_bytes", "at least"));
  CHECK(has_error(r, "front.upstream.max_connections", "between"));
  CHECK(has_error(r, "front.upstream.max_conections", "did you mean 'max_connections'"));
  CHECK(has_error(r, "front.prot", "did you mean 'port'"));
}

TEST_CASE("front config: the listener, TLS policy and upstream pool need a restart") {
  const std::vector<std::pair<std::string, std::function<void(cg::config&)>>> changes{
      {"front.enabled", [](cg::config& c) { c.front.enabled = true; }},
      {"front.address", [](cg::config& c) { c.front.address = "0.0.0.0"; }},
      {"front.port", [](cg::config& c) { c.front.port = 7000; }},
      {"front.allow_insecure", [](cg::config& c) { c.front.allow_insecure = true; }},
      {"front.require_secure", [](cg::config& c) { c.front.require_secure = true; }},
      {"front.trusted_proxies", [](cg::config& c) { c.front.trusted_proxies = {"10.0.0.0/8"}; }},
      {"front.scheme_header", [](cg::config& c) { c.front.scheme_header = "X-Scheme"; }},
      {"front.threads", [](cg::config& c) { c.front.threads = 2; }},
      {"front.upstream.max_connections", [](cg::config& c) { c.front.upstream.max_connections = 2; }},
      {"front.upstream.wait_timeout", [](cg::config& c) { c.front.upstream.wait_timeout = milliseconds{1}; }},
      {"front.upstream.read_timeout", [](cg::config& c) { c.front.upstream.read_timeout = seconds{2}; }},
  };
  for (const auto& [key, change] : changes) {
    CAPTURE(key);
    const cg::config running;
    cg::config fresh;
    change(fresh);
    CHECK(cg::restart_needed(running, fresh) == std::vector<std::string>{key});
    CHECK(cg::live_changes(running, fresh).empty());
    cg::config applied = running;
    cg::apply_live_keys(applied, fresh);
    CHECK(applied == running);
  }
}

TEST_CASE("front config: certificate paths, client limits and rate limits are applied live on SIGHUP") {
  const std::vector<std::pair<std::string, std::function<void(cg::config&)>>> changes{
      {"front.tls.cert_file", [](cg::config& c) { c.front.tls.cert_file = "/etc/new.pem"; }},
      {"front.tls.key_file", [](cg::config& c) { c.front.tls.key_file = "/etc/new.key"; }},
      {"front.max_connections", [](cg::config& c) { c.front.max_connections = 5; }},
      {"front.max_body_bytes", [](cg::config& c) { c.front.max_body_bytes = 4096; }},
      {"front.max_header_bytes", [](cg::config& c) { c.front.max_header_bytes = 4096; }},
      {"front.header_timeout", [](cg::config& c) { c.front.header_timeout = milliseconds{500}; }},
      {"front.idle_timeout", [](cg::config& c) { c.front.idle_timeout = milliseconds{500}; }},
      {"front.session_cache_ttl", [](cg::config& c) { c.front.session_cache_ttl = milliseconds{0}; }},
      {"front.route_cache_ttl", [](cg::config& c) { c.front.route_cache_ttl = milliseconds{0}; }},
      {"front.max_requests_per_user", [](cg::config& c) { c.front.max_requests_per_user = 2; }},
      {"front.auth_failure_limit", [](cg::config& c) { c.front.auth_failure_limit = 2; }},
      {"front.auth_failure_window", [](cg::config& c) { c.front.auth_failure_window = milliseconds{2000}; }},
  };
  for (const auto& [key, change] : changes) {
    CAPTURE(key);
    const cg::config running;
    cg::config fresh;
    change(fresh);
    CHECK(cg::live_changes(running, fresh) == std::vector<std::string>{key});
    CHECK(cg::restart_needed(running, fresh).empty());
    cg::config applied = running;
    cg::apply_live_keys(applied, fresh);
    CHECK(applied == fresh);
  }
}

TEST_CASE("front config: the live feed keys (issue 14)") {
  CHECK(load("front:\n  enabled: false\n").cfg.front.max_parked_per_user == 32);
  const auto r = load("front:\n  max_parked_per_user: 5\n  feed_sweep_interval: 250ms\n");
  INFO(cg::format_errors("t.yaml", r.errors));
  REQUIRE(r.errors.empty());
  CHECK(r.cfg.front.max_parked_per_user == 5);
  CHECK(r.cfg.front.feed_sweep_interval == milliseconds{250});
  CHECK_FALSE(load("front:\n  max_parked_per_user: 0\n").errors.empty());
  CHECK_FALSE(load("front:\n  feed_sweep_interval: 10ms\n").errors.empty());
}
