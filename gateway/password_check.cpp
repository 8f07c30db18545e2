// Owns: a password checked against a `_users` document's hash (see password_check.hpp).
#include "gateway/password_check.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <array>
#include <cstdint>
#include <string>

#include "policy/naming.hpp"

namespace couchgate::gateway {

namespace {

std::string to_hex(const unsigned char* p, std::size_t n) {
  return policy::hex_encode(std::string_view(reinterpret_cast<const char*>(p), n));
}

// Lowercase hex of `expected` equal to `actual` (lowercase hex), in time independent of where
// they differ. CouchDB writes lowercase; an uppercase stored value is lowered first.
bool same_hex(std::string expected, const std::string& actual) {
  for (auto& c : expected) {
    if (c >= 'A' && c <= 'F') c = static_cast<char>(c - 'A' + 'a');
  }
  return expected.size() == actual.size() && CRYPTO_memcmp(expected.data(), actual.data(), actual.size()) == 0;
}

const EVP_MD* digest_named(std::string_view prf) {
  if (prf == "sha") return EVP_sha1();
  if (prf == "sha224") return EVP_sha224();
  if (prf == "sha256") return EVP_sha256();
  if (prf == "sha384") return EVP_sha384();
  if (prf == "sha512") return EVP_sha512();
  return nullptr;
}

// SHA-1 of password + salt, hex: CouchDB's legacy `simple` scheme.
std::string simple_hash(std::string_view password, std::string_view salt) {
  std::string msg(password);
  msg.append(salt);
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  if (EVP_Digest(msg.data(), msg.size(), md.data(), &len, EVP_sha1(), nullptr) != 1) return {};
  OPENSSL_cleanse(msg.data(), msg.size());
  return to_hex(md.data(), len);
}

const std::string* string_field(const nlohmann::json& doc, const char* key) {
  const auto it = doc.find(key);
  return it != doc.end() && it->is_string() ? it->get_ptr<const std::string*>() : nullptr;
}

}  // namespace

password_match check_couch_password(const nlohmann::json& user_doc, std::string_view password,
                                    std::uint64_t max_iterations) {
  if (!user_doc.is_object()) return password_match::unknown;
  const std::string* salt = string_field(user_doc, "salt");
  if (!salt) return password_match::unknown;
  const std::string* scheme_field = string_field(user_doc, "password_scheme");
  const std::string_view scheme = scheme_field ? std::string_view(*scheme_field) : std::string_view("simple");
  if (user_doc.contains("password_scheme") && !scheme_field) return password_match::unknown;

  if (scheme == "simple") {
    const std::string* sha = string_field(user_doc, "password_sha");
    if (!sha) return password_match::unknown;
    const std::string got = simple_hash(password, *salt);
    if (got.empty()) return password_match::unknown;
    return same_hex(*sha, got) ? password_match::matches : password_match::differs;
  }
  if (scheme != "pbkdf2" && scheme != "simple+pbkdf2") return password_match::unknown;

  const std::string* derived = string_field(user_doc, "derived_key");
  if (!derived) return password_match::unknown;
  std::string_view prf = "sha";
  if (const auto it = user_doc.find("pbkdf2_prf"); it != user_doc.end()) {
    if (!it->is_string()) return password_match::unknown;
    prf = it->get_ref<const std::string&>();
  }
  const EVP_MD* md = digest_named(prf);
  if (!md) return password_match::unknown;
  std::uint64_t iterations = 10000;
  if (const auto it = user_doc.find("iterations"); it != user_doc.end()) {
    if (!it->is_number_unsigned() && !(it->is_number_integer() && it->get<long long>() > 0)) {
      return password_match::unknown;
    }
    iterations = it->get<std::uint64_t>();
  }
  if (iterations == 0 || iterations > max_iterations || iterations > 0x7fffffffu) return password_match::unknown;

  // `simple+pbkdf2`: a legacy SHA-1 hash upgraded in place; the key is derived from that hash.
  std::string input = scheme == "simple+pbkdf2" ? simple_hash(password, *salt) : std::string(password);
  if (scheme == "simple+pbkdf2" && input.empty()) return password_match::unknown;  // SHA-1 failed
  std::array<unsigned char, EVP_MAX_MD_SIZE> key{};
  const int key_len = EVP_MD_get_size(md);
  const int ok = PKCS5_PBKDF2_HMAC(input.data(), static_cast<int>(input.size()),
                                   reinterpret_cast<const unsigned char*>(salt->data()), static_cast<int>(salt->size()),
                                   static_cast<int>(iterations), md, key_len, key.data());
  OPENSSL_cleanse(input.data(), input.size());
  if (ok != 1 || key_len <= 0) return password_match::unknown;
  const std::string got = to_hex(key.data(), static_cast<std::size_t>(key_len));
  OPENSSL_cleanse(key.data(), key.size());
  return same_hex(*derived, got) ? password_match::matches : password_match::differs;
}

}  // namespace couchgate::gateway
