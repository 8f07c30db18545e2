#pragma once
// Reading one metric out of a registry's rendering: for unit and integration tests alike (header
// only, as the unit suite does not build tests/support's sources).
#include <optional>
#include <string>

#include "replicator/metrics.hpp"

namespace couchgate::test {

// The value of a metric (its full name with labels, e.g. `x_total{a="b"}`) in metrics.render(),
// or nullopt when it is not there.
inline std::optional<double> metric_value(const replicator::registry& metrics, const std::string& name) {
  const std::string text = "\n" + metrics.render();
  const auto at = text.find("\n" + name + " ");
  if (at == std::string::npos) return std::nullopt;
  return std::stod(text.substr(at + name.size() + 2));
}

}  // namespace couchgate::test
