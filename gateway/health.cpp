// Owns: the `couchgate health` target resolution and probe (see health.hpp).
#include "gateway/health.hpp"

#include <httplib.h>

#include <charconv>

namespace couchgate::gateway {

std::optional<health_target> resolve_health_target(const admin_api_config& api, const std::optional<std::string>& port_file_content,
                                                   std::string& error) {
  health_target t;
  t.host = api.address;
  if (t.host.size() > 2 && t.host.front() == '[' && t.host.back() == ']') t.host = t.host.substr(1, t.host.size() - 2);
  if (t.host == "0.0.0.0" || t.host.empty()) t.host = "127.0.0.1";
  if (t.host == "::") t.host = "::1";
  t.port = api.port;
  if (t.port == 0) {
    if (api.port_file.empty()) {
      error = "admin_api.port is 0 (a free port) and admin_api.port_file is not set: the bound port is unknown";
      return std::nullopt;
    }
    if (!port_file_content) {
      error = "cannot read admin_api.port_file " + api.port_file + " (is the daemon running?)";
      return std::nullopt;
    }
    // "40123\n" as the daemon writes it.
    const std::string& s = *port_file_content;
    const std::size_t end = s.find_last_not_of(" \r\n") + 1;  // npos + 1 == 0 for blanks only
    int port = 0;
    const auto [stop, ec] = std::from_chars(s.data(), s.data() + end, port);
    if (end == 0 || ec != std::errc() || stop != s.data() + end || port < 1 || port > 65535) {
      error = "admin_api.port_file " + api.port_file + " does not hold a port number";
      return std::nullopt;
    }
    t.port = port;
  }
  return t;
}

health_result probe_health(const health_target& target, bool ready, std::chrono::milliseconds timeout) {
  httplib::Client client(target.host, target.port);
  const auto secs = std::chrono::duration_cast<std::chrono::seconds>(timeout);
  const auto usecs = std::chrono::duration_cast<std::chrono::microseconds>(timeout - secs);
  client.set_connection_timeout(secs.count(), usecs.count());
  client.set_read_timeout(secs.count(), usecs.count());
  client.set_write_timeout(secs.count(), usecs.count());
  health_result r;
  auto res = client.Get(ready ? "/readyz" : "/healthz");
  if (!res) {
    r.detail = "no answer from the admin API at " + target.host + ":" + std::to_string(target.port) + ": " +
               httplib::to_string(res.error());
    return r;
  }
  r.status = res->status;
  r.healthy = res->status == 200;
  r.detail = res->body.substr(0, res->body.find('\n'));
  return r;
}

}  // namespace couchgate::gateway
