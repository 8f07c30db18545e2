// Owns: the secure-request decision (see secure_request.hpp).
#include "gateway/front/secure_request.hpp"

#include <cctype>
#include <string>

namespace couchgate::gateway::front {
namespace {
// A list element without the optional white space (spaces, tabs) around it.
std::string_view trim_ows(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return v;
}
}  // namespace

bool scheme_says_secure(std::string_view value) {
  if (const std::size_t comma = value.rfind(','); comma != std::string_view::npos) value = value.substr(comma + 1);
  value = trim_ows(value);
  std::string lower;
  for (const char c : value) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return lower == "https" || lower == "true" || lower == "on";
}

std::string joined_field_lines(const std::vector<std::string_view>& lines) {
  std::string out;
  for (const auto line : lines) {
    if (!out.empty()) out += ", ";
    out += line;
  }
  return out;
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

std::string client_address(const secure_policy& policy, std::string_view peer, const std::optional<ip_address>& peer_ip,
                           std::string_view forwarded_for) {
  if (forwarded_for.empty() || !is_trusted(policy, peer_ip)) return std::string(peer);
  std::string_view rest = forwarded_for;
  while (!rest.empty()) {
    const std::size_t comma = rest.rfind(',');
    const std::string_view entry = trim_ows(comma == std::string_view::npos ? rest : rest.substr(comma + 1));
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(0, comma);
    const auto ip = parse_ip(entry);
    if (!ip) break;  // not an address (a port, "unknown", garbage): nothing further left is read
    if (!is_trusted(policy, ip)) return std::string(entry);
  }
  return std::string(peer);
}

}  // namespace couchgate::gateway::front
