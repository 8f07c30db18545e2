#pragma once
// Owns: how a sequence of items is cut into requests: at most max_items per batch and, when
// sizes are given, at most max_bytes per batch — except that an item larger than max_bytes
// travels alone (it must go somewhere; CouchDB's max_document_size is the real limit).
// Pure, so the limits are unit-tested without a server.
#include <cstddef>
#include <utility>
#include <vector>

namespace couchgate::replicator {

// [begin, end) index ranges covering 0..sizes.size() in order.
std::vector<std::pair<std::size_t, std::size_t>> plan_batches(const std::vector<std::size_t>& sizes,
                                                              std::size_t max_items, std::size_t max_bytes);
// Count-only variant.
std::vector<std::pair<std::size_t, std::size_t>> plan_batches(std::size_t count, std::size_t max_items);

}  // namespace couchgate::replicator
