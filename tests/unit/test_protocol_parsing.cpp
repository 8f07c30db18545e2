// Parsing and classification of what CouchDB really sends, checked against exchanges recorded
// from Apache CouchDB 3.5.0 (COUCHGATE_TRANSCRIPTS_DIR, see transcript.hpp), plus the small pure
// helpers of the protocol path: seq handling, URL encoding, metrics rendering, JSON escaping.
#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "gateway/logging.hpp"
#include "replicator/change_detector.hpp"
#include "replicator/transport/couch_client.hpp"
#include "replicator/couch_error.hpp"
#include "replicator/fanin.hpp"
#include "replicator/transport/http_pool.hpp"
#include "replicator/metrics.hpp"
#include "replicator/transfer.hpp"
#include "replicator/wire_json.hpp"
#include "transcript.hpp"

using couchgate::gateway::json_escape;
using couchgate::replicator::couch_client;
using couchgate::replicator::couch_error;
using couchgate::replicator::couch_error_kind;
using couchgate::replicator::encode_doc_id;
using couchgate::replicator::encode_query_value;
using couchgate::replicator::encode_segment;
using couchgate::replicator::error_from;
using couchgate::replicator::error_kind;
using couchgate::replicator::histogram;
using couchgate::replicator::prometheus_number;
using couchgate::replicator::http_response;
using couchgate::replicator::first_generation;
using couchgate::replicator::include_docs_next;
using couchgate::replicator::inline_revision;
using couchgate::replicator::parse_changes;
using couchgate::replicator::parse_db_updates;
using couchgate::replicator::wire::read_doc;
using couchgate::replicator::registry;
using couchgate::test::body_lines;
using couchgate::test::load_transcript;
using couchgate::test::transcript;
using json = nlohmann::json;
using strings = std::vector<std::string>;

namespace {

// Literal values read from the recordings (to catch a parser that agrees with itself but not
// with the server).
const std::string k35_last_seq =
    "12-g1AAAAB5eJzLYWBgYMpgTmEQTM4vTc5ISXIwNDLXMwBCwxyQVCJDUv3___-zMpgTeXKBAuxGJqkmxikp2DTgMSaPBUgyNACp_yDTEhmyAFrjIGs";
const std::string k19_last_seq =
    "8-g1AAAACbeJzLYWBgYMpgTmEQTM4vTc5ISXIwNDLXMwBCwxyQVCJDUv3___-zMpgTWXKBAuwWqYnmxsnG2DTgMSaPBUgyNACp_6immZknpRimYtOXBQArTyiN";
const std::string k20_last_seq =
    "4-g1AAAAB5eJzLYWBgYMpgTmEQTM4vTc5ISXIwNDLXMwBCwxyQVCJDUv3___-zMpgTWXKBAuwWqYnmxsnG2DTgMSaPBUgyNACp_yDTEhmyAFqMIGc";

json body_json(const transcript& t) { return json::parse(t.body); }

couchgate::replicator::wire::raw_doc raw(const std::string& text) {
  auto d = read_doc(text);
  REQUIRE(d.ok());
  return d.value();
}

http_response response_of(const transcript& t) {
  http_response r;
  r.kind = error_kind::none;
  r.status = t.status;
  r.body = t.body;
  return r;
}

strings non_blank(const strings& lines) {
  strings out;
  for (const auto& l : lines) {
    if (!l.empty()) out.push_back(l);
  }
  return out;
}

std::size_t count_of(const std::string& hay, const std::string& needle) {
  std::size_t n = 0;
  for (std::size_t p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + 1)) ++n;
  return n;
}

// A `_bulk_get` ok-document as the transfer code writes it with new_edits:false: _id, _rev, and a
// _revisions history whose head is _rev.
void check_bulk_get_ok_doc(const json& doc) {
  REQUIRE(doc.is_object());
  REQUIRE(doc.contains("_id"));
  REQUIRE(doc["_id"].is_string());
  REQUIRE(doc.contains("_rev"));
  REQUIRE(doc["_rev"].is_string());
  REQUIRE(doc.contains("_revisions"));
  const json& revs = doc["_revisions"];
  REQUIRE(revs.is_object());
  REQUIRE(revs["start"].is_number_integer());
  REQUIRE(revs["ids"].is_array());
  REQUIRE_FALSE(revs["ids"].empty());
  const std::string rev = doc["_rev"].get<std::string>();
  const auto dash = rev.find('-');
  REQUIRE(dash != std::string::npos);
  CHECK(std::stoll(rev.substr(0, dash)) == revs["start"].get<long long>());
  CHECK(revs["ids"][0] == rev.substr(dash + 1));
  CHECK(revs["ids"].size() <= revs["start"].get<std::size_t>());
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The loader itself

TEST_CASE("transcript loader: request line, status, lowercase headers, exact body") {
  const auto t = load_transcript("03-bad-password.http");
  CHECK(t.method == "GET");
  CHECK(t.target == "/_all_dbs");
  CHECK(t.status == 401);
  CHECK(t.headers.at("content-type") == "application/json");
  CHECK(t.headers.at("x-couch-request-id") == "b0513bd98f");
  CHECK(t.headers.count("Content-Type") == 0);
  CHECK(t.headers.at("content-length") == "67");
  CHECK(t.body == "{\"error\":\"unauthorized\",\"reason\":\"Name or password is incorrect.\"}\n");

  const auto feed = load_transcript("35-db-updates-normal.http");
  CHECK(feed.target == "/_db_updates?feed=normal&limit=5");
  CHECK(feed.headers.at("transfer-encoding") == "chunked");
  CHECK(feed.headers.count("content-length") == 0);
  CHECK(feed.body.rfind("{\"results\":[\n", 0) == 0);  // decoded: no chunk-size lines
  CHECK_NOTHROW(body_json(feed));

  const auto post = load_transcript("24-revs-diff.http");
  CHECK(post.method == "POST");
  CHECK(post.target == "/tx-userdb/_revs_diff");

  CHECK_THROWS_AS(load_transcript("no-such-file.http"), std::runtime_error);
}

TEST_CASE("transcript loader: body_lines keeps heartbeat blank lines") {
  CHECK(body_lines("") == strings{});
  CHECK(body_lines("a\n") == strings{"a"});
  CHECK(body_lines("\n\na\r\n\nb") == strings{"", "", "a", "", "b"});

  const auto t = load_transcript("38-changes-continuous.http");
  const auto lines = body_lines(t.body);
  REQUIRE(lines.size() > 4);
  CHECK(lines[0].empty());  // heartbeats before the first change
  CHECK(lines[1].empty());
  CHECK(lines[2].empty());
  CHECK(lines[3].rfind("{\"seq\":\"11-", 0) == 0);
  CHECK(non_blank(lines).size() == 1);
}

// ---------------------------------------------------------------------------------------------
// _db_updates

TEST_CASE("parse_db_updates: normal feed recorded from CouchDB 3.5 (35)") {
  const auto t = load_transcript("35-db-updates-normal.http");
  REQUIRE(t.status == 200);
  const json answer = body_json(t);
  auto page = parse_db_updates(answer);
  REQUIRE(page.ok());
  const auto& ev = page.value().events;

  // Independently: every row of the file, in order.
  const json& rows = answer.at("results");
  REQUIRE(ev.size() == rows.size());
  for (std::size_t i = 0; i < ev.size(); ++i) {
    CAPTURE(i);
    CHECK(ev[i].db == rows[i].at("db_name").get<std::string>());
    CHECK(ev[i].type == rows[i].at("type").get<std::string>());
  }
  // Literally, as read in the file.
  REQUIRE(ev.size() == 5);
  CHECK(ev[0].db == "userdb-616c696365");
  CHECK(ev[0].type == "created");
  CHECK(ev[1].db == "userdb-626f62");
  CHECK(ev[1].type == "created");
  CHECK(ev[2].db == "testdb");
  CHECK(ev[2].type == "updated");
  CHECK(ev[4].db == "testdb_copy");
  CHECK(ev[4].type == "updated");

  const json& last = page.value().last_seq;
  REQUIRE(last.is_string());  // opaque string, kept as is
  CHECK(last == answer.at("last_seq"));
  CHECK(last.get<std::string>() == k35_last_seq);
  CHECK(couch_client::seq_number(last) == std::optional<std::uint64_t>(12));
}

TEST_CASE("parse_db_updates: longpoll answer (37)") {
  const auto t = load_transcript("37-db-updates-longpoll.http");
  REQUIRE(t.status == 200);
  const json answer = body_json(t);
  auto page = parse_db_updates(answer);
  REQUIRE(page.ok());
  REQUIRE(page.value().events.size() == 1);
  CHECK(page.value().events[0].db == "tx-userdb");
  CHECK(page.value().events[0].type == "updated");
  const json& last = page.value().last_seq;
  REQUIRE(last.is_string());
  CHECK(last == answer.at("last_seq"));
  CHECK(last == answer.at("results").at(0).at("seq"));
  CHECK(last.get<std::string>().rfind("3944-g1AAAACheJzLYWBgYMpgTmEQ", 0) == 0);
  CHECK(couch_client::seq_number(last) == std::optional<std::uint64_t>(3944));
}

TEST_CASE("_db_updates continuous (36): one event object per line, blank heartbeat lines") {
  const auto t = load_transcript("36-db-updates-continuous.http");
  REQUIRE(t.status == 200);
  const auto lines = body_lines(t.body);
  const auto events = non_blank(lines);
  CHECK(lines.size() > events.size());  // heartbeats were recorded
  CHECK(lines[1].empty());              // ...including one between two events
  REQUIRE(events.size() == 7);

  json page = {{"results", json::array()}};
  std::uint64_t prev = 0;
  for (std::size_t i = 0; i < events.size(); ++i) {
    CAPTURE(i);
    const json ev = json::parse(events[i]);
    REQUIRE(ev.is_object());
    CHECK_FALSE(ev.contains("results"));  // an event, not a results page
    REQUIRE(ev.contains("db_name"));
    CHECK(ev["db_name"].is_string());
    REQUIRE(ev.contains("type"));
    CHECK(ev["type"].is_string());
    REQUIRE(ev.contains("seq"));
    REQUIRE(ev["seq"].is_string());
    auto n = couch_client::seq_number(ev["seq"]);
    REQUIRE(n.has_value());
    CHECK(*n > prev);  // seq numbers grow along the feed
    prev = *n;

    // A bare event line is not a page: a protocol error value, not a crash.
    couchgate::replicator::result<couchgate::replicator::db_updates_page> bare = couch_error{};
    CHECK_NOTHROW(bare = parse_db_updates(ev));
    REQUIRE_FALSE(bare.ok());
    CHECK(bare.error().kind == couch_error_kind::protocol);

    // Wrapped as a one-row page it parses, and the row's seq becomes the position.
    auto one = parse_db_updates(json{{"results", json::array({ev})}});
    REQUIRE(one.ok());
    REQUIRE(one.value().events.size() == 1);
    CHECK(one.value().events[0].db == ev["db_name"].get<std::string>());
    CHECK(one.value().events[0].type == ev["type"].get<std::string>());
    CHECK(one.value().last_seq == ev["seq"]);
    page["results"].push_back(ev);
  }
  CHECK(couch_client::seq_number(json::parse(events.front())["seq"]) == std::optional<std::uint64_t>(3937));
  CHECK(prev == 3943);

  // All lines as one page without last_seq: the last row's seq is the resume point.
  auto all = parse_db_updates(page);
  REQUIRE(all.ok());
  REQUIRE(all.value().events.size() == 7);
  CHECK(all.value().events[0].db == "tx-central");
  CHECK(all.value().events[1].db == "_dbs");  // the feed reports system databases too
  CHECK(all.value().events[4].db == "tx-other");
  CHECK(all.value().events[4].type == "created");
  CHECK(all.value().events[6].db == "tx-other");
  CHECK(all.value().events[6].type == "deleted");
  CHECK(all.value().last_seq == page["results"].back()["seq"]);
}

TEST_CASE("parse_db_updates: answers that are not a results page are protocol errors") {
  for (const json& bad : {json(nullptr), json::array(), json("results"), json::object(),
                          json{{"results", json::object()}}, json{{"results", "x"}}}) {
    CAPTURE(bad.dump());
    auto r = parse_db_updates(bad);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().kind == couch_error_kind::protocol);
  }
}

TEST_CASE("_db_updates without _global_changes (40): not_found, Database does not exist.") {
  const auto t = load_transcript("40-db-updates-without-global-changes.http");
  CHECK(t.target == "/_db_updates?feed=normal");
  REQUIRE(t.status == 404);
  const couch_error e = error_from(response_of(t));
  CHECK(e.kind == couch_error_kind::not_found);
  CHECK(e.status == 404);
  CHECK(e.error == "not_found");
  CHECK(e.reason == "Database does not exist.");
  CHECK_FALSE(e.retryable());
  CHECK(e.describe() == "not_found (HTTP 404): not_found: Database does not exist.");
}

// ---------------------------------------------------------------------------------------------
// _changes

TEST_CASE("parse_changes: style=all_docs normal feed (19)") {
  const auto t = load_transcript("19-changes-normal-all-docs.http");
  REQUIRE(t.status == 200);
  const json answer = body_json(t);
  auto page = parse_changes(t.body);
  REQUIRE(page.ok());
  const auto& ch = page.value().changes;

  const json& rows = answer.at("results");
  REQUIRE(ch.size() == rows.size());
  for (std::size_t i = 0; i < ch.size(); ++i) {
    CAPTURE(i);
    CHECK(ch[i].id == rows[i].at("id").get<std::string>());
    strings revs;
    for (const auto& c : rows[i].at("changes")) revs.push_back(c.at("rev").get<std::string>());
    CHECK(ch[i].revs == revs);
    CHECK(ch[i].deleted == rows[i].value("deleted", false));
  }

  REQUIRE(ch.size() == 4);
  CHECK(ch[0].id == "_design/evil");
  CHECK(ch[0].revs == strings{"1-62f20788d5986c5fa7bd27305a31b2c0"});
  CHECK_FALSE(ch[0].deleted);
  CHECK(ch[1].id == "doc-2");
  CHECK(ch[1].revs == strings{"2-cc42f3106b98bc7ad82f91bf2382e1df"});
  CHECK(ch[1].deleted);
  CHECK(ch[2].id == "doc-1");  // conflicted: both leaves, in the server's order
  CHECK(ch[2].revs == strings{"2-bbbb", "2-aaaa"});
  CHECK_FALSE(ch[2].deleted);
  CHECK(ch[3].id == "doc-att");
  CHECK_FALSE(ch[3].deleted);

  const json& last = page.value().last_seq;
  REQUIRE(last.is_string());
  CHECK(last.get<std::string>() == k19_last_seq);
  CHECK(last == answer.at("last_seq"));
  CHECK(last == rows.back().at("seq"));  // CouchDB 3.5: last_seq is the last row's seq here
  CHECK(couch_client::seq_number(last) == std::optional<std::uint64_t>(8));
}

TEST_CASE("parse_changes: limit=2 page (20) ends at its last row's seq") {
  const auto t = load_transcript("20-changes-limit.http");
  CHECK(t.target == "/tx-userdb/_changes?style=all_docs&since=0&limit=2");
  const json answer = body_json(t);
  auto page = parse_changes(t.body);
  REQUIRE(page.ok());
  CHECK(page.value().pending == std::optional<double>(2));
  const auto& ch = page.value().changes;
  REQUIRE(ch.size() == 2);
  CHECK(ch[0].id == "_design/evil");
  CHECK(ch[1].id == "doc-2");
  CHECK(ch[1].deleted);
  CHECK(answer.at("pending") == 2);  // more to read: the caller loops from last_seq
  const json& last = page.value().last_seq;
  REQUIRE(last.is_string());
  CHECK(last.get<std::string>() == k20_last_seq);
  CHECK(last == answer["results"][1]["seq"]);
  CHECK(couch_client::seq_number(last) == std::optional<std::uint64_t>(4));
}

TEST_CASE("parse_changes with include_docs (11): first-generation live docs come with their history") {
  const auto t = load_transcript("11-users-changes-normal.http");
  REQUIRE(t.target.find("include_docs=true") != std::string::npos);
  const json answer = body_json(t);
  auto page = parse_changes(t.body);
  REQUIRE(page.ok());
  const auto& ch = page.value().changes;
  REQUIRE(ch.size() == 3);

  // "1-..." sole leaf, live: written inline, its history the revision itself.
  CHECK(ch[0].id == "_design/_auth");
  auto body0 = inline_revision(ch[0]);
  REQUIRE(body0);
  CHECK(first_generation(ch[0]));
  const json b0 = json::parse(body0->text);
  CHECK(b0.at("_rev") == "1-625dc565328e800ce8dfe08fff750098");
  CHECK(b0.at("_revisions") == json{{"start", 1}, {"ids", {"625dc565328e800ce8dfe08fff750098"}}});
  CHECK(b0.at("validate_doc_update") == answer["results"][0]["doc"]["validate_doc_update"]);
  // The document's text is the server's, byte for byte, with `_revisions` added at its end.
  CHECK(t.body.find(ch[0].doc->text) != std::string::npos);
  CHECK(body0->text.substr(0, ch[0].doc->text.size() - 1) == ch[0].doc->text.substr(0, ch[0].doc->text.size() - 1));

  // A tombstone ("2-...", deleted): its history needs the source.
  CHECK(ch[1].id == "org.couchdb.user:alice");
  CHECK(ch[1].deleted);
  CHECK_FALSE(inline_revision(ch[1]));
  CHECK_FALSE(first_generation(ch[1]));

  CHECK(ch[2].id == "org.couchdb.user:tx-bob");
  auto body2 = inline_revision(ch[2]);
  REQUIRE(body2);
  const json b2 = json::parse(body2->text);
  CHECK(b2.at("name") == "tx-bob");
  CHECK(b2.at("_revisions").at("ids") == json{"565b3f721520908112ca45a72f386b65"});

  // Without include_docs (19) there is never a body.
  auto plain = parse_changes(load_transcript("19-changes-normal-all-docs.http").body);
  REQUIRE(plain.ok());
  for (const auto& c : plain.value().changes) CHECK_FALSE(inline_revision(c));
}

TEST_CASE("inline_revision: only a body that is exactly the sole first-generation leaf") {
  const auto doc = raw(R"({"_id":"a","_rev":"1-abc","v":1})");
  auto ok = inline_revision({"1-abc"}, doc);
  REQUIRE(ok);
  CHECK(ok->text == R"({"_id":"a","_rev":"1-abc","v":1,"_revisions":{"start":1,"ids":["abc"]}})");

  CHECK_FALSE(inline_revision({"2-abc"}, raw(R"({"_id":"a","_rev":"2-abc"})")));    // history unknown
  CHECK_FALSE(inline_revision({"1-abc", "1-def"}, doc));                           // conflicted
  CHECK_FALSE(inline_revision({"1-abc"}, raw(R"({"_id":"a","_rev":"2-xyz"})")));   // updated since the row
  CHECK_FALSE(inline_revision({"1-abc"}, raw(R"({"_id":"a","_rev":"1-abc","_deleted":true})")));
  CHECK_FALSE(inline_revision({"1-abc"}, raw(R"({"_id":"a","_rev":"1-abc","_attachments":{"f":{"stub":true}}})")));
  CHECK_FALSE(read_doc("null").ok());  // CouchDB's "doc": null is no document
  CHECK_FALSE(read_doc(R"({"_rev":"1-abc"})").ok());
  CHECK_FALSE(inline_revision({"1-"}, raw(R"({"_id":"a","_rev":"1-"})")));
  CHECK_FALSE(inline_revision({}, doc));
}

TEST_CASE("include_docs_next: bodies while at least half the rows were first-generation") {
  CHECK(include_docs_next(false, 5, 10));
  CHECK_FALSE(include_docs_next(true, 4, 10));
  CHECK(include_docs_next(true, 10, 10));
  CHECK_FALSE(include_docs_next(true, 0, 1));
  CHECK(include_docs_next(true, 0, 0));   // nothing seen: unchanged
  CHECK_FALSE(include_docs_next(false, 0, 0));
}

TEST_CASE("_changes continuous (38): heartbeat lines and one change object per line") {
  const auto t = load_transcript("38-changes-continuous.http");
  REQUIRE(t.status == 200);
  const auto events = non_blank(body_lines(t.body));
  REQUIRE(events.size() == 1);
  const json row = json::parse(events[0]);
  REQUIRE(row.is_object());
  CHECK_FALSE(row.contains("results"));
  CHECK(row.at("id") == "late3");
  REQUIRE(row.at("seq").is_string());
  REQUIRE(row.at("changes").is_array());

  auto bare = parse_changes(row.dump());  // a bare row is not a page
  REQUIRE_FALSE(bare.ok());
  CHECK(bare.error().kind == couch_error_kind::protocol);

  auto page = parse_changes(json{{"results", json::array({row})}}.dump());
  REQUIRE(page.ok());
  REQUIRE(page.value().changes.size() == 1);
  CHECK(page.value().changes[0].id == "late3");
  CHECK(page.value().changes[0].revs == strings{"1-967a00dff5e02add41819138abb3284d"});
  CHECK_FALSE(page.value().changes[0].deleted);
  CHECK(page.value().last_seq == row["seq"]);  // no last_seq: the row's seq
  CHECK(couch_client::seq_number(page.value().last_seq) == std::optional<std::uint64_t>(11));
}

TEST_CASE("parse_changes: malformed answers are protocol errors") {
  for (const json& bad : {json(nullptr), json::array(), json::object(), json{{"results", 1}},
                          json{{"results", json::array({json{{"changes", json::array()}}})}},
                          json{{"results", json::array({json{{"id", 5}, {"changes", json::array()}}})}},
                          json{{"results", json::array({json{{"id", "a"}}})}}, json{{"results", json::array({1})}}}) {
    CAPTURE(bad.dump());
    auto r = parse_changes(bad.dump());
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().kind == couch_error_kind::protocol);
  }
  // An empty page keeps the server's last_seq.
  auto empty = parse_changes(json{{"results", json::array()}, {"last_seq", "5-x"}}.dump());
  REQUIRE(empty.ok());
  CHECK(empty.value().changes.empty());
  CHECK(empty.value().last_seq == "5-x");
}

// ---------------------------------------------------------------------------------------------
// Error classification

TEST_CASE("error_from: recorded CouchDB 3.5 error answers") {
  struct expect {
    const char* file;
    long status;
    couch_error_kind kind;
    bool retryable;
    const char* error;
    const char* reason;
  };
  const expect cases[] = {
      {"03-bad-password.http", 401, couch_error_kind::unauthorized, true, "unauthorized",
       "Name or password is incorrect."},
      {"05-create-db-again.http", 412, couch_error_kind::conflict, false, "file_exists",
       "The database could not be created, the file already exists."},
      {"06-create-db-illegal-name.http", 400, couch_error_kind::bad_request, false, "illegal_database_name",
       "Name: 'Tx_Bad'. Only lowercase characters (a-z), digits (0-9), and any of the characters _, $, (, ), +, -, "
       "and / are allowed. Must begin with a letter."},
      {"07-db-missing.http", 404, couch_error_kind::not_found, false, "not_found", "Database does not exist."},
      // A 403 on a database is a permission error (not the credential): not retried as is.
      {"16-nonmember-read.http", 403, couch_error_kind::forbidden, false, "forbidden",
       "You are not allowed to access this db."},
      {"17-anonymous-read.http", 401, couch_error_kind::unauthorized, true, "unauthorized",
       "You are not authorized to access this db."},
      {"33-bad-json.http", 400, couch_error_kind::bad_request, false, "bad_request", "invalid UTF-8 JSON"},
      // A validate_doc_update rejection is a 403 "forbidden" too: a document error.
      {"31-vdu-forbidden-write.http", 403, couch_error_kind::forbidden, false, "forbidden",
       "central database is written by couchgate only"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.file);
    const auto t = load_transcript(c.file);
    REQUIRE(t.status == c.status);
    const couch_error e = error_from(response_of(t));
    CHECK(to_string(e.kind) == std::string(to_string(c.kind)));
    CHECK(e.status == c.status);
    CHECK(e.retryable() == c.retryable);
    CHECK(e.error == c.error);
    CHECK(e.reason == c.reason);
    CHECK(e.error == body_json(t).at("error").get<std::string>());
  }
  const couch_error e = error_from(response_of(load_transcript("03-bad-password.http")));
  CHECK(e.describe() == "unauthorized (HTTP 401): unauthorized: Name or password is incorrect.");
}

TEST_CASE("error_from: transport failures keep their kind and text") {
  http_response r;
  r.kind = error_kind::network;
  r.error = "Couldn't connect to server";
  couch_error e = error_from(r);
  CHECK(e.kind == couch_error_kind::network);
  CHECK(e.error == "Couldn't connect to server");
  CHECK(e.status == 0);
  CHECK(e.retryable());
  CHECK(e.describe() == "network: Couldn't connect to server");

  r.kind = error_kind::timeout;
  r.error = "Operation timed out";
  e = error_from(r);
  CHECK(e.kind == couch_error_kind::timeout);
  CHECK(e.error == "Operation timed out");
  CHECK(e.retryable());

  r.kind = error_kind::cancelled;
  r.error = "pool shut down";
  e = error_from(r);
  CHECK(e.kind == couch_error_kind::cancelled);
  CHECK_FALSE(e.retryable());
}

TEST_CASE("error_from: 5xx with a non-JSON body, 200, odd bodies") {
  http_response r;
  r.status = 500;
  r.body = "<html><body>Internal Server Error</body></html>";
  couch_error e = error_from(r);
  CHECK(e.kind == couch_error_kind::server);
  CHECK(e.status == 500);
  CHECK(e.error.empty());
  CHECK(e.reason.empty());
  CHECK(e.retryable());
  CHECK(e.describe() == "server (HTTP 500)");

  r.status = 502;
  r.body = R"({"error":"bad_gateway"})";
  e = error_from(r);
  CHECK(e.kind == couch_error_kind::server);
  CHECK(e.retryable());

  // 503 and 429: the server is overloaded; retryable, with its Retry-After.
  r.status = 503;
  r.body = R"({"error":"service_unavailable","reason":"maintenance"})";
  e = error_from(r);
  CHECK(e.kind == couch_error_kind::overloaded);
  CHECK(e.error == "service_unavailable");
  CHECK(e.retryable());
  CHECK(e.retry_after.count() == -1);
  r.status = 429;
  r.body = R"({"error":"too_many_requests","reason":"slow down"})";
  r.retry_after = std::chrono::milliseconds{1000};
  e = error_from(r);
  CHECK(e.kind == couch_error_kind::overloaded);
  CHECK(e.retryable());
  CHECK(e.retry_after == std::chrono::milliseconds{1000});
  CHECK(e.describe() == "overloaded (HTTP 429): too_many_requests: slow down (Retry-After 1000 ms)");
  r.retry_after.reset();

  // Called on a success: the caller expected something else, a protocol error.
  r.status = 200;
  r.body = R"({"ok":true})";
  e = error_from(r);
  CHECK(e.kind == couch_error_kind::protocol);
  CHECK(e.status == 200);
  CHECK(e.error == "unexpected HTTP status");
  CHECK(e.retryable());

  // Non-string fields are ignored, long reasons are cut.
  r.status = 409;
  r.body = json{{"error", 42}, {"reason", std::string(1000, 'x')}}.dump();
  e = error_from(r);
  CHECK(e.kind == couch_error_kind::conflict);
  CHECK(e.error.empty());
  CHECK(e.reason == std::string(300, 'x'));
  CHECK_FALSE(e.retryable());

  // A credential refused (401) vs a permission refused (403), and the pool's hold.
  r.status = 401;
  r.body = R"({"error":"unauthorized","reason":"Name or password is incorrect."})";
  e = error_from(r);
  CHECK(e.kind == couch_error_kind::unauthorized);
  r.status = 403;
  r.body = R"({"error":"forbidden","reason":"Account is temporarily locked due to multiple authentication failures"})";
  r.credential_rejected = true;  // http_pool sets it (is_credential_rejection)
  e = error_from(r);
  CHECK(e.kind == couch_error_kind::unauthorized);
  r.credential_rejected = false;
  r.body = R"({"error":"forbidden","reason":"You are not allowed to access this db."})";
  e = error_from(r);
  CHECK(e.kind == couch_error_kind::forbidden);
  CHECK_FALSE(e.retryable());
  http_response held;
  held.kind = error_kind::credential_held;
  held.error = "not sent";
  e = error_from(held);
  CHECK(e.kind == couch_error_kind::unauthorized);
  CHECK(e.status == 0);

  r.status = 413;  // any other 4xx
  r.body = "";
  e = error_from(r);
  CHECK(e.kind == couch_error_kind::bad_request);
  CHECK_FALSE(e.retryable());
}

// ---------------------------------------------------------------------------------------------
// Seqs

TEST_CASE("couch_client::seq_number") {
  using opt = std::optional<std::uint64_t>;
  // Integers (pouchdb-server, CouchDB 1.x).
  CHECK(couch_client::seq_number(json(0)) == opt(0));
  CHECK(couch_client::seq_number(json(42)) == opt(42));
  CHECK(couch_client::seq_number(json(std::uint64_t{1} << 40)) == opt(std::uint64_t{1} << 40));
  CHECK(couch_client::seq_number(json(-1)) == std::nullopt);
  // CouchDB 2+ strings.
  CHECK(couch_client::seq_number(json("12-g1AAAAB5eJzLYWBgYMpgTmEQ")) == opt(12));
  CHECK(couch_client::seq_number(json("0-g1AAAACbeJzLYWBgYMpg")) == opt(0));
  CHECK(couch_client::seq_number(json("7")) == opt(7));
  CHECK(couch_client::seq_number(json("-5-g1AAAA")) == std::nullopt);
  CHECK(couch_client::seq_number(json("garbage")) == std::nullopt);
  CHECK(couch_client::seq_number(json("now")) == std::nullopt);
  CHECK(couch_client::seq_number(json("")) == std::nullopt);
  CHECK(couch_client::seq_number(json("12abc")) == std::nullopt);
  CHECK(couch_client::seq_number(json("99999999999999999999999-g1")) == std::nullopt);  // overflow
  CHECK(couch_client::seq_number(json(nullptr)) == std::nullopt);
  CHECK(couch_client::seq_number(json(1.5)) == std::nullopt);
  CHECK(couch_client::seq_number(json::array({1, "x"})) == std::nullopt);

  // Values the server really sent.
  const json info = body_json(load_transcript("08-db-info.http"));
  REQUIRE(info.at("update_seq").is_string());
  CHECK(info["update_seq"].get<std::string>().rfind("0-g1", 0) == 0);
  CHECK(couch_client::seq_number(info["update_seq"]) == opt(0));
  const json updates = body_json(load_transcript("35-db-updates-normal.http"));
  CHECK(couch_client::seq_number(updates.at("last_seq")) == opt(12));
  for (const auto& row : updates.at("results")) {
    CAPTURE(row.dump());
    CHECK(couch_client::seq_number(row.at("seq")).has_value());
  }
}

TEST_CASE("couch_client::seq_param: strings unquoted and percent-encoded, integers as digits") {
  CHECK(couch_client::seq_param(json(k35_last_seq)) == k35_last_seq);  // base64url: all unreserved
  CHECK(couch_client::seq_param(json("3-g1+A/B=")) == "3-g1%2BA%2FB%3D");
  CHECK(couch_client::seq_param(json("now")) == "now");
  CHECK(couch_client::seq_param(json(42)) == "42");
  CHECK(couch_client::seq_param(json(0)) == "0");
  CHECK(couch_client::seq_param(json(nullptr)) == "0");
  // BigCouch-style array seqs are sent as their JSON text.
  CHECK(couch_client::seq_param(json::array({1, "abc"})) == "%5B1%2C%22abc%22%5D");
  // Never quoted.
  CHECK(couch_client::seq_param(json("5-x")).find("%22") == std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// Shapes the transfer code relies on (recorded answers)

TEST_CASE("_bulk_get?revs=true (25): ok docs with _revisions, stubs, error entries in a 200") {
  const auto t = load_transcript("25-bulk-get.http");
  REQUIRE(t.status == 200);  // a missing doc does not make the request fail
  const json answer = body_json(t);
  REQUIRE(answer.at("results").is_array());
  const json& res = answer["results"];
  REQUIRE(res.size() == 4);
  const strings ids{"doc-1", "doc-2", "doc-att", "missing-doc"};
  for (std::size_t i = 0; i < res.size(); ++i) {
    CAPTURE(i);
    CHECK(res[i].at("id") == ids[i]);
    REQUIRE(res[i].at("docs").is_array());
    REQUIRE(res[i]["docs"].size() == 1);
    for (const auto& entry : res[i]["docs"]) {
      REQUIRE(entry.is_object());
      REQUIRE(entry.size() == 1);  // exactly one of ok / error
      CHECK((entry.contains("ok") != entry.contains("error")));
      if (entry.contains("ok")) check_bulk_get_ok_doc(entry["ok"]);
    }
  }
  const json& doc1 = res[0]["docs"][0]["ok"];
  CHECK(doc1["_rev"] == "2-aaaa");  // the requested (losing) leaf, not the winner
  CHECK(doc1["_revisions"]["ids"] == json::array({"aaaa", "7a7e4b29f3af401e69b6f86e4c26b727"}));
  CHECK(doc1["v"] == "conflict-a");

  const json& doc2 = res[1]["docs"][0]["ok"];
  CHECK(doc2.value("_deleted", false) == true);

  const json& att = res[2]["docs"][0]["ok"].at("_attachments").at("hello.txt");
  CHECK(att.value("stub", false) == true);
  CHECK_FALSE(att.contains("data"));
  CHECK(att.at("length") == 11);
  CHECK(att.at("digest") == "md5-7mkg+nM0HN26sZkLN8KVSA==");

  const json& err = res[3]["docs"][0].at("error");
  CHECK(err.at("id") == "missing-doc");
  CHECK(err.at("error") == "not_found");
  CHECK(err.at("reason") == "missing");
  CHECK(err.at("rev") == "undefined");
}

TEST_CASE("_bulk_get?attachments=true (26): inline base64 data instead of stubs") {
  const auto t = load_transcript("26-bulk-get-attachments.http");
  REQUIRE(t.status == 200);
  const json answer = body_json(t);
  REQUIRE(answer.at("results").size() == 1);
  const json& entry = answer["results"][0].at("docs").at(0);
  REQUIRE(entry.contains("ok"));
  check_bulk_get_ok_doc(entry["ok"]);
  const json& att = entry["ok"].at("_attachments").at("hello.txt");
  CHECK(att.at("data") == "aGVsbG8gd29ybGQ=");  // "hello world"
  CHECK_FALSE(att.contains("stub"));
  CHECK(att.at("content_type") == "text/plain");
  CHECK(att.at("revpos") == 1);
  // The same attachment as the stub in 25.
  const json stubbed = body_json(load_transcript("25-bulk-get.http"));
  CHECK(att.at("digest") == stubbed["results"][2]["docs"][0]["ok"]["_attachments"]["hello.txt"]["digest"]);
}

TEST_CASE("_revs_diff (24): {id: {missing: [...]}} with only the revisions the target lacks") {
  const auto t = load_transcript("24-revs-diff.http");
  REQUIRE(t.status == 200);
  const json answer = body_json(t);
  REQUIRE(answer.is_object());
  std::set<std::string> keys;
  for (const auto& [id, v] : answer.items()) {
    keys.insert(id);
    CAPTURE(id);
    REQUIRE(v.is_object());
    REQUIRE(v.contains("missing"));
    REQUIRE(v["missing"].is_array());
    for (const auto& rev : v["missing"]) CHECK(rev.is_string());
  }
  CHECK(keys == std::set<std::string>{"doc-1", "doc-new"});
  const auto missing1 = answer["doc-1"]["missing"].get<std::set<std::string>>();
  CHECK(missing1 == std::set<std::string>{"1-zzzz", "2-cccc"});  // 2-aaaa exists (see 19)
  CHECK(answer["doc-new"]["missing"] == json::array({"1-abc"}));
}

// ---------------------------------------------------------------------------------------------
// Metrics

TEST_CASE("histogram: quantiles") {
  histogram empty;
  CHECK(empty.count() == 0);
  CHECK(empty.quantile(0.5) == 0);
  CHECK(empty.quantile(0.99) == 0);

  histogram h;
  for (int i = 0; i < 100; ++i) h.observe(0.2);
  CHECK(h.count() == 100);
  CHECK(h.max() == doctest::Approx(0.2));
  const double p99 = h.quantile(0.99);
  CHECK(p99 > 0.1);  // inside the (0.1, 0.25] bucket...
  CHECK(p99 <= 0.25);
  CHECK(p99 <= h.max());  // ...and never above what was seen
  CHECK(p99 == doctest::Approx(0.2));
  CHECK(h.quantile(0.5) == doctest::Approx(0.175));  // interpolated inside the bucket

  histogram mixed;
  for (int i = 0; i < 90; ++i) mixed.observe(0.003);
  for (int i = 0; i < 10; ++i) mixed.observe(2.0);
  CHECK(mixed.quantile(0.5) > 0);
  CHECK(mixed.quantile(0.5) <= 0.005);
  CHECK(mixed.quantile(0.9) <= 0.005);
  CHECK(mixed.quantile(0.95) > 1.0);
  CHECK(mixed.quantile(0.95) <= 2.0);
  CHECK(mixed.quantile(0.99) == doctest::Approx(2.0));

  histogram huge;  // past the last bound: the +Inf bucket, bounded by max
  huge.observe(5000);
  CHECK(huge.quantile(0.5) > 3600);
  CHECK(huge.quantile(0.5) <= 5000);
  CHECK(huge.quantile(1.0) == doctest::Approx(5000));
}

TEST_CASE("histogram::render: cumulative buckets, +Inf == count, sum and count") {
  histogram h;
  h.observe(0.003);
  h.observe(0.1);  // on a bound: counted in le=0.1 (le is inclusive)
  for (int i = 0; i < 100; ++i) h.observe(0.2);
  h.observe(7200);
  std::string out;
  h.render(out, "cg_lat_seconds");

  std::istringstream in(out);
  std::string line;
  std::vector<std::pair<std::string, std::uint64_t>> buckets;
  std::optional<double> sum;
  std::optional<std::uint64_t> count;
  const std::string bucket_prefix = "cg_lat_seconds_bucket{le=\"";
  while (std::getline(in, line)) {
    CAPTURE(line);
    if (line.rfind(bucket_prefix, 0) == 0) {
      const auto close = line.find("\"} ", bucket_prefix.size());
      REQUIRE(close != std::string::npos);
      buckets.emplace_back(line.substr(bucket_prefix.size(), close - bucket_prefix.size()),
                           std::stoull(line.substr(close + 3)));
    } else if (line.rfind("cg_lat_seconds_sum ", 0) == 0) {
      sum = std::stod(line.substr(19));
    } else if (line.rfind("cg_lat_seconds_count ", 0) == 0) {
      count = std::stoull(line.substr(21));
    } else {
      FAIL("unexpected line");
    }
  }
  REQUIRE(buckets.size() == histogram::bounds.size() + 1);
  for (std::size_t i = 0; i < histogram::bounds.size(); ++i) {
    CAPTURE(i);
    CHECK(std::stod(buckets[i].first) == histogram::bounds[i]);
    if (i > 0) CHECK(buckets[i].second >= buckets[i - 1].second);
  }
  CHECK(buckets.back().first == "+Inf");
  REQUIRE(count.has_value());
  CHECK(*count == 103);
  CHECK(buckets.back().second == *count);
  CHECK(buckets[0].second == 1);   // le=0.005
  CHECK(buckets[4].second == 2);   // le=0.1
  CHECK(buckets[5].second == 102); // le=0.25
  CHECK(buckets[15].second == 102);  // le=3600: 7200 s is only in +Inf
  REQUIRE(sum.has_value());
  CHECK(*sum == doctest::Approx(0.003 + 0.1 + 20.0 + 7200));
}

// Bucket bounds render in the shortest form (le="0.1", not le="0.10000000000000001"), as
// Prometheus client libraries emit them: Prometheus matches `le` as a string.
TEST_CASE("histogram::render: bucket bounds in shortest form (le=\"0.1\")") {
  histogram h;
  h.observe(0.2);
  std::string out;
  h.render(out, "x");
  CHECK(out.find("x_bucket{le=\"0.1\"} 0\n") != std::string::npos);
  CHECK(out.find("x_bucket{le=\"0.005\"} 0\n") != std::string::npos);
  CHECK(out.find("x_bucket{le=\"0.25\"} 1\n") != std::string::npos);
}

TEST_CASE("prometheus_number: whole numbers as integers, others in their shortest exact form") {
  CHECK(prometheus_number(10) == "10");  // "%.1g" alone would give 1e+01
  CHECK(prometheus_number(100000) == "100000");
  CHECK(prometheus_number(12345678901234.0) == "12345678901234");
  CHECK(prometheus_number(-20) == "-20");
  CHECK(prometheus_number(-0.0) == "0");
  CHECK(prometheus_number(0.1) == "0.1");
  CHECK(prometheus_number(2.5) == "2.5");
  CHECK(prometheus_number(1e20) == "1e+20");
  CHECK(prometheus_number(std::numeric_limits<double>::infinity()) == "+Inf");
}

TEST_CASE("registry::render: HELP/TYPE once per family, labelled samples") {
  registry r;
  auto& a = r.add_counter("cg_requests_total", "Requests sent", "db=\"a\"");
  auto& b = r.add_counter("cg_requests_total", "Requests sent", "db=\"b\",kind=\"x\"");
  a.inc(3);
  b.inc();
  r.add_counter("cg_plain_total", "Unlabelled counter");
  r.add_gauge("cg_open_sockets", "Open sockets").set(2.5);
  r.add_callback("cg_computed", "Computed when scraped", [] { return 7.0; });
  r.add_histogram("cg_latency_seconds", "Latency").observe(0.2);
  const std::string out = r.render();

  CHECK(count_of(out, "# HELP cg_requests_total Requests sent\n") == 1);
  CHECK(count_of(out, "# TYPE cg_requests_total counter\n") == 1);
  CHECK(count_of(out, "# HELP cg_requests_total") == 1);
  CHECK(count_of(out, "# TYPE cg_requests_total") == 1);
  CHECK(count_of(out, "\ncg_requests_total{db=\"a\"} 3\n") == 1);
  CHECK(count_of(out, "\ncg_requests_total{db=\"b\",kind=\"x\"} 1\n") == 1);
  CHECK(count_of(out, "\ncg_plain_total 0\n") == 1);
  CHECK(out.find("cg_plain_total{") == std::string::npos);  // no empty braces
  CHECK(count_of(out, "# TYPE cg_open_sockets gauge\n") == 1);
  CHECK(count_of(out, "\ncg_open_sockets 2.5\n") == 1);
  CHECK(count_of(out, "# TYPE cg_computed gauge\n") == 1);
  CHECK(count_of(out, "\ncg_computed 7\n") == 1);
  CHECK(count_of(out, "# TYPE cg_latency_seconds histogram\n") == 1);
  CHECK(count_of(out, "\ncg_latency_seconds_count 1\n") == 1);
  CHECK(count_of(out, "cg_latency_seconds_bucket{le=\"+Inf\"} 1\n") == 1);
  CHECK(count_of(out, "# HELP ") == 5);
  CHECK(count_of(out, "# TYPE ") == 5);

  // Metadata precedes the family's samples.
  CHECK(out.find("# TYPE cg_requests_total counter") < out.find("cg_requests_total{db=\"a\"}"));
  CHECK(out.find("# TYPE cg_latency_seconds histogram") < out.find("cg_latency_seconds_bucket"));
  // A value changed after registration shows up on the next render.
  a.inc();
  CHECK(count_of(r.render(), "\ncg_requests_total{db=\"a\"} 4\n") == 1);
}

// ---------------------------------------------------------------------------------------------
// URL encoding

TEST_CASE("encode_doc_id / encode_segment") {
  CHECK(encode_doc_id("_design/x y") == "_design/x%20y");
  CHECK(encode_doc_id("_local/ck/1") == "_local/ck%2F1");
  CHECK(encode_doc_id("a/b") == "a%2Fb");
  CHECK(encode_doc_id("_designer/x") == "_designer%2Fx");  // not the prefix
  CHECK(encode_doc_id("x/_design/y") == "x%2F_design%2Fy");
  CHECK(encode_doc_id("doc-1") == "doc-1");
  CHECK(encode_segment("a/b") == "a%2Fb");
  CHECK(encode_segment("_design/x") == "_design%2Fx");  // a database name keeps no slash
  CHECK(encode_segment("AZaz09-_.~") == "AZaz09-_.~");
  CHECK(encode_segment("a$b(c)+d") == "a%24b%28c%29%2Bd");
  CHECK(encode_segment("100%") == "100%25");
  CHECK(encode_segment("?#&=") == "%3F%23%26%3D");
  CHECK(encode_segment(std::string_view("a\0b", 3)) == "a%00b");
  CHECK(encode_segment("") == "");
  // UTF-8 bytes, uppercase hex.
  CHECK(encode_segment("\xC3\xA9") == "%C3%A9");           // é
  CHECK(encode_doc_id("\xE6\x97\xA5-\xF0\x9F\x98\x80") == "%E6%97%A5-%F0%9F%98%80");  // 日-😀
  CHECK(encode_segment("\xff") == "%FF");
  CHECK(encode_query_value("[\"1-a\"]") == "%5B%221-a%22%5D");
}

// ---------------------------------------------------------------------------------------------
// JSON escaping (log lines)

TEST_CASE("json_escape") {
  CHECK(json_escape("say \"hi\"") == "say \\\"hi\\\"");
  CHECK(json_escape("a\\b") == "a\\\\b");
  CHECK(json_escape("l1\nl2") == "l1\\nl2");
  CHECK(json_escape("\r\t") == "\\r\\t");
  CHECK(json_escape("\x01") == "\\u0001");
  CHECK(json_escape("\x1f") == "\\u001f");
  CHECK(json_escape(std::string_view("\0", 1)) == "\\u0000");
  CHECK(json_escape("plain / text") == "plain / text");
  CHECK(json_escape("\xC3\xA9") == "\xC3\xA9");  // UTF-8 passes through
  CHECK(json_escape("") == "");

  // Every ASCII byte round-trips through a JSON parser.
  std::string all;
  for (int c = 0; c < 128; ++c) all.push_back(static_cast<char>(c));
  const std::string literal = "\"" + json_escape(all) + "\"";
  json parsed;
  REQUIRE_NOTHROW(parsed = json::parse(literal));
  CHECK(parsed.get<std::string>() == all);
}

TEST_CASE("changes_behind: the rows plus CouchDB's pending (20); nothing without pending") {
  const json answer = body_json(load_transcript("20-changes-limit.http"));
  CHECK(couchgate::replicator::changes_behind(answer) == std::optional<std::uint64_t>(4));
  CHECK(couchgate::replicator::changes_behind(json{{"results", json::array()}, {"pending", 0}, {"last_seq", "5-x"}}) ==
        std::optional<std::uint64_t>(0));
  // pouchdb-server answers without pending: the caller compares update_seq instead.
  CHECK_FALSE(couchgate::replicator::changes_behind(json{{"results", json::array({json::object()})}, {"last_seq", 2}}));
  CHECK_FALSE(couchgate::replicator::changes_behind(json{{"results", json::array()}, {"pending", "2"}}));
  CHECK_FALSE(couchgate::replicator::changes_behind(json{{"results", json::array()}, {"pending", -1}}));
  CHECK_FALSE(couchgate::replicator::changes_behind(json::array()));
}
