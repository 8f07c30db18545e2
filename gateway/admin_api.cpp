// Owns: routing and serving the admin API (see admin_api.hpp).
#include "gateway/admin_api.hpp"

#include <httplib.h>

namespace couchgate::gateway {

struct admin_api::impl {
  admin_handlers h;
  httplib::Server server;
  std::thread thread;
};

admin_api::admin_api(admin_handlers h) : impl_(std::make_unique<impl>()) {
  impl_->h = std::move(h);
  auto& s = impl_->server;
  auto* self = impl_.get();
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
