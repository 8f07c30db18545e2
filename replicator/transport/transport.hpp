#pragma once
// Owns: the seam between couchgate and the wire. A request goes in, an answer or an error value
// comes out (http_response::kind); nothing here throws. http_pool (libcurl, the real sockets),
// session_auth (cookie authentication in front of it) and the tests' scripted_transport are the
// implementations; couch_client and everything above it see only this interface.
#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace couchgate::replicator {

enum class error_kind {
  none,      // a response arrived (look at the status)
  network,   // could not connect, connection reset, DNS..., or silent past idle_timeout
  timeout,   // total timeout (the answer did not end in time)
  cancelled, // the pool shut down
  credential_held,  // not sent: CouchDB refused the credential recently (see server_gate.hpp)
};

struct http_request {
  std::string method = "GET";
  std::string target;  // path + query, already percent-encoded, starting with '/'
  // Shared, so that a layer may send the same request again (session_auth after a renewed
  // login) without copying what may be megabytes. Null = no body.
  std::shared_ptr<const std::string> body;
  std::string content_type = "application/json";
  std::string accept = "application/json";
  std::chrono::milliseconds timeout{30000};        // whole request
  std::chrono::milliseconds idle_timeout{0};       // abort when no byte arrives for this long (feeds)
  // Set by session_auth; secrets: never logged. Empty = not sent.
  std::string authorization;  // the Authorization header's value ("Basic ...")
  std::string cookie;         // the Cookie header's value ("AuthSession=...")
  // A 401 to this request may only mean that its session cookie expired: http_pool's gate does
  // not take it for a refused credential (session_auth logs in again and retries once).
  bool cookie_may_be_stale = false;
  // A change feed's longpoll (`_changes`, `_db_updates`), which holds its connection while
  // nothing happens: http_pool keeps connections for these that other requests never take
  // (http_pool::options::feed_connections), so a feed never waits behind a queue of work.
  bool feed = false;
  // The next step of work already begun (a provisioned user's `_security` after its database
  // was created): http_pool starts it before other work waiting for a connection, within the
  // same work connections, so work in progress ends before new work starts and a user's wait
  // is one queue, not two (issue #18: at 100 new users/s a `_security` write waited a median
  // 57 ms behind other users' creates).
  bool follow_up = false;

  void set_body(std::string b) { body = std::make_shared<const std::string>(std::move(b)); }
  std::string_view body_text() const { return body ? std::string_view(*body) : std::string_view(); }
};

struct http_response {
  error_kind kind = error_kind::none;
  long status = 0;
  std::string body;
  std::string error;  // transport error text; never contains credentials
  std::string retry_after_header;  // the Retry-After header as sent ("" = none)
  std::optional<std::chrono::milliseconds> retry_after;  // it, parsed (seconds or HTTP-date)
  std::string set_cookie;  // the AuthSession Set-Cookie header as sent ("" = none); a secret
  bool credential_rejected = false;  // the server refused the credential (is_credential_rejection)
  bool transport_ok() const { return kind == error_kind::none; }
  bool ok() const { return kind == error_kind::none && status >= 200 && status < 300; }
};

class transport {
 public:
  virtual ~transport() = default;
  using callback = std::function<void(http_response)>;
  // Thread-safe. `done` runs exactly once, with the answer or the error, possibly on another
  // thread (http_pool: its loop thread; keep it short) or before submit returns.
  virtual void submit(http_request req, callback done) = 0;

  std::future<http_response> request(http_request req) {
    auto p = std::make_shared<std::promise<http_response>>();
    auto f = p->get_future();
    submit(std::move(req), [p](http_response r) { p->set_value(std::move(r)); });
    return f;
  }
  http_response perform(http_request req) { return request(std::move(req)).get(); }
};

}  // namespace couchgate::replicator
