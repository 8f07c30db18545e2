#pragma once
// Owns: percent-encoding of what couchgate puts into a CouchDB URL (database names, document
// ids, query values) and its inverse. (Moved here from http_pool: every transport and the
// front door use it, none needs libcurl for it.)
#include <optional>
#include <string>
#include <string_view>

namespace couchgate::replicator {

// Percent-encodes a path segment (database name or document id): everything but unreserved
// characters. `_design/` and `_local/` prefixes of document ids keep their slash.
std::string encode_segment(std::string_view s);
std::string encode_doc_id(std::string_view id);
std::string encode_query_value(std::string_view s);
// The inverse: "%41" -> "A" (either hex case; '+' stays '+'); nullopt on a bad escape.
std::optional<std::string> percent_decode(std::string_view s);
// "/" + encode_segment(db): a database's path. (Out of line on purpose: GCC 12 at -O3 reports a
// false -Wrestrict positive for `"/" + std::string&&` once inlined into some callers.)
std::string db_path(std::string_view db);

}  // namespace couchgate::replicator
