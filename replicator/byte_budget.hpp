#pragma once
// Owns: the process-wide bound on bytes of documents-with-attachments held in memory at once.
// Attachments travel inside JSON as base64 and couchgate holds a few copies of each body while
// copying it (the answer, the document, the request); without a bound, six 50 MB attachments
// copied by six workers at once took the process to 884 MB. Every transfer() that copies such a
// document first takes a lease on its size here (shared by fan-in workers and restore), and
// waits while the leases held would exceed the capacity.
//
// A lease larger than the capacity is granted when nothing else is held (it then runs alone):
// a document is never refused for its size here, only serialised.
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>

namespace couchgate::replicator {

class byte_budget {
 public:
  explicit byte_budget(std::size_t capacity) : capacity_(capacity == 0 ? 1 : capacity) {}
  byte_budget(const byte_budget&) = delete;
  byte_budget& operator=(const byte_budget&) = delete;

  class lease {
   public:
    lease() = default;
    lease(lease&& o) noexcept : owner_(o.owner_), bytes_(o.bytes_) { o.owner_ = nullptr; }
    lease& operator=(lease&& o) noexcept;
    lease(const lease&) = delete;
    lease& operator=(const lease&) = delete;
    ~lease() { release(); }
    void release();
    std::size_t bytes() const { return bytes_; }

   private:
    friend class byte_budget;
    lease(byte_budget* owner, std::size_t bytes) : owner_(owner), bytes_(bytes) {}
    byte_budget* owner_ = nullptr;
    std::size_t bytes_ = 0;
  };

  // Blocks until `bytes` fit (or nothing else is held); the lease gives them back.
  lease acquire(std::size_t bytes);
  // Whether acquire(bytes) would be granted now.
  bool fits(std::size_t bytes) const;

  std::size_t capacity() const { return capacity_; }
  std::size_t in_use() const;
  std::size_t peak() const;            // most bytes held at once
  std::uint64_t waits() const;         // acquisitions that had to wait

 private:
  bool admissible(std::size_t bytes) const { return in_use_ == 0 || in_use_ + bytes <= capacity_; }
  void give_back(std::size_t bytes);

  const std::size_t capacity_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::size_t in_use_ = 0;
  std::size_t peak_ = 0;
  std::uint64_t waits_ = 0;
};

}  // namespace couchgate::replicator
