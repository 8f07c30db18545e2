#pragma once
// Owns: the pool-wide decision "may the next request to CouchDB start now?". Two reasons to say
// no, both about the whole server rather than one database:
//
// - Overload (429 Too Many Requests, 503 Service Unavailable). The server's Retry-After is the
//   least delay before the next request, and the pool slows down toward that server as
//   couch_replicator's rate_limiter does (AIMD on the interval between request starts:
//   multiplied on each overload answer, shrunk by a fifth on each success, 0 again once small).
// - A rejected credential (401, or a 403 saying the account is locked). Retrying a wrong password
//   is what locks an account: CouchDB 3.5's [chttpd_auth_lockout] (on by default) locks a user
//   for every client from our address after 5 failures within 5 minutes. So after a rejection
//   every request is refused at once, without touching the network, for `auth_hold` (5 minutes,
//   the lockout window); then a single probe request goes out, and only when it is accepted do
//   the others follow. Until the credential has been accepted once (at start) the same single
//   probe rule holds, so a wrong password costs one failed authentication, not one per
//   connection. The failures the server can see are therefore at most: the requests already in
//   flight when a working credential stops working, plus one probe per hold.
//
// Pure: time is passed in, so every decision is unit-tested without a clock or a server.
#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>

namespace couchgate::replicator {

using gate_clock = std::chrono::steady_clock;

struct gate_options {
  std::chrono::milliseconds base_interval{50};      // first step of the slow-down
  std::chrono::milliseconds max_interval{10000};    // slowest pace: one request start per this
  std::chrono::milliseconds max_retry_after{300000};  // a longer Retry-After is capped to this
  std::chrono::milliseconds auth_hold{300000};      // nothing is sent this long after a rejection
  double increase = 1.5;                            // interval factor per overload answer
};

// What became of a request, as far as the gate cares.
enum class gate_answer {
  accepted,   // any answer that is neither of the two below (2xx, 404, 409, ...)
  overloaded,        // 429 or 503
  auth_rejected,     // the credential was refused (see is_credential_rejection)
  no_answer,         // transport error, timeout, cancelled: says nothing about either
};

enum class gate_action {
  start,   // send it now (admit() recorded the start)
  wait,    // keep it queued; ask again at `at` (or when an answer arrives)
  refuse,  // fail it at once: the credential is on hold
};

struct gate_decision {
  gate_action action = gate_action::start;
  gate_clock::time_point at{};  // for wait: when to ask again (time_point::max(): after the next answer)
  bool probe = false;           // for start: this request tests the credential; pass it back to answered()
};

enum class credential_state {
  unproven,  // nothing accepted yet: one request at a time
  accepted,  // the server took it
  held,      // rejected: nothing is sent until held_until
};

struct gate_snapshot {
  credential_state credential = credential_state::unproven;
  gate_clock::time_point held_until{};
  std::chrono::milliseconds interval{0};        // current pace (0 = unlimited)
  gate_clock::time_point not_before{};          // no request starts before this
  std::uint64_t overloaded = 0;                 // overload answers seen
  std::uint64_t auth_rejections = 0;            // rejections seen
  std::uint64_t refused = 0;                    // requests failed at once while held
};

class server_gate {
 public:
  explicit server_gate(gate_options o = {}) : opts_(o) {}

  // For the request at the head of the queue.
  gate_decision admit(gate_clock::time_point now);
  // An admitted request ended. `retry_after` is the server's Retry-After, if it sent one.
  void answered(gate_clock::time_point now, gate_answer a, bool probe,
                std::optional<std::chrono::milliseconds> retry_after = {});

  gate_snapshot snapshot() const;

 private:
  gate_options opts_;
  credential_state cred_ = credential_state::unproven;
  gate_clock::time_point held_until_{};
  bool probe_in_flight_ = false;
  std::chrono::milliseconds interval_{0};
  gate_clock::time_point last_start_{};
  bool started_once_ = false;
  gate_clock::time_point not_before_{};
  gate_clock::time_point last_increase_{};
  std::uint64_t overloaded_ = 0, auth_rejections_ = 0, refused_ = 0;
};

// Whether an HTTP answer means "the credential itself was refused": 401 anywhere; a 403 whose
// reason says the account is locked (CouchDB's lockout answer); a 403 on the server root or
// /_session. A 403 on a database or document (`forbidden` from _security or a
// validate_doc_update) is a permission or document error, not this.
bool is_credential_rejection(long status, std::string_view target, std::string_view body);

// The Retry-After header's value (delay-seconds or an HTTP-date, RFC 9110 10.2.3) as a delay
// from `now`; nullopt when absent or not understood. A date in the past is 0.
std::optional<std::chrono::milliseconds> parse_retry_after(std::string_view value,
                                                           std::chrono::system_clock::time_point now);

}  // namespace couchgate::replicator
