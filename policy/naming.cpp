// Owns: user name <-> database name / `_users` id mapping, and the SHA-256 used for the hashed
// long-name form. See naming.hpp for the rules.
//
// On max_db_name_length (238): CouchDB 3.x documents only the character rule; the length limit
// is implicit. A shard file is "<db name>.<10-digit timestamp>.couch", and file names are at
// most 255 bytes, so 255 - 17 = 238 (CouchDB later made 238 the explicit default of
// max_database_name_length, apache/couchdb PR #2174).
#include "policy/naming.hpp"

#include <array>
#include <cstdint>

namespace couchgate::policy {

namespace {

constexpr std::size_t sha256_hex_length = 64;

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;  // uppercase is rejected on purpose: only our own lowercase output decodes
}

bool is_db_name_char(char c) {
  if (c >= 'a' && c <= 'z') return true;
  if (c >= '0' && c <= '9') return true;
  switch (c) {
    case '_': case '$': case '(': case ')': case '+': case '-': case '/': return true;
    default: return false;
  }
}

// Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF. User names come from
// JSON strings, so a decoded database name that is not valid UTF-8 cannot belong to a user (and
// would make nlohmann::json::dump throw if it ever reached a JSON document).
bool is_valid_utf8(std::string_view s) {
  std::size_t i = 0;
  const std::size_t n = s.size();
  while (i < n) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    if (b0 < 0x80) {
      ++i;
      continue;
    }
    std::size_t len = 0;
    std::uint32_t cp = 0;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
      len = 2;
      cp = b0 & 0x1Fu;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
      len = 3;
      cp = b0 & 0x0Fu;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
      len = 4;
      cp = b0 & 0x07u;
    } else {
      return false;
    }
    if (n - i < len) return false;
    for (std::size_t k = 1; k < len; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      if ((b & 0xC0u) != 0x80u) return false;
      cp = (cp << 6) | (b & 0x3Fu);
    }
    if (len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) return false;
    if (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) return false;
    i += len;
  }
  return true;
}

// ---- SHA-256 (FIPS 180-4) ----

constexpr std::array<std::uint32_t, 64> sha256_k = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

constexpr std::uint32_t rotr(std::uint32_t x, unsigned n) { return (x >> n) | (x << (32u - n)); }

void sha256_block(std::array<std::uint32_t, 8>& h, const unsigned char* block) {
  std::array<std::uint32_t, 64> w{};
  for (std::size_t t = 0; t < 16; ++t) {
    w[t] = (std::uint32_t{block[4 * t]} << 24) | (std::uint32_t{block[4 * t + 1]} << 16) |
           (std::uint32_t{block[4 * t + 2]} << 8) | std::uint32_t{block[4 * t + 3]};
  }
  for (std::size_t t = 16; t < 64; ++t) {
    const std::uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
    const std::uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
    w[t] = w[t - 16] + s0 + w[t - 7] + s1;
  }
  std::uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
  for (std::size_t t = 0; t < 64; ++t) {
    const std::uint32_t big_s1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
    const std::uint32_t ch = (e & f) ^ (~e & g);
    const std::uint32_t t1 = hh + big_s1 + ch + sha256_k[t] + w[t];
    const std::uint32_t big_s0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
    const std::uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
    const std::uint32_t t2 = big_s0 + maj;
    hh = g;
    g = f;
    f = e;
    e = d + t1;
    d = c;
    c = b;
    b = a;
    a = t1 + t2;
  }
  h[0] += a;
  h[1] += b;
  h[2] += c;
  h[3] += d;
  h[4] += e;
  h[5] += f;
  h[6] += g;
  h[7] += hh;
}

}  // namespace

std::string hex_encode(std::string_view bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const char ch : bytes) {
    const auto b = static_cast<unsigned char>(ch);
    out.push_back(digits[b >> 4]);
    out.push_back(digits[b & 0x0Fu]);
  }
  return out;
}

std::optional<std::string> hex_decode(std::string_view hex) {
  if (hex.size() % 2 != 0) return std::nullopt;
  std::string out;
  out.reserve(hex.size() / 2);
  for (std::size_t i = 0; i < hex.size(); i += 2) {
    const int hi = hex_value(hex[i]);
    const int lo = hex_value(hex[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out.push_back(static_cast<char>((hi << 4) | lo));
  }
  return out;
}

std::string user_db_name(std::string_view prefix, std::string_view user_name) {
  const std::string hex = hex_encode(user_name);
  if (prefix.size() + hex.size() <= max_db_name_length) {
    std::string out(prefix);
    out += hex;
    return out;
  }
  // Long form: prefix + hex head + "-" + sha256. If the prefix alone leaves no room, the result
  // is longer than allowed; is_valid_db_name reports that (config validation should prevent it).
  const std::size_t fixed = prefix.size() + 1 + sha256_hex_length;
  const std::size_t room = fixed < max_db_name_length ? max_db_name_length - fixed : 0;
  std::string out(prefix);
  out.append(hex, 0, room);
  out += '-';
  out += sha256_hex(user_name);
  return out;
}

std::optional<std::string> user_from_db_name(std::string_view prefix, std::string_view db_name) {
  if (db_name.size() > max_db_name_length) return std::nullopt;  // user_db_name would hash it
  if (db_name.size() <= prefix.size() || db_name.substr(0, prefix.size()) != prefix) {
    return std::nullopt;  // also rejects db_name == prefix: no user has an empty name
  }
  auto name = hex_decode(db_name.substr(prefix.size()));
  if (!name || !is_valid_utf8(*name)) return std::nullopt;
  return name;
}

bool is_valid_db_name(std::string_view name) {
  if (name.empty() || name.size() > max_db_name_length) return false;
  if (name.front() < 'a' || name.front() > 'z') return false;
  for (const char c : name) {
    if (!is_db_name_char(c)) return false;
  }
  return true;
}

std::string user_doc_id(std::string_view user_name) {
  std::string out(user_doc_prefix);
  out += user_name;
  return out;
}

std::optional<std::string> user_name_from_doc_id(std::string_view doc_id) {
  if (doc_id.size() <= user_doc_prefix.size() ||
      doc_id.substr(0, user_doc_prefix.size()) != user_doc_prefix) {
    return std::nullopt;
  }
  return std::string(doc_id.substr(user_doc_prefix.size()));
}

std::string sha256_hex(std::string_view bytes) {
  std::array<std::uint32_t, 8> h = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                    0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  const auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
  const std::size_t n = bytes.size();
  std::size_t off = 0;
  for (; n - off >= 64; off += 64) sha256_block(h, data + off);

  // Padding: 0x80, zeros, 64-bit big-endian bit length; one or two final blocks.
  std::array<unsigned char, 128> tail{};
  const std::size_t rest = n - off;
  for (std::size_t i = 0; i < rest; ++i) tail[i] = data[off + i];
  tail[rest] = 0x80;
  const std::size_t tail_len = rest < 56 ? 64 : 128;
  const std::uint64_t bits = static_cast<std::uint64_t>(n) * 8u;
  for (std::size_t i = 0; i < 8; ++i) {
    tail[tail_len - 1 - i] = static_cast<unsigned char>(bits >> (8 * i));
  }
  for (std::size_t b = 0; b < tail_len; b += 64) sha256_block(h, tail.data() + b);

  std::string raw;
  raw.reserve(32);
  for (const std::uint32_t word : h) {
    raw.push_back(static_cast<char>(word >> 24));
    raw.push_back(static_cast<char>(word >> 16));
    raw.push_back(static_cast<char>(word >> 8));
    raw.push_back(static_cast<char>(word));
  }
  return hex_encode(raw);
}

}  // namespace couchgate::policy
