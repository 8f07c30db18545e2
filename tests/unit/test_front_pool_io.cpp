// The upstream pool over real sockets (a local server, no CouchDB needed): a connection freed
// on one I/O thread for a request waiting on another moves there; it is not closed and opened
// again (each reopening costs CouchDB a new connection and, over TLS, a handshake).
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <string>
#include <thread>

#include "gateway/front/io_threads.hpp"
#include "gateway/front/upstream_pool.hpp"

namespace f = couchgate::gateway::front;
namespace net = couchgate::gateway::front::net;
namespace http = couchgate::gateway::front::http;
namespace beast = couchgate::gateway::front::beast;
using couchgate::gateway::front::error_code;
using couchgate::gateway::front::tcp;
using namespace std::chrono_literals;

namespace {

// Answers every request on a connection with 200 "ok", keep-alive; counts the connections.
class local_server {
 public:
  local_server() : acceptor_(io_, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0)) {
    net::co_spawn(io_, accept_loop(), net::detached);
    thread_ = std::thread([this] { io_.run(); });
  }
  ~local_server() {
    io_.stop();
    thread_.join();
  }
  unsigned short port() const { return acceptor_.local_endpoint().port(); }
  int accepted() const { return accepted_.load(); }

 private:
  net::awaitable<void> accept_loop() {
    for (;;) {
      error_code ec;
      tcp::socket s = co_await acceptor_.async_accept(f::ec_token(ec));
      if (ec) co_return;
      ++accepted_;
      net::co_spawn(io_, serve(std::move(s)), net::detached);
    }
  }
  static net::awaitable<void> serve(tcp::socket s) {
    beast::flat_buffer buffer;
    for (;;) {
      error_code ec;
      http::request<http::string_body> req;
      co_await http::async_read(s, buffer, req, f::ec_token(ec));
      if (ec) co_return;
      http::response<http::string_body> res(http::status::ok, 11);
      res.keep_alive(true);
      res.body() = "ok";
      res.prepare_payload();
      co_await http::async_write(s, res, f::ec_token(ec));
      if (ec) co_return;
    }
  }
  net::io_context io_;
  tcp::acceptor acceptor_;
  std::atomic<int> accepted_{0};
  std::thread thread_;
};

f::upstream_address address_of(const local_server& server) {
  f::upstream_address a;
  a.host = "127.0.0.1";
  a.port = std::to_string(server.port());
  a.host_header = a.host + ":" + a.port;
  return a;
}

// Two I/O threads and a pool of one connection to a local server.
struct two_threads {
  f::io_threads io{2};
  local_server server;
  f::upstream_pool pool{io, address_of(server), 1, 5000ms, 5000ms, nullptr};
  // Starts the threads; false (the test has nothing to check) on one core, with one I/O thread.
  bool started() {
    if (io.size() < 2) {
      MESSAGE("one core, one I/O thread: no connection ever moves between threads");
      return false;
    }
    io.start();
    return true;
  }
};

// One request over the lease's connection; true when it was answered 200 (and kept for reuse).
net::awaitable<bool> exchange(f::upstream_lease& lease) {
  auto& c = lease.conn();
  http::request<http::empty_body> req(http::verb::get, "/", 11);
  req.set(http::field::host, "127.0.0.1");
  error_code ec;
  co_await http::async_write(c.stream, req, f::ec_token(ec));
  if (ec) co_return false;
  http::response<http::string_body> res;
  co_await http::async_read(c.stream, c.buffer, res, f::ec_token(ec));
  if (ec || res.result() != http::status::ok || res.body() != "ok") co_return false;
  lease.keep();
  co_return true;
}

template <class Pred>
bool wait_for(Pred p, std::chrono::milliseconds deadline) {
  const auto end = std::chrono::steady_clock::now() + deadline;
  while (!p()) {
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

}  // namespace

TEST_CASE("front upstream: a plain connection freed on one I/O thread goes to a waiter on another without a new connection") {
  two_threads fx;
  if (!fx.started()) return;
  auto& [io, server, pool] = fx;

  // A (thread 0) holds the only connection until told to let it go; B (thread 1) waits for one.
  std::promise<bool> a_done, b_done;
  std::atomic<bool> a_holds{false}, release_a{false};
  std::atomic<std::size_t> b_context{99};
  net::co_spawn(io.context(0), [&]() -> net::awaitable<void> {
    auto got = co_await pool.acquire(0);
    bool ok = got.first.has_value();
    if (ok) ok = co_await exchange(*got.first);
    a_holds = true;
    net::steady_timer t(io.context(0));
    while (!release_a.load()) {
      t.expires_after(2ms);
      error_code ec;
      co_await t.async_wait(f::ec_token(ec));
    }
    got.first.reset();  // released here, on thread 0
    a_done.set_value(ok);
  }, net::detached);
  REQUIRE(wait_for([&] { return a_holds.load(); }, 5000ms));
  net::co_spawn(io.context(1), [&]() -> net::awaitable<void> {
    auto got = co_await pool.acquire(1);
    bool ok = got.first.has_value();
    if (ok) {
      b_context = got.first->conn().context;
      ok = co_await exchange(*got.first);  // the moved socket works, from thread 1
    }
    got.first.reset();
    b_done.set_value(ok);
  }, net::detached);
  REQUIRE(wait_for([&] { return pool.stats().waiting == 1; }, 5000ms));
  release_a = true;

  auto fa = a_done.get_future(), fb = b_done.get_future();
  REQUIRE(fa.wait_for(5s) == std::future_status::ready);
  REQUIRE(fb.wait_for(5s) == std::future_status::ready);
  CHECK(fa.get());
  CHECK(fb.get());
  CHECK(b_context.load() == 1);
  const auto st = pool.stats();
  CHECK(st.moved == 1);
  CHECK(st.connects == 1);
  CHECK(server.accepted() == 1);  // closing and reopening it would make two
  CHECK(st.open == 1);
  CHECK(st.in_use == 0);
  io.stop();     // the I/O threads first: close() then destroys the idle connections of every
  pool.close();  // context from this thread, with nothing running on them (front_door::stop's order)
}

TEST_CASE("front upstream: an idle connection of another I/O thread moves to a request with its socket, the budget held") {
  two_threads fx;
  if (!fx.started()) return;
  auto& [io, server, pool] = fx;

  // One exchange on thread 0 leaves the pool's only connection idle there; a request on thread 1
  // then takes it: its socket moves (one connection accepted in all), and the pool never counts
  // more than its one socket open.
  auto run_on = [&](std::size_t ctx) {
    std::promise<std::pair<bool, std::size_t>> done;
    auto f = done.get_future();
    net::co_spawn(io.context(ctx), [&, ctx]() -> net::awaitable<void> {
      auto got = co_await pool.acquire(ctx);
      bool ok = got.first.has_value();
      std::size_t where = 99;
      if (ok) {
        where = got.first->conn().context;
        ok = co_await exchange(*got.first);
      }
      got.first.reset();
      done.set_value({ok, where});
    }, net::detached);
    REQUIRE(f.wait_for(5s) == std::future_status::ready);
    return f.get();
  };
  const auto first = run_on(0);
  CHECK(first.first);
  CHECK(first.second == 0);
  const auto second = run_on(1);
  CHECK(second.first);
  CHECK(second.second == 1);
  const auto st = pool.stats();
  CHECK(st.moved == 1);
  CHECK(st.connects == 1);
  CHECK(server.accepted() == 1);
  CHECK(st.peak_open == 1);
  CHECK(st.open == 1);
  CHECK(st.in_use == 0);
  // And back: the connection now idle on thread 1 serves thread 0 the same way.
  const auto third = run_on(0);
  CHECK(third.first);
  CHECK(third.second == 0);
  CHECK(pool.stats().connects == 1);
  CHECK(server.accepted() == 1);
  io.stop();
  pool.close();
}
