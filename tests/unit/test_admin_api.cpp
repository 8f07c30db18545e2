// Tests for gateway/admin_api.hpp: the access decision (pure), and the server in-process on a
// free loopback port: the token over HTTP, the routes, half-open connections dribbling header
// bytes (more than connections the old thread-per-connection server had threads), the cap on
// connections.
#include <doctest/doctest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "gateway/admin_api.hpp"

namespace cg = couchgate::gateway;
using namespace std::chrono_literals;

namespace {
const std::string token = "T0ken-0123456789abcdef";

cg::admin_handlers handlers() {
  return {[] { return std::pair<bool, std::string>{false, "setting up"}; }, [] { return std::string("couchgate_up 0\n"); },
          [] { return nlohmann::json{{"users", {"alice", "bob"}}}; },
          [](const std::string&) { return std::optional<nlohmann::json>{}; }};
}

// A raw TCP connection to 127.0.0.1:port (-1 on failure).
int connect_to(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Waits (until `deadline`) for the server to end the connection: true when it closed it (or
// reset it); false when the deadline passed or it answered something instead.
bool closed_by_server(int fd, std::chrono::steady_clock::time_point deadline, bool* answered = nullptr) {
  char buf[512];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno == ECONNRESET)) return true;
    if (n > 0) {
      if (answered) *answered = true;
      return false;
    }
  }
}

// n connections that each send the start of a request, then one more header byte every
// `period` (far below any per-read timeout), never finishing the header.
struct dribblers {
  std::vector<int> fds;
  std::chrono::steady_clock::time_point connected;
  std::atomic<bool> stop{false};
  std::thread thread;

  dribblers(int port, int n, std::chrono::milliseconds period) {
    const std::string start = "GET /status HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    for (int i = 0; i < n; ++i) {
      int fd = connect_to(port);
      REQUIRE(fd >= 0);
      REQUIRE(::send(fd, start.data(), start.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(start.size()));
      fds.push_back(fd);
    }
    connected = std::chrono::steady_clock::now();
    thread = std::thread([this, period] {
      while (!stop.load()) {
        for (int fd : fds) ::send(fd, "a", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        const auto until = std::chrono::steady_clock::now() + period;
        while (!stop.load() && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(10ms);
      }
    });
  }
  ~dribblers() {
    stop = true;
    thread.join();
    for (int fd : fds) ::close(fd);
  }
};

// GET /healthz on a fresh connection; the status, or 0 when there was no answer.
int healthz(int port, std::chrono::milliseconds timeout = 2000ms) {
  httplib::Client c("127.0.0.1", port);
  c.set_connection_timeout(timeout);
  c.set_read_timeout(timeout);
  c.set_write_timeout(timeout);
  auto r = c.Get("/healthz");
  return r ? r->status : 0;
}
}  // namespace

TEST_CASE("admin_api authorize: health endpoints are open, everything else needs the bearer token") {
  using cg::admin_access;
  CHECK(cg::authorize("/healthz", "", token) == admin_access::allowed);
  CHECK(cg::authorize("/readyz", "", token) == admin_access::allowed);
  for (const char* path : {"/status", "/metrics", "/status/users/alice", "/", "/healthz/../status", "//status", "/nope"}) {
    CAPTURE(path);
    CHECK(cg::authorize(path, "", token) == admin_access::missing_token);
    CHECK(cg::authorize(path, "Basic YWRtaW46cHc=", token) == admin_access::missing_token);
    CHECK(cg::authorize(path, "Bearer " + token, token) == admin_access::allowed);
    CHECK(cg::authorize(path, "bearer  " + token + " ", token) == admin_access::allowed);
    CHECK(cg::authorize(path, "Bearer " + token + "x", token) == admin_access::wrong_token);
    CHECK(cg::authorize(path, "Bearer " + token.substr(1), token) == admin_access::wrong_token);
    CHECK(cg::authorize(path, "Bearer ", token) == admin_access::missing_token);
    CHECK(cg::authorize(path, "Bearer x", token) == admin_access::wrong_token);
  }
  // No token configured (loopback, or allow_unauthenticated): open.
  CHECK(cg::authorize("/status", "", "") == admin_access::allowed);
}

TEST_CASE("admin_api constant_time_equal") {
  CHECK(cg::constant_time_equal("abc", "abc"));
  CHECK_FALSE(cg::constant_time_equal("abc", "abd"));
  CHECK_FALSE(cg::constant_time_equal("abc", "abcd"));
  CHECK_FALSE(cg::constant_time_equal("abcd", "abc"));
  CHECK_FALSE(cg::constant_time_equal("", "abc"));
  CHECK_FALSE(cg::constant_time_equal("abc", ""));
  CHECK(cg::constant_time_equal("", ""));
  // A prefix repeated to the right length is not the token.
  CHECK_FALSE(cg::constant_time_equal("abab", "ab"));
}

TEST_CASE("admin_api over HTTP: 401 without the token (which is never echoed), 200 with it") {
  cg::admin_api api(handlers(), token);
  std::string err;
  const int port = api.start("127.0.0.1", 0, err);
  REQUIRE(port > 0);
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(5s);
  auto r = c.Get("/status");
  REQUIRE(r);
  CHECK(r->status == 401);
  CHECK(r->get_header_value("WWW-Authenticate").find("Bearer") == 0);
  CHECK(r->body.find("alice") == std::string::npos);
  r = c.Get("/status", {{"Authorization", "Bearer wrong-0123456789abcdef"}});
  REQUIRE(r);
  CHECK(r->status == 401);
  CHECK(r->body.find("wrong-0123456789abcdef") == std::string::npos);
  CHECK(r->body.find(token) == std::string::npos);
  r = c.Get("/metrics");
  REQUIRE(r);
  CHECK(r->status == 401);
  r = c.Get("/status", {{"Authorization", "Bearer " + token}});
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->body.find("alice") != std::string::npos);
  r = c.Get("/healthz");
  REQUIRE(r);
  CHECK(r->status == 200);
  r = c.Get("/readyz");
  REQUIRE(r);
  CHECK(r->status == 503);
  CHECK(r->body.find("setting up") != std::string::npos);
  api.stop();
}

TEST_CASE("admin_api: 16 half-open connections dribbling header bytes do not stop /healthz") {
  cg::admin_api api(handlers());
  std::string err;
  const int port = api.start("127.0.0.1", 0, err);
  REQUIRE(port > 0);
  // Each sends the start of a request, then one more header byte every 500 ms (below any
  // per-read timeout), never finishing the headers.
  std::vector<int> fds;
  for (int i = 0; i < 16; ++i) {
    int fd = connect_to(port);
    REQUIRE(fd >= 0);
    const std::string start = "GET /status HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    REQUIRE(::send(fd, start.data(), start.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(start.size()));
    fds.push_back(fd);
  }
  std::atomic<bool> stop{false};
  std::thread dribbler([&] {
    while (!stop.load()) {
      for (int fd : fds) ::send(fd, "a", 1, MSG_NOSIGNAL);
      for (int i = 0; i < 10 && !stop.load(); ++i) std::this_thread::sleep_for(50ms);
    }
  });
  httplib::Client c("127.0.0.1", port);
  c.set_connection_timeout(2s);
  c.set_read_timeout(2s);
  c.set_write_timeout(2s);
  const auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < 3; ++i) {
    auto r = c.Get("/healthz");
    REQUIRE(r);
    CHECK(r->status == 200);
  }
  auto r = c.Get("/readyz");
  REQUIRE(r);
  CHECK(r->status == 503);
  CHECK(std::chrono::steady_clock::now() - started < 3s);
  stop = true;
  dribbler.join();
  for (int fd : fds) ::close(fd);
  api.stop();
}

TEST_CASE("admin_api routes: content types, percent-decoded user names, 404s, no bodies taken") {
  auto h = handlers();
  std::string asked;
  h.user_status = [&asked](const std::string& user) -> std::optional<nlohmann::json> {
    asked = user;
    if (user != "a b/c") return std::nullopt;
    return nlohmann::json{{"user", user}};
  };
  cg::admin_api api(h);
  std::string err;
  const int port = api.start("127.0.0.1", 0, err);
  REQUIRE(port > 0);
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(5s);
  auto r = c.Get("/healthz");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->body == "ok\n");
  CHECK(r->get_header_value("Content-Type") == "text/plain");
  r = c.Get("/metrics");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->body == "couchgate_up 0\n");
  CHECK(r->get_header_value("Content-Type") == "text/plain; version=0.0.4");
  r = c.Get("/readyz");
  REQUIRE(r);
  CHECK(r->status == 503);
  CHECK(r->body == "not ready: setting up\n");
  r = c.Get("/status");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->get_header_value("Content-Type") == "application/json");
  CHECK(nlohmann::json::parse(r->body) == nlohmann::json{{"users", {"alice", "bob"}}});
  r = c.Get("/failures");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(nlohmann::json::parse(r->body) == nlohmann::json::object());
  r = c.Get("/status/users/a%20b%2Fc");
  REQUIRE(r);
  CHECK(asked == "a b/c");
  CHECK(r->status == 200);
  CHECK(nlohmann::json::parse(r->body)["user"] == "a b/c");
  r = c.Get("/status/users/nobody");
  REQUIRE(r);
  CHECK(r->status == 404);
  CHECK(nlohmann::json::parse(r->body)["reason"] == "unknown user");
  for (const char* path : {"/nope", "/status/users/", "/healthz/x", "/"}) {
    CAPTURE(path);
    r = c.Get(path);
    REQUIRE(r);
    CHECK(r->status == 404);
    CHECK(nlohmann::json::parse(r->body)["error"] == "not_found");
  }
  r = c.Post("/status", "{}", "application/json");
  REQUIRE(r);
  CHECK(r->status == 404);
  api.stop();
}

TEST_CASE("admin_api: 100 connections dribbling header bytes do not stop /healthz and are cut off at header_timeout") {
  cg::admin_api_limits limits;
  limits.max_connections = 200;
  limits.header_timeout = 1500ms;
  cg::admin_api api(handlers(), {}, limits);
  std::string err;
  const int port = api.start("127.0.0.1", 0, err);
  REQUIRE(port > 0);
  // More dribblers than the old server's 64 threads.
  dribblers slow(port, 100, 200ms);
  const auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < 3; ++i) CHECK(healthz(port) == 200);
  CHECK(std::chrono::steady_clock::now() - started < 2s);
  CHECK(std::chrono::steady_clock::now() - slow.connected < limits.header_timeout);  // dribblers still on
  // Every dribbler is closed by the server once its header took longer than header_timeout
  // (still dribbling: the per-byte reads alone would never time out), none of them answered.
  const auto deadline = slow.connected + limits.header_timeout + 5s;
  int closed = 0;
  for (int fd : slow.fds) {
    bool answered = false;
    if (closed_by_server(fd, deadline, &answered)) ++closed;
    CHECK_FALSE(answered);
  }
  CHECK(closed == 100);
  CHECK(std::chrono::steady_clock::now() - slow.connected >= limits.header_timeout - 100ms);
  CHECK(healthz(port) == 200);
  api.stop();
}

TEST_CASE("admin_api: at max_connections new connections are closed; /healthz answers again once dribblers are cut") {
  cg::admin_api_limits limits;
  limits.max_connections = 8;
  limits.header_timeout = 2000ms;
  cg::admin_api api(handlers(), {}, limits);
  std::string err;
  const int port = api.start("127.0.0.1", 0, err);
  REQUIRE(port > 0);
  dribblers slow(port, 8, 200ms);
  // A connection over the cap is closed without an answer (polled: the server counts a
  // connection once its session started, so an early probe may still get a slot).
  bool refused = false;
  const auto probe_deadline = slow.connected + limits.header_timeout - 500ms;
  while (!refused && std::chrono::steady_clock::now() < probe_deadline) {
    int fd = connect_to(port);
    REQUIRE(fd >= 0);
    const std::string req = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    ::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
    bool answered = false;
    refused = closed_by_server(fd, std::chrono::steady_clock::now() + 1s, &answered) && !answered;
    ::close(fd);
  }
  CHECK(refused);
  // The dribblers are cut at header_timeout; then /healthz is served again.
  const auto deadline = slow.connected + limits.header_timeout + 5s;
  for (int fd : slow.fds) CHECK(closed_by_server(fd, deadline));
  CHECK(std::chrono::steady_clock::now() - slow.connected >= limits.header_timeout - 100ms);
  int status = 0;
  while (status != 200 && std::chrono::steady_clock::now() < deadline) status = healthz(port, 1000ms);
  CHECK(status == 200);
  api.stop();
}

// Starts api on a free loopback port; a client for it.
std::unique_ptr<httplib::Client> client_for(cg::admin_api& api) {
  std::string err;
  const int port = api.start("127.0.0.1", 0, err);
  REQUIRE_MESSAGE(port > 0, err);
  auto c = std::make_unique<httplib::Client>("127.0.0.1", port);
  c->set_read_timeout(5s);
  return c;
}

TEST_CASE("admin_api /identities/conflicts: 404 with identities off, the list with them on, token required") {
  auto h = handlers();
  {
    cg::admin_api off(h);
    auto r = client_for(off)->Get("/identities/conflicts");
    REQUIRE(r);
    CHECK(r->status == 404);
    CHECK(nlohmann::json::parse(r->body)["reason"] == "identities are not enabled");
    off.stop();
  }
  const nlohmann::json list{{"conflicts", {{{"user", "bob"}, {"field", "email"}, {"value", "a@b.org"}, {"holder", "ann"}}}}};
  h.identity_conflicts = [&list]() -> std::optional<nlohmann::json> { return list; };
  cg::admin_api on(h, token);
  auto c = client_for(on);
  auto r = c->Get("/identities/conflicts");
  REQUIRE(r);
  CHECK(r->status == 401);
  c->set_bearer_token_auth(token);
  r = c->Get("/identities/conflicts");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->get_header_value("Content-Type") == "application/json");
  CHECK(nlohmann::json::parse(r->body) == list);
  on.stop();
}
