#pragma once
// Owns: the one declared table of configuration keys (gateway/config_table.cpp): for every key
// its dotted name, type, default (the typed `config` struct's member initialiser), validation,
// whether SIGHUP applies it live, and its help text. The YAML parser (config.cpp), the reload
// decision (live_changes / restart_needed / apply_live_keys), `check-config` and the documented
// example (`couchgate config-example`, deploy/couchgate.example.yaml) are all driven from it.
// How to add a key: see the comment at the top of config_table.cpp.
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/config.hpp"

namespace couchgate::gateway {

// How a value is written in YAML (decides the parser, the validation and the example's format).
enum class key_kind {
  section,       // a map of further keys
  boolean,       // true / false
  integer,       // [min, max]
  number,        // a decimal number > 0
  size,          // bytes, or with a unit B, KiB, MiB, GiB; at least min
  duration_s,    // a duration in whole seconds; at least min seconds
  duration_ms,   // a duration; at least min milliseconds
  string,        // text, optionally one of `choices` or accepted by `check`
  string_list,   // a list of non-empty strings, each accepted by `check`
  choice,        // one of `choices` (an enum)
};

enum class reload { restart, live };

struct key_choice {
  std::string_view name;
  int value;  // the enum's value (static_cast)
};

class value_reader;

struct key_spec {
  std::string_view name;  // dotted path, e.g. "fanin.max_connections"
  key_kind kind = key_kind::string;
  reload on_reload = reload::restart;
  long long min = 0;                   // integer, size, seconds, milliseconds
  std::optional<long long> max;        // integer, seconds, milliseconds: nullopt = no upper bound
  std::span<const key_choice> choices; // choice (and string: the accepted words)
  // string and string_list items: nullptr when the value is acceptable, else what is wrong
  // ("expected ..."); the value is appended as ", got '...'".
  const char* (*check)(std::string_view value) = nullptr;
  bool secret = false;          // never shown; registered so no message can reveal it
  std::string_view note;        // added to a range error, e.g. why the minimum
  std::string_view help;        // the example's comment; "" = none
  // Bound to the typed member (nullptr for sections).
  void (*read)(value_reader&, config&) = nullptr;
  bool (*same)(const config&, const config&) = nullptr;
  void (*copy)(config& to, const config& from) = nullptr;
  std::string (*show)(const key_spec&, const config&) = nullptr;  // the value as YAML text

  std::string_view parent() const;  // "" for a top-level key
  std::string_view leaf() const;    // the last segment
  bool is_section() const { return kind == key_kind::section; }
};

// The parser's side of a read: converts and validates the value it is positioned at, by the
// kind and bounds of the key being read; nullopt (with the problem recorded) when invalid.
class value_reader {
 public:
  virtual void read_bool(bool& out) = 0;
  virtual void read_string(std::string& out) = 0;
  virtual void read_list(std::vector<std::string>& out) = 0;
  virtual std::optional<long long> read_integer() = 0;  // integer and size
  virtual std::optional<double> read_number() = 0;
  virtual std::optional<long long> read_duration_ms() = 0;
  virtual std::optional<int> read_choice() = 0;

 protected:
  ~value_reader() = default;
};

// Every key and section, in the example's order (a section before its keys).
std::span<const key_spec> config_keys();
const key_spec* find_key(std::string_view dotted_name);

// The documented example: every key with its default and help, as deploy/couchgate.example.yaml.
std::string config_example();

// Texts shared by the parser's messages and the example.
std::string format_duration_ms(long long ms);  // "250ms", "30s", "10m", "2h"
std::string format_size_bytes(long long bytes);  // "512B", "64KiB", "8MiB"

}  // namespace couchgate::gateway
