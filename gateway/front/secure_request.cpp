// Owns: the secure-request decision (see secure_request.hpp).
#include "gateway/front/secure_request.hpp"

#include <cctype>
#include <string>

namespace couchgate::gateway::front {

bool scheme_says_secure(std::string_view value) {
  if (const std::size_t comma = value.rfind(','); comma != std::string_view::npos) value = value.substr(comma + 1);
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  std::string lower;
  for (const char c : value) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return lower == "https" || lower == "true" || lower == "on";
}

bool is_trusted(const secure_policy& policy, const std::optional<ip_address>& peer) {
  if (!peer) return false;
  for (const auto& range : policy.trusted_proxies) {
    if (contains(range, *peer)) return true;
  }
  return false;
}

secure_verdict decide_secure(const secure_policy& policy, const request_origin& origin) {
  if (origin.tls) return secure_verdict::secure;
  if (origin.scheme_header && is_trusted(policy, origin.peer) && scheme_says_secure(*origin.scheme_header)) {
    return secure_verdict::secure;
  }
  if (policy.allow_insecure && !policy.require_secure) return secure_verdict::insecure_allowed;
  return secure_verdict::refused;
}

}  // namespace couchgate::gateway::front
