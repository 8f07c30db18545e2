#pragma once
// Owns: the closed set of error kinds on the replication path, and the one place that decides
// "retry or give up" for each. Server answers are untrusted: anything unexpected becomes a
// `protocol` error value, never an exception or an assert.
#include <string>
#include <utility>
#include <variant>

#include "replicator/http_pool.hpp"

namespace couchgate::replicator {

enum class couch_error_kind {
  network,       // transport failed: retry with backoff
  timeout,       // retry with backoff
  unauthorized,  // 401/403: credentials or permissions; retry slowly (an operator must act)
  not_found,     // 404: the database or document does not exist
  conflict,      // 409/412
  bad_request,   // 400 and other 4xx: our request or the server's limits; do not retry as is
  server,        // 5xx: retry with backoff
  protocol,      // the answer was not what CouchDB documents: retry with backoff, log it
  cancelled,     // shutting down
};

struct couch_error {
  couch_error_kind kind = couch_error_kind::protocol;
  long status = 0;
  std::string error;   // CouchDB's "error" field or the transport error
  std::string reason;  // CouchDB's "reason" field
  bool retryable() const;
  std::string describe() const;  // one line, no credentials
};
const char* to_string(couch_error_kind k);

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
