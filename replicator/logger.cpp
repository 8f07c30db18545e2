// Owns: get-or-create of subsystem loggers (see logger.hpp).
#include "replicator/logger.hpp"

#include <mutex>

namespace couchgate::replicator {

std::shared_ptr<spdlog::logger> named_logger(const std::string& name) {
  static std::mutex mu;
  std::lock_guard lk(mu);
  if (auto l = spdlog::get(name)) return l;
  auto l = spdlog::default_logger()->clone(name);
  spdlog::register_logger(l);
  return l;
}

}  // namespace couchgate::replicator
