#pragma once
// Owns: parsing the CouchDB answers that carry documents or per-document outcomes, from their raw
// text with simdjson On-Demand: `_changes` (include_docs or not), `_all_docs?include_docs=true`,
// `_bulk_get`, `GET ?open_revs`, and the rows of a `_bulk_docs` answer. Documents stay the bytes
// the server sent (wire::raw_doc). What the server got wrong in the envelope (a row of the wrong
// shape) is an error for the whole answer (retried); what a user's document got wrong is an error
// of that one document, and the rest of the answer is read.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "policy/users.hpp"
#include "replicator/transport/couch_client.hpp"
#include "replicator/wire_json.hpp"

namespace couchgate::replicator {

// A `_changes` row: (id, leaf revs, deleted) and, with include_docs=true, its document.
struct feed_change {
  std::string id;
  std::vector<std::string> revs;
  bool deleted = false;
  std::optional<wire::raw_doc> doc;      // the included document, as sent
  std::optional<std::string> doc_error;  // the included document could not be read: why
};
struct feed_page {
  std::vector<feed_change> changes;
  json last_seq;  // where to resume: the last row's seq, or the answer's last_seq when it has no rows
  std::optional<double> pending;
};
result<feed_page> parse_changes(std::string_view body);

// `_all_docs` rows (include_docs=true): id and document (or why it could not be read).
struct listed_doc {
  std::string id;
  std::optional<wire::raw_doc> doc;
  std::optional<std::string> doc_error;
};
result<std::vector<listed_doc>> parse_all_docs(std::string_view body);

// An entry of a `_bulk_get` or `?open_revs` answer.
struct fetched_entry {
  enum class kind { ok, unreadable, absent } what = kind::absent;
  std::string id;                    // the document's id (for unreadable: the id the answer names)
  std::optional<wire::raw_doc> doc;  // kind::ok
  std::string error;                 // kind::unreadable: why
};
result<std::vector<fetched_entry>> parse_bulk_get(std::string_view body);
result<std::vector<fetched_entry>> parse_open_revs(std::string_view body, const std::string& id);

// The error rows of a `_bulk_docs` answer (with new_edits:false CouchDB lists only failures;
// rows with a `rev` and no `error` are successes and not returned). `reason` is text whatever
// type the server sent.
struct write_error {
  std::string id;
  std::string error;
  std::string reason;
};
result<std::vector<write_error>> parse_bulk_docs(std::string_view body);

// An entry of a `_revs_diff` answer: the revisions the target lacks, and the leaves it has that
// may be their ancestors (CouchDB's `possible_ancestors`: leaves of a lower generation; absent
// on servers that do not compute it, e.g. pouchdb-server). Entries that are not objects and
// list members that are not strings are ignored (they name nothing to fetch); an answer that is
// not an object is an error.
struct revs_diff_entry {
  std::vector<std::string> missing;
  std::vector<std::string> possible_ancestors;
};
result<std::map<std::string, revs_diff_entry>> parse_revs_diff(const json& answer);

// The generation of a revision id ("12-abc" -> 12); nullopt when it has no number before '-'.
std::optional<std::uint64_t> revision_generation(std::string_view rev);

// A `_users` row as a user (policy::parse_user_change), its document read with the depth limit:
// only its top-level fields matter, and an unreadable or too deep document is an error of that
// one user.
policy::parsed_user user_of(const feed_change& c);
policy::parsed_user user_of(const listed_doc& d);

}  // namespace couchgate::replicator
