// http_pool's connections kept for change feeds (options::feed_connections), against a local
// HTTP server (cpp-httplib on 127.0.0.1, a free port) whose work endpoint holds every answer
// until the test lets them go: with more work submitted than the pool has connections, a feed's
// longpoll submitted after it still starts at once (the daemon's `_db_updates` feed, which wakes
// the front door's parked clients, must never queue behind the fan-in's requests), while work
// never holds more than its share.
#include <doctest/doctest.h>
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "replicator/transport/http_pool.hpp"

namespace r = couchgate::replicator;

namespace {
struct holding_server {
  httplib::Server srv;
  int port = 0;
  std::thread th;
  std::mutex mu;
  std::condition_variable cv;
  bool released = false;
  int work_in_server = 0;  // work requests the server is holding now
  int work_peak = 0;
  std::vector<std::string> arrivals;  // the `n` of each work request, in the order they arrived
  holding_server() {
    srv.new_task_queue = [] { return new httplib::ThreadPool(16); };
    srv.Get("/work", [this](const httplib::Request& req, httplib::Response& res) {
      std::unique_lock lk(mu);
      arrivals.push_back(req.get_param_value("n"));
      ++work_in_server;
      work_peak = std::max(work_peak, work_in_server);
      cv.notify_all();
      cv.wait(lk, [this] { return released; });
      --work_in_server;
      res.set_content(R"({"ok":true})", "application/json");
    });
    srv.Get("/feed", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(R"({"results":[],"last_seq":"1"})", "application/json");
    });
    port = srv.bind_to_any_port("127.0.0.1");
    th = std::thread([this] { srv.listen_after_bind(); });
  }
  ~holding_server() {
    release();
    srv.stop();
    th.join();
  }
  void release() {
    std::lock_guard lk(mu);
    released = true;
    cv.notify_all();
  }
  // Waits (with a deadline) until the server holds `n` work requests.
  bool holding(int n) {
    std::unique_lock lk(mu);
    return cv.wait_for(lk, std::chrono::seconds(10), [&] { return work_in_server >= n; });
  }
};

r::http_request get(const std::string& target, bool feed);

// One quick answer first: the pool's gate sends a single request until the server has accepted
// its credential (server_gate.hpp), and the held work must not be that one.
void accepted(r::http_pool& pool) {
  std::promise<r::http_response> p;
  auto f = p.get_future();
  pool.submit(get("/feed", false), [&p](r::http_response res) { p.set_value(std::move(res)); });
  REQUIRE(f.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
  REQUIRE(f.get().status == 200);
}

r::http_request get(const std::string& target, bool feed) {
  r::http_request req;
  req.target = target;
  req.feed = feed;
  req.timeout = std::chrono::seconds(20);
  return req;
}

// `n` work requests (GET /work?n=<first + i>, follow-ups when told), their answers to come.
std::vector<std::future<r::http_response>> submit_work(r::http_pool& pool, int n, int first = 0, bool follow_up = false) {
  std::vector<std::future<r::http_response>> work;
  for (int i = 0; i < n; ++i) {
    auto p = std::make_shared<std::promise<r::http_response>>();
    work.push_back(p->get_future());
    auto req = get("/work?n=" + std::to_string(first + i), false);
    req.follow_up = follow_up;
    pool.submit(std::move(req), [p](r::http_response res) { p->set_value(std::move(res)); });
  }
  return work;
}

void all_answered(std::vector<std::future<r::http_response>>& work) {
  for (auto& f : work) {
    REQUIRE(f.wait_for(std::chrono::seconds(20)) == std::future_status::ready);
    CHECK(f.get().status == 200);
  }
}
}  // namespace

TEST_CASE("http_pool: a change feed's longpoll starts at once though more work waits than there are connections") {
  holding_server server;
  // Four connections, one kept for the feed: work holds at most three at once.
  r::http_pool::options o{"http://127.0.0.1:" + std::to_string(server.port), "", "", 4, "couchgate-test"};
  o.feed_connections = 1;
  r::http_pool pool(o);
  accepted(pool);
  auto work = submit_work(pool, 6);
  REQUIRE(server.holding(3));
  // The other three wait in the pool, not in libcurl's queue.
  CHECK(pool.stats().queued == 3);
  auto feed = std::make_shared<std::promise<r::http_response>>();
  auto feed_answer = feed->get_future();
  pool.submit(get("/feed", true), [feed](r::http_response res) { feed->set_value(std::move(res)); });
  const bool answered = feed_answer.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
  CHECK_MESSAGE(answered, "the feed waited behind the work");
  if (answered) {
    const auto res = feed_answer.get();
    CHECK(res.kind == r::error_kind::none);
    CHECK(res.status == 200);
  }
  // Work never took the feed's connection.
  {
    std::lock_guard lk(server.mu);
    CHECK(server.work_peak == 3);
  }
  server.release();
  all_answered(work);
  CHECK(pool.stats().queued == 0);
  CHECK(pool.stats().peak_sockets <= 4);
}

TEST_CASE("http_pool: a follow-up starts before the work that waited longer, within the work connections") {
  holding_server server;
  // Two connections, one kept for feeds: work runs one request at a time.
  r::http_pool::options o{"http://127.0.0.1:" + std::to_string(server.port), "", "", 2, "couchgate-test"};
  o.feed_connections = 1;
  r::http_pool pool(o);
  accepted(pool);
  auto work = submit_work(pool, 3, 0);              // 0 is held; 1 and 2 wait
  REQUIRE(server.holding(1));
  auto follow_ups = submit_work(pool, 2, 10, true);  // submitted last, waiting with them
  // (submit hands them to the pool's thread, which queues them a moment later)
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (pool.stats().queued < 4 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  REQUIRE(pool.stats().queued == 4);
  server.release();
  all_answered(work);
  all_answered(follow_ups);
  std::lock_guard lk(server.mu);
  CHECK(server.arrivals == std::vector<std::string>{"0", "10", "11", "1", "2"});
  CHECK(server.work_peak == 1);
}

TEST_CASE("http_pool: with no connection kept for feeds, work may use them all (the restore tool's pool)") {
  holding_server server;
  r::http_pool pool(r::http_pool::options{"http://127.0.0.1:" + std::to_string(server.port), "", "", 4, "couchgate-test"});
  accepted(pool);
  auto work = submit_work(pool, 4);
  CHECK(server.holding(4));
  server.release();
  all_answered(work);
}

TEST_CASE("http_pool: while the credential is unproven, work (not a feed's longpoll) is sent as the probe") {
  holding_server server;
  r::http_pool::options o{"http://127.0.0.1:" + std::to_string(server.port), "", "", 4, "couchgate-test"};
  o.feed_connections = 1;
  r::http_pool pool(o);
  // A first probe that gets no answer (the request times out): the credential stays unproven,
  // so the next request to start is a probe again, and everything else waits for it.
  auto first = get("/work", false);
  first.timeout = std::chrono::milliseconds(1500);
  std::promise<r::http_response> first_p;
  auto first_f = first_p.get_future();
  pool.submit(first, [&first_p](r::http_response res) { first_p.set_value(std::move(res)); });
  REQUIRE(server.holding(1));
  // Meanwhile a feed's longpoll (held by the server until the end) and a quick work request wait.
  auto feed = std::make_shared<std::promise<r::http_response>>();
  auto feed_f = feed->get_future();
  pool.submit(get("/work", true), [feed](r::http_response res) { feed->set_value(std::move(res)); });
  std::promise<r::http_response> quick_p;
  auto quick_f = quick_p.get_future();
  pool.submit(get("/feed", false), [&quick_p](r::http_response res) { quick_p.set_value(std::move(res)); });
  REQUIRE(first_f.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
  CHECK(first_f.get().kind != r::error_kind::none);
  // The quick request is the next probe: answered while the longpoll is still held.
  const bool answered = quick_f.wait_for(std::chrono::seconds(5)) == std::future_status::ready;
  CHECK_MESSAGE(answered, "the longpoll was sent as the probe and held everything behind it");
  if (answered) CHECK(quick_f.get().status == 200);
  server.release();
  REQUIRE(feed_f.wait_for(std::chrono::seconds(20)) == std::future_status::ready);
  CHECK(feed_f.get().status == 200);
}
