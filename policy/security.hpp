#pragma once
// Owns: the `_security` object couchgate writes for user, shared and central databases, and
// the comparison that decides whether a write is needed.
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace couchgate::policy {

struct security_template {
  bool owner_is_admin = false;            // couch_peruser's delete_dbs-era behaviour: owner also db admin
  std::vector<std::string> member_names;  // extra member names
  std::vector<std::string> member_roles;  // friends, support
  std::vector<std::string> admin_names;
  std::vector<std::string> admin_roles;   // moderators
  bool operator==(const security_template&) const = default;
};

// {"admins":{"names":[...],"roles":[...]},"members":{"names":[...],"roles":[...]}} with lists
// sorted and de-duplicated. owner == nullopt renders the template without the owner.
nlohmann::json render_security(const security_template& t, std::optional<std::string_view> owner);

// Shared database: members are the given roles; admins as the template.
nlohmann::json render_shared_security(const std::vector<std::string>& member_roles,
                                      const std::vector<std::string>& admin_roles);
// Central database: only server admins may read (members.roles = ["_admin"]).
nlohmann::json render_admin_only_security();

// Equal as sets, ignoring order, duplicates and fields other than admins/members names/roles.
// A malformed object (wrong types) is never equal to a well-formed one.
bool security_equal(const nlohmann::json& a, const nlohmann::json& b);

}  // namespace couchgate::policy
