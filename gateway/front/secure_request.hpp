#pragma once
// Owns: the decision whether a request arrived securely, and whether it may be served. Pure.
// Secure = over the listener's own TLS, or from a trusted proxy (front.trusted_proxies) whose
// scheme header (front.scheme_header) says https. The header from any other peer is ignored,
// and a missing header counts as not secure. An insecure request is served only with
// front.allow_insecure (and never with front.require_secure); otherwise it is refused before
// anything, its credentials included, is forwarded.
#include <optional>
#include <string>
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
// The header's value when it came in several lines: one list, in their order ("a, b"), as HTTP
// reads repeated fields. A proxy that adds its line rather than replacing the client's puts its
// own last, so the nearest proxy's still counts (a client's "https" first does not).
std::string joined_field_lines(const std::vector<std::string_view>& lines);
bool is_trusted(const secure_policy& policy, const std::optional<ip_address>& peer);
secure_verdict decide_secure(const secure_policy& policy, const request_origin& origin);
// The client's address, for the per-address limits (authentication failures, sign-up attempts)
// and the access log: from a trusted proxy, the nearest address in its X-Forwarded-For lines
// (`forwarded_for`, joined) that is not a trusted proxy itself (each proxy appends the address it
// got the request from; what a client wrote itself comes before and is never read); otherwise,
// or when that list has no address to take, the peer. Behind a proxy every client would
// otherwise be the proxy: one client's wrong passwords would lock out everyone.
std::string client_address(const secure_policy& policy, std::string_view peer, const std::optional<ip_address>& peer_ip,
                           std::string_view forwarded_for);
// RFC 7239's Forwarded header (`for=192.0.2.60;proto=https, for="[2001:db8::17]:4711"`), read
// where a proxy sends it instead of X-Forwarded-For / -Proto:
// - forwarded_for_list: each element's for= address in order, as an X-Forwarded-For list for
//   client_address ("192.0.2.60, 2001:db8::17"; quotes, IPv6 brackets and ports removed); an
//   element without one, or with "unknown" or an obfuscated name, is "unknown" there (where
//   client_address stops reading).
// - forwarded_proto: the last element's proto= (the nearest proxy's), lower-cased; "" without.
// A header with a quote left open is malformed: both give "" (the peer's address; not secure).
std::string forwarded_for_list(std::string_view forwarded);
std::string forwarded_proto(std::string_view forwarded);

}  // namespace couchgate::gateway::front
