#pragma once
// Owns: the front door's routing, with path normalisation done once, before the route is chosen.
// Pure: no I/O, no configuration beyond its arguments; unit-tested with a table of crafted paths.
//
// Routes: /me and /me/... -> the caller's own database; /shared and /shared/... -> the shared
// database (when configured); GET|HEAD /, GET|POST|DELETE /_session and GET /_uuids pass
// through; OPTIONS on any of these is a CORS preflight (CouchDB's [cors] answers it); the rest
// is 404. A request target that could name another database once some server or proxy decoded
// it is refused (400): absolute URLs, '//' inside the path, '.' and '..' segments (also
// percent-encoded, also hidden behind an encoded slash), backslashes (raw or %5C), bad
// percent-encoding, control characters, fragments. The mount segment itself ("me", "shared")
// must be literal: /me%2F..%2Fuserdb-x is not /me.
#include <optional>
#include <string>
#include <string_view>

#include "replicator/transport/http_pool.hpp"

namespace couchgate::gateway::front {

// local: answered by couchgate itself (sign-up and identities: /_signup, /_signup/available,
// /_identity/<field>); `target` holds the normalised path.
enum class route_kind { user_db, shared_db, pass_through, local, preflight, not_found, bad_request };

struct route {
  route_kind kind = route_kind::not_found;
  std::string rest;    // user_db/shared_db: the path after the mount, still encoded ("" or "/...")
  std::string query;   // "" or "?..." (passed on unchanged)
  std::string target;  // pass_through and preflight: the target sent upstream
  std::string reason;  // not_found/bad_request: the JSON error's reason
  std::string label;   // the route's name in metrics: me, shared, root, session, uuids, preflight, other
};

route route_request(std::string_view method, std::string_view target, bool shared_enabled);

// Whether a request to a database route (`method`, `rest` as in route::rest), once CouchDB has
// answered it 2xx, may have added a row to the database's `_changes`: POST to the database,
// `_bulk_docs`, `_purge`, a document or design document written, deleted, copied or uploaded
// (POST), one of their attachments written or deleted, a design document's update handler,
// `_index` (writes or deletes design documents). `_local/` documents (not in `_changes`), reads sent as POST
// (`_revs_diff`, `_bulk_get`, `_all_docs`, `_find`, views) and everything else: false. The front
// door wakes the database's parked live feeds on such an answer instead of waiting for CouchDB's
// `_db_updates` event; a write this misses is still announced by that event.
bool may_add_changes(std::string_view method, std::string_view rest);
// Whether a route's rest is the database's `_changes` as CouchDB dispatches it (its one segment
// decoded: "/%5Fchanges" is "/_changes" to CouchDB, so also to the live feeds' parking).
bool is_changes_path(std::string_view rest);
// The method CouchDB runs a request as: a POST with an `X-HTTP-Method-Override` header naming
// one of the methods chttpd accepts there runs as that method.
std::string_view couch_method(std::string_view method, std::string_view override_header);

// Percent-decoding of a path segment or query value; nullopt on a bad escape.
using replicator::percent_decode;
// The decoded value of `key` in a query string ("?a=1&b=2" or "a=1&b=2"; '+' is a space);
// nullopt when absent or badly encoded.
std::optional<std::string> query_param(std::string_view query, std::string_view key);

// A database name as one path segment: every byte outside [a-z0-9_-] percent-encoded (CouchDB
// reads '+' in a path as a space, and '/' would split the name).
std::string encode_db_name(std::string_view db);
// The upstream target of a database route: "/" + encoded db + rest + query.
std::string db_target(std::string_view db, const route& r);

// A Location header from CouchDB naming `db` becomes the client's view of it: client_base
// ("https://host:port", or "" for a path-only reference) + mount ("/me") + the rest. Other
// values are returned unchanged.
std::string rewrite_location(std::string_view location, std::string_view db, std::string_view mount,
                             std::string_view client_base);

}  // namespace couchgate::gateway::front
