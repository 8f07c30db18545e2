// Owns: the outage log decision (see outage.hpp).
#include "replicator/outage.hpp"

#include "replicator/couch_error.hpp"

namespace couchgate::replicator {

outage_decision outage_tracker::failed(outage_clock::time_point started, outage_clock::time_point now) {
  ++total_failures_;
  if (down_) {
    ++failures_;
    return {};
  }
  if (started < last_answer_) return {};  // the server answered since: this request's own trouble
  down_ = true;
  since_ = now;
  failures_ = 1;
  ++outages_;
  return {outage_line::began, {}, 1};
}

outage_decision outage_tracker::answered(outage_clock::time_point now) {
  if (now > last_answer_) last_answer_ = now;
  if (!down_) return {};
  down_ = false;
  const auto lasted = std::chrono::duration_cast<std::chrono::milliseconds>(now - since_);
  return {outage_line::ended, lasted < std::chrono::milliseconds(0) ? std::chrono::milliseconds(0) : lasted, failures_};
}

bool gateway_status(long status) { return status == 502 || status == 504; }

bool outage_error(const couch_error& e) {
  return e.kind == couch_error_kind::network || e.kind == couch_error_kind::timeout || gateway_status(e.status);
}

}  // namespace couchgate::replicator
