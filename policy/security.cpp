// Owns: rendering `_security` objects and comparing them as sets. See security.hpp.
#include "policy/security.hpp"

#include <algorithm>
#include <array>
#include <set>

namespace couchgate::policy {

namespace {

std::vector<std::string> sorted_unique(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

nlohmann::json section(std::vector<std::string> names, std::vector<std::string> roles) {
  return nlohmann::json{{"names", sorted_unique(std::move(names))},
                        {"roles", sorted_unique(std::move(roles))}};
}

nlohmann::json security(nlohmann::json admins, nlohmann::json members) {
  return nlohmann::json{{"admins", std::move(admins)}, {"members", std::move(members)}};
}

// admins.names, admins.roles, members.names, members.roles
using security_sets = std::array<std::set<std::string>, 4>;

// Missing sections and lists count as empty; any other type anywhere makes the object malformed.
bool read_list(const nlohmann::json& sec, const char* key, std::set<std::string>& out) {
  const auto it = sec.find(key);
  if (it == sec.end()) return true;
  if (!it->is_array()) return false;
  for (const auto& v : *it) {
    if (!v.is_string()) return false;
    out.insert(v.get<std::string>());
  }
  return true;
}

bool read_section(const nlohmann::json& obj, const char* key, std::set<std::string>& names,
                  std::set<std::string>& roles) {
  const auto it = obj.find(key);
  if (it == obj.end()) return true;
  if (!it->is_object()) return false;
  return read_list(*it, "names", names) && read_list(*it, "roles", roles);
}

std::optional<security_sets> read_security(const nlohmann::json& j) {
  if (!j.is_object()) return std::nullopt;
  security_sets s;
  if (!read_section(j, "admins", s[0], s[1]) || !read_section(j, "members", s[2], s[3])) {
    return std::nullopt;
  }
  return s;
}

}  // namespace

nlohmann::json render_security(const security_template& t, std::optional<std::string_view> owner) {
  std::vector<std::string> member_names = t.member_names;
  std::vector<std::string> admin_names = t.admin_names;
  std::vector<std::string> member_roles = t.member_roles;
  if (owner) {
    member_names.emplace_back(*owner);
    if (t.owner_is_admin) admin_names.emplace_back(*owner);
  }
  // No member at all makes a CouchDB database public (anyone may read it, anonymous callers
  // included): a database whose owner was taken out (revoked) stays closed to all but server
  // admins, as CouchDB's own default for new databases (`_admin` as the member role).
  if (member_names.empty() && member_roles.empty()) member_roles.emplace_back("_admin");
  return security(section(std::move(admin_names), t.admin_roles),
                  section(std::move(member_names), std::move(member_roles)));
}

nlohmann::json render_shared_security(const std::vector<std::string>& member_roles,
                                      const std::vector<std::string>& admin_roles) {
  return security(section({}, admin_roles), section({}, member_roles));
}

nlohmann::json render_admin_only_security() {
  return security(section({}, {"_admin"}), section({}, {"_admin"}));
}

bool security_equal(const nlohmann::json& a, const nlohmann::json& b) {
  const auto sa = read_security(a);
  if (!sa) return false;
  const auto sb = read_security(b);
  return sb && *sa == *sb;
}

}  // namespace couchgate::policy
