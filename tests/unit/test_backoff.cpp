#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "gateway/provisioner.hpp"
#include "replicator/backoff.hpp"

using couchgate::replicator::backoff_delay;
using couchgate::replicator::backoff_policy;
using std::chrono::milliseconds;

namespace {
auto fixed(double v) {
  return [v] { return v; };
}
}  // namespace

TEST_CASE("backoff_delay: exact values with rnd=0.5 grow exponentially and cap") {
  const backoff_policy p{};  // base 250ms, cap 30s
  const std::vector<std::int64_t> expected{187, 375, 750, 1500, 3000, 6000, 12000, 22500, 22500};
  for (std::uint32_t f = 1; f <= expected.size(); ++f) {
    CAPTURE(f);
    CHECK(backoff_delay(p, f, fixed(0.5)) == milliseconds{expected[f - 1]});
  }
  const backoff_policy round{milliseconds{1000}, milliseconds{8000}};
  CHECK(backoff_delay(round, 1, fixed(0.5)) == milliseconds{750});
  CHECK(backoff_delay(round, 2, fixed(0.5)) == milliseconds{1500});
  CHECK(backoff_delay(round, 3, fixed(0.5)) == milliseconds{3000});
  CHECK(backoff_delay(round, 4, fixed(0.5)) == milliseconds{6000});
  CHECK(backoff_delay(round, 5, fixed(0.5)) == milliseconds{6000});
}

TEST_CASE("backoff_delay: jitter spans [d/2, d)") {
  const backoff_policy p{milliseconds{1000}, milliseconds{8000}};
  CHECK(backoff_delay(p, 1, fixed(0.0)) == milliseconds{500});
  CHECK(backoff_delay(p, 1, fixed(0.999)) == milliseconds{999});
  CHECK(backoff_delay(p, 10, fixed(0.0)) == milliseconds{4000});
  CHECK(backoff_delay(p, 10, fixed(std::nextafter(1.0, 0.0))) == milliseconds{7999});
}

TEST_CASE("backoff_delay: failures==0 is treated as 1") {
  const backoff_policy p{};
  CHECK(backoff_delay(p, 0, fixed(0.5)) == backoff_delay(p, 1, fixed(0.5)));
}

TEST_CASE("backoff_delay: huge failure counts do not overflow") {
  const backoff_policy p{};
  for (std::uint32_t f : {31u, 32u, 33u, 63u, 64u, 65u, 1000u, std::numeric_limits<std::uint32_t>::max()}) {
    CAPTURE(f);
    CHECK(backoff_delay(p, f, fixed(0.0)) == milliseconds{15000});
    CHECK(backoff_delay(p, f, fixed(0.5)) == milliseconds{22500});
  }
  // A cap near the representable maximum: doubling must stop at the cap, not wrap.
  const auto max = milliseconds::max();
  const backoff_policy big{milliseconds{1}, max};
  CHECK(backoff_delay(big, 1000, fixed(0.0)) == milliseconds{max.count() / 2});
  const auto top = backoff_delay(big, 1000, fixed(0.999999));
  CHECK(top > milliseconds{max.count() / 2});
  CHECK(top <= max);
  const backoff_policy big_base{milliseconds{max.count() / 3}, max};
  CHECK(backoff_delay(big_base, 2, fixed(0.0)) == milliseconds{(max.count() / 3 * 2) / 2});
  CHECK(backoff_delay(big_base, 3, fixed(0.0)) == milliseconds{max.count() / 2});
}

TEST_CASE("backoff_delay: never zero, never above cap") {
  CHECK(backoff_delay({milliseconds{1}, milliseconds{30000}}, 1, fixed(0.0)) == milliseconds{1});
  CHECK(backoff_delay({milliseconds{0}, milliseconds{30000}}, 5, fixed(0.5)) == milliseconds{1});
  CHECK(backoff_delay({milliseconds{-5}, milliseconds{30000}}, 5, fixed(0.5)) == milliseconds{1});
  // base above cap: capped from the first retry.
  CHECK(backoff_delay({milliseconds{10000}, milliseconds{2000}}, 1, fixed(0.5)) == milliseconds{1500});
  // Sweep: always within [1ms, cap].
  const backoff_policy p{milliseconds{3}, milliseconds{1001}};
  for (std::uint32_t f = 0; f < 40; ++f) {
    for (double r : {0.0, 0.1, 0.5, 0.9, 0.999999}) {
      const auto d = backoff_delay(p, f, fixed(r));
      CHECK(d >= milliseconds{1});
      CHECK(d <= p.cap);
    }
  }
}

TEST_CASE("backoff_delay: out-of-range randomness is clamped") {
  const backoff_policy p{milliseconds{1000}, milliseconds{8000}};
  CHECK(backoff_delay(p, 1, fixed(-1.0)) == milliseconds{500});
  CHECK(backoff_delay(p, 1, fixed(std::nan(""))) == milliseconds{500});
  CHECK(backoff_delay(p, 1, fixed(7.0)) == milliseconds{1000});
  CHECK(backoff_delay(p, 4, fixed(7.0)) == milliseconds{8000});
}

TEST_CASE("reconcile_retry_delay: quick retries first, then the reconcile interval") {
  using couchgate::gateway::reconcile_retry_delay;
  const std::chrono::seconds hour{3600};
  // 1 s doubling, jittered into [d/2, d): 0.75 s, 1.5 s, 3 s, 6 s, 12 s with rnd=0.5.
  const std::vector<std::int64_t> quick{750, 1500, 3000, 6000, 12000};
  for (std::uint32_t f = 1; f <= quick.size(); ++f) {
    CAPTURE(f);
    CHECK(reconcile_retry_delay(f, hour, fixed(0.5)) == milliseconds{quick[f - 1]});
  }
  // A user who keeps failing no longer causes a full scan every minute.
  CHECK(reconcile_retry_delay(6, hour, fixed(0.5)) == milliseconds{3600000});
  CHECK(reconcile_retry_delay(100, hour, fixed(0.99)) == milliseconds{3600000});
  // Periodic reconcile off (interval 0): still retried, every 10 minutes.
  CHECK(reconcile_retry_delay(6, std::chrono::seconds{0}, fixed(0.5)) == milliseconds{600000});
  CHECK(reconcile_retry_delay(1, std::chrono::seconds{0}, fixed(0.5)) == milliseconds{750});
}

TEST_CASE("_users feed failures: an outage's at debug, one at info, two in a row a warning, unless an outage came between") {
  using couchgate::gateway::feed_failure_count;
  using couchgate::gateway::feed_failure_level;
  using couchgate::gateway::feed_failure_log_level;
  feed_failure_count f;
  SUBCASE("in a row, the server up all along") {
    CHECK(feed_failure_log_level(f, false, 0) == feed_failure_level::info);
    CHECK(feed_failure_log_level(f, false, 0) == feed_failure_level::warn);
    CHECK(feed_failure_log_level(f, false, 0) == feed_failure_level::warn);
  }
  SUBCASE("an outage the feed itself saw separates them") {
    CHECK(feed_failure_log_level(f, false, 0) == feed_failure_level::info);
    CHECK(feed_failure_log_level(f, true, 1) == feed_failure_level::debug);
    CHECK(feed_failure_log_level(f, false, 1) == feed_failure_level::info);
  }
  SUBCASE("an outage only other requests saw (the feed was backing off through it) separates them too") {
    // pouchdb-server answers the first reads after a restart with 500s: one per restart is info.
    CHECK(feed_failure_log_level(f, false, 1) == feed_failure_level::info);
    CHECK(feed_failure_log_level(f, false, 2) == feed_failure_level::info);
    CHECK(feed_failure_log_level(f, false, 2) == feed_failure_level::warn);
  }
  SUBCASE("outages before the first failure do not make it a second") {
    CHECK(feed_failure_log_level(f, false, 5) == feed_failure_level::info);
  }
  SUBCASE("a success in between starts again (the caller resets in_a_row)") {
    CHECK(feed_failure_log_level(f, false, 0) == feed_failure_level::info);
    f.in_a_row = 0;
    CHECK(feed_failure_log_level(f, false, 0) == feed_failure_level::info);
  }
}
