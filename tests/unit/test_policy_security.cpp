#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "policy/security.hpp"

using namespace couchgate::policy;
using nlohmann::json;

TEST_CASE("render_security: sorted, de-duplicated, owner as member") {
  security_template t;
  t.member_names = {"zed", "amy", "zed"};
  t.member_roles = {"support", "friends", "support"};
  t.admin_names = {"root"};
  t.admin_roles = {"moderators", "moderators"};

  const json with_owner = render_security(t, std::string_view("mia"));
  CHECK(with_owner.dump() ==
        R"({"admins":{"names":["root"],"roles":["moderators"]},)"
        R"("members":{"names":["amy","mia","zed"],"roles":["friends","support"]}})");

  const json without_owner = render_security(t, std::nullopt);
  CHECK(without_owner.dump() ==
        R"({"admins":{"names":["root"],"roles":["moderators"]},)"
        R"("members":{"names":["amy","zed"],"roles":["friends","support"]}})");

  // An owner already listed is not duplicated.
  CHECK(render_security(t, std::string_view("amy"))["members"]["names"] == json({"amy", "zed"}));
}

TEST_CASE("render_security: owner_is_admin") {
  security_template t;
  t.owner_is_admin = true;
  const json s = render_security(t, std::string_view("alice"));
  CHECK(s.dump() == R"({"admins":{"names":["alice"],"roles":[]},"members":{"names":["alice"],"roles":[]}})");
  // Without its owner the database would have no member, i.e. be public: server admins only.
  CHECK(render_security(t, std::nullopt).dump() ==
        R"({"admins":{"names":[],"roles":[]},"members":{"names":[],"roles":["_admin"]}})");
}

TEST_CASE("render_security: a database is never left without members (CouchDB makes such a database public)") {
  security_template t;  // the default template: the owner is the only member
  CHECK(render_security(t, std::string_view("alice"))["members"] == json{{"names", {"alice"}}, {"roles", json::array()}});
  const json revoked = render_security(t, std::nullopt);
  CHECK(revoked["members"] == json{{"names", json::array()}, {"roles", {"_admin"}}});
  CHECK(revoked["admins"] == json{{"names", json::array()}, {"roles", json::array()}});
  // A template with members of its own needs no such guard.
  t.member_roles = {"support"};
  CHECK(render_security(t, std::nullopt)["members"] == json{{"names", json::array()}, {"roles", {"support"}}});
  t.member_roles.clear();
  t.member_names = {"auditor"};
  CHECK(render_security(t, std::nullopt)["members"] == json{{"names", {"auditor"}}, {"roles", json::array()}});
}

TEST_CASE("render_admin_only_security and render_shared_security") {
  CHECK(render_admin_only_security().dump() ==
        R"({"admins":{"names":[],"roles":["_admin"]},"members":{"names":[],"roles":["_admin"]}})");
  CHECK(render_shared_security({"staff", "friends", "staff"}, {"mods"}).dump() ==
        R"({"admins":{"names":[],"roles":["mods"]},"members":{"names":[],"roles":["friends","staff"]}})");
  CHECK(render_shared_security({}, {}).dump() ==
        R"({"admins":{"names":[],"roles":[]},"members":{"names":[],"roles":[]}})");
}

TEST_CASE("security_equal: sets, not lists") {
  const json a = json::parse(R"({"admins":{"names":["b","a"],"roles":["r"]},
                                 "members":{"names":["x","y","x"],"roles":[]}})");
  const json b = json::parse(R"({"members":{"roles":[],"names":["y","x"]},
                                 "admins":{"roles":["r","r"],"names":["a","b"]},
                                 "couchdb_auth_only":true})");
  CHECK(security_equal(a, b));
  CHECK(security_equal(b, a));

  json c = a;
  c["members"]["names"].push_back("z");
  CHECK_FALSE(security_equal(a, c));

  // Same name, different list: members.names vs members.roles.
  const json d = json::parse(R"({"members":{"roles":["x"]}})");
  const json e = json::parse(R"({"members":{"names":["x"]}})");
  CHECK_FALSE(security_equal(d, e));
  // Same name, different section.
  const json f = json::parse(R"({"admins":{"names":["x"]}})");
  CHECK_FALSE(security_equal(e, f));
}

TEST_CASE("security_equal: missing parts count as empty") {
  const json empty_render = render_shared_security({}, {});
  CHECK(security_equal(json::object(), empty_render));
  CHECK(security_equal(empty_render, json::object()));
  CHECK(security_equal(json::parse(R"({"admins":{}})"), empty_render));
  CHECK(security_equal(json::parse(R"({"members":{"names":[]}})"), empty_render));
  CHECK_FALSE(security_equal(json::object(), render_admin_only_security()));

  const json partial = json::parse(R"({"members":{"roles":["_admin"]},"admins":{"roles":["_admin"]}})");
  CHECK(security_equal(partial, render_admin_only_security()));
}

TEST_CASE("security_equal: malformed objects equal nothing") {
  const json empty_render = render_shared_security({}, {});
  const std::vector<json> malformed = {
      json(nullptr),
      json::array(),
      json("x"),
      json::parse(R"({"members":{"names":"alice"}})"),
      json::parse(R"({"members":{"names":[1]}})"),
      json::parse(R"({"members":{"names":[null]}})"),
      json::parse(R"({"members":[]})"),
      json::parse(R"({"members":null})"),
      json::parse(R"({"admins":{"roles":{"a":1}}})"),
      json::parse(R"({"admins":{"roles":null}})"),
  };
  for (const auto& m : malformed) {
    CAPTURE(m.dump());
    CHECK_FALSE(security_equal(m, empty_render));
    CHECK_FALSE(security_equal(empty_render, m));
    CHECK_FALSE(security_equal(m, m));
  }
}

TEST_CASE("security_equal: a render equals itself and its reordering") {
  security_template t;
  t.member_names = {"b", "a"};
  t.admin_roles = {"m"};
  const json s = render_security(t, std::string_view("owner"));
  CHECK(security_equal(s, s));
  json reordered = s;
  reordered["members"]["names"] = json({"owner", "b", "a", "a"});
  CHECK(security_equal(s, reordered));
  CHECK_FALSE(security_equal(s, render_security(t, std::nullopt)));
}
