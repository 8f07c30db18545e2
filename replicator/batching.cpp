// Owns: batch planning (see batching.hpp).
#include "replicator/batching.hpp"

#include <algorithm>

namespace couchgate::replicator {

std::vector<std::pair<std::size_t, std::size_t>> plan_batches(const std::vector<std::size_t>& sizes,
                                                              std::size_t max_items, std::size_t max_bytes) {
  std::vector<std::pair<std::size_t, std::size_t>> out;
  max_items = std::max<std::size_t>(1, max_items);
  std::size_t begin = 0, bytes = 0;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    const bool full = i - begin >= max_items || (i > begin && bytes + sizes[i] > max_bytes);
    if (full) {
      out.emplace_back(begin, i);
      begin = i;
      bytes = 0;
    }
    bytes += sizes[i];
  }
  if (begin < sizes.size()) out.emplace_back(begin, sizes.size());
  return out;
}

std::vector<std::pair<std::size_t, std::size_t>> plan_batches(std::size_t count, std::size_t max_items) {
  std::vector<std::pair<std::size_t, std::size_t>> out;
  max_items = std::max<std::size_t>(1, max_items);
  for (std::size_t b = 0; b < count; b += max_items) out.emplace_back(b, std::min(count, b + max_items));
  return out;
}

}  // namespace couchgate::replicator
