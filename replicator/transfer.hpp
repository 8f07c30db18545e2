#pragma once
// Owns: one round of the replication protocol for many (source, target) pairs at once:
//   target _revs_diff  ->  source _bulk_get?revs=true (or GET ?open_revs fallback)
//   ->  target _bulk_docs new_edits:false
// Rows are grouped so that each target gets one `_revs_diff` and each source one `_bulk_get` per
// batch, whatever the number of databases involved: fan-in (many sources, one central target)
// and restore (one central source, many targets) are the same code.
//
// Every failure is attributed to the row's `unit` (the thing whose checkpoint depends on the row:
// the source database in fan-in, the target database in restore). A unit with any failure must
// not advance its checkpoint; re-sending is harmless because writes use new_edits:false.
// A failure that re-sending cannot cure — the target refuses one document (a per-row `forbidden`
// from a validate function, `too_large`, any non-transient row error; a 413 for a batch is split
// in halves until the one document is found) or the source's document cannot be read (not JSON,
// nested deeper than wire::max_depth) — is a *document* failure instead: reported in
// `doc_failures`, and its unit goes on (couch_replicator's doc_write_failures).
//
// Documents are carried as the bytes the source sent (wire::raw_doc); only `_id` is rewritten.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "replicator/answers.hpp"
#include "replicator/byte_budget.hpp"
#include "replicator/transport/couch_client.hpp"
#include "replicator/wire_json.hpp"

namespace couchgate::replicator {

struct change_row {
  std::string unit;
  std::string source_db, source_id;
  std::string target_db, target_id;
  std::vector<std::string> revs;  // leaf revisions listed by the source's _changes (style=all_docs)
  // The revision's complete body with its `_revisions`, when the feed already carried it (see
  // inline_revision): the round then writes it without asking the source again.
  std::optional<wire::raw_doc> body;
};

struct transfer_options {
  std::size_t batch_docs = 1000;        // ids per _revs_diff, docs per _bulk_get / _bulk_docs
  std::size_t batch_bytes = 8u << 20;   // serialized bytes per _bulk_docs
  bool attachments = true;
  // Bounds the memory attachments take (see byte_budget.hpp). When set, revisions are fetched
  // without attachment bodies first (stubs give their sizes); those with attachments are then
  // fetched again with them and written, a group of at most batch_bytes at a time, each group
  // under a lease of attachment_copies times its size. nullptr: attachments come with the first
  // fetch, unbounded.
  byte_budget* budget = nullptr;
  // Restore: a leaf whose generation lies below the history another leaf of the same document
  // carries (that leaf's `_revisions` does not reach down to it) is taken for an ancestor that a
  // revs_limit stemmed away, and is not written (stemmed_skipped): it would make a conflict in the
  // target that its user never had. (A real conflict that branched off more than revs_limit
  // generations below the other leaf looks the same and is not restored either.) Documents with
  // several leaves then have every leaf fetched, to read their histories.
  bool skip_stemmed_ancestors = false;
  // Everything but the writes: what would be written is counted in docs_written and
  // written_by_unit, nothing is sent; a target database that does not exist lacks everything.
  bool dry_run = false;
  // Targets that hold only what this process wrote into them (restore created them): they get no
  // _revs_diff, every listed revision is taken as missing. Writing one they already have is
  // harmless (new_edits:false); asking would cost a request per target and batch (issue #18).
  const std::unordered_set<std::string>* fresh_targets = nullptr;
};

// Copies of a document's bytes couchgate holds at once while copying it (the answer, the parser's
// padded copy, the documents read from it, the request): what a lease on the budget counts.
inline constexpr std::size_t attachment_copies = 4;

// The bytes a revision with attachments takes on the wire, from its text with attachment stubs
// (attachments=false): the text plus each attachment's base64 size (of `encoded_length` when the
// server stores it compressed, else `length`). nullopt when the text or a stub cannot be read.
std::optional<std::size_t> attachment_wire_bytes(std::string_view stub_doc_text);

// Shared between rounds: whether the server has _bulk_get (learned on first use).
struct protocol_caps {
  std::atomic<int> bulk_get{-1};  // -1 unknown, 0 missing (use open_revs), 1 present
};

// One document the target will not take (or the source cannot give), whatever is retried.
struct doc_failure {
  std::string unit;
  std::string source_db, source_id;
  std::string target_db, target_id;
  std::string rev;
  std::string error, reason;
};

// A revision written whose history (`_revisions`) no longer reaches a leaf the target already had
// for the document, and that leaf is not a leaf of the source: the source stemmed its history
// (more edits than its revs_limit since the target saw it), and the target now has two leaves
// where the source has one (CouchDB's replicator does the same). Reported, not prevented: the
// revision itself must not be lost.
struct stemmed_history {
  std::string unit;
  std::string source_db, source_id;
  std::string target_db, target_id;
  std::string rev;         // the revision written
  std::uint64_t history_from = 0;  // the oldest generation its history reaches
  std::string stale_leaf;  // the target's leaf below it
};

struct transfer_result {
  std::size_t docs_written = 0;
  std::size_t bytes_written = 0;
  std::size_t revs_missing = 0;        // revisions the targets lacked
  std::size_t docs_inline = 0;         // of those, written from the feed's body without a fetch
  std::size_t docs_vanished = 0;       // revisions gone from the source meanwhile (newer ones follow)
  std::size_t requests = 0;
  std::map<std::string, couch_error> failed;  // unit -> first error
  std::map<std::string, std::size_t> written_by_unit;
  std::vector<doc_failure> doc_failures;  // per document, not retried; their units go on
  std::vector<stemmed_history> stemmed;   // written, but the target keeps a leaf their history lost
  std::size_t stemmed_skipped = 0;        // leaves not written (transfer_options::skip_stemmed_ancestors)
  std::map<std::string, std::size_t> stemmed_skipped_by_unit;
};

transfer_result transfer(couch_client& client, const std::vector<change_row>& rows,
                         const transfer_options& opts, protocol_caps& caps);

// A document included in a `_changes` row (include_docs=true) is enough to replicate when its
// whole history is the revision itself: a first-generation ("1-...") sole leaf, not deleted,
// without attachments (the feed has only their stubs), and the body is that very revision (the
// server includes the *current* winner, which may be newer than the row). Then `_revisions` is
// {start:1, ids:[hash]} and no `_bulk_get` is needed. Anything else: nullopt, and the round
// fetches the revision with its history as usual.
std::optional<wire::raw_doc> inline_revision(const std::vector<std::string>& leaf_revs, const wire::raw_doc& doc);
// The inline body of a feed row, when it has one (inline_revision of its included document).
std::optional<wire::raw_doc> inline_revision(const feed_change& c);

// Whether a per-row `_bulk_docs` error is transient (the whole unit is retried) rather than a
// refusal of that document.
bool row_error_transient(const std::string& error);

// A row whose revision could be written from an included body: its sole leaf is a live "1-..."
// (judged from the row alone, so it works whether or not the turn asked for bodies).
bool first_generation(const feed_change& c);

// Whether a source's next `_changes` should include documents: worth it while at least half of
// the rows its last turn saw were first-generation; otherwise the bodies would mostly be fetched
// again. A source whose turn saw no rows keeps its current setting.
bool include_docs_next(bool current, std::size_t first_generation_rows, std::size_t rows);

}  // namespace couchgate::replicator
