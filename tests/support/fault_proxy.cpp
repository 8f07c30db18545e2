// Implementation of the fault-injection TCP proxy (see fault_proxy.hpp).
#include "tests/support/fault_proxy.hpp"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <vector>

#include "tests/support/harness.hpp"

namespace couchgate::test {

namespace {

void close_fd(int& fd, fault_proxy::close_mode mode) {
  if (fd < 0) return;
  if (mode == fault_proxy::close_mode::reset) {
    linger l{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  }
  ::close(fd);
  fd = -1;
}

// One proxied connection: the client's socket, ours to the server, and what is in flight.
struct connection {
  int client = -1;
  int server = -1;
  bool connecting = true;         // non-blocking connect to the server not finished yet
  std::string c2s, s2c;           // bytes read from one side, not yet written to the other
  bool client_eof = false, server_eof = false;      // read side saw EOF
  bool c2s_shut = false, s2c_shut = false;          // EOF passed on (shutdown(SHUT_WR))
  bool dead = false;
  fault_proxy::close_mode close_as = fault_proxy::close_mode::graceful;
  std::string inbox;   // client bytes not yet split into requests
  bool raw = false;    // could not follow the requests: forward bytes as they come
  bool held = false;   // the request at the start of inbox is recorded and held (hold())
  std::size_t pass = 0;  // bytes of the current request still to forward
  std::size_t skip = 0;  // bytes of the current request still to drop (answered by the proxy)
  // The record (index in requests_) of the request forwarded last whose answer has not begun,
  // and of the one whose answer is arriving; the start of that answer until its status line
  // is read (it may come in pieces).
  std::optional<std::size_t> awaiting, answering;
  std::string status_head;
  bool status_read = true;
  // rewrite_status(): the awaited answer may get another status line; its bytes wait in s2c,
  // from answer_start, until the status line is whole.
  bool rewrite_candidate = false;
  std::size_t answer_start = 0;
  bool close_when_sent = false;  // an injected answer that ends the connection once written
  fault_proxy::close_mode close_sent_as = fault_proxy::close_mode::graceful;  // ... this way
  // slow(): server bytes are held until s2c_ready (set when s2c stops being empty), then sent at
  // most `credit` bytes at a time, the credit refilled at the rate since credit_at.
  std::chrono::steady_clock::time_point s2c_ready{};
  double credit = 0;
  std::chrono::steady_clock::time_point credit_at{};

  void fail() {  // an error on one side: the other side sees a reset, as through a real path
    dead = true;
    close_as = fault_proxy::close_mode::reset;
  }
  void close_both(fault_proxy::close_mode mode) {
    close_fd(client, mode);
    close_fd(server, mode);
  }
};

// Reads what fits into buf; sets eof at the end of input, marks the connection failed on error.
void read_into(int fd, std::string& buf, bool& eof, connection& c) {
  char chunk[16384];
  while (buf.size() < fault_proxy::buffer_cap) {
    std::size_t room = std::min(sizeof chunk, fault_proxy::buffer_cap - buf.size());
    ssize_t n = ::recv(fd, chunk, room, 0);
    if (n > 0) {
      buf.append(chunk, static_cast<std::size_t>(n));
      continue;
    }
    if (n == 0) {
      eof = true;
      return;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) c.fail();
    return;
  }
}

// Writes what the socket takes now (at most `limit` bytes) and keeps the rest; marks the
// connection failed on error. Returns the bytes written.
std::size_t write_from(int fd, std::string& buf, connection& c, std::size_t limit = std::string::npos) {
  std::size_t off = 0;
  const std::size_t end = std::min(limit, buf.size());
  while (off < end) {
    ssize_t n = ::send(fd, buf.data() + off, end - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) c.fail();
    break;
  }
  buf.erase(0, off);
  return off;
}

// The request whose head is at the start of buf: its whole length (head and body), or 0 while
// the head is incomplete, or npos when it cannot be followed (chunked body, bad length).
std::size_t request_length(const std::string& buf, std::string& method, std::string& target, bool& has_auth,
                           bool& has_cookie) {
  const std::size_t end = buf.find("\r\n\r\n");
  if (end == std::string::npos) return buf.size() > 64 * 1024 ? std::string::npos : 0;
  const std::string head = buf.substr(0, end + 2);
  const std::size_t line_end = head.find("\r\n");
  const std::string line = head.substr(0, line_end);
  const std::size_t sp1 = line.find(' ');
  const std::size_t sp2 = line.find(' ', sp1 + 1);
  if (sp1 == std::string::npos || sp2 == std::string::npos) return std::string::npos;
  method = line.substr(0, sp1);
  target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::size_t body = 0;
  has_auth = false;
  has_cookie = false;
  for (std::size_t pos = line_end + 2; pos < head.size();) {
    const std::size_t eol = head.find("\r\n", pos);
    std::string h = head.substr(pos, eol - pos);
    pos = eol + 2;
    std::string lower = h;
    for (auto& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    if (lower.rfind("transfer-encoding:", 0) == 0) return std::string::npos;
    if (lower.rfind("authorization:", 0) == 0) has_auth = true;
    if (lower.rfind("cookie:", 0) == 0 && lower.find("authsession=") != std::string::npos) has_cookie = true;
    if (lower.rfind("content-length:", 0) == 0) {
      try {
        body = static_cast<std::size_t>(std::stoull(h.substr(15)));
      } catch (...) {
        return std::string::npos;
      }
    }
  }
  return end + 4 + body;
}

}  // namespace

void fault_proxy::answer_next(int n, std::string raw_response, std::string target_contains, bool close_after,
                              close_mode close_as) {
  std::lock_guard lk(http_mu_);
  inject_left_ = n;
  inject_close_ = close_after;
  inject_close_as_ = close_as;
  inject_response_ = std::move(raw_response);
  inject_match_ = std::move(target_contains);
}

void fault_proxy::rewrite_status(int n, std::string method, std::string target_contains, int from, int to) {
  std::lock_guard lk(http_mu_);
  rewrite_left_ = n;
  rewrite_method_ = std::move(method);
  rewrite_match_ = std::move(target_contains);
  rewrite_from_ = from;
  rewrite_to_ = to;
}

int fault_proxy::rewritten() const {
  std::lock_guard lk(http_mu_);
  return rewritten_;
}

void fault_proxy::hold(std::string target_contains) {
  control([&] {
    std::lock_guard lk(http_mu_);
    hold_match_ = std::move(target_contains);
  });
}

int fault_proxy::held() const {
  std::lock_guard lk(http_mu_);
  return held_;
}

std::vector<fault_proxy::request_record> fault_proxy::requests() const {
  std::lock_guard lk(http_mu_);
  return requests_;
}

std::vector<fault_proxy::request_record> fault_proxy::requests_since(std::size_t from) const {
  std::lock_guard lk(http_mu_);
  if (from >= requests_.size()) return {};
  return {requests_.begin() + static_cast<std::ptrdiff_t>(from), requests_.end()};
}

std::map<std::string, std::string> proxy_env(const fault_proxy& proxy, const std::optional<std::string>& password) {
  std::map<std::string, std::string> e{{"COUCHDB_URL", proxy.url()}};
  if (!env().user.empty()) e["COUCHDB_USER"] = env().user;
  const std::string pw = password.value_or(env().password);
  if (!pw.empty()) e["COUCHDB_PASSWORD"] = pw;
  return e;
}

fault_proxy::fault_proxy() : fault_proxy(env().host, env().port) {}

fault_proxy::fault_proxy(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  std::string service = std::to_string(port);
  int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &res);
  if (rc != 0 || !res) throw std::runtime_error("fault_proxy: cannot resolve " + host + ": " + gai_strerror(rc));
  const addrinfo* pick = res;
  for (const addrinfo* a = res; a; a = a->ai_next)
    if (a->ai_family == AF_INET) {  // pouchdb-server and CouchDB listen on 127.0.0.1 by default
      pick = a;
      break;
    }
  std::memcpy(&upstream_, pick->ai_addr, pick->ai_addrlen);
  upstream_len_ = static_cast<socklen_t>(pick->ai_addrlen);
  ::freeaddrinfo(res);

  auto fail = [this](const std::string& what) {
    std::string msg = "fault_proxy: " + what + ": " + std::strerror(errno);
    if (listen_fd_ >= 0) ::close(listen_fd_);
    if (wake_r_ >= 0) ::close(wake_r_);
    if (wake_w_ >= 0) ::close(wake_w_);
    throw std::runtime_error(msg);
  };
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) fail("socket");
  int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) fail("bind 127.0.0.1:0");
  if (::listen(listen_fd_, 128) != 0) fail("listen");
  socklen_t len = sizeof addr;
  if (::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) fail("getsockname");
  port_ = ntohs(addr.sin_port);
  int p[2];
  if (::pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0) fail("pipe2");
  wake_r_ = p[0];
  wake_w_ = p[1];
  thread_ = std::thread([this] { run(); });
}

fault_proxy::~fault_proxy() {
  stop_ = true;
  wake();
  if (thread_.joinable()) thread_.join();
  ::close(listen_fd_);
  ::close(wake_r_);
  ::close(wake_w_);
}

void fault_proxy::wake() {
  char b = 1;
  [[maybe_unused]] ssize_t n = ::write(wake_w_, &b, 1);  // a full pipe already wakes the thread
}

template <class F>
void fault_proxy::control(F&& change) {
  std::unique_lock lk(mu_);
  change();
  std::uint64_t want = ++requested_;
  lk.unlock();
  wake();
  lk.lock();
  cv_.wait_for(lk, std::chrono::seconds(5), [&] { return seen_ >= want; });
}

void fault_proxy::cut(close_mode mode) {
  control([&] {
    cut_pending_ = true;
    cut_mode_ = mode;
  });
}

void fault_proxy::refuse(bool on) {
  control([&] { refuse_ = on; });
}

void fault_proxy::stall(bool on) {
  control([&] { stall_ = on; });
}

void fault_proxy::slow(std::chrono::milliseconds latency, std::size_t bytes_per_second) {
  control([&] {
    latency_ms_ = latency.count();
    rate_ = bytes_per_second;
  });
}

void fault_proxy::run() {
  // The first bytes of an answer arrived: the request awaiting it is answered now.
  const auto note_answer = [this](connection& c, std::size_t from) {
    const auto now = std::chrono::steady_clock::now();
    std::lock_guard lk(http_mu_);
    if (*c.awaiting < requests_.size()) {
      requests_[*c.awaiting].answered_at = now;
      c.answering = c.awaiting;
      c.status_head.clear();
      c.status_read = false;
      c.answer_start = from;
    }
    c.awaiting.reset();
  };
  // The status line of a rewrite candidate's answer is whole: replaced if it is the one asked for.
  const auto rewrite = [this](connection& c, int status) {
    c.rewrite_candidate = false;
    std::lock_guard lk(http_mu_);
    if (rewrite_left_ <= 0 || status != rewrite_from_ || *c.answering >= requests_.size()) return;
    const std::size_t eol = c.s2c.find("\r\n", c.answer_start);
    if (eol == std::string::npos) return;
    const char* reason = rewrite_to_ == 202 ? "Accepted" : rewrite_to_ == 201 ? "Created" : "Rewritten";
    c.s2c.replace(c.answer_start, eol - c.answer_start, "HTTP/1.1 " + std::to_string(rewrite_to_) + " " + reason);
    --rewrite_left_;
    ++rewritten_;
  };
  // More of the answer arrived at s2c[from]: its last byte so far, and its status once the
  // status line ("HTTP/1.1 200 ...") is whole.
  const auto note_more = [this, &rewrite](connection& c, std::size_t from) {
    const auto now = std::chrono::steady_clock::now();
    int status = -1;  // -1: not read yet
    if (!c.status_read) {
      c.status_head.append(c.s2c, from, std::min<std::size_t>(c.s2c.size() - from, 64 - c.status_head.size()));
      const std::size_t eol = c.status_head.find("\r\n");
      if (eol != std::string::npos || c.status_head.size() >= 64) {
        c.status_read = true;
        status = 0;
        const std::size_t sp = c.status_head.find(' ');
        if (c.status_head.compare(0, 5, "HTTP/") == 0 && sp != std::string::npos && sp + 4 <= c.status_head.size()) {
          int v = 0;
          std::size_t k = sp + 1;
          for (; k < sp + 4 && std::isdigit(static_cast<unsigned char>(c.status_head[k])); ++k) v = v * 10 + (c.status_head[k] - '0');
          if (k == sp + 4 && v >= 100) status = v;
        }
      }
    }
    if (status >= 0 && c.rewrite_candidate) rewrite(c, status);
    std::lock_guard lk(http_mu_);
    if (*c.answering >= requests_.size()) return;
    requests_[*c.answering].last_byte_at = now;
    if (status >= 0) requests_[*c.answering].status = status;
  };
  std::vector<std::unique_ptr<connection>> conns;
  std::vector<pollfd> pfds;
  while (!stop_.load()) {
    // Controls first: after a control call returns, the change is in force.
    bool do_cut = false;
    close_mode cut_as = close_mode::reset;
    std::uint64_t snapshot = 0;
    {
      std::lock_guard lk(mu_);
      snapshot = requested_;
      do_cut = cut_pending_;
      cut_as = cut_mode_;
      cut_pending_ = false;
    }
    if (do_cut) {
      for (auto& c : conns) c->close_both(cut_as);
      conns.clear();
      std::lock_guard lk(http_mu_);
      held_ = 0;
    }
    open_ = static_cast<int>(conns.size());
    {
      std::lock_guard lk(mu_);
      seen_ = snapshot;
    }
    cv_.notify_all();
    const bool stalled = stall_.load();
    const auto latency = std::chrono::milliseconds(latency_ms_.load());
    const std::size_t rate = rate_.load();
    const auto now = std::chrono::steady_clock::now();
    int timeout_ms = 250;
    // What slow() lets through to the client now (npos: everything); 0 also shortens the wait.
    auto allowed = [&](connection& c) -> std::size_t {
      if (c.s2c.empty()) return std::string::npos;
      if (latency.count() > 0 && now < c.s2c_ready) {
        const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(c.s2c_ready - now).count() + 1;
        timeout_ms = std::min<int>(timeout_ms, static_cast<int>(wait));
        return 0;
      }
      if (rate == 0) return std::string::npos;
      const double burst = std::max(1.0, static_cast<double>(rate) / 20);  // 50 ms worth
      c.credit = std::min(burst, c.credit + std::chrono::duration<double>(now - c.credit_at).count() * static_cast<double>(rate));
      c.credit_at = now;
      if (c.credit < 1) {
        timeout_ms = std::min(timeout_ms, std::max(1, static_cast<int>(1000.0 / static_cast<double>(rate)) + 1));
        return 0;
      }
      return static_cast<std::size_t>(c.credit);
    };

    pfds.clear();
    pfds.push_back({wake_r_, POLLIN, 0});
    pfds.push_back({listen_fd_, POLLIN, 0});
    for (auto& c : conns) {
      if (stalled) {
        // Forward nothing; only notice the client going away.
        pfds.push_back({c->client, POLLRDHUP, 0});
        pfds.push_back({-1, 0, 0});
        continue;
      }
      short ce = 0, se = 0;
      if (!c->client_eof && c->c2s.size() < buffer_cap) ce |= POLLIN;
      if (!c->s2c.empty() && allowed(*c) > 0) ce |= POLLOUT;
      if (c->connecting) {
        se = POLLOUT;
      } else {
        if (!c->server_eof && c->s2c.size() < buffer_cap) se |= POLLIN;
        if (!c->c2s.empty()) se |= POLLOUT;
      }
      pfds.push_back({c->client, ce, 0});
      pfds.push_back({c->server, se, 0});
    }

    int n = ::poll(pfds.data(), pfds.size(), timeout_ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      break;  // cannot happen with valid descriptors; stop rather than spin
    }
    if (pfds[0].revents) {
      char buf[64];
      while (::read(wake_r_, buf, sizeof buf) > 0) {
      }
      continue;  // re-read the controls before touching any connection
    }

    for (std::size_t i = 0; i < conns.size(); ++i) {
      connection& c = *conns[i];
      short cr = pfds[2 + 2 * i].revents;
      short sr = pfds[3 + 2 * i].revents;
      if (stalled) {
        if (cr & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) c.dead = true;
        continue;
      }
      if ((cr & (POLLERR | POLLNVAL)) || (sr & (POLLERR | POLLNVAL))) {
        c.fail();
        continue;
      }
      // POLLHUP without asking for input (buffer full, or input already ended): nothing more
      // can come from that side and we cannot wait for the other to drain without spinning.
      if (((cr & POLLHUP) && !(pfds[2 + 2 * i].events & POLLIN)) ||
          ((sr & POLLHUP) && !c.connecting && !(pfds[3 + 2 * i].events & POLLIN))) {
        c.fail();
        continue;
      }
      if (c.connecting && (sr & (POLLOUT | POLLHUP))) {
        int err = 0;
        socklen_t len = sizeof err;
        ::getsockopt(c.server, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
          c.dead = true;  // server down: the client sees its connection closed
          continue;
        }
        c.connecting = false;
      }
      if (cr & (POLLIN | POLLHUP)) read_into(c.client, c.raw ? c.c2s : c.inbox, c.client_eof, c);
      if (!c.raw) {
        while (!c.inbox.empty()) {
          if (c.pass > 0 || c.skip > 0) {  // the rest of a request already decided on
            std::size_t& left = c.pass > 0 ? c.pass : c.skip;
            const std::size_t take = std::min(left, c.inbox.size());
            if (c.pass > 0) c.c2s.append(c.inbox, 0, take);
            c.inbox.erase(0, take);
            left -= take;
            continue;
          }
          request_record rec;
          const std::size_t len = request_length(c.inbox, rec.method, rec.target, rec.has_authorization, rec.has_session_cookie);
          if (len == 0) break;
          if (len == std::string::npos) {  // not followable: forward the rest as it comes
            c.raw = true;
            c.awaiting.reset();  // nor are its answers matched any more
            c.answering.reset();
            c.c2s += c.inbox;
            c.inbox.clear();
            break;
          }
          if (c.held) {  // recorded when it came; goes on once no hold is set
            std::lock_guard lk(http_mu_);
            if (!hold_match_.empty()) break;
            c.held = false;
            --held_;
            c.pass = len;
            c.awaiting.reset();  // a held request's answer is not matched (see request_record)
            c.answering.reset();
            continue;
          }
          rec.at = std::chrono::steady_clock::now();
          {
            std::lock_guard lk(http_mu_);
            if (!hold_match_.empty() && rec.target.find(hold_match_) != std::string::npos) {
              requests_.push_back(rec);
              c.held = true;
              ++held_;
              break;
            }
            if (inject_left_ > 0 && rec.target.find(inject_match_) != std::string::npos) {
              --inject_left_;
              rec.answered_by_proxy = true;
              c.s2c += inject_response_;
              if (inject_close_ && !c.close_when_sent) c.close_sent_as = inject_close_as_;
              c.close_when_sent = c.close_when_sent || inject_close_;
            }
            requests_.push_back(rec);
            // A request sent before the last one's answer began: pipelined, so which answer
            // is whose cannot be told here: neither is matched.
            const bool pipelined = c.awaiting.has_value();
            c.awaiting.reset();
            c.answering.reset();
            if (!rec.answered_by_proxy && !pipelined) c.awaiting = requests_.size() - 1;
            c.rewrite_candidate = c.awaiting && rewrite_left_ > 0 && rec.method == rewrite_method_ &&
                                  rec.target.find(rewrite_match_) != std::string::npos;
          }
          (rec.answered_by_proxy ? c.skip : c.pass) = len;
        }
        if (c.client_eof && !c.inbox.empty() && !c.held) {  // a partial request, then EOF: pass it on
          c.c2s += c.inbox;
          c.inbox.clear();
        }
      }
      if (!c.connecting && (sr & (POLLIN | POLLHUP))) {
        const bool was_empty = c.s2c.empty();
        const std::size_t before = c.s2c.size();
        read_into(c.server, c.s2c, c.server_eof, c);
        if (was_empty && !c.s2c.empty()) c.s2c_ready = std::chrono::steady_clock::now() + latency;
        if (c.awaiting && c.s2c.size() > before) note_answer(c, before);
        if (c.answering && c.s2c.size() > before) note_more(c, before);
      }
      if (c.dead) continue;
      if (!c.connecting && !c.c2s.empty()) write_from(c.server, c.c2s, c);
      // A status line to rewrite waits until it is whole (or the server has closed: then as it is).
      if (!c.s2c.empty() && !(c.rewrite_candidate && !c.status_read && !c.server_eof)) {
        const std::size_t limit = allowed(c);
        const std::size_t sent = limit > 0 ? write_from(c.client, c.s2c, c, limit) : 0;
        if (limit != std::string::npos) c.credit -= static_cast<double>(sent);
      }
      if (c.dead) continue;
      if (c.close_when_sent && c.s2c.empty()) {  // the injected answer is out: end here
        c.dead = true;
        c.close_as = c.close_sent_as;
        continue;
      }
      if (c.client_eof && c.c2s.empty() && !c.connecting && !c.c2s_shut) {
        ::shutdown(c.server, SHUT_WR);
        c.c2s_shut = true;
      }
      if (c.server_eof && c.s2c.empty() && !c.s2c_shut) {
        ::shutdown(c.client, SHUT_WR);
        c.s2c_shut = true;
      }
      if (c.c2s_shut && c.s2c_shut) c.dead = true;
    }

    if (pfds[1].revents & POLLIN) {
      for (int k = 0; k < 64; ++k) {  // bounded per round
        int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) break;  // EAGAIN, or a transient error: poll again
        ++accepted_;
        if (refuse_.load() || conns.size() >= max_connections) {
          ::close(fd);
          continue;
        }
        auto c = std::make_unique<connection>();
        c->client = fd;
        c->server = ::socket(upstream_.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c->server < 0) {
          c->close_both(close_mode::graceful);
          continue;
        }
        // Bytes go on as they come, both ways: with Nagle's algorithm on, the small last part of
        // an answer (a feed's closing chunk) waited for the peer's delayed ACK, ~40 ms, which
        // neither side of a direct connection (libcurl, CouchDB) would wait.
        int nodelay = 1;
        ::setsockopt(c->client, IPPROTO_TCP, TCP_NODELAY, &nodelay, sizeof nodelay);
        ::setsockopt(c->server, IPPROTO_TCP, TCP_NODELAY, &nodelay, sizeof nodelay);
        int rc = ::connect(c->server, reinterpret_cast<const sockaddr*>(&upstream_), upstream_len_);
        if (rc == 0) {
          c->connecting = false;
        } else if (errno != EINPROGRESS) {
          c->close_both(close_mode::graceful);
          continue;
        }
        conns.push_back(std::move(c));
      }
    }

    for (auto& c : conns) {
      if (!c->dead) continue;
      if (c->held) {
        std::lock_guard lk(http_mu_);
        --held_;
      }
      c->close_both(c->close_as);
    }
    std::erase_if(conns, [](const std::unique_ptr<connection>& c) { return c->dead; });
    open_ = static_cast<int>(conns.size());
    peak_ = std::max(peak_.load(), open_.load());
  }
  for (auto& c : conns) c->close_both(close_mode::reset);
  conns.clear();
  open_ = 0;
  {
    std::lock_guard lk(mu_);
    seen_ = requested_;  // nobody waits forever on a stopped proxy
  }
  cv_.notify_all();
}

}  // namespace couchgate::test
