#pragma once
// Owns: the decision "is this failure to reach CouchDB worth a log line?". A server that stops
// answering (restart, network cut, hang) makes every request in flight and every retry fail; one
// warning each was a storm (200 in 15 s for one restart under 20 writers). Instead an outage is
// logged once when it begins and once when the server answers again, with how long it lasted
// and how many requests failed meanwhile; each failure itself is logged at debug.
//
// An outage begins with a request that gets no answer (network error, timeout) or a gateway
// answer (502, 504) when the server was up and has not answered anything since that request
// started. A failure after an answer that arrived meanwhile is that one request's trouble (a
// slow longpoll, a request sent to the server just before it came back), not an outage: counted,
// logged by its caller at debug, never a line here — else every recovery under load would log a
// flurry of one-request "outages". The outage ends with the first answer of any other kind.
//
// Pure: time is passed in, so every decision is unit-tested without a clock or a server.
#include <chrono>
#include <cstdint>

namespace couchgate::replicator {

struct couch_error;

using outage_clock = std::chrono::steady_clock;

enum class outage_line {
  none,   // nothing to log at warn/info (log the failure at debug if at all)
  began,  // log: the server is unreachable
  ended,  // log: the server answers again (lasted, failures)
};

struct outage_decision {
  outage_line line = outage_line::none;
  std::chrono::milliseconds lasted{0};  // ended: since the outage began
  std::uint64_t failures = 0;           // ended: requests that failed during it (the first included)
};

class outage_tracker {
 public:
  // A request started at `started` got no usable answer at `now`.
  outage_decision failed(outage_clock::time_point started, outage_clock::time_point now);
  // A request got an answer from the server at `now`.
  outage_decision answered(outage_clock::time_point now);

  bool down() const { return down_; }
  std::uint64_t outages() const { return outages_; }          // begun since construction
  std::uint64_t failures() const { return total_failures_; }  // failed requests, leftovers included

 private:
  bool down_ = false;
  outage_clock::time_point since_{};
  outage_clock::time_point last_answer_ = outage_clock::time_point::min();
  std::uint64_t failures_ = 0;  // of the current outage
  std::uint64_t outages_ = 0;
  std::uint64_t total_failures_ = 0;
};

// Whether an HTTP status means "the server behind could not be reached" (a proxy's 502 or 504).
bool gateway_status(long status);

// Whether an error value is part of an outage (network, timeout, 502/504): the pool logs the
// outage once, so the caller logs such a failure at debug, anything else at warn.
bool outage_error(const couch_error& e);

}  // namespace couchgate::replicator
