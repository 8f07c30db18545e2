// Tests for gateway/admin_api.hpp: the access decision (pure), and the server in-process on a
// free loopback port: the token over HTTP, and half-open connections dribbling header bytes.
#include <doctest/doctest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
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
