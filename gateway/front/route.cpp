// Owns: path normalisation and routing (see route.hpp).
#include "gateway/front/route.hpp"

#include <optional>
#include <vector>

namespace couchgate::gateway::front {
namespace {



route bad_request(std::string reason) {
  route r;
  r.kind = route_kind::bad_request;
  r.reason = std::move(reason);
  r.label = "other";
  return r;
}

route not_found(std::string reason) {
  route r;
  r.kind = route_kind::not_found;
  r.reason = std::move(reason);
  r.label = "other";
  return r;
}

// Why a segment (raw, percent-encoded) is refused, or "" when it is fine.
std::string segment_problem(std::string_view raw) {
  const auto decoded = percent_decode(raw);
  if (!decoded) return "invalid percent-encoding in the path";
  for (const char c : *decoded) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) return "control characters in the path";
    if (c == '\\') return "backslashes in the path";
  }
  // A decoded '/' splits the segment for any server or proxy that decodes before splitting.
  std::size_t start = 0;
  for (;;) {
    const std::size_t end = decoded->find('/', start);
    const std::string_view piece = std::string_view(*decoded).substr(start, end == std::string::npos ? std::string::npos : end - start);
    if (piece == "." || piece == "..") return "'.' and '..' path segments are not allowed";
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return {};
}

// Whether a raw (percent-encoded) segment is `name` as CouchDB reads it.
bool decodes_to(std::string_view raw, std::string_view name) {
  const auto decoded = percent_decode(raw);
  return decoded && *decoded == name;
}

bool is_one_of(std::string_view method, std::initializer_list<std::string_view> methods) {
  for (const auto m : methods) {
    if (method == m) return true;
  }
  return false;
}

}  // namespace


std::optional<std::string> query_param(std::string_view query, std::string_view key) {
  if (!query.empty() && query.front() == '?') query.remove_prefix(1);
  while (!query.empty()) {
    const std::size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    const std::size_t eq = pair.find('=');
    if (pair.substr(0, eq) != key) continue;
    std::string value(eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1));
    for (auto& c : value) {
      if (c == '+') c = ' ';
    }
    return percent_decode(value);
  }
  return std::nullopt;
}

route route_request(std::string_view method, std::string_view target, bool shared_enabled) {
  if (target.empty() || target[0] != '/') {
    return bad_request("the request target must be a path starting with '/' (absolute URLs are not accepted)");
  }
  for (const char c : target) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f) return bad_request("the request target must be printable ASCII");
    if (c == '\\') return bad_request("backslashes in the path");
    if (c == '#') return bad_request("fragments are not sent to servers");
  }
  const std::size_t qpos = target.find('?');
  const std::string_view path = target.substr(0, qpos);
  const std::string query(qpos == std::string_view::npos ? std::string_view{} : target.substr(qpos));

  std::vector<std::string_view> segments;
  for (std::size_t start = 1;;) {
    const std::size_t end = path.find('/', start);
    segments.push_back(path.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  for (std::size_t i = 0; i < segments.size(); ++i) {
    const bool last = i + 1 == segments.size();
    if (segments[i].empty() && !last) return bad_request("empty path segments ('//') are not allowed");
    if (const std::string why = segment_problem(segments[i]); !why.empty()) return bad_request(why);
  }

  const std::string_view first = segments[0];
  const bool preflight = method == "OPTIONS";
  const auto pass = [&](std::string label, std::initializer_list<std::string_view> methods) {
    route r;
    if (preflight) {
      r.kind = route_kind::preflight;
      r.target = std::string(path) + query;
      r.label = "preflight";
      return r;
    }
    if (!is_one_of(method, methods)) return not_found("method " + std::string(method) + " is not served on " + std::string(path));
    r.kind = route_kind::pass_through;
    r.target = std::string(path) + query;
    r.label = std::move(label);
    return r;
  };
  if (segments.size() == 1 && first.empty()) return pass("root", {"GET", "HEAD"});
  if (segments.size() == 1 && first == "_session") return pass("session", {"GET", "HEAD", "POST", "DELETE"});
  if (segments.size() == 1 && first == "_uuids") return pass("uuids", {"GET", "HEAD"});
  // Sign-up and identities, answered by couchgate itself.
  const auto local = [&](std::string label, std::initializer_list<std::string_view> methods) {
    route r = pass(std::move(label), methods);
    if (r.kind == route_kind::pass_through) r.kind = route_kind::local;
    return r;
  };
  if (segments.size() == 1 && first == "_signup") return local("signup", {"POST"});
  if (segments.size() == 2 && first == "_signup" && segments[1] == "available") return local("signup", {"GET"});
  if (segments.size() == 2 && first == "_identity" && (segments[1] == "email" || segments[1] == "name")) {
    return local("identity", {"PUT"});
  }

  const bool me = first == "me";
  const bool shared = first == "shared" && shared_enabled;
  if (!me && !shared) {
    return not_found("couchgate serves /me, /shared, /_session, /_uuids and / only");
  }
  for (std::size_t i = 1; i < segments.size(); ++i) {
    // Rewrite handlers may route a request to another database: not served through the front door.
    // Compared decoded, as CouchDB dispatches ("%5Frewrite" is "_rewrite" to it).
    if (decodes_to(segments[i], "_rewrite")) return not_found("_rewrite is not served through couchgate");
  }
  route r;
  r.rest = std::string(path.substr(first.size() + 1));
  r.query = query;
  if (preflight) {
    r.kind = route_kind::preflight;
    // CouchDB answers a CORS preflight before routing: any path will do. (Appended: GCC 12 at
    // -O3 reports a false -Wrestrict on assigning the literal here, and CI builds with -Werror.)
    r.target.push_back('/');
    r.label = "preflight";
    return r;
  }
  r.kind = me ? route_kind::user_db : route_kind::shared_db;
  r.label = me ? "me" : "shared";
  return r;
}

std::string_view couch_method(std::string_view method, std::string_view override_header) {
  if (method != "POST" || override_header.empty()) return method;
  for (const std::string_view m : {"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE", "CONNECT", "COPY"}) {
    if (override_header == m) return m;
  }
  return method;
}

bool is_changes_path(std::string_view rest) {
  if (rest.empty() || rest.front() != '/') return false;
  rest.remove_prefix(1);
  return rest.find('/') == std::string_view::npos && decodes_to(rest, "_changes");
}

bool may_add_changes(std::string_view method, std::string_view rest) {
  if (!rest.empty() && rest.front() == '/') rest.remove_prefix(1);
  // The path's segments, decoded one by one (a document id may hold an encoded '/': CouchDB
  // reads "_design%2Fx" as "_design/x").
  std::vector<std::string> parts;
  while (!rest.empty()) {
    const auto slash = rest.find('/');
    auto decoded = percent_decode(rest.substr(0, slash));
    if (!decoded) return false;
    parts.push_back(std::move(*decoded));
    rest = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash + 1);
  }
  if (!parts.empty() && parts[0].starts_with("_design/")) {  // "_design%2Fx[/att]"
    auto name = parts[0].substr(8);
    parts[0] = "_design";
    parts.insert(parts.begin() + 1, std::move(name));
  }
  // A document or design document: PUT, DELETE, COPY, or POST (a multipart/form-data upload).
  const bool writes = is_one_of(method, {"PUT", "DELETE", "COPY", "POST"});
  if (parts.empty()) return method == "POST";
  const std::string& first = parts[0];
  // (A purge gives the revisions it leaves of a document new rows.)
  if (first == "_bulk_docs" || first == "_purge") return parts.size() == 1 && method == "POST";
  if (first == "_index") {
    // POST _index writes a design document; DELETE _index/<ddoc>/json/<name> and POST
    // _index/_bulk_delete delete them.
    if (parts.size() == 1) return method == "POST";
    return method == "DELETE" || (parts.size() == 2 && parts[1] == "_bulk_delete" && method == "POST");
  }
  if (first == "_design") {
    if (parts.size() < 2 || parts[1].empty()) return false;
    if (parts.size() == 2) return writes;  // the design document
    if (parts[2] == "_update") return is_one_of(method, {"PUT", "POST"});
    return !parts[2].starts_with('_') && is_one_of(method, {"PUT", "DELETE"});  // an attachment
  }
  if (first.empty() || first.starts_with('_')) return false;  // _local/, _all_docs, _find, _changes, ...
  if (parts.size() == 1) return writes;              // a document
  return is_one_of(method, {"PUT", "DELETE"});       // one of its attachments
}

std::string encode_db_name(std::string_view db) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  for (const char c : db) {
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-') {
      out += c;
    } else {
      const auto u = static_cast<unsigned char>(c);
      out += '%';
      out += hex[u >> 4];
      out += hex[u & 15];
    }
  }
  return out;
}

namespace {
// "/" + segment, built by appending: GCC 12 at -O3 reports a false -Wrestrict on
// `"/" + std::string` (const char* + rvalue string inlines an insert at position 0).
std::string slash(std::string_view segment) {
  std::string out;
  out.reserve(segment.size() + 1);
  out.push_back('/');
  out.append(segment);
  return out;
}
}  // namespace

std::string db_target(std::string_view db, const route& r) { return slash(encode_db_name(db)) + r.rest + r.query; }

std::string rewrite_location(std::string_view location, std::string_view db, std::string_view mount,
                             std::string_view client_base) {
  std::size_t path_start = 0;
  if (const std::size_t scheme = location.find("://"); scheme != std::string_view::npos) {
    path_start = location.find('/', scheme + 3);
    if (path_start == std::string_view::npos) return std::string(location);
  }
  const std::string_view path = location.substr(path_start);
  for (const std::string& name : {slash(encode_db_name(db)), slash(db)}) {
    if (path.starts_with(name) && (path.size() == name.size() || path[name.size()] == '/' || path[name.size()] == '?')) {
      return std::string(client_base) + std::string(mount) + std::string(path.substr(name.size()));
    }
  }
  return std::string(location);
}

}  // namespace couchgate::gateway::front
