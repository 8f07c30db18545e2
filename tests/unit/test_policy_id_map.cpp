#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "policy/id_map.hpp"

using namespace couchgate::policy;

namespace {
owner user(std::string name) { return owner{owner::kind::user, std::move(name)}; }
const owner shared{owner::kind::shared, {}};
}  // namespace

TEST_CASE("owner_token escapes '%', ':' and a leading '_'") {
  CHECK(owner_token(user("alice")) == "alice");
  CHECK(owner_token(user("a:b")) == "a%3Ab");
  CHECK(owner_token(user("_x")) == "%5Fx");
  CHECK(owner_token(user("x_y_")) == "x_y_");      // only a leading '_'
  CHECK(owner_token(user("__")) == "%5F_");
  CHECK(owner_token(user("100%")) == "100%25");
  CHECK(owner_token(user("%shared")) == "%25shared");
  CHECK(owner_token(user("_a:%:")) == "%5Fa%3A%25%3A");
  CHECK(owner_token(user("a/b c\xC3\xA9")) == "a/b c\xC3\xA9");
  CHECK(owner_token(shared) == "%shared");
}

TEST_CASE("owner_from_token inverts owner_token") {
  const std::vector<std::string> names = {"alice", "a:b",      "_x",      "__",   "100%",
                                          "%shared", "_a:%:",  "%25",     ";",    "a;b",
                                          "_design", "x/_y",   "\xF0\x9F\x98\x80", "%5F"};
  for (const auto& n : names) {
    CAPTURE(n);
    const auto back = owner_from_token(owner_token(user(n)));
    REQUIRE(back.has_value());
    CHECK(*back == user(n));
  }
  CHECK(owner_from_token("%shared") == shared);
  CHECK(owner_from_token(owner_token(shared)) == shared);
}

TEST_CASE("owner_from_token rejects non-canonical and malformed tokens") {
  CHECK_FALSE(owner_from_token("").has_value());
  CHECK_FALSE(owner_from_token("%").has_value());
  CHECK_FALSE(owner_from_token("a%").has_value());
  CHECK_FALSE(owner_from_token("a%2").has_value());
  CHECK_FALSE(owner_from_token("%zz").has_value());
  CHECK_FALSE(owner_from_token("a%3ab").has_value());   // lowercase hex is not canonical
  CHECK_FALSE(owner_from_token("a%5Fb").has_value());   // '_' is only escaped when leading
  CHECK_FALSE(owner_from_token("%41").has_value());     // 'A' is never escaped
  CHECK_FALSE(owner_from_token("a:b").has_value());     // raw ':'
  CHECK_FALSE(owner_from_token("_x").has_value());      // raw leading '_'
  CHECK_FALSE(owner_from_token("%SHARED").has_value());
  CHECK_FALSE(owner_from_token("%shared2").has_value());
  CHECK_FALSE(owner_from_token("%sh").has_value());
  // "%shared" itself is not an escaped user name: it decodes only to the shared owner.
  REQUIRE(owner_from_token("%shared").has_value());
  CHECK(owner_from_token("%shared")->what == owner::kind::shared);
  CHECK(owner_from_token("%shared")->name.empty());
}

TEST_CASE("to_central_id, namespaced") {
  CHECK(to_central_id(id_mode::namespaced, user("alice"), "doc1") == std::string("alice:doc1"));
  CHECK(to_central_id(id_mode::namespaced, user("a:b"), "x:y") == std::string("a%3Ab:x:y"));
  CHECK(to_central_id(id_mode::namespaced, user("_x"), "d") == std::string("%5Fx:d"));
  CHECK(to_central_id(id_mode::namespaced, shared, "d") == std::string("%shared:d"));
  // Design docs become plain data in the central database.
  CHECK(to_central_id(id_mode::namespaced, user("alice"), "_design/x") ==
        std::string("alice:_design/x"));
  CHECK_FALSE(to_central_id(id_mode::namespaced, user("alice"), "_local/ckpt").has_value());
  CHECK_FALSE(to_central_id(id_mode::namespaced, user("alice"), "").has_value());
}

TEST_CASE("to_central_id, unchanged") {
  CHECK(to_central_id(id_mode::unchanged, user("alice"), "doc1") == std::string("doc1"));
  CHECK(to_central_id(id_mode::unchanged, user("alice"), "a:b") == std::string("a:b"));
  CHECK(to_central_id(id_mode::unchanged, shared, "doc1") == std::string("doc1"));
  CHECK_FALSE(to_central_id(id_mode::unchanged, user("alice"), "_design/x").has_value());
  CHECK_FALSE(to_central_id(id_mode::unchanged, user("alice"), "_local/x").has_value());
  // Only the exact prefixes are special.
  CHECK(to_central_id(id_mode::unchanged, user("alice"), "_designer") == std::string("_designer"));
}

TEST_CASE("from_central_id inverts namespaced to_central_id") {
  const std::vector<owner> owners = {user("alice"), user("a:b"), user("_x"), user("%shared"),
                                     user("x%3Ay"), shared};
  const std::vector<std::string> ids = {"doc", "a:b:c", "_design/x", "%shared:doc", ":", "\xC3\xA9"};
  for (const auto& o : owners) {
    for (const auto& id : ids) {
      CAPTURE(o.name);
      CAPTURE(id);
      const auto central = to_central_id(id_mode::namespaced, o, id);
      REQUIRE(central.has_value());
      const auto back = from_central_id(*central);
      REQUIRE(back.has_value());
      CHECK(back->who == o);
      CHECK(back->doc_id == id);
    }
  }
}

TEST_CASE("from_central_id rejects ids it did not make") {
  CHECK_FALSE(from_central_id("").has_value());
  CHECK_FALSE(from_central_id("_design/couchgate").has_value());
  CHECK_FALSE(from_central_id("_design/a:b").has_value());
  CHECK_FALSE(from_central_id("nocolon").has_value());
  CHECK_FALSE(from_central_id("alice:").has_value());       // empty doc id
  CHECK_FALSE(from_central_id(":doc").has_value());         // empty token
  CHECK_FALSE(from_central_id("a%3ab:doc").has_value());    // bad token
  CHECK_FALSE(from_central_id("%bad:doc").has_value());
  CHECK_FALSE(from_central_id("alice:_local/x").has_value());
  const auto r = from_central_id("a%3Ab:c:d");
  REQUIRE(r.has_value());
  CHECK(r->who == user("a:b"));
  CHECK(r->doc_id == "c:d");
}

TEST_CASE("central range covers exactly one owner's ids in byte order") {
  CHECK(central_range_start(user("alice")) == "alice:");
  CHECK(central_range_end(user("alice")) == "alice;");
  CHECK(central_range_start(shared) == "%shared:");
  CHECK(central_range_end(shared) == "%shared;");
  CHECK(central_range_start(user("a:b")) == "a%3Ab:");

  const owner alice = user("alice");
  const std::string start = central_range_start(alice);
  const std::string end = central_range_end(alice);
  auto in_range = [&](const std::string& id) { return id >= start && id < end; };
  const std::vector<std::string> doc_ids = {"a", "\xF4\x8F\xBF\xBF", "zzz", ";", ":", "\x7f"};
  for (const auto& d : doc_ids) {
    CHECK(in_range(*to_central_id(id_mode::namespaced, alice, d)));
  }
  for (const auto& other : {user("alic"), user("alice2"), user("alice;"), user("alice:x"),
                            user("alicf"), user("alice%"), shared}) {
    for (const auto& d : doc_ids) {
      CAPTURE(other.name);
      CHECK_FALSE(in_range(*to_central_id(id_mode::namespaced, other, d)));
    }
  }
}
