// max_dbs_open against the shards fan-in keeps busy (replicator/server_limits.hpp).
#include <doctest/doctest.h>

#include "replicator/server_limits.hpp"

using namespace couchgate::replicator;

TEST_CASE("config numbers (max_dbs_open): CouchDB's string answer is parsed; anything else is unknown") {
  CHECK(parse_config_uint(json("500")) == std::optional<std::uint64_t>(500));
  CHECK(parse_config_uint(json(4500)) == std::optional<std::uint64_t>(4500));
  CHECK_FALSE(parse_config_uint(json("")));
  CHECK_FALSE(parse_config_uint(json("50x")));
  CHECK_FALSE(parse_config_uint(json("-1")));
  CHECK_FALSE(parse_config_uint(json(-1)));
  CHECK_FALSE(parse_config_uint(json{{"error", "not_found"}}));
  CHECK_FALSE(parse_config_uint(json(nullptr)));
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

namespace {
result<json> config_error(long status, const char* body) {
  http_response a;
  a.status = status;
  a.body = body;
  return result<json>(error_from(a));
}
}  // namespace

TEST_CASE("[global_changes] update_db: only \"false\" turns it off; unset is on; no config API is unknown") {
  CHECK(update_db_in_effect(result<json>(json("false"))) == std::optional<bool>(false));
  CHECK(update_db_in_effect(result<json>(json("true"))) == std::optional<bool>(true));
  CHECK(update_db_in_effect(result<json>(json("no"))) == std::optional<bool>(true));  // CouchDB: anything but "false"
  // CouchDB 3.5.0 with the key in no ini file.
  CHECK(update_db_in_effect(config_error(404, R"({"error":"not_found","reason":"unknown_config_value"})")) == std::optional<bool>(true));
  CHECK_FALSE(update_db_in_effect(config_error(404, R"({"error":"not_found","reason":"missing"})")));  // pouchdb-server
  CHECK_FALSE(update_db_in_effect(config_error(401, R"({"error":"unauthorized","reason":"You are not a server admin."})")));
  CHECK_FALSE(update_db_in_effect(result<json>(json(false))));  // not CouchDB's string: cannot be told
}

TEST_CASE("[global_changes] section: unset keys take CouchDB's defaults; the warning names the value to set") {
  // CouchDB 3.5.0 as shipped: the section is empty ({}), every key unset.
  auto defaults = parse_global_changes(result<json>(json::object()));
  REQUIRE(defaults);
  CHECK(defaults->update_db);
  CHECK(defaults->max_write_delay_ms == 500);
  CHECK(defaults->max_event_delay_ms == 25);
  // Live feeds wait on _db_updates: the default delay is worth a warning; without them it is not.
  auto w = max_write_delay_warning(*defaults, true);
  REQUIRE(w);
  CHECK(w->find("max_write_delay is 500 ms") != std::string::npos);
  CHECK(w->find("Set max_write_delay to 100") != std::string::npos);
  CHECK_FALSE(max_write_delay_warning(*defaults, false));

  auto tuned = parse_global_changes(result<json>(json{{"max_write_delay", "100"}, {"max_event_delay", "10"}}));
  REQUIRE(tuned);
  CHECK(tuned->max_write_delay_ms == 100);
  CHECK(tuned->max_event_delay_ms == 10);
  CHECK_FALSE(max_write_delay_warning(*tuned, true));

  // update_db off: the delay means nothing (the detector sweeps and says so).
  auto off = parse_global_changes(result<json>(json{{"update_db", "false"}, {"max_write_delay", "500"}}));
  REQUIRE(off);
  CHECK_FALSE(off->update_db);
  CHECK_FALSE(max_write_delay_warning(*off, true));

  // A value that is not a number: CouchDB ignores it, so does the judgement.
  auto odd = parse_global_changes(result<json>(json{{"max_write_delay", "soon"}, {"update_db", 7}}));
  REQUIRE(odd);
  CHECK(odd->max_write_delay_ms == 500);
  CHECK(odd->update_db);
  // No config API (pouchdb-server), or not an object: nothing to judge.
  CHECK_FALSE(parse_global_changes(config_error(404, R"({"error":"not_found","reason":"missing"})")));
  CHECK_FALSE(parse_global_changes(result<json>(json("500"))));
}
