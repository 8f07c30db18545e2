// The credential a request is known by (session cache, per-credential caps): what CouchDB itself
// authenticates, no more.
#include <doctest/doctest.h>

#include <string>

#include "gateway/front/forwarder.hpp"

namespace f = couchgate::gateway::front;
namespace http = boost::beast::http;

namespace {
std::string of(std::initializer_list<std::pair<http::field, std::string>> lines) {
  http::fields fields;
  for (const auto& [name, value] : lines) fields.insert(name, value);
  return f::credential_of(fields);
}
}  // namespace

TEST_CASE("front credential: the Authorization value and the first AuthSession cookie, the one CouchDB reads") {
  CHECK(of({}).empty());
  CHECK(of({{http::field::cookie, "theme=dark"}}).empty());
  CHECK(of({{http::field::authorization, "Basic YTpi"}}) == "Basic YTpi");
  const auto one = of({{http::field::cookie, "theme=dark; AuthSession=V1"}});
  CHECK(one == "\ncookie:V1");
  // More AuthSession values after the first change nothing for CouchDB: the same credential.
  CHECK(of({{http::field::cookie, "AuthSession=V1; AuthSession=junk-1"}}) == one);
  CHECK(of({{http::field::cookie, "AuthSession=V1"}, {http::field::cookie, "AuthSession=junk-2"}}) == one);
  // A different first one is a different credential.
  CHECK(of({{http::field::cookie, "AuthSession=V2; AuthSession=V1"}}) != one);
  CHECK(of({{http::field::authorization, "Basic YTpi"}, {http::field::cookie, "AuthSession=V1"}}) ==
        "Basic YTpi\ncookie:V1");
}
