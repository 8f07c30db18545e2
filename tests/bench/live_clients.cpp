// Owns: the live-feeds phase's Asio clients (see live_clients.hpp).
#include "tests/bench/live_clients.hpp"

// GCC 12 reports a false mismatched-new-delete on Asio's coroutine frames (Asio's own operator
// new/delete pair), as in gateway/front/forwarder.cpp.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

#include <openssl/evp.h>

#include <nlohmann/json.hpp>

#include "gateway/front/asio.hpp"
#include "tests/support/harness.hpp"

namespace couchgate::bench {

namespace {
using namespace couchgate::gateway::front;  // net, beast, http, tcp, error_code, ec_token
using json = nlohmann::json;

std::string seq_text(const json& seq) {
  if (seq.is_string()) return test::enc(seq.get<std::string>());
  if (seq.is_number()) return seq.dump();
  return "0";
}

net::awaitable<void> pause(std::chrono::steady_clock::duration d) {
  net::steady_timer t(co_await net::this_coro::executor);
  t.expires_after(d);
  error_code ec;
  co_await t.async_wait(ec_token(ec));
}
}  // namespace

struct live_fleet::impl {
  net::io_context io{1};
  tcp::endpoint to;
  // One client's whole life (a member of a nested class: it may use the fleet's privates).
  static net::awaitable<void> client(live_fleet* self, std::size_t k, std::chrono::steady_clock::time_point t0);
};

net::awaitable<void> live_fleet::impl::client(live_fleet* self, std::size_t k, std::chrono::steady_clock::time_point t0) {
  const auto& spec = self->clients_[k];
  const auto start_at = t0 + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                 std::chrono::duration<double>(static_cast<double>(k) / self->ramp_per_s_));
  co_await pause(start_at - std::chrono::steady_clock::now());
  beast::tcp_stream stream(co_await net::this_coro::executor);
  beast::flat_buffer buffer;
  bool connected = false, in_loop = false, first_poll = true;
  // PouchDB's retry: wait 1 s after a failure, doubling up to 16 s while failures continue.
  auto backoff = std::chrono::seconds(1);
  auto failed = [&backoff] {
    auto d = backoff;
    backoff = std::min(backoff * 2, std::chrono::seconds(16));
    return d;
  };
  json since;
  auto note_error = [self](const std::string& what) {
    std::lock_guard lk(self->mu_);
    if (self->first_error_.empty()) self->first_error_ = what;
  };
  while (!self->stop_.load()) {
    error_code ec;
    if (!connected) {
      buffer.clear();
      stream.expires_after(std::chrono::seconds(15));
      co_await stream.async_connect(self->impl_->to, ec_token(ec));
      if (ec) {
        ++self->transport_errors_;
        note_error("connect: " + ec.message());
        stream.socket().close(ec);
        co_await pause(failed());
        continue;
      }
      stream.socket().set_option(tcp::no_delay(true), ec);
      connected = true;
    }
    const std::string target = in_loop ? spec.path + "/_changes?feed=longpoll&since=" + seq_text(since) +
                                             "&timeout=" + std::to_string(self->timeout_.count())
                                       : spec.path;
    http::request<http::empty_body> req{http::verb::get, target, 11};
    req.set(http::field::host, self->host_ + ":" + std::to_string(self->port_));
    req.set(http::field::authorization, spec.authorization);
    req.set(http::field::accept, "application/json");
    req.keep_alive(true);
    stream.expires_after(self->timeout_ + std::chrono::seconds(60));
    co_await http::async_write(stream, req, ec_token(ec));
    if (!ec && in_loop && first_poll) {
      first_poll = false;
      ++self->polling_;
    }
    http::response_parser<http::string_body> parser;
    parser.body_limit(64u << 20);
    if (!ec) co_await http::async_read(stream, buffer, parser, ec_token(ec));
    const auto t = std::chrono::steady_clock::now();
    if (ec) {
      if (self->stop_.load()) break;
      ++self->transport_errors_;
      note_error(target.substr(0, 40) + ": " + ec.message());
      stream.socket().close(ec);
      connected = false;
      co_await pause(failed());
      continue;
    }
    auto& res = parser.get();
    if (!res.keep_alive()) {
      stream.socket().close(ec);
      connected = false;
    }
    if (res.result_int() != 200) {
      {
        std::lock_guard lk(self->mu_);
        ++self->refusals_[static_cast<int>(res.result_int())];
        if (self->first_error_.empty()) self->first_error_ = target.substr(0, 40) + ": HTTP " + std::to_string(res.result_int()) + " " + res.body().substr(0, 200);
      }
      co_await pause(failed());
      continue;
    }
    json body = json::parse(res.body(), nullptr, false);
    if (!body.is_object()) {
      note_error(target.substr(0, 40) + ": not JSON");
      co_await pause(failed());
      continue;
    }
    backoff = std::chrono::seconds(1);
    if (!in_loop) {
      since = body.value("update_seq", json(0));
      in_loop = true;
      ++self->waiting_;
      continue;
    }
    ++self->answers_;
    if (body.contains("results") && body["results"].is_array()) {
      for (const auto& row : body["results"]) {
        if (row.is_object() && row.contains("id") && row["id"].is_string()) self->cb_(k, row["id"].get<std::string>(), t);
      }
    }
    if (body.contains("last_seq") && !body["last_seq"].is_null()) since = body["last_seq"];
  }
}

std::string basic_auth(const std::string& user, const std::string& password) {
  const std::string in = user + ":" + password;
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  out.resize(static_cast<std::size_t>(std::max(n, 0)));
  return "Basic " + out;
}

live_fleet::live_fleet(std::string host, int port, std::vector<live_client_spec> clients, on_row cb, int ramp_per_s,
                       std::chrono::milliseconds longpoll_timeout)
    : host_(std::move(host)),
      port_(port),
      clients_(std::move(clients)),
      cb_(std::move(cb)),
      ramp_per_s_(std::max(1, ramp_per_s)),
      timeout_(longpoll_timeout),
      impl_(std::make_unique<impl>()) {}

live_fleet::~live_fleet() { stop(); }

std::map<int, std::uint64_t> live_fleet::refusals() const {
  std::lock_guard lk(mu_);
  return refusals_;
}

std::string live_fleet::first_error() const {
  std::lock_guard lk(mu_);
  return first_error_;
}

void live_fleet::start() {
  error_code ec;
  tcp::resolver resolver(impl_->io);
  auto results = resolver.resolve(host_, std::to_string(port_), ec);
  if (ec || results.empty()) {
    std::lock_guard lk(mu_);
    first_error_ = "cannot resolve " + host_ + ": " + ec.message();
    return;
  }
  impl_->to = results.begin()->endpoint();
  const auto t0 = std::chrono::steady_clock::now();
  for (std::size_t k = 0; k < clients_.size(); ++k) {
    net::co_spawn(impl_->io, impl::client(this, k, t0), net::detached);
  }
  thread_ = std::thread([this] { impl_->io.run(); });
}

void live_fleet::stop() {
  if (stop_.exchange(true)) return;
  impl_->io.stop();
  if (thread_.joinable()) thread_.join();
  impl_.reset();  // destroys every client's coroutine, closing its connection
}

}  // namespace couchgate::bench
