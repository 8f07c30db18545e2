#pragma once
// Owns: how user names map to database names and `_users` document ids.
// The default is couch_peruser's rule (prefix + lowercase hex of the UTF-8 name) so that
// PouchDB clients that compute their database name keep working.
#include <optional>
#include <string>
#include <string_view>

namespace couchgate::policy {

// CouchDB's longest legal database name.
inline constexpr std::size_t max_db_name_length = 238;
inline constexpr std::string_view user_doc_prefix = "org.couchdb.user:";

std::string hex_encode(std::string_view bytes);                       // lowercase hex
std::optional<std::string> hex_decode(std::string_view hex);          // nullopt unless even-length [0-9a-f]*

// prefix + hex(name). When that would exceed max_db_name_length, the name becomes
// prefix + the hex that fits + "-" + sha256-hex(name): still unique and stable, but not
// computable by a client (documented in README). hex never contains '-', so the two forms
// cannot collide.
std::string user_db_name(std::string_view prefix, std::string_view user_name);
// The user a database belongs to, when its name is prefix + pure hex. nullopt for the hashed
// long form and for names without the prefix.
std::optional<std::string> user_from_db_name(std::string_view prefix, std::string_view db_name);

// CouchDB's rule: ^[a-z][a-z0-9_$()+/-]*$ and at most max_db_name_length characters.
bool is_valid_db_name(std::string_view name);

std::string user_doc_id(std::string_view user_name);
std::optional<std::string> user_name_from_doc_id(std::string_view doc_id);

std::string sha256_hex(std::string_view bytes);

}  // namespace couchgate::policy
