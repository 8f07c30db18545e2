#include "replicator/backoff.hpp"

#include <algorithm>
#include <cmath>

namespace couchgate::replicator {

std::chrono::milliseconds backoff_delay(const backoff_policy& p, std::uint32_t failures,
                                        const uniform_source& rnd) {
  using ms = std::chrono::milliseconds;
  using rep = ms::rep;
  const rep hi = std::max<rep>(p.cap.count(), 1);  // never zero wins over a cap below 1ms
  const rep cap = std::max<rep>(p.cap.count(), 0);
  rep d = std::clamp<rep>(p.base.count(), 0, cap);

  // d = min(cap, base * 2^(failures-1)). Doubling stops as soon as the cap is reached, so the
  // loop runs at most ~63 times whatever `failures` is, and never overflows.
  if (d > 0) {
    for (std::uint32_t i = 1; i < failures && d < cap; ++i) d = (d > cap - d) ? cap : d * 2;
  }

  // Equal jitter: d/2 + r * (d/2), r in [0, 1). A misbehaving source is clamped.
  double r = rnd ? rnd() : 0.0;
  if (!(r >= 0.0)) r = 0.0;  // also catches NaN
  if (r > 1.0) r = 1.0;
  const rep half = d / 2;
  const auto jitter = static_cast<rep>(std::floor(r * static_cast<double>(d - half)));
  const rep result = half + std::min(jitter, d - half);
  return ms{std::clamp<rep>(result, 1, hi)};
}

}  // namespace couchgate::replicator
