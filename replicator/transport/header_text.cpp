// Owns: header-value text rules (see header_text.hpp).
#include "replicator/transport/header_text.hpp"

namespace couchgate::replicator {
namespace {
bool is_ows(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }
char fold(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }
}  // namespace

std::string_view trim_ows(std::string_view v) {
  while (!v.empty() && is_ows(v.front())) v.remove_prefix(1);
  while (!v.empty() && is_ows(v.back())) v.remove_suffix(1);
  return v;
}

std::string lower_ascii(std::string_view v) {
  std::string out(v);
  for (auto& c : out) c = fold(c);
  return out;
}

bool starts_with_ascii_ci(std::string_view s, std::string_view lower_prefix) {
  if (s.size() < lower_prefix.size()) return false;
  for (std::size_t i = 0; i < lower_prefix.size(); ++i) {
    if (fold(s[i]) != lower_prefix[i]) return false;
  }
  return true;
}

}  // namespace couchgate::replicator
