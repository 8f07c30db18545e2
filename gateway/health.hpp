#pragma once
// Owns: `couchgate health`: where the running daemon's admin API is (from the same config file
// and environment the daemon reads), and the GET /healthz (or /readyz) probe against it. It is the
// container's HEALTHCHECK, so the image needs no HTTP client of its own.
#include <chrono>
#include <optional>
#include <string>

#include "gateway/config.hpp"

namespace couchgate::gateway {

struct health_target {
  std::string host;  // an address to connect to (a wildcard bind address becomes loopback)
  int port = 0;
};

// Pure: the address to probe for an admin API configured as `api`. A wildcard bind (0.0.0.0, ::)
// is probed on loopback of the same family. Port 0 means "a free port": the bound one is read from
// port_file_content (nullopt when there is no port_file or it could not be read). On failure,
// nullopt and `error` says why.
std::optional<health_target> resolve_health_target(const admin_api_config& api, const std::optional<std::string>& port_file_content,
                                                   std::string& error);

struct health_result {
  bool healthy = false;
  int status = 0;        // HTTP status, 0 when no answer
  std::string detail;    // the answer's first line, or the transport error
};

// GET http://target/healthz (or /readyz when ready is set), waiting at most timeout.
health_result probe_health(const health_target& target, bool ready, std::chrono::milliseconds timeout);

}  // namespace couchgate::gateway
