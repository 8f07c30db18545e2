#pragma once
// A TCP proxy for fault-injection tests: listens on 127.0.0.1 (a free port) and forwards every
// connection to the test server (env().host:env().port), with switches that make the server
// look down, hung or restarted to whoever connects through it.
//
// One thread of its own (poll() over non-blocking sockets, all of them close-on-exec so a child
// such as couchgate never inherits them). The destructor stops the thread and closes every
// socket. Bounded: at most max_connections proxied connections at once (further ones are
// accepted and closed at once), and at most buffer_cap bytes buffered per direction.
#include <atomic>
#include <chrono>
#include <vector>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <sys/socket.h>
#include <thread>

namespace couchgate::test {

class fault_proxy {
 public:
  enum class close_mode {
    reset,     // abortive close (SO_LINGER 0): the peer sees a RST, "connection reset by peer"
    graceful,  // plain close(): the peer sees a FIN, "empty reply" / EOF
  };

  // Forwards to the test server (env().host:env().port).
  fault_proxy();
  // Forwards to host:port (resolved once, here). Throws std::runtime_error on failure.
  fault_proxy(const std::string& host, int port);
  ~fault_proxy();
  fault_proxy(const fault_proxy&) = delete;
  fault_proxy& operator=(const fault_proxy&) = delete;

  int port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

  // Closes every open connection, both sides (client and server), at once. Returns once the
  // proxy thread has done it (or after 5 s if it did not answer).
  void cut(close_mode mode = close_mode::reset);
  // While on, new connections are accepted and closed at once: a server that is down, as a
  // client sees it. Open connections are left alone (combine with cut()).
  void refuse(bool on);
  // While on, connections stay open (new ones are accepted and connected upstream) but no
  // byte is forwarded in either direction: a hung server. A client closing its side closes
  // the connection.
  void stall(bool on);
  // A slow server: while set, what the server sends reaches the client `latency` after it
  // arrived at the proxy (an answer whose first byte is late; a stream that goes on flowing is
  // not delayed again), and at most `bytes_per_second` per connection (0 = no limit: a body that
  // trickles). slow(0ms) ends it; bytes held back then flow at once.
  void slow(std::chrono::milliseconds latency, std::size_t bytes_per_second = 0);

  // HTTP awareness: the proxy splits the client's byte stream into requests (request line,
  // headers, Content-Length body; a chunked request switches that connection back to raw
  // forwarding) and records each. The next `n` requests whose target contains
  // `target_contains` ("" = any) are answered by the proxy itself with `raw_response` (a whole
  // HTTP/1.1 response with Content-Length) instead of reaching the server.
  // `close_after`: the proxy closes the connection (FIN) once that answer is sent — with a
  // Content-Length larger than the bytes given, a body cut short (a truncated answer, a feed
  // that ends early).
  // `close_as`: how that close looks (reset: the peer sees "connection reset by peer" mid-answer).
  void answer_next(int n, std::string raw_response, std::string target_contains = {}, bool close_after = false,
                   close_mode close_as = close_mode::graceful);
  // The next `n` answers with status `from` to requests with this method whose target contains
  // `target_contains` reach the client with status `to` (the status line replaced; headers and
  // body as the server sent them). CouchDB answers a write that fewer copies than its quorum
  // stored with 202 and the body of a 201: a cluster's degraded write made from a single node's.
  // Other answers to matching requests pass unchanged and do not count.
  void rewrite_status(int n, std::string method, std::string target_contains, int from, int to);
  // Answers rewritten so far (rewrite_status).
  int rewritten() const;
  // While set (non-empty), a request whose target contains `target_contains` is held: recorded
  // when it arrives, but neither it nor what follows on its connection reaches the server until
  // hold({}) lets every held request go. One slow path (a late `_session` answer, say) while
  // every other request flows.
  void hold(std::string target_contains);
  // Requests held now.
  int held() const;
  struct request_record {
    std::chrono::steady_clock::time_point at;  // when its last byte arrived
    std::string method, target;
    bool answered_by_proxy = false;
    bool has_authorization = false;
    bool has_session_cookie = false;  // a Cookie header with AuthSession=
    // When the server's answer began (its first byte reached the proxy) and its status code
    // (0 until its status line is whole, or when it is not one). Matched in order on the
    // connection, one request in flight at a time (libcurl, couchgate and the bench never
    // pipeline: a client sends its next request once it has read the whole answer, so what
    // comes after that request is its answer); when a second request comes before the first
    // one's answer began, neither is matched. Unset for a request answered by the proxy,
    // held, sent on a connection the proxy no longer follows (a chunked request), or whose
    // connection ended first.
    std::optional<std::chrono::steady_clock::time_point> answered_at;
    int status = 0;
    // When the last byte of its answer seen so far arrived (until the next request on the
    // connection): for a streamed answer (a longpoll with a heartbeat sends its headers at
    // once, its rows when a change comes) the end, where answered_at is the start.
    std::optional<std::chrono::steady_clock::time_point> last_byte_at;
  };
  std::vector<request_record> requests() const;
  // The records from index `from` on (a watcher that has looked at the first ones).
  std::vector<request_record> requests_since(std::size_t from) const;

  // Connections accepted since construction (refused ones included).
  std::uint64_t accepted() const { return accepted_.load(); }
  // Connections being proxied now.
  int open_connections() const { return open_.load(); }
  // The most connections proxied at once since construction.
  int peak_connections() const { return peak_.load(); }

  static constexpr std::size_t max_connections = 256;
  static constexpr std::size_t buffer_cap = 256 * 1024;

 private:
  void run();
  void wake();
  // Applies a change under the lock, wakes the thread and waits (at most 5 s) until it has
  // started a new round with the change visible: after a control returns, it is in force.
  template <class F>
  void control(F&& change);

  sockaddr_storage upstream_{};
  socklen_t upstream_len_ = 0;
  int listen_fd_ = -1;
  int wake_r_ = -1, wake_w_ = -1;
  int port_ = 0;

  std::atomic<bool> stop_{false};
  std::atomic<bool> refuse_{false};
  std::atomic<bool> stall_{false};
  std::atomic<long long> latency_ms_{0};
  std::atomic<std::size_t> rate_{0};
  std::atomic<std::uint64_t> accepted_{0};
  std::atomic<int> open_{0};
  std::atomic<int> peak_{0};

  // Control requests: the caller bumps requested_, the thread acknowledges with seen_.
  std::mutex mu_;
  std::condition_variable cv_;
  std::uint64_t requested_ = 0;
  std::uint64_t seen_ = 0;
  bool cut_pending_ = false;
  close_mode cut_mode_ = close_mode::reset;

  mutable std::mutex http_mu_;  // guards the members below (the proxy thread and callers)
  int inject_left_ = 0;
  std::string inject_response_, inject_match_;
  bool inject_close_ = false;
  close_mode inject_close_as_ = close_mode::graceful;
  std::vector<request_record> requests_;
  int rewrite_left_ = 0, rewrite_from_ = 0, rewrite_to_ = 0, rewritten_ = 0;
  std::string rewrite_method_, rewrite_match_;
  std::string hold_match_;
  int held_ = 0;

  std::thread thread_;
};

// The environment that sends a couchgate child through `proxy`: COUCHDB_URL in the environment
// overrides the config file's url (and the test process has one, which the child inherits).
// Credentials as the tests have them, in case they only came inside the test's COUCHDB_URL;
// `password` replaces the password.
std::map<std::string, std::string> proxy_env(const fault_proxy& proxy, const std::optional<std::string>& password = {});

}  // namespace couchgate::test
