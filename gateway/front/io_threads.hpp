#pragma once
// Owns: the front door's I/O threads: one io_context per thread, one thread per core at most.
// A connection lives on one context for its whole life, so nothing a connection owns is ever
// touched by two threads (no strands needed); what threads share (upstream pool bookkeeping,
// caches, limits) has its own mutex.
#include <cstddef>
#include <memory>
#include <thread>
#include <vector>

#include "gateway/front/asio.hpp"

namespace couchgate::gateway::front {

class io_threads {
 public:
  // threads = 0: one per core; never more than the cores (at least 1).
  explicit io_threads(std::size_t threads);
  ~io_threads();
  io_threads(const io_threads&) = delete;
  io_threads& operator=(const io_threads&) = delete;

  std::size_t size() const { return contexts_.size(); }
  net::io_context& context(std::size_t i) { return *contexts_[i]; }
  void start();
  // Stops every context and joins the threads; pending work is abandoned (destroyed with the
  // contexts).
  void stop();

 private:
  using guard = net::executor_work_guard<net::io_context::executor_type>;
  std::vector<std::unique_ptr<net::io_context>> contexts_;
  std::vector<guard> guards_;
  std::vector<std::thread> threads_;
};

}  // namespace couchgate::gateway::front
