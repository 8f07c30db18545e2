#pragma once
// Owns: the closed set of error kinds on the replication path, and the one place that decides
// "retry or give up" for each. Server answers are untrusted: anything unexpected becomes a
// `protocol` error value, never an exception or an assert.
#include <chrono>
#include <string>
#include <utility>
#include <variant>

#include "replicator/transport/transport.hpp"

namespace couchgate::replicator {

enum class couch_error_kind {
  network,       // transport failed: retry with backoff
  timeout,       // retry with backoff
  unauthorized,  // 401 (or a 403 saying the account is locked): the credential was refused. Retryable,
                 // but only through http_pool's credential hold (server_gate.hpp): one probe per
                 // hold, never a retry storm that would lock the account
  forbidden,     // 403 on a database or document (_security, validate_doc_update): a permission or
                 // document error, not a credential problem; do not retry as is
  overloaded,    // 429 or 503: the server asks us to slow down; retry after its Retry-After
                 // (the pool paces every request to that server, see server_gate.hpp)
  not_found,     // 404: the database or document does not exist
  conflict,      // 409/412
  bad_request,   // 400 and other 4xx: our request or the server's limits; do not retry as is
  server,        // other 5xx: retry with backoff
  protocol,      // the answer was not what CouchDB documents: retry with backoff, log it
  cancelled,     // shutting down
};

struct couch_error {
  couch_error_kind kind = couch_error_kind::protocol;
  long status = 0;
  std::string error;   // CouchDB's "error" field or the transport error
  std::string reason;  // CouchDB's "reason" field
  std::chrono::milliseconds retry_after{-1};  // overloaded: the server's Retry-After (-1 = none)
  bool retryable() const;
  std::string describe() const;  // one line, no credentials
};
const char* to_string(couch_error_kind k);
// Every kind, for per-kind counters.
inline constexpr couch_error_kind all_couch_error_kinds[] = {
    couch_error_kind::network,   couch_error_kind::timeout,     couch_error_kind::unauthorized,
    couch_error_kind::forbidden, couch_error_kind::overloaded,  couch_error_kind::not_found,
    couch_error_kind::conflict,  couch_error_kind::bad_request, couch_error_kind::server,
    couch_error_kind::protocol,  couch_error_kind::cancelled};

// Classifies a response that was not a success.
couch_error error_from(const http_response& r);

template <class T>
class result {
 public:
  result(T v) : v_(std::move(v)) {}
  result(couch_error e) : v_(std::move(e)) {}
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() { return std::get<0>(v_); }
  const T& value() const { return std::get<0>(v_); }
  T* operator->() { return &value(); }
  const couch_error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, couch_error> v_;
};

}  // namespace couchgate::replicator
