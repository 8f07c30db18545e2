#pragma once
// Owns: log output setup: stderr, text or JSON lines, level; reapplied on SIGHUP.
#include "gateway/config.hpp"

namespace couchgate::gateway {

void setup_logging(const log_config& cfg);
// Escapes a string for a JSON string literal (also used by the JSON log formatter).
std::string json_escape(std::string_view s);

}  // namespace couchgate::gateway
