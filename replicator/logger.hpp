#pragma once
// Owns: one named spdlog logger per subsystem ("fanin", "detector", "provision", ...), created on
// first use from the default logger's sinks and format, and registered so that a level change
// (SIGHUP reload) reaches all of them.
#include <spdlog/spdlog.h>

#include <memory>
#include <string>

namespace couchgate::replicator {

std::shared_ptr<spdlog::logger> named_logger(const std::string& name);

}  // namespace couchgate::replicator
