// Identities over scripted exchanges: what a real server cannot be made to interleave on cue.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "gateway/identities.hpp"
#include "policy/identity.hpp"
#include "replicator/transport/url.hpp"
#include "tests/unit/scripted_transport.hpp"

namespace r = couchgate::replicator;
namespace g = couchgate::gateway;
using namespace couchgate::test;
using nlohmann::json;

namespace {
// Identities over scripted exchanges, database "ids", and the paths of alice's documents.
struct scripted_identities {
  scripted_couch c;
  scripted_transport& s = c.server;
  g::identities_config cfg = [] {
    g::identities_config out;
    out.enabled = true;
    out.db = "ids";
    return out;
  }();
  g::identities ids{c.client, c.metrics, cfg, "_users", nullptr};
  const std::string user_path = "/_users/" + r::encode_doc_id("org.couchdb.user:alice");
  const std::string name_res = "/ids/" + r::encode_doc_id("name/alice");
  const std::string email_res = "/ids/" + r::encode_doc_id("email/alice@example.org");
  const std::string marker = "/ids/" + r::encode_doc_id("_local/couchgate-name-keys");

  // The identities database exists with its _security; `marker_answer` is what its re-key record
  // reads as (404: never re-keyed).
  void database_ready(std::string marker_answer = R"({"_id":"_local/couchgate-name-keys","_rev":"0-1","keys":"nfkc-casefold"})") {
    s.on("PUT", "/ids", answer(412, R"({"error":"file_exists","reason":"The database could not be created, the file already exists."})"));
    s.on("GET", "/ids/_security", answer(200, couchgate::policy::render_admin_only_security().dump()));
    s.on("GET", marker, answer(marker_answer.find("not_found") == std::string::npos ? 200 : 404, std::move(marker_answer)));
  }
  // Ready as the daemon makes it before taking sign-ups.
  void ready(g::identities& x) {
    database_ready();
    REQUIRE_FALSE(x.ensure_db().has_value());
    REQUIRE_FALSE(x.rekey_names().has_value());
  }
};
}  // namespace

TEST_CASE_FIXTURE(scripted_identities, "a deleted user's reservations are not released when a sign-up of the same name completed after the first look") {
  // The feed's deletion of an earlier alice: gone at the first look; then a sign-up of alice
  // completes (its reservations, its intent done, its user), before the reservations are read.
  s.on("GET", user_path, answer(404, R"({"error":"not_found","reason":"deleted"})"));
  s.on("GET", user_path, answer(200, R"({"_id":"org.couchdb.user:alice","_rev":"1-b","name":"alice","type":"user"})"), -1);
  s.on("GET", name_res,
       answer(200, R"({"_id":"name/alice","_rev":"1-n","type":"reservation","user":"alice","intent":"signup/i2","email":"alice@example.org"})"),
       -1);
  s.on("GET", email_res, answer(200, R"({"_id":"email/alice@example.org","_rev":"1-e","type":"reservation","user":"alice","intent":"signup/i2"})"),
       -1);
  s.on("GET", "/ids/" + r::encode_doc_id("signup/i2"), answer(200, R"({"_id":"signup/i2","_rev":"3-i","state":"done"})"), -1);

  CHECK(ids.release_deleted("alice"));
  CHECK(s.count("DELETE", "/ids/") == 0);  // the new alice keeps her name and address
  CHECK(s.unexpected().empty());
}

TEST_CASE_FIXTURE(scripted_identities, "a deleted user's reservations are released when the user is still gone after they were read") {
  s.on("GET", user_path, answer(404, R"({"error":"not_found","reason":"deleted"})"), -1);
  s.on("GET", name_res,
       answer(200, R"({"_id":"name/alice","_rev":"1-n","type":"reservation","user":"alice","email":"alice@example.org"})"), -1);
  s.on("GET", email_res, answer(200, R"({"_id":"email/alice@example.org","_rev":"1-e","type":"reservation","user":"alice"})"), -1);
  s.on("DELETE", email_res + "?rev=1-e", answer(200, R"({"ok":true})"));
  s.on("DELETE", name_res + "?rev=1-n", answer(200, R"({"ok":true})"));

  CHECK(ids.release_deleted("alice"));
  CHECK(s.count("DELETE", email_res) == 1);
  CHECK(s.count("DELETE", name_res) == 1);
  CHECK(s.unexpected().empty());
}

namespace {
const auto created = [](const char* rev) { return answer(201, std::string(R"({"ok":true,"rev":")") + rev + "\"}"); };
const json alice_signup{{"name", "alice"}, {"password", "correct horse battery"}, {"email", "alice@example.org"}};
}  // namespace

TEST_CASE_FIXTURE(scripted_identities, "a sign-up whose name is refused (409) and then unreadable answers 503, not taken") {
  s.on("PUT", "/ids/signup", created("2-i"), -1);  // the intent and its transitions
  s.on("PUT", name_res, answer(409, R"({"error":"conflict","reason":"Document update conflict."})"));
  s.on("GET", name_res, answer(500, R"({"error":"internal_server_error","reason":"timeout"})"), -1);
  s.on("PUT", email_res, created("1-e"));
  s.on("GET", email_res, answer(404, R"({"error":"not_found","reason":"deleted"})"), -1);

  ready(ids);
  const auto a = ids.signup(alice_signup);
  CHECK(a.status == 503);
  CHECK(a.body.value("error", "") == "service_unavailable");
  CHECK(a.body.value("reason", "") != "starting up; try again");
  CHECK(s.count("DELETE", name_res) == 0);  // a reservation not known to be ours is never touched
  CHECK(s.count("PUT", user_path) == 0);
  CHECK(s.unexpected().empty());
}

TEST_CASE_FIXTURE(scripted_identities, "a reservation answered 202 (below the write quorum) is withdrawn by its revision and the sign-up answers 503") {
  s.on("PUT", "/ids/signup", created("2-i"), -1);
  s.on("PUT", name_res, answer(202, R"({"ok":true,"id":"name/alice","rev":"1-n"})"));
  s.on("DELETE", name_res + "?rev=1-n", answer(202, R"({"ok":true,"rev":"2-n"})"));
  s.on("PUT", email_res, created("1-e"));
  // Giving the intent up reads what it may hold: the name is withdrawn already.
  s.on("GET", name_res, answer(404, R"({"error":"not_found","reason":"deleted"})"), -1);
  s.on("GET", email_res, answer(404, R"({"error":"not_found","reason":"deleted"})"), -1);

  ready(ids);
  const auto a = ids.signup(alice_signup);
  CHECK(a.status == 503);
  CHECK(s.count("DELETE", name_res + "?rev=1-n") == 1);
  CHECK(s.count("PUT", user_path) == 0);  // no user made on an unconfirmed reservation
  CHECK(metric_value(c.metrics, "couchgate_identity_reservations_unconfirmed_total") == 1.0);
}

TEST_CASE_FIXTURE(scripted_identities, "a sign-up whose name was released between its refused claim and the read claims it again") {
  cfg.provision_wait = std::chrono::seconds(0);
  g::identities quick{c.client, c.metrics, cfg, "_users", nullptr};
  s.on("PUT", "/ids/signup", created("2-i"), -1);
  s.on("PUT", name_res, answer(409, R"({"error":"conflict","reason":"Document update conflict."})"));
  s.on("GET", name_res, answer(404, R"({"error":"not_found","reason":"deleted"})"));
  s.on("PUT", name_res, created("3-n"));
  s.on("PUT", email_res, created("1-e"));
  s.on("PUT", user_path, created("1-u"));

  ready(quick);
  const auto a = quick.signup(alice_signup);
  CHECK(a.status == 201);
  CHECK(s.count("PUT", name_res) == 2);
  CHECK(s.unexpected().empty());
}

TEST_CASE_FIXTURE(scripted_identities, "available: a name held by a stale reservation is available, one held by a sign-up in flight is not") {
  s.on("GET", name_res,
       answer(200, R"({"_id":"name/alice","_rev":"1-n","type":"reservation","user":"alice","intent":"signup/i1"})"), -1);
  s.on("GET", user_path, answer(404, R"({"error":"not_found","reason":"missing"})"), -1);
  const std::string intent_path = "/ids/" + r::encode_doc_id("signup/i1");
  std::string state;
  s.on("GET", intent_path,
       [&](const r::http_request&) { return answer(200, R"({"_id":"signup/i1","_rev":"2-i","state":")" + state + "\"}"); },
       -1);

  ready(ids);
  state = "rolled_back";
  auto a = ids.available("alice", "");
  REQUIRE(a.status == 200);
  CHECK(a.body["name"]["available"] == true);
  CHECK(s.count("GET", user_path) == 1);  // the user's absence, read once (by the stale check)

  state = "reserved";  // a sign-up between its reservations and its user: the name is not free
  a = ids.available("alice", "");
  REQUIRE(a.status == 200);
  CHECK(a.body["name"]["available"] == false);
  CHECK(s.unexpected().empty());
}

TEST_CASE_FIXTURE(scripted_identities, "until the name keys are current, sign-ups and availability answer 503 without a request") {
  cfg.signup_deadline = std::chrono::seconds(0);  // how long they wait for it
  g::identities quick{c.client, c.metrics, cfg, "_users", nullptr};
  CHECK(quick.signup(alice_signup).status == 503);
  CHECK(quick.available("alice", "").status == 503);
  CHECK(s.requests().empty());
  ready(quick);
  CHECK(s.count("GET", marker) == 1);
  CHECK(s.count("GET", "/ids/_all_docs") == 0);  // re-keyed before: nothing listed
}

TEST_CASE_FIXTURE(scripted_identities, "re-keying names: a reservation under the key before NFKC case folding gets one under the current key") {
  // Straße signed up when names were keyed by NFC and lower case (name/straße); Ｂob (full-width
  // B) and bob both exist; alice's reservation is current already.
  database_ready(R"({"error":"not_found","reason":"missing"})");
  const json page{{"rows", json::array({
      json{{"id", "name/alice"}, {"doc", {{"_id", "name/alice"}, {"type", "reservation"}, {"user", "alice"}}}},
      json{{"id", "name/stra\u00dfe"}, {"doc", {{"_id", "name/stra\u00dfe"}, {"type", "reservation"}, {"user", "Stra\u00dfe"},
                                                  {"email", "s@example.org"}, {"intent", "signup/s1"}}}},
      json{{"id", "name/\uff42ob"}, {"doc", {{"_id", "name/\uff42ob"}, {"type", "reservation"}, {"user", "\uff22ob"}}}},
      json{{"id", "name/zed"}, {"doc", {{"_id", "name/zed"}, {"type", "reservation"}, {"user", 7}}}},  // malformed: left
      // A name starting above U+FFF0 (mathematical bold B): listed too, its key is "beth".
      json{{"id", "name/\U0001D401eth"}, {"doc", {{"_id", "name/\U0001D401eth"}, {"type", "reservation"}, {"user", "\U0001D401eth"}}}},
  })}};
  s.on("GET", "/ids/_all_docs", answer(200, page.dump()));
  std::vector<json> made;
  s.on("PUT", "/ids/" + r::encode_doc_id("name/strasse"), [&](const r::http_request& q) {
    made.push_back(json::parse(*q.body));
    return answer(201, R"({"ok":true,"rev":"1-x"})");
  });
  s.on("PUT", "/ids/" + r::encode_doc_id("name/beth"), created("1-y"));
  s.on("PUT", "/ids/" + r::encode_doc_id("name/bob"), answer(409, R"({"error":"conflict","reason":"Document update conflict."})"));
  s.on("GET", "/ids/" + r::encode_doc_id("name/bob"), answer(200, R"({"_id":"name/bob","_rev":"1-b","type":"reservation","user":"bob"})"), -1);
  json record;
  s.on("PUT", marker, [&](const r::http_request& q) {
    record = json::parse(*q.body);
    return answer(201, R"({"ok":true,"rev":"0-1"})");
  });

  REQUIRE_FALSE(ids.ensure_db().has_value());
  REQUIRE_FALSE(ids.rekey_names().has_value());
  REQUIRE(made.size() == 1);
  CHECK(made[0].value("user", "") == "Stra\u00dfe");
  CHECK(made[0].value("email", "") == "s@example.org");
  CHECK(made[0].value("intent", "") == "signup/s1");
  CHECK(s.count("PUT", "/ids/" + r::encode_doc_id("name/beth")) == 1);
  // Listed up to the prefix's successor, excluded: every id starting "name/" sorts before "name0".
  bool bounded = false;
  for (const auto& q : s.requests()) {
    if (q.target.find("/ids/_all_docs") == 0) {
      bounded = q.target.find("inclusive_end=false") != std::string::npos &&
                q.target.find("endkey=" + r::encode_segment("\"name0\"")) != std::string::npos;
    }
  }
  CHECK(bounded);
  CHECK(record.value("keys", "") == "nfkc-casefold");
  CHECK(record.value("made", 0) == 2);
  CHECK(record.value("shared", 0) == 1);  // Ｂob and bob: logged, bob keeps the key
  CHECK(s.count("PUT", "/ids/" + r::encode_doc_id("name/alice")) == 0);
  CHECK(s.unexpected().empty());
}

TEST_CASE_FIXTURE(scripted_identities, "re-keying names fails on a server error and records nothing, so the next start does it again") {
  database_ready(R"({"error":"not_found","reason":"missing"})");
  s.on("GET", "/ids/_all_docs",
       answer(200, R"({"rows":[{"id":"name/stra\u00dfe","doc":{"_id":"name/stra\u00dfe","type":"reservation","user":"Stra\u00dfe"}}]})"));
  s.on("PUT", "/ids/" + r::encode_doc_id("name/strasse"), answer(500, R"({"error":"internal_server_error","reason":"x"})"));
  REQUIRE_FALSE(ids.ensure_db().has_value());
  REQUIRE(ids.rekey_names().has_value());
  CHECK(s.count("PUT", marker) == 0);
  cfg.signup_deadline = std::chrono::seconds(0);
  g::identities quick{c.client, c.metrics, cfg, "_users", nullptr};
  CHECK(quick.signup(alice_signup).status == 503);
}
