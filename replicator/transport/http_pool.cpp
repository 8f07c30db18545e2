// Owns: the libcurl multi loop behind http_pool (see http_pool.hpp).
#include "replicator/transport/http_pool.hpp"

#include <curl/curl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <limits>
#include <optional>
#include <string_view>
#include <unordered_map>

#include "replicator/logger.hpp"
#include "replicator/outage.hpp"
#include "replicator/transport/header_text.hpp"

namespace couchgate::replicator {

namespace {

struct transfer {
  http_request req;
  http_pool::callback done;
  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  http_response resp;
  char errbuf[CURL_ERROR_SIZE] = {0};
  std::chrono::steady_clock::time_point last_byte = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point started{};  // when it was handed to libcurl (outage.hpp)
  bool idle_expired = false;
  bool probe = false;  // server_gate: this request tests the credential
  bool work = false;   // counted among the work requests in flight (options::feed_connections)
};

// The value of header line `line` when its name is `name` (lower case, with the colon); nullopt
// otherwise.
std::optional<std::string_view> header_value(std::string_view line, std::string_view name) {
  if (line.size() <= name.size() || !starts_with_ascii_ci(line, name)) return std::nullopt;
  return trim_ows(line.substr(name.size()));
}

// Keeps the two headers couchgate reads: Retry-After, and a Set-Cookie of CouchDB's session
// cookie (session_auth). A new status line (after an interim 1xx answer) starts over.
size_t on_header(char* buffer, size_t size, size_t nitems, void* userdata) {
  auto* t = static_cast<transfer*>(userdata);
  const std::string_view line(buffer, size * nitems);
  if (line.starts_with("HTTP/")) {
    t->resp.retry_after_header.clear();
    t->resp.set_cookie.clear();
    return size * nitems;
  }
  if (auto v = header_value(line, "retry-after:")) {
    t->resp.retry_after_header.assign(v->substr(0, 100));
  } else if (auto c = header_value(line, "set-cookie:"); c && c->starts_with("AuthSession=") && c->size() <= 4096) {
    t->resp.set_cookie.assign(*c);
  }
  return size * nitems;
}

size_t on_write(char* ptr, size_t size, size_t nmemb, void* userdata) {
  auto* t = static_cast<transfer*>(userdata);
  t->resp.body.append(ptr, size * nmemb);
  t->last_byte = std::chrono::steady_clock::now();
  return size * nmemb;
}

// Idle timeout: abort when no byte arrived for req.idle_timeout. (libcurl's low-speed limit
// averages bytes per second, which would cut a healthy feed whose heartbeat is one byte every
// 10 s.) libcurl calls this at least once a second per transfer.
int on_progress(void* userdata, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto* t = static_cast<transfer*>(userdata);
  if (std::chrono::steady_clock::now() - t->last_byte > t->req.idle_timeout) {
    t->idle_expired = true;
    return 1;
  }
  return 0;
}

std::once_flag curl_global_once;

}  // namespace

struct http_pool::impl {
  options opts;
  CURLM* multi = nullptr;
  std::thread loop;
  mutable std::mutex mu;
  std::deque<std::unique_ptr<transfer>> pending;  // guarded by mu
  bool stopping = false;                          // guarded by mu
  std::atomic<std::uint64_t> requests{0}, transport_errors{0}, sockets_opened{0};
  std::atomic<std::int64_t> open_sockets{0}, peak_sockets{0}, in_flight{0}, queued{0};
  mutable std::mutex gate_mu;
  server_gate gate;  // guarded by gate_mu (the loop decides, stats() reads)
  outage_tracker outage;  // guarded by gate_mu: one log line per outage and per recovery

  // Feeds the outage tracker and logs its lines (on the loop's thread, after the gate).
  void note_outage(const transfer& t, bool answered_by_server) {
    const auto now = std::chrono::steady_clock::now();
    outage_decision d;
    {
      std::lock_guard lk(gate_mu);
      d = answered_by_server ? outage.answered(now) : outage.failed(t.started, now);
    }
    if (d.line == outage_line::began) {
      named_logger("couchdb")->warn(
          "CouchDB unreachable: {}; requests are retried with backoff, their failures logged at debug until it answers again",
          t.resp.kind == error_kind::none ? "HTTP " + std::to_string(t.resp.status) : t.resp.error);
    } else if (d.line == outage_line::ended) {
      named_logger("couchdb")->warn("CouchDB answers again after {:.1f} s unreachable ({} requests failed meanwhile)",
                                    static_cast<double>(d.lasted.count()) / 1000.0, d.failures);
    }
  }

  static curl_socket_t open_socket(void* clientp, curlsocktype, curl_sockaddr* addr) {
    auto* self = static_cast<impl*>(clientp);
    curl_socket_t fd = ::socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
    if (fd != CURL_SOCKET_BAD) {
      auto now = ++self->open_sockets;
      ++self->sockets_opened;
      auto peak = self->peak_sockets.load();
      while (now > peak && !self->peak_sockets.compare_exchange_weak(peak, now)) {
      }
    }
    return fd;
  }
  static int close_socket(void* clientp, curl_socket_t fd) {
    auto* self = static_cast<impl*>(clientp);
    --self->open_sockets;
    return ::close(fd);
  }

  void start(transfer* t) {
    CURL* e = curl_easy_init();
    t->easy = e;
    std::string url = opts.base_url + t->req.target;
    curl_easy_setopt(e, CURLOPT_URL, url.c_str());
    curl_easy_setopt(e, CURLOPT_PRIVATE, t);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, &on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, t);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_USERAGENT, opts.user_agent.c_str());
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, static_cast<long>(t->req.timeout.count()));
    if (t->req.idle_timeout.count() > 0) {
      t->last_byte = std::chrono::steady_clock::now();
      curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
      curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, &on_progress);
      curl_easy_setopt(e, CURLOPT_XFERINFODATA, t);
    }
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, &impl::open_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, this);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, &impl::close_socket);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, this);
    const bool own_credential = !t->req.authorization.empty() || !t->req.cookie.empty();
    if (!t->req.authorization.empty()) t->headers = curl_slist_append(t->headers, ("Authorization: " + t->req.authorization).c_str());
    if (!t->req.cookie.empty()) t->headers = curl_slist_append(t->headers, ("Cookie: " + t->req.cookie).c_str());
    if (!own_credential && !opts.username.empty()) {
      curl_easy_setopt(e, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
      curl_easy_setopt(e, CURLOPT_USERNAME, opts.username.c_str());
      curl_easy_setopt(e, CURLOPT_PASSWORD, opts.password.c_str());
    }
    t->headers = curl_slist_append(t->headers, ("Accept: " + t->req.accept).c_str());
    t->headers = curl_slist_append(t->headers, "Expect:");  // no 100-continue round trip
    const auto& m = t->req.method;
    if (m == "GET") {
      curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else if (m == "HEAD") {
      curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else {
      curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, m.c_str());
      const std::string_view body = t->req.body_text();
      if (!body.empty() || m == "POST" || m == "PUT") {
        t->headers = curl_slist_append(t->headers, ("Content-Type: " + t->req.content_type).c_str());
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body.data());
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
      }
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
    ++requests;
    ++in_flight;
    t->started = std::chrono::steady_clock::now();
    curl_multi_add_handle(multi, e);
  }

  void finish(transfer* t, CURLcode rc) {
    if (rc == CURLE_OK) {
      curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &t->resp.status);
      auto& r = t->resp;
      if (!r.retry_after_header.empty()) r.retry_after = parse_retry_after(r.retry_after_header, std::chrono::system_clock::now());
      gate_answer a = gate_answer::accepted;
      if (r.status == 401 && t->req.cookie_may_be_stale) {
        a = gate_answer::no_answer;  // an expired session, maybe: session_auth logs in again
      } else if (is_credential_rejection(r.status, t->req.target, r.body)) {
        r.credential_rejected = true;
        a = gate_answer::auth_rejected;
      } else if (r.status == 429 || r.status == 503) {
        a = gate_answer::overloaded;
      }
      {
        std::lock_guard lk(gate_mu);
        gate.answered(std::chrono::steady_clock::now(), a, t->probe, r.retry_after);
      }
      note_outage(*t, !gateway_status(r.status));
    } else {
      {
        std::lock_guard lk(gate_mu);
        gate.answered(std::chrono::steady_clock::now(), gate_answer::no_answer, t->probe);
      }
      ++transport_errors;
      if (t->idle_expired) {
        // Silent for longer than the heartbeats allow: the connection is taken for dead (a
        // network failure), unlike a total timeout, which a feed reaches with heartbeats flowing.
        t->resp.kind = error_kind::network;
        t->resp.error = "no data for " + std::to_string(t->req.idle_timeout.count()) + " ms";
      } else {
        t->resp.kind = (rc == CURLE_OPERATION_TIMEDOUT) ? error_kind::timeout : error_kind::network;
        t->resp.error = t->errbuf[0] ? std::string(t->errbuf) : std::string(curl_easy_strerror(rc));
      }
      note_outage(*t, false);
    }
    curl_multi_remove_handle(multi, t->easy);
    curl_easy_cleanup(t->easy);
    curl_slist_free_all(t->headers);
    --in_flight;
  }

  void run() {
    std::unordered_map<transfer*, std::unique_ptr<transfer>> active;
    // Submitted, not started yet (the gate, or no work connection free), each in submission order.
    // Follow-ups (http_request::follow_up) go before other work.
    std::deque<std::unique_ptr<transfer>> waiting_feeds, waiting_follow_ups, waiting_work;
    // Work waits here, not in libcurl's own queue, so follow-ups can pass it.
    const std::size_t work_cap = opts.feed_connections < opts.max_connections ? opts.max_connections - opts.feed_connections
                                                                               : std::numeric_limits<std::size_t>::max();
    std::size_t work_active = 0;
    for (;;) {
      std::deque<std::unique_ptr<transfer>> fresh;
      bool stop;
      {
        std::lock_guard lk(mu);
        fresh.swap(pending);
        stop = stopping;
      }
      if (stop) {
        for (auto* waiting : {&waiting_feeds, &waiting_follow_ups, &waiting_work}) {
          for (auto& t : *waiting) cancel(*t);
          queued -= static_cast<std::int64_t>(waiting->size());
        }
        for (auto& t : fresh) cancel(*t);
        for (auto& entry : active) {
          auto& t = entry.second;
          curl_multi_remove_handle(multi, t->easy);
          curl_easy_cleanup(t->easy);
          curl_slist_free_all(t->headers);
          --in_flight;
          cancel(*t);
        }
        return;
      }
      queued += static_cast<std::int64_t>(fresh.size());
      for (auto& t : fresh) (t->req.feed ? waiting_feeds : t->req.follow_up ? waiting_follow_ups : waiting_work).push_back(std::move(t));
      // Start what the gate lets through: feeds first, then follow-ups and other work while a work
      // connection is free.
      auto wake_at = std::chrono::steady_clock::time_point::max();
      const auto admit = [&](std::deque<std::unique_ptr<transfer>>& waiting, bool work) {
        while (!waiting.empty() && wake_at == std::chrono::steady_clock::time_point::max()) {
          if (work && work_active >= work_cap) return;
          gate_decision d;
          {
            std::lock_guard lk(gate_mu);
            d = gate.admit(std::chrono::steady_clock::now());
          }
          if (d.action == gate_action::wait) {
            wake_at = d.at;
            return;
          }
          auto t = std::move(waiting.front());
          waiting.pop_front();
          --queued;
          if (d.action == gate_action::refuse) {
            refuse(*t, d.at);
            continue;
          }
          t->probe = d.probe;
          t->work = work;
          if (work) ++work_active;
          start(t.get());
          auto* key = t.get();
          active.emplace(key, std::move(t));
        }
      };
      // While the credential is unproven, the next request to start tests it and holds all the
      // others until it is answered (server_gate.hpp): a longpoll, which may take a minute to
      // answer, is not made that probe while work waits.
      bool proving = false;
      {
        std::lock_guard lk(gate_mu);
        proving = gate.snapshot().credential != credential_state::accepted;
      }
      if (proving && (!waiting_follow_ups.empty() || !waiting_work.empty())) {
        admit(waiting_follow_ups, true);
        admit(waiting_work, true);
        admit(waiting_feeds, false);
      } else {
        admit(waiting_feeds, false);
        admit(waiting_follow_ups, true);
        admit(waiting_work, true);
      }
      int running = 0;
      curl_multi_perform(multi, &running);
      int left = 0;
      bool answered = false;
      while (CURLMsg* msg = curl_multi_info_read(multi, &left)) {
        if (msg->msg != CURLMSG_DONE) continue;
        transfer* t = nullptr;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &t);
        finish(t, msg->data.result);
        auto it = active.find(t);
        if (it == active.end()) continue;
        auto owned = std::move(it->second);
        active.erase(it);
        if (owned->work) --work_active;
        if (owned->done) owned->done(std::move(owned->resp));
        answered = true;
      }
      // Poll at most 1 s; less when the gate lets the next request start sooner, not at all when
      // an answer may have opened the gate for the queue.
      int timeout_ms = 1000;
      if (!waiting_feeds.empty() || !waiting_follow_ups.empty() || !waiting_work.empty()) {
        if (answered) {
          timeout_ms = 0;
        } else if (wake_at != std::chrono::steady_clock::time_point::max()) {
          auto wait_ms = std::chrono::ceil<std::chrono::milliseconds>(wake_at - std::chrono::steady_clock::now()).count();
          timeout_ms = static_cast<int>(std::clamp<long long>(wait_ms, 0, 1000));
        }
      }
      curl_multi_poll(multi, nullptr, 0, timeout_ms, nullptr);
    }
  }

  // Not sent: the credential is on hold until `until`.
  static void refuse(transfer& t, std::chrono::steady_clock::time_point until) {
    auto left = std::chrono::ceil<std::chrono::seconds>(until - std::chrono::steady_clock::now()).count();
    t.resp.kind = error_kind::credential_held;
    t.resp.error = "not sent: CouchDB refused the credential; couchgate sends nothing for " + std::to_string(left) +
                   " s so that the account is not locked (CouchDB locks it after a few failed logins)";
    if (t.done) t.done(std::move(t.resp));
  }

  static void cancel(transfer& t) {
    t.resp.kind = error_kind::cancelled;
    t.resp.error = "couchgate is shutting down";
    if (t.done) t.done(std::move(t.resp));
  }
};

http_pool::http_pool(options opts) : opts_(std::move(opts)), impl_(std::make_unique<impl>()) {
  std::call_once(curl_global_once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  while (!opts_.base_url.empty() && opts_.base_url.back() == '/') opts_.base_url.pop_back();
  impl_->opts = opts_;
  impl_->gate = server_gate(opts_.gate);
  impl_->multi = curl_multi_init();
  const long cap = static_cast<long>(opts_.max_connections);
  curl_multi_setopt(impl_->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, cap);
  curl_multi_setopt(impl_->multi, CURLMOPT_MAX_HOST_CONNECTIONS, cap);
  curl_multi_setopt(impl_->multi, CURLMOPT_MAXCONNECTS, cap);
  curl_multi_setopt(impl_->multi, CURLMOPT_PIPELINING, CURLPIPE_NOTHING);
  impl_->loop = std::thread([this] { impl_->run(); });
}

http_pool::~http_pool() {
  shutdown();
  curl_multi_cleanup(impl_->multi);
}

void http_pool::shutdown() {
  {
    std::lock_guard lk(impl_->mu);
    if (impl_->stopping && !impl_->loop.joinable()) return;
    impl_->stopping = true;
  }
  curl_multi_wakeup(impl_->multi);
  if (impl_->loop.joinable()) impl_->loop.join();
  // Anything submitted after the loop ended is cancelled right away in submit().
}

void http_pool::submit(http_request req, callback done) {
  auto t = std::make_unique<transfer>();
  t->req = std::move(req);
  t->done = std::move(done);
  {
    std::lock_guard lk(impl_->mu);
    if (!impl_->stopping) {
      impl_->pending.push_back(std::move(t));
    }
  }
  if (t) {
    impl::cancel(*t);
    return;
  }
  curl_multi_wakeup(impl_->multi);
}

http_pool_stats http_pool::stats() const {
  http_pool_stats s;
  s.requests = impl_->requests.load();
  s.transport_errors = impl_->transport_errors.load();
  s.open_sockets = impl_->open_sockets.load();
  s.peak_sockets = impl_->peak_sockets.load();
  s.sockets_opened = impl_->sockets_opened.load();
  s.in_flight = impl_->in_flight.load();
  s.queued = impl_->queued.load();
  const auto now = std::chrono::steady_clock::now();
  gate_snapshot g;
  {
    std::lock_guard lk(impl_->gate_mu);
    g = impl_->gate.snapshot();
  }
  s.overloaded = g.overloaded;
  s.auth_rejections = g.auth_rejections;
  s.credential_refused = g.refused;
  s.pace = g.interval;
  s.delay = g.not_before > now ? std::chrono::ceil<std::chrono::milliseconds>(g.not_before - now) : std::chrono::milliseconds{0};
  s.credential_held = g.credential == credential_state::held && g.held_until > now;
  s.credential_accepted = g.credential == credential_state::accepted;
  if (s.credential_held) s.held_for = std::chrono::ceil<std::chrono::milliseconds>(g.held_until - now);
  {
    std::lock_guard lk(impl_->gate_mu);
    s.outages = impl_->outage.outages();
    s.unreachable = impl_->outage.down();
  }
  return s;
}

}  // namespace couchgate::replicator
