#pragma once
// Owns: the front door's bounded keep-alive pool of HTTP connections to CouchDB (Beast client
// streams, apart from the fan-in's libcurl pool and its budget). It never has more sockets open
// than max_connections. When all are busy a request waits up to wait_timeout (or the wait it
// asks for), then gets nothing (the caller answers 503 with Retry-After). A freed connection
// goes to the waiter whose wait ends first (FIFO among equals): a plain request that gives up
// after the pool's short wait is not stuck behind a thousand live feeds' first checks, which
// may wait up to their own timeout (issue 14); a feed near its end moves up in turn. A connection
// is used on the I/O context it lives on; one freed for a waiter on another context, or idle
// there when a request on another context finds the pool full, moves with its socket (plain
// HTTP; a TLS connection's session lives in its stream, so the other context gets the socket
// budget instead and opens its own). Idle connections older than idle_limit are
// closed rather than reused (the server may have dropped them).
//
// The pool knows nothing of requests: a lease is held exactly while one request/response
// exchange uses the socket, so a parked feed (issue 14) holds no upstream connection.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/front/io_threads.hpp"
#include "gateway/front/stream.hpp"

namespace couchgate::gateway::front {

struct upstream_address {
  std::string host;
  std::string port;
  bool tls = false;
  std::string host_header;  // host[:port] as the Host header names it
  std::string base_path;    // "" or "/prefix" when CouchDB sits under a path
};
// From couchdb.url (http[s]://host[:port][/path]); nullopt when it is not such a URL.
std::optional<upstream_address> parse_upstream_url(const std::string& url);

struct upstream_connection {
  // Room for a whole read of what the server has sent: a flat_buffer reads at most its free
  // capacity at a time, so one grown only to a header's size took a large answer a few KB
  // (a recvmsg and a wake-up) at a time. A few connections, so the 64 KB each are cheap.
  static constexpr std::size_t read_buffer = 64u << 10;
  explicit upstream_connection(any_stream s, std::size_t ctx) : stream(std::move(s)), context(ctx) {
    buffer.reserve(read_buffer);
  }
  any_stream stream;
  beast::flat_buffer buffer;
  std::size_t context;
  bool connected = false;
  std::size_t uses = 0;  // exchanges completed on it (0 = fresh)
  std::chrono::steady_clock::time_point idle_since{};
  // What the server announced (`Keep-Alive: timeout=N`): it closes idle connections after N s
  // (Node's default is 5 s), so the pool stops reusing this one a second earlier. 0 = not said.
  std::chrono::milliseconds server_idle_limit{0};
};

// Records a response's `Keep-Alive: timeout=N` on the connection it came over.
void note_keep_alive(upstream_connection& conn, std::string_view keep_alive_header);

class upstream_pool;

// The waiters for a freed connection, in the order they get one: the one whose wait ends first;
// among equal deadlines the first to arrive. O(log n) to add, take or remove one (10 000 live
// feeds may wait at once, and every released connection takes one).
template <class T>
class deadline_queue {
 public:
  using time_point = std::chrono::steady_clock::time_point;
  using handle = std::pair<time_point, std::uint64_t>;  // deadline, arrival
  handle push(time_point deadline, T value) {
    const handle h{deadline, next_arrival_++};
    items_.emplace(h, std::move(value));
    return h;
  }
  // Removes the one `h` names: false when it was already taken.
  bool erase(const handle& h) { return items_.erase(h) != 0; }
  T pop() {  // not empty
    auto node = items_.extract(items_.begin());
    return std::move(node.mapped());
  }
  bool empty() const { return items_.empty(); }
  std::size_t size() const { return items_.size(); }
  std::vector<T> take_all() {
    std::vector<T> out;
    out.reserve(items_.size());
    for (auto& [h, v] : items_) out.push_back(std::move(v));
    items_.clear();
    return out;
  }

 private:
  std::map<handle, T> items_;
  std::uint64_t next_arrival_ = 0;
};

// Who waits for a freed connection, and how urgently. `background` is work no client waits on
// (a parked live feed's credential re-check, issue 14): it is served only when no normal
// request waits, and holds at most its share of the pool at once, so that the writes a parked
// feed must deliver (normal requests) always find most of the pool, however many re-checks are
// due. Under overload the re-checks lag instead of the deliveries.
enum class pool_priority { normal, background };

// Background work's share of a pool of `max_connections`: a quarter, at least one connection.
inline std::size_t background_share(std::size_t max_connections) { return std::max<std::size_t>(max_connections / 4, 1); }

// The waiters of both priorities and the rule above. `background_in_use`: background leases
// out now. Pure (no locking, no I/O): the pool calls it under its lock.
template <class T>
class waiter_queues {
 public:
  using time_point = std::chrono::steady_clock::time_point;
  using handle = typename deadline_queue<T>::handle;
  explicit waiter_queues(std::size_t background_limit) : background_limit_(std::max<std::size_t>(background_limit, 1)) {}
  handle push(pool_priority p, time_point deadline, T value) { return queue(p).push(deadline, std::move(value)); }
  bool erase(pool_priority p, const handle& h) { return queue(p).erase(h); }
  // May a request of priority `p` take an idle connection or a free slot now (rather than wait)?
  bool may_take(pool_priority p, std::size_t background_in_use) const {
    return p == pool_priority::normal || background_in_use < background_limit_;
  }
  // The waiter a freed connection goes to, and its priority; nullopt when none may have it.
  std::optional<std::pair<T, pool_priority>> pop(std::size_t background_in_use) {
    if (!normal_.empty()) return std::pair<T, pool_priority>{normal_.pop(), pool_priority::normal};
    if (!background_.empty() && background_in_use < background_limit_) {
      return std::pair<T, pool_priority>{background_.pop(), pool_priority::background};
    }
    return std::nullopt;
  }
  std::size_t size() const { return normal_.size() + background_.size(); }
  std::size_t background_waiting() const { return background_.size(); }
  std::size_t background_limit() const { return background_limit_; }
  std::vector<T> take_all() {
    std::vector<T> out = normal_.take_all();
    for (auto& v : background_.take_all()) out.push_back(std::move(v));
    return out;
  }

 private:
  deadline_queue<T>& queue(pool_priority p) { return p == pool_priority::normal ? normal_ : background_; }
  std::size_t background_limit_;
  deadline_queue<T> normal_;
  deadline_queue<T> background_;
};

// Exclusive use of one connection. keep() before destruction returns it for reuse; otherwise it
// is closed (an exchange that did not finish cleanly leaves the socket in an unknown state).
class upstream_lease {
 public:
  upstream_lease(upstream_pool* pool, std::unique_ptr<upstream_connection> c, pool_priority p = pool_priority::normal)
      : pool_(pool), conn_(std::move(c)), priority_(p) {}
  upstream_lease(upstream_lease&& o) noexcept
      : pool_(o.pool_), conn_(std::move(o.conn_)), keep_(o.keep_), priority_(o.priority_) {
    o.pool_ = nullptr;
  }
  upstream_lease& operator=(upstream_lease&&) = delete;
  ~upstream_lease();
  upstream_connection& conn() { return *conn_; }
  void keep() { keep_ = true; }

 private:
  upstream_pool* pool_;
  std::unique_ptr<upstream_connection> conn_;
  bool keep_ = false;
  pool_priority priority_;
};

struct upstream_stats {
  std::size_t open = 0;      // sockets open (or being opened)
  std::size_t in_use = 0;    // leased
  std::size_t waiting = 0;   // requests waiting for a connection (from the queues, in stats())
  std::size_t background_in_use = 0;  // of in_use: background work (see pool_priority)
  std::size_t background_waiting = 0;  // of waiting: background work (from the queues, in stats())
  std::size_t peak_open = 0;
  std::uint64_t wait_timeouts = 0;
  std::uint64_t connect_failures = 0;
  std::uint64_t connects = 0;  // connections opened (attempts), the first ones and every reopening
  std::uint64_t moved = 0;     // connections (freed or idle) moved with their socket to another I/O thread
};

enum class acquire_error { none, timeout, connect_failed, closed };

class upstream_pool {
 public:
  upstream_pool(io_threads& io, upstream_address address, std::size_t max_connections,
                std::chrono::milliseconds wait_timeout, std::chrono::milliseconds connect_timeout,
                std::shared_ptr<ssl::context> client_tls);
  ~upstream_pool();

  // A connected connection on `context` (the caller's I/O context), or why not. A waiter waits
  // `wait` (default: the pool's wait_timeout); the earliest deadline is served first, normal
  // requests before background work (waiter_queues). Background work holds at most a quarter
  // of the pool (at least one connection).
  net::awaitable<std::pair<std::optional<upstream_lease>, acquire_error>> acquire(
      std::size_t context, std::optional<std::chrono::milliseconds> wait = std::nullopt,
      pool_priority priority = pool_priority::normal);
  upstream_stats stats() const;
  std::size_t max_connections() const { return max_; }
  std::chrono::milliseconds wait_timeout() const { return wait_timeout_; }
  const upstream_address& address() const { return address_; }
  // Closes the idle connections and refuses new requests (before the contexts are destroyed).
  void close();

 private:
  friend class upstream_lease;
  struct waiter;
  void release(std::unique_ptr<upstream_connection> conn, bool reusable, pool_priority priority);
  void wake(std::shared_ptr<waiter> w);
  // The next waiter, counted as holding the slot (in_use, background_in_use); nullptr if none. Under mu_.
  std::shared_ptr<waiter> next_waiter_locked();
  net::awaitable<std::pair<std::optional<upstream_lease>, acquire_error>> open_new(std::size_t context,
                                                                                  pool_priority priority);
  // Destroys a connection of another context on that context (posted there): a plain one with its
  // socket already moved out (only the stream's shell is left), or one closed with its socket.
  void retire(std::unique_ptr<upstream_connection> conn);

  io_threads& io_;
  upstream_address address_;
  std::size_t max_;
  std::chrono::milliseconds wait_timeout_;
  std::chrono::milliseconds connect_timeout_;
  std::chrono::milliseconds idle_limit_{30000};
  std::shared_ptr<ssl::context> client_tls_;

  mutable std::mutex mu_;
  bool closed_ = false;
  std::vector<std::vector<std::unique_ptr<upstream_connection>>> idle_;  // per context
  waiter_queues<std::shared_ptr<waiter>> waiters_;
  upstream_stats stats_;
};

}  // namespace couchgate::gateway::front
