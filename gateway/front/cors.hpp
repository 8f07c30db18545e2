#pragma once
// Owns: the CORS headers of the answers couchgate writes itself (its 404s, refusals, local
// routes) and of preflight requests, decided exactly as CouchDB 3.x's chttpd_cors decides them
// from its [cors] section (front.cors mirrors it), so a browser sees the same headers whether
// couchgate or CouchDB answered. Forwarded answers keep CouchDB's own headers. Pure functions.
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gateway/front/front_config.hpp"

namespace couchgate::gateway::front {

using cors_headers = std::vector<std::pair<std::string, std::string>>;

// front.cors with CouchDB's defaults filled in (methods, headers lower-cased).
struct cors_policy {
  bool enable = false;
  std::vector<std::string> origins;
  bool credentials = false;
  std::vector<std::string> methods;
  std::vector<std::string> headers;
  long long max_age = 600;
};
cors_policy make_cors_policy(const front_cors_config& cfg);

// What of a request CORS looks at (absent headers are nullopt).
struct cors_request {
  std::string method;
  std::optional<std::string> origin;
  std::optional<std::string> request_method;   // Access-Control-Request-Method
  std::optional<std::string> request_headers;  // Access-Control-Request-Headers
};

// A preflight CouchDB would answer (204 with these headers); nullopt when it would not (no
// CORS, not OPTIONS, no or unlisted Origin, method or headers not allowed): then the request is
// handled like any other.
std::optional<cors_headers> cors_preflight(const cors_policy& policy, const cors_request& request);

// The headers to add to an answer couchgate writes itself, whose own header names are
// `answer_header_names` (Content-Type, Cache-Control, ...): Access-Control-Allow-Origin,
// -Allow-Credentials and -Expose-Headers, or nothing when CORS is off or the origin not listed.
cors_headers cors_answer_headers(const cors_policy& policy, const std::optional<std::string>& origin,
                                 const std::vector<std::string>& answer_header_names);

}  // namespace couchgate::gateway::front
