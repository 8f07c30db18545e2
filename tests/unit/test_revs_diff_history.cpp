// What the replication round reads to find stemmed histories (issue 16): `_revs_diff` answers
// with CouchDB's possible_ancestors, revision generations, and the reach of a document's
// `_revisions`.
#include <doctest/doctest.h>

#include "replicator/answers.hpp"
#include "replicator/wire_json.hpp"

namespace r = couchgate::replicator;
using r::json;

TEST_CASE("parse_revs_diff: missing revisions and possible ancestors; odd members ignored; a non-object is an error") {
  auto a = r::parse_revs_diff(json::parse(
      R"({"d":{"missing":["5-b","2-x",7],"possible_ancestors":["1-a","4-c",null]},"e":{"missing":[]},"f":7,"g":{"missing":"3-z"}})"));
  REQUIRE(a.ok());
  REQUIRE(a.value().count("d"));
  CHECK(a.value().at("d").missing == std::vector<std::string>{"5-b", "2-x"});
  CHECK(a.value().at("d").possible_ancestors == std::vector<std::string>{"1-a", "4-c"});
  CHECK(a.value().at("e").missing.empty());
  CHECK(a.value().count("f") == 0);  // not an object: names nothing
  CHECK(a.value().at("g").missing.empty());
  // CouchDB 3.5's answer (transcript 24) has no possible_ancestors when there are none.
  auto b = r::parse_revs_diff(json::parse(R"({"doc-1":{"missing":["1-zzzz","2-cccc"]},"doc-new":{"missing":["1-abc"]}})"));
  REQUIRE(b.ok());
  CHECK(b.value().at("doc-1").possible_ancestors.empty());
  CHECK_FALSE(r::parse_revs_diff(json::array()).ok());
  CHECK_FALSE(r::parse_revs_diff(json("x")).ok());
}

TEST_CASE("revision_generation: the number before '-', nothing for anything else") {
  CHECK(r::revision_generation("12-abc") == 12u);
  CHECK(r::revision_generation("1-") == 1u);
  CHECK_FALSE(r::revision_generation("-abc"));
  CHECK_FALSE(r::revision_generation("abc"));
  CHECK_FALSE(r::revision_generation("x1-abc"));
  CHECK_FALSE(r::revision_generation(""));
  CHECK_FALSE(r::revision_generation("99999999999999999999999-a"));  // beyond 64 bits: not a number we trust
}

TEST_CASE("read_doc: how far back a document's _revisions reaches") {
  auto d = r::wire::read_doc(R"({"_id":"d","_rev":"15-h","_revisions":{"start":15,"ids":["h","g","f","e","d"]},"v":1})");
  REQUIRE(d.ok());
  CHECK(d.value().has_revisions);
  CHECK(d.value().revisions_start == 15u);
  CHECK(d.value().revisions_count == 5u);
  auto odd = r::wire::read_doc(R"({"_id":"d","_revisions":{"start":"x","ids":{}}})");
  REQUIRE(odd.ok());
  CHECK(odd.value().revisions_start == 0u);
  CHECK(odd.value().revisions_count == 0u);
  auto none = r::wire::read_doc(R"({"_id":"d","_rev":"1-a"})");
  REQUIRE(none.ok());
  CHECK_FALSE(none.value().has_revisions);
  CHECK(none.value().revisions_count == 0u);
}
