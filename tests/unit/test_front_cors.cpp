// The front door's CORS decisions (gateway/front/cors.hpp), against what CouchDB 3.x's
// chttpd_cors answers for the same [cors] configuration.
#include <doctest/doctest.h>

#include <map>
#include <string>

#include "gateway/front/cors.hpp"

namespace f = couchgate::gateway::front;

namespace {
std::map<std::string, std::string> as_map(const f::cors_headers& h) {
  std::map<std::string, std::string> m;
  for (const auto& [k, v] : h) m[k] = v;
  return m;
}
f::cors_policy policy(std::vector<std::string> origins, bool credentials = false) {
  couchgate::gateway::front_cors_config c;
  c.enable = true;
  c.origins = std::move(origins);
  c.credentials = credentials;
  return f::make_cors_policy(c);
}
f::cors_request preflight(std::string origin, std::string method, std::optional<std::string> headers = std::nullopt) {
  return f::cors_request{"OPTIONS", std::move(origin), std::move(method), std::move(headers)};
}
}  // namespace

TEST_CASE("front CORS preflight: answered as CouchDB answers it") {
  const auto p = policy({"https://app.example", "http://localhost:8080"}, true);
  const auto h = f::cors_preflight(p, preflight("https://app.example", "PUT", "Content-Type, Authorization"));
  REQUIRE(h);
  const auto m = as_map(*h);
  CHECK(m.at("Access-Control-Allow-Origin") == "https://app.example");
  CHECK(m.at("Access-Control-Max-Age") == "600");
  CHECK(m.at("Access-Control-Allow-Methods") == "CONNECT, COPY, DELETE, GET, HEAD, OPTIONS, POST, PUT, TRACE");
  CHECK(m.at("Access-Control-Allow-Credentials") == "true");
  CHECK(m.at("Access-Control-Allow-Headers") == "Content-Type, Authorization");  // echoed as sent
  // CouchDB's order: origin, max age, methods, credentials, headers.
  CHECK((*h)[0].first == "Access-Control-Allow-Origin");
  CHECK(h->back().first == "Access-Control-Allow-Headers");

  // No requested headers: the header is there, empty.
  const auto bare = f::cors_preflight(p, preflight("http://localhost:8080", "GET"));
  REQUIRE(bare);
  CHECK(as_map(*bare).at("Access-Control-Allow-Headers").empty());
}

TEST_CASE("front CORS preflight: not a preflight CouchDB answers") {
  const auto p = policy({"https://app.example"});
  CHECK_FALSE(f::cors_preflight(p, preflight("https://evil.example", "GET")));         // origin not listed
  CHECK_FALSE(f::cors_preflight(p, preflight("HTTPS://APP.EXAMPLE", "GET")));          // case-sensitive match
  CHECK_FALSE(f::cors_preflight(p, preflight("https://app.example", "PATCH")));        // method not allowed
  CHECK_FALSE(f::cors_preflight(p, preflight("https://app.example", "get")));          // methods are case-sensitive
  CHECK_FALSE(f::cors_preflight(p, preflight("https://app.example", "GET", "X-Secret")));  // header not allowed
  CHECK_FALSE(f::cors_preflight(p, f::cors_request{"OPTIONS", "https://app.example", std::nullopt, std::nullopt}));
  CHECK_FALSE(f::cors_preflight(p, f::cors_request{"OPTIONS", std::nullopt, "GET", std::nullopt}));  // no Origin
  CHECK_FALSE(f::cors_preflight(p, f::cors_request{"GET", "https://app.example", "GET", std::nullopt}));
  auto off = p;
  off.enable = false;
  CHECK_FALSE(f::cors_preflight(off, preflight("https://app.example", "GET")));
  // Credentials were not enabled: no Allow-Credentials.
  const auto h = f::cors_preflight(p, preflight("https://app.example", "GET", "accept,content-type"));
  REQUIRE(h);
  CHECK(as_map(*h).count("Access-Control-Allow-Credentials") == 0);
}

TEST_CASE("front CORS preflight: configured methods, headers and max_age") {
  couchgate::gateway::front_cors_config c;
  c.enable = true;
  c.origins = {"*"};
  c.credentials = true;
  c.methods = {"GET", "POST"};
  c.headers = {"X-Custom", "Content-Type"};
  c.max_age = 3600;
  const auto p = f::make_cors_policy(c);
  const auto h = f::cors_preflight(p, preflight("https://any.example", "POST", "x-custom"));
  REQUIRE(h);
  const auto m = as_map(*h);
  CHECK(m.at("Access-Control-Allow-Origin") == "https://any.example");  // the origin, not "*"
  CHECK(m.at("Access-Control-Allow-Methods") == "GET, POST");
  CHECK(m.at("Access-Control-Max-Age") == "3600");
  CHECK(m.at("Access-Control-Allow-Credentials") == "true");
  CHECK_FALSE(f::cors_preflight(p, preflight("https://any.example", "PUT")));
  CHECK_FALSE(f::cors_preflight(p, preflight("https://any.example", "GET", "authorization")));  // not in the list now
  // The literal origin "*" never gets credentials.
  const auto star = f::cors_preflight(p, preflight("*", "GET"));
  REQUIRE(star);
  CHECK(as_map(*star).count("Access-Control-Allow-Credentials") == 0);
}

TEST_CASE("front CORS on couchgate's own answers") {
  const auto p = policy({"https://app.example"}, true);
  const auto h = f::cors_answer_headers(p, std::string("https://app.example"), {"Content-Type", "Cache-Control", "Retry-After"});
  const auto m = as_map(h);
  CHECK(m.at("Access-Control-Allow-Origin") == "https://app.example");
  CHECK(m.at("Access-Control-Allow-Credentials") == "true");
  CHECK(m.at("Access-Control-Expose-Headers") ==
        "content-type, cache-control, accept-ranges, etag, server, x-couch-request-id, x-couch-update-newrev, "
        "x-couchdb-body-time");
  CHECK(f::cors_answer_headers(p, std::string("https://evil.example"), {"Content-Type"}).empty());
  CHECK(f::cors_answer_headers(p, std::nullopt, {"Content-Type"}).empty());
  auto off = p;
  off.enable = false;
  CHECK(f::cors_answer_headers(off, std::string("https://app.example"), {"Content-Type"}).empty());
  CHECK(f::cors_answer_headers(policy({}), std::string("https://app.example"), {"Content-Type"}).empty());
  // Any origin: echoed; content-type exposed even when the answer has none.
  const auto any = as_map(f::cors_answer_headers(policy({"*"}), std::string("null"), {}));
  CHECK(any.at("Access-Control-Allow-Origin") == "null");
  CHECK(any.at("Access-Control-Expose-Headers").starts_with("content-type, accept-ranges"));
  CHECK(any.count("Access-Control-Allow-Credentials") == 0);
}
