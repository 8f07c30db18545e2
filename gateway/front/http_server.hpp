#pragma once
// Owns: a generic event-driven HTTP/1.1 server on Beast: the listener (bounded client
// connections) and one session coroutine per connection (plain or TLS on one code path, TLS
// detected per connection when a certificate is configured). Every read and write has a
// deadline: the first byte of a request within idle_timeout, its header within header_timeout
// (slowloris), and the request parser's header and body limits are set before the first read.
// What a request means is the handler's business: the front door's forwarder today, the admin
// API later. The handler gets the parsed header and the still unread body.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "gateway/front/cidr.hpp"
#include "gateway/front/io_threads.hpp"
#include "gateway/front/stream.hpp"

namespace couchgate::gateway::front {

struct connection_info {
  std::string peer;                   // the client's address, for logs and per-address limits
  std::optional<ip_address> peer_ip;
  bool tls = false;                   // arrived over the listener's own TLS
  std::size_t context = 0;            // index of the io_context (thread) serving it
};

using request_parser = http::request_parser<http::buffer_body>;

struct server_exchange {
  any_stream& stream;
  beast::flat_buffer& buffer;  // bytes read past the header (the parser reads the body from here first)
  request_parser& parser;      // header parsed; body unread
  const connection_info& conn;
  // The client's address for this request (secure_request.hpp client_address: behind a trusted
  // proxy, from its X-Forwarded-For); empty until the handler has decided it: conn.peer.
  std::string client{};
  // Arrived over TLS, or from a trusted proxy that says so; decided by the handler.
  bool secure = false;
  // Set while the server drains (a stop, http_server::begin_drain).
  const std::atomic<bool>* draining = nullptr;
  const std::string& client_or_peer() const { return client.empty() ? conn.peer : client; }
  // Whether an answer written now may keep the connection open: what the handler would (`wanted`),
  // unless the server drains: then it says `Connection: close`, so that the client sends its next
  // request on a new connection (elsewhere) rather than racing the close of this one.
  bool keep_alive(bool wanted) const { return wanted && !(draining != nullptr && draining->load()); }
};

// True when the connection may carry another request (response complete, body consumed).
using request_handler = std::function<net::awaitable<bool>(server_exchange&)>;
// The TLS context for a new connection (re-read certificates take effect for new connections
// only); nullptr when the server has no TLS.
using tls_provider = std::function<std::shared_ptr<ssl::context>()>;

struct server_limits {
  std::size_t max_connections = 10000;
  std::size_t header_limit = 64u << 10;
  std::uint64_t body_limit = 256u << 20;
  std::chrono::milliseconds header_timeout{10000};
  std::chrono::milliseconds idle_timeout{60000};
};

struct server_counters {
  std::atomic<std::int64_t> open{0};
  std::atomic<std::int64_t> busy{0};                 // requests in the handler (live feeds included)
  std::atomic<std::uint64_t> accepted{0};
  std::atomic<std::uint64_t> refused_full{0};        // over max_connections
  std::atomic<std::uint64_t> tls_handshake_failures{0};
  std::atomic<std::uint64_t> header_too_large{0};    // 431
  std::atomic<std::uint64_t> body_too_large{0};      // 413 at the header (Content-Length)
  std::atomic<std::uint64_t> timeouts{0};            // header or idle deadline passed
};

class http_server {
 public:
  http_server(io_threads& io, server_limits limits, request_handler handler, tls_provider tls);
  ~http_server();
  http_server(const http_server&) = delete;
  http_server& operator=(const http_server&) = delete;

  // Binds and starts accepting (on context 0); returns the bound port, or -1 with the reason.
  int listen(const std::string& address, int port, std::string& error);
  // Stops accepting (call while the contexts run); open connections end with the contexts.
  void close();
  // From now on a connection closes once its request in flight is answered (no keep-alive).
  void begin_drain() { draining_.store(true); }
  // Destroys the acceptor: after the contexts stopped, before they are destroyed.
  void release_acceptor() { acceptor_.reset(); }
  const server_counters& counters() const { return counters_; }
  // Extra headers (CORS) for the answers the server writes itself once a request's header is
  // parsed (413 on its Content-Length); set before listen().
  using answer_headers_fn = std::function<std::vector<std::pair<std::string, std::string>>(const http::fields&)>;
  void set_answer_headers(answer_headers_fn fn) { answer_headers_ = std::move(fn); }
  // SIGHUP: new limits; each connection takes them up at its next request (open connections
  // above a lowered max_connections stay open).
  void set_limits(const server_limits& limits);

 private:
  net::awaitable<void> accept_loop();
  net::awaitable<void> session(tcp::socket socket, std::size_t context);
  net::awaitable<void> serve(any_stream& stream, beast::flat_buffer& buffer, connection_info& info);

  io_threads& io_;
  server_limits limits() const;
  mutable std::mutex limits_mu_;
  server_limits limits_;  // guarded by limits_mu_
  request_handler handler_;
  tls_provider tls_;
  answer_headers_fn answer_headers_;
  std::unique_ptr<tcp::acceptor> acceptor_;
  bool closed_ = false;
  std::atomic<bool> draining_{false};
  std::atomic<std::size_t> next_context_{0};
  server_counters counters_;
};

}  // namespace couchgate::gateway::front
