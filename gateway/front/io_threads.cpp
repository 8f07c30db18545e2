// Owns: the I/O threads (see io_threads.hpp).
#include "gateway/front/io_threads.hpp"

#include <algorithm>

namespace couchgate::gateway::front {

io_threads::io_threads(std::size_t threads) {
  const std::size_t cores = std::max<std::size_t>(1, std::thread::hardware_concurrency());
  const std::size_t n = threads == 0 ? cores : std::min(threads, cores);
  // Hint 1 (one thread runs each), which keeps Asio's locking: other threads post to a context and
  // the upstream pool detaches an idle socket of one context from another's thread (never an
  // UNSAFE hint here).
  for (std::size_t i = 0; i < n; ++i) contexts_.push_back(std::make_unique<net::io_context>(1));
}

io_threads::~io_threads() { stop(); }

void io_threads::start() {
  for (auto& c : contexts_) {
    guards_.emplace_back(c->get_executor());
    threads_.emplace_back([ctx = c.get()] { ctx->run(); });
  }
}

void io_threads::stop() {
  guards_.clear();
  for (auto& c : contexts_) c->stop();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
}

}  // namespace couchgate::gateway::front
