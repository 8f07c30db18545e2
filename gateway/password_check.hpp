#pragma once
// Owns: checking a password against the hash CouchDB keeps in a `_users` document, the way
// CouchDB's own authentication does (couch_httpd_auth: schemes `simple`, `pbkdf2` and
// `simple+pbkdf2`; `pbkdf2_prf` sha, sha224, sha256, sha384 or sha512, sha when absent;
// `iterations`, 10 000 when absent; the salt used as the text it is in the document; the key as
// long as the digest, compared as lowercase hex). No I/O: the caller reads the document.
//
// Used where couchgate must know whether a request carries the password a user already has
// without asking CouchDB's `_session` (a failed try there counts towards CouchDB's lockout of
// the account and reads as couchgate's own credential being refused): a repeated sign-up.
// The password is never stored, logged or kept beyond the call.
#include <cstdint>
#include <string_view>

#include <nlohmann/json.hpp>

namespace couchgate::gateway {

enum class password_match {
  matches,
  differs,
  unknown,  // no hash couchgate understands (no password, another scheme, malformed fields,
            // an iteration count above max_iterations): treated as "not shown to match"
};

// `max_iterations` bounds the work one check may cost (a document may name any count).
password_match check_couch_password(const nlohmann::json& user_doc, std::string_view password,
                                    std::uint64_t max_iterations = 2'000'000);

}  // namespace couchgate::gateway
