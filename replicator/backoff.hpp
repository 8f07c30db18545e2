#pragma once
// Owns: capped, jittered exponential backoff. Pure: randomness is injected, so tests pin it.
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>

namespace couchgate::replicator {

struct backoff_policy {
  std::chrono::milliseconds base{250};
  std::chrono::milliseconds cap{30000};
};

// Uniform random in [0, 1): injected so tests are deterministic.
using uniform_source = std::function<double()>;

// The production source: a seeded Mersenne twister owned by the returned function.
inline uniform_source random_uniform_source() {
  auto rng = std::make_shared<std::mt19937_64>(std::random_device{}());
  return [rng] { return std::uniform_real_distribution<double>(0, 1)(*rng); };
}

// Delay before attempt number `failures` (1 = first retry): "equal jitter", i.e.
// d = min(cap, base * 2^(failures-1)); result in [d/2, d). Never zero, never above cap.
std::chrono::milliseconds backoff_delay(const backoff_policy& p, std::uint32_t failures,
                                        const uniform_source& rnd);

}  // namespace couchgate::replicator
