// The declared config table (gateway/config_table.cpp): the committed example is the one
// generated from it and names exactly its keys; every key rejects values of the wrong type or
// out of its range, naming the key; unknown keys are named with a did-you-mean at every level.
#include <doctest/doctest.h>

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "gateway/config.hpp"
#include "gateway/config_table.hpp"

namespace cg = couchgate::gateway;

namespace {
cg::load_result load(const std::string& yaml) {
  return cg::load_config_text(yaml, [](const std::string&) -> std::optional<std::string> { return std::nullopt; });
}

std::string example_path() { return std::string(COUCHGATE_SOURCE_DIR) + "/deploy/couchgate.example.yaml"; }

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// "a.b.c: value" as nested YAML maps.
std::string nested(const std::string& dotted, const std::string& value) {
  std::string out, indent;
  std::size_t start = 0;
  for (;;) {
    const std::size_t dot = dotted.find('.', start);
    if (dot == std::string::npos) break;
    out += indent + dotted.substr(start, dot - start) + ":\n";
    indent += "  ";
    start = dot + 1;
  }
  return out + indent + dotted.substr(start) + ": " + value + "\n";
}

void collect_keys(const YAML::Node& map, const std::string& prefix, std::set<std::string>& out) {
  for (auto it = map.begin(); it != map.end(); ++it) {
    const std::string name = prefix.empty() ? it->first.Scalar() : prefix + "." + it->first.Scalar();
    out.insert(name);
    if (it->second.IsMap()) collect_keys(it->second, name, out);
  }
}

bool has_error_at(const cg::load_result& r, const std::string& path, const std::string& words = {}) {
  for (const auto& e : r.errors) {
    if (e.path == path && e.message.find(words) != std::string::npos) return true;
  }
  return false;
}
}  // namespace

TEST_CASE("config table: the committed example is the generated one (couchgate config-example)") {
  const std::string generated = cg::config_example();
  const std::string committed = read_file(example_path());
  CHECK_MESSAGE(committed == generated,
                "deploy/couchgate.example.yaml differs from the table: run `build/couchgate config-example > "
                "deploy/couchgate.example.yaml`");
}

TEST_CASE("config table: every key is in the example, and the example has no key the table lacks") {
  const YAML::Node example = YAML::LoadFile(example_path());
  std::set<std::string> in_example;
  collect_keys(example, "", in_example);
  std::set<std::string> in_table;
  for (const auto& k : cg::config_keys()) in_table.insert(std::string(k.name));
  CHECK(in_table.size() == cg::config_keys().size());  // no key declared twice
  for (const auto& name : in_table) CHECK_MESSAGE(in_example.count(name) == 1, name << " is not in the example");
  for (const auto& name : in_example) CHECK_MESSAGE(in_table.count(name) == 1, name << " is not in the table");
}

TEST_CASE("config table: the example loads to exactly the struct's defaults") {
  const auto r = cg::load_config_file(example_path(), [](const std::string&) -> std::optional<std::string> { return std::nullopt; });
  INFO(cg::format_errors(example_path(), r.errors));
  REQUIRE(r.errors.empty());
  CHECK(r.cfg == cg::config{});
}

TEST_CASE("config table: each section comes before its keys, and every key's parent is a section") {
  std::set<std::string> sections;
  for (const auto& k : cg::config_keys()) {
    CAPTURE(std::string(k.name));
    const std::string parent(k.parent());
    if (!parent.empty()) CHECK(sections.count(parent) == 1);
    if (k.is_section()) {
      sections.insert(std::string(k.name));
      CHECK((k.read == nullptr));
    } else {
      const bool bound = k.read != nullptr && k.same != nullptr && k.copy != nullptr && k.show != nullptr;
      CHECK(bound);
    }
    CHECK(cg::find_key(k.name) == &k);
  }
}

TEST_CASE("config table: a map where a value belongs is refused at every key, naming it") {
  for (const auto& k : cg::config_keys()) {
    if (k.is_section()) continue;
    const std::string name(k.name);
    CAPTURE(name);
    const auto r = load(nested(name, "{oops: 1}"));
    CHECK(has_error_at(r, name, "expected"));
    CHECK(has_error_at(r, name, "got a map"));
  }
}

TEST_CASE("config table: a section given a value is refused, naming it") {
  for (const auto& k : cg::config_keys()) {
    if (!k.is_section()) continue;
    const std::string name(k.name);
    CAPTURE(name);
    CHECK(has_error_at(load(nested(name, "7")), name, "expected a map of settings, got '7'"));
  }
}

TEST_CASE("config table: wrong values per type are refused with the key, the rule and the value") {
  for (const auto& k : cg::config_keys()) {
    const std::string name(k.name);
    CAPTURE(name);
    std::vector<std::pair<std::string, std::string>> bad;  // value, words of the message
    switch (k.kind) {
      case cg::key_kind::section:
      case cg::key_kind::string:
        break;
      case cg::key_kind::boolean:
        bad = {{"yes-please", "expected true or false, got 'yes-please'"}};
        break;
      case cg::key_kind::integer:
        bad = {{"12abc", "expected an integer, got '12abc'"},
               {std::to_string(k.min - 1), "got '" + std::to_string(k.min - 1) + "'"}};
        if (k.max) bad.push_back({std::to_string(*k.max + 1), "must be between"});
        break;
      case cg::key_kind::number:
        bad = {{"fast", "expected a number"}, {"0", "greater than 0"}};
        break;
      case cg::key_kind::size:
        bad = {{"8 parsecs", "unknown size unit 'parsecs'"},
               {std::to_string(k.min - 1), "must be at least " + cg::format_size_bytes(k.min)}};
        break;
      case cg::key_kind::duration_s:
        bad = {{"5 fortnights", "unknown duration unit"}, {"-1s", "must not be negative"}, {"1500ms", "whole number of seconds"}};
        if (k.min > 0) bad.push_back({std::to_string(k.min - 1), "must be at least"});
        break;
      case cg::key_kind::duration_ms:
        bad = {{"5 fortnights", "unknown duration unit"}, {"-1s", "must not be negative"}};
        if (k.min > 0) bad.push_back({std::to_string(k.min - 1) + "ms", "must be at least"});
        break;
      case cg::key_kind::string_list:
        bad = {{"just-a-string", "expected a list of strings"}};
        break;
      case cg::key_kind::choice:
        bad = {{"none-of-these", "expected one of " + std::string(k.choices[0].name)}};
        break;
    }
    if (k.kind == cg::key_kind::string && !k.choices.empty()) bad = {{"none-of-these", "expected one of"}};
    for (const auto& [value, words] : bad) {
      CAPTURE(value);
      const auto r = load(nested(name, value));
      INFO(cg::format_errors("t.yaml", r.errors));
      CHECK(has_error_at(r, name, words));
    }
  }
}

TEST_CASE("config table: an unknown key at any level is named, with a did-you-mean for a near miss") {
  for (const auto& k : cg::config_keys()) {
    const std::string name(k.name);
    const std::string typo = name + "x";
    CAPTURE(typo);
    const auto r = load(nested(typo, "1"));
    CHECK(has_error_at(r, typo, "unknown key '" + std::string(k.leaf()) + "x'; did you mean '" + std::string(k.leaf()) + "'?"));
  }
  // A key that resembles nothing lists the section's keys.
  const auto far = load("front:\n  upstream:\n    zzzzzzzzzz: 1\n");
  CHECK(has_error_at(far, "front.upstream.zzzzzzzzzz", "expected one of: max_connections, wait_timeout, read_timeout"));
  // A dotted key is not a path into a section.
  CHECK(has_error_at(load("provisioning:\n  select.names: [a]\n"), "provisioning.select.names", "unknown key"));
}

TEST_CASE("config table: every problem is listed, not only the first") {
  const auto r = load("fanin:\n  max_active: 0\n  rounds: many\nlog:\n  level: loud\nfront:\n  prot: 1\n");
  CHECK(r.errors.size() == 4);
  CHECK(has_error_at(r, "fanin.max_active", "at least 1"));
  CHECK(has_error_at(r, "fanin.rounds", "expected an integer"));
  CHECK(has_error_at(r, "log.level", "expected one of trace"));
  CHECK(has_error_at(r, "front.prot", "did you mean 'port'"));
}

TEST_CASE("config table: reload classes: only keys marked live are applied; each key reports itself") {
  // For every key, a configuration that differs in that key only (a value loaded from YAML),
  // reported in the list of its class, and applied exactly when live.
  std::size_t checked = 0;
  for (const auto& k : cg::config_keys()) {
    if (k.is_section() || k.secret) continue;
    std::string value;
    switch (k.kind) {
      case cg::key_kind::boolean: value = k.show(k, cg::config{}) == "true" ? "false" : "true"; break;
      case cg::key_kind::integer: value = std::to_string(k.max ? *k.max : k.min + 7); break;
      case cg::key_kind::number: value = "3.5"; break;
      case cg::key_kind::size: value = std::to_string(k.min + 1); break;
      case cg::key_kind::duration_s: value = std::to_string(k.min + 3001) + "s"; break;
      case cg::key_kind::duration_ms: value = std::to_string(k.min + 3001) + "ms"; break;
      case cg::key_kind::string_list: value = k.check ? "[10.9.8.7]" : "[someone]"; break;
      case cg::key_kind::choice: value = std::string(k.choices[1].name); break;
      case cg::key_kind::string: value = k.choices.empty() ? "changed-value" : std::string(k.choices[0].name); break;
      case cg::key_kind::section: break;
    }
    const std::string name(k.name);
    CAPTURE(name);
    CAPTURE(value);
    cg::config fresh{};
    const auto r = load(nested(name, value));
    // Cross-key rules may object (e.g. a TLS file that does not exist); the key's value is read anyway.
    fresh = r.cfg;
    const cg::config running{};
    if (k.same(running, fresh)) continue;  // e.g. identities.intent_timeout refused by a cross-key rule
    ++checked;
    const auto live = cg::live_changes(running, fresh);
    const auto restart = cg::restart_needed(running, fresh);
    const auto& mine = k.on_reload == cg::reload::live ? live : restart;
    const auto& other = k.on_reload == cg::reload::live ? restart : live;
    CHECK(std::find(mine.begin(), mine.end(), name) != mine.end());
    CHECK(std::find(other.begin(), other.end(), name) == other.end());
    cg::config applied = running;
    cg::apply_live_keys(applied, fresh);
    CHECK(k.same(applied, fresh) == (k.on_reload == cg::reload::live));
  }
  CHECK(checked > 80);
}
