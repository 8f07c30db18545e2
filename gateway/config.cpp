#include "gateway/config.hpp"

#include "gateway/config_table.hpp"

#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <string_view>
#include <utility>
#include <vector>

#include "replicator/transport/http_pool.hpp"

namespace couchgate::gateway {
namespace {

// How many YAML documents a text holds, counted by the parser's events and at most
// max_documents: yaml-cpp 0.7's LoadAll never ends on some texts (a lone ",": every call finds
// one more empty document), so the config is loaded with Load once the count says there is one.
constexpr int max_documents = 100;
struct document_count {
  int count = 0;
  YAML::Mark second;  // where the second document starts
};
class document_counter final : public YAML::EventHandler {
 public:
  document_count result;
  void OnDocumentStart(const YAML::Mark& mark) override {
    if (++result.count == 2) result.second = mark;
  }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};
document_count count_documents(const std::string& text) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  document_counter counter;
  for (int i = 0; i < max_documents && parser.HandleNextDocument(counter); ++i) {
  }
  return counter.result;
}

// CouchDB's longest legal database name.
constexpr std::size_t max_db_name_length = 238;
// A user database is prefix + hex(name), or prefix + hex that fits + "-" + 64 hex digits of
// sha256 when the name is long: the prefix must leave room for the 65 characters of the latter.
constexpr std::size_t max_db_prefix_length = max_db_name_length - 65;
// Durations are capped so that every consumer can convert them to milliseconds in 64 bits.
constexpr long long max_duration_seconds = std::numeric_limits<std::int32_t>::max();
constexpr long long max_duration_ms = max_duration_seconds * 1000;

// ---------------------------------------------------------------------------------------------
// Text helpers

std::string join_path(const std::string& parent, std::string_view key) {
  return parent.empty() ? std::string(key) : parent + "." + std::string(key);
}

int line_of(const YAML::Mark& mark) { return mark.line >= 0 ? mark.line + 1 : 0; }

// User text made safe for a one-line message: control characters escaped, long values cut.
std::string printable(std::string_view s) {
  constexpr std::size_t limit = 80;
  std::size_t n = s.size();
  const bool cut = n > limit;
  if (cut) {
    n = limit;
    while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;  // UTF-8 boundary
  }
  std::string out;
  for (std::size_t i = 0; i < n; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      static constexpr char hex[] = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 0xf];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (cut) out += "...";
  return out;
}

std::string quote_value(std::string_view s) { return "'" + printable(s) + "'"; }

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  if (from.empty()) return;
  for (std::size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size())) {
    s.replace(pos, from.size(), to);
  }
}

// ---------------------------------------------------------------------------------------------
// Secrets in messages

// The value of a hex digit, -1 for anything else.
int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Percent-decoding that never fails: an invalid escape stays as it is.
std::string lenient_percent_decode(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hex_value(s[i + 1]) >= 0 && hex_value(s[i + 2]) >= 0) {
      out += static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::size_t longest_common_substring(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1, 0);
  std::size_t best = 0;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = 0;  // row[j - 1] of the previous line
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = a[i - 1] == b[j - 1] ? diagonal + 1 : 0;
      best = std::max(best, row[j]);
      diagonal = above;
    }
  }
  return best;
}

// Whether printing `value` could reveal `secret`, in any form it can take in a configuration:
// as is, percent-encoded (a URL's user info: `admin%2Dpass` for `admin-pass`, any hex case), or a
// piece of it (a prefix of a password file's content, part of a user info): any 6 characters
// in a row of the secret (all of it when shorter) count.
bool may_reveal(std::string_view value, std::string_view secret) {
  if (secret.empty()) return false;
  const std::size_t piece = std::min<std::size_t>(secret.size(), 6);
  const std::string decoded = lenient_percent_decode(value);
  for (const std::string_view v : {value, std::string_view(decoded)}) {
    if (v.find(secret) != std::string_view::npos) return true;
    if (longest_common_substring(v, secret) >= piece) return true;
  }
  return false;
}

// A secret percent-encoded as a URL's user info would carry it (every reserved byte), with
// upper- or lowercase hex digits.
std::string percent_encode_all(std::string_view s, bool lower) {
  std::string out = replicator::encode_segment(s);
  if (lower) {
    for (std::size_t i = 0; i + 2 < out.size(); ++i) {
      if (out[i] != '%') continue;
      out[i + 1] = static_cast<char>(std::tolower(static_cast<unsigned char>(out[i + 1])));
      out[i + 2] = static_cast<char>(std::tolower(static_cast<unsigned char>(out[i + 2])));
      i += 2;
    }
  }
  return out;
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0u : 1u)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// [+-]?[0-9]+; saturates instead of overflowing (range checks then reject the value).
constexpr long long saturated = std::numeric_limits<long long>::max();
std::optional<long long> parse_integer(std::string_view s) {
  std::size_t i = 0;
  bool negative = false;
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
    negative = s[0] == '-';
    i = 1;
  }
  if (i == s.size()) return std::nullopt;
  long long value = 0;
  constexpr long long max = std::numeric_limits<long long>::max();
  for (; i < s.size(); ++i) {
    if (s[i] < '0' || s[i] > '9') return std::nullopt;
    const int digit = s[i] - '0';
    value = value > (max - digit) / 10 ? max : value * 10 + digit;
  }
  return negative ? -value : value;
}

// "250ms" -> {250, "ms"}, "30" -> {30, ""}, "8 MiB" -> {8, "MiB"}; nullopt unless
// [+-]?digits, optional spaces, optional letters.
struct number_and_unit {
  long long number = 0;
  std::string unit;
};
std::optional<number_and_unit> split_number_unit(std::string_view s) {
  std::size_t end = 0;
  if (end < s.size() && (s[end] == '+' || s[end] == '-')) ++end;
  while (end < s.size() && s[end] >= '0' && s[end] <= '9') ++end;
  const auto number = parse_integer(s.substr(0, end));
  if (!number) return std::nullopt;
  std::size_t unit_start = end;
  while (unit_start < s.size() && s[unit_start] == ' ') ++unit_start;
  const std::string_view unit = s.substr(unit_start);
  for (const char c : unit) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) return std::nullopt;
  }
  if (unit.empty() && unit_start != end) return std::nullopt;  // trailing spaces only
  return number_and_unit{*number, std::string(unit)};
}

// ---------------------------------------------------------------------------------------------
// URLs

struct url_parts {
  std::string url;              // without user info
  bool has_userinfo = false;
  std::string userinfo;         // raw (still percent-encoded)
};

url_parts split_userinfo(const std::string& url) {
  const std::size_t scheme_end = url.find("://");
  const std::size_t start = scheme_end == std::string::npos ? 0 : scheme_end + 3;
  std::size_t end = url.find_first_of("/?#", start);
  if (end == std::string::npos) end = url.size();
  const std::string_view authority = std::string_view(url).substr(start, end - start);
  const std::size_t at = authority.rfind('@');
  if (at == std::string_view::npos) return {url, false, {}};
  return {url.substr(0, start) + url.substr(start + at + 1), true, std::string(authority.substr(0, at))};
}


struct credentials {
  std::string username;
  std::optional<std::string> password;  // nullopt: the user info had no ':'
};

std::optional<credentials> decode_userinfo(std::string_view userinfo) {
  const std::size_t colon = userinfo.find(':');
  auto user = replicator::percent_decode(userinfo.substr(0, colon));
  if (!user) return std::nullopt;
  credentials c{*user, std::nullopt};
  if (colon != std::string_view::npos) {
    auto password = replicator::percent_decode(userinfo.substr(colon + 1));
    if (!password) return std::nullopt;
    c.password = std::move(*password);
  }
  return c;
}

// Checks an http(s) URL without user info. Returns the normalized URL (lowercase scheme, no
// trailing '/') or the reason it is rejected.
struct url_check {
  std::string url;
  std::string problem;  // empty: valid
};

url_check check_url(const std::string& url) {
  const auto fail = [](std::string why) { return url_check{{}, std::move(why)}; };
  std::string lower_scheme;
  const std::size_t scheme_end = url.find("://");
  if (scheme_end != std::string::npos) {
    lower_scheme = url.substr(0, scheme_end);
    std::transform(lower_scheme.begin(), lower_scheme.end(), lower_scheme.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  }
  if (lower_scheme != "http" && lower_scheme != "https") {
    return fail("must start with http:// or https://");
  }
  for (const char c : url) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return fail("must not contain spaces or control characters");
  }
  const std::size_t start = scheme_end + 3;
  std::size_t end = url.find_first_of("/?#", start);
  if (end == std::string::npos) end = url.size();
  const std::string_view authority = std::string_view(url).substr(start, end - start);
  std::string_view host = authority;
  std::string_view port;
  if (!authority.empty() && authority[0] == '[') {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos || close == 1) return fail("has an invalid IPv6 host");
    host = authority.substr(0, close + 1);
    const std::string_view rest = authority.substr(close + 1);
    if (!rest.empty()) {
      if (rest[0] != ':') return fail("has an invalid host");
      port = rest.substr(1);
      if (port.empty()) return fail("has an empty port");
    }
  } else {
    const std::size_t colon = authority.find(':');
    if (colon != std::string_view::npos) {
      host = authority.substr(0, colon);
      port = authority.substr(colon + 1);
      if (port.empty()) return fail("has an empty port");
    }
    if (host.empty()) return fail("has no host");
    for (const char c : host) {
      const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                      c == '.' || c == '_' || c == '~';
      if (!ok) return fail("has an invalid host");
    }
  }
  if (!port.empty()) {
    const auto p = parse_integer(port);
    if (!p || port[0] == '+' || port[0] == '-' || *p < 1 || *p > 65535) return fail("has an invalid port (expected 1..65535)");
  }
  std::string path = url.substr(end);
  if (path.find_first_of("?#") != std::string::npos) return fail("must not contain a query string or fragment");
  if (path.find('@') != std::string::npos) {
    return fail("contains '@' outside the user info (percent-encode '@', '/', '?' and '#' in the password as %40, %2F, %3F and %23)");
  }
  while (!path.empty() && path.back() == '/') path.pop_back();
  return {lower_scheme + url.substr(scheme_end, end - scheme_end) + path, {}};
}

// ---------------------------------------------------------------------------------------------
// Database names

bool is_db_name_char(char c, bool allow_slash) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '$' || c == '(' || c == ')' ||
         c == '+' || c == '-' || (allow_slash && c == '/');
}

bool is_valid_db_name(std::string_view name) {
  if (name.empty() || name.size() > max_db_name_length) return false;
  if (name[0] < 'a' || name[0] > 'z') return false;
  return std::all_of(name.begin(), name.end(), [](char c) { return is_db_name_char(c, true); });
}

bool is_valid_system_db_name(std::string_view name) {
  return name.size() >= 2 && name[0] == '_' && is_valid_db_name(name.substr(1)) && name.size() <= max_db_name_length;
}

bool is_valid_db_prefix(std::string_view prefix) {
  if (prefix.empty() || prefix.size() > max_db_prefix_length) return false;
  if (prefix[0] < 'a' || prefix[0] > 'z') return false;
  return std::all_of(prefix.begin(), prefix.end(), [](char c) { return is_db_name_char(c, false); });
}

// ---------------------------------------------------------------------------------------------
// Files

struct file_read {
  std::optional<std::string> content;
  std::string error;  // strerror text when content is nullopt
};

file_read read_whole_file(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return {std::nullopt, std::strerror(errno)};
  std::string content;
  char buffer[8192];
  std::size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof buffer, f)) > 0) content.append(buffer, n);
  const bool failed = std::ferror(f) != 0;
  const int err = errno;
  std::fclose(f);
  if (failed) return {std::nullopt, std::strerror(err)};
  return {std::move(content), {}};
}

// ---------------------------------------------------------------------------------------------
// The loader

struct issue {
  std::string path;
  int line = 0;
  std::string message;
  std::vector<std::string> shown;  // user-supplied values quoted in the message (or keys in the path)
};

class loader final : public value_reader {
 public:
  explicit loader(const env_lookup& env) : env_(env) {}

  load_result run(const std::string* yaml_text) {
    if (yaml_text != nullptr) parse_text(*yaml_text);
    take_file_credentials();
    resolve_file_credentials();
    apply_env();
    apply_admin_api_env();
    finish_credentials();
    resolve_admin_token();
    validate();
    return {std::move(cfg_), collect_errors()};
  }

 private:
  // The value being read (walk_map -> key_spec::read -> the value_reader methods).
  struct current {
    const key_spec* spec = nullptr;
    const YAML::Node* node = nullptr;
    std::string path;
    int line = 0;
  };

  enum class password_source { none, value, file };

  const env_lookup& env_;
  config cfg_{};
  std::vector<issue> issues_;
  std::map<std::string, int> lines_;  // key path -> line of the key (1-based), for later checks
  std::vector<std::string> secrets_;
  current current_;

  // What the file said about credentials (empty strings count as not set).
  std::optional<credentials> file_url_credentials_;
  std::string file_username_;
  std::string file_password_;
  std::string file_password_file_;
  // Resolved credentials.
  password_source source_ = password_source::none;
  std::string user_from_, password_from_;  // the settings they came from (credential_source)
  bool url_from_env_ = false;

  // ----- reporting

  void add(std::string path, int line, std::string message, std::vector<std::string> shown = {}) {
    issues_.push_back({std::move(path), line, std::move(message), std::move(shown)});
  }

  void add_secret(const std::string& s) {
    if (!s.empty()) secrets_.push_back(s);
  }

  // Every form a secret can take in a message, replaced by "(hidden)": as is and
  // percent-encoded (upper- and lowercase hex). The last line of defence behind the per-value
  // check in collect_errors.
  std::string scrub(std::string text) const {
    for (const auto& secret : secrets_) {
      if (secret.size() < 4) continue;  // would garble the message; the per-value check covers these
      replace_all(text, secret, "(hidden)");
      replace_all(text, printable(secret), "(hidden)");
      replace_all(text, percent_encode_all(secret, false), "(hidden)");
      replace_all(text, percent_encode_all(secret, true), "(hidden)");
    }
    return text;
  }

  // The still percent-encoded password of a URL's user info is as secret as the decoded one.
  void add_raw_password_secret(const std::string& userinfo) {
    const std::size_t colon = userinfo.find(':');
    if (colon != std::string::npos) {
      add_secret(userinfo.substr(colon + 1));
      add_secret(userinfo);  // "user:password" as written
    }
  }

  std::vector<config_error> collect_errors() const {
    std::vector<config_error> out;
    out.reserve(issues_.size());
    for (const auto& i : issues_) {
      config_error e{i.path, i.line, i.message};
      const bool hide = std::any_of(i.shown.begin(), i.shown.end(), [&](const std::string& value) {
        return std::any_of(secrets_.begin(), secrets_.end(),
                           [&](const std::string& secret) { return may_reveal(value, secret); });
      });
      if (hide) {
        for (const auto& value : i.shown) {
          replace_all(e.message, quote_value(value), "(value hidden: it may contain a secret such as a password or token)");
          replace_all(e.path, printable(value), "(hidden)");
        }
      }
      e.message = scrub(std::move(e.message));
      e.path = scrub(std::move(e.path));
      out.push_back(std::move(e));
    }
    // In file order; problems without a line (environment, defaults) last.
    std::stable_sort(out.begin(), out.end(), [](const config_error& a, const config_error& b) {
      const auto key = [](const config_error& e) { return e.line == 0 ? std::numeric_limits<int>::max() : e.line; };
      return key(a) < key(b);
    });
    return out;
  }

  int line_for(const std::string& path) const {
    const auto it = lines_.find(path);
    return it == lines_.end() ? 0 : it->second;
  }

  // "a list", "a map", "null" or the quoted scalar (recorded in shown).
  static std::string describe(const YAML::Node& n, std::vector<std::string>& shown) {
    switch (n.Type()) {
      case YAML::NodeType::Null:
        return "null (an empty value)";
      case YAML::NodeType::Sequence:
        return "a list";
      case YAML::NodeType::Map:
        return "a map";
      case YAML::NodeType::Scalar:
        shown.push_back(n.Scalar());
        return quote_value(n.Scalar());
      case YAML::NodeType::Undefined:
        break;
    }
    return "nothing";
  }

  void type_error(const YAML::Node& n, const std::string& path, int line, std::string_view expected) {
    std::vector<std::string> shown;
    std::string got = describe(n, shown);
    add(path, line, "expected " + std::string(expected) + ", got " + got, std::move(shown));
  }

  // ----- YAML walking

  void parse_text(const std::string& text) {
    YAML::Node root;
    try {
      const auto docs = count_documents(text);
      if (docs.count > 1) {
        add("", line_of(docs.second),
            docs.count >= max_documents
                ? "expected a single YAML document, found " + std::to_string(max_documents) + " or more (a stray ',' does that)"
                : "expected a single YAML document, found " + std::to_string(docs.count) + " ('---' separators)");
        return;
      }
      if (docs.count == 0) return;  // empty file: all defaults
      root = YAML::Load(text);
    } catch (const YAML::DeepRecursion& e) {  // (its own message is yaml-cpp's "bad file")
      add("", line_of(e.mark), "invalid YAML: nested more than " + std::to_string(e.depth() - 1) + " levels deep");
      return;
    } catch (const YAML::ParserException& e) {
      add("", line_of(e.mark), "invalid YAML: " + e.msg);
      return;
    } catch (const YAML::Exception& e) {
      add("", line_of(e.mark), "invalid YAML: " + e.msg);
      return;
    }
    if (root.IsNull()) return;  // only comments
    if (!root.IsMap()) {
      std::vector<std::string> shown;
      std::string got = describe(root, shown);
      add("", line_of(root.Mark()), "the top level must be a map of settings (couchdb:, fanin:, ...), got " + got,
          std::move(shown));
      return;
    }
    try {
      walk_map(root, "", 0);
    } catch (const YAML::Exception& e) {
      add("", line_of(e.mark), "invalid YAML: " + e.msg);
    }
  }

  // The keys of section `path` ("" = the top level), as the table declares them.
  static std::vector<std::string_view> children_of(std::string_view path) {
    std::vector<std::string_view> out;
    for (const auto& k : config_keys()) {
      if (k.parent() == path) out.push_back(k.leaf());
    }
    return out;
  }

  void walk_map(const YAML::Node& node, const std::string& path, int line) {
    if (node.IsNull()) return;  // "section:" with every key commented out: all defaults
    if (!node.IsMap()) {
      type_error(node, path, line, "a map of settings");
      return;
    }
    std::map<std::string, int> seen;
    for (auto it = node.begin(); it != node.end(); ++it) {
      // Copies: the iterator's operator-> returns a temporary proxy.
      const YAML::Node key_node = it->first;
      const YAML::Node value_node = it->second;
      const int key_line = line_of(key_node.Mark());
      if (!key_node.IsScalar()) {
        type_error(key_node, path, key_line, "a key name");
        continue;
      }
      const std::string& key = key_node.Scalar();
      const std::string key_path = join_path(path, key);
      const key_spec* spec = key.find('.') == std::string::npos ? find_key(key_path) : nullptr;
      if (spec == nullptr) {
        unknown_key(path, key, key_line, children_of(path));
        continue;
      }
      if (const auto previous = seen.find(key); previous != seen.end()) {
        add(key_path, key_line, "duplicate key '" + key + "' (first set on line " + std::to_string(previous->second) + ")");
        continue;
      }
      seen.emplace(key, key_line);
      lines_[key_path] = key_line;
      if (spec->is_section()) {
        walk_map(value_node, key_path, key_line);
      } else {
        current_ = current{spec, &value_node, key_path, key_line};
        spec->read(*this, cfg_);
        current_ = {};
      }
    }
  }

  void unknown_key(const std::string& path, const std::string& key, int line, const std::vector<std::string_view>& names) {
    std::string_view best;
    std::size_t best_distance = 3;
    for (const auto name : names) {
      const std::size_t d = edit_distance(key, name);
      if (d < best_distance) {
        best_distance = d;
        best = name;
      }
    }
    std::string message = "unknown key " + quote_value(key);
    if (!best.empty()) {
      message += "; did you mean '" + std::string(best) + "'?";
    } else {
      message += "; expected one of: ";
      for (std::size_t i = 0; i < names.size(); ++i) message += (i ? ", " : "") + std::string(names[i]);
    }
    add(join_path(path, printable(key)), line, std::move(message), {key});
  }

  // ----- value_reader: the value at current_, read by the kind and bounds of its key

  std::optional<std::string> scalar(const YAML::Node& n, const std::string& path, int line, std::string_view expected) {
    if (!n.IsScalar()) {
      type_error(n, path, line, expected);
      return std::nullopt;
    }
    return n.Scalar();
  }
  std::optional<std::string> scalar(std::string_view expected) {
    return scalar(*current_.node, current_.path, current_.line, expected);
  }
  void problem(std::string message, const std::string& value) {
    add(current_.path, current_.line, std::move(message), {value});
  }

  // What `check` says of one value (a string, or an item of a list), reported at path/line.
  void run_check(std::string_view value, const std::string& path, int line) {
    if (current_.spec->check == nullptr) return;
    if (const char* wrong = current_.spec->check(value)) {
      std::string message = wrong;
      if (!value.empty()) message += ", got " + quote_value(value);
      add(path, line, std::move(message), {std::string(value)});
    }
  }

  void read_string(std::string& out) override {
    const auto s = scalar("a string");
    if (!s) return;
    const key_spec& k = *current_.spec;
    if (k.secret) add_secret(*s);
    if (!k.choices.empty()) {
      const auto it = std::find_if(k.choices.begin(), k.choices.end(), [&](const key_choice& c) { return c.name == *s; });
      if (it == k.choices.end()) {
        problem("expected " + choices_text() + ", got " + quote_value(*s), *s);
        return;
      }
    }
    out = *s;
    run_check(out, current_.path, current_.line);
  }

  void read_bool(bool& out) override {
    const auto s = scalar("true or false");
    if (!s) return;
    if (*s == "true" || *s == "True" || *s == "TRUE") {
      out = true;
    } else if (*s == "false" || *s == "False" || *s == "FALSE") {
      out = false;
    } else {
      problem("expected true or false, got " + quote_value(*s), *s);
    }
  }

  std::optional<long long> read_integer() override {
    const key_spec& k = *current_.spec;
    if (k.kind == key_kind::size) return read_size(k.min);
    const auto s = scalar("an integer");
    if (!s) return std::nullopt;
    const auto value = parse_integer(*s);
    if (!value) {
      problem("expected an integer, got " + quote_value(*s), *s);
      return std::nullopt;
    }
    if (!k.max && *value == saturated) {
      problem("is too large, got " + quote_value(*s), *s);
      return std::nullopt;
    }
    if (*value < k.min || (k.max && *value > *k.max)) {
      std::string message = k.max ? "must be between " + std::to_string(k.min) + " and " + std::to_string(*k.max)
                                  : "must be at least " + std::to_string(k.min);
      message += ", got " + quote_value(*s);
      if (!k.note.empty()) message += " (" + std::string(k.note) + ")";
      problem(std::move(message), *s);
      return std::nullopt;
    }
    return *value;
  }

  std::optional<double> read_number() override {
    const auto s = scalar("a number");
    if (!s) return std::nullopt;
    // Plain decimal notation only ("200", "0.5", "1e3"); no hex, inf or nan.
    const std::string& t = *s;
    std::size_t i = (!t.empty() && (t[0] == '+' || t[0] == '-')) ? 1 : 0;
    const auto skip_digits = [&] {
      const std::size_t start = i;
      while (i < t.size() && t[i] >= '0' && t[i] <= '9') ++i;
      return i > start;
    };
    bool digits = skip_digits();
    if (i < t.size() && t[i] == '.') {
      ++i;
      digits = skip_digits() || digits;
    }
    if (digits && i < t.size() && (t[i] == 'e' || t[i] == 'E')) {
      ++i;
      if (i < t.size() && (t[i] == '+' || t[i] == '-')) ++i;
      digits = skip_digits();
    }
    if (!digits || i != t.size()) {
      problem("expected a number, got " + quote_value(t), t);
      return std::nullopt;
    }
    const double value = std::strtod(t.c_str(), nullptr);
    if (!std::isfinite(value) || value <= 0) {
      problem("must be a number greater than 0, got " + quote_value(t), t);
      return std::nullopt;
    }
    return value;
  }

  struct unit_factor {
    std::string_view unit;  // "" = a bare number
    long long factor;
  };
  // A scalar "<integer>[ ]<unit>" times its unit's factor, with the scalar as written (for the
  // caller's own checks); nullopt, and one problem named, when it is not one, its unit is not in
  // `units`, it is negative, or the product exceeds `max` (`max_hint` follows that message).
  std::optional<std::pair<long long, std::string>> read_scaled(std::string_view expected, std::string_view kind,
                                                               std::initializer_list<unit_factor> units,
                                                               std::string_view units_hint, long long max,
                                                               std::string_view max_hint) {
    auto s = scalar(expected);
    if (!s) return std::nullopt;
    const auto parts = split_number_unit(*s);
    if (!parts) {
      problem("expected " + std::string(expected) + ", got " + quote_value(*s), *s);
      return std::nullopt;
    }
    const auto unit = std::find_if(units.begin(), units.end(), [&](const unit_factor& u) { return u.unit == parts->unit; });
    if (unit == units.end()) {
      problem("unknown " + std::string(kind) + " unit " + quote_value(parts->unit) + " in " + quote_value(*s) + "; use " +
                  std::string(units_hint),
              *s);
      return std::nullopt;
    }
    if (parts->number < 0) {
      problem("must not be negative, got " + quote_value(*s), *s);
      return std::nullopt;
    }
    if (parts->number > max / unit->factor) {
      problem("is too large, got " + quote_value(*s) + std::string(max_hint), *s);
      return std::nullopt;
    }
    return std::pair{parts->number * unit->factor, std::string(*s)};
  }

  // Integer seconds, or an integer with unit ms, s, m or h. Returns milliseconds.
  std::optional<long long> read_duration_ms() override {
    const bool whole_seconds = current_.spec->kind == key_kind::duration_s;
    const long long min_ms = whole_seconds ? current_.spec->min * 1000 : current_.spec->min;
    const auto read = read_scaled(
        "a duration: an integer number of seconds or an integer with unit ms, s, m or h (e.g. 250ms, 30s, 10m)",
        "duration", {{"", 1000}, {"s", 1000}, {"ms", 1}, {"m", 60'000}, {"h", 3'600'000}}, "ms, s, m or h",
        max_duration_ms, " (at most " + std::to_string(max_duration_seconds) + "s)");
    if (!read) return std::nullopt;
    const auto& [ms, s] = *read;
    if (whole_seconds && ms % 1000 != 0) {
      problem("must be a whole number of seconds, got " + quote_value(s), s);
      return std::nullopt;
    }
    if (ms < min_ms) {
      problem("must be at least " + format_duration_ms(min_ms) + ", got " + quote_value(s), s);
      return std::nullopt;
    }
    if (const auto& max = current_.spec->max) {
      const long long max_ms = whole_seconds ? *max * 1000 : *max;
      if (ms > max_ms) {
        problem("must be at most " + format_duration_ms(max_ms) + ", got " + quote_value(s), s);
        return std::nullopt;
      }
    }
    return ms;
  }

  // Integer bytes, or an integer with unit B, KiB, MiB or GiB.
  std::optional<long long> read_size(long long min_bytes) {
    constexpr auto max_bytes = static_cast<long long>(
        std::min<unsigned long long>(std::numeric_limits<long long>::max(), std::numeric_limits<std::size_t>::max()));
    const auto read = read_scaled(
        "a size: an integer number of bytes or an integer with unit B, KiB, MiB or GiB (e.g. 8MiB)", "size",
        {{"", 1}, {"B", 1}, {"KiB", 1LL << 10}, {"MiB", 1LL << 20}, {"GiB", 1LL << 30}}, "B, KiB, MiB or GiB (1024-based)",
        max_bytes, "");
    if (!read) return std::nullopt;
    const auto& [bytes, s] = *read;
    if (bytes < min_bytes) {
      problem("must be at least " + format_size_bytes(min_bytes) + " (" + std::to_string(min_bytes) + " bytes), got " +
                  quote_value(s),
              s);
      return std::nullopt;
    }
    return bytes;
  }

  std::string choices_text() const {
    std::string expected = "one of ";
    const auto& choices = current_.spec->choices;
    for (std::size_t i = 0; i < choices.size(); ++i) expected += (i ? ", " : "") + std::string(choices[i].name);
    return expected;
  }

  std::optional<int> read_choice() override {
    const std::string expected = choices_text();
    const auto s = scalar(expected);
    if (!s) return std::nullopt;
    for (const auto& c : current_.spec->choices) {
      if (*s == c.name) return c.value;
    }
    problem("expected " + expected + ", got " + quote_value(*s), *s);
    return std::nullopt;
  }

  void read_list(std::vector<std::string>& out) override {
    const YAML::Node& n = *current_.node;
    const std::string& path = current_.path;
    if (!n.IsSequence()) {
      type_error(n, path, current_.line, "a list of strings (e.g. [a, b] or [])");
      return;
    }
    std::vector<std::string> values;
    bool ok = true;
    for (std::size_t i = 0; i < n.size(); ++i) {
      const YAML::Node item = n[i];
      const std::string item_path = path + "[" + std::to_string(i) + "]";
      const int item_line = line_of(item.Mark()) != 0 ? line_of(item.Mark()) : current_.line;
      if (!item.IsScalar()) {
        type_error(item, item_path, item_line, "a string");
        ok = false;
      } else if (item.Scalar().empty()) {
        add(item_path, item_line, "must not be an empty string");
        ok = false;
      } else {
        values.push_back(item.Scalar());
        run_check(item.Scalar(), item_path, item_line);
      }
    }
    if (ok) out = std::move(values);
  }

  // ----- credentials and environment

  // The credentials the file gave, set aside to be resolved with the environment: couchdb.url's
  // user info (removed from the URL) and the username / password / password_file keys.
  void take_file_credentials() {
    auto& c = cfg_.couchdb;
    file_username_ = std::exchange(c.username, {});
    file_password_ = std::exchange(c.password, {});
    file_password_file_ = std::exchange(c.password_file, {});
    const url_parts parts = split_userinfo(c.url);
    c.url = parts.url;
    if (!parts.has_userinfo) return;
    add_raw_password_secret(parts.userinfo);
    auto creds = decode_userinfo(parts.userinfo);
    if (!creds) {
      add("couchdb.url", line_for("couchdb.url"),
          "the user info (user:password@) is not valid percent-encoding (use %XX for special characters)");
      return;
    }
    if (creds->password) add_secret(*creds->password);
    file_url_credentials_ = std::move(creds);
  }

  // Within the file, explicit keys win over the URL's user info.
  void resolve_file_credentials() {
    auto& c = cfg_.couchdb;
    if (file_url_credentials_) {
      c.username = file_url_credentials_->username;
      c.password = file_url_credentials_->password.value_or("");
      source_ = file_url_credentials_->password ? password_source::value : password_source::none;
      user_from_ = "the user info of couchdb.url";
      if (file_url_credentials_->password) password_from_ = user_from_;
    }
    if (!file_username_.empty()) {
      c.username = file_username_;
      user_from_ = "couchdb.username";
    }
    c.password_file = file_password_file_;
    if (!file_password_.empty() && !file_password_file_.empty()) {
      add("couchdb.password_file", line_for("couchdb.password_file"),
          "cannot be used together with couchdb.password; set only one (password_file or the COUCHDB_PASSWORD "
          "environment variable is preferred)");
      c.password = file_password_;
      source_ = password_source::value;  // the file is not read: the configuration is rejected anyway
    } else if (!file_password_.empty()) {
      c.password = file_password_;
      source_ = password_source::value;
      password_from_ = "couchdb.password";
    } else if (!file_password_file_.empty()) {
      c.password.clear();
      source_ = password_source::file;
      password_from_ = "couchdb.password_file";
    }
  }

  std::optional<std::string> env(const std::string& name) const {
    if (!env_) return std::nullopt;
    auto value = env_(name);
    if (value && value->empty()) return std::nullopt;  // an empty variable counts as unset
    return value;
  }

  // The environment wins over the file; COUCHDB_USER / COUCHDB_PASSWORD win over COUCHDB_URL's user info.
  void apply_env() {
    auto& c = cfg_.couchdb;
    if (const auto url = env("COUCHDB_URL")) {
      const url_parts parts = split_userinfo(*url);
      c.url = parts.url;
      url_from_env_ = true;
      lines_["couchdb.url"] = 0;
      if (parts.has_userinfo) {
        add_raw_password_secret(parts.userinfo);
        if (const auto creds = decode_userinfo(parts.userinfo)) {
          if (creds->password) add_secret(*creds->password);
          c.username = creds->username;
          c.password = creds->password.value_or("");
          source_ = creds->password ? password_source::value : password_source::none;
          user_from_ = "the user info of the environment variable COUCHDB_URL";
          password_from_ = creds->password ? user_from_ : "";
        } else {
          add("couchdb.url", 0,
              "the user info (user:password@) in the environment variable COUCHDB_URL is not valid percent-encoding "
              "(use %XX for special characters)");
        }
      }
    }
    if (const auto user = env("COUCHDB_USER")) {
      c.username = *user;
      user_from_ = "the environment variable COUCHDB_USER";
    }
    if (const auto password = env("COUCHDB_PASSWORD")) {
      add_secret(*password);
      c.password = *password;
      source_ = password_source::value;
      password_from_ = "the environment variable COUCHDB_PASSWORD";
    }
    if (source_ == password_source::none) password_from_.clear();
    if (c.username.empty() && password_from_.empty()) {
      c.credential_source.clear();
    } else if (password_from_.empty() || password_from_ == user_from_) {
      c.credential_source = user_from_.empty() ? password_from_ : user_from_;
      if (password_from_.empty()) c.credential_source += " (no password is set)";
    } else {
      c.credential_source = (user_from_.empty() ? std::string("no user name") : user_from_) + " and " + password_from_;
    }
  }

  // COUCHGATE_ADMIN_ADDRESS / COUCHGATE_ADMIN_PORT win over admin_api.address / .port, so a
  // container (e.g. one run with --network host) can bind the admin API elsewhere without a new
  // config file; `couchgate health` reads the same variables.
  void apply_admin_api_env() {
    auto& a = cfg_.admin_api;
    if (const auto address = env("COUCHGATE_ADMIN_ADDRESS")) {
      a.address = *address;
      lines_["admin_api.address"] = 0;
    }
    if (const auto port = env("COUCHGATE_ADMIN_PORT")) {
      const auto p = parse_integer(*port);
      if (!p || *p < 0 || *p > 65535) {
        add("admin_api.port", 0,
            "expected an integer 0..65535 in the environment variable COUCHGATE_ADMIN_PORT, got " + quote_value(*port),
            {*port});
      } else {
        a.port = static_cast<int>(*p);
        lines_["admin_api.port"] = 0;
      }
    }
  }

  void finish_credentials() {
    auto& c = cfg_.couchdb;
    if (source_ != password_source::file) return;
    const std::string path_key = "couchdb.password_file";
    if (auto password = read_secret_file(path_key, "password", c.password_file)) c.password = std::move(*password);
  }

  // A file holding one secret (a password, a token): its content without the trailing newline,
  // registered as a secret (as read too: every piece of the file is secret); nullopt with the
  // problem reported at `key` when unreadable or empty.
  std::optional<std::string> read_secret_file(const std::string& key, const std::string& what, const std::string& path) {
    const file_read r = read_whole_file(path);
    if (!r.content) {
      add(key, line_for(key), "cannot read the " + what + " file " + quote_value(path) + ": " + r.error);
      return std::nullopt;
    }
    std::string secret = *r.content;
    add_secret(secret);
    while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r')) secret.pop_back();
    add_secret(secret);
    if (secret.empty()) {
      add(key, line_for(key), "the " + what + " file " + quote_value(path) + " is empty");
      return std::nullopt;
    }
    return secret;
  }

  // admin_api.token, admin_api.token_file, COUCHGATE_ADMIN_TOKEN (wins): one token, a secret.
  void resolve_admin_token() {
    auto& a = cfg_.admin_api;
    const std::string token_key = "admin_api.token";
    const std::string file_key = "admin_api.token_file";
    if (!a.token.empty() && !a.token_file.empty()) {
      add(file_key, line_for(file_key), "cannot be used together with admin_api.token; set only one");
    }
    if (const auto t = env("COUCHGATE_ADMIN_TOKEN")) {
      add_secret(*t);
      a.token = *t;
      lines_[token_key] = 0;
    } else if (a.token.empty() && !a.token_file.empty()) {
      auto token = read_secret_file(file_key, "token", a.token_file);
      if (!token) return;
      a.token = std::move(*token);
    }
    if (a.token.empty()) return;
    const std::string where = a.token_file.empty() || env("COUCHGATE_ADMIN_TOKEN") ? token_key : file_key;
    const bool printable_ascii = std::all_of(a.token.begin(), a.token.end(), [](char c) { return c > 0x20 && c < 0x7f; });
    if (!printable_ascii) {
      add(where, line_for(where), "the admin API token must be printable ASCII without spaces (it is sent in an HTTP header)");
    } else if (a.token.size() < 16) {
      add(where, line_for(where),
          "the admin API token is too short: use at least 16 characters (e.g. the output of `openssl rand -hex 32`)");
    }
  }

  // ----- checks that need the whole configuration

  void validate() {
    auto& c = cfg_;
    {
      const std::string suffix = url_from_env_ ? " (set by the environment variable COUCHDB_URL)" : "";
      const url_check checked = check_url(c.couchdb.url);
      if (!checked.problem.empty()) {
        std::string message = "expected an http:// or https:// URL with a host (e.g. http://127.0.0.1:5984): it " +
                              checked.problem;
        std::vector<std::string> shown;
        if (c.couchdb.url.find('@') == std::string::npos) {
          message += ", got " + quote_value(c.couchdb.url);
          shown.push_back(c.couchdb.url);
        }
        add("couchdb.url", line_for("couchdb.url"), message + suffix, std::move(shown));
      } else {
        c.couchdb.url = checked.url;
      }
    }

    const std::string prefix_path = "provisioning.db_prefix";
    const bool prefix_ok = is_valid_db_prefix(c.provisioning.db_prefix);
    if (!prefix_ok) {
      add(prefix_path, line_for(prefix_path),
          "expected a non-empty prefix that starts with a lowercase letter and contains only a-z, 0-9 and _$()+- "
          "(at most " + std::to_string(max_db_prefix_length) + " characters), got " + quote_value(c.provisioning.db_prefix),
          {c.provisioning.db_prefix});
    }

    struct named_db {
      std::string path;
      const std::string* name;
      bool system_allowed;
    };
    std::vector<named_db> dbs{
        {"provisioning.users_db", &c.provisioning.users_db, true},
        {"state_db", &c.state_db, false},
        {"fanin.central_db", &c.fanin.central_db, false},
        {"shared.db", &c.shared.db, false},
    };
    // Only a database couchgate will use: a disabled feature's default name cannot clash.
    if (c.identities.enabled) dbs.push_back({"identities.db", &c.identities.db, false});
    std::vector<const named_db*> valid;
    for (const auto& db : dbs) {
      const std::string& name = *db.name;
      const bool ok = is_valid_db_name(name) || (db.system_allowed && is_valid_system_db_name(name));
      if (!ok) {
        std::string message = "expected a CouchDB database name: a lowercase letter first";
        if (db.system_allowed) message += " (or '_' for a system database such as _users)";
        message += ", then only a-z, 0-9 and _$()+/- (at most " + std::to_string(max_db_name_length) +
                   " characters), got " + quote_value(name);
        if (!db.system_allowed && !name.empty() && name[0] == '_') {
          message += "; names starting with '_' are reserved for CouchDB's system databases";
        }
        add(db.path, line_for(db.path), std::move(message), {name});
        continue;
      }
      // A clash is reported where it was made: at the key set later in the file (a default has
      // no line, so an explicit key is blamed rather than a default).
      for (const named_db* other : valid) {
        if (*other->name == name) {
          const bool blame_this = line_for(db.path) >= line_for(other->path);
          const std::string& at = blame_this ? db.path : other->path;
          const std::string& with = blame_this ? other->path : db.path;
          add(at, line_for(at), "must differ from " + with + " (both are " + quote_value(name) + ")", {name});
          break;
        }
      }
      if (prefix_ok && name.starts_with(c.provisioning.db_prefix)) {
        const std::string& prefix = c.provisioning.db_prefix;
        if (line_for(db.path) >= line_for(prefix_path)) {
          add(db.path, line_for(db.path),
              quote_value(name) + " starts with provisioning.db_prefix " + quote_value(prefix) +
                  ", so it would be taken for a user's database; choose another name or prefix",
              {name, prefix});
        } else {
          add(prefix_path, line_for(prefix_path),
              quote_value(prefix) + " is the start of " + db.path + " " + quote_value(name) +
                  ", so that database would be taken for a user's database; choose another prefix or name",
              {name, prefix});
        }
      }
      valid.push_back(&db);
    }

    if (!c.admin_api.address.empty() && !is_loopback_address(c.admin_api.address) && c.admin_api.token.empty() && !c.admin_api.allow_unauthenticated) {
      int line = line_for("admin_api.address");
      add("admin_api.address", line,
          "the admin API listens on " + quote_value(c.admin_api.address) +
              ", which other machines can reach, and has no token: set admin_api.token_file (or admin_api.token, or "
              "the environment variable COUCHGATE_ADMIN_TOKEN), or listen on 127.0.0.1, or set "
              "admin_api.allow_unauthenticated: true to accept that anyone who can reach it may read it",
          {c.admin_api.address});
    }

    if (c.identities.intent_timeout <= c.identities.signup_deadline + c.identities.provision_wait) {
      int line = line_for("identities.intent_timeout");
      add("identities.intent_timeout", line,
          "must be longer than identities.signup_deadline + identities.provision_wait (" +
              std::to_string((c.identities.signup_deadline + c.identities.provision_wait).count()) +
              " s), or the reconciler could roll back a sign-up that is still running");
    }
    if (c.identities.enabled && !c.provisioning.enabled) {
      int line = line_for("identities.enabled");
      if (line == 0) line = line_for("provisioning.enabled");
      add("identities.enabled", line,
          "needs provisioning.enabled: true: couchgate hears of deleted users (whose name and address it frees) "
          "and of users made without it (whose it reserves) on provisioning's _users feed; without it those "
          "would stay reserved forever, or unreserved");
    }
    if (c.shared.enabled && c.shared.member_roles.empty()) {
      int line = line_for("shared.member_roles");
      if (line == 0) line = line_for("shared.enabled");
      add("shared.member_roles", line,
          "must not be empty when shared.enabled is true: a database without members is readable by everyone");
    }

    validate_front();
  }

  void validate_front() {
    const auto& f = cfg_.front;
    const bool has_cert = !f.tls.cert_file.empty();
    const bool has_key = !f.tls.key_file.empty();
    if (has_cert != has_key) {
      const std::string missing = has_cert ? "front.tls.key_file" : "front.tls.cert_file";
      add(missing, line_for(has_cert ? "front.tls.cert_file" : "front.tls.key_file"),
          "must be set together with " + std::string(has_cert ? "front.tls.cert_file" : "front.tls.key_file"));
    }
    for (const auto* key : {"front.tls.cert_file", "front.tls.key_file"}) {
      const std::string& file = std::string(key) == "front.tls.cert_file" ? f.tls.cert_file : f.tls.key_file;
      if (!f.enabled || file.empty()) continue;
      if (std::FILE* fp = std::fopen(file.c_str(), "rb")) {
        std::fclose(fp);
      } else {
        add(key, line_for(key), "cannot read " + quote_value(file) + ": " + std::strerror(errno), {file});
      }
    }
    if (f.require_secure && f.allow_insecure) {
      add("front.allow_insecure", line_for("front.allow_insecure"),
          "cannot be true together with front.require_secure: true (require_secure refuses every request that did "
          "not arrive over TLS)");
    }
    if (!f.enabled) return;
    const bool tls = has_cert && has_key;
    if (!tls && !f.allow_insecure && !f.require_secure) {
      int line = line_for("front.enabled");
      add("front.enabled", line,
          "the front door needs TLS: set front.tls.cert_file and front.tls.key_file, or front.require_secure: true "
          "with front.trusted_proxies behind a TLS-terminating proxy; front.allow_insecure: true accepts plain "
          "HTTP (local testing only: credentials then cross the network in clear text)");
    }
    if (f.require_secure && !tls && f.trusted_proxies.empty()) {
      add("front.trusted_proxies", line_for("front.require_secure"),
          "must list the TLS-terminating proxies (CIDRs) when front.require_secure is true and the listener has no "
          "TLS of its own: otherwise every request is refused");
    }
  }
};

}  // namespace

env_lookup process_env() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  };
}

load_result load_config_text(const std::string& yaml_text, const env_lookup& env) {
  return loader(env).run(&yaml_text);
}

load_result load_config_file(const std::string& path, const env_lookup& env) {
  const file_read r = read_whole_file(path);
  if (!r.content) {
    load_result result;
    result.errors.push_back({"", 0, "cannot read the configuration file " + quote_value(path) + ": " + r.error});
    return result;
  }
  return load_config_text(*r.content, env);
}

load_result default_config(const env_lookup& env) { return loader(env).run(nullptr); }

std::string format_errors(const std::string& file, const std::vector<config_error>& errors) {
  std::string out;
  for (const auto& e : errors) {
    out += file;
    if (e.line > 0) out += ":" + std::to_string(e.line);
    out += ": ";
    if (!e.path.empty()) out += e.path + ": ";
    out += e.message;
    out += '\n';
  }
  return out;
}

std::string redact_url(const std::string& url) { return split_userinfo(url).url; }

bool is_loopback_address(const std::string& address) {
  std::string a = address;
  if (a.size() >= 2 && a.front() == '[' && a.back() == ']') a = a.substr(1, a.size() - 2);
  if (a == "localhost" || a == "::1" || a == "0:0:0:0:0:0:0:1") return true;
  // 127.0.0.0/8 in dotted-quad form
  if (!a.starts_with("127.")) return false;
  int dots = 0;
  std::size_t digits = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i] == '.') {
      if (digits == 0) return false;
      ++dots;
      digits = 0;
    } else if (a[i] >= '0' && a[i] <= '9') {
      if (++digits > 3) return false;
    } else {
      return false;
    }
  }
  return dots == 3 && digits > 0;
}

namespace {
// The table's keys of one reload class whose values differ, in table order.
std::vector<std::string> changed_keys(const config& running, const config& fresh, reload which) {
  std::vector<std::string> out;
  for (const auto& k : config_keys()) {
    if (!k.is_section() && k.on_reload == which && !k.same(running, fresh)) out.emplace_back(k.name);
  }
  return out;
}
}  // namespace

std::vector<std::string> live_changes(const config& running, const config& fresh) {
  return changed_keys(running, fresh, reload::live);
}

std::vector<std::string> restart_needed(const config& running, const config& fresh) {
  return changed_keys(running, fresh, reload::restart);
}

void apply_live_keys(config& running, const config& fresh) {
  for (const auto& k : config_keys()) {
    if (!k.is_section() && k.on_reload == reload::live) k.copy(running, fresh);
  }
}

}  // namespace couchgate::gateway
