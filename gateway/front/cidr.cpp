// Owns: CIDR parsing and matching (see cidr.hpp).
#include "gateway/front/cidr.hpp"

#include <arpa/inet.h>

#include <cstring>

namespace couchgate::gateway::front {

std::optional<ip_address> parse_ip(std::string_view text) {
  if (text.empty() || text.size() > 64) return std::nullopt;
  const std::string s(text);
  ip_address a;
  if (inet_pton(AF_INET, s.c_str(), a.bytes.data()) == 1) {
    a.v4 = true;
    return a;
  }
  std::array<std::uint8_t, 16> six{};
  if (inet_pton(AF_INET6, s.c_str(), six.data()) != 1) return std::nullopt;
  static constexpr std::uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(six.data(), mapped, 12) == 0) {
    std::memcpy(a.bytes.data(), six.data() + 12, 4);
    a.v4 = true;
    return a;
  }
  a.bytes = six;
  return a;
}

std::optional<cidr> parse_cidr(std::string_view text) {
  const std::size_t slash = text.find('/');
  const auto base = parse_ip(text.substr(0, slash));
  if (!base) return std::nullopt;
  const int max_bits = base->v4 ? 32 : 128;
  int bits = max_bits;
  if (slash != std::string_view::npos) {
    const std::string_view digits = text.substr(slash + 1);
    if (digits.empty() || digits.size() > 3) return std::nullopt;
    bits = 0;
    for (const char c : digits) {
      if (c < '0' || c > '9') return std::nullopt;
      bits = bits * 10 + (c - '0');
    }
    if (bits > max_bits) return std::nullopt;
  }
  return cidr{*base, bits};
}

bool contains(const cidr& range, const ip_address& address) {
  if (range.base.v4 != address.v4) return false;
  int bits = range.prefix_bits;
  for (std::size_t i = 0; bits > 0; ++i, bits -= 8) {
    const std::uint8_t mask = bits >= 8 ? 0xff : static_cast<std::uint8_t>(0xff << (8 - bits));
    if ((range.base.bytes[i] & mask) != (address.bytes[i] & mask)) return false;
  }
  return true;
}

}  // namespace couchgate::gateway::front
