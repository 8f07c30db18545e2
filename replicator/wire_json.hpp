#pragma once
// Owns: reading JSON that came over the wire without trusting it.
//  - A nesting-depth limit on every parse (`max_depth`): excess is an error value for that one
//    answer or document, never a deep recursion (nlohmann's copy and dump recurse per level).
//  - Checked field accessors that never throw: a field of the wrong type reads as absent.
//  - Documents are data, not something to rebuild: `read_doc` reads the few top-level fields
//    couchgate needs with simdjson On-Demand and keeps the bytes the server sent, which are
//    written on unchanged (numbers of any size, key order, escapes); only `_id` is rewritten for
//    the id mapping (`with_id`).
//  - A process-wide count of what was refused (`couchgate_wire_rejected_total`).
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "replicator/transport/couch_client.hpp"

namespace couchgate::replicator::wire {

// Deeper than this is refused (an answer's envelope counts: a document inside a `_bulk_get`
// answer is checked on its own text).
inline constexpr std::size_t max_depth = 512;

// Nesting depth of JSON text (`[` and `{` outside strings), checking that brackets match and
// strings end. nullopt when they do not, or when the depth exceeds `limit` (scanning stops there).
std::optional<std::size_t> nesting_depth(std::string_view text, std::size_t limit = max_depth);

// A DOM of `text`, refused (protocol error naming `what`) when it is not JSON or nested deeper
// than max_depth. Counted in rejected() when refused.
result<json> parse(std::string_view text, std::string_view what);

// The error value for something unreadable in an answer or document; counts it.
couch_error malformed(std::string what);
// Refusals so far (answers, rows, documents), for /metrics.
std::uint64_t rejected();

// Checked accessors: nullptr / nullopt when `obj` is not an object, lacks `key`, or the field has
// another type. Never throw.
const json* find(const json& obj, const char* key);
const json* find_object(const json& obj, const char* key);
const json* find_array(const json& obj, const char* key);
std::optional<std::string> get_string(const json& obj, const char* key);
bool get_true(const json& obj, const char* key);  // present, boolean and true
// A field CouchDB documents as a string that may be anything (a validate function may throw an
// object as `reason`): the string itself, else its compact JSON text; at most `max` bytes.
std::string text_of(const json& v, std::size_t max = 300);
std::string text_of(std::string_view raw_json_text, std::size_t max = 300);

// A document as the server sent it, with the top-level fields couchgate reads.
struct raw_doc {
  std::string text;  // the bytes the server sent (one JSON object)
  std::string id;
  std::string rev;   // empty when absent
  bool deleted = false;
  bool has_attachments = false;
  bool has_revisions = false;
  // `_revisions` {start, ids}: the history covers generations start - ids + 1 .. start (0 when
  // absent or of the wrong shape).
  std::uint64_t revisions_start = 0;
  std::size_t revisions_count = 0;
  std::size_t id_pos = 0, id_len = 0;  // the `_id` value's token ("..." with its quotes) in text
};
// Reads a document from its raw text. Errors (counted): not a JSON object, deeper than
// max_depth, `_id` missing or not a string, `_rev`/`_deleted`/`_revisions` of the wrong type.
result<raw_doc> read_doc(std::string text);
// The document's text with `_id` set to `id` and nothing else changed.
std::string with_id(const raw_doc& d, std::string_view id);
// The document's text with one more top-level field (`value_json` is JSON text) at its end.
std::string with_field(std::string_view object_text, std::string_view key, std::string_view value_json);
// JSON string literal for s (quotes included).
std::string quote(std::string_view s);

}  // namespace couchgate::replicator::wire
