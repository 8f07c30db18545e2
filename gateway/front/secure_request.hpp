#pragma once
// Owns: the decision whether a request arrived securely, and whether it may be served. Pure.
// Secure = over the listener's own TLS, or from a trusted proxy (front.trusted_proxies) whose
// scheme header (front.scheme_header) says https. The header from any other peer is ignored,
// and a missing header counts as not secure. An insecure request is served only with
// front.allow_insecure (and never with front.require_secure); otherwise it is refused before
// anything, its credentials included, is forwarded.
#include <optional>
#include <string_view>
#include <vector>

#include "gateway/front/cidr.hpp"

namespace couchgate::gateway::front {

struct secure_policy {
  bool allow_insecure = false;
  bool require_secure = false;
  std::vector<cidr> trusted_proxies;
};

struct request_origin {
  bool tls = false;
  std::optional<ip_address> peer;
  std::optional<std::string_view> scheme_header;  // the header's value, when present
};

enum class secure_verdict { secure, insecure_allowed, refused };

// The value a proxy sets: "https" (X-Forwarded-Proto), "true"/"on" (e.g. $WSIS). With several
// proxies ("https, http") the last one, set by the proxy nearest to couchgate, counts.
bool scheme_says_secure(std::string_view value);
bool is_trusted(const secure_policy& policy, const std::optional<ip_address>& peer);
secure_verdict decide_secure(const secure_policy& policy, const request_origin& origin);

}  // namespace couchgate::gateway::front
