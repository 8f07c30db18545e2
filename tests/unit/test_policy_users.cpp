#include <doctest/doctest.h>

#include <string>
#include <variant>
#include <vector>

#include "policy/users.hpp"

using namespace couchgate::policy;
using nlohmann::json;

namespace {

json alice_doc() {
  return json{{"_id", "org.couchdb.user:alice"},
              {"_rev", "1-x"},
              {"name", "alice"},
              {"type", "user"},
              {"roles", {"staff", "friends"}},
              {"password_scheme", "pbkdf2"},
              {"iterations", 10},
              {"derived_key", "SECRET-derived"},
              {"salt", "SECRET-salt"}};
}

json row_for(const json& doc) {
  return json{{"seq", "1-g1AAA"}, {"id", doc.at("_id")}, {"changes", {{{"rev", "1-x"}}}}, {"doc", doc}};
}

const user_doc* as_user(const parsed_user& p) { return std::get_if<user_doc>(&p); }
const user_doc_error* as_error(const parsed_user& p) { return std::get_if<user_doc_error>(&p); }

// The error for a live alice document changed by `mutate`.
std::string error_for(void (*mutate)(json&)) {
  json doc = alice_doc();
  mutate(doc);
  const auto p = parse_user_change(row_for(doc));
  const auto* e = as_error(p);
  REQUIRE(e != nullptr);
  CHECK(e->doc_id == "org.couchdb.user:alice");
  return e->reason;
}

}  // namespace

TEST_CASE("parse_user_change: a live user") {
  const auto p = parse_user_change(row_for(alice_doc()));
  const auto* u = as_user(p);
  REQUIRE(u != nullptr);
  CHECK(u->name == "alice");
  CHECK(u->roles == std::vector<std::string>{"staff", "friends"});
  CHECK_FALSE(u->deleted);
  CHECK(u->email.empty());
  CHECK_FALSE(u->from_intent());
}

TEST_CASE("parse_user_change: the e-mail address and whether couchgate's sign-up made the user") {
  json doc = alice_doc();
  doc["email"] = " Alice@Example.org ";
  doc["couchgate_intent"] = "signup/0123";
  const auto p = parse_user_change(row_for(doc));
  const auto* u = as_user(p);
  REQUIRE(u != nullptr);
  CHECK(u->email == " Alice@Example.org ");  // as written: normalising is identity's business
  CHECK(u->from_intent());
  // Other types read as absent, never as an error: the user is still provisioned.
  doc["email"] = 42;
  doc["couchgate_intent"] = json::array();
  const auto q = parse_user_change(row_for(doc));
  REQUIRE(as_user(q) != nullptr);
  CHECK(as_user(q)->email.empty());
  CHECK_FALSE(as_user(q)->from_intent());
}

TEST_CASE("parse_user_change: roles are optional; names keep odd characters") {
  json doc = {{"_id", "org.couchdb.user:a:b \xF0\x9F\x98\x80"}, {"name", "a:b \xF0\x9F\x98\x80"}, {"type", "user"}};
  const auto p = parse_user_change(row_for(doc));
  const auto* u = as_user(p);
  REQUIRE(u != nullptr);
  CHECK(u->name == "a:b \xF0\x9F\x98\x80");
  CHECK(u->roles.empty());
  CHECK_FALSE(u->deleted);
}

TEST_CASE("parse_user_change: tombstones take the name from the id") {
  SUBCASE("row deleted, tombstone doc without a name") {
    const json row = {{"seq", "2-x"},
                      {"id", "org.couchdb.user:bob"},
                      {"changes", {{{"rev", "2-y"}}}},
                      {"deleted", true},
                      {"doc", {{"_id", "org.couchdb.user:bob"}, {"_rev", "2-y"}, {"_deleted", true}}}};
    const auto p = parse_user_change(row);
    const auto* u = as_user(p);
    REQUIRE(u != nullptr);
    CHECK(u->name == "bob");
    CHECK(u->deleted);
    CHECK(u->roles.empty());
  }
  SUBCASE("row deleted without doc") {
    const json row = {{"id", "org.couchdb.user:bob"}, {"deleted", true}};
    const auto parsed = parse_user_change(row);
    const auto* u = as_user(parsed);
    REQUIRE(u != nullptr);
    CHECK(u->name == "bob");
    CHECK(u->deleted);
  }
  SUBCASE("only the doc says _deleted") {
    const json row = {{"id", "org.couchdb.user:bob"},
                      {"doc", {{"_id", "org.couchdb.user:bob"}, {"_deleted", true}}}};
    const auto parsed = parse_user_change(row);
    const auto* u = as_user(parsed);
    REQUIRE(u != nullptr);
    CHECK(u->deleted);
    CHECK(u->name == "bob");
  }
  SUBCASE("deleted with a bad id") {
    const json row = {{"id", "bob"}, {"deleted", true}};
    const auto p = parse_user_change(row);
    const auto* e = as_error(p);
    REQUIRE(e != nullptr);
    CHECK(e->doc_id == "bob");
    CHECK(e->reason.find("org.couchdb.user:NAME") != std::string::npos);
  }
  SUBCASE("deleted: \"true\" as a string is not deletion") {
    const json row = {{"id", "org.couchdb.user:bob"}, {"deleted", "true"}};
    CHECK(as_error(parse_user_change(row)) != nullptr);  // not deleted, and no doc
  }
}

TEST_CASE("parse_user_change: design documents are not users") {
  const json row = {{"id", "_design/_auth"}, {"changes", {{{"rev", "1-a"}}}},
                    {"doc", {{"_id", "_design/_auth"}, {"validate_doc_update", "function(){}"}}}};
  CHECK(std::holds_alternative<std::monostate>(parse_user_change(row)));
  CHECK(std::holds_alternative<std::monostate>(parse_user_change(json{{"id", "_design/x"}, {"deleted", true}})));
  CHECK(std::holds_alternative<std::monostate>(parse_user_doc(row["doc"], false, 10)));
}

TEST_CASE("parse_user_change: malformed rows") {
  for (const json& row : {json(nullptr), json(1), json("x"), json::array({1, 2}), json(true)}) {
    const auto p = parse_user_change(row);
    const auto* e = as_error(p);
    REQUIRE(e != nullptr);
    CHECK(e->doc_id.empty());
    CHECK(e->reason == "change row is not a JSON object");
  }
  for (const json& row : {json::object(), json{{"id", 5}}, json{{"id", nullptr}}, json{{"id", {"a"}}}}) {
    const auto parsed = parse_user_change(row);
    const auto* e = as_error(parsed);
    REQUIRE(e != nullptr);
    CHECK(e->reason.find("'id'") != std::string::npos);
  }
  {
    const json row = {{"id", "org.couchdb.user:alice"}, {"changes", {{{"rev", "1-x"}}}}};
    const auto p = parse_user_change(row);
    const auto* e = as_error(p);
    REQUIRE(e != nullptr);
    CHECK(e->doc_id == "org.couchdb.user:alice");
    CHECK(e->reason.find("'doc'") != std::string::npos);
  }
  {
    const json row = {{"id", "org.couchdb.user:alice"}, {"doc", nullptr}};
    CHECK(as_error(parse_user_change(row)) != nullptr);
  }
  {
    const json row = {{"id", "org.couchdb.user:alice"}, {"doc", json::array()}};
    const auto parsed = parse_user_change(row);
    const auto* e = as_error(parsed);
    REQUIRE(e != nullptr);
    CHECK(e->reason.find("not a JSON object") != std::string::npos);
  }
  {
    json doc = alice_doc();
    doc["_id"] = "org.couchdb.user:mallory";
    doc["name"] = "mallory";
    json row = row_for(alice_doc());
    row["doc"] = doc;
    const auto parsed = parse_user_change(row);
    const auto* e = as_error(parsed);
    REQUIRE(e != nullptr);
    CHECK(e->reason.find("does not match") != std::string::npos);
  }
}

TEST_CASE("parse_user_change: each invalid field is named in the reason") {
  CHECK(error_for([](json& d) { d["roles"] = "admin"; }) == "field 'roles' must be an array of strings");
  CHECK(error_for([](json& d) { d["roles"] = {"a", 1}; }) == "field 'roles' must be an array of strings");
  CHECK(error_for([](json& d) { d["roles"] = nullptr; }) == "field 'roles' must be an array of strings");
  CHECK(error_for([](json& d) { d["roles"] = {{"x", "y"}}; }) == "field 'roles' must be an array of strings");
  CHECK(error_for([](json& d) { d.erase("name"); }) == "field 'name' is missing or not a string");
  CHECK(error_for([](json& d) { d["name"] = 42; }) == "field 'name' is missing or not a string");
  CHECK(error_for([](json& d) { d["name"] = ""; }) == "field 'name' is empty");
  CHECK(error_for([](json& d) { d["name"] = "bob"; }) == "field 'name' does not match the name in '_id'");
  CHECK(error_for([](json& d) { d["type"] = "admin"; }) == "field 'type' must be \"user\"");
  CHECK(error_for([](json& d) { d["type"] = nullptr; }) == "field 'type' must be \"user\"");
  CHECK(error_for([](json& d) { d["type"] = json::array({"user"}); }) == "field 'type' must be \"user\"");
  // One rule, CouchDB's: a document without `type` is not a user either (it was provisioned while
  // `type: 7` was refused).
  CHECK(error_for([](json& d) { d.erase("type"); }) == "field 'type' is missing (must be \"user\")");
  CHECK(error_for([](json& d) { d["type"] = 7; }) == "field 'type' must be \"user\"");
}

TEST_CASE("parse_user_doc: id and name rules") {
  CHECK(as_error(parse_user_doc(json{{"name", "alice"}}, false, 10))->reason ==
        "field '_id' is missing or not a string");
  CHECK(as_error(parse_user_doc(json{{"_id", 7}}, false, 10))->doc_id.empty());
  CHECK(as_error(parse_user_doc(json::array(), false, 10))->reason == "document is not a JSON object");
  CHECK(as_error(parse_user_doc(json("org.couchdb.user:a"), false, 10)) != nullptr);

  const auto bad_id = parse_user_doc(json{{"_id", "alice"}, {"name", "alice"}}, false, 10);
  REQUIRE(as_error(bad_id) != nullptr);
  CHECK(as_error(bad_id)->reason == "field '_id' is not of the form org.couchdb.user:NAME");

  const auto empty = parse_user_doc(json{{"_id", "org.couchdb.user:"}, {"name", ""}}, false, 10);
  REQUIRE(as_error(empty) != nullptr);
  CHECK(as_error(empty)->reason.find("'_id'") != std::string::npos);

  // The deleted flag from the caller turns the doc into a tombstone.
  const auto gone = parse_user_doc(json{{"_id", "org.couchdb.user:carol"}}, true, 10);
  REQUIRE(as_user(gone) != nullptr);
  CHECK(as_user(gone)->deleted);
  CHECK(as_user(gone)->name == "carol");
}

TEST_CASE("parse_user_doc: size limit") {
  const json doc = alice_doc();
  CHECK(as_user(parse_user_doc(doc, false, max_user_doc_bytes)) != nullptr);
  const auto big = parse_user_doc(doc, false, max_user_doc_bytes + 1);
  REQUIRE(as_error(big) != nullptr);
  CHECK(as_error(big)->reason == "document is 65537 bytes, over the 65536-byte limit");
  // A tombstone is honoured whatever its size: revoking must not be blocked.
  CHECK(as_user(parse_user_doc(doc, true, max_user_doc_bytes * 10)) != nullptr);

  // parse_user_change measures the document itself.
  json huge = alice_doc();
  huge["junk"] = std::string(max_user_doc_bytes, 'j');
  const auto p = parse_user_change(row_for(huge));
  REQUIRE(as_error(p) != nullptr);
  CHECK(as_error(p)->reason.find("-byte limit") != std::string::npos);
}

TEST_CASE("error reasons never contain secret field values") {
  const char* const secret_fields[] = {"password", "password_sha", "derived_key", "salt"};
  std::vector<void (*)(json&)> breakers = {
      [](json& d) { d["roles"] = "SECRET"; },
      [](json& d) { d["name"] = "SECRET"; },
      [](json& d) { d["type"] = "SECRET"; },
      [](json& d) { d["junk"] = std::string(70000, 'S'); },
  };
  for (auto* breaker : breakers) {
    json doc = alice_doc();
    for (const char* f : secret_fields) doc[f] = std::string("SECRET-") + f;
    breaker(doc);
    const auto p = parse_user_change(row_for(doc));
    const auto* e = as_error(p);
    REQUIRE(e != nullptr);
    CHECK(e->reason.find("SECRET") == std::string::npos);
    CHECK(e->reason.find('\n') == std::string::npos);
  }
}

TEST_CASE("parsing never throws on hostile shapes") {
  const std::vector<json> values = {nullptr,
                                    true,
                                    0,
                                    -1,
                                    1.5,
                                    "",
                                    "org.couchdb.user:x",
                                    std::string(200000, 'x'),
                                    std::string("\xff\xfe", 2),  // invalid UTF-8 inside a json string
                                    json::array(),
                                    json::array({1, "a", nullptr}),
                                    json::object(),
                                    json{{"_id", 1}}};
  const char* const row_keys[] = {"id", "doc", "deleted", "changes", "seq"};
  const char* const doc_keys[] = {"_id", "name", "type", "roles", "_deleted"};
  for (const auto& v : values) {
    CHECK_NOTHROW(parse_user_change(v));
    CHECK_NOTHROW(parse_user_doc(v, false, 0));
    CHECK_NOTHROW(parse_user_doc(v, true, 0));
    for (const char* k : row_keys) {
      json row = row_for(alice_doc());
      row[k] = v;
      CHECK_NOTHROW(parse_user_change(row));
    }
    for (const char* k : doc_keys) {
      json doc = alice_doc();
      doc[k] = v;
      json row = row_for(alice_doc());
      row["doc"] = doc;
      CHECK_NOTHROW(parse_user_change(row));
      CHECK_NOTHROW(parse_user_doc(doc, false, 100));
    }
  }
}

TEST_CASE("matches: every criterion") {
  const user_doc u{"alice", {"staff", "friends"}, false};
  CHECK(matches(criteria{}, u));

  CHECK(matches(criteria{{"staff", "x"}, {}, {}, {}}, u));
  CHECK_FALSE(matches(criteria{{"x", "y"}, {}, {}, {}}, u));

  CHECK(matches(criteria{{}, {"staff", "friends"}, {}, {}}, u));
  CHECK_FALSE(matches(criteria{{}, {"staff", "boss"}, {}, {}}, u));

  CHECK(matches(criteria{{}, {}, {"banned"}, {}}, u));
  CHECK_FALSE(matches(criteria{{}, {}, {"banned", "friends"}, {}}, u));

  CHECK(matches(criteria{{}, {}, {}, {"bob", "alice"}}, u));
  CHECK_FALSE(matches(criteria{{}, {}, {}, {"bob"}}, u));

  // All together: every clause must hold.
  const criteria all{{"staff"}, {"friends"}, {"banned"}, {"alice"}};
  CHECK(matches(all, u));
  CHECK_FALSE(matches(all, user_doc{"alice", {"staff", "friends", "banned"}, false}));
  CHECK_FALSE(matches(all, user_doc{"alice", {"staff"}, false}));
  CHECK_FALSE(matches(all, user_doc{"bob", {"staff", "friends"}, false}));

  // A user without roles fails any role requirement.
  CHECK_FALSE(matches(criteria{{"staff"}, {}, {}, {}}, user_doc{"alice", {}, false}));
}

TEST_CASE("decide") {
  const criteria staff_only{{"staff"}, {}, {}, {}};
  const user_doc staff{"alice", {"staff"}, false};
  const user_doc other{"bob", {"guest"}, false};
  const user_doc gone{"alice", {}, true};

  CHECK(decide(staff_only, on_delete::keep, staff) == user_action::ensure);
  CHECK(decide(staff_only, on_delete::remove, staff) == user_action::ensure);
  CHECK(decide(staff_only, on_delete::keep, other) == user_action::revoke_owner);
  // Stopping to match is not deletion: the data stays whatever on_delete says.
  CHECK(decide(staff_only, on_delete::remove, other) == user_action::revoke_owner);
  CHECK(decide(criteria{}, on_delete::keep, gone) == user_action::revoke_owner);
  CHECK(decide(criteria{}, on_delete::remove, gone) == user_action::delete_db);
  // A tombstone never ensures, even if its (empty) roles would match.
  CHECK(decide(criteria{}, on_delete::keep, user_doc{"alice", {"staff"}, true}) == user_action::revoke_owner);
}

TEST_CASE("parse_session_answer: name, roles and how the caller was authenticated") {
  // CouchDB 3.x, GET /_session with a JWT (jwt_authentication_handler).
  const auto jwt = parse_session_answer(json::parse(R"({"ok":true,"userCtx":{"name":"tok-user","roles":["app","x"]},
    "info":{"authentication_handlers":["jwt","cookie","default"],"authenticated":"jwt"}})"));
  REQUIRE(jwt);
  CHECK(*jwt == session_user{"tok-user", {"app", "x"}, "jwt"});
  const auto basic = parse_session_answer(json::parse(R"({"ok":true,"userCtx":{"name":"alice","roles":[]},
    "info":{"authenticated":"default"}})"));
  REQUIRE(basic);
  CHECK(basic->authenticated == "default");
  // Anonymous, or shapes CouchDB never sends: no user.
  CHECK_FALSE(parse_session_answer(json::parse(R"({"ok":true,"userCtx":{"name":null,"roles":[]},"info":{}})")));
  CHECK_FALSE(parse_session_answer(json::parse(R"({"userCtx":{"name":""}})")));
  CHECK_FALSE(parse_session_answer(json::parse(R"({"userCtx":"alice"})")));
  CHECK_FALSE(parse_session_answer(json::parse(R"([1,2])")));
  // Odd roles are skipped, a missing info is no authentication method.
  const auto odd = parse_session_answer(json::parse(R"({"userCtx":{"name":"bob","roles":["a",1,null,"b"]},"info":[]})"));
  REQUIRE(odd);
  CHECK(odd->roles == std::vector<std::string>{"a", "b"});
  CHECK(odd->authenticated.empty());
}

TEST_CASE("decide_token_user: only a JWT caller without _users document and database is provisioned") {
  criteria select;
  select.roles_any = {"app"};
  const session_user tok{"tok-user", {"app"}, "jwt"};
  CHECK(decide_token_user(tok, select, false, false) == token_user_action::provision);
  CHECK(decide_token_user(tok, select, true, false) == token_user_action::has_user_doc);
  CHECK(decide_token_user(tok, select, false, true) == token_user_action::db_exists);
  // The token's roles are what the selection sees.
  CHECK(decide_token_user(session_user{"tok-user", {"other"}, "jwt"}, select, false, false) ==
        token_user_action::not_selected);
  select.roles_none = {"banned"};
  CHECK(decide_token_user(session_user{"tok-user", {"app", "banned"}, "jwt"}, select, false, false) ==
        token_user_action::not_selected);
  // Password and cookie callers are the provisioner's (it follows _users).
  CHECK(decide_token_user(session_user{"alice", {"app"}, "default"}, select, false, false) == token_user_action::not_token);
  CHECK(decide_token_user(session_user{"alice", {"app"}, "cookie"}, select, false, false) == token_user_action::not_token);
  CHECK(decide_token_user(session_user{"", {"app"}, "jwt"}, select, false, false) == token_user_action::not_token);
}
