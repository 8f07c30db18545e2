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
#include <atomic>
#include <cstddef>
#include <map>
#include <string>
#include <vector>

#include "replicator/couch_client.hpp"

namespace couchgate::replicator {

struct change_row {
  std::string unit;
  std::string source_db, source_id;
  std::string target_db, target_id;
  std::vector<std::string> revs;  // leaf revisions listed by the source's _changes (style=all_docs)
};

struct transfer_options {
  std::size_t batch_docs = 1000;        // ids per _revs_diff, docs per _bulk_get / _bulk_docs
  std::size_t batch_bytes = 8u << 20;   // serialized bytes per _bulk_docs
  bool attachments = true;
};

// Shared between rounds: whether the server has _bulk_get (learned on first use).
struct protocol_caps {
  std::atomic<int> bulk_get{-1};  // -1 unknown, 0 missing (use open_revs), 1 present
};

struct transfer_result {
  std::size_t docs_written = 0;
  std::size_t bytes_written = 0;
  std::size_t revs_missing = 0;        // revisions the targets lacked
  std::size_t docs_vanished = 0;       // revisions gone from the source meanwhile (newer ones follow)
  std::size_t requests = 0;
  std::map<std::string, couch_error> failed;  // unit -> first error
  std::map<std::string, std::size_t> written_by_unit;
};

transfer_result transfer(couch_client& client, const std::vector<change_row>& rows,
                         const transfer_options& opts, protocol_caps& caps);

// Parses a `_changes` answer (normal feed, style=all_docs) into (id, leaf revs, seq) rows.
struct feed_change {
  std::string id;
  std::vector<std::string> revs;
  bool deleted = false;
};
struct feed_page {
  std::vector<feed_change> changes;
  json last_seq;  // where to resume: the last row's seq, or the answer's last_seq when it has no rows
};
result<feed_page> parse_changes(const json& answer);

}  // namespace couchgate::replicator
