// Owns: document id <-> central id mapping. See id_map.hpp.
//
// Token grammar (what owner_token produces, and the only thing owner_from_token accepts):
//   user token   = the name with every '%' -> "%25", every ':' -> "%3A", and a leading '_' ->
//                  "%5F" (uppercase hex). Non-canonical spellings ("%3a", "a%5Fb", "%41") are
//                  rejected so that each owner has exactly one token.
//   shared token = "%shared". In a user token '%' is always followed by two hex digits, so
//                  "%shared" ('%' followed by "sh") can never be an escaped user name.
// Tokens never contain a raw ':' and never start with '_', so a central id "<token>:<doc id>"
// splits unambiguously at its first ':' and is never a CouchDB design/local/special id.
#include "policy/id_map.hpp"

namespace couchgate::policy {

namespace {

constexpr std::string_view shared_token = "%shared";
constexpr std::string_view local_prefix = "_local/";
constexpr std::string_view design_prefix = "_design/";

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

}  // namespace

bool is_design_id(std::string_view doc_id) { return starts_with(doc_id, design_prefix); }

std::string owner_token(const owner& o) {
  if (o.what == owner::kind::shared) return std::string(shared_token);
  std::string out;
  out.reserve(o.name.size() + 4);
  for (std::size_t i = 0; i < o.name.size(); ++i) {
    const char c = o.name[i];
    if (c == '%') {
      out += "%25";
    } else if (c == ':') {
      out += "%3A";
    } else if (c == '_' && i == 0) {
      out += "%5F";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::optional<owner> owner_from_token(std::string_view token) {
  if (token == shared_token) return owner{owner::kind::shared, {}};
  if (token.empty()) return std::nullopt;  // no user has an empty name
  std::string name;
  name.reserve(token.size());
  for (std::size_t i = 0; i < token.size(); ++i) {
    const char c = token[i];
    if (c == ':') return std::nullopt;
    if (c == '_' && i == 0) return std::nullopt;
    if (c != '%') {
      name.push_back(c);
      continue;
    }
    if (token.size() - i < 3) return std::nullopt;
    const std::string_view esc = token.substr(i + 1, 2);
    if (esc == "25") {
      name.push_back('%');
    } else if (esc == "3A") {
      name.push_back(':');
    } else if (esc == "5F" && i == 0) {
      name.push_back('_');
    } else {
      return std::nullopt;
    }
    i += 2;
  }
  return owner{owner::kind::user, std::move(name)};
}

std::optional<std::string> to_central_id(id_mode mode, const owner& o, std::string_view doc_id) {
  // Empty ids are not CouchDB documents, and from_central_id could not map them back.
  if (doc_id.empty() || starts_with(doc_id, local_prefix)) return std::nullopt;
  if (mode == id_mode::unchanged) {
    if (is_design_id(doc_id)) return std::nullopt;
    return std::string(doc_id);
  }
  std::string out = owner_token(o);
  out += ':';
  out += doc_id;
  return out;
}

std::optional<central_ref> from_central_id(std::string_view central_id) {
  if (central_id.empty() || central_id.front() == '_') return std::nullopt;
  const auto colon = central_id.find(':');
  if (colon == std::string_view::npos) return std::nullopt;
  const std::string_view doc_id = central_id.substr(colon + 1);
  // to_central_id never produces an empty doc id or a `_local/` one.
  if (doc_id.empty() || starts_with(doc_id, local_prefix)) return std::nullopt;
  auto who = owner_from_token(central_id.substr(0, colon));
  if (!who) return std::nullopt;
  return central_ref{std::move(*who), std::string(doc_id)};
}

// _all_docs is ordered by raw byte comparison of ids. Every central id of owner o starts with
// token + ":", and the strings in [token + ":", token + ";") are exactly those starting with
// token + ":" (';' is ':' + 1). No other owner's ids fall inside: their token differs and
// contains no raw ':'. The end is exclusive: query with inclusive_end=false (no central id equals
// token + ";" anyway, since it has no ':').
std::string central_range_start(const owner& o) { return owner_token(o) + ":"; }

std::string central_range_end(const owner& o) { return owner_token(o) + ";"; }

}  // namespace couchgate::policy
