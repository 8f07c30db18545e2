// Operations, the pure parts: where `couchgate health` probes, and the environment variables
// that move the admin API (COUCHGATE_ADMIN_ADDRESS / COUCHGATE_ADMIN_PORT).
#include <doctest/doctest.h>

#include <map>
#include <optional>
#include <string>

#include "gateway/config.hpp"
#include "gateway/health.hpp"

namespace cg = couchgate::gateway;

namespace {
cg::env_lookup env_with(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    const auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

cg::admin_api_config api(std::string address, int port, std::string port_file = {}) {
  cg::admin_api_config a;
  a.address = std::move(address);
  a.port = port;
  a.port_file = std::move(port_file);
  return a;
}
}  // namespace

TEST_CASE("health target: wildcard binds are probed on loopback; explicit addresses as they are") {
  std::string error;
  auto t = cg::resolve_health_target(api("0.0.0.0", 8490), std::nullopt, error);
  REQUIRE(t);
  CHECK(t->host == "127.0.0.1");
  CHECK(t->port == 8490);
  t = cg::resolve_health_target(api("::", 9000), std::nullopt, error);
  REQUIRE(t);
  CHECK(t->host == "::1");
  t = cg::resolve_health_target(api("[::]", 9000), std::nullopt, error);
  REQUIRE(t);
  CHECK(t->host == "::1");
  t = cg::resolve_health_target(api("10.1.2.3", 1234), std::nullopt, error);
  REQUIRE(t);
  CHECK(t->host == "10.1.2.3");
  CHECK(t->port == 1234);
}

TEST_CASE("health target: port 0 takes the bound port from port_file; unknown ports are errors") {
  std::string error;
  auto t = cg::resolve_health_target(api("127.0.0.1", 0, "/run/x/port"), std::string("40123\n"), error);
  REQUIRE(t);
  CHECK(t->port == 40123);

  CHECK_FALSE(cg::resolve_health_target(api("127.0.0.1", 0), std::nullopt, error));
  CHECK(error.find("admin_api.port_file is not set") != std::string::npos);
  CHECK_FALSE(cg::resolve_health_target(api("127.0.0.1", 0, "/run/x/port"), std::nullopt, error));
  CHECK(error.find("cannot read admin_api.port_file /run/x/port") != std::string::npos);
  for (const char* bad : {"", "\n", "abc", "12x", "0", "70000", "99999999999999999999", "-5"}) {
    INFO("port file: '" << bad << "'");
    error.clear();
    CHECK_FALSE(cg::resolve_health_target(api("127.0.0.1", 0, "/p"), std::string(bad), error));
    CHECK(error.find("does not hold a port number") != std::string::npos);
  }
}

TEST_CASE("COUCHGATE_ADMIN_ADDRESS / COUCHGATE_ADMIN_PORT override admin_api; bad ports name the variable") {
  // Loopback addresses: a wildcard bind would also need an admin token (a separate rule).
  const std::string yaml = "admin_api:\n  address: 127.0.0.2\n  port: 8490\n";
  auto r = cg::load_config_text(yaml, env_with({{"COUCHGATE_ADMIN_ADDRESS", "127.0.0.1"}, {"COUCHGATE_ADMIN_PORT", "9911"}}));
  REQUIRE(r.errors.empty());
  CHECK(r.cfg.admin_api.address == "127.0.0.1");
  CHECK(r.cfg.admin_api.port == 9911);

  // Unset or empty variables leave the file's values.
  r = cg::load_config_text(yaml, env_with({{"COUCHGATE_ADMIN_ADDRESS", ""}}));
  REQUIRE(r.errors.empty());
  CHECK(r.cfg.admin_api.address == "127.0.0.2");
  CHECK(r.cfg.admin_api.port == 8490);

  for (const char* bad : {"http", "-1", "65536", "80 "}) {
    INFO("COUCHGATE_ADMIN_PORT=" << bad);
    r = cg::load_config_text(yaml, env_with({{"COUCHGATE_ADMIN_PORT", bad}}));
    REQUIRE(r.errors.size() == 1);
    CHECK(r.errors[0].path == "admin_api.port");
    CHECK(r.errors[0].message.find("COUCHGATE_ADMIN_PORT") != std::string::npos);
  }
}
