#pragma once
// Owns: the shape of a request the front door answers itself (sign-up and identities) and of its
// answer, kept free of Asio/Beast so the code that answers (gateway/identities) does not see them.
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "policy/users.hpp"

namespace couchgate::gateway::front {

// A request couchgate answers itself (route_kind::local: sign-up and identities). The handler
// may block (it talks to CouchDB through couchgate's own client): it runs on the forwarder's
// worker threads, never on an I/O thread.
struct local_request {
  std::string method;
  std::string path;   // normalised, without the query
  std::string query;  // "" or "?..."
  std::string body;   // at most forwarder_options::local_body_limit bytes
  std::string user;   // the caller CouchDB authenticated ("" when the route needs none)
  std::string peer;
  std::optional<std::string> idempotency_key;  // the Idempotency-Key header's value, as sent (nullopt when absent)
};
struct local_answer {
  unsigned status = 500;
  std::string body;  // JSON
  std::vector<std::pair<std::string, std::string>> headers;
};
using local_handler = std::function<local_answer(const local_request&)>;

// The provisioner's view of a caller CouchDB has just authenticated (a fresh `_session` answer),
// about to use their own database (gateway/provisioner; the daemon wires it).
struct caller_provisioner {
  // No I/O (callable on an I/O thread): the policy has given this user their database and its
  // `_security`, by the provisioner's own record. The record is the truth, not a memo of the
  // front door's: it turns false when the user is deleted (and stays so until a recreated user
  // is applied), and is false for a user the policy does not select (who may gain the role).
  std::function<bool(const std::string& name)> ready;
  // When not ready: applies the policy to the caller now (a `_users` document written a moment
  // ago, a user recreated or given a role the feed has not brought yet, a JWT caller without a
  // document), so their request never meets a missing or admin-only database. Blocking, like a
  // local handler (runs on the same workers). False when that could not be done.
  std::function<bool(const policy::session_user&)> ensure;
  explicit operator bool() const { return ready && ensure; }
};

}  // namespace couchgate::gateway::front
