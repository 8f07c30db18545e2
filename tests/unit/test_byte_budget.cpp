// Tests for replicator/byte_budget.hpp (the bound on attachment bytes in memory) and
// transfer's attachment_wire_bytes (what a document with attachments is charged).
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "replicator/byte_budget.hpp"
#include "replicator/transfer.hpp"

using namespace couchgate::replicator;
using namespace std::chrono_literals;

TEST_CASE("byte_budget: leases beyond the capacity wait; one larger than it runs alone; peak never exceeds it") {
  byte_budget b(100);
  {
    auto a = b.acquire(60);
    CHECK(b.in_use() == 60);
    CHECK(b.fits(40));
    CHECK_FALSE(b.fits(41));
    auto c = b.acquire(40);
    CHECK(b.in_use() == 100);
    CHECK_FALSE(b.fits(1));
  }
  CHECK(b.in_use() == 0);
  CHECK(b.fits(500));  // larger than the capacity: granted when nothing else is held
  {
    auto big = b.acquire(500);
    CHECK_FALSE(b.fits(1));
    auto moved = std::move(big);
    CHECK(b.in_use() == 500);
  }
  CHECK(b.in_use() == 0);
  CHECK(b.waits() == 0);
}

TEST_CASE("byte_budget: eight threads taking 30-byte leases of a 100-byte budget never hold more than 90") {
  byte_budget b(100);
  std::atomic<std::size_t> held{0}, most{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 8; ++t) {
    ts.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        auto l = b.acquire(30);
        const auto now = held += 30;
        auto m = most.load();
        while (now > m && !most.compare_exchange_weak(m, now)) {
        }
        std::this_thread::yield();
        held -= 30;
      }
    });
  }
  for (auto& t : ts) t.join();
  CHECK(most.load() <= 90);
  CHECK(b.peak() <= 90);
  CHECK(b.peak() >= 30);
  CHECK(b.in_use() == 0);
}

TEST_CASE("byte_budget: a waiting lease is granted when another is given back") {
  byte_budget b(10);
  auto first = b.acquire(8);
  std::atomic<bool> got{false};
  std::thread t([&] {
    auto l = b.acquire(5);
    got = true;
  });
  // It cannot have been granted while `first` is held.
  const auto until = std::chrono::steady_clock::now() + 2s;
  while (b.waits() == 0 && std::chrono::steady_clock::now() < until) std::this_thread::yield();
  CHECK(b.waits() == 1);
  CHECK_FALSE(got.load());
  first.release();
  t.join();
  CHECK(got.load());
}

TEST_CASE("attachment_wire_bytes: stubs' base64 sizes (encoded_length when compressed) plus the text") {
  const std::string doc =
      R"({"_id":"a","_rev":"1-x","_attachments":{"big.bin":{"content_type":"application/octet-stream","revpos":1,)"
      R"("digest":"md5-x","length":30000000,"stub":true},"t.txt":{"content_type":"text/plain","revpos":1,"digest":"md5-y",)"
      R"("length":9000,"encoding":"gzip","encoded_length":300,"stub":true}}})";
  auto n = attachment_wire_bytes(doc);
  REQUIRE(n);
  const std::size_t base64 = 40000000 + 400;
  CHECK(*n >= base64 + doc.size());
  CHECK(*n <= base64 + doc.size() + 1000);  // a small allowance per attachment for its JSON
  CHECK(attachment_wire_bytes(R"({"_id":"a","_rev":"1-x"})") == 24u);
  CHECK_FALSE(attachment_wire_bytes(R"({"_id":"a","_attachments":{"x":{"stub":true,"length":"big"}}})"));
  CHECK_FALSE(attachment_wire_bytes("not json"));
}
