// Owns: the max_dbs_open judgement (see server_limits.hpp).
#include "replicator/server_limits.hpp"

#include <charconv>

namespace couchgate::replicator {

namespace {
// CouchDB 3.5's answer for a key set in no ini file: the server's built-in default is in effect.
bool unset_key(const couch_error& e) { return e.kind == couch_error_kind::not_found && e.reason == "unknown_config_value"; }
// How CouchDB reads [global_changes] update_db: off only for "false".
bool update_db_on(const std::string& v) { return v != "false"; }
}  // namespace

std::optional<std::uint64_t> parse_config_uint(const json& answer) {
  if (answer.is_number_unsigned()) return answer.get<std::uint64_t>();
  if (answer.is_number_integer()) {
    if (answer.get<std::int64_t>() < 0) return std::nullopt;
    return static_cast<std::uint64_t>(answer.get<std::int64_t>());
  }
  if (!answer.is_string()) return std::nullopt;
  const auto& s = answer.get_ref<const std::string&>();
  std::uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

std::optional<std::uint64_t> max_dbs_open_in_effect(const result<json>& answer) {
  if (answer.ok()) return parse_config_uint(answer.value());
  if (unset_key(answer.error())) return couchdb_default_max_dbs_open;
  return std::nullopt;
}

shard_estimate estimate_shards(std::uint64_t sources, std::uint64_t q) {
  constexpr std::uint64_t couchdb_default_q = 2;
  constexpr std::uint64_t own_shards = 4 * 8;
  shard_estimate e;
  e.needed = sources * (q == 0 ? couchdb_default_q : q) + own_shards;
  const std::uint64_t with_room = e.needed + (e.needed + 3) / 4;
  e.recommended = std::max<std::uint64_t>(500, (with_room + 99) / 100 * 100);
  return e;
}

std::optional<std::string> max_dbs_open_warning(std::uint64_t max_dbs_open, const shard_estimate& e, std::uint64_t sources,
                                                std::uint64_t q) {
  if (max_dbs_open >= e.needed) return std::nullopt;
  return "CouchDB's [couchdb] max_dbs_open is " + std::to_string(max_dbs_open) + ", below the about " + std::to_string(e.needed) +
         " shards fan-in keeps busy (" + std::to_string(sources) + " databases x q=" + (q == 0 ? std::string("2 (server default)") : std::to_string(q)) +
         ", plus couchgate's own): the server reopens evicted shards on every pass. Set max_dbs_open to " + std::to_string(e.recommended) +
         " or more";
}

std::optional<bool> update_db_in_effect(const result<json>& answer) {
  if (!answer.ok()) return unset_key(answer.error()) ? std::optional<bool>(true) : std::nullopt;
  const json& v = answer.value();
  if (!v.is_string()) return std::nullopt;
  return update_db_on(v.get_ref<const std::string&>());
}

std::optional<global_changes_settings> parse_global_changes(const result<json>& answer) {
  if (!answer.ok() || !answer.value().is_object()) return std::nullopt;
  const json& section = answer.value();
  global_changes_settings s;
  if (auto it = section.find("update_db"); it != section.end() && it->is_string()) s.update_db = update_db_on(it->get_ref<const std::string&>());
  auto number = [&section](const char* key, std::uint64_t fallback) {
    auto it = section.find(key);
    if (it == section.end()) return fallback;
    return parse_config_uint(*it).value_or(fallback);
  };
  s.max_write_delay_ms = number("max_write_delay", couchdb_default_max_write_delay_ms);
  s.max_event_delay_ms = number("max_event_delay", couchdb_default_max_event_delay_ms);
  return s;
}

std::optional<std::string> max_write_delay_warning(const global_changes_settings& s, bool live_feeds) {
  if (s.update_db && live_feeds && s.max_write_delay_ms > recommended_max_write_delay_ms) {
    return "CouchDB's [global_changes] max_write_delay is " + std::to_string(s.max_write_delay_ms) +
           " ms: a write made directly on the server reaches the clients' live feeds up to that much later "
           "(writes through the front door are not delayed). Set max_write_delay to " +
           std::to_string(recommended_max_write_delay_ms) + " or less";
  }
  return std::nullopt;
}

}  // namespace couchgate::replicator
