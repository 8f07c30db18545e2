#pragma once
// Owns: the databases couchgate itself creates besides user databases: the central database
// (admin-only `_security` and, unless turned off, a validate_doc_update that rejects writes by
// non-admins, so the central database never accepts data or code from users) and the shared
// database.
#include <string>
#include <vector>

#include "replicator/transport/couch_client.hpp"

namespace couchgate::gateway {

// The design document guarding the central database.
replicator::json central_guard_ddoc();

// Each returns an empty optional on success, else the error.
// guard=false removes couchgate's own _design/couchgate if an earlier run installed it.
std::optional<replicator::couch_error> ensure_central_db(replicator::couch_client& client, const std::string& db,
                                                         bool guard);
// A database only server admins can read or write (couchgate's own: identities).
std::optional<replicator::couch_error> ensure_private_db(replicator::couch_client& client, const std::string& db);
std::optional<replicator::couch_error> ensure_shared_db(replicator::couch_client& client, const std::string& db,
                                                        const std::vector<std::string>& member_roles,
                                                        const std::vector<std::string>& admin_roles);

}  // namespace couchgate::gateway
