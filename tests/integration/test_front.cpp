// The front door against the real test server: couchgate started with front.enabled, users
// provisioned by couchgate itself, then requests through the front door as a client makes
// them (plain HTTP with allow_insecure; TLS with a certificate generated here by `openssl req`;
// require_secure behind a "proxy" that is or is not trusted).
#include <doctest/doctest.h>

#include <unistd.h>

#include <future>
#include <utility>  // before Boost.Asio (std::exchange in its awaitable.hpp)

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <atomic>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <set>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sstream>
#include <thread>

#include "policy/naming.hpp"
#include "tests/integration/fixtures.hpp"
#include "tests/support/harness.hpp"

using namespace couchgate::test;
namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;

namespace {

struct front_reply {
  int status = 0;  // 0 = transport failure
  std::string raw;
  json body;
  http::fields headers;
};

using header_list = std::vector<std::pair<std::string, std::string>>;

std::string basic(const std::string& user, const std::string& password) { return "Basic " + b64(user + ":" + password); }

// A request whose body never finishes: couchgate has leased an upstream connection (and the
// caller's request slot) and streams the body as it comes, so both stay held until the socket
// closes. (A waiting live `_changes` feed holds neither: it is parked, issue 14.)
struct held_request {
  net::io_context io;
  tcp::socket socket{io};
  held_request(int port, const header_list& headers, const std::string& target) {
    socket.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)));
    std::string head = "PUT " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n";
    for (const auto& [k, v] : headers) head += k + ": " + v + "\r\n";
    head += "Content-Length: 100\r\n\r\n{\"v\":";
    net::write(socket, net::buffer(head));
  }
};

// One request on its own connection (plain or TLS, certificate not verified: the test made it).
front_reply front_call(int port, bool tls, const std::string& method, const std::string& target,
                       const header_list& headers = {}, const std::string& body = {}) {
  front_reply out;
  try {
    net::io_context io;
    tcp::socket socket(io);
    socket.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)));
    http::request<http::string_body> req;
    req.method_string(method);
    req.target(target);
    req.version(11);
    req.set(http::field::host, "127.0.0.1:" + std::to_string(port));
    req.set(http::field::accept, "application/json");
    // A name given twice is sent in two lines (as a proxy that adds its own would).
    std::set<std::string> named;
    for (const auto& [k, v] : headers) {
      std::string lower_name = k;
      for (auto& c : lower_name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (named.insert(lower_name).second) req.set(k, v);
      else req.insert(k, v);
    }
    if (!body.empty() || method == "PUT" || method == "POST") {
      req.body() = body;
      if (req.find(http::field::content_type) == req.end()) req.set(http::field::content_type, "application/json");
      req.prepare_payload();
    }
    http::response_parser<http::string_body> parser;
    parser.body_limit(256u << 20);
    beast::flat_buffer buffer;
    if (tls) {
      ssl::context ctx(ssl::context::tls_client);
      ctx.set_verify_mode(ssl::verify_none);
      ssl::stream<tcp::socket> stream(std::move(socket), ctx);
      stream.handshake(ssl::stream_base::client);
      http::write(stream, req);
      if (method == "HEAD") parser.skip(true);
      http::read(stream, buffer, parser);
    } else {
      http::write(socket, req);
      if (method == "HEAD") parser.skip(true);
      http::read(socket, buffer, parser);
    }
    auto res = parser.release();
    out.status = res.result_int();
    out.raw = res.body();
    out.body = json::parse(out.raw, nullptr, false);
    out.headers = res.base();
  } catch (const std::exception& e) {
    out.status = 0;
    out.raw = e.what();
  }
  return out;
}

// One plain keep-alive connection that carries request after request, as a client's does.
struct keep_alive_connection {
  net::io_context io;
  tcp::socket socket{io};
  beast::flat_buffer buffer;
  std::string authorization;
  keep_alive_connection(int port, std::string auth) : authorization(std::move(auth)) {
    socket.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)));
  }
  http::response<http::string_body> exchange(http::verb verb, const std::string& target, const std::string& body = {},
                                             const header_list& extra = {}) {
    http::request<http::string_body> req{verb, target, 11};
    req.set(http::field::host, "x");
    req.set(http::field::authorization, authorization);
    for (const auto& [k, v] : extra) req.set(k, v);
    if (!body.empty()) {
      req.set(http::field::content_type, "application/json");
      req.body() = body;
    }
    req.prepare_payload();
    http::write(socket, req);
    http::response_parser<http::string_body> parser;
    if (verb == http::verb::head) parser.skip(true);
    http::read(socket, buffer, parser);
    return parser.release();
  }
};

std::string temp_dir() { return make_temp_dir("couchgate-front"); }

std::string read_all(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

int front_port(const std::string& port_file) {
  int port = 0;
  eventually(
      [&] {
        port = std::atoi(read_all(port_file).c_str());
        return port > 0;
      },
      std::chrono::seconds(20));
  return port;
}

void make_certificate(const std::string& dir, const std::string& cn) {
  const std::string cmd = "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=" + cn + " -keyout " + dir +
                          "/key.pem -out " + dir + "/cert.pem >/dev/null 2>&1";
  REQUIRE(std::system(cmd.c_str()) == 0);
}

struct user {
  std::string name, password, db;
};

// Users of the test's role: couchgate provisions their databases.
std::vector<user> provisioned_users(const names& n, int count) {
  std::vector<user> users;
  for (int i = 0; i < count; ++i) {
    user u{unique("fu"), "pw-" + unique("p"), ""};
    u.db = couchgate::policy::user_db_name(n.prefix, u.name);
    REQUIRE(create_user(u.name, {n.role}, u.password).status == 201);
    users.push_back(u);
  }
  for (const auto& u : users) {
    REQUIRE_MESSAGE(eventually([&] { return db_usable_by(u.db, u.name); }, std::chrono::seconds(30)),
                    "database of " << u.name << " not provisioned");
  }
  return users;
}

// Two provisioned users with their Basic headers; alice's identity is cached by a first request.
struct user_pair {
  std::vector<user> users;
  header_list alice, bob;
};
user_pair alice_and_bob(const names& n, int port) {
  user_pair p{provisioned_users(n, 2), {}, {}};
  p.alice = {{"Authorization", basic(p.users[0].name, p.users[0].password)}};
  p.bob = {{"Authorization", basic(p.users[1].name, p.users[1].password)}};
  REQUIRE(front_call(port, false, "GET", "/me", p.alice).status == 200);
  return p;
}

json front_config(const std::string& dir) {
  return json{{"enabled", true}, {"address", "127.0.0.1"}, {"port", 0}, {"port_file", dir + "/front.port"},
              {"session_cache_ttl", "30s"}};
}

// couchgate with the front door: base_config plus `front` (its port_file set here), started and ready.
struct front_run {
  std::unique_ptr<couchgate_process> process;
  int port = 0;
};
front_run start_front(const names& n, json front, const std::string& dir, const json& patch = json::object(),
                      std::map<std::string, std::string> extra_env = {}) {
  json cfg = base_config(n);
  cfg.merge_patch(patch);
  cfg["front"] = front_config(dir);
  cfg["front"].update(front);
  front_run run{std::make_unique<couchgate_process>(cfg, std::move(extra_env)), 0};
  run.process->start();
  REQUIRE_MESSAGE(run.process->wait_ready(std::chrono::seconds(60)), tail(run.process->log()));
  run.port = front_port(dir + "/front.port");
  REQUIRE(run.port > 0);
  return run;
}

}  // namespace

TEST_CASE("front door (plain, allow_insecure): /me is the caller's own database and nothing else") {
  auto n = fresh_names("front");
  auto run = start_front(n, {{"allow_insecure", true}}, temp_dir());
  auto& cg = *run.process;
  const int port = run.port;
  const auto users = provisioned_users(n, 2);
  const auto& alice = users[0];
  const auto& bob = users[1];
  const header_list as_alice{{"Authorization", basic(alice.name, alice.password)}};
  const header_list as_bob{{"Authorization", basic(bob.name, bob.password)}};

  // Database info of the caller's own database.
  auto info = front_call(port, false, "GET", "/me", as_alice);
  REQUIRE_MESSAGE(info.status == 200, info.raw);
  CHECK(info.body["db_name"] == alice.db);
  CHECK(front_call(port, false, "GET", "/me/", as_alice).body["db_name"] == alice.db);

  // Document write and read; a Location naming the database is rewritten to /me.
  auto put = front_call(port, false, "PUT", "/me/doc-1", as_alice, json{{"v", 1}}.dump());
  REQUIRE_MESSAGE(put.status == 201, put.raw);
  if (auto it = put.headers.find(http::field::location); it != put.headers.end()) {
    const std::string location(it->value());
    CHECK(location.find(alice.db) == std::string::npos);
    CHECK(location.find("/me/doc-1") != std::string::npos);
  }
  auto got = front_call(port, false, "GET", "/me/doc-1", as_alice);
  REQUIRE(got.status == 200);
  CHECK(got.body["v"] == 1);
  // It really is in alice's database on the server.
  CHECK(couch().get("/" + enc(alice.db) + "/doc-1").body["v"] == 1);

  auto changes = front_call(port, false, "GET", "/me/_changes?style=all_docs&since=0", as_alice);
  REQUIRE(changes.status == 200);
  bool seen = false;
  for (const auto& row : changes.body["results"]) seen = seen || row["id"] == "doc-1";
  CHECK(seen);
  auto all = front_call(port, false, "GET", "/me/_all_docs?include_docs=true", as_alice);
  REQUIRE(all.status == 200);
  REQUIRE(all.body["rows"].size() == 1);
  CHECK(all.body["rows"][0]["doc"]["v"] == 1);
  auto bulk = front_call(port, false, "POST", "/me/_bulk_docs", as_alice,
                         json{{"docs", {{{"_id", "b1"}}, {{"_id", "b2"}}}}}.dump());
  CHECK(bulk.status == 201);

  // Bob's /me is bob's database: alice's documents are not there.
  auto bob_info = front_call(port, false, "GET", "/me", as_bob);
  REQUIRE(bob_info.status == 200);
  CHECK(bob_info.body["db_name"] == bob.db);
  CHECK(front_call(port, false, "GET", "/me/doc-1", as_bob).status == 404);
  // Another user's database by name, or by climbing out of /me: never reached.
  CHECK(front_call(port, false, "GET", "/" + bob.db, as_alice).status == 404);
  CHECK(front_call(port, false, "GET", "/" + bob.db + "/_all_docs", as_alice).status == 404);
  CHECK(front_call(port, false, "GET", "/me/../" + bob.db, as_alice).status == 400);
  CHECK(front_call(port, false, "GET", "/me%2F..%2F" + bob.db, as_alice).status == 400);
  CHECK(front_call(port, false, "GET", "/_all_dbs", as_alice).status == 404);
  auto users_db = front_call(port, false, "GET", "/_users", as_alice);
  CHECK(users_db.status == 404);
  CHECK(users_db.body["error"] == "not_found");

  // Wrong or missing credentials: 401, CouchDB-style.
  auto wrong = front_call(port, false, "GET", "/me", {{"Authorization", basic(alice.name, "not-the-password")}});
  CHECK(wrong.status == 401);
  CHECK(wrong.body["error"] == "unauthorized");
  CHECK(front_call(port, false, "GET", "/me").status == 401);

  // Cookie authentication: POST /_session passes through, its Set-Cookie reaches the client.
  auto login = front_call(port, false, "POST", "/_session", {},
                          json{{"name", alice.name}, {"password", alice.password}}.dump());
  REQUIRE_MESSAGE(login.status == 200, login.raw);
  const auto cookie_it = login.headers.find(http::field::set_cookie);
  REQUIRE(cookie_it != login.headers.end());
  const std::string set_cookie(cookie_it->value());
  const std::string cookie = set_cookie.substr(0, set_cookie.find(';'));
  CHECK(cookie.rfind("AuthSession=", 0) == 0);
  auto by_cookie = front_call(port, false, "GET", "/me", {{"Cookie", cookie}});
  CHECK(by_cookie.status == 200);
  CHECK(by_cookie.body["db_name"] == alice.db);

  // Pass-through routes.
  CHECK(front_call(port, false, "GET", "/").status == 200);
  auto uuids = front_call(port, false, "GET", "/_uuids?count=2");
  CHECK(uuids.status == 200);
  CHECK(uuids.body["uuids"].size() == 2);

  // Metrics: by route and status; the session cache was used.
  CHECK(cg.metric("couchgate_front_requests_total", "route=\"me\",status=\"200\"").value_or(0) >= 5);
  CHECK(cg.metric("couchgate_front_requests_total", "route=\"other\",status=\"404\"").value_or(0) >= 3);
  CHECK(cg.metric("couchgate_front_session_cache_hits_total").value_or(0) >= 3);
  CHECK(cg.metric("couchgate_front_upstream_open").value_or(-1) >= 1);
  CHECK(cg.metric("couchgate_front_upstream_peak").value_or(99) <= 16);

  // No credential in the logs; the user name is there (access log).
  const std::string log = cg.log();
  CHECK(log.find(alice.password) == std::string::npos);
  CHECK(log.find(b64(alice.name + ":" + alice.password)) == std::string::npos);
  CHECK(log.find(cookie.substr(12)) == std::string::npos);
  CHECK(log.find(alice.name) != std::string::npos);
}

TEST_CASE("front door: bodies stream through (a large attachment in and out, chunked request body)") {
  auto n = fresh_names("frontbig");
  // Fan-in off: it would copy the attachment into the central database, in its own memory.
  auto run = start_front(n, {{"allow_insecure", true}}, temp_dir(), {{"fanin", {{"enabled", false}}}});
  auto& cg = *run.process;
  const int port = run.port;
  const auto users = provisioned_users(n, 1);
  const header_list auth{{"Authorization", basic(users[0].name, users[0].password)}};

  std::string blob(24u << 20, '\0');
  for (std::size_t i = 0; i < blob.size(); ++i) blob[i] = static_cast<char>((i * 2654435761u) >> 13);
  auto put = front_call(port, false, "PUT", "/me/big/blob.bin", {auth[0], {"Content-Type", "application/octet-stream"}},
                        blob);
  REQUIRE_MESSAGE(put.status == 201, put.raw);
  auto back = front_call(port, false, "GET", "/me/big/blob.bin", auth);
  REQUIRE(back.status == 200);
  CHECK(back.raw.size() == blob.size());
  CHECK(back.raw == blob);
  // Bounded memory: the attachment was never held whole (RSS high-water mark well under its size).
  const std::string status = read_all("/proc/" + std::to_string(cg.pid()) + "/status");
  const auto hwm = status.find("VmHWM:");
  REQUIRE(hwm != std::string::npos);
  const long kib = std::atol(status.c_str() + hwm + 6);
  if (rss_is_meaningful) {
    CHECK_MESSAGE(kib < 20 * 1024 + 24 * 1024 / 2, "couchgate peak RSS " << kib << " KiB for a 24 MiB attachment");
  }

  // A chunked request body (no Content-Length) goes through as well.
  net::io_context io;
  tcp::socket socket(io);
  socket.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)));
  const std::string doc = json{{"_id", "chunked"}, {"v", 7}}.dump();
  std::ostringstream raw;
  raw << "POST /me HTTP/1.1\r\nHost: x\r\nAuthorization: " << auth[0].second
      << "\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n";
  net::write(socket, net::buffer(raw.str()));
  beast::flat_buffer buffer;
  // The front door answers 100 Continue before it reads the body.
  http::response_parser<http::empty_body> cont;
  http::read_header(socket, buffer, cont);
  CHECK(cont.get().result_int() == 100);
  std::ostringstream chunks;
  chunks << std::hex << 5 << "\r\n" << doc.substr(0, 5) << "\r\n" << (doc.size() - 5) << "\r\n" << doc.substr(5) << "\r\n0\r\n\r\n";
  net::write(socket, net::buffer(chunks.str()));
  http::response<http::string_body> res;
  http::read(socket, buffer, res);
  CHECK_MESSAGE(res.result_int() == 201, res.body());
  CHECK(couch().get("/" + enc(users[0].db) + "/chunked").body["v"] == 7);
}

TEST_CASE("front door (TLS): https with a generated certificate; plain HTTP refused; certificate re-read on SIGHUP") {
  auto n = fresh_names("fronttls");
  const std::string dir = temp_dir();
  make_certificate(dir, "first.test");
  json cfg = base_config(n);
  cfg["front"] = front_config(dir);
  cfg["front"]["tls"] = {{"cert_file", dir + "/cert.pem"}, {"key_file", dir + "/key.pem"}};
  couchgate_process cg(cfg);
  cg.start();
  REQUIRE_MESSAGE(cg.wait_ready(std::chrono::seconds(60)), tail(cg.log()));
  const int port = front_port(dir + "/front.port");
  const auto users = provisioned_users(n, 1);
  const header_list auth{{"Authorization", basic(users[0].name, users[0].password)}};

  auto info = front_call(port, true, "GET", "/me", auth);
  REQUIRE_MESSAGE(info.status == 200, info.raw);
  CHECK(info.body["db_name"] == users[0].db);

  const double misses = cg.metric("couchgate_front_session_cache_misses_total").value_or(0);
  auto plain = front_call(port, false, "GET", "/me", {{"Authorization", basic(users[0].name, "a-wrong-password")}});
  CHECK(plain.status == 403);
  CHECK(plain.body["error"] == "forbidden");
  CHECK(cg.metric("couchgate_front_tls_refusals_total").value_or(0) >= 1);
  // Refused before anything was forwarded: no _session check was made for it.
  CHECK(cg.metric("couchgate_front_session_cache_misses_total").value_or(0) == misses);

  // The certificate's subject as a TLS client sees it.
  const auto subject = [port] {
    net::io_context io;
    ssl::context ctx(ssl::context::tls_client);
    ctx.set_verify_mode(ssl::verify_none);
    ssl::stream<tcp::socket> stream(io, ctx);
    stream.next_layer().connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)));
    stream.handshake(ssl::stream_base::client);
    X509* cert = SSL_get_peer_certificate(stream.native_handle());
    char name[256] = {0};
    if (cert) X509_NAME_oneline(X509_get_subject_name(cert), name, sizeof name);
    X509_free(cert);
    return std::string(name);
  };
  CHECK(subject().find("first.test") != std::string::npos);
  // An open TLS connection survives the reload; new connections get the new certificate.
  net::io_context io;
  ssl::context ctx(ssl::context::tls_client);
  ctx.set_verify_mode(ssl::verify_none);
  ssl::stream<tcp::socket> open_conn(io, ctx);
  open_conn.next_layer().connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)));
  open_conn.handshake(ssl::stream_base::client);
  make_certificate(dir, "second.test");
  cg.reload(cfg);
  CHECK_MESSAGE(eventually([&] { return subject().find("second.test") != std::string::npos; }, std::chrono::seconds(10)),
                tail(cg.log()));
  http::request<http::empty_body> req{http::verb::get, "/me", 11};
  req.set(http::field::host, "x");
  req.set(http::field::authorization, auth[0].second);
  http::write(open_conn, req);
  beast::flat_buffer buffer;
  http::response<http::string_body> res;
  http::read(open_conn, buffer, res);
  CHECK(res.result_int() == 200);
}

TEST_CASE("front door (require_secure): the scheme header counts from a trusted proxy only; missing = not secure") {
  auto n = fresh_names("frontproxy");
  auto run = start_front(n, {{"require_secure", true}, {"trusted_proxies", {"127.0.0.1/32"}}}, temp_dir());
  auto& cg = *run.process;
  const int port = run.port;
  const auto users = provisioned_users(n, 1);
  const header_list auth{{"Authorization", basic(users[0].name, users[0].password)}};
  auto proxied = front_call(port, false, "GET", "/me", {auth[0], {"X-Forwarded-Proto", "https"}});
  CHECK_MESSAGE(proxied.status == 200, proxied.raw);
  CHECK(front_call(port, false, "GET", "/me", auth).status == 403);  // header missing
  CHECK(front_call(port, false, "GET", "/me", {auth[0], {"X-Forwarded-Proto", "http"}}).status == 403);
  // A proxy that adds its line after the client's own "https": the proxy's "http" counts.
  CHECK(front_call(port, false, "GET", "/me", {auth[0], {"X-Forwarded-Proto", "https"}, {"X-Forwarded-Proto", "http"}})
            .status == 403);
  CHECK(front_call(port, false, "GET", "/me", {auth[0], {"X-Forwarded-Proto", "http"}, {"X-Forwarded-Proto", "https"}})
            .status == 200);
  cg.terminate();

  // The same header from a peer that is not a trusted proxy is ignored; nothing reaches CouchDB.
  auto run2 = start_front(fresh_names("frontproxy2"), {{"require_secure", true}, {"trusted_proxies", {"10.0.0.0/8"}}},
                          temp_dir());
  auto& untrusted = *run2.process;
  const int port2 = run2.port;
  auto spoofed = front_call(port2, false, "GET", "/me", {auth[0], {"X-Forwarded-Proto", "https"}});
  CHECK(spoofed.status == 403);
  CHECK(spoofed.body["reason"].get<std::string>().find("TLS") != std::string::npos);
  CHECK(untrusted.metric("couchgate_front_upstream_peak").value_or(-1) == 0);
  CHECK(untrusted.metric("couchgate_front_session_cache_misses_total").value_or(-1) == 0);
}

TEST_CASE("front door limits: 431, 413, slow headers cut off, auth failures 429, upstream pool full 503") {
  auto n = fresh_names("frontlim");
  auto run = start_front(n,
                         {{"allow_insecure", true},
                          {"max_header_bytes", "2KiB"},
                          {"max_body_bytes", "4KiB"},
                          {"header_timeout", "500ms"},
                          {"auth_failure_limit", 3},
                          {"auth_failure_window", "60s"},
                          {"upstream", {{"max_connections", 1}, {"wait_timeout", "300ms"}}}},
                         temp_dir());
  auto& cg = *run.process;
  const int port = run.port;
  const auto users = provisioned_users(n, 1);
  const header_list auth{{"Authorization", basic(users[0].name, users[0].password)}};

  auto big_header = front_call(port, false, "GET", "/me", {auth[0], {"X-Padding", std::string(4096, 'x')}});
  CHECK(big_header.status == 431);
  auto big_body = front_call(port, false, "PUT", "/me/big", auth, json{{"pad", std::string(8192, 'x')}}.dump());
  CHECK(big_body.status == 413);
  CHECK(front_call(port, false, "PUT", "/me/small", auth, json{{"v", 1}}.dump()).status == 201);

  // Slowloris: half a header, then silence: the connection is closed at header_timeout.
  {
    net::io_context io;
    tcp::socket socket(io);
    socket.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)));
    net::write(socket, net::buffer(std::string("GET /me HTTP/1.1\r\nHost: x\r\n")));
    const auto start = std::chrono::steady_clock::now();
    char byte;
    boost::system::error_code ec;
    socket.read_some(net::buffer(&byte, 1), ec);  // blocks until couchgate closes
    const auto waited = std::chrono::steady_clock::now() - start;
    CHECK(ec);  // closed, no answer
    CHECK(waited < std::chrono::seconds(5));
  }

  // The upstream pool (1 connection) is held by an unfinished upload: the next request waits 300 ms, then 503.
  std::optional<held_request> feed(std::in_place, port, auth, "/me/held");
  CHECK(eventually([&] { return cg.metric("couchgate_front_upstream_in_use").value_or(0) == 1; }, std::chrono::seconds(5)));
  auto busy = front_call(port, false, "GET", "/", {});
  CHECK(busy.status == 503);
  CHECK(busy.headers.find("Retry-After") != busy.headers.end());
  CHECK(cg.metric("couchgate_front_upstream_peak").value_or(99) <= 1);
  CHECK(cg.metric("couchgate_front_upstream_busy_total").value_or(0) >= 1);
  feed.reset();
  // couchgate hears of the close when it next reads the upload: the connection is free after that.
  CHECK(eventually([&] { return cg.metric("couchgate_front_upstream_in_use").value_or(1) == 0; }, std::chrono::seconds(10)));

  // Failed authentications from one address: after the limit, 429 with Retry-After, even with
  // the right password (the credential is not even checked).
  for (int i = 0; i < 3; ++i) {
    const auto wrong =
        front_call(port, false, "GET", "/me", {{"Authorization", basic(users[0].name, "wrong-" + std::to_string(i))}});
    CHECK_MESSAGE(wrong.status == 401, wrong.raw << " (front pool open " << cg.metric("couchgate_front_upstream_open").value_or(-1)
                                                  << ", in use " << cg.metric("couchgate_front_upstream_in_use").value_or(-1)
                                                  << ")");
  }
  auto limited = front_call(port, false, "GET", "/me", auth);
  CHECK(limited.status == 429);
  const auto retry = limited.headers.find("Retry-After");
  REQUIRE(retry != limited.headers.end());
  CHECK(std::atoi(std::string(retry->value()).c_str()) >= 1);
  CHECK(cg.metric("couchgate_front_rate_limited_total").value_or(0) >= 1);
  // Anonymous pass-through requests carry no credential: still served.
  CHECK(front_call(port, false, "GET", "/_uuids").status == 200);
}

TEST_CASE("front door behind a trusted proxy: the auth failure limit counts each client (X-Forwarded-For), not the proxy") {
  auto n = fresh_names("frontxff");
  auto run = start_front(n,
                         {{"require_secure", true},
                          {"trusted_proxies", {"127.0.0.1/32"}},
                          {"auth_failure_limit", 3},
                          {"auth_failure_window", "60s"}},
                         temp_dir());
  const int port = run.port;
  const auto users = provisioned_users(n, 1);
  const std::pair<std::string, std::string> https{"X-Forwarded-Proto", "https"};
  const std::pair<std::string, std::string> auth{"Authorization", basic(users[0].name, users[0].password)};
  // One client behind the proxy guesses passwords: it is limited...
  for (int i = 0; i < 3; ++i) {
    CHECK(front_call(port, false, "GET", "/me",
                     {{"Authorization", basic(users[0].name, "wrong-" + std::to_string(i))}, https,
                      {"X-Forwarded-For", "198.51.100.7"}})
              .status == 401);
  }
  CHECK(front_call(port, false, "GET", "/me", {auth, https, {"X-Forwarded-For", "198.51.100.7"}}).status == 429);
  // ...a client that wrote its own X-Forwarded-For before the proxy's line is still that client...
  CHECK(front_call(port, false, "GET", "/me", {auth, https, {"X-Forwarded-For", "203.0.113.1, 198.51.100.7"}}).status ==
        429);
  // ...and every other client behind the same proxy is served.
  auto other = front_call(port, false, "GET", "/me", {auth, https, {"X-Forwarded-For", "198.51.100.8"}});
  CHECK_MESSAGE(other.status == 200, other.raw);
  CHECK(front_call(port, false, "GET", "/me", {auth, https}).status == 200);  // the proxy's own address
}

TEST_CASE("front door behind a trusted proxy that sends RFC 7239 Forwarded: its proto decides, its for= is the client") {
  auto n = fresh_names("frontfwd");
  auto run = start_front(n,
                         {{"require_secure", true},
                          {"trusted_proxies", {"127.0.0.1/32"}},
                          {"scheme_header", "Forwarded"},
                          {"auth_failure_limit", 2},
                          {"auth_failure_window", "60s"}},
                         temp_dir());
  const int port = run.port;
  const auto users = provisioned_users(n, 1);
  const std::pair<std::string, std::string> auth{"Authorization", basic(users[0].name, users[0].password)};
  const auto from = [](const std::string& client, const std::string& proto) {
    return std::pair<std::string, std::string>{"Forwarded", "for=" + client + ";proto=" + proto};
  };
  CHECK(front_call(port, false, "GET", "/me", {auth, from("198.51.100.7", "http")}).status == 403);
  CHECK(front_call(port, false, "GET", "/me", {auth, {"Forwarded", "for=198.51.100.7"}}).status == 403);
  auto ok = front_call(port, false, "GET", "/me", {auth, from("198.51.100.7", "https")});
  CHECK_MESSAGE(ok.status == 200, ok.raw);
  for (int i = 0; i < 2; ++i) {
    CHECK(front_call(port, false, "GET", "/me",
                     {{"Authorization", basic(users[0].name, "wrong-" + std::to_string(i))}, from("198.51.100.7", "https")})
              .status == 401);
  }
  CHECK(front_call(port, false, "GET", "/me", {auth, from("198.51.100.7", "https")}).status == 429);
  // The proxy speaks Forwarded: an X-Forwarded-For it passed through is the client's own word.
  CHECK(front_call(port, false, "GET", "/me", {auth, from("198.51.100.7", "https"), {"X-Forwarded-For", "192.0.2.99"}})
            .status == 429);
  auto other = front_call(port, false, "GET", "/me", {auth, from("\"[2001:db8::8]:4711\"", "https")});
  CHECK_MESSAGE(other.status == 200, other.raw);
}

TEST_CASE("front door: keep-alive connections carry many requests; HEAD; gzip passed through; /shared") {
  auto n = fresh_names("frontka");
  const std::string shared_db = "t" + unique("shared");
  auto run = start_front(n, {{"allow_insecure", true}}, temp_dir(),
                         {{"shared", {{"enabled", true}, {"db", shared_db}, {"member_roles", {n.role}}}}});
  const int port = run.port;
  const auto users = provisioned_users(n, 1);
  const std::string authorization = basic(users[0].name, users[0].password);

  keep_alive_connection conn(port, authorization);
  const auto exchange = [&](http::verb verb, const std::string& target, const std::string& body,
                            const header_list& extra = {}) { return conn.exchange(verb, target, body, extra); };
  for (int i = 0; i < 5; ++i) {
    auto put = exchange(http::verb::put, "/me/ka-" + std::to_string(i), json{{"i", i}}.dump());
    CHECK(put.result_int() == 201);
    CHECK(put.keep_alive());
  }
  auto head = exchange(http::verb::head, "/me/ka-1", "");
  CHECK(head.result_int() == 200);
  CHECK(head.body().empty());
  // Still in sync after a HEAD: the next answer is the right one.
  auto got = exchange(http::verb::get, "/me/ka-3", "");
  REQUIRE(got.result_int() == 200);
  CHECK(json::parse(got.body())["i"] == 3);

  // Whatever encoding the server chose reaches the client as sent (never decoded on the way).
  auto zipped = exchange(http::verb::get, "/me/_all_docs?include_docs=true", "", {{"Accept-Encoding", "gzip"}});
  CHECK(zipped.result_int() == 200);
  if (zipped[http::field::content_encoding] == "gzip") {
    REQUIRE(zipped.body().size() >= 2);
    CHECK(static_cast<unsigned char>(zipped.body()[0]) == 0x1f);
    CHECK(static_cast<unsigned char>(zipped.body()[1]) == 0x8b);
  } else {
    CHECK(json::parse(zipped.body(), nullptr, false)["rows"].size() == 5);
  }

  // /shared is the shared database, for a member.
  REQUIRE(eventually([&] { return couch().get("/" + shared_db).status == 200; }, std::chrono::seconds(30)));
  auto shared_put = exchange(http::verb::put, "/shared/note", json{{"by", users[0].name}}.dump());
  CHECK_MESSAGE(shared_put.result_int() == 201, shared_put.body());
  CHECK(couch().get("/" + shared_db + "/note").body["by"] == users[0].name);
  auto shared_info = exchange(http::verb::get, "/shared", "");
  CHECK(json::parse(shared_info.body(), nullptr, false)["db_name"] == shared_db);
}

TEST_CASE("front door: pipelined requests are answered in order; idle connections close at their timeouts") {
  auto n = fresh_names("frontidle");
  auto run = start_front(n, {{"allow_insecure", true}, {"idle_timeout", "3s"}, {"header_timeout", "500ms"}},
                         temp_dir());
  const int port = run.port;
  const auto users = provisioned_users(n, 1);
  const std::string authorization = basic(users[0].name, users[0].password);
  {
    keep_alive_connection conn(port, authorization);
    for (const char* id : {"pipe-a", "pipe-b"}) {
      REQUIRE(conn.exchange(http::verb::put, std::string("/me/") + id, json{{"id", id}}.dump()).result_int() == 201);
    }
  }
  const auto closed_after = [](tcp::socket& socket) {  // blocks until couchgate closes; how long that took
    const auto start = std::chrono::steady_clock::now();
    char byte;
    boost::system::error_code ec;
    const std::size_t n_read = socket.read_some(net::buffer(&byte, 1), ec);
    CHECK(n_read == 0);
    CHECK(ec);  // closed, nothing more sent
    return std::chrono::steady_clock::now() - start;
  };
  net::io_context io;
  // Two requests in one write: both answered, in order, on the same connection; then, idle, the
  // connection is closed at idle_timeout (not at header_timeout, and not never).
  {
    tcp::socket socket(io);
    socket.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)));
    std::string both;
    for (const char* id : {"pipe-a", "pipe-b"}) {
      both += std::string("GET /me/") + id + " HTTP/1.1\r\nHost: x\r\nAuthorization: " + authorization + "\r\n\r\n";
    }
    net::write(socket, net::buffer(both));
    beast::flat_buffer buffer;
    for (const char* id : {"pipe-a", "pipe-b"}) {
      http::response<http::string_body> res;
      http::read(socket, buffer, res);
      CHECK(res.result_int() == 200);
      CHECK(json::parse(res.body(), nullptr, false).value("id", "") == id);
      CHECK(res.keep_alive());
    }
    const auto idle = closed_after(socket);
    CHECK(idle >= std::chrono::milliseconds(2700));
    CHECK(idle < std::chrono::seconds(15));
  }
  // A connection that never sends a byte is closed at header_timeout.
  {
    tcp::socket socket(io);
    socket.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)));
    const auto silent = closed_after(socket);
    CHECK(silent >= std::chrono::milliseconds(400));
    CHECK(silent < std::chrono::milliseconds(2500));  // well before idle_timeout
  }
}

TEST_CASE("front door: per-user concurrent requests and client connections are capped") {
  auto n = fresh_names("frontcap");
  // user_queue_length 0: over the cap is refused at once (the queue has its own test below).
  auto run = start_front(
      n, {{"allow_insecure", true}, {"max_requests_per_user", 1}, {"user_queue_length", 0}, {"max_connections", 4}},
      temp_dir());
  auto& cg = *run.process;
  const int port = run.port;
  const auto pair = alice_and_bob(n, port);
  const auto& alice = pair.alice;
  const auto& bob = pair.bob;

  // Alice's one request slot is held by an unfinished upload: her next request gets 429, Bob's is served.
  // (Her slot is given back just after her last answer was written: an upload that came first is
  // refused with 429 and closed, so it is tried again until it holds the slot.)
  std::optional<held_request> feed;
  REQUIRE(eventually(
      [&] {
        feed.emplace(port, alice, "/me/held");
        return eventually([&] { return cg.metric("couchgate_front_upstream_in_use").value_or(0) == 1; },
                          std::chrono::seconds(2));
      },
      std::chrono::seconds(20)));
  auto second = front_call(port, false, "GET", "/me", alice);
  CHECK(second.status == 429);
  CHECK(second.headers.find("Retry-After") != second.headers.end());
  CHECK(front_call(port, false, "GET", "/me", bob).status == 200);
  CHECK(cg.metric("couchgate_front_user_limited_total").value_or(0) >= 1);

  // With the feed's connection open, 3 more fill max_connections: the next one is closed unanswered.
  net::io_context io;
  std::vector<tcp::socket> idle;
  for (int i = 0; i < 3; ++i) {
    idle.emplace_back(io);
    idle.back().connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)));
  }
  CHECK(eventually([&] { return cg.metric("couchgate_front_client_connections").value_or(0) == 4; }, std::chrono::seconds(5)));
  auto refused = front_call(port, false, "GET", "/", {});
  CHECK(refused.status == 0);
  CHECK(cg.metric("couchgate_front_client_connections_refused_total").value_or(0) >= 1);
  idle.clear();
  CHECK(eventually([&] { return front_call(port, false, "GET", "/", {}).status == 200; }, std::chrono::seconds(5)));

  feed.reset();
}

// A client that has the whole answer may send its next request at once, on another connection
// (PouchDB keeps several): the finished request's slot must be free by then. With one slot and
// no queue, a slot still held for a request whose answer the client already has is a 429.
TEST_CASE("front door: a finished request's slot is free by the time its client has the answer") {
  auto n = fresh_names("frontslot");
  auto run = start_front(n, {{"allow_insecure", true}, {"max_requests_per_user", 1}, {"user_queue_length", 0}},
                         temp_dir());
  const auto users = provisioned_users(n, 1);
  const std::string authorization = basic(users[0].name, users[0].password);
  keep_alive_connection a(run.port, authorization), b(run.port, authorization);
  REQUIRE(a.exchange(http::verb::put, "/me/doc", json{{"v", 1}}.dump()).result_int() == 201);
  int refused = 0, other = 0;
  for (int i = 0; i < 300; ++i) {
    for (auto* c : {&a, &b}) {
      const auto res = c->exchange(http::verb::get, "/me/doc");
      if (res.result_int() == 429) ++refused;
      else if (res.result_int() != 200) ++other;
    }
  }
  CHECK(refused == 0);
  CHECK(other == 0);
  CHECK(run.process->metric("couchgate_front_user_limited_total").value_or(0) == 0);
}

TEST_CASE("front door: a user's requests beyond the cap wait their turn, bounded in number and time") {
  auto n = fresh_names("frontq");
  auto run = start_front(n,
                         {{"allow_insecure", true},
                          {"max_requests_per_user", 1},
                          {"user_queue_length", 2},
                          {"user_queue_timeout", "4s"}},
                         temp_dir());
  auto& cg = *run.process;
  const int port = run.port;
  const auto pair = alice_and_bob(n, port);
  const auto& users = pair.users;
  const auto& alice = pair.alice;
  const auto& bob = pair.bob;

  // Alice's one slot is held by an unfinished upload (a live feed would be parked and hold no
  // slot): two more requests queue (not 429), a third finds the queue full (429 + Retry-After);
  // Bob is not held up. When the upload's connection closes, both queued requests are served.
  front_reply q1, q2;
  std::optional<held_request> held(std::in_place, port, alice, "/me/held");
  REQUIRE(eventually([&] { return cg.metric("couchgate_front_upstream_in_use").value_or(0) == 1; }, std::chrono::seconds(10)));
  std::thread t1([&] { q1 = front_call(port, false, "PUT", "/me/queued-1", alice, json{{"v", 1}}.dump()); });
  REQUIRE(eventually([&] { return cg.metric("couchgate_front_user_queued").value_or(0) == 1; }, std::chrono::seconds(10)));
  std::thread t2([&] { q2 = front_call(port, false, "PUT", "/me/queued-2", alice, json{{"v", 2}}.dump()); });
  REQUIRE(eventually([&] { return cg.metric("couchgate_front_user_queued").value_or(0) == 2; }, std::chrono::seconds(10)));
  auto full = front_call(port, false, "GET", "/me", alice);
  CHECK(full.status == 429);
  CHECK(full.headers.find("Retry-After") != full.headers.end());
  CHECK(front_call(port, false, "GET", "/me", bob).status == 200);
  held.reset();
  t1.join();
  t2.join();
  CHECK_MESSAGE(q1.status == 201, q1.raw);
  CHECK_MESSAGE(q2.status == 201, q2.raw);
  CHECK(couch().get("/" + enc(users[0].db) + "/queued-2").status == 200);
  CHECK(cg.metric("couchgate_front_user_queued").value_or(-1) == 0);

  // A queued request whose turn does not come within user_queue_timeout gets 503 + Retry-After.
  held.emplace(port, alice, "/me/held");
  REQUIRE(eventually([&] { return cg.metric("couchgate_front_upstream_in_use").value_or(0) == 1; }, std::chrono::seconds(10)));
  const auto start = std::chrono::steady_clock::now();
  auto late = front_call(port, false, "GET", "/me", alice);
  const auto waited = std::chrono::steady_clock::now() - start;
  CHECK(late.status == 503);
  CHECK(late.headers.find("Retry-After") != late.headers.end());
  CHECK(waited >= std::chrono::milliseconds(3500));
  CHECK(cg.metric("couchgate_front_user_queued").value_or(-1) == 0);
  held.reset();
  // The slot comes back once couchgate has seen the upload's connection close.
  CHECK(eventually([&] { return front_call(port, false, "GET", "/me", alice).status == 200; }, std::chrono::seconds(10)));
}

namespace {
std::string base64url(const std::string& s) {
  std::string out = b64(s);
  for (auto& c : out) c = c == '+' ? '-' : c == '/' ? '_' : c;
  while (!out.empty() && out.back() == '=') out.pop_back();
  return out;
}
std::string base64_decode(const std::string& in) {
  std::string out;
  unsigned buf = 0;
  int bits = 0;
  for (char c : in) {
    int v = c >= 'A' && c <= 'Z' ? c - 'A' : c >= 'a' && c <= 'z' ? c - 'a' + 26 : c >= '0' && c <= '9' ? c - '0' + 52
            : c == '+' ? 62 : c == '/' ? 63 : -1;
    if (v < 0) continue;
    buf = buf << 6 | static_cast<unsigned>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((buf >> bits) & 0xff);
    }
  }
  return out;
}
// An HS256 JWT for `sub` with CouchDB's default roles claim, signed with `key` (raw bytes).
std::string make_jwt(const std::string& key, const std::string& sub, const std::vector<std::string>& roles) {
  const auto exp = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count() + 600;
  const std::string signing_input = base64url(json{{"alg", "HS256"}, {"typ", "JWT"}}.dump()) + "." +
                                    base64url(json{{"sub", sub}, {"_couchdb.roles", roles}, {"exp", exp}}.dump());
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(signing_input.data()),
       signing_input.size(), mac, &len);
  return signing_input + "." + base64url(std::string(reinterpret_cast<char*>(mac), len));
}
}  // namespace

// A user whose `_users` document was written a moment ago: couchgate's provisioner has not
// applied it yet (here: its `_users` feed is held back by the proxy), so the database is missing
// (or, on CouchDB 3.x, exists with the admin-only default `_security` for a moment). The front
// door applies the policy to the caller itself before forwarding their first request.
TEST_CASE("front door: a user's first request right after their _users document is written finds their database ready") {
  fault_proxy proxy;
  auto n = fresh_names("frontfirst");
  const std::string dir = temp_dir();
  json cfg = fault_config(n, proxy);
  cfg["front"] = front_config(dir);
  cfg["front"]["allow_insecure"] = true;
  couchgate_process cg(cfg, proxy_env(proxy));
  cg.start();
  REQUIRE_MESSAGE(cg.wait_ready(std::chrono::seconds(60)), tail(cg.log()));
  const int port = front_port(dir + "/front.port");
  REQUIRE(port > 0);

  // The _users feed gets unreadable pages from now on (it backs off); its open longpoll is cut.
  proxy.answer_next(1000, http_answer("200 OK", "", R"({"unreadable":true})"), "/_users/_changes");
  proxy.cut();
  const auto cut_at = std::chrono::steady_clock::now();

  const user u{unique("fu"), "pw-" + unique("p"), ""};
  const std::string db = couchgate::policy::user_db_name(n.prefix, u.name);
  REQUIRE(create_user(u.name, {n.role}, u.password).status == 201);
  const header_list auth{{"Authorization", basic(u.name, u.password)}};
  auto put = front_call(port, false, "PUT", "/me/first", auth, json{{"v", 1}}.dump());
  CHECK_MESSAGE(put.status == 201, put.raw << tail(cg.log()));
  CHECK(db_usable_by(db, u.name));
  CHECK(front_call(port, false, "GET", "/me/first", auth).status == 200);
  // The feed saw nothing since the cut: the front door did it.
  for (const auto& r : proxy.requests()) {
    if (r.at > cut_at && r.target.find("/_users/_changes") != std::string::npos) CHECK(r.answered_by_proxy);
  }
  // A user outside the policy's selection gets nothing made: CouchDB answers (404, no database).
  const user other{unique("fo"), "pw-" + unique("p"), ""};
  REQUIRE(create_user(other.name, {"not-" + n.role}, other.password).status == 201);
  auto theirs = front_call(port, false, "GET", "/me", {{"Authorization", basic(other.name, other.password)}});
  CHECK(theirs.status == 404);
  CHECK(couch().get("/" + enc(couchgate::policy::user_db_name(n.prefix, other.name))).status == 404);
}

// The front door asks the provisioner's own record whether a caller is ready, not a memo of its
// own: a user deleted (their database with them) and recreated under the same name, or a user
// given the selected role, is applied at their next fresh `_session` answer even while the
// `_users` feed has not brought the change yet.
TEST_CASE("front door: a user recreated under the same name, or given the selected role, finds their database ready") {
  fault_proxy proxy;
  auto n = fresh_names("frontagain");
  const std::string dir = temp_dir();
  json cfg = fault_config(n, proxy);
  cfg["provisioning"]["on_delete"] = "delete";
  cfg["front"] = front_config(dir);
  cfg["front"]["allow_insecure"] = true;
  cfg["front"]["session_cache_ttl"] = "1s";
  couchgate_process cg(cfg, proxy_env(proxy));
  cg.start();
  REQUIRE_MESSAGE(cg.wait_ready(std::chrono::seconds(60)), tail(cg.log()));
  const int port = front_port(dir + "/front.port");
  REQUIRE(port > 0);

  // A user provisioned and used through the front door, then deleted: the provisioner (its feed
  // running) deletes their database.
  const user u{unique("fa"), "pw-" + unique("p"), ""};
  const std::string db = couchgate::policy::user_db_name(n.prefix, u.name);
  REQUIRE(create_user(u.name, {n.role}, u.password).status == 201);
  CHECK(front_call(port, false, "PUT", "/me/before", {{"Authorization", basic(u.name, u.password)}}, json{{"v", 1}}.dump()).status == 201);
  REQUIRE(delete_user(u.name).status == 200);
  REQUIRE_MESSAGE(deleted_by_couchgate(db, u.name, cg, std::chrono::seconds(30)), tail(cg.log()));
  // A user outside the selection, known to the front door (it looked at them and made nothing).
  const user other{unique("fb"), "pw-" + unique("p"), ""};
  const std::string other_db = couchgate::policy::user_db_name(n.prefix, other.name);
  REQUIRE(create_user(other.name, {"not-" + n.role}, other.password).status == 201);
  const header_list other_auth{{"Authorization", basic(other.name, other.password)}};
  CHECK(front_call(port, false, "GET", "/me", other_auth).status == 404);

  // From now on the provisioner's feed sees nothing.
  proxy.answer_next(1000, http_answer("200 OK", "", R"({"unreadable":true})"), "/_users/_changes");
  proxy.cut();

  // Recreated under the same name (a new password): the first request finds a database.
  const std::string again_password = "pw-" + unique("p");
  REQUIRE(create_user(u.name, {n.role}, again_password).status == 201);
  auto put = front_call(port, false, "PUT", "/me/after", {{"Authorization", basic(u.name, again_password)}}, json{{"v", 2}}.dump());
  CHECK_MESSAGE(put.status == 201, put.raw << tail(cg.log()));
  CHECK(db_usable_by(db, u.name));
  CHECK(couch().get("/" + enc(db) + "/before").status == 404);  // a new database, not the old one

  // The other user is given the selected role (their document as stored, password fields kept):
  // once their cached `_session` answer expires (1 s here), a request finds their database.
  auto doc = couch().get("/_users/" + enc("org.couchdb.user:" + other.name));
  REQUIRE(doc.status == 200);
  json changed = doc.body;
  changed["roles"] = json::array({n.role});
  REQUIRE(couch().put("/_users/" + enc("org.couchdb.user:" + other.name), changed).status == 201);
  int last = 0;
  CHECK_MESSAGE(eventually(
                    [&] {
                      last = front_call(port, false, "GET", "/me", other_auth).status;
                      return last == 200;
                    },
                    std::chrono::seconds(20)),
                "last status " << last << tail(cg.log()));
  CHECK(db_usable_by(other_db, other.name));
}

TEST_CASE("front door: a JWT user without _users document gets a database by the policy before the first request") {
  if (env().pouchdb) {
    MESSAGE("skipped: pouchdb-server has no JWT authentication (CouchDB's jwt_authentication_handler with [jwt_keys]); "
            "this case runs against a real CouchDB 3.x");
    return;
  }
  // The server accepts HS256 tokens signed with the key: either it is configured already
  // (COUCHGATE_TEST_JWT_KEY, base64, = its [jwt_keys] hmac:_default), or the test configures it
  // through the admin API (the JWT handler first in [chttpd] authentication_handlers) and puts
  // the old values back at the end.
  std::string key_b64 = std::getenv("COUCHGATE_TEST_JWT_KEY") ? std::getenv("COUCHGATE_TEST_JWT_KEY") : "";
  struct restore_config {
    std::vector<std::pair<std::string, std::optional<std::string>>> old;  // path, old value (nullopt: absent)
    ~restore_config() {
      for (auto it = old.rbegin(); it != old.rend(); ++it) {
        if (it->second) couch().put(it->first, json(*it->second));
        else couch().del(it->first);
      }
    }
    void set(const std::string& path, const std::string& value) {
      auto cur = couch().get(path);
      old.emplace_back(path, cur.status == 200 && cur.body.is_string() ? std::optional(cur.body.get<std::string>()) : std::nullopt);
      auto r = couch().put(path, json(value));
      REQUIRE_MESSAGE(r.status == 200, path << ": " << r.raw);
    }
  } restore;
  if (key_b64.empty()) {
    key_b64 = b64("couchgate-test-" + unique("jwtkey"));
    restore.set("/_node/_local/_config/jwt_keys/hmac:_default", key_b64);
    auto handlers = couch().get("/_node/_local/_config/chttpd/authentication_handlers");
    const std::string current = handlers.status == 200 && handlers.body.is_string()
                                    ? handlers.body.get<std::string>()
                                    : "{chttpd_auth, cookie_authentication_handler}, {chttpd_auth, default_authentication_handler}";
    if (current.find("jwt_authentication_handler") == std::string::npos) {
      restore.set("/_node/_local/_config/chttpd/authentication_handlers",
                  "{chttpd_auth, jwt_authentication_handler}, " + current);
    }
  }
  const std::string key = base64_decode(key_b64);

  auto n = fresh_names("frontjwt");
  auto run = start_front(n, {{"allow_insecure", true}}, temp_dir());
  auto& cg = *run.process;
  const std::string name = unique("jwtuser");
  const std::string token = make_jwt(key, name, {n.role, "app"});
  register_secret(token);
  const header_list bearer{{"Authorization", "Bearer " + token}};
  const std::string db = couchgate::policy::user_db_name(n.prefix, name);

  // CouchDB itself takes the token, asked directly: a server that does not is a setup problem,
  // said so and skipped. CouchDB 3.5 reads [chttpd] authentication_handlers at start, so the
  // configuration made above through the admin API only works on a server started with the JWT
  // handler already listed (then [jwt_keys] set at run time is enough).
  const bool server_takes_jwt = eventually(
      [&] {
        auto s = front_call(env().port, false, "GET", "/_session", bearer);
        return s.status == 200 && s.body["info"]["authenticated"] == "jwt";
      },
      std::chrono::seconds(5));
  if (!server_takes_jwt) {
    MESSAGE("skipped: the server does not accept the test's HS256 JWT: start it with "
            "{chttpd_auth, jwt_authentication_handler} in [chttpd] authentication_handlers, and set "
            "COUCHGATE_TEST_JWT_KEY to its [jwt_keys] hmac:_default (base64) or let the test set the key");
    return;
  }
  // And through couchgate's /_session passthrough.
  REQUIRE_MESSAGE(eventually(
                      [&] {
                        auto s = front_call(run.port, false, "GET", "/_session", bearer);
                        return s.status == 200 && s.body["info"]["authenticated"] == "jwt";
                      },
                      std::chrono::seconds(15)),
                  "the server does not accept the test's HS256 JWT: configure [jwt_keys] hmac:_default and the "
                  "jwt_authentication_handler, or set COUCHGATE_TEST_JWT_KEY");
  CHECK(couch().get("/_users/" + enc("org.couchdb.user:" + name)).status == 404);
  CHECK(couch().get("/" + enc(db)).status == 404);

  // The first request through /me finds the database made, with the policy's _security.
  auto info = front_call(run.port, false, "GET", "/me", bearer);
  REQUIRE_MESSAGE(info.status == 200, info.raw << "\n" << tail(cg.log()));
  CHECK(info.body["db_name"] == db);
  auto security = couch().get("/" + enc(db) + "/_security");
  CHECK_MESSAGE(security.body["members"]["names"] == json::array({name}), security.raw);
  auto put = front_call(run.port, false, "PUT", "/me/from-jwt", bearer, json{{"v", 1}}.dump());
  CHECK_MESSAGE(put.status == 201, put.raw);
  CHECK(couch().get("/" + enc(db) + "/from-jwt").status == 200);

  // A token whose roles the policy does not select gets no database (CouchDB answers 404).
  const std::string other = unique("jwtother");
  const std::string other_token = make_jwt(key, other, {"not-selected"});
  register_secret(other_token);
  auto refused = front_call(run.port, false, "GET", "/me", {{"Authorization", "Bearer " + other_token}});
  CHECK(refused.status == 404);
  CHECK(couch().get("/" + enc(couchgate::policy::user_db_name(n.prefix, other))).status == 404);
  CHECK(cg.log().find(token) == std::string::npos);
  CHECK(cg.terminate() == 0);
  couch().del("/" + enc(db));
}

TEST_CASE("front door CORS: preflights and couchgate's own answers carry CouchDB's [cors] headers") {
  auto n = fresh_names("frontcors");
  const std::string origin = "https://app.example";
  auto run = start_front(n,
                         {{"allow_insecure", true},
                          {"max_body_bytes", "4KiB"},
                          {"cors", {{"enable", true}, {"origins", {origin}}, {"credentials", true}, {"max_age", 1200}}}},
                         temp_dir());
  const int port = run.port;
  const auto get = [](const front_reply& r, http::field f) { return std::string(r.headers[f]); };

  // A preflight carries no credential: answered 204 by couchgate, for /me as for any path.
  auto pre = front_call(port, false, "OPTIONS", "/me/doc",
                        {{"Origin", origin}, {"Access-Control-Request-Method", "PUT"},
                         {"Access-Control-Request-Headers", "authorization, content-type"}});
  CHECK(pre.status == 204);
  CHECK(get(pre, http::field::access_control_allow_origin) == origin);
  CHECK(get(pre, http::field::access_control_allow_credentials) == "true");
  CHECK(get(pre, http::field::access_control_max_age) == "1200");
  CHECK(get(pre, http::field::access_control_allow_methods).find("PUT") != std::string::npos);
  CHECK(get(pre, http::field::access_control_allow_headers) == "authorization, content-type");
  CHECK(get(pre, http::field::server) == "couchgate");
  // An origin not listed, or a header not allowed: not a preflight for front.cors, so couchgate
  // does not answer it itself; it goes on to the server, as every OPTIONS did before (whose own
  // [cors] decides: pouchdb-server allows any origin, a CouchDB configured alike refuses).
  auto stranger = front_call(port, false, "OPTIONS", "/me/doc",
                             {{"Origin", "https://evil.example"}, {"Access-Control-Request-Method", "PUT"}});
  CHECK(stranger.status != 0);
  CHECK(get(stranger, http::field::server) != "couchgate");
  auto odd_header = front_call(
      port, false, "OPTIONS", "/me/doc",
      {{"Origin", origin}, {"Access-Control-Request-Method", "PUT"}, {"Access-Control-Request-Headers", "x-secret"}});
  CHECK(get(odd_header, http::field::server) != "couchgate");

  // Error answers couchgate writes itself: 401 (no credential), 404 (not a route), 413 (body cap).
  auto unauthorized = front_call(port, false, "GET", "/me", {{"Origin", origin}});
  CHECK(unauthorized.status == 401);
  CHECK(get(unauthorized, http::field::access_control_allow_origin) == origin);
  CHECK(get(unauthorized, http::field::access_control_allow_credentials) == "true");
  CHECK(get(unauthorized, http::field::access_control_expose_headers).starts_with("content-type, cache-control"));
  auto not_found = front_call(port, false, "GET", "/_all_dbs", {{"Origin", origin}});
  CHECK(not_found.status == 404);
  CHECK(get(not_found, http::field::access_control_allow_origin) == origin);
  auto too_large = front_call(port, false, "PUT", "/me/big", {{"Origin", origin}}, std::string(8192, 'x'));
  CHECK(too_large.status == 413);
  CHECK(get(too_large, http::field::access_control_allow_origin) == origin);
  // No Origin, or one not listed: no CORS headers.
  auto bare = front_call(port, false, "GET", "/me");
  CHECK(bare.headers.find(http::field::access_control_allow_origin) == bare.headers.end());
  auto other = front_call(port, false, "GET", "/me", {{"Origin", "https://evil.example"}});
  CHECK(other.status == 401);
  CHECK(other.headers.find(http::field::access_control_allow_origin) == other.headers.end());

  // A live feed's answer is couchgate's own too (the feed is parked, the server never answers
  // it): longpoll (whole answer) and continuous (streamed header) carry the same headers.
  const auto pair = alice_and_bob(n, port);
  header_list with_origin = pair.alice;
  with_origin.emplace_back("Origin", origin);
  auto longpoll = front_call(port, false, "GET", "/me/_changes?feed=longpoll&since=now&timeout=300", with_origin);
  CHECK_MESSAGE(longpoll.status == 200, longpoll.raw);
  CHECK(get(longpoll, http::field::access_control_allow_origin) == origin);
  CHECK(get(longpoll, http::field::access_control_allow_credentials) == "true");
  auto continuous = front_call(port, false, "GET", "/me/_changes?feed=continuous&since=now&timeout=300", with_origin);
  CHECK_MESSAGE(continuous.status == 200, continuous.raw);
  CHECK(get(continuous, http::field::access_control_allow_origin) == origin);
  CHECK(run.process->terminate() == 0);
}

TEST_CASE("front door: SIGHUP applies the body cap and the auth failure limit live; a changed port is named as needing a restart") {
  auto n = fresh_names("frontlive");
  const std::string dir = temp_dir();
  json cfg = base_config(n);
  cfg["front"] = front_config(dir);
  cfg["front"].update(json{{"allow_insecure", true}, {"max_body_bytes", "4KiB"}, {"auth_failure_limit", 100}});
  couchgate_process cg(cfg);
  cg.start();
  REQUIRE_MESSAGE(cg.wait_ready(std::chrono::seconds(60)), tail(cg.log()));
  const int port = front_port(dir + "/front.port");
  REQUIRE(port > 0);
  const auto users = provisioned_users(n, 1);
  const header_list auth{{"Authorization", basic(users[0].name, users[0].password)}};
  const std::string big = json{{"pad", std::string(8192, 'x')}}.dump();

  CHECK(front_call(port, false, "PUT", "/me/big-1", auth, big).status == 413);
  for (int i = 0; i < 2; ++i) {
    CHECK(front_call(port, false, "GET", "/me", {{"Authorization", basic(users[0].name, "wrong")}}).status == 401);
  }

  cfg["front"]["max_body_bytes"] = "64KiB";
  cfg["front"]["auth_failure_limit"] = 3;
  cfg["front"]["port"] = 1;  // not applied: the listener keeps its port
  cg.reload(cfg);
  REQUIRE_MESSAGE(eventually([&] { return cg.log().find("changed keys need a restart") != std::string::npos; },
                             std::chrono::seconds(10)),
                  tail(cg.log()));
  const std::string log = cg.log();
  CHECK(log.find("applied front.max_body_bytes, front.auth_failure_limit") != std::string::npos);
  CHECK(log.find("need a restart to take effect: front.port") != std::string::npos);

  // The same listener (its port did not change) takes the new cap and the new limit.
  auto put = front_call(port, false, "PUT", "/me/big-2", auth, big);
  CHECK_MESSAGE(put.status == 201, put.raw);
  CHECK(front_call(port, false, "GET", "/me", {{"Authorization", basic(users[0].name, "wrong")}}).status == 401);
  CHECK(front_call(port, false, "GET", "/me", auth).status == 429);  // 3 failures in the window now
  CHECK(cg.terminate() == 0);
}

TEST_CASE("live feeds: a re-issued longpoll couchgate answered itself parks without a first check; no write is missed") {
  auto n = fresh_names("frontskip");
  const std::string dir = temp_dir();
  // couchgate reaches the server through a proxy that records every request: the upstream
  // `_changes` reads are counted there, not by couchgate's own word.
  fault_proxy proxy;
  auto run = start_front(n, json{{"allow_insecure", true}, {"feed_sweep_interval", "200ms"}}, dir,
                         json{{"couchdb", {{"url", proxy.url()}}}}, proxy_env(proxy));
  const int port = run.port;
  auto& cg = *run.process;
  const auto users = provisioned_users(n, 1);
  const header_list alice{{"Authorization", basic(users[0].name, users[0].password)}};
  // Which way the feeds are woken: only with `_db_updates` events may a first check be skipped.
  // CouchDB 3.5 has `_db_updates`; pouchdb-server has not (sweep mode: never skipped).
  const bool events = !env().pouchdb;
  const std::string mode_line = events ? "live feeds are woken by _db_updates events" : "live feeds are woken by";
  REQUIRE_MESSAGE(eventually([&] { return cg.log().find(mode_line) != std::string::npos; }, std::chrono::seconds(30)),
                  tail(cg.log()));

  const std::string changes_of_db = "/" + enc(users[0].db) + "/_changes";
  const auto reads = [&] {
    double count = 0;
    for (const auto& r : proxy.requests()) count += r.target.find(changes_of_db) != std::string::npos ? 1 : 0;
    return count;
  };
  const auto longpoll = [&](const std::string& since, int timeout_ms) {
    return front_call(port, false, "GET",
                      "/me/_changes?feed=longpoll&style=all_docs&timeout=" + std::to_string(timeout_ms) +
                          "&since=" + enc(since),
                      alice);
  };
  const auto seq_of = [](const front_reply& r) {
    return r.body.contains("last_seq") ? (r.body["last_seq"].is_string() ? r.body["last_seq"].get<std::string>()
                                                                        : r.body["last_seq"].dump())
                                       : std::string();
  };

  // 1. Answered by timeout, then re-issued from its last_seq: no upstream `_changes` read (in
  // sweep mode: one, as before). A late announcement of the provisioning's writes may forget the
  // first records: tried until the answers settle.
  std::string since = "now";
  double skipped_reads = -1;
  const bool settled = eventually(
      [&] {
        const auto first = longpoll(since, 200);
        REQUIRE_MESSAGE(first.status == 200, first.raw);
        since = seq_of(first);
        REQUIRE(!since.empty());
        const double before = reads();
        const auto again = longpoll(since, 200);
        REQUIRE_MESSAGE(again.status == 200, again.raw);
        CHECK(seq_of(again) == since);
        CHECK(again.body["results"].empty());
        skipped_reads = reads() - before;
        return skipped_reads == (events ? 0 : 1);
      },
      std::chrono::seconds(20));
  CHECK_MESSAGE(settled, "upstream _changes reads of the re-issued longpoll: " << skipped_reads);
  CHECK(reads() > 0);  // the proxy did see the first checks
  if (events) CHECK(cg.metric("couchgate_front_feed_checks_skipped_total").value_or(0) >= 1);

  // 2. A write made right after the answer (before the re-issue) is delivered by the re-issue,
  // skipped or not, every time.
  for (int i = 0; i < 3; ++i) {
    const auto first = longpoll(since, 200);
    REQUIRE_MESSAGE(first.status == 200, first.raw);
    since = seq_of(first);
    const std::string id = "right-after-" + std::to_string(i);
    REQUIRE(couch().put("/" + enc(users[0].db) + "/" + id, json{{"n", i}}).status == 201);
    const auto again = longpoll(since, 20000);
    REQUIRE_MESSAGE(again.status == 200, again.raw);
    bool found = false;
    for (const auto& row : again.body["results"]) found = found || row.value("id", "") == id;
    CHECK_MESSAGE(found, "write " << id << " not in " << again.raw);
    since = seq_of(again);
  }

  // 3. A re-issued longpoll parked at once is woken by a write made while it waits.
  const auto quiet = longpoll(since, 200);
  REQUIRE(quiet.status == 200);
  since = seq_of(quiet);
  front_reply woken;
  std::thread waiter([&] { woken = longpoll(since, 20000); });
  const bool parked = eventually([&] { return cg.metric("couchgate_front_feeds_parked").value_or(0) >= 1; }, std::chrono::seconds(20));
  CHECK(couch().put("/" + enc(users[0].db) + "/while-parked", json{{"n", 9}}).status == 201);
  waiter.join();
  CHECK(parked);
  REQUIRE_MESSAGE(woken.status == 200, woken.raw);
  bool found = false;
  for (const auto& row : woken.body["results"]) found = found || row.value("id", "") == "while-parked";
  CHECK_MESSAGE(found, woken.raw);
  CHECK(run.process->terminate() == 0);
}

TEST_CASE("live feeds with fan-in off: the front door follows _db_updates itself, so a direct write wakes a parked feed long before a sweep") {
  // An operator may run couchgate as the front door alone. Its parked feeds then need the
  // `_db_updates` follower the fan-in would have run; the sweep (here every 60 s) is only the
  // fallback for servers without the feed.
  auto n = fresh_names("frontonly");
  const std::string dir = temp_dir();
  const bool events = !env().pouchdb;  // pouchdb-server has no _db_updates: it sweeps (here every 200 ms)
  auto run = start_front(n, json{{"allow_insecure", true}, {"feed_sweep_interval", events ? "60s" : "200ms"}}, dir,
                         json{{"fanin", {{"enabled", false}}}});
  auto& cg = *run.process;
  const auto users = provisioned_users(n, 1);
  const header_list alice{{"Authorization", basic(users[0].name, users[0].password)}};
  const std::string mode_line = events ? "live feeds are woken by _db_updates events" : "live feeds are woken by a sweep";
  REQUIRE_MESSAGE(eventually([&] { return cg.log().find(mode_line) != std::string::npos; }, std::chrono::seconds(30)),
                  tail(cg.log()));
  auto first = front_call(run.port, false, "GET", "/me/_changes?feed=longpoll&timeout=200&since=now", alice);
  REQUIRE_MESSAGE(first.status == 200, first.raw);
  std::string since = first.body["last_seq"].is_string() ? first.body["last_seq"].get<std::string>() : first.body["last_seq"].dump();
  for (int i = 0; i < 3; ++i) {
    front_reply woken;
    std::thread waiter([&] {
      woken = front_call(run.port, false, "GET", "/me/_changes?feed=longpoll&timeout=30000&since=" + enc(since), alice);
    });
    const bool parked =
        eventually([&] { return cg.metric("couchgate_front_feeds_parked").value_or(0) >= 1; }, std::chrono::seconds(20));
    const auto wrote = std::chrono::steady_clock::now();
    CHECK(couch().put("/" + enc(users[0].db) + "/direct-" + std::to_string(i), json{{"n", i}}).status == 201);
    waiter.join();
    const auto took = std::chrono::steady_clock::now() - wrote;
    CHECK(parked);
    REQUIRE_MESSAGE(woken.status == 200, woken.raw);
    bool found = false;
    for (const auto& row : woken.body["results"]) found = found || row.value("id", "") == "direct-" + std::to_string(i);
    CHECK_MESSAGE(found, woken.raw);
    // Within a generous bound that a 60 s sweep would miss, not a timing of the feed.
    CHECK_MESSAGE(took < std::chrono::seconds(15), std::chrono::duration<double>(took).count() << " s");
    since = woken.body["last_seq"].is_string() ? woken.body["last_seq"].get<std::string>() : woken.body["last_seq"].dump();
  }
  if (events) CHECK(cg.metric("couchgate_db_updates_events_total").value_or(0) >= 3);
  CHECK(cg.admin_get("/status").body.value("detection", "") == (events ? "db_updates" : "sweep"));
  CHECK(run.process->terminate() == 0);
}

TEST_CASE("live feeds: a write through the front door wakes its database's parked feeds at once, before any announcement") {
  // Fan-in off and a sweep once an hour: nothing but the front door's own writes can wake a feed
  // within this test (on CouchDB and pouchdb-server alike).
  auto n = fresh_names("frontwrite");
  const std::string dir = temp_dir();
  const std::string shared_db = "t" + unique("shared");
  auto run = start_front(n, json{{"allow_insecure", true}, {"feed_sweep_interval", "1h"}}, dir,
                         json{{"fanin", {{"enabled", false}}},
                              {"shared", {{"enabled", true}, {"db", shared_db}, {"member_roles", {n.role}}}}});
  const int port = run.port;
  auto& cg = *run.process;
  const auto p = alice_and_bob(n, port);
  REQUIRE(eventually([&] { return couch().get("/" + shared_db).status == 200; }, std::chrono::seconds(30)));
  const auto announced = [&] { return cg.metric("couchgate_front_writes_announced_total").value_or(-1); };
  const auto parked = [&] { return cg.metric("couchgate_front_feeds_parked").value_or(0); };
  const auto has_row = [](const front_reply& r, const std::string& id) {
    for (const auto& row : r.body.value("results", json::array())) {
      if (row.value("id", "") == id) return true;
    }
    return false;
  };
  // A longpoll parked on `path` (up to 30 s: the write must come long before), then `write`.
  const auto woken_by = [&](const std::string& path, const header_list& who, const std::function<void()>& write,
                            int timeout_ms = 30000) {
    const double parked_before = parked();
    front_reply reply;
    std::thread waiter([&] {
      reply = front_call(port, false, "GET",
                         path + "/_changes?feed=longpoll&since=now&timeout=" + std::to_string(timeout_ms), who);
    });
    const bool waits = eventually([&] { return parked() > parked_before; }, std::chrono::seconds(20));
    write();
    waiter.join();
    CHECK(waits);
    return reply;
  };

  // 1. A document written through /me: alice's other device, parked, gets it.
  const double before = announced();
  REQUIRE(before >= 0);
  auto got = woken_by("/me", p.alice, [&] {
    CHECK(front_call(port, false, "PUT", "/me/through-front", p.alice, json{{"n", 1}}.dump()).status == 201);
  });
  REQUIRE_MESSAGE(got.status == 200, got.raw);
  CHECK_MESSAGE(has_row(got, "through-front"), got.raw);
  CHECK(announced() == before + 1);

  // 2. _bulk_docs and a deletion wake too.
  got = woken_by("/me", p.alice, [&] {
    const json docs = {{"docs", json::array({json{{"_id", "bulk-1"}}, json{{"_id", "bulk-2"}}})}};
    CHECK(front_call(port, false, "POST", "/me/_bulk_docs", p.alice, docs.dump()).status == 201);
  });
  CHECK_MESSAGE(has_row(got, "bulk-1"), got.raw);
  const auto doc = front_call(port, false, "GET", "/me/through-front", p.alice);
  REQUIRE(doc.status == 200);
  got = woken_by("/me", p.alice, [&] {
    const auto rev = doc.body.value("_rev", "");
    CHECK(front_call(port, false, "DELETE", "/me/through-front?rev=" + rev, p.alice).status == 200);
  });
  CHECK_MESSAGE(has_row(got, "through-front"), got.raw);
  CHECK(announced() == before + 3);

  // 3. What adds no row announces nothing: a _local document, a read sent as POST, a refused write.
  CHECK(front_call(port, false, "PUT", "/me/_local/checkpoint", p.alice, json{{"seq", 1}}.dump()).status == 201);
  CHECK(front_call(port, false, "POST", "/me/_revs_diff", p.alice, json{{"x", {"1-a"}}}.dump()).status == 200);
  CHECK(front_call(port, false, "PUT", "/me/bulk-1", p.alice, json{{"stale", true}}.dump()).status == 409);
  CHECK(announced() == before + 3);
  // 4. A write wakes the feeds of its own database only: bob, parked on his /me, is not woken
  // by alice's write to hers (his longpoll ends by its own timeout, empty).
  const double wakes_before = cg.metric("couchgate_front_feed_wakes_total").value_or(-1);
  auto quiet = woken_by("/me", p.bob, [&] {
    CHECK(front_call(port, false, "PUT", "/me/for-alice-only", p.alice, json{{"n", 2}}.dump()).status == 201);
    CHECK(announced() == before + 4);
    CHECK(cg.metric("couchgate_front_feed_wakes_total").value_or(-1) == wakes_before);
  }, 1500);
  REQUIRE_MESSAGE(quiet.status == 200, quiet.raw);
  CHECK_MESSAGE(quiet.body["results"].empty(), quiet.raw);

  // 5. /shared: bob, parked there, gets what alice writes to it.
  got = woken_by("/shared", p.bob, [&] {
    CHECK(front_call(port, false, "PUT", "/shared/from-alice", p.alice, json{{"n", 3}}.dump()).status == 201);
  });
  REQUIRE_MESSAGE(got.status == 200, got.raw);
  CHECK_MESSAGE(has_row(got, "from-alice"), got.raw);
  CHECK(run.process->terminate() == 0);
}

TEST_CASE("live feeds: a write whose _db_updates event never came is read within the session cache lifetime, however often the longpoll is re-issued") {
  // CouchDB does not promise that every database update reaches `_db_updates` (global_changes
  // drops what it fails to write). A re-issued longpoll that couchgate answered itself skips its
  // first check only for one session cache lifetime after the last real read, however many
  // answers it was handed meanwhile: then it reads, and finds the write nobody announced.
  if (env().pouchdb) {
    MESSAGE("pouchdb-server has no _db_updates: live feeds are woken by a sweep and never skip a read; nothing to test");
    return;
  }
  auto n = fresh_names("frontlost");
  const std::string dir = temp_dir();
  fault_proxy proxy;
  auto run = start_front(n, json{{"allow_insecure", true}, {"session_cache_ttl", "3s"}}, dir,
                         json{{"couchdb", {{"url", proxy.url()}}}}, proxy_env(proxy));
  auto& cg = *run.process;
  const auto users = provisioned_users(n, 1);
  const header_list alice{{"Authorization", basic(users[0].name, users[0].password)}};
  REQUIRE_MESSAGE(eventually([&] { return cg.log().find("live feeds are woken by _db_updates events") != std::string::npos; },
                             std::chrono::seconds(30)),
                  tail(cg.log()));
  const auto longpoll = [&](const std::string& since) {
    return front_call(run.port, false, "GET", "/me/_changes?feed=longpoll&timeout=300&since=" + enc(since), alice);
  };
  const auto seq_of = [](const front_reply& r) {
    return r.body.contains("last_seq") ? (r.body["last_seq"].is_string() ? r.body["last_seq"].get<std::string>()
                                                                        : r.body["last_seq"].dump())
                                       : std::string();
  };
  // The client is up to date and keeps re-issuing its longpoll from there (answered by couchgate,
  // its first check skipped while the chain of answers lasts), from before the write to the end.
  auto first = longpoll("now");
  REQUIRE_MESSAGE(first.status == 200, first.raw);
  const std::string since = seq_of(first);
  REQUIRE(!since.empty());
  std::atomic<bool> found{false}, stop{false};
  std::atomic<int> answers{0}, failures{0};
  std::thread client([&] {
    while (!stop && !found) {
      const auto again = longpoll(since);
      if (again.status != 200) {  // a read cut with couchgate's connections by proxy.cut() below
        ++failures;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        continue;
      }
      ++answers;
      for (const auto& row : again.body["results"]) {
        if (row.value("id", "") == "unannounced") found = true;
      }
    }
  });
  struct joiner {  // a failed REQUIRE below still stops the client
    std::atomic<bool>& stop;
    std::thread& t;
    ~joiner() {
      stop = true;
      if (t.joinable()) t.join();
    }
  } join_client{stop, client};

  // couchgate's `_db_updates` follower is kept from the server (its next read held at the proxy),
  // the write is made, and the follower is then handed a position past it: the write's event
  // never reaches couchgate, as when CouchDB drops it.
  const auto top = couch().get("/_db_updates?descending=true&limit=1");
  REQUIRE(top.status == 200);
  const std::string before = top.body.contains("last_seq") ? top.body["last_seq"].get<std::string>() : std::string();
  proxy.hold("/_db_updates");
  proxy.cut();
  REQUIRE_MESSAGE(eventually([&] { return proxy.held() >= 1; }, std::chrono::seconds(20)), tail(cg.log()));
  REQUIRE(couch().put("/" + enc(users[0].db) + "/unannounced", json{{"n", 1}}).status == 201);
  std::string past;
  REQUIRE(eventually(
      [&] {
        const auto page = couch().get("/_db_updates?since=" + enc(before));
        if (page.status != 200 || !page.body.contains("results")) return false;
        for (const auto& row : page.body["results"]) {
          if (row.value("db_name", "") == users[0].db) {
            past = page.body["last_seq"].get<std::string>();
            return true;
          }
        }
        return false;
      },
      std::chrono::seconds(20)));
  const std::string canned = json{{"results", json::array()}, {"last_seq", past}}.dump();
  proxy.answer_next(1,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(canned.size()) +
                        "\r\n\r\n" + canned,
                    "/_db_updates");
  proxy.cut();  // the held read goes with its connection
  proxy.hold({});
  REQUIRE_MESSAGE(eventually(
                      [&] {
                        for (const auto& r : proxy.requests()) {
                          if (r.answered_by_proxy && r.target.find("/_db_updates") != std::string::npos) return true;
                        }
                        return false;
                      },
                      std::chrono::seconds(20)),
                  tail(cg.log()));

  // Within the session cache lifetime (3 s) of the client's last real read, plus a longpoll,
  // it is handed the write.
  eventually([&] { return found.load(); }, std::chrono::seconds(20));
  stop = true;
  if (client.joinable()) client.join();
  CHECK_MESSAGE(found, "the unannounced write was not handed over in " << answers.load() << " answers ("
                                                                           << failures.load() << " failed): " << tail(cg.log()));
  // The break lost nothing by the server's word: no feed was woken for it (which would have
  // read the write whatever the chain of skipped reads did).
  CHECK_MESSAGE(cg.log().find("every node was up throughout: nothing was lost") != std::string::npos, tail(cg.log()));
  CHECK(cg.metric("couchgate_front_feed_checks_skipped_total").value_or(0) >= 1);
  CHECK(run.process->terminate() == 0);
}

namespace {
// GET /_session requests that reached the server through `proxy`.
int session_checks(const fault_proxy& proxy) {
  int count = 0;
  for (const auto& r : proxy.requests()) count += r.target.find("/_session") != std::string::npos ? 1 : 0;
  return count;
}

// Changes `user`'s password on the server (the new one registered for the log scan); returns it.
std::string change_password(const std::string& user, const std::string& tag) {
  const std::string new_password = "pw-" + unique(tag);
  register_basic_secret(user, new_password);
  const std::string user_doc = "/_users/" + enc("org.couchdb.user:" + user);
  auto doc = couch().get(user_doc);
  REQUIRE(doc.status == 200);
  doc.body["password"] = new_password;
  REQUIRE(couch().put(user_doc, doc.body).status == 201);
  return new_password;
}
}  // namespace

TEST_CASE("live feeds: a re-issued live feed finds its database from the route memo past the session cache; plain requests ask _session") {
  auto n = fresh_names("frontroute");
  const std::string dir = temp_dir();
  fault_proxy proxy;  // counts the GET /_session requests that reach the server
  // No session cache at all: every plain request asks CouchDB who the caller is.
  auto run = start_front(n, json{{"allow_insecure", true}, {"session_cache_ttl", "0ms"}, {"route_cache_ttl", "10m"}},
                         dir, json{{"couchdb", {{"url", proxy.url()}}}}, proxy_env(proxy));
  auto& cg = *run.process;
  const auto users = provisioned_users(n, 1);
  const header_list alice{{"Authorization", basic(users[0].name, users[0].password)}};
  const auto longpoll = [&](const std::string& since) {
    return front_call(run.port, false, "GET", "/me/_changes?feed=longpoll&timeout=200&since=" + enc(since), alice);
  };
  const auto first = longpoll("now");
  REQUIRE_MESSAGE(first.status == 200, first.raw);
  const int asked = session_checks(proxy);
  CHECK(asked >= 1);
  const std::string since =
      first.body["last_seq"].is_string() ? first.body["last_seq"].get<std::string>() : first.body["last_seq"].dump();
  const std::string changes_of_db = "/" + enc(users[0].db) + "/_changes";
  const auto reads = [&] {
    int count = 0;
    for (const auto& r : proxy.requests()) count += r.target.find(changes_of_db) != std::string::npos ? 1 : 0;
    return count;
  };
  for (int i = 0; i < 3; ++i) {
    const int before = reads();
    const auto again = longpoll(since);
    REQUIRE_MESSAGE(again.status == 200, again.raw);
    // Routed by the memo alone, the feed is not parked without a first check: that read, made
    // with the credential, is what CouchDB refuses once the credential is revoked.
    CHECK(reads() > before);
  }
  CHECK(session_checks(proxy) == asked);  // the re-issued feeds did not ask
  CHECK(cg.metric("couchgate_front_route_cache_hits_total").value_or(0) >= 3);
  // A plain request keeps session_cache_ttl's meaning (here: ask every time).
  REQUIRE(front_call(run.port, false, "GET", "/me", alice).status == 200);
  CHECK(session_checks(proxy) == asked + 1);
  // A wrong password is never routed by the memo: CouchDB is asked, and says 401.
  const auto wrong = front_call(run.port, false, "GET", "/me/_changes?feed=longpoll&timeout=200&since=now",
                                {{"Authorization", basic(users[0].name, "not-the-password")}});
  CHECK(wrong.status == 401);
  CHECK(session_checks(proxy) == asked + 2);
  CHECK(run.process->terminate() == 0);
}

TEST_CASE("live feeds: a parked client whose password changed gets 401 from its wake's _changes read; the next request asks _session") {
  auto n = fresh_names("frontwake401");
  const std::string dir = temp_dir();
  fault_proxy proxy;
  // Session cache and route memo both outlive the test, and the GET /_session that the changed
  // `_users` document brings on (front_door::user_changed) is held at the proxy: the only thing
  // that can end the feed with 401 is the wake's own `_changes` read, made with the client's
  // credential.
  auto run = start_front(n,
                         json{{"allow_insecure", true}, {"session_cache_ttl", "10m"}, {"route_cache_ttl", "10m"},
                              {"feed_sweep_interval", "200ms"}},
                         dir, json{{"couchdb", {{"url", proxy.url()}}}}, proxy_env(proxy));
  auto& cg = *run.process;
  const auto users = provisioned_users(n, 1);
  const header_list old_credential{{"Authorization", basic(users[0].name, users[0].password)}};
  const auto longpoll = [&](const header_list& who, const std::string& since, int timeout_ms) {
    return front_call(run.port, false, "GET",
                      "/me/_changes?feed=longpoll&timeout=" + std::to_string(timeout_ms) + "&since=" + enc(since), who);
  };
  const auto first = longpoll(old_credential, "now", 200);
  REQUIRE_MESSAGE(first.status == 200, first.raw);
  const std::string since =
      first.body["last_seq"].is_string() ? first.body["last_seq"].get<std::string>() : first.body["last_seq"].dump();

  front_reply woken;
  std::thread client([&] { woken = longpoll(old_credential, since, 60000); });
  const bool parked =
      eventually([&] { return cg.metric("couchgate_front_feeds_parked").value_or(0) >= 1; }, std::chrono::seconds(20));
  // The password changes on the server; once the server takes the new one, it refuses the old.
  proxy.hold("/_session");
  const std::string new_password = change_password(users[0].name, "changed");
  const bool taken = eventually([&] { return couch(users[0].name, new_password).get("/_session").status == 200; },
                                std::chrono::seconds(20));
  // A write to the client's database wakes it.
  REQUIRE(couch().put("/" + enc(users[0].db) + "/wakes-the-client", json{{"n", 1}}).status == 201);
  client.join();
  CHECK(parked);
  CHECK(taken);
  CHECK_MESSAGE(woken.status == 401, woken.raw);
  CHECK(cg.log().find("credential no longer accepted; live feed ended with 401 (CouchDB refused a _changes read)") !=
        std::string::npos);
  proxy.hold({});
  const int asked = session_checks(proxy);
  // Forgotten in both caches: the next request, a live feed too, asks GET /_session again.
  const auto again = longpoll(old_credential, since, 200);
  CHECK_MESSAGE(again.status == 401, again.raw);
  CHECK(session_checks(proxy) == asked + 1);
  // The new password is served.
  const auto renewed = longpoll({{"Authorization", basic(users[0].name, new_password)}}, since, 200);
  CHECK_MESSAGE(renewed.status == 200, renewed.raw);
  CHECK(run.process->terminate() == 0);
}

TEST_CASE("live feeds: a parked feed's credential re-check never holds up its deliveries; its 401 ends the feed") {
  auto n = fresh_names("frontrecheck");
  const std::string dir = temp_dir();
  fault_proxy proxy;  // holds the GET /_session re-checks, lets everything else through
  // A session cache of 1 s: a parked feed's credential is asked about again a second after
  // it was accepted. Two upstream connections: a re-check may hold one of them, never both.
  auto run = start_front(n,
                         json{{"allow_insecure", true},
                              {"session_cache_ttl", "1s"},
                              {"route_cache_ttl", "10m"},
                              {"feed_sweep_interval", "200ms"},
                              {"upstream", {{"max_connections", 2}}}},
                         dir, json{{"couchdb", {{"url", proxy.url()}}}}, proxy_env(proxy));
  auto& cg = *run.process;
  const auto users = provisioned_users(n, 1);
  const header_list alice{{"Authorization", basic(users[0].name, users[0].password)}};
  const auto longpoll = [&](const std::string& since, int timeout_ms) {
    return front_call(run.port, false, "GET",
                      "/me/_changes?feed=longpoll&timeout=" + std::to_string(timeout_ms) + "&since=" + enc(since), alice);
  };
  const auto seq_of = [](const front_reply& r) {
    return r.body["last_seq"].is_string() ? r.body["last_seq"].get<std::string>() : r.body["last_seq"].dump();
  };
  const auto has_row = [](const front_reply& r, const std::string& id) {
    bool found = false;
    if (r.body.contains("results") && r.body["results"].is_array()) {
      for (const auto& row : r.body["results"]) found = found || row.value("id", "") == id;
    }
    return found;
  };
  const auto first = longpoll("now", 200);
  REQUIRE_MESSAGE(first.status == 200, first.raw);
  std::string since = seq_of(first);

  // 1. From now on CouchDB's answer to a GET /_session is late. The parked feed's re-check goes
  // out (and hangs), yet a write to its database is delivered at once by the wake's own read.
  proxy.hold("/_session");
  std::atomic<bool> answered{false};
  front_reply woken;
  std::thread client([&] {
    woken = longpoll(since, 60000);
    answered = true;
  });
  const bool rechecking = eventually([&] { return proxy.held() >= 1; }, std::chrono::seconds(20));
  CHECK_MESSAGE(rechecking, tail(cg.log()));
  CHECK(cg.metric("couchgate_front_feed_rechecks_total").value_or(0) >= 1);
  REQUIRE(couch().put("/" + enc(users[0].db) + "/during-recheck", json{{"n", 1}}).status == 201);
  const bool delivered = eventually([&] { return answered.load(); }, std::chrono::seconds(20));
  CHECK_MESSAGE(delivered, "the write waited for the held credential re-check");
  CHECK(proxy.held() >= 1);  // still held: the delivery did not wait for it
  if (!delivered) proxy.hold({});
  client.join();
  REQUIRE_MESSAGE(woken.status == 200, woken.raw);
  CHECK_MESSAGE(has_row(woken, "during-recheck"), woken.raw);
  since = seq_of(woken);

  // 2. The password changes while the (shared, still held) re-check waits: once it reaches
  // CouchDB, its 401 ends the parked feed with a real 401 (no heartbeat was due yet).
  front_reply refused;
  std::atomic<bool> ended{false};
  std::thread second([&] {
    refused = longpoll(since, 60000);
    ended = true;
  });
  CHECK(eventually([&] { return cg.metric("couchgate_front_feeds_parked").value_or(0) >= 1; }, std::chrono::seconds(20)));
  change_password(users[0].name, "rechecked");
  // (The server's own check is asked directly, not through the proxy.)
  CHECK(eventually([&] { return couch(users[0].name, users[0].password).get("/_session").status == 401; },
                   std::chrono::seconds(20)));
  proxy.hold({});
  CHECK(eventually([&] { return ended.load(); }, std::chrono::seconds(30)));
  second.join();
  CHECK_MESSAGE(refused.status == 401, refused.raw);
  CHECK(cg.log().find("credential no longer accepted; live feed ended with 401\n") != std::string::npos);
  CHECK(run.process->terminate() == 0);
}

TEST_CASE("live feeds: CouchDB's refreshed session cookie reaches a cookie client that only syncs live") {
  if (env().pouchdb) {
    MESSAGE("skipped: pouchdb-server has no [chttpd_auth] timeout whose 10% mark refreshes a cookie session");
    return;
  }
  // CouchDB sends a fresh AuthSession cookie on a request made with one once 10% of
  // [chttpd_auth] timeout has passed. The test does not change the server's config: it waits
  // for that mark, so it runs where the timeout is short (a private instance, e.g. 20 s).
  const auto configured = couch().get("/_node/_local/_config/chttpd_auth/timeout");
  const long timeout_s =
      configured.status == 200 && configured.body.is_string() ? std::atol(configured.body.get<std::string>().c_str()) : 600;
  if (timeout_s > 30) {
    MESSAGE("skipped: the server's [chttpd_auth] timeout is " << timeout_s
                                                             << " s; the refresh would come after " << timeout_s / 10
                                                             << " s (set it to 30 s or less on a private instance)");
    return;
  }
  auto n = fresh_names("frontcookie");
  const std::string dir = temp_dir();
  auto run = start_front(n, json{{"allow_insecure", true}, {"session_cache_ttl", "1s"}}, dir);
  const auto users = provisioned_users(n, 1);
  const auto login = front_call(run.port, false, "POST", "/_session", {},
                                json{{"name", users[0].name}, {"password", users[0].password}}.dump());
  REQUIRE_MESSAGE(login.status == 200, login.raw);
  const auto cookie_of = [](const front_reply& r) {
    for (const auto& f : r.headers) {
      if (f.name() == http::field::set_cookie && f.value().starts_with("AuthSession=")) {
        const std::string v(f.value());
        return v.substr(0, v.find(';'));
      }
    }
    return std::string();
  };
  const std::string first = cookie_of(login);
  REQUIRE(!first.empty());
  // Only live feeds, each longer than a moment: one of them must carry the refreshed cookie
  // before the session's timeout ends.
  std::string fresh;
  std::string since = "now";
  const bool refreshed = eventually(
      [&] {
        const auto r = front_call(run.port, false, "GET", "/me/_changes?feed=longpoll&timeout=1000&since=" + enc(since),
                                  {{"Cookie", first}});
        REQUIRE_MESSAGE(r.status == 200, r.raw);
        since = r.body.value("last_seq", json("now")).is_string() ? r.body["last_seq"].get<std::string>() : "now";
        fresh = cookie_of(r);
        return !fresh.empty();
      },
      std::chrono::seconds(timeout_s * 9 / 10));
  REQUIRE_MESSAGE(refreshed, "no Set-Cookie on any live feed answer within 90% of the session timeout");
  CHECK(fresh != first);
  // The fresh cookie is a session CouchDB accepts.
  const auto me = front_call(run.port, false, "GET", "/me", {{"Cookie", fresh}});
  CHECK_MESSAGE(me.status == 200, me.raw);
  CHECK(run.process->terminate() == 0);
}

TEST_CASE("live feeds: a plain request during a burst of live feeds' first checks is served before them, not 503") {
  // couchgate reaches the server through a slow proxy (every answer 300 ms late) with ONE
  // upstream connection whose wait is 2 s: 20 live feeds' first checks queue for it (each may
  // wait up to its own timeout; two at the pool, the others parked for their turn to read,
  // feed_read_gate); a plain GET /me that arrives after them must get the next free connection
  // (FIFO would leave it behind them all: 503 after 2 s).
  auto n = fresh_names("frontfair");
  const std::string dir = temp_dir();
  fault_proxy proxy;
  auto run = start_front(n,
                         json{{"allow_insecure", true},
                              {"max_parked_per_user", 100},
                              {"upstream", {{"max_connections", 1}, {"wait_timeout", "2s"}}}},
                         dir, json{{"couchdb", {{"url", proxy.url()}}}}, proxy_env(proxy));
  auto& cg = *run.process;
  const auto users = provisioned_users(n, 2);
  const header_list feeder{{"Authorization", basic(users[0].name, users[0].password)}};
  const header_list plain{{"Authorization", basic(users[1].name, users[1].password)}};
  // Both identities cached: from here on a feed's first check and the plain request each need
  // one upstream exchange.
  REQUIRE(front_call(run.port, false, "GET", "/me", feeder).status == 200);
  REQUIRE(front_call(run.port, false, "GET", "/me", plain).status == 200);
  proxy.slow(std::chrono::milliseconds(300));
  std::vector<std::thread> feeds;
  std::atomic<int> feed_errors{0};
  for (int i = 0; i < 20; ++i) {
    feeds.emplace_back([&] {
      const auto r = front_call(run.port, false, "GET", "/me/_changes?feed=longpoll&since=0&timeout=3000", feeder);
      if (r.status != 200) ++feed_errors;
    });
  }
  const bool queued = eventually(
      [&] {
        return cg.metric("couchgate_front_upstream_waiting").value_or(0) +
                   cg.metric("couchgate_front_feed_reads_waiting").value_or(0) >= 10;
      },
      std::chrono::seconds(20));
  // Twice the pool's one connection read at once; the rest wait for their turn, not at the pool.
  CHECK(cg.metric("couchgate_front_feed_reads_in_progress").value_or(99) <= 2);
  CHECK(cg.metric("couchgate_front_upstream_waiting").value_or(99) <= 2);
  const auto started = std::chrono::steady_clock::now();
  const auto me = front_call(run.port, false, "GET", "/me", plain);
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
  for (auto& t : feeds) t.join();
  proxy.slow(std::chrono::milliseconds(0));
  // Every turn to read was given back once the feeds ended.
  CHECK(eventually(
      [&] {
        return cg.metric("couchgate_front_feed_reads_in_progress").value_or(-1) == 0 &&
               cg.metric("couchgate_front_feed_reads_waiting").value_or(-1) == 0;
      },
      std::chrono::seconds(10)));
  CHECK_MESSAGE(queued, "the feeds' first checks never queued for the pool");
  CHECK_MESSAGE(me.status == 200, "GET /me during the burst: " << me.status << " after " << took.count() << " ms: " << me.raw);
  CHECK(feed_errors.load() == 0);  // the feeds queue up to their own timeout, then answer as CouchDB: no 503
  CHECK(run.process->terminate() == 0);
}

TEST_CASE("front door stop: a request in flight at SIGTERM is answered; one held past front.drain_timeout is cut") {
  using namespace std::chrono_literals;
  auto n = fresh_names("frontdrain");
  fault_proxy proxy;  // holds the document write on its way to the server
  const auto in_flight_at_stop = [&](const std::string& drain, const std::string& doc_id) {
    const std::string dir = temp_dir();
    auto run = start_front(n, json{{"allow_insecure", true}, {"drain_timeout", drain}}, dir,
                           json{{"couchdb", {{"url", proxy.url()}}}}, proxy_env(proxy));
    const auto users = provisioned_users(n, 1);
    const header_list alice{{"Authorization", basic(users[0].name, users[0].password)}};
    const auto before = front_call(run.port, false, "GET", "/me", alice);
    REQUIRE(before.status == 200);
    CHECK(std::string(before.headers[http::field::connection]) != "close");  // kept alive before the stop
    // A kept-alive connection, idle when the stop comes.
    auto idle = std::make_unique<keep_alive_connection>(run.port, alice.front().second);
    REQUIRE(idle->exchange(http::verb::get, "/me").result_int() == 200);
    proxy.hold("/" + doc_id);
    auto put = std::async(std::launch::async, [port = run.port, alice, doc_id] {
      return front_call(port, false, "PUT", "/me/" + doc_id, alice, json{{"v", 1}}.dump());
    });
    REQUIRE(eventually([&] { return proxy.held() == 1; }, 30s));
    auto stopped = std::async(std::launch::async, [cg = run.process.get()] { return cg->terminate(); });
    // The listener closes at once: a new connection is refused while the write is still held.
    CHECK(eventually([&] { return front_call(run.port, false, "GET", "/", {}).status == 0; }, 10s));
    return std::tuple{std::move(run), users.front(), std::move(put), std::move(stopped), std::move(idle)};
  };

  SUBCASE("answered within the drain") {
    auto [run, alice, put, stopped, idle] = in_flight_at_stop("20s", "drain-doc");
    CHECK(stopped.wait_for(0s) == std::future_status::timeout);  // still draining
    // The idle connection takes no new request now: closed unanswered (its client sends it again).
    CHECK_THROWS(idle->exchange(http::verb::get, "/me"));
    proxy.hold({});
    const auto reply = put.get();
    CHECK_MESSAGE(reply.status == 201, reply.raw);
    // Answered while draining: the answer says the connection ends (no request races its close).
    CHECK(std::string(reply.headers[http::field::connection]) == "close");
    CHECK(stopped.get() == 0);
    CHECK_MESSAGE(run.process->log().find("request(s) in flight at the stop were answered") != std::string::npos,
                  tail(run.process->log()));
    CHECK(couch().get("/" + enc(alice.db) + "/drain-doc").status == 200);
  }
  SUBCASE("cut after the drain timeout") {
    auto [run, alice, put, stopped, idle] = in_flight_at_stop("1s", "drain-late");
    CHECK(stopped.get() == 0);
    CHECK(put.get().status == 0);  // its connection closed without an answer
    CHECK_MESSAGE(run.process->log().find("1 request(s) still in flight after front.drain_timeout") != std::string::npos,
                  tail(run.process->log()));
    proxy.hold({});
  }
}
