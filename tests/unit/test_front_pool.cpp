// The upstream pool's pure parts: couchdb.url as an upstream address, and the server's
// announced keep-alive idle limit (a connection reused after the server closed it would fail a
// request whose body cannot be re-sent).
#include <doctest/doctest.h>

#include <chrono>
#include <vector>

#include "gateway/front/upstream_pool.hpp"

namespace f = couchgate::gateway::front;

TEST_CASE("front upstream: couchdb.url as host, port, TLS and base path") {
  const auto a = f::parse_upstream_url("http://127.0.0.1:5984");
  REQUIRE(a);
  CHECK(a->host == "127.0.0.1");
  CHECK(a->port == "5984");
  CHECK_FALSE(a->tls);
  CHECK(a->host_header == "127.0.0.1:5984");
  CHECK(a->base_path.empty());
  const auto b = f::parse_upstream_url("https://couch.example.com/db-proxy/");
  REQUIRE(b);
  CHECK(b->port == "443");
  CHECK(b->tls);
  CHECK(b->base_path == "/db-proxy");
  const auto v6 = f::parse_upstream_url("http://[::1]:5984");
  REQUIRE(v6);
  CHECK(v6->host == "::1");
  CHECK(v6->port == "5984");
  CHECK_FALSE(f::parse_upstream_url("ftp://x"));
  CHECK_FALSE(f::parse_upstream_url("http://"));
}

TEST_CASE("front upstream: Keep-Alive: timeout=N makes the pool drop the connection a second earlier") {
  f::net::io_context io;
  f::upstream_connection conn(f::any_stream(f::beast::tcp_stream(io)), 0);
  f::note_keep_alive(conn, "");
  CHECK(conn.server_idle_limit.count() == 0);
  f::note_keep_alive(conn, "timeout=5");
  CHECK(conn.server_idle_limit == std::chrono::seconds(4));
  f::note_keep_alive(conn, "max=100, timeout=30");
  CHECK(conn.server_idle_limit == std::chrono::seconds(29));
  f::note_keep_alive(conn, "timeout=1");
  CHECK(conn.server_idle_limit.count() > 0);
}

TEST_CASE("front upstream: a freed connection goes to the waiter whose wait ends first; FIFO among equals") {
  using tp = std::chrono::steady_clock::time_point;
  const tp t0{};
  // A thousand live feeds' first checks (waiting up to their 30 s timeout) came first; a plain
  // request (the pool's 5 s wait) arrived after them: it is served next, not after them all.
  f::deadline_queue<int> waiting;
  for (int i = 0; i < 1000; ++i) waiting.push(t0 + std::chrono::seconds(30), i);
  waiting.push(t0 + std::chrono::seconds(6), 1000);
  CHECK(waiting.size() == 1001);
  CHECK(waiting.pop() == 1000);
  // Equal deadlines: the first to arrive, in arrival order.
  for (int i = 0; i < 1000; ++i) CHECK(waiting.pop() == i);
  CHECK(waiting.empty());
  // A feed close to its end moves ahead of a plain request that arrived later.
  f::deadline_queue<int> mixed;
  mixed.push(t0 + std::chrono::seconds(7), 0);
  const auto gives_up = mixed.push(t0 + std::chrono::seconds(2), 1);
  mixed.push(t0 + std::chrono::seconds(4), 2);
  mixed.push(t0 + std::chrono::seconds(4), 3);
  // A waiter whose deadline passed leaves the queue; removing it twice (or after it was served) is a no-op.
  CHECK(mixed.erase(gives_up));
  CHECK_FALSE(mixed.erase(gives_up));
  CHECK(mixed.pop() == 2);
  CHECK(mixed.pop() == 3);
  const auto served = std::pair{t0 + std::chrono::seconds(7), std::uint64_t{0}};
  CHECK(mixed.pop() == 0);
  CHECK_FALSE(mixed.erase(served));
  // close(): every waiter, the queue empty after.
  mixed.push(t0, 5);
  mixed.push(t0, 6);
  CHECK(mixed.take_all().size() == 2);
  CHECK(mixed.empty());
}

TEST_CASE("front upstream: background work (feeds' credential re-checks) is served after every normal request, within its share") {
  using tp = std::chrono::steady_clock::time_point;
  const tp t0{};
  const auto normal = f::pool_priority::normal;
  const auto background = f::pool_priority::background;
  // A pool of 16: background work holds at most 4 connections.
  CHECK(f::background_share(16) == 4);
  CHECK(f::background_share(8) == 2);
  CHECK(f::background_share(2) == 1);
  CHECK(f::background_share(1) == 1);
  f::waiter_queues<int> q(f::background_share(16));
  CHECK(q.background_limit() == 4);
  CHECK(q.may_take(normal, 4));
  CHECK(q.may_take(background, 3));
  CHECK_FALSE(q.may_take(background, 4));  // over its share it waits, even with a connection idle
  // A thousand re-checks queued first, waiting minutes; then two deliveries with a short wait.
  for (int i = 0; i < 1000; ++i) q.push(background, t0 + std::chrono::seconds(1), i);
  q.push(normal, t0 + std::chrono::seconds(30), 2000);
  const auto late = q.push(normal, t0 + std::chrono::seconds(30), 2001);
  CHECK(q.size() == 1002);
  CHECK(q.background_waiting() == 1000);
  // Deliveries first, though the re-checks' deadlines are earlier and they came first.
  auto next = q.pop(0);
  REQUIRE(next);
  CHECK(next->first == 2000);
  CHECK(next->second == normal);
  // A normal waiter that gave up leaves; then the re-checks, in their own order.
  CHECK(q.erase(normal, late));
  CHECK_FALSE(q.erase(background, late));  // not in that queue: a no-op
  next = q.pop(3);
  REQUIRE(next);
  CHECK(next->first == 0);
  CHECK(next->second == background);
  // With the background share in use, a freed connection goes to no re-check (it stays idle
  // for the next normal request).
  CHECK_FALSE(q.pop(4));
  q.push(normal, t0 + std::chrono::seconds(60), 3000);
  next = q.pop(4);
  REQUIRE(next);
  CHECK(next->first == 3000);
  // A pool of 1 still serves background work (share of at least one), never two at once.
  f::waiter_queues<int> tiny(f::background_share(1));
  CHECK(tiny.background_limit() == 1);
  tiny.push(background, t0, 1);
  tiny.push(background, t0, 2);
  CHECK_FALSE(tiny.pop(1));
  next = tiny.pop(0);
  REQUIRE(next);
  CHECK(next->first == 1);
  // close(): every waiter of both kinds.
  CHECK(q.take_all().size() == 999);
  CHECK(q.size() == 0);
}
