// Owns: routing and serving the admin API (see admin_api.hpp).
#include "gateway/admin_api.hpp"

#include <httplib.h>

#include <algorithm>
#include <cctype>

namespace couchgate::gateway {

bool constant_time_equal(std::string_view a, std::string_view b) {
  // Runs over all of `a` whatever the contents; b's length is compared, not searched.
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const unsigned char other = b.empty() ? 0 : static_cast<unsigned char>(b[i % b.size()]);
    diff |= static_cast<unsigned char>(static_cast<unsigned char>(a[i]) ^ other);
  }
  return diff == 0;
}

admin_access authorize(std::string_view path, std::string_view authorization_header, std::string_view token) {
  if (token.empty() || path == "/healthz" || path == "/readyz") return admin_access::allowed;
  constexpr std::string_view scheme = "bearer ";
  if (authorization_header.size() <= scheme.size()) return admin_access::missing_token;
  for (std::size_t i = 0; i < scheme.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(authorization_header[i])) != scheme[i]) return admin_access::missing_token;
  }
  std::string_view presented = authorization_header.substr(scheme.size());
  while (!presented.empty() && presented.front() == ' ') presented.remove_prefix(1);
  while (!presented.empty() && (presented.back() == ' ' || presented.back() == '\t')) presented.remove_suffix(1);
  return constant_time_equal(presented, token) ? admin_access::allowed : admin_access::wrong_token;
}

struct admin_api::impl {
  admin_handlers h;
  std::string token;
  httplib::Server server;
  std::thread thread;
};

admin_api::admin_api(admin_handlers h, std::string token, admin_api_limits limits) : impl_(std::make_unique<impl>()) {
  impl_->h = std::move(h);
  impl_->token = std::move(token);
  auto& s = impl_->server;
  auto* self = impl_.get();
  const int threads = std::max(limits.threads, 1);
  s.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<std::size_t>(threads)); };
  s.set_read_timeout(limits.read_timeout);
  s.set_write_timeout(limits.write_timeout);
  s.set_keep_alive_max_count(1);  // one request per connection: no idle keep-alive holds a thread
  s.set_payload_max_length(limits.max_request_bytes);
  s.set_pre_routing_handler([self](const httplib::Request& req, httplib::Response& res) {
    const auto access = authorize(req.path, req.get_header_value("Authorization"), self->token);
    if (access == admin_access::allowed) return httplib::Server::HandlerResponse::Unhandled;
    res.status = 401;
    res.set_header("WWW-Authenticate", "Bearer realm=\"couchgate\"");
    const char* reason = access == admin_access::missing_token
                             ? "this endpoint needs Authorization: Bearer <admin_api token>"
                             : "wrong token";
    res.set_content(nlohmann::json{{"error", "unauthorized"}, {"reason", reason}}.dump() + "\n", "application/json");
    return httplib::Server::HandlerResponse::Handled;
  });
  s.Get("/healthz", [](const httplib::Request&, httplib::Response& res) { res.set_content("ok\n", "text/plain"); });
  s.Get("/readyz", [self](const httplib::Request&, httplib::Response& res) {
    auto [ok, why] = self->h.ready();
    res.status = ok ? 200 : 503;
    res.set_content(ok ? "ready\n" : "not ready: " + why + "\n", "text/plain");
  });
  s.Get("/metrics", [self](const httplib::Request&, httplib::Response& res) {
    res.set_content(self->h.metrics(), "text/plain; version=0.0.4");
  });
  s.Get("/status", [self](const httplib::Request&, httplib::Response& res) {
    res.set_content(self->h.status().dump(2) + "\n", "application/json");
  });
  s.Get("/failures", [self](const httplib::Request&, httplib::Response& res) {
    res.set_content((self->h.failures ? self->h.failures() : nlohmann::json::object()).dump(2) + "\n", "application/json");
  });
  s.Get(R"(/status/users/(.+))", [self](const httplib::Request& req, httplib::Response& res) {
    // httplib hands over the path still percent-encoded in matches; decode it.
    std::string name = httplib::detail::decode_url(req.matches[1].str(), false);
    auto st = self->h.user_status(name);
    if (!st) {
      res.status = 404;
      res.set_content(nlohmann::json{{"error", "not_found"}, {"reason", "unknown user"}}.dump() + "\n", "application/json");
      return;
    }
    res.set_content(st->dump(2) + "\n", "application/json");
  });
  s.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty()) {
      res.set_content(nlohmann::json{{"error", res.status == 404 ? "not_found" : "error"}}.dump() + "\n", "application/json");
    }
  });
  s.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
    res.status = 500;
    res.set_content(nlohmann::json{{"error", "internal"}}.dump() + "\n", "application/json");
  });
}

admin_api::~admin_api() { stop(); }

int admin_api::start(const std::string& address, int port, std::string& error) {
  int bound = port;
  if (port == 0) {
    bound = impl_->server.bind_to_any_port(address);
  } else if (!impl_->server.bind_to_port(address, port)) {
    bound = -1;
  }
  if (bound < 0) {
    error = "cannot listen on " + address + ":" + std::to_string(port);
    return -1;
  }
  impl_->thread = std::thread([this] { impl_->server.listen_after_bind(); });
  return bound;
}

void admin_api::stop() {
  impl_->server.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

}  // namespace couchgate::gateway
