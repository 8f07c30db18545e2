// Reading untrusted JSON from the wire (replicator/wire_json.*, replicator/answers.*): depth
// limits, checked fields, documents kept as the bytes the server sent, and answers of the wrong
// shape as error values, never exceptions or deep recursion.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <variant>

#include "replicator/answers.hpp"
#include "replicator/change_detector.hpp"
#include "replicator/transfer.hpp"
#include "replicator/wire_json.hpp"

namespace wire = couchgate::replicator::wire;
using couchgate::replicator::couch_error_kind;
using couchgate::replicator::fetched_entry;
using couchgate::replicator::parse_all_docs;
using couchgate::replicator::parse_bulk_docs;
using couchgate::replicator::parse_bulk_get;
using couchgate::replicator::parse_changes;
using couchgate::replicator::parse_open_revs;
using couchgate::replicator::user_of;
using json = nlohmann::json;

namespace {

// {"a":{"a":...{"a":1}...}} nested `levels` deep (the crash of issue 11 used 60,000).
std::string nested(std::size_t levels) {
  std::string s;
  s.reserve(levels * 6 + 2);
  for (std::size_t i = 0; i < levels; ++i) s += "{\"a\":";
  s += "1";
  s.append(levels, '}');
  return s;
}

std::string deep_doc(const std::string& id, const std::string& rev, std::size_t levels) {
  return R"({"_id":")" + id + R"(","_rev":")" + rev + R"(","deep":)" + nested(levels) + "}";
}

}  // namespace

TEST_CASE("nesting_depth: brackets outside strings, matched, up to the limit") {
  CHECK(wire::nesting_depth("1") == std::optional<std::size_t>(0));
  CHECK(wire::nesting_depth(R"({"a":[1,{"b":[]}]})") == std::optional<std::size_t>(4));
  CHECK(wire::nesting_depth(R"({"a":"[[[{{{\"]]"})") == std::optional<std::size_t>(1));  // in a string, escaped quote
  CHECK_FALSE(wire::nesting_depth(R"({"a":[})"));
  CHECK_FALSE(wire::nesting_depth(R"({"a":"unterminated})"));
  CHECK_FALSE(wire::nesting_depth("]"));
  CHECK(wire::nesting_depth(nested(wire::max_depth - 1)) == std::optional<std::size_t>(wire::max_depth - 1));
  CHECK(wire::nesting_depth(nested(wire::max_depth)) == std::optional<std::size_t>(wire::max_depth));
  CHECK_FALSE(wire::nesting_depth(nested(wire::max_depth + 1)));
  CHECK_FALSE(wire::nesting_depth(nested(60000)));
}

TEST_CASE("wire::parse: a 60,000-level answer is an error value, counted, not a crash") {
  const auto before = wire::rejected();
  auto r = wire::parse(nested(60000), "answer");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().kind == couch_error_kind::protocol);
  CHECK(r.error().reason.find("nested deeper than") != std::string::npos);
  CHECK(wire::rejected() == before + 1);
  auto bad = wire::parse("{\"a\":", "answer");
  CHECK_FALSE(bad.ok());
  auto ok = wire::parse(R"({"a":[1,2]})", "answer");
  REQUIRE(ok.ok());
  CHECK(ok.value()["a"][1] == 2);
}

TEST_CASE("checked accessors: a field of another type reads as absent, never throws") {
  const json j = json::parse(R"({"s":"x","n":1,"o":{"code":7},"a":[1],"t":true,"f":"true"})");
  CHECK(wire::get_string(j, "s") == std::optional<std::string>("x"));
  CHECK_FALSE(wire::get_string(j, "n"));
  CHECK_FALSE(wire::get_string(j, "missing"));
  CHECK_FALSE(wire::get_string(json::array(), "s"));
  CHECK(wire::find_object(j, "o"));
  CHECK_FALSE(wire::find_object(j, "a"));
  CHECK(wire::find_array(j, "a"));
  CHECK(wire::get_true(j, "t"));
  CHECK_FALSE(wire::get_true(j, "f"));
  CHECK(wire::text_of(j["o"]) == R"({"code":7})");
  CHECK(wire::text_of(j["s"]) == "x");
  CHECK(wire::text_of(json(std::string(1000, 'y'))).size() == 303);
}

TEST_CASE("read_doc: top-level fields read, the text kept byte for byte, only _id rewritten") {
  const std::string text =
      R"({"big":123456789012345678901234567890,"_rev":"1-abc","u":18446744073709551616,"n":-9223372036854775809,)"
      R"("z":-0,"e":1e400,"f":1.0E+2,"s":"caf\u00e9 \ud83d\ude00 \"q\"","_id":"doc\/1","k":{"b":1,"a":2},"_attachments":{}})";
  auto d = wire::read_doc(text);
  REQUIRE(d.ok());
  CHECK(d.value().text == text);
  CHECK(d.value().id == "doc/1");
  CHECK(d.value().rev == "1-abc");
  CHECK(d.value().has_attachments);
  CHECK_FALSE(d.value().deleted);
  CHECK_FALSE(d.value().has_revisions);
  const std::string mapped = wire::with_id(d.value(), "u/alice/doc/1");
  std::string expected = text;
  expected.replace(expected.find(R"("doc\/1")"), 8, R"("u/alice/doc/1")");
  CHECK(mapped == expected);

  CHECK(wire::with_field(R"({"_id":"a"})", "_revisions", R"({"start":1})") == R"({"_id":"a","_revisions":{"start":1}})");
  CHECK(wire::with_field("{ }", "k", "1") == R"({ "k":1})");
}

TEST_CASE("read_doc: what a document gets wrong is an error of that document") {
  for (const char* bad : {"null", "[1]", "\"s\"", R"({"_rev":"1-a"})", R"({"_id":7})", R"({"_id":"a","_rev":{"x":1}})",
                          R"({"_id":"a","_deleted":"yes"})", R"({"_id":"a","_revisions":[1]})", R"({"_id":"a",)"}) {
    CAPTURE(bad);
    auto d = wire::read_doc(bad);
    REQUIRE_FALSE(d.ok());
    CHECK(d.error().kind == couch_error_kind::protocol);
  }
  auto deep = wire::read_doc(deep_doc("x", "1-a", 60000));
  REQUIRE_FALSE(deep.ok());
  CHECK(deep.error().reason.find("nested deeper than") != std::string::npos);
  CHECK(wire::read_doc(deep_doc("x", "1-a", wire::max_depth - 1)).ok());
}

TEST_CASE("parse_changes: a 60,000-level document is an error of its row; the page is read") {
  const std::string body = R"({"results":[{"seq":"1-a","id":"deep","changes":[{"rev":"1-d"}],"doc":)" +
                           deep_doc("deep", "1-d", 60000) +
                           R"(},{"seq":"2-b","id":"fine","changes":[{"rev":"1-f"}],"doc":{"_id":"fine","_rev":"1-f","n":1e400}}],"last_seq":"2-b","pending":0})";
  auto page = parse_changes(body);
  REQUIRE(page.ok());
  REQUIRE(page.value().changes.size() == 2);
  CHECK_FALSE(page.value().changes[0].doc);
  REQUIRE(page.value().changes[0].doc_error);
  CHECK_FALSE(couchgate::replicator::inline_revision(page.value().changes[0]));
  REQUIRE(page.value().changes[1].doc);
  CHECK(page.value().changes[1].doc->text == R"({"_id":"fine","_rev":"1-f","n":1e400})");
  CHECK(page.value().last_seq == "2-b");
  CHECK(page.value().pending == std::optional<double>(0));
}

TEST_CASE("parse_changes: rows of the wrong shape make the answer an error, never an exception") {
  for (const char* bad : {
           "not json", "", "[]", "{}", R"({"results":{}})", R"({"results":[{"id":1,"changes":[]}]})",
           R"({"results":[{"id":"a","changes":{}}]})", R"({"results":[{"id":"a","changes":[{"rev":5}]}]})",
           R"({"results":[{"id":"a","changes":[7]}]})", R"({"results":[{"id":"a","changes":[],"deleted":"yes"}]})",
           R"({"results":[{"id":"a","changes":[],"seq":)" "[[[[" R"(}]})", R"({"results":[1]})",
           R"({"results":[{"id":"a"}]})", R"({"results":[],"last_seq":{)"}) {
    CAPTURE(bad);
    auto r = parse_changes(bad);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().kind == couch_error_kind::protocol);
  }
  // A doc of another type is an error of that row only.
  auto odd = parse_changes(R"({"results":[{"id":"a","changes":[{"rev":"1-a"}],"doc":"text"}],"last_seq":3})");
  REQUIRE(odd.ok());
  CHECK(odd.value().changes[0].doc_error);
  CHECK(odd.value().last_seq == 3);  // the row has no seq: the answer's
}

TEST_CASE("parse_bulk_get / parse_open_revs: a document that cannot be read is unreadable, named by id") {
  const std::string body = R"({"results":[{"id":"deep","docs":[{"ok":)" + deep_doc("deep", "2-d", 60000) +
                           R"(}]},{"id":"ok","docs":[{"ok":{"_id":"ok","_rev":"1-o","_revisions":{"start":1,"ids":["o"]},"v":123456789012345678901234567890}}]},)"
                           R"({"id":"gone","docs":[{"error":{"id":"gone","rev":"1-g","error":"not_found","reason":"missing"}}]},{"id":"pouch","docs":[{}]}]})";
  auto entries = parse_bulk_get(body);
  REQUIRE(entries.ok());
  REQUIRE(entries.value().size() == 4);
  CHECK(entries.value()[0].what == fetched_entry::kind::unreadable);
  CHECK(entries.value()[0].id == "deep");
  CHECK(entries.value()[1].what == fetched_entry::kind::ok);
  CHECK(entries.value()[1].doc->text ==
        R"({"_id":"ok","_rev":"1-o","_revisions":{"start":1,"ids":["o"]},"v":123456789012345678901234567890})");
  CHECK(entries.value()[2].what == fetched_entry::kind::absent);
  CHECK(entries.value()[3].what == fetched_entry::kind::absent);

  for (const char* bad : {"[]", R"({"results":5})", R"({"results":[{"id":"a"}]})", R"({"results":[{"id":"a","docs":[3]}]})",
                          R"({"results":[{"id":7,"docs":[]}]})"}) {
    CAPTURE(bad);
    CHECK_FALSE(parse_bulk_get(bad).ok());
  }

  auto revs = parse_open_revs(R"([{"ok":)" + deep_doc("x", "3-x", 60000) + R"(},{"missing":"2-y"}])", "x");
  REQUIRE(revs.ok());
  REQUIRE(revs.value().size() == 2);
  CHECK(revs.value()[0].what == fetched_entry::kind::unreadable);
  CHECK(revs.value()[0].id == "x");
  CHECK(revs.value()[1].what == fetched_entry::kind::absent);
  CHECK_FALSE(parse_open_revs(R"({"ok":1})", "x").ok());
}

TEST_CASE("parse_bulk_docs: error rows with a reason of any type; successes are not listed") {
  auto rows = parse_bulk_docs(
      R"([{"id":"a","rev":"1-a"},{"id":"b","error":"forbidden","reason":{"code":7}},{"id":"c","error":"too_large","reason":"too big"},)"
      R"({"id":"d","error":{"x":[1]},"reason":null}])");
  REQUIRE(rows.ok());
  REQUIRE(rows.value().size() == 3);
  CHECK(rows.value()[0].id == "b");
  CHECK(rows.value()[0].error == "forbidden");
  CHECK(rows.value()[0].reason == R"({"code":7})");
  CHECK(rows.value()[1].reason == "too big");
  CHECK(rows.value()[2].error == R"({"x":[1]})");
  for (const char* bad : {"{}", "nope", R"([5])", R"([{"error":"forbidden"}])", R"([{"id":3,"error":"x"}])"}) {
    CAPTURE(bad);
    CHECK_FALSE(parse_bulk_docs(bad).ok());
  }
  CHECK(couchgate::replicator::row_error_transient("unknown_error"));
  CHECK_FALSE(couchgate::replicator::row_error_transient("forbidden"));
  CHECK_FALSE(couchgate::replicator::row_error_transient("too_large"));
}

TEST_CASE("user_of: a deep or odd _users document is an error of that user only") {
  auto page = parse_changes(
      R"({"results":[)"
      R"({"seq":1,"id":"org.couchdb.user:deep","changes":[{"rev":"1-a"}],"doc":)" + deep_doc("org.couchdb.user:deep", "1-a", 60000) + R"(},)"
      R"({"seq":2,"id":"org.couchdb.user:bob","changes":[{"rev":"1-b"}],"doc":{"_id":"org.couchdb.user:bob","_rev":"1-b","name":"bob","type":"user","roles":["r"]}},)"
      R"({"seq":3,"id":"org.couchdb.user:odd","changes":[{"rev":"1-c"}],"doc":{"_id":"org.couchdb.user:odd","_rev":"1-c","name":{"x":1},"type":"user"}},)"
      R"({"seq":4,"id":"org.couchdb.user:gone","changes":[{"rev":"2-d"}],"deleted":true,"doc":{"_id":"org.couchdb.user:gone","_rev":"2-d","_deleted":true}},)"
      R"({"seq":5,"id":"_design/_auth","changes":[{"rev":"1-e"}],"doc":{"_id":"_design/_auth","_rev":"1-e"}}]})");
  REQUIRE(page.ok());
  const auto& ch = page.value().changes;
  REQUIRE(ch.size() == 5);
  auto deep = user_of(ch[0]);
  REQUIRE(std::holds_alternative<couchgate::policy::user_doc_error>(deep));
  CHECK(std::get<couchgate::policy::user_doc_error>(deep).doc_id == "org.couchdb.user:deep");
  auto bob = user_of(ch[1]);
  REQUIRE(std::holds_alternative<couchgate::policy::user_doc>(bob));
  CHECK(std::get<couchgate::policy::user_doc>(bob).name == "bob");
  CHECK(std::get<couchgate::policy::user_doc>(bob).roles == std::vector<std::string>{"r"});
  CHECK(std::holds_alternative<couchgate::policy::user_doc_error>(user_of(ch[2])));
  auto gone = user_of(ch[3]);
  REQUIRE(std::holds_alternative<couchgate::policy::user_doc>(gone));
  CHECK(std::get<couchgate::policy::user_doc>(gone).deleted);
  CHECK(std::holds_alternative<std::monostate>(user_of(ch[4])));

  auto listed = parse_all_docs(R"({"total_rows":2,"offset":0,"rows":[{"id":"org.couchdb.user:deep","key":"x","value":{"rev":"1-a"},"doc":)" +
                               deep_doc("org.couchdb.user:deep", "1-a", 60000) +
                               R"(},{"key":"nope","error":"not_found"},{"id":"org.couchdb.user:bob","doc":{"_id":"org.couchdb.user:bob","name":"bob","type":"user"}}]})");
  REQUIRE(listed.ok());
  REQUIRE(listed.value().size() == 2);
  CHECK(std::holds_alternative<couchgate::policy::user_doc_error>(user_of(listed.value()[0])));
  CHECK(std::holds_alternative<couchgate::policy::user_doc>(user_of(listed.value()[1])));
  for (const char* bad : {"[]", R"({"rows":3})", R"({"rows":[{"id":5}]})", R"({"rows":[7]})"}) {
    CAPTURE(bad);
    CHECK_FALSE(parse_all_docs(bad).ok());
  }
}

TEST_CASE("parse_db_updates: a row of the wrong shape is skipped and counted; the others are read") {
  const auto before = wire::rejected();
  auto page = couchgate::replicator::parse_db_updates(
      json::parse(R"({"results":[{"db_name":7,"type":[]},{"db_name":"a","type":{"x":1}},{"db_name":"b","type":"created"}],"last_seq":"2-x"})"));
  REQUIRE(page.ok());
  REQUIRE(page.value().events.size() == 2);
  CHECK(page.value().events[0].db == "a");
  CHECK(page.value().events[0].type == "updated");  // a type of another kind reads as a plain update
  CHECK(page.value().events[1].type == "created");
  CHECK(wire::rejected() == before + 1);
}
