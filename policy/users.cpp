// Owns: parsing `_users` documents and `_changes` rows defensively, the selection criteria and
// the per-user decision. See users.hpp.
//
// Parsing never throws: every access checks the JSON type first, and error reasons name the
// offending field but never quote a value (so password, password_sha, derived_key, salt and the
// like can never leak into logs through them).
#include "policy/users.hpp"

#include <algorithm>
#include <string>
#include <string_view>

#include "policy/naming.hpp"

namespace couchgate::policy {

namespace {

constexpr std::string_view design_prefix = "_design/";

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// Pointer to obj[key] when obj is an object holding key, else nullptr. Never throws.
const nlohmann::json* find_field(const nlohmann::json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  const auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}

bool is_true(const nlohmann::json* v) { return v != nullptr && v->is_boolean() && v->get<bool>(); }

user_doc_error make_error(std::string doc_id, std::string reason) {
  return user_doc_error{std::move(doc_id), std::move(reason)};
}

// A tombstone carries only its id: the name comes from it.
parsed_user tombstone(const std::string& doc_id) {
  auto name = user_name_from_doc_id(doc_id);
  if (!name) return make_error(doc_id, "deleted document id is not of the form org.couchdb.user:NAME");
  return user_doc{std::move(*name), {}, true};
}

// Serialized size of a document, for callers that only have the parsed JSON. Invalid UTF-8 is
// replaced rather than thrown on.
std::size_t serialized_size(const nlohmann::json& doc) {
  return doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).size();
}

bool contains(const std::vector<std::string>& list, const std::string& value) {
  return std::find(list.begin(), list.end(), value) != list.end();
}

}  // namespace

parsed_user parse_user_change(const nlohmann::json& change_row) {
  if (!change_row.is_object()) return make_error({}, "change row is not a JSON object");
  const nlohmann::json* id = find_field(change_row, "id");
  if (id == nullptr || !id->is_string()) {
    return make_error({}, "change row field 'id' is missing or not a string");
  }
  const auto& doc_id = id->get_ref<const std::string&>();
  if (starts_with(doc_id, design_prefix)) return std::monostate{};

  const nlohmann::json* doc = find_field(change_row, "doc");
  if (doc != nullptr && doc->is_null()) doc = nullptr;
  const bool deleted = is_true(find_field(change_row, "deleted")) ||
                       (doc != nullptr && is_true(find_field(*doc, "_deleted")));
  if (deleted) return tombstone(doc_id);

  if (doc == nullptr) return make_error(doc_id, "change row has no 'doc' (include_docs=true missing?)");
  if (!doc->is_object()) return make_error(doc_id, "change row field 'doc' is not a JSON object");
  const nlohmann::json* inner_id = find_field(*doc, "_id");
  if (inner_id != nullptr && inner_id->is_string() &&
      inner_id->get_ref<const std::string&>() != doc_id) {
    return make_error(doc_id, "field '_id' of 'doc' does not match the change row 'id'");
  }
  return parse_user_doc(*doc, false, serialized_size(*doc));
}

parsed_user parse_user_doc(const nlohmann::json& doc, bool deleted, std::size_t raw_size) {
  if (!doc.is_object()) return make_error({}, "document is not a JSON object");
  const nlohmann::json* id = find_field(doc, "_id");
  if (id == nullptr || !id->is_string()) return make_error({}, "field '_id' is missing or not a string");
  const auto& doc_id = id->get_ref<const std::string&>();
  if (starts_with(doc_id, design_prefix)) return std::monostate{};

  // Deletion needs only the id, so an oversized or odd tombstone body never blocks a revoke.
  if (deleted || is_true(find_field(doc, "_deleted"))) return tombstone(doc_id);

  if (raw_size > max_user_doc_bytes) {
    return make_error(doc_id, "document is " + std::to_string(raw_size) + " bytes, over the " +
                                  std::to_string(max_user_doc_bytes) + "-byte limit");
  }
  auto id_name = user_name_from_doc_id(doc_id);
  if (!id_name) return make_error(doc_id, "field '_id' is not of the form org.couchdb.user:NAME");

  const nlohmann::json* name = find_field(doc, "name");
  if (name == nullptr || !name->is_string()) {
    return make_error(doc_id, "field 'name' is missing or not a string");
  }
  const auto& name_str = name->get_ref<const std::string&>();
  if (name_str.empty()) return make_error(doc_id, "field 'name' is empty");
  if (name_str != *id_name) return make_error(doc_id, "field 'name' does not match the name in '_id'");

  // CouchDB's own rule for _users (its validate_doc_update): `type` must be the string "user";
  // missing counts as wrong, like any other value.
  const nlohmann::json* type = find_field(doc, "type");
  if (type == nullptr) return make_error(doc_id, "field 'type' is missing (must be \"user\")");
  if (!(type->is_string() && type->get_ref<const std::string&>() == "user")) {
    return make_error(doc_id, "field 'type' must be \"user\"");
  }

  user_doc out{std::move(*id_name), {}, false};
  if (const nlohmann::json* roles = find_field(doc, "roles"); roles != nullptr) {
    if (!roles->is_array()) return make_error(doc_id, "field 'roles' must be an array of strings");
    out.roles.reserve(roles->size());
    for (const auto& role : *roles) {
      if (!role.is_string()) return make_error(doc_id, "field 'roles' must be an array of strings");
      out.roles.push_back(role.get<std::string>());
    }
  }
  if (const nlohmann::json* email = find_field(doc, "email"); email != nullptr && email->is_string()) {
    out.email = email->get<std::string>();
  }
  if (const nlohmann::json* intent = find_field(doc, "couchgate_intent"); intent != nullptr && intent->is_string()) {
    out.intent = intent->get<std::string>();
  }
  return out;
}

bool matches(const criteria& c, const user_doc& u) {
  if (!c.names.empty() && !contains(c.names, u.name)) return false;
  if (!c.roles_any.empty() &&
      std::none_of(c.roles_any.begin(), c.roles_any.end(),
                   [&](const std::string& r) { return contains(u.roles, r); })) {
    return false;
  }
  if (!std::all_of(c.roles_all.begin(), c.roles_all.end(),
                   [&](const std::string& r) { return contains(u.roles, r); })) {
    return false;
  }
  return std::none_of(c.roles_none.begin(), c.roles_none.end(),
                      [&](const std::string& r) { return contains(u.roles, r); });
}

user_action decide(const criteria& c, on_delete policy, const user_doc& u) {
  if (!u.deleted) return matches(c, u) ? user_action::ensure : user_action::revoke_owner;
  return policy == on_delete::keep ? user_action::revoke_owner : user_action::delete_db;
}

std::optional<session_user> parse_session_answer(const nlohmann::json& body) {
  if (!body.is_object()) return std::nullopt;
  const auto ctx = body.find("userCtx");
  if (ctx == body.end() || !ctx->is_object()) return std::nullopt;
  const auto name = ctx->find("name");
  if (name == ctx->end() || !name->is_string() || name->get_ref<const std::string&>().empty()) return std::nullopt;
  session_user out;
  out.name = name->get<std::string>();
  if (const auto roles = ctx->find("roles"); roles != ctx->end() && roles->is_array()) {
    for (const auto& r : *roles) {
      if (r.is_string()) out.roles.push_back(r.get<std::string>());
    }
  }
  if (const auto info = body.find("info"); info != body.end() && info->is_object()) {
    if (const auto how = info->find("authenticated"); how != info->end() && how->is_string()) {
      out.authenticated = how->get<std::string>();
    }
  }
  return out;
}

token_user_action decide_token_user(const session_user& s, const criteria& select, bool has_user_doc, bool db_exists) {
  if (s.authenticated != "jwt" || s.name.empty()) return token_user_action::not_token;
  if (has_user_doc) return token_user_action::has_user_doc;
  if (db_exists) return token_user_action::db_exists;
  if (!matches(select, user_doc{s.name, s.roles, false})) return token_user_action::not_selected;
  return token_user_action::provision;
}

}  // namespace couchgate::policy
