// Owns: CouchDB's CORS decisions for couchgate's own answers (see cors.hpp). Follows
// src/chttpd/src/chttpd_cors.erl and chttpd_cors.hrl of CouchDB 3.x, step by step.
#include "gateway/front/cors.hpp"

#include <algorithm>

#include "replicator/transport/header_text.hpp"

namespace couchgate::gateway::front {
namespace {

// chttpd_cors.hrl, and couchgate's own: a sign-up's Idempotency-Key
const std::vector<std::string> default_headers{
    "idempotency-key",
    "accept",        "accept-language",     "authorization",    "content-length",
    "content-range", "content-type",        "destination",      "expires",
    "if-match",      "last-modified",       "origin",           "pragma",
    "x-couch-full-commit", "x-couch-id",    "x-couch-persist",  "x-couchdb-www-authenticate",
    "x-http-method-override", "x-requested-with", "x-couchdb-vhost-path"};
const std::vector<std::string> default_methods{"CONNECT", "COPY", "DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT", "TRACE"};
const std::vector<std::string> simple_headers{"cache-control", "content-language", "content-type",
                                              "expires",       "last-modified",    "pragma"};
const std::vector<std::string> couch_headers{"accept-ranges",      "etag", "server", "x-couch-request-id",
                                             "x-couch-update-newrev", "x-couchdb-body-time"};

bool contains(const std::vector<std::string>& list, std::string_view value) {
  return std::find(list.begin(), list.end(), value) != list.end();
}

std::string join(const std::vector<std::string>& list) {
  std::string out;
  for (const auto& item : list) {
    if (!out.empty()) out += ", ";
    out += item;
  }
  return out;
}

// The origin is listed (case-sensitive) or every origin is ("*").
bool origin_accepted(const cors_policy& p, std::string_view origin) {
  return contains(p.origins, "*") || contains(p.origins, origin);
}

// maybe_add_credentials: never for the literal origin "*".
void add_credentials(const cors_policy& p, std::string_view origin, cors_headers& h) {
  if (p.credentials && origin != "*") h.emplace_back("Access-Control-Allow-Credentials", "true");
}

// split_headers: "," followed by any whitespace; trailing empty items dropped.
std::vector<std::string> split_headers(std::string_view s) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while (pos <= s.size()) {
    std::size_t comma = s.find(',', pos);
    if (comma == std::string_view::npos) comma = s.size();
    out.emplace_back(s.substr(pos, comma - pos));
    pos = comma + 1;
    while (pos < s.size() && std::isspace(static_cast<unsigned char>(s[pos]))) ++pos;
  }
  while (!out.empty() && out.back().empty()) out.pop_back();
  return out;
}

}  // namespace

cors_policy make_cors_policy(const front_cors_config& cfg) {
  cors_policy p;
  p.enable = cfg.enable;
  p.origins = cfg.origins;
  p.credentials = cfg.credentials;
  p.methods = cfg.methods.empty() ? default_methods : cfg.methods;
  if (cfg.headers.empty()) {
    p.headers = default_headers;
  } else {
    for (const auto& h : cfg.headers) p.headers.push_back(replicator::lower_ascii(h));
  }
  p.max_age = cfg.max_age;
  return p;
}

std::optional<cors_headers> cors_preflight(const cors_policy& p, const cors_request& r) {
  if (r.method != "OPTIONS" || !p.enable || !r.origin) return std::nullopt;
  const std::string& origin = *r.origin;
  if (!origin_accepted(p, origin) || !r.request_method) return std::nullopt;
  if (!contains(p.methods, *r.request_method)) return std::nullopt;
  std::string requested;  // echoed as sent
  if (r.request_headers && !r.request_headers->empty()) {
    requested = *r.request_headers;
    for (const auto& h : split_headers(requested)) {
      if (!contains(p.headers, replicator::lower_ascii(h))) return std::nullopt;
    }
  }
  cors_headers h{{"Access-Control-Allow-Origin", origin},
                 {"Access-Control-Max-Age", std::to_string(p.max_age)},
                 {"Access-Control-Allow-Methods", join(p.methods)}};
  add_credentials(p, origin, h);
  h.emplace_back("Access-Control-Allow-Headers", requested);
  return h;
}

cors_headers cors_answer_headers(const cors_policy& p, const std::optional<std::string>& origin,
                                 const std::vector<std::string>& answer_header_names) {
  if (!p.enable || !origin || p.origins.empty() || !origin_accepted(p, *origin)) return {};
  cors_headers h{{"Access-Control-Allow-Origin", *origin}};
  add_credentials(p, *origin, h);
  // maybe_apply_headers: the answer's simple headers are exposed, content-type always and first,
  // then CouchDB's own headers.
  std::vector<std::string> exposed{"content-type"};
  for (const auto& name : answer_header_names) {
    const std::string n = replicator::lower_ascii(name);
    if (n != "content-type" && contains(simple_headers, n)) exposed.push_back(n);
  }
  exposed.insert(exposed.end(), couch_headers.begin(), couch_headers.end());
  h.emplace_back("Access-Control-Expose-Headers", join(exposed));
  return h;
}

}  // namespace couchgate::gateway::front
