#pragma once
// Owns: the mapping between document ids in user (and shared) databases and ids in the central
// database. Namespaced ids are "<owner>:<doc id>" where <owner> is the user name with '%', ':'
// and a leading '_' percent-encoded, or "%shared" for the shared database. The owner is
// recoverable from the central id alone; a user's "_design/x" becomes "alice:_design/x", which
// CouchDB treats as plain data, never as a design document.
#include <optional>
#include <string>
#include <string_view>

namespace couchgate::policy {

enum class id_mode { namespaced, unchanged };

struct owner {
  enum class kind { user, shared };
  kind what = kind::user;
  std::string name;  // user name; empty for shared
  bool operator==(const owner&) const = default;
};

// "alice" -> "alice", "a:b" -> "a%3Ab", "_x" -> "%5Fx"; shared -> "%shared".
std::string owner_token(const owner& o);
std::optional<owner> owner_from_token(std::string_view token);

// A design document's id ("_design/…"): code the server runs, not data.
bool is_design_id(std::string_view doc_id);

// nullopt when the document must not reach the central database: `_local/…` always, and
// `_design/…` in unchanged mode.
std::optional<std::string> to_central_id(id_mode mode, const owner& o, std::string_view doc_id);

struct central_ref {
  owner who;
  std::string doc_id;
};
// Reverse of to_central_id in namespaced mode. nullopt for ids not made by it (e.g. the central
// database's own design documents).
std::optional<central_ref> from_central_id(std::string_view central_id);

// Key range [start, end) covering every central id of this owner, for _all_docs range scans.
std::string central_range_start(const owner& o);
std::string central_range_end(const owner& o);

}  // namespace couchgate::policy
