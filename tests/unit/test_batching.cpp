// Batching limits: docs and bytes per central write, ids per _revs_diff / _bulk_get.
#include <doctest/doctest.h>

#include "replicator/batching.hpp"

using couchgate::replicator::plan_batches;
using ranges = std::vector<std::pair<std::size_t, std::size_t>>;

TEST_CASE("batches are cut at max_items") {
  CHECK(plan_batches(std::vector<std::size_t>(5, 10), 2, 1000) == ranges{{0, 2}, {2, 4}, {4, 5}});
  CHECK(plan_batches(5, 2) == ranges{{0, 2}, {2, 4}, {4, 5}});
  CHECK(plan_batches(4, 2) == ranges{{0, 2}, {2, 4}});
  CHECK(plan_batches(0, 2).empty());
  CHECK(plan_batches(std::vector<std::size_t>{}, 2, 10).empty());
}

TEST_CASE("batches are cut before max_bytes would be exceeded") {
  // 40+40 = 80 <= 100, +40 would be 120.
  CHECK(plan_batches({40, 40, 40, 40}, 100, 100) == ranges{{0, 2}, {2, 4}});
  // Exactly max_bytes fits.
  CHECK(plan_batches({50, 50, 50}, 100, 100) == ranges{{0, 2}, {2, 3}});
}

TEST_CASE("an item larger than max_bytes travels alone, and nothing is dropped") {
  auto b = plan_batches({10, 500, 10, 10}, 100, 100);
  CHECK(b == ranges{{0, 1}, {1, 2}, {2, 4}});
  std::size_t covered = 0;
  for (auto [from, to] : b) {
    CHECK(from == covered);
    covered = to;
  }
  CHECK(covered == 4);
}

TEST_CASE("max_items of 0 is treated as 1 (never an endless loop)") {
  CHECK(plan_batches(3, 0) == ranges{{0, 1}, {1, 2}, {2, 3}});
  CHECK(plan_batches({1, 1}, 0, 100) == ranges{{0, 1}, {1, 2}});
}
