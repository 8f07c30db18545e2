// Owns: the upstream connection pool (see upstream_pool.hpp).
#include "gateway/front/upstream_pool.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace couchgate::gateway::front {

std::optional<upstream_address> parse_upstream_url(const std::string& url) {
  upstream_address a;
  std::string rest;
  if (url.rfind("http://", 0) == 0) {
    rest = url.substr(7);
  } else if (url.rfind("https://", 0) == 0) {
    rest = url.substr(8);
    a.tls = true;
  } else {
    return std::nullopt;
  }
  const std::size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  if (slash != std::string::npos) {
    a.base_path = rest.substr(slash);
    while (!a.base_path.empty() && a.base_path.back() == '/') a.base_path.pop_back();
  }
  if (const std::size_t at = authority.rfind('@'); at != std::string::npos) authority = authority.substr(at + 1);
  if (authority.empty()) return std::nullopt;
  a.host_header = authority;
  if (authority[0] == '[') {  // [v6]:port
    const std::size_t close = authority.find(']');
    if (close == std::string::npos) return std::nullopt;
    a.host = authority.substr(1, close - 1);
    a.port = close + 1 < authority.size() && authority[close + 1] == ':' ? authority.substr(close + 2) : "";
  } else {
    const std::size_t colon = authority.rfind(':');
    a.host = authority.substr(0, colon);
    a.port = colon == std::string::npos ? "" : authority.substr(colon + 1);
  }
  if (a.port.empty()) a.port = a.tls ? "443" : "80";
  if (a.host.empty()) return std::nullopt;
  return a;
}

void note_keep_alive(upstream_connection& conn, std::string_view header) {
  const std::size_t at = header.find("timeout=");
  if (at == std::string_view::npos) return;
  long long seconds = 0;
  std::size_t i = at + 8;
  for (; i < header.size() && header[i] >= '0' && header[i] <= '9' && seconds < 1000000; ++i) seconds = seconds * 10 + (header[i] - '0');
  if (i == at + 8) return;
  conn.server_idle_limit = std::chrono::milliseconds(std::max<long long>(seconds * 1000 - 1000, 1));
}

namespace {
// An idle connection the server has closed (or that has unexpected bytes waiting) reads as
// readable; a live idle one would block. Checked before reuse, without blocking.
bool still_open(upstream_connection& c) {
  char byte;
  const ssize_t n = ::recv(c.stream.tcp().socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

// Whether an idle connection may carry another request: idle no longer than the pool's limit
// (or the server's announced one, when shorter) and not closed by the server.
bool fit_for_reuse(upstream_connection& c, std::chrono::milliseconds pool_limit, std::chrono::steady_clock::time_point now) {
  const auto limit = c.server_idle_limit.count() > 0 ? std::min(pool_limit, c.server_idle_limit) : pool_limit;
  return now - c.idle_since <= limit && still_open(c);
}
}  // namespace

// A plain connection freed on one I/O thread for a waiter on another, or idle there when a
// request on another finds the pool full: its socket, detached, is adopted on the other thread
// (no new TCP connection to CouchDB).
struct moved_socket {
  tcp::socket::native_handle_type fd = -1;
  tcp protocol = tcp::v4();
  std::size_t uses = 0;
  std::chrono::milliseconds server_idle_limit{0};
};

struct upstream_pool::waiter {
  enum class state { waiting, got_connection, got_socket, got_slot, closed };
  waiter(std::size_t ctx, net::io_context& io) : context(ctx), timer(io) {}
  ~waiter() {
    if (moved.fd >= 0) ::close(moved.fd);  // handed over, never adopted (the pool closed first)
  }
  waiter(const waiter&) = delete;
  waiter& operator=(const waiter&) = delete;
  std::size_t context;
  net::steady_timer timer;
  std::chrono::steady_clock::time_point deadline;  // when it gives up (503 for a plain request)
  waiter_queues<std::shared_ptr<waiter>>::handle place{};  // in waiters_
  state st = state::waiting;
  std::unique_ptr<upstream_connection> conn;
  moved_socket moved;  // got_socket
};

namespace {
// Detaches the socket of a plain, idle connection; nullopt when it cannot move (TLS: the session
// lives in the stream; bytes left in its buffer; an error). Any thread may detach a connection
// the pool holds (idle or just released: no operation is pending on its socket and nothing else
// reaches it); what is left of it is destroyed on its own thread (retire), where its stream's
// timer lives. Why another thread may: Asio deregisters the descriptor from its owner's reactor
// under that reactor's locks (io_threads makes every context with the locking hint 1: an
// UNSAFE concurrency hint there would make this a data race), and a Beast timeout handler still
// queued on the owner after the connection's last exchange sees a cancelled or stale timer and
// never touches the socket.
std::optional<moved_socket> detach(upstream_connection& c) {
  if (c.stream.is_tls() || c.buffer.size() > 0) return std::nullopt;
  error_code ec;
  auto& socket = c.stream.tcp().socket();
  const auto endpoint = socket.local_endpoint(ec);
  if (ec) return std::nullopt;
  moved_socket m;
  m.protocol = endpoint.protocol();
  m.fd = socket.release(ec);
  if (ec) return std::nullopt;
  m.uses = c.uses;
  m.server_idle_limit = c.server_idle_limit;
  return m;
}

// Adopts the detached socket `fd` (of `m`) on `io`, the waiter's thread; nullptr when it cannot
// (the fd is closed then).
std::unique_ptr<upstream_connection> adopt(tcp::socket::native_handle_type fd, const moved_socket& m,
                                           net::io_context& io, std::size_t context) {
  tcp::socket socket(io);
  error_code ec;
  socket.assign(m.protocol, fd, ec);
  if (ec) {
    ::close(fd);
    return nullptr;
  }
  auto c = std::make_unique<upstream_connection>(any_stream(beast::tcp_stream(std::move(socket))), context);
  c->connected = true;
  c->uses = m.uses;
  c->server_idle_limit = m.server_idle_limit;
  return c;
}
}  // namespace

upstream_lease::~upstream_lease() {
  if (pool_ != nullptr && conn_) pool_->release(std::move(conn_), keep_, priority_);
}

upstream_pool::upstream_pool(io_threads& io, upstream_address address, std::size_t max_connections,
                             std::chrono::milliseconds wait_timeout, std::chrono::milliseconds connect_timeout,
                             std::shared_ptr<ssl::context> client_tls)
    : io_(io),
      address_(std::move(address)),
      max_(max_connections),
      wait_timeout_(wait_timeout),
      connect_timeout_(connect_timeout),
      client_tls_(std::move(client_tls)),
      idle_(io.size()),
      waiters_(background_share(max_connections)) {}

upstream_pool::~upstream_pool() { close(); }

upstream_stats upstream_pool::stats() const {
  std::lock_guard lk(mu_);
  upstream_stats s = stats_;
  s.waiting = waiters_.size();
  s.background_waiting = waiters_.background_waiting();
  return s;
}

void upstream_pool::close() {
  std::vector<std::unique_ptr<upstream_connection>> idle;
  std::vector<std::shared_ptr<waiter>> waiters;
  {
    std::lock_guard lk(mu_);
    closed_ = true;
    for (auto& list : idle_) {
      for (auto& c : list) idle.push_back(std::move(c));
      list.clear();
    }
    stats_.open -= idle.size();
    waiters = waiters_.take_all();
    for (auto& w : waiters) w->st = waiter::state::closed;
  }
  for (auto& w : waiters) wake(std::move(w));
  // Called with the I/O threads stopped (or from the connection's own thread): no operation is
  // pending on an idle connection, so it may be destroyed here.
  idle.clear();
}

void upstream_pool::wake(std::shared_ptr<waiter> w) {
  // The caller gives its reference away: the waiter (its timer belongs to its own context) is
  // never destroyed here, on another thread, after its coroutine has ended.
  auto& context = io_.context(w->context);
  net::post(context, [w = std::move(w)] { w->timer.cancel(); });
}

std::shared_ptr<upstream_pool::waiter> upstream_pool::next_waiter_locked() {
  if (closed_) return nullptr;
  auto next = waiters_.pop(stats_.background_in_use);
  if (!next) return nullptr;
  ++stats_.in_use;
  if (next->second == pool_priority::background) ++stats_.background_in_use;
  return std::move(next->first);
}

void upstream_pool::retire(std::unique_ptr<upstream_connection> conn) {
  // Destroyed on its own context, whichever reference to the holder goes last. (Not awaited: a
  // TLS connection's replacement may overlap it by a moment, one socket over the budget; a plain
  // one arrives here with its socket already moved.)
  auto held = std::make_shared<std::unique_ptr<upstream_connection>>(std::move(conn));
  auto& owner = io_.context((*held)->context);
  net::post(owner, [held] { held->reset(); });
}

net::awaitable<std::pair<std::optional<upstream_lease>, acquire_error>> upstream_pool::acquire(
    std::size_t context, std::optional<std::chrono::milliseconds> wait, pool_priority priority) {
  using result = std::pair<std::optional<upstream_lease>, acquire_error>;
  std::unique_lock lk(mu_);
  if (closed_) co_return result{std::nullopt, acquire_error::closed};
  const auto now = std::chrono::steady_clock::now();
  const bool background = priority == pool_priority::background;
  // Background work over its share waits, even with a connection idle.
  const bool may_take = waiters_.may_take(priority, stats_.background_in_use);
  if (may_take && background) ++stats_.background_in_use;  // given back below if it waits after all
  auto& idle = idle_[context];
  while (may_take && !idle.empty()) {
    auto c = std::move(idle.back());
    idle.pop_back();
    if (!fit_for_reuse(*c, idle_limit_, now)) {
      --stats_.open;
      c.reset();  // this thread owns it: the connection lives on our context
      continue;
    }
    ++stats_.in_use;
    co_return result{upstream_lease(this, std::move(c), priority), acquire_error::none};
  }
  if (may_take && stats_.open < max_) {
    ++stats_.open;
    ++stats_.in_use;
    stats_.peak_open = std::max(stats_.peak_open, stats_.open);
    lk.unlock();
    co_return co_await open_new(context, priority);
  }
  for (auto& other : idle_) {  // an idle connection on another context: it comes here
    if (!may_take || other.empty()) continue;
    auto c = std::move(other.back());
    other.pop_back();
    ++stats_.in_use;
    // A plain one moves with its socket (no new connection to CouchDB, and never one socket over
    // the budget while the old closes); a TLS one (its session lives in its stream) or one the
    // server closed is closed on its own thread, and a new one opens here.
    lk.unlock();  // `c` is ours alone now: its system calls need no lock
    const bool fit = fit_for_reuse(*c, idle_limit_, now);
    std::optional<moved_socket> moved = detach(*c);
    if (moved && !fit) {
      ::close(std::exchange(moved->fd, -1));
      moved.reset();
    }
    retire(std::move(c));  // with its socket detached, only the stream's shell is left to destroy
    if (moved) {
      if (auto adopted = adopt(moved->fd, *moved, io_.context(context), context)) {
        std::lock_guard counted(mu_);
        ++stats_.moved;
        co_return result{upstream_lease(this, std::move(adopted), priority), acquire_error::none};
      }
    }
    co_return co_await open_new(context, priority);
  }
  if (may_take && background) --stats_.background_in_use;
  auto w = std::make_shared<waiter>(context, io_.context(context));
  w->deadline = now + wait.value_or(wait_timeout_);
  w->timer.expires_at(w->deadline);
  w->place = waiters_.push(priority, w->deadline, w);
  lk.unlock();
  error_code ec;
  co_await w->timer.async_wait(ec_token(ec));
  lk.lock();
  switch (w->st) {
    case waiter::state::waiting:
      waiters_.erase(priority, w->place);
      ++stats_.wait_timeouts;
      co_return result{std::nullopt, acquire_error::timeout};
    case waiter::state::got_connection:
      co_return result{upstream_lease(this, std::move(w->conn), priority), acquire_error::none};
    case waiter::state::got_socket:
      if (auto c = adopt(std::exchange(w->moved.fd, -1), w->moved, io_.context(context), context)) {
        co_return result{upstream_lease(this, std::move(c), priority), acquire_error::none};
      }
      lk.unlock();
      co_return co_await open_new(context, priority);  // the slot is counted: a fresh connection
    case waiter::state::got_slot:
      lk.unlock();
      co_return co_await open_new(context, priority);
    case waiter::state::closed:
      break;
  }
  co_return result{std::nullopt, acquire_error::closed};
}

// The slot (open and in_use, background_in_use for background work) is already counted for this connection.
net::awaitable<std::pair<std::optional<upstream_lease>, acquire_error>> upstream_pool::open_new(std::size_t context,
                                                                                               pool_priority priority) {
  using result = std::pair<std::optional<upstream_lease>, acquire_error>;
  {
    std::lock_guard lk(mu_);
    ++stats_.connects;
  }
  auto& io = io_.context(context);
  beast::tcp_stream tcp_stream(io);
  error_code ec;
  tcp::resolver resolver(io);
  const auto endpoints = co_await resolver.async_resolve(address_.host, address_.port, ec_token(ec));
  if (!ec) {
    tcp_stream.expires_after(connect_timeout_);
    co_await tcp_stream.async_connect(endpoints, ec_token(ec));
  }
  std::unique_ptr<upstream_connection> conn;
  if (!ec) {
    tcp_stream.socket().set_option(tcp::no_delay(true), ec);
    ec = {};
    if (address_.tls && client_tls_) {
      conn = std::make_unique<upstream_connection>(any_stream(std::move(tcp_stream), *client_tls_), context);
      auto& tls = conn->stream.tls();
      if (!SSL_set_tlsext_host_name(tls.native_handle(), address_.host.c_str())) {
        ec = error_code(static_cast<int>(::ERR_get_error()), net::error::get_ssl_category());
      }
      if (!ec) {
        tls.set_verify_callback(ssl::host_name_verification(address_.host));
        conn->stream.tcp().expires_after(connect_timeout_);
        co_await tls.async_handshake(ssl::stream_base::client, ec_token(ec));
      }
    } else {
      conn = std::make_unique<upstream_connection>(any_stream(std::move(tcp_stream)), context);
    }
  }
  if (ec) {
    conn.reset();
    std::shared_ptr<waiter> next;
    {
      std::lock_guard lk(mu_);
      --stats_.in_use;
      if (priority == pool_priority::background) --stats_.background_in_use;
      ++stats_.connect_failures;
      next = next_waiter_locked();  // the slot goes on to the next waiter
      if (next) {
        next->st = waiter::state::got_slot;
      } else {
        --stats_.open;
      }
    }
    if (next) wake(std::move(next));
    co_return result{std::nullopt, acquire_error::connect_failed};
  }
  conn->connected = true;
  co_return result{upstream_lease(this, std::move(conn), priority), acquire_error::none};
}

void upstream_pool::release(std::unique_ptr<upstream_connection> conn, bool reusable, pool_priority priority) {
  std::shared_ptr<waiter> next;
  std::unique_ptr<upstream_connection> drop;
  {
    std::lock_guard lk(mu_);
    --stats_.in_use;
    if (priority == pool_priority::background) --stats_.background_in_use;
    if (closed_) {
      --stats_.open;
      drop = std::move(conn);
    } else if ((next = next_waiter_locked())) {
      if (reusable && next->context == conn->context) {
        ++conn->uses;
        next->conn = std::move(conn);
        next->st = waiter::state::got_connection;
      } else if (auto moved = reusable ? detach(*conn) : std::nullopt) {
        // Another I/O thread's waiter: the socket moves there (under the lock, so that the
        // waiter, whose own deadline may end its wait meanwhile, sees it complete).
        ++moved->uses;
        next->moved = *moved;
        next->st = waiter::state::got_socket;
        ++stats_.moved;
        drop = std::move(conn);  // its socket detached: nothing to close
      } else {
        next->st = waiter::state::got_slot;  // the socket budget moves to the waiter's context
        drop = std::move(conn);
      }
    } else if (reusable) {
      ++conn->uses;
      conn->idle_since = std::chrono::steady_clock::now();
      idle_[conn->context].push_back(std::move(conn));
    } else {
      --stats_.open;
      drop = std::move(conn);
    }
  }
  drop.reset();  // on the connection's own thread: leases are released where they were used
  if (next) wake(std::move(next));
}

}  // namespace couchgate::gateway::front
