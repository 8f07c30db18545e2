#pragma once
// A transport (replicator/transport/transport.hpp) that answers from a script, for unit tests of
// everything above the seam: couch_client, transfer, state_store, fanin, the feeds, the
// provisioner, session_auth. Rules are tried in the order added; the first whose method and
// target substring match and that has answers left answers (a rule may compute its answer from
// the request). Every request is recorded. A request no rule answers is recorded as unexpected
// and gets a network error, except a longpoll feed (`feed=longpoll`), which waits until close()
// (as a quiet feed does) and then ends as cancelled (as at shutdown).
// Answers are given on the caller's thread, before submit returns.
// scripted_couch and scripted_fanin are the fixtures the seam tests share: the engine's pieces
// over one scripted server.
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>

#include "replicator/fanin.hpp"
#include "replicator/metrics.hpp"
#include "replicator/state_store.hpp"
#include "replicator/transfer.hpp"
#include "replicator/transport/couch_client.hpp"
#include "replicator/transport/transport.hpp"
#include "tests/support/metric_value.hpp"

namespace couchgate::test {

namespace r = couchgate::replicator;

// An answer with a status and a body (and a Set-Cookie / Retry-After header when given).
r::http_response answer(long status, std::string body, std::string set_cookie = {});
// A GET of `target` with the request defaults.
r::http_request get_request(std::string target);
// Request timeouts short enough for a test (request 5 s, feed 1 s, heartbeat 0.5 s).
inline const r::timeouts quick_timeouts{std::chrono::milliseconds(5000), std::chrono::milliseconds(1000),
                                        std::chrono::milliseconds(500)};
// A `_revs_diff` answer that has every revision asked about missing (a responder).
r::http_response all_missing(const r::http_request& q);
// A transport failure (error_kind::network unless told).
r::http_response failure(r::error_kind kind = r::error_kind::network, std::string error = "connection reset by peer");

// Where feed_rows' documents come from and go to: read from `source_db` as source_prefix + id,
// written to `target_db` as target_prefix + id, in the unit `unit` (fan-in: the source database;
// restore: the target).
struct row_route {
  std::string unit, source_db, target_db;
  std::string source_prefix, target_prefix;
};
// Rows for transfer(), one per id: a first-generation document ({"n": its position, from 1})
// whose body came with the feed (parsed by parse_changes, so no _bulk_get is needed).
std::vector<r::change_row> feed_rows(const row_route& route, const std::vector<std::string>& ids);

class scripted_transport final : public r::transport {
 public:
  using responder = std::function<r::http_response(const r::http_request&)>;
  struct recorded {
    std::string method, target, body, cookie, authorization;
    bool cookie_may_be_stale = false;
    bool follow_up = false;
  };

  // times < 0: unlimited.
  scripted_transport& on(std::string method, std::string target_contains, r::http_response a, int times = 1);
  scripted_transport& on(std::string method, std::string target_contains, responder f, int times = 1);

  void submit(r::http_request req, callback done) override;

  std::vector<recorded> requests() const;
  std::size_t count(const std::string& method, const std::string& target_contains) const;
  std::vector<std::string> unexpected() const;  // "METHOD target" of requests no rule answered
  // Rules with answers left (unlimited ones not counted).
  std::size_t pending() const;
  // Waits (up to `limit`) until pred() holds, re-checking after every request.
  bool wait_for(const std::function<bool()>& pred, std::chrono::milliseconds limit = std::chrono::seconds(5));
  // Unblocks the feeds waiting for a rule, and every later one, with error_kind::cancelled.
  void close();
  // From now on a longpoll no rule answers does not hold the submitting thread: submit returns
  // and the answer (cancelled) comes at close(), as with a real, asynchronous transport. For
  // callers that keep working while a feed waits (the provisioner's pipeline).
  void park_quiet_feeds();
  // The next request matching (method, target) is not answered when submitted: submit returns,
  // and `a` is given when release_held() is called (from the test's thread), as a slow server's
  // answer would come; cancelled at close() if never released.
  void hold(std::string method, std::string target_contains, r::http_response a);
  std::size_t held() const;  // submitted and waiting for release_held()
  void release_held();
  ~scripted_transport() override;

 private:
  struct rule {
    std::string method, target;
    responder f;
    int times;
  };
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<rule> rules_;
  std::vector<recorded> log_;
  std::vector<std::string> unexpected_;
  bool closed_ = false;
  bool park_feeds_ = false;
  std::vector<callback> parked_;  // quiet feeds waiting for close() (park_quiet_feeds)
  struct hold_rule {
    std::string method, target;
    r::http_response answer;
    bool used = false;
  };
  std::vector<hold_rule> holds_;
  std::vector<std::pair<callback, r::http_response>> held_;  // submitted, waiting for release_held()
};

// The lines a named logger (replicator/logger.hpp) writes while this lives.
class captured_log {
 public:
  explicit captured_log(const std::string& logger);
  ~captured_log();
  captured_log(const captured_log&) = delete;
  captured_log& operator=(const captured_log&) = delete;
  std::string all() const;
  std::size_t count(const std::string& part) const;  // lines containing `part`

 private:
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink_;
  std::shared_ptr<spdlog::logger> logger_;
};

// A scripted server with what every piece above the seam works with: a client with quick
// timeouts, a metrics registry and the state database "cg_state" (nothing asked yet).
struct scripted_couch {
  scripted_transport server;
  r::couch_client client{server, quick_timeouts};
  r::registry metrics;
  r::state_store state{client, "cg_state"};
};

// fan-in options with the central database "central", the rest at their defaults.
r::fanin_options central_options();

// scripted_couch with a fan-in into "central" (not loaded, not started).
struct scripted_fanin : scripted_couch {
  explicit scripted_fanin(r::fanin_options o = central_options()) : fan{client, state, metrics, std::move(o)} {}
  r::fanin fan;
};

}  // namespace couchgate::test
