#pragma once
// Owns: the shape of a request the front door answers itself (sign-up and identities) and of its
// answer, kept free of Asio/Beast so the code that answers (gateway/identities) does not see them.
#include <functional>
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
};
struct local_answer {
  unsigned status = 500;
  std::string body;  // JSON
  std::vector<std::pair<std::string, std::string>> headers;
};
using local_handler = std::function<local_answer(const local_request&)>;

// A caller CouchDB has just authenticated, about to use their own database: applies the policy
// to them now if the provisioner has not yet (a `_users` document written a moment ago; a JWT
// caller without one), so their first request never meets a missing or admin-only database
// (gateway/provisioner). Blocking, like a local handler (runs on the same workers). False when
// that could not be done.
using caller_provisioner = std::function<bool(const policy::session_user&)>;

}  // namespace couchgate::gateway::front
