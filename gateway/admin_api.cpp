// Owns: routing and serving the admin API (see admin_api.hpp).
#include "gateway/admin_api.hpp"

#include <algorithm>
#include <exception>

#include "gateway/front/http_server.hpp"
#include "gateway/front/io_threads.hpp"
#include "gateway/front/responses.hpp"
#include "gateway/front/route.hpp"
#include "replicator/transport/header_text.hpp"

namespace couchgate::gateway {

using namespace front;

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
  if (authorization_header.size() <= scheme.size() || !replicator::starts_with_ascii_ci(authorization_header, scheme)) {
    return admin_access::missing_token;
  }
  const std::string_view presented = replicator::trim_ows(authorization_header.substr(scheme.size()));
  return constant_time_equal(presented, token) ? admin_access::allowed : admin_access::wrong_token;
}

namespace {
// %XX decoded ('+' stays '+': a path, not a form); a malformed escape leaves it as it is.
std::string decode_path(std::string_view s) {
  auto decoded = percent_decode(s);
  return decoded ? std::move(*decoded) : std::string(s);
}

// One answer: status, body, content type (extra headers for the 401).
struct admin_answer {
  http::status status = http::status::ok;
  std::string body;
  std::string content_type = "application/json";
  header_list headers;
};

admin_answer json_answer(http::status status, const nlohmann::json& j, int indent = -1) {
  return {status, j.dump(indent) + "\n", "application/json", {}};
}

admin_answer text_answer(http::status status, std::string body, std::string content_type = "text/plain") {
  return {status, std::move(body), std::move(content_type), {}};
}

constexpr std::string_view user_prefix = "/status/users/";
}  // namespace

struct admin_api::impl {
  admin_handlers h;
  std::string token;
  admin_api_limits limits;
  // Destruction order (reverse of declaration): the contexts go first (sessions destroyed with
  // them still reach the server's counters), the pool has been joined before.
  std::unique_ptr<net::thread_pool> pool;
  std::unique_ptr<http_server> server;
  std::unique_ptr<io_threads> io;
  bool running = false;

  // The answers that never wait on CouchDB, computed on the I/O thread.
  admin_answer quick(std::string_view path) const {
    if (path == "/healthz") return text_answer(http::status::ok, "ok\n");
    auto [ok, why] = h.ready();
    return text_answer(ok ? http::status::ok : http::status::service_unavailable,
                       ok ? std::string("ready\n") : "not ready: " + why + "\n");
  }

  // Every other route (may block briefly on CouchDB: runs on the pool).
  admin_answer slow(const std::string& path) const {
    try {
      if (path == "/metrics") return text_answer(http::status::ok, h.metrics(), "text/plain; version=0.0.4");
      if (path == "/status") return json_answer(http::status::ok, h.status(), 2);
      if (path == "/failures") return json_answer(http::status::ok, h.failures ? h.failures() : nlohmann::json::object(), 2);
      if (path == "/identities/conflicts") {
        auto c = h.identity_conflicts ? h.identity_conflicts() : std::nullopt;
        if (!c) return json_answer(http::status::not_found, {{"error", "not_found"}, {"reason", "identities are not enabled"}});
        return json_answer(http::status::ok, *c, 2);
      }
      if (path.size() > user_prefix.size() && path.compare(0, user_prefix.size(), user_prefix) == 0) {
        auto st = h.user_status(decode_path(std::string_view(path).substr(user_prefix.size())));
        if (!st) return json_answer(http::status::not_found, {{"error", "not_found"}, {"reason", "unknown user"}});
        return json_answer(http::status::ok, *st, 2);
      }
      return json_answer(http::status::not_found, {{"error", "not_found"}});
    } catch (const std::exception&) {
      return json_answer(http::status::internal_server_error, {{"error", "internal"}});
    }
  }

  net::awaitable<bool> handle(server_exchange& ex) {
    const auto& req = ex.parser.get();
    // The admin API takes no bodies: a request with one is answered and the connection closed.
    const bool keep = req.keep_alive() && ex.parser.is_done();
    const std::string_view target(req.target().data(), req.target().size());
    const std::string path(target.substr(0, target.find('?')));
    admin_answer a;
    const auto auth = req.find(http::field::authorization);
    const auto access =
        authorize(decode_path(path), auth == req.end() ? std::string_view{} : std::string_view(auth->value().data(), auth->value().size()), token);
    if (access != admin_access::allowed) {
      const char* reason = access == admin_access::missing_token
                               ? "this endpoint needs Authorization: Bearer <admin_api token>"
                               : "wrong token";
      a = json_answer(http::status::unauthorized, {{"error", "unauthorized"}, {"reason", reason}});
      a.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"couchgate\"");
    } else if (req.method() != http::verb::get && req.method() != http::verb::head) {
      a = json_answer(http::status::not_found, {{"error", "not_found"}});
    } else if (path == "/healthz" || path == "/readyz") {
      a = quick(path);
    } else {
      // On a worker: a handler waiting on CouchDB never holds the I/O thread (/healthz stays up).
      a = co_await net::co_spawn(
          pool->get_executor(), [this, &path]() -> net::awaitable<admin_answer> { co_return slow(path); },
          net::use_awaitable);
    }
    if (req.method() == http::verb::head) a.body.clear();
    a.headers.emplace_back("Content-Type", a.content_type);
    const bool ok = co_await write_response(ex.stream, a.status, std::move(a.body), ex.keep_alive(keep), limits.idle_timeout, a.headers);
    co_return ok && keep;
  }
};

admin_api::admin_api(admin_handlers h, std::string token, admin_api_limits limits) : impl_(std::make_unique<impl>()) {
  impl_->h = std::move(h);
  impl_->token = std::move(token);
  impl_->limits = limits;
}

admin_api::~admin_api() { stop(); }

int admin_api::start(const std::string& address, int port, std::string& error) {
  auto& d = *impl_;
  if (d.running) {
    error = "the admin API is already running";
    return -1;
  }
  // A host name (e.g. localhost) is resolved here: the server listens on an IP address.
  std::string ip = address;
  error_code ec;
  net::ip::make_address(address, ec);
  if (ec) {
    net::io_context resolve_context;
    tcp::resolver resolver(resolve_context);
    const auto found = resolver.resolve(address, std::to_string(port), ec);
    if (ec || found.empty()) {
      error = "cannot listen on " + address + ":" + std::to_string(port) + ": " +
              (ec ? ec.message() : std::string("no address"));
      return -1;
    }
    ip = found.begin()->endpoint().address().to_string();
  }
  const auto& l = d.limits;
  server_limits sl;
  sl.max_connections = std::max<std::size_t>(l.max_connections, 1);
  sl.header_limit = l.max_request_bytes;
  sl.body_limit = l.max_request_bytes;
  sl.header_timeout = l.header_timeout;
  sl.idle_timeout = l.idle_timeout;
  d.io = std::make_unique<io_threads>(1);
  d.pool = std::make_unique<net::thread_pool>(std::max<std::size_t>(l.worker_threads, 1));
  auto* self = impl_.get();
  d.server = std::make_unique<http_server>(
      *d.io, sl, [self](server_exchange& ex) { return self->handle(ex); }, nullptr);
  const int bound = d.server->listen(ip, port, error);
  if (bound < 0) {
    if (ip != address) error += " (" + address + ")";
    d.server.reset();
    d.pool->stop();
    d.pool->join();
    d.pool.reset();
    d.io.reset();
    return -1;
  }
  d.io->start();
  d.running = true;
  return bound;
}

void admin_api::stop() {
  auto& d = *impl_;
  if (!d.running) return;
  d.running = false;
  d.server->close();
  d.io->stop();
  // Handlers still running on the pool finish (they refer to sessions the contexts own).
  d.pool->join();
  d.server->release_acceptor();
  d.io.reset();
  d.server.reset();
  d.pool.reset();
}

}  // namespace couchgate::gateway
