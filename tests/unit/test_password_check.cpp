// A password checked against a `_users` document's hash as CouchDB checks it (gateway/password_check).
#include <doctest/doctest.h>

#include "gateway/password_check.hpp"

using couchgate::gateway::check_couch_password;
using couchgate::gateway::password_match;
using nlohmann::json;

TEST_CASE("password check: a document Apache CouchDB 3.5.0 hashed (pbkdf2, sha256, 600 000 iterations)") {
  // PUT /_users/org.couchdb.user:cg-vector {"password":"correct horse battery staple"} on CouchDB
  // 3.5.0, then GET: the document as the server stored it.
  const json doc = json::parse(R"({"_id":"org.couchdb.user:cg-vector","password_scheme":"pbkdf2","pbkdf2_prf":"sha256",
    "salt":"b685be0dfede506cd9494d419a373bae","iterations":600000,
    "derived_key":"1fda004c3886d7183199bd89fe6e86eea67fdb9e6f513b78782d57be1482cd02","name":"cg-vector","roles":[],"type":"user"})");
  CHECK(check_couch_password(doc, "correct horse battery staple") == password_match::matches);
  CHECK(check_couch_password(doc, "correct horse battery stapl") == password_match::differs);
  CHECK(check_couch_password(doc, "") == password_match::differs);
  // Above the caller's bound the work is not done.
  CHECK(check_couch_password(doc, "correct horse battery staple", 100000) == password_match::unknown);
}

TEST_CASE("password check: pbkdf2 with each PRF, the salt used as its text (RFC 6070 / RFC 7914 vectors)") {
  // RFC 6070 (PBKDF2-HMAC-SHA1, P="password", S="salt"): c=1 and c=2. No pbkdf2_prf means sha,
  // as in CouchDB (and pouchdb-server's documents).
  json doc{{"password_scheme", "pbkdf2"}, {"salt", "salt"}, {"iterations", 1},
           {"derived_key", "0c60c80f961f0e71f3a9b524af6012062fe037a6"}};
  CHECK(check_couch_password(doc, "password") == password_match::matches);
  CHECK(check_couch_password(doc, "passwore") == password_match::differs);
  doc["iterations"] = 2;
  CHECK(check_couch_password(doc, "password") == password_match::differs);
  doc["derived_key"] = "ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957";
  CHECK(check_couch_password(doc, "password") == password_match::matches);
  // Stored in uppercase hex: the same key.
  doc["derived_key"] = "EA6C014DC72D6F8CCD1ED92ACE1D41F0D8DE8957";
  CHECK(check_couch_password(doc, "password") == password_match::matches);
  // RFC 7914 section 11 (PBKDF2-HMAC-SHA256, P="passwd", S="salt", c=1): the first 32 bytes.
  json sha256{{"password_scheme", "pbkdf2"}, {"pbkdf2_prf", "sha256"}, {"salt", "salt"}, {"iterations", 1},
              {"derived_key", "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"}};
  CHECK(check_couch_password(sha256, "passwd") == password_match::matches);
  // The same key under another PRF is another hash.
  sha256["pbkdf2_prf"] = "sha512";
  CHECK(check_couch_password(sha256, "passwd") == password_match::differs);
  // PBKDF2-HMAC-SHA512, P="password", S="salt", c=2 (Python's hashlib.pbkdf2_hmac).
  json sha512{{"password_scheme", "pbkdf2"}, {"pbkdf2_prf", "sha512"}, {"salt", "salt"}, {"iterations", 2},
              {"derived_key",
               "e1d9c16aa681708a45f5c7c4e215ceb66e011a2e9f0040713f18aefdb866d53cf76cab2868a39b9f7840edce4fef5a82be"
               "67335c77a6068e04112754f27ccf4e"}};
  CHECK(check_couch_password(sha512, "password") == password_match::matches);
}

TEST_CASE("password check: the legacy simple scheme and simple+pbkdf2") {
  // sha1("password" + "salt"); no password_scheme means simple, as in CouchDB.
  json simple{{"salt", "salt"}, {"password_sha", "c88e9c67041a74e0357befdff93f87dde0904214"}};
  CHECK(check_couch_password(simple, "password") == password_match::matches);
  CHECK(check_couch_password(simple, "Password") == password_match::differs);
  // simple+pbkdf2: PBKDF2-HMAC-SHA1 over that hex hash, salt "salt", 3 iterations.
  json upgraded{{"password_scheme", "simple+pbkdf2"}, {"salt", "salt"}, {"iterations", 3},
                {"derived_key", "bc3ba5f313818498506153cfa32a261336f4bc9a"}};
  CHECK(check_couch_password(upgraded, "password") == password_match::matches);
  CHECK(check_couch_password(upgraded, "drowssap") == password_match::differs);
}

TEST_CASE("password check: a document without a hash couchgate understands is never taken as a match") {
  const json good{{"password_scheme", "pbkdf2"}, {"salt", "salt"}, {"iterations", 1},
                  {"derived_key", "0c60c80f961f0e71f3a9b524af6012062fe037a6"}};
  REQUIRE(check_couch_password(good, "password") == password_match::matches);
  const auto with = [&](const char* key, json v) {
    json d = good;
    if (v.is_null()) {
      d.erase(key);
    } else {
      d[key] = std::move(v);
    }
    return check_couch_password(d, "password");
  };
  CHECK(with("salt", nullptr) == password_match::unknown);
  CHECK(with("salt", 5) == password_match::unknown);
  CHECK(with("derived_key", nullptr) == password_match::unknown);
  CHECK(with("derived_key", json::array()) == password_match::unknown);
  CHECK(with("password_scheme", "bcrypt") == password_match::unknown);
  CHECK(with("password_scheme", 1) == password_match::unknown);
  CHECK(with("pbkdf2_prf", "md5") == password_match::unknown);
  CHECK(with("pbkdf2_prf", true) == password_match::unknown);
  CHECK(with("iterations", 0) == password_match::unknown);
  CHECK(with("iterations", -1) == password_match::unknown);
  CHECK(with("iterations", 1.5) == password_match::unknown);
  CHECK(with("iterations", "1") == password_match::unknown);
  CHECK(with("iterations", 3000000) == password_match::unknown);
  // A derived key of another length never matches (a truncated stored key).
  CHECK(with("derived_key", "0c60c80f961f0e71f3a9b524af6012062fe037") == password_match::differs);
  CHECK(check_couch_password(json::array(), "password") == password_match::unknown);
  CHECK(check_couch_password(json{{"name", "x"}}, "password") == password_match::unknown);
}
