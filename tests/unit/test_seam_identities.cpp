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
