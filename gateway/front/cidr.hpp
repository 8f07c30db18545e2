#pragma once
// Owns: IP address ranges (CIDR) for front.trusted_proxies: parsing and membership. Pure.
// IPv4-mapped IPv6 addresses (::ffff:a.b.c.d, what a dual-stack listener reports) count as IPv4.
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace couchgate::gateway::front {

struct ip_address {
  std::array<std::uint8_t, 16> bytes{};  // IPv4 in the first 4
  bool v4 = false;
  bool operator==(const ip_address&) const = default;
};

struct cidr {
  ip_address base;
  int prefix_bits = 0;
};

std::optional<ip_address> parse_ip(std::string_view text);
// "10.0.0.0/8", "::1", "fd00::/8", "127.0.0.1" (a single address = full prefix).
std::optional<cidr> parse_cidr(std::string_view text);
bool contains(const cidr& range, const ip_address& address);

}  // namespace couchgate::gateway::front
