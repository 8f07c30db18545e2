// Owns: the secure-request decision (see secure_request.hpp).
#include "gateway/front/secure_request.hpp"

#include <optional>
#include <string>
#include <vector>

#include "replicator/transport/header_text.hpp"

namespace couchgate::gateway::front {
namespace {
using replicator::lower_ascii;
using replicator::trim_ows;

// Splits at `sep` outside quoted strings (a quoted value may hold either separator); nullopt when
// a quote is left open (a client's open quote would swallow what a proxy appended after it).
std::optional<std::vector<std::string_view>> split_unquoted(std::string_view v, char sep) {
  std::vector<std::string_view> out;
  bool quoted = false;
  std::size_t start = 0;
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (v[i] == '\\' && quoted) {
      ++i;
    } else if (v[i] == '"') {
      quoted = !quoted;
    } else if (v[i] == sep && !quoted) {
      out.push_back(v.substr(start, i - start));
      start = i + 1;
    }
  }
  if (quoted) return std::nullopt;
  out.push_back(v.substr(start));
  return out;
}

// One element's parameter (for, proto, ...), unquoted; nullopt when absent.
std::optional<std::string> forwarded_param(std::string_view element, std::string_view key) {
  for (const auto pair : split_unquoted(element, ';').value_or(std::vector<std::string_view>{})) {
    const std::size_t eq = pair.find('=');
    if (eq == std::string_view::npos || lower_ascii(trim_ows(pair.substr(0, eq))) != key) continue;
    std::string_view value = trim_ows(pair.substr(eq + 1));
    std::string out;
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
      value = value.substr(1, value.size() - 2);
      for (std::size_t i = 0; i < value.size(); ++i) {
        if (value[i] == '\\' && i + 1 < value.size()) ++i;
        out += value[i];
      }
    } else {
      out = std::string(value);
    }
    return out;
  }
  return std::nullopt;
}

// A for= node as an address ("[2001:db8::17]:4711" -> "2001:db8::17", "192.0.2.60:80" ->
// "192.0.2.60"); "unknown" for anything else.
std::string node_address(const std::string& node) {
  std::string_view v = node;
  if (v.starts_with('[')) {
    const std::size_t close = v.find(']');
    if (close == std::string_view::npos) return "unknown";
    v = v.substr(1, close - 1);
  } else if (const std::size_t colon = v.find(':'); colon != std::string_view::npos && v.rfind(':') == colon) {
    v = v.substr(0, colon);
  }
  return parse_ip(v) ? std::string(v) : std::string("unknown");
}
}  // namespace

std::string forwarded_for_list(std::string_view forwarded) {
  const auto elements = split_unquoted(forwarded, ',');
  if (!elements) return {};  // malformed: no address is read from it
  std::string out;
  for (const auto element : *elements) {
    if (trim_ows(element).empty()) continue;
    const auto node = forwarded_param(element, "for");
    if (!out.empty()) out += ", ";
    out += node ? node_address(*node) : std::string("unknown");
  }
  return out;
}

std::string forwarded_proto(std::string_view forwarded) {
  const auto elements = split_unquoted(forwarded, ',');
  if (!elements) return {};  // malformed: not secure
  for (auto it = elements->rbegin(); it != elements->rend(); ++it) {
    if (trim_ows(*it).empty()) continue;
    return lower_ascii(forwarded_param(*it, "proto").value_or(""));
  }
  return {};
}

bool scheme_says_secure(std::string_view value) {
  if (const std::size_t comma = value.rfind(','); comma != std::string_view::npos) value = value.substr(comma + 1);
  const std::string lower = lower_ascii(trim_ows(value));
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
