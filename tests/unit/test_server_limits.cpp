// max_dbs_open against the shards fan-in keeps busy (replicator/server_limits.hpp).
#include <doctest/doctest.h>

#include "replicator/server_limits.hpp"

using namespace couchgate::replicator;

TEST_CASE("max_dbs_open: CouchDB's string answer is parsed; anything else is unknown") {
  CHECK(parse_max_dbs_open(json("500")) == std::optional<std::uint64_t>(500));
  CHECK(parse_max_dbs_open(json(4500)) == std::optional<std::uint64_t>(4500));
  CHECK_FALSE(parse_max_dbs_open(json("")));
  CHECK_FALSE(parse_max_dbs_open(json("50x")));
  CHECK_FALSE(parse_max_dbs_open(json("-1")));
  CHECK_FALSE(parse_max_dbs_open(json(-1)));
  CHECK_FALSE(parse_max_dbs_open(json{{"error", "not_found"}}));
  CHECK_FALSE(parse_max_dbs_open(json(nullptr)));
}

TEST_CASE("max_dbs_open: shards needed grow with the sources and q; a warning names the value to set") {
  // Issue 18's server: 1000 databases at q=2 cannot fit in the default LRU of 500.
  auto e = estimate_shards(1000, 2);
  CHECK(e.needed == 2032);
  CHECK(e.recommended == 2600);
  auto w = max_dbs_open_warning(500, e, 1000, 2);
  REQUIRE(w);
  CHECK(w->find("max_dbs_open is 500") != std::string::npos);
  CHECK(w->find("Set max_dbs_open to 2600") != std::string::npos);
  CHECK_FALSE(max_dbs_open_warning(2600, e, 1000, 2));
  // q=0 is the server's default, taken as 2; q=1 halves it.
  CHECK(estimate_shards(1000, 0).needed == e.needed);
  CHECK(estimate_shards(1000, 1).needed == 1032);
  // A small deployment fits the default.
  auto small = estimate_shards(100, 1);
  CHECK(small.recommended == 500);
  CHECK_FALSE(max_dbs_open_warning(500, small, 100, 1));
}

TEST_CASE("max_dbs_open in effect: an unset key is CouchDB's default 500; no config API is unknown") {
  // CouchDB 3.5.0, key not in any ini: GET /_node/_local/_config/couchdb/max_dbs_open
  http_response unset;
  unset.status = 404;
  unset.body = R"({"error":"not_found","reason":"unknown_config_value"})";
  CHECK(max_dbs_open_in_effect(result<json>(error_from(unset))) == std::optional<std::uint64_t>(500));
  CHECK(max_dbs_open_in_effect(result<json>(json("4500"))) == std::optional<std::uint64_t>(4500));
  // A server without the config API (pouchdb-server answers 404 with another reason), or a failure.
  http_response missing;
  missing.status = 404;
  missing.body = R"({"error":"not_found","reason":"missing"})";
  CHECK_FALSE(max_dbs_open_in_effect(result<json>(error_from(missing))));
  http_response refused;
  refused.status = 403;
  refused.body = R"({"error":"forbidden","reason":"unknown_config_value"})";
  CHECK_FALSE(max_dbs_open_in_effect(result<json>(error_from(refused))));
  CHECK_FALSE(max_dbs_open_in_effect(result<json>(json("lots"))));
  // The default is below what 1000 sources at q=1 keep busy: the warning is given.
  auto e = estimate_shards(1000, 1);
  CHECK(max_dbs_open_warning(*max_dbs_open_in_effect(result<json>(error_from(unset))), e, 1000, 1).has_value());
}
