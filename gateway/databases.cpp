// Owns: creating and guarding the central and shared databases (see databases.hpp).
#include "gateway/databases.hpp"

#include "policy/security.hpp"
#include "replicator/wire_json.hpp"

namespace couchgate::gateway {

using replicator::couch_error_kind;
using replicator::json;

json central_guard_ddoc() {
  return json{{"_id", "_design/couchgate"},
              {"language", "javascript"},
              {"validate_doc_update",
               "function (newDoc, oldDoc, userCtx) {\n"
               "  if ((userCtx.roles || []).indexOf('_admin') === -1) {\n"
               "    throw({forbidden: 'the couchgate central database is written by couchgate only'});\n"
               "  }\n"
               "}"}};
}

namespace {
std::optional<replicator::couch_error> ensure_db(replicator::couch_client& client, const std::string& db,
                                                 const json& security) {
  auto created = client.create_db(db).get();
  if (!created.ok() && created.error().kind != couch_error_kind::conflict) return created.error();
  auto current = client.get_security(db).get();
  if (!current.ok()) return current.error();
  if (!policy::security_equal(current.value(), security)) {
    auto put = client.put_security(db, security).get();
    if (!put.ok()) return put.error();
  }
  return std::nullopt;
}
}  // namespace

std::optional<replicator::couch_error> ensure_private_db(replicator::couch_client& client, const std::string& db) {
  return ensure_db(client, db, policy::render_admin_only_security());
}

std::optional<replicator::couch_error> ensure_central_db(replicator::couch_client& client, const std::string& db,
                                                         bool guard) {
  if (auto e = ensure_db(client, db, policy::render_admin_only_security())) return e;
  json want = central_guard_ddoc();
  const std::string id = want["_id"].get<std::string>();
  auto current = client.get_doc(db, id).get();
  if (!current.ok() && current.error().kind != couch_error_kind::not_found) return current.error();
  if (!guard) {
    if (!current.ok()) return std::nullopt;
    auto gone = client.delete_doc(db, id, replicator::wire::get_string(current.value(), "_rev").value_or("")).get();
    if (!gone.ok() && gone.error().kind != couch_error_kind::not_found && gone.error().kind != couch_error_kind::conflict) {
      return gone.error();
    }
    return std::nullopt;
  }
  if (current.ok()) {
    if (replicator::wire::get_string(current.value(), "validate_doc_update") == want["validate_doc_update"].get<std::string>()) {
      return std::nullopt;
    }
    want["_rev"] = current.value()["_rev"];
  }
  auto put = client.put_doc(db, id, want).get();
  if (!put.ok() && put.error().kind != couch_error_kind::conflict) return put.error();
  return std::nullopt;
}

std::optional<replicator::couch_error> ensure_shared_db(replicator::couch_client& client, const std::string& db,
                                                        const std::vector<std::string>& member_roles,
                                                        const std::vector<std::string>& admin_roles) {
  return ensure_db(client, db, policy::render_shared_security(member_roles, admin_roles));
}

}  // namespace couchgate::gateway
