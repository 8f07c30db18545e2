#pragma once
// Owns: what the front door does with one request: the secure-request check, routing, the
// per-address auth-failure limit, learning the caller's name from CouchDB's GET /_session with
// the caller's own credential (cached under its SHA-256), per-user concurrency, and forwarding
// with both bodies streamed through a fixed buffer (chunked or sized, 100-continue answered
// here, gzip passed through undecoded) over a leased upstream connection. The client's
// credential is forwarded unchanged and CouchDB decides; couchgate's own admin credentials are
// never used here. Access log lines name the user, never a credential.
//
// Parked live feeds (issue 14) plug in after dispatch(): once it knows the route and the
// caller's database, handle() runs a `_changes` longpoll/continuous/eventsource request as
// serve_feed() (live_feeds.cpp) instead of forward(). Nothing here ties a client connection to an upstream
// socket: leases are taken per upstream exchange (who_is, forward, each feed read), so a parked
// client holds only its session coroutine.
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "gateway/front/auth_limits.hpp"
#include "gateway/front/cors.hpp"
#include "gateway/front/feed_park.hpp"
#include "gateway/front/front_metrics.hpp"
#include "gateway/front/http_server.hpp"
#include "gateway/front/local.hpp"
#include "gateway/front/responses.hpp"
#include "gateway/front/route.hpp"
#include "gateway/front/secure_request.hpp"
#include "gateway/front/upstream_pool.hpp"

namespace couchgate::gateway::front {


struct forwarder_options {
  std::string db_prefix = "userdb-";
  bool shared_enabled = false;
  std::string shared_db;
  secure_policy secure;
  std::string scheme_header = "X-Forwarded-Proto";
  std::chrono::milliseconds client_timeout{60000};   // each body read/write on the client side
  std::chrono::milliseconds upstream_timeout{300000};  // each read/write on the upstream side
  std::chrono::milliseconds session_cache_ttl{10000};
  std::chrono::milliseconds route_cache_ttl{600000};  // live feeds only: credential -> user, see who_is()
  std::size_t max_requests_per_user = 16;            // in flight per user; more wait in the user's queue
  std::size_t user_queue_length = 1024;              // waiting per user; more get 429
  std::chrono::milliseconds user_queue_timeout{60000};  // longest wait in that queue, then 503
  std::size_t auth_failure_limit = 20;
  std::chrono::milliseconds auth_failure_window{60000};
  std::size_t relay_buffer = 64u << 10;  // bytes held per direction per request
  local_handler local;                   // empty: local routes answer 404
  std::size_t local_body_limit = 64u << 10;
  std::size_t local_threads = 4;         // workers for local handlers (each may wait on CouchDB)
  std::size_t local_rate_limit = 20;     // local requests per address per window (429 above)
  std::chrono::milliseconds local_rate_window{60000};
  cors_policy cors;                      // CORS headers on couchgate's own answers and preflights
  caller_provisioner provision_caller;  // empty: callers' databases are left to the provisioner
  feed_registry* feeds = nullptr;        // parked live feeds; null: feeds are forwarded like any request
  feed_read_gate* feed_gate = nullptr;   // turns to read among the live feeds (required with `feeds`)
  std::size_t feed_body_limit = 64u << 10;  // a POST _changes body (doc_ids, selector) kept for every read
  std::size_t feed_answer_limit = 64u << 20;  // one upstream `_changes` answer read for a feed
  // Test fail point (COUCHGATE_TEST_FEED_CHECK_DELAY_MS): each feed's first answer is held this
  // long before it is looked at, so a test can write in the window between check and park.
  std::chrono::milliseconds test_check_delay{0};
};

// The CORS headers for an answer couchgate writes itself to `request` (write_response's own
// headers plus `extra`), appended to `extra`.
header_list with_cors(const cors_policy& cors, const http::fields& request, header_list extra);

// The credential a request carries: its Authorization value and its first AuthSession cookie
// (the one CouchDB reads). Used only as the cache key's input (hashed) and forwarded untouched in
// the headers themselves.
std::string credential_of(const http::fields& fields);

class forwarder {
 public:
  using clock_fn = std::function<clock_type::time_point()>;
  forwarder(forwarder_options options, upstream_pool& pool, front_metrics& metrics, clock_fn now = clock_type::now);
  ~forwarder();  // joins the local handlers' workers

  // The http_server handler.
  net::awaitable<bool> handle(server_exchange& exchange);

  const session_cache& sessions() const { return sessions_; }
  // `name`'s `_users` document changed (from the provisioner's `_users` feed, any thread): the
  // credentials cached as theirs are asked about again, and their parked live feeds ask now
  // (feed_registry::recheck_user) rather than at the session cache lifetime.
  void user_changed(const std::string& name);
  std::size_t user_queued() const { return slots_.queued(); }
  // SIGHUP: takes the limits a reload may change from `options` (client_timeout,
  // session_cache_ttl, max_requests_per_user, auth_failure_*, local_rate_*); the rest is ignored.
  void apply_limits(const forwarder_options& options);

 private:
  struct outcome {
    unsigned status = 0;
    std::string user;
  };
  struct identity {
    enum class kind { user, rejected, unavailable } k = kind::unavailable;
    std::string name;
    std::optional<policy::session_user> session;  // when just asked (not from the cache)
    // false: named by the route memo only; CouchDB has not accepted the credential within
    // session_cache_ttl (a live feed then parks only after its first check, or after GET
    // /_session accepted the credential when that check may be skipped).
    bool verified = true;
  };
  struct upstream_answer {
    enum class kind { answered, busy, unreachable, too_large } k = kind::unreachable;
    unsigned status = 0;
    std::string body;
    std::string set_cookie;  // CouchDB's refreshed `Set-Cookie: AuthSession=...`, if it sent one
  };
  // What a request becomes once dispatch() has checked it: answered there, or a parked live
  // feed, or forwarded. handle() runs the last two after dispatch()'s frame is gone: a parked
  // feed or a request queued for the pool (10 000 at once) holds handle()'s frame with this in
  // it and serve_feed()'s or forward()'s, not dispatch()'s.
  struct slot_hold;
  struct next_step;
  net::awaitable<bool> dispatch(server_exchange& ex, const route& rt, outcome& out, next_step& next);
  enum class admitted { yes, queue_full, timed_out };
  // A slot among the user's max_requests_per_user, waiting in the user's FIFO queue if need be.
  net::awaitable<admitted> admit(const std::string& user);
  // `pool_wait`: how long to wait for an upstream connection (default: the pool's own wait).
  // `live_feed`: the request is a live `_changes` feed, whose every upstream read carries the
  // credential: past the session cache, the route memo (routes_) may name the user.
  net::awaitable<identity> who_is(server_exchange& ex, const std::string& credential,
                                  std::optional<std::chrono::milliseconds> pool_wait = std::nullopt,
                                  bool live_feed = false);
  // One GET /_session with the caller's `Authorization` and `Cookie` header values: who CouchDB
  // says the credential names (stored in both caches under `key` when accepted).
  net::awaitable<identity> ask_session(std::size_t context, std::string key, std::string authorization, std::string cookie,
                                       std::optional<std::chrono::milliseconds> pool_wait, pool_priority priority);
  // A parked live feed's credential re-check (issue 14), asked apart from the feed as background
  // work on the pool (upstream_pool.hpp: below every normal request, at most a quarter of the pool): the
  // feed keeps serving wakes while it waits, a write's delivery never queues behind re-checks,
  // and the feeds of one credential share one check. recheck() joins the credential's check in
  // flight or starts one on `executor`; `notify` is called (from any thread) once it is answered.
  // `urgent_since`: the user's `_users` document changed then (feed_registry::recheck_user), so
  // the check is a normal request with the pool's normal wait, apart from a background check in
  // flight, and joins only an urgent check sent at or after that moment.
  struct credential_check {
    std::optional<identity> result;             // under checks_mu_
    std::vector<std::function<void()>> notify;  // under checks_mu_
    clock_type::time_point sent{};
  };
  std::shared_ptr<credential_check> recheck(net::any_io_executor executor, std::size_t context,
                                            const http::fields& request, const std::string& key,
                                            std::function<void()> notify,
                                            std::optional<clock_type::time_point> urgent_since = std::nullopt);
  std::optional<identity> recheck_result(const credential_check& check);
  net::awaitable<void> run_recheck(std::size_t context, std::string authorization, std::string cookie, std::string key,
                                   std::string slot, bool urgent, std::shared_ptr<credential_check> check);
  // CouchDB refused the credential (`key`: its session_cache key): forgotten in both caches, so
  // the next request asks GET /_session again.
  void forget_credential(const std::string& key);
  // A connection of the pool (upstream_pool::acquire), the wait of normal requests observed in
  // couchgate_front_upstream_wait_seconds.
  net::awaitable<std::pair<std::optional<upstream_lease>, acquire_error>> take_connection(
      std::size_t context, std::optional<std::chrono::milliseconds> wait = std::nullopt,
      pool_priority priority = pool_priority::normal);
  // One complete request/response over a leased connection (a stale reused one retried once).
  net::awaitable<upstream_answer> exchange(std::size_t context, const http::request<http::string_body>& request,
                                           std::size_t body_limit,
                                           std::optional<std::chrono::milliseconds> pool_wait = std::nullopt,
                                           pool_priority priority = pool_priority::normal);
  // A live `_changes` feed, parked between reads (live_feeds.cpp).
  // `verified`: identity::verified (false: the first check may not be skipped).
  net::awaitable<bool> serve_feed(server_exchange& ex, const route& rt, const std::string& db, const std::string& user,
                                  const std::string& credential, bool verified, outcome& out);
  // The caller's request slot (a user's /me request holds one), given back once: by forward() as
  // soon as CouchDB's answer is all read, before its last bytes go to the client (who may send
  // the next request, on another connection, the moment they have them), or at the latest when
  // the request ends.
  struct slot_hold {
    user_slots* slots = nullptr;
    std::string user;
    void release() {
      if (slots != nullptr) std::exchange(slots, nullptr)->release(user);
    }
    slot_hold() = default;
    slot_hold(const slot_hold&) = delete;
    slot_hold& operator=(const slot_hold&) = delete;
    ~slot_hold() { release(); }
  };
  struct next_step {
    enum class kind { answered, feed, forward } k = kind::answered;
    std::string db;          // feed, forward: the database ("" for a pass-through route)
    std::string user;        // feed: the caller
    std::string credential;  // feed: credential_of(request)
    bool verified = true;    // feed: identity::verified
    std::string target;      // forward: the upstream target
    std::string mount;       // forward: "/me", "/shared" or ""
    slot_hold slot;          // forward: the caller's request slot (a /me request)
    bool announce = false;   // forward: a 2xx answer wakes the database's live feeds (may_add_changes)
  };
  net::awaitable<bool> forward(server_exchange& ex, next_step& next, outcome& out);
  // A local route, after dispatch() checked its rate and, for /_identity/, who the caller (`user`) is.
  net::awaitable<bool> serve_local(server_exchange& ex, const route& rt, const std::string& user, outcome& out);
  std::chrono::milliseconds client_timeout() const {
    return std::chrono::milliseconds(client_timeout_ms_.load(std::memory_order_relaxed));
  }

  forwarder_options options_;  // client_timeout and the limits: see client_timeout_ms_ and the limiters
  std::atomic<std::int64_t> client_timeout_ms_;
  upstream_pool& pool_;
  front_metrics& metrics_;
  clock_fn now_;
  session_cache sessions_;
  // Live feed deliveries slower than 5 s are logged, at most once a minute (serve_feed).
  delivery_lag_warning delivery_lag_{std::chrono::seconds(5), std::chrono::minutes(1)};
  session_cache routes_;  // credential -> user for re-issued live feeds (front.route_cache_ttl)
  auth_failures failures_;
  user_slots slots_;
  auth_failures local_attempts_;  // per-address window counter for local routes (sign-up)
  std::unique_ptr<net::thread_pool> local_pool_;  // local handlers and provision_caller
  std::mutex checks_mu_;
  // Checks in flight: by credential key (background) or "urgent:" + key.
  std::unordered_map<std::string, std::shared_ptr<credential_check>> checks_;
};

}  // namespace couchgate::gateway::front
