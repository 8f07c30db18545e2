// Owns: the listener and the per-connection session loop (see http_server.hpp).
#include "gateway/front/http_server.hpp"

#include <future>

#include "gateway/front/responses.hpp"

namespace couchgate::gateway::front {
namespace {
struct open_guard {
  std::atomic<std::int64_t>& n;
  explicit open_guard(std::atomic<std::int64_t>& c) : n(c) { n.fetch_add(1); }
  ~open_guard() { n.fetch_sub(1); }
};

bool is_timeout(const error_code& ec) { return ec == beast::error::timeout; }
}  // namespace

http_server::http_server(io_threads& io, server_limits limits, request_handler handler, tls_provider tls)
    : io_(io), limits_(limits), handler_(std::move(handler)), tls_(std::move(tls)) {}

http_server::~http_server() = default;

int http_server::listen(const std::string& address, int port, std::string& error) {
  error_code ec;
  const auto ip = net::ip::make_address(address, ec);
  if (ec) {
    error = "front.address '" + address + "' is not an IP address: " + ec.message();
    return -1;
  }
  const tcp::endpoint endpoint{ip, static_cast<unsigned short>(port)};
  auto acceptor = std::make_unique<tcp::acceptor>(io_.context(0));
  acceptor->open(endpoint.protocol(), ec);
  if (!ec) acceptor->set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor->bind(endpoint, ec);
  if (!ec) acceptor->listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    error = "cannot listen on " + address + ":" + std::to_string(port) + ": " + ec.message();
    return -1;
  }
  const int bound = acceptor->local_endpoint().port();
  acceptor_ = std::move(acceptor);
  net::co_spawn(io_.context(0), accept_loop(), net::detached);
  return bound;
}

void http_server::close() {
  if (!acceptor_ || closed_) return;
  closed_ = true;
  // The acceptor belongs to context 0: close it there (or here when that thread is gone).
  auto* acceptor = acceptor_.get();
  std::promise<void> done;
  auto future = done.get_future();
  net::post(io_.context(0), [acceptor, &done] {
    error_code ec;
    acceptor->close(ec);
    done.set_value();
  });
  if (future.wait_for(std::chrono::seconds(2)) != std::future_status::ready) {
    // Context not running: nobody else touches the acceptor.
    error_code ec;
    acceptor->close(ec);
  }
}

void http_server::set_limits(const server_limits& limits) {
  std::lock_guard lk(limits_mu_);
  limits_ = limits;
}

server_limits http_server::limits() const {
  std::lock_guard lk(limits_mu_);
  return limits_;
}

net::awaitable<void> http_server::accept_loop() {
  for (;;) {
    const std::size_t context = next_context_.fetch_add(1) % io_.size();
    error_code ec;
    tcp::socket socket = co_await acceptor_->async_accept(io_.context(context), ec_token(ec));
    if (ec == net::error::operation_aborted || !acceptor_->is_open()) co_return;
    if (ec) {
      // e.g. EMFILE: the listener stays readable, so an immediate retry would spin a core.
      // Try again shortly; the next accept may succeed once descriptors free up.
      net::steady_timer pause(acceptor_->get_executor(), std::chrono::milliseconds(50));
      co_await pause.async_wait(ec_token(ec));
      continue;
    }
    counters_.accepted.fetch_add(1);
    // Without this, Nagle holds a response's last small segment until the client's delayed ACK
    // (~40 ms added to small answers, measured by the benchmark's front-door phase).
    socket.set_option(tcp::no_delay(true), ec);
    if (counters_.open.load() >= static_cast<std::int64_t>(limits().max_connections)) {
      counters_.refused_full.fetch_add(1);
      socket.close(ec);
      continue;
    }
    net::co_spawn(io_.context(context), session(std::move(socket), context), net::detached);
  }
}

net::awaitable<void> http_server::session(tcp::socket socket, std::size_t context) {
  open_guard guard(counters_.open);
  connection_info info;
  info.context = context;
  error_code ec;
  const auto remote = socket.remote_endpoint(ec);
  if (!ec) {
    info.peer = remote.address().to_string();
    info.peer_ip = parse_ip(info.peer);
  }
  // Responses are written in several pieces (header, then the body relayed buffer by buffer):
  // with Nagle's algorithm on, each small last segment would wait for the client's delayed ACK.
  socket.set_option(tcp::no_delay(true), ec);
  beast::tcp_stream tcp_stream(std::move(socket));
  beast::flat_buffer buffer;
  std::shared_ptr<ssl::context> tls_context = tls_ ? tls_() : nullptr;
  if (!tls_context) {
    any_stream stream(std::move(tcp_stream));
    co_await serve(stream, buffer, info);
    stream.close();
    co_return;
  }
  // TLS configured: a TLS ClientHello starts a handshake; plain HTTP is served on the same port
  // so that the handler can refuse it properly (403 with a reason) unless allowed.
  const auto header_timeout = limits().header_timeout;
  tcp_stream.expires_after(header_timeout);
  const bool is_tls = co_await beast::async_detect_ssl(tcp_stream, buffer, ec_token(ec));
  if (ec) {
    if (is_timeout(ec)) counters_.timeouts.fetch_add(1);
    co_return;
  }
  if (!is_tls) {
    any_stream stream(std::move(tcp_stream));
    co_await serve(stream, buffer, info);
    stream.close();
    co_return;
  }
  any_stream stream(std::move(tcp_stream), *tls_context);
  stream.tcp().expires_after(header_timeout);
  const std::size_t used =
      co_await stream.tls().async_handshake(ssl::stream_base::server, buffer.data(), ec_token(ec));
  if (ec) {
    counters_.tls_handshake_failures.fetch_add(1);
    stream.close();
    co_return;
  }
  buffer.consume(used);
  info.tls = true;
  co_await serve(stream, buffer, info);
  stream.close();
}

namespace {

enum class readiness { readable, timed_out, failed };

// Waits until `stream` has bytes to read (or the peer closed), at most `timeout`. Nothing is
// read and no buffer is held meanwhile.
net::awaitable<readiness> wait_readable(any_stream& stream, std::chrono::milliseconds timeout) {
  // TLS: bytes already read off the socket (into Asio's TLS engine, which holds a 17 KB buffer
  // each way per connection whatever this does, or into OpenSSL) never make the socket readable
  // again; only a plain connection waits here.
  if (stream.is_tls()) co_return readiness::readable;
  auto& socket = stream.tcp().socket();
  // The timer's handler may run after this frame is gone (it is only cancelled here): it
  // shares the state, and cancels the socket's wait only while that wait is still on.
  struct shared_state {
    bool waiting = true;
    bool fired = false;
  };
  auto state = std::make_shared<shared_state>();
  net::steady_timer deadline(stream.get_executor());
  deadline.expires_after(timeout);
  deadline.async_wait([state, &socket](const error_code& e) {
    if (!e && state->waiting) {
      state->fired = true;
      error_code ignored;
      socket.cancel(ignored);
    }
  });
  error_code ec;
  co_await socket.async_wait(tcp::socket::wait_read, ec_token(ec));
  state->waiting = false;
  deadline.cancel();
  if (!ec) co_return readiness::readable;
  co_return state->fired ? readiness::timed_out : readiness::failed;
}

}  // namespace

net::awaitable<void> http_server::serve(any_stream& stream, beast::flat_buffer& buffer, connection_info& info) {
  bool first = true;
  for (;;) {
    error_code ec;
    const server_limits lim = limits();  // this request's (a reload may change them)
    // Idle until the first byte of the next request (the first request gets header_timeout),
    // with no read buffer on a plain connection: thousands of idle keep-alive connections may
    // be open. (A TLS connection waits in its read, buffer and TLS engine allocated.)
    if (buffer.size() == 0) {
      const auto idle = first ? lim.header_timeout : lim.idle_timeout;
      const readiness ready = co_await wait_readable(stream, idle);
      if (ready != readiness::readable) {
        if (ready == readiness::timed_out) counters_.timeouts.fetch_add(1);
        co_return;
      }
      stream.tcp().expires_after(stream.is_tls() ? idle : lim.header_timeout);
      const std::size_t n = co_await stream.async_read_some(buffer.prepare(4096), ec_token(ec));
      if (ec) {
        if (is_timeout(ec)) counters_.timeouts.fetch_add(1);
        co_return;
      }
      buffer.commit(n);
    }
    // Draining (a stop): a kept-alive connection takes no new request; the client sends it
    // again elsewhere, as on any closed keep-alive connection.
    if (!first && draining_.load()) co_return;
    first = false;
    request_parser parser;
    parser.header_limit(static_cast<std::uint32_t>(std::min<std::size_t>(lim.header_limit, UINT32_MAX)));
    parser.body_limit(lim.body_limit);
    stream.tcp().expires_after(lim.header_timeout);
    co_await http::async_read_header(stream, buffer, parser, ec_token(ec));
    if (ec) {
      if (ec == http::error::header_limit) {
        counters_.header_too_large.fetch_add(1);
        co_await write_json_error(stream, http::status::request_header_fields_too_large, "header_too_large",
                                  "the request header is larger than front.max_header_bytes", false,
                                  lim.idle_timeout);
      } else if (ec == http::error::body_limit) {
        counters_.body_too_large.fetch_add(1);
        // A named local: GCC 12 destroys a conditional's temporary twice inside co_await.
        header_list extra;
        if (answer_headers_) extra = answer_headers_(parser.get());
        co_await write_json_error(stream, http::status::payload_too_large, "too_large",
                                  "the request body is larger than front.max_body_bytes", false, lim.idle_timeout,
                                  extra);
      } else if (is_timeout(ec)) {
        counters_.timeouts.fetch_add(1);
      } else if (ec != http::error::end_of_stream && ec != net::error::eof && ec != net::error::connection_reset) {
        co_await write_json_error(stream, http::status::bad_request, "bad_request", "malformed HTTP request", false,
                                  lim.idle_timeout);
      }
      co_return;
    }
    // A request without a body, all read (no pipelined bytes behind it): the buffer is not
    // needed while the answer is awaited (a queued request, a parked live feed).
    if (parser.is_done() && buffer.size() == 0) buffer.shrink_to_fit();
    server_exchange exchange{stream, buffer, parser, info};
    exchange.draining = &draining_;
    bool keep = false;
    {
      open_guard busy(counters_.busy);
      keep = co_await handler_(exchange);
    }
    if (!keep || draining_.load()) co_return;
    if (buffer.size() == 0) buffer.shrink_to_fit();  // what the request's body grew, too
  }
}

}  // namespace couchgate::gateway::front
