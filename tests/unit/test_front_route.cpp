// The front door's routing: a table of crafted request targets, each checked never to reach a
// database other than the caller's own (as CouchDB splits paths, and as a proxy that decodes
// and resolves dot segments first would see them); pass-through routes; Location rewriting.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "gateway/front/route.hpp"

namespace f = couchgate::gateway::front;

namespace {
const std::string own_db = "userdb-616c696365";  // alice

std::string decode(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::vector<std::string> split(std::string_view path) {
  std::vector<std::string> out;
  std::size_t start = 1;
  for (;;) {
    const std::size_t end = path.find('/', start);
    out.emplace_back(path.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  return out;
}

// Dot segments resolved as RFC 3986 section 5.2.4 does, after decoding (a careless proxy).
std::vector<std::string> decoded_resolved(std::string_view target) {
  const std::string path = decode(target.substr(0, target.find('?')));
  std::vector<std::string> out;
  for (auto& seg : split(path)) {
    if (seg == "..") {
      if (!out.empty()) out.pop_back();
    } else if (seg != "." && !seg.empty()) {
      out.push_back(seg);
    }
  }
  return out;
}

// The database a target names for CouchDB (split raw, then decode) and for a decoding proxy.
void check_stays_home(const std::string& upstream) {
  CAPTURE(upstream);
  const auto raw = split(upstream.substr(0, upstream.find('?')));
  REQUIRE(!raw.empty());
  CHECK(decode(raw[0]) == own_db);
  const auto resolved = decoded_resolved(upstream);
  REQUIRE(!resolved.empty());
  CHECK(resolved[0] == own_db);
}
}  // namespace

TEST_CASE("front route: crafted paths never reach another database") {
  struct row {
    std::string method, target;
  };
  const std::vector<row> table{
      {"GET", "/me"},
      {"GET", "/me/"},
      {"GET", "/me/doc1"},
      {"PUT", "/me/doc1?new_edits=false"},
      {"GET", "/me/_changes?feed=longpoll&since=now&style=all_docs"},
      {"GET", "/me/_all_docs?include_docs=true"},
      {"GET", "/me/a%2Fb"},
      {"GET", "/me/_design/x/_view/v"},
      {"GET", "/me/_local/abc"},
      {"GET", "/me/doc/att.txt"},
      {"GET", "/me/../userdb-626f62"},
      {"GET", "/me/..%2Fuserdb-626f62"},
      {"GET", "/me/%2e%2e/userdb-626f62"},
      {"GET", "/me/%2E%2E/userdb-626f62"},
      {"GET", "/me/.%2e/userdb-626f62"},
      {"GET", "/me/%2e%2e%2fuserdb-626f62"},
      {"GET", "/me/./../userdb-626f62"},
      {"GET", "/me/x/../../userdb-626f62"},
      {"GET", "/me%2F..%2Fuserdb-626f62"},
      {"GET", "/me%2f..%2fuserdb-626f62/doc"},
      {"GET", "/me/%252e%252e/userdb-626f62"},
      {"GET", "//me/../userdb-626f62"},
      {"GET", "/me//../userdb-626f62"},
      {"GET", "//userdb-626f62"},
      {"GET", "/me\\..\\userdb-626f62"},
      {"GET", "/me/%5c..%5cuserdb-626f62"},
      {"GET", "/me/doc%00"},
      {"GET", "/me/doc%zz"},
      {"GET", "/me/doc%2"},
      {"GET", "/_all_dbs"},
      {"GET", "/_users"},
      {"GET", "/_users/org.couchdb.user:bob"},
      {"GET", "/userdb-626f62"},
      {"GET", "/userdb-626f62/_all_docs"},
      {"GET", "http://127.0.0.1:5984/userdb-626f62"},
      {"GET", "https://evil/me"},
      {"GET", "*"},
      {"GET", "userdb-626f62"},
      {"GET", "/ME"},
      {"GET", "/m%65"},
      {"GET", "/me/_design/x/_rewrite/../../userdb-626f62"},
      {"GET", "/me/_design/x/_rewrite/anything"},
      {"GET", "/me/_design/x/%5Frewrite/anything"},
      {"GET", "/me/_design/x/_r%65write/anything"},
      {"GET", "/shared"},
      {"GET", "/shared/../userdb-626f62"},
      {"GET", "/_replicate"},
      {"POST", "/_replicate"},
      {"GET", "/_node/_local/_config"},
      {"GET", "/_session/../userdb-626f62"},
      {"GET", "/_uuids/../_all_dbs"},
      {"GET", "/me#/../userdb-626f62"},
      {"GET", "/me/doc?x=/../userdb-626f62"},
      {"GET", "/me/\xc3\xa9"},
      {"DELETE", "/me"},
  };
  CHECK(table.size() >= 30);
  int home = 0;
  for (const auto& r : table) {
    CAPTURE(r.method);
    CAPTURE(r.target);
    const auto rt = f::route_request(r.method, r.target, false);
    switch (rt.kind) {
      case f::route_kind::user_db:
        ++home;
        check_stays_home(f::db_target(own_db, rt));
        break;
      case f::route_kind::pass_through:
        // Only the server-level endpoints named in the issue pass through.
        CHECK((rt.target == "/" || rt.target.starts_with("/_session") || rt.target.starts_with("/_uuids")));
        CHECK(split(rt.target.substr(0, rt.target.find('?'))).size() == 1);
        break;
      case f::route_kind::shared_db:
        FAIL("shared is not configured in this table");
        break;
      case f::route_kind::local:
        // Answered by couchgate itself (sign-up, identities): never forwarded anywhere.
        CHECK((rt.target.starts_with("/_signup") || rt.target.starts_with("/_identity/")));
        break;
      case f::route_kind::preflight:
        FAIL("no OPTIONS in this table");
        break;
      case f::route_kind::not_found:
      case f::route_kind::bad_request:
        CHECK(!rt.reason.empty());
        break;
    }
  }
  CHECK(home >= 10);  // the legitimate ones do route home
}

TEST_CASE("front route: the _changes path as CouchDB dispatches it, encoded or not") {
  CHECK(f::is_changes_path("/_changes"));
  CHECK(f::is_changes_path("/%5Fchanges"));
  CHECK(f::is_changes_path("/_ch%61nges"));
  CHECK_FALSE(f::is_changes_path("/_changes/x"));
  CHECK_FALSE(f::is_changes_path("/changes"));
  CHECK_FALSE(f::is_changes_path("/_design/x/_changes"));
  CHECK_FALSE(f::is_changes_path("/%zz"));
  CHECK_FALSE(f::is_changes_path(""));
}

TEST_CASE("front route: what is refused and what is 404") {
  using k = f::route_kind;
  CHECK(f::route_request("GET", "/me/../userdb-626f62", false).kind == k::bad_request);
  CHECK(f::route_request("GET", "/me/%2e%2e/x", false).kind == k::bad_request);
  CHECK(f::route_request("GET", "/me%2F..%2Fuserdb-626f62", false).kind == k::bad_request);
  CHECK(f::route_request("GET", "//me", false).kind == k::bad_request);
  CHECK(f::route_request("GET", "/me\\x", false).kind == k::bad_request);
  CHECK(f::route_request("GET", "http://h/me", false).kind == k::bad_request);
  CHECK(f::route_request("GET", "/_all_dbs", false).kind == k::not_found);
  CHECK(f::route_request("GET", "/_users", false).kind == k::not_found);
  CHECK(f::route_request("GET", "/shared/doc", false).kind == k::not_found);
  CHECK(f::route_request("PUT", "/_uuids", false).kind == k::not_found);
  CHECK(f::route_request("POST", "/", false).kind == k::not_found);
  // CouchDB decodes each segment before dispatching: an encoded _rewrite is _rewrite.
  CHECK(f::route_request("GET", "/me/_design/x/_rewrite/a", false).kind == k::not_found);
  CHECK(f::route_request("GET", "/me/_design/x/%5Frewrite/a", false).kind == k::not_found);
  CHECK(f::route_request("GET", "/me/_design/x/_r%65write", false).kind == k::not_found);
  CHECK(f::route_request("GET", "/me/_design/x/%5frewrite", false).kind == k::not_found);
  CHECK(f::route_request("GET", "/me/_design/x/_rewrites", false).kind == k::user_db);
}

TEST_CASE("front route: the served routes and their upstream targets") {
  using k = f::route_kind;
  auto me = f::route_request("GET", "/me", false);
  REQUIRE(me.kind == k::user_db);
  CHECK(f::db_target(own_db, me) == "/" + own_db);
  auto doc = f::route_request("PUT", "/me/a%2Fb?rev=1-x", false);
  REQUIRE(doc.kind == k::user_db);
  CHECK(f::db_target(own_db, doc) == "/" + own_db + "/a%2Fb?rev=1-x");
  CHECK(doc.label == "me");
  auto trailing = f::route_request("GET", "/me/", false);
  CHECK(f::db_target(own_db, trailing) == "/" + own_db + "/");
  auto shared = f::route_request("POST", "/shared/_bulk_docs", true);
  REQUIRE(shared.kind == k::shared_db);
  CHECK(f::db_target("shared", shared) == "/shared/_bulk_docs");
  for (const char* m : {"GET", "POST", "DELETE"}) CHECK(f::route_request(m, "/_session", false).kind == k::pass_through);
  CHECK(f::route_request("GET", "/_uuids?count=3", false).target == "/_uuids?count=3");
  CHECK(f::route_request("GET", "/", false).target == "/");
  auto pre = f::route_request("OPTIONS", "/me/doc", false);
  CHECK(pre.kind == k::preflight);
  CHECK(pre.target == "/");
  CHECK(f::route_request("OPTIONS", "/_all_dbs", false).kind == k::not_found);
}

TEST_CASE("front route: database names are encoded as one path segment") {
  CHECK(f::encode_db_name("userdb-6162") == "userdb-6162");
  CHECK(f::encode_db_name("a+b$c(d)/e") == "a%2Bb%24c%28d%29%2Fe");
}

TEST_CASE("front route: Location headers naming the database are rewritten to the mount") {
  CHECK(f::rewrite_location("http://127.0.0.1:5984/" + own_db + "/doc1", own_db, "/me", "https://front:6984") ==
        "https://front:6984/me/doc1");
  CHECK(f::rewrite_location("/" + own_db + "/a%2Fb", own_db, "/me", "") == "/me/a%2Fb");
  CHECK(f::rewrite_location("http://h/a+b/doc", "a+b", "/shared", "") == "/shared/doc");
  CHECK(f::rewrite_location("http://h/" + own_db + "x/doc", own_db, "/me", "") == "http://h/" + own_db + "x/doc");
  CHECK(f::rewrite_location("http://h/other/doc", own_db, "/me", "") == "http://h/other/doc");
}

TEST_CASE("front route: sign-up and identity endpoints are local, with their methods only") {
  CHECK(f::route_request("POST", "/_signup", false).kind == f::route_kind::local);
  CHECK(f::route_request("GET", "/_signup/available?name=a", false).kind == f::route_kind::local);
  CHECK(f::route_request("GET", "/_signup/available?name=a", false).target == "/_signup/available?name=a");
  CHECK(f::route_request("PUT", "/_identity/email", false).kind == f::route_kind::local);
  CHECK(f::route_request("PUT", "/_identity/name", false).kind == f::route_kind::local);
  CHECK(f::route_request("GET", "/_signup", false).kind == f::route_kind::not_found);
  CHECK(f::route_request("PUT", "/_identity/roles", false).kind == f::route_kind::not_found);
  CHECK(f::route_request("POST", "/_signup/../_users", false).kind == f::route_kind::bad_request);
  CHECK(f::route_request("POST", "/%5Fsignup", false).kind == f::route_kind::not_found);
  CHECK(f::query_param("?name=a%20b&email=x%40y.org", "email") == "x@y.org");
  CHECK(f::query_param("name=a+b", "name") == "a b");
  CHECK_FALSE(f::query_param("?name=%zz", "name").has_value());
  CHECK_FALSE(f::query_param("?names=a", "name").has_value());
}

TEST_CASE("front route: which answered requests may add a row to the database's _changes") {
  struct row {
    const char* method;
    const char* rest;
    bool writes;
  };
  const row table[] = {
      {"POST", "", true},                          // a new document
      {"POST", "/", true},
      {"GET", "", false},
      {"POST", "/_bulk_docs", true},
      {"GET", "/_bulk_docs", false},
      {"PUT", "/doc1", true},
      {"DELETE", "/doc1", true},
      {"COPY", "/doc1", true},
      {"GET", "/doc1", false},
      {"HEAD", "/doc1", false},
      {"POST", "/doc1", true},                     // multipart/form-data upload
      {"PUT", "/doc1/photo.jpg", true},            // an attachment
      {"DELETE", "/doc1/a%2Fb", true},
      {"GET", "/doc1/photo.jpg", false},
      {"PUT", "/a%2Fb", true},                     // an id with an encoded slash
      {"PUT", "/_design/app", true},
      {"DELETE", "/_design/app", true},
      {"COPY", "/_design/app", true},
      {"PUT", "/_design%2Fapp", true},             // CouchDB reads it as _design/app
      {"PUT", "/_design/app/logo.png", true},
      {"POST", "/_design/app/_update/bump/doc1", true},
      {"PUT", "/_design/app/_update/bump", true},
      {"GET", "/_design/app/_view/by_date", false},
      {"POST", "/_design/app/_view/by_date", false},
      {"GET", "/_design/app/_info", false},
      {"PUT", "/_design/", false},
      {"POST", "/_index", true},                   // writes a design document
      {"DELETE", "/_index/_design/idx/json/by_name", true},
      {"GET", "/_index", false},
      {"PUT", "/_local/checkpoint", false},        // not in _changes
      {"DELETE", "/_local/checkpoint", false},
      {"PUT", "/_local%2Fcheckpoint", false},
      {"POST", "/_revs_diff", false},
      {"POST", "/_bulk_get", false},
      {"POST", "/_all_docs", false},
      {"POST", "/_find", false},
      {"POST", "/_explain", false},
      {"POST", "/_changes", false},
      {"POST", "/_purge", true},                   // the revisions left get new rows
      {"POST", "/_index/_bulk_delete", true},
      {"PUT", "/_design%2Fapp/logo.png", true},    // an attachment of _design/app
      {"DELETE", "/_design%2Fapp", true},
      {"PUT", "/_security", false},
      {"POST", "/_compact", false},
      {"PUT", "/%zz", false},                      // bad encoding: never forwarded anyway
  };
  for (const auto& r : table) {
    CAPTURE(r.method);
    CAPTURE(r.rest);
    CHECK(f::may_add_changes(r.method, r.rest) == r.writes);
  }
  // CouchDB runs a POST with X-HTTP-Method-Override as the method it names.
  CHECK(f::couch_method("POST", "PUT") == "PUT");
  CHECK(f::couch_method("POST", "DELETE") == "DELETE");
  CHECK(f::couch_method("POST", "GET") == "GET");
  CHECK(f::couch_method("POST", "") == "POST");
  CHECK(f::couch_method("POST", "put") == "POST");    // not a method chttpd takes there
  CHECK(f::couch_method("POST", "PATCH") == "POST");
  CHECK(f::couch_method("PUT", "DELETE") == "PUT");   // only a POST is overridden
  CHECK(f::may_add_changes(f::couch_method("POST", "PUT"), "/_local/x") == false);
  CHECK(f::may_add_changes(f::couch_method("POST", "GET"), "/_bulk_docs") == false);
}
