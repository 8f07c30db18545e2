// Owns: the pool-wide pacing and credential-hold decisions (see server_gate.hpp).
#include "replicator/server_gate.hpp"

#include <time.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <string>

#include "replicator/transport/header_text.hpp"

namespace couchgate::replicator {

using std::chrono::milliseconds;

gate_decision server_gate::admit(gate_clock::time_point now) {
  if (cred_ == credential_state::held) {
    if (now < held_until_) {
      ++refused_;
      return {gate_action::refuse, held_until_, false};
    }
    cred_ = credential_state::unproven;  // the hold is over: one probe
  }
  if (cred_ == credential_state::unproven && probe_in_flight_) return {gate_action::wait, gate_clock::time_point::max(), false};
  auto at = not_before_;
  if (started_once_ && interval_.count() > 0) at = std::max(at, last_start_ + interval_);
  if (at > now) return {gate_action::wait, at, false};
  last_start_ = now;
  started_once_ = true;
  const bool probe = cred_ == credential_state::unproven;
  if (probe) probe_in_flight_ = true;
  return {gate_action::start, now, probe};
}

void server_gate::answered(gate_clock::time_point now, gate_answer a, bool probe, std::optional<milliseconds> retry_after) {
  if (probe) probe_in_flight_ = false;
  switch (a) {
    case gate_answer::accepted:
      if (probe && cred_ == credential_state::unproven) cred_ = credential_state::accepted;
      interval_ -= interval_ / 5;
      if (interval_ < opts_.base_interval / 5) interval_ = milliseconds{0};
      return;
    case gate_answer::overloaded: {
      ++overloaded_;
      // One step per interval: the answers of requests that were in flight together count once.
      if (interval_.count() == 0) {
        interval_ = opts_.base_interval;
        last_increase_ = now;
      } else if (now - last_increase_ >= interval_) {
        interval_ = std::min(opts_.max_interval,
                             milliseconds{static_cast<milliseconds::rep>(static_cast<double>(interval_.count()) * opts_.increase)});
        last_increase_ = now;
      }
      milliseconds delay = interval_;
      if (retry_after) delay = std::max(delay, std::min(*retry_after, opts_.max_retry_after));
      not_before_ = std::max(not_before_, now + delay);
      return;
    }
    case gate_answer::auth_rejected:
      ++auth_rejections_;
      held_until_ = cred_ == credential_state::held ? std::max(held_until_, now + opts_.auth_hold) : now + opts_.auth_hold;
      cred_ = credential_state::held;
      return;
    case gate_answer::no_answer:
      return;
  }
}

gate_snapshot server_gate::snapshot() const {
  gate_snapshot s;
  s.credential = cred_;
  s.held_until = held_until_;
  s.interval = interval_;
  s.not_before = not_before_;
  s.overloaded = overloaded_;
  s.auth_rejections = auth_rejections_;
  s.refused = refused_;
  return s;
}

bool is_credential_rejection(long status, std::string_view target, std::string_view body) {
  if (status == 401) return true;
  if (status != 403) return false;
  const std::string_view path = target.substr(0, target.find('?'));
  if (path == "/" || path == "/_session") return true;
  const auto j = nlohmann::json::parse(body.begin(), body.end(), nullptr, false);
  if (!j.is_object()) return false;
  const auto it = j.find("reason");
  if (it == j.end() || !it->is_string()) return false;
  // CouchDB 3.5 couch_auth_lockout: "Account is temporarily locked due to multiple authentication failures"
  return it->get_ref<const std::string&>().find("temporarily locked") != std::string::npos;
}

std::optional<milliseconds> parse_retry_after(std::string_view value, std::chrono::system_clock::time_point now) {
  value = trim_ows(value);
  if (value.empty()) return std::nullopt;
  if (std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    if (value.size() > 9) return milliseconds{999'999'999LL * 1000};  // absurdly long: the caller caps it
    return milliseconds{std::stoll(std::string(value)) * 1000};
  }
  // IMF-fixdate, e.g. "Sun, 06 Nov 1994 08:49:37 GMT" (the only date form senders may generate).
  std::tm tm{};
  const std::string s(value);
  const char* end = strptime(s.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  if (end == nullptr || *end != '\0') return std::nullopt;
  const time_t t = timegm(&tm);
  if (t == static_cast<time_t>(-1)) return std::nullopt;
  // Compared in seconds first: a date centuries ahead (year 2300 and later) would overflow
  // system_clock's nanoseconds in from_time_t (signed overflow: UB, shown by UBSan; found writing
  // the error_answer fuzz target).
  const time_t now_s = std::chrono::system_clock::to_time_t(now);
  if (t < now_s) return milliseconds{0};
  if (t - now_s > 999'999'999) return milliseconds{999'999'999LL * 1000};  // as a huge delay-seconds
  const auto at = std::chrono::system_clock::from_time_t(t);
  if (at <= now) return milliseconds{0};
  return std::chrono::duration_cast<milliseconds>(at - now);
}

}  // namespace couchgate::replicator
