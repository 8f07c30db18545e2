// Owns: URL percent-encoding (see url.hpp).
#include "replicator/transport/url.hpp"

namespace couchgate::replicator {

namespace {
int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool unreserved(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == '.' || c == '~';
}
}  // namespace

std::string encode_segment(std::string_view s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size() * 3);
  for (unsigned char c : s) {
    if (unreserved(c)) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  return out;
}

std::optional<std::string> percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size()) return std::nullopt;
    const int hi = hex_value(s[i + 1]);
    const int lo = hex_value(s[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

std::string encode_doc_id(std::string_view id) {
  for (std::string_view prefix : {std::string_view("_design/"), std::string_view("_local/")}) {
    if (id.substr(0, prefix.size()) == prefix) {
      return std::string(prefix) + encode_segment(id.substr(prefix.size()));
    }
  }
  return encode_segment(id);
}

std::string encode_query_value(std::string_view s) { return encode_segment(s); }

std::string db_path(std::string_view db) {
  std::string out;
  out.reserve(db.size() * 3 + 1);
  out += '/';
  out += encode_segment(db);
  return out;
}

}  // namespace couchgate::replicator
