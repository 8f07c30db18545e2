#pragma once
// Owns: what a `_users` document means to couchgate: parsing it defensively (server answers are
// untrusted input), the selection criteria, and the decision of what to do for it.
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace couchgate::policy {

struct user_doc {
  std::string name;
  std::vector<std::string> roles;
  bool deleted = false;  // a tombstone: only the name (from the id) is known
  std::string email;     // the `email` field as written (empty when absent or not a string)
  std::string intent;  // `couchgate_intent`: the sign-up or address change that made or last changed it; "" when none
  bool from_intent() const { return !intent.empty(); }
};

struct user_doc_error {
  std::string doc_id;   // may be empty when even the id is missing
  std::string reason;   // one line, names what is wrong, never contains the password fields
};

inline constexpr std::size_t max_user_doc_bytes = 64 * 1024;

// A `_changes` row (with include_docs) or a bare document. Design docs are not users:
// parse_user_change returns std::monostate for them.
using parsed_user = std::variant<std::monostate, user_doc, user_doc_error>;
parsed_user parse_user_change(const nlohmann::json& change_row);
parsed_user parse_user_doc(const nlohmann::json& doc, bool deleted, std::size_t raw_size);

struct criteria {
  std::vector<std::string> roles_any;   // empty = no requirement
  std::vector<std::string> roles_all;
  std::vector<std::string> roles_none;
  std::vector<std::string> names;       // explicit allow-list; empty = everyone
  bool operator==(const criteria&) const = default;
};
bool matches(const criteria& c, const user_doc& u);

// What happens to a deleted user's database. keep: it stays, owner removed from _security.
// A user who merely stops matching the criteria (a role taken away, say) is always handled as
// keep: a roles edit must never destroy data.
enum class on_delete { keep, remove };

enum class user_action {
  ensure,        // database exists, _security = template with owner
  revoke_owner,  // database (if any) keeps data, _security = template without owner
  delete_db,     // database is deleted
};
user_action decide(const criteria& c, on_delete policy, const user_doc& u);

// What CouchDB's GET /_session says about a caller: userCtx.name and .roles, and
// info.authenticated (the handler that accepted the credential: "cookie", "default", "jwt"...).
struct session_user {
  std::string name;
  std::vector<std::string> roles;
  std::string authenticated;
  bool operator==(const session_user&) const = default;
};
// nullopt when the answer names no user (anonymous, or not the expected shape: untrusted input).
std::optional<session_user> parse_session_answer(const nlohmann::json& body);

// A caller CouchDB authenticated by a JWT (its jwt_authentication handler needs no `_users`
// document) gets a database from the policy, as a `_users` document with the token's roles
// would, before the request is forwarded. Anyone else's database is the provisioner's business.
enum class token_user_action {
  not_token,      // not authenticated by a JWT
  has_user_doc,   // the provisioner follows `_users` for this one
  db_exists,      // nothing to do
  not_selected,   // the policy's selection does not take this user (with the token's roles)
  provision,      // create the database with the policy's `_security`, owner = the user
};
token_user_action decide_token_user(const session_user& s, const criteria& select, bool has_user_doc, bool db_exists);

}  // namespace couchgate::policy
