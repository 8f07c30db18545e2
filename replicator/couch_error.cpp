// Owns: classification of CouchDB answers into couch_error kinds (see couch_error.hpp).
#include "replicator/couch_error.hpp"

#include "replicator/wire_json.hpp"

namespace couchgate::replicator {

bool couch_error::retryable() const {
  switch (kind) {
    case couch_error_kind::network:
    case couch_error_kind::timeout:
    case couch_error_kind::server:
    case couch_error_kind::protocol:
    case couch_error_kind::unauthorized:
    case couch_error_kind::overloaded:
      return true;
    default:
      return false;
  }
}

const char* to_string(couch_error_kind k) {
  switch (k) {
    case couch_error_kind::network: return "network";
    case couch_error_kind::timeout: return "timeout";
    case couch_error_kind::unauthorized: return "unauthorized";
    case couch_error_kind::forbidden: return "forbidden";
    case couch_error_kind::overloaded: return "overloaded";
    case couch_error_kind::not_found: return "not_found";
    case couch_error_kind::conflict: return "conflict";
    case couch_error_kind::bad_request: return "bad_request";
    case couch_error_kind::server: return "server";
    case couch_error_kind::protocol: return "protocol";
    case couch_error_kind::cancelled: return "cancelled";
  }
  return "unknown";
}

std::string couch_error::describe() const {
  std::string s = to_string(kind);
  if (status) s += " (HTTP " + std::to_string(status) + ")";
  if (!error.empty()) s += ": " + error;
  if (!reason.empty()) s += ": " + reason;
  if (kind == couch_error_kind::overloaded && retry_after.count() >= 0) {
    s += " (Retry-After " + std::to_string(retry_after.count()) + " ms)";
  }
  return s;
}

couch_error error_from(const http_response& r) {
  couch_error e;
  switch (r.kind) {
    case error_kind::network: e.kind = couch_error_kind::network; e.error = r.error; return e;
    case error_kind::timeout: e.kind = couch_error_kind::timeout; e.error = r.error; return e;
    case error_kind::cancelled: e.kind = couch_error_kind::cancelled; e.error = r.error; return e;
    case error_kind::credential_held: e.kind = couch_error_kind::unauthorized; e.error = r.error; return e;
    case error_kind::none: break;
  }
  e.status = r.status;
  // `reason` of any type is read as text: a validate function may throw an object as it.
  // (Not counted as a refusal: error bodies need not be JSON, a proxy's 502 page is not.)
  if (wire::nesting_depth(r.body)) {
    auto j = json::parse(r.body, nullptr, false);
    if (auto v = wire::get_string(j, "error")) e.error = std::move(*v);
    if (const auto* v = wire::find(j, "reason")) e.reason = wire::text_of(*v);
  }
  if (e.reason.size() > 300) e.reason.resize(300);
  if (r.credential_rejected || r.status == 401) e.kind = couch_error_kind::unauthorized;
  else if (r.status == 403) e.kind = couch_error_kind::forbidden;
  else if (r.status == 429 || r.status == 503) {
    e.kind = couch_error_kind::overloaded;
    if (r.retry_after) e.retry_after = *r.retry_after;
  }
  else if (r.status == 404) e.kind = couch_error_kind::not_found;
  else if (r.status == 409 || r.status == 412) e.kind = couch_error_kind::conflict;
  else if (r.status >= 400 && r.status < 500) e.kind = couch_error_kind::bad_request;
  else if (r.status >= 500) e.kind = couch_error_kind::server;
  else {
    e.kind = couch_error_kind::protocol;
    if (e.error.empty()) e.error = "unexpected HTTP status";
  }
  return e;
}

}  // namespace couchgate::replicator
