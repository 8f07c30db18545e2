#pragma once
// Owns: `couchgate restore`: rebuilding user databases from the central database with their
// original ids, revision histories, conflicts, deletions and attachments (new_edits:false), so
// that PouchDB clients keep syncing. One pass over the central `_changes` feed serves every
// selected user: rows are split by owner and written through the same transfer() round and
// connection pool as fan-in.
//
// Safety: a target database that already holds documents is refused unless --merge (which only
// adds missing revisions, never deletes). A record "restore:<db>" in couchgate's state database,
// written before any revision and removed at the end, makes an interrupted restore resumable: a
// rerun continues into it without --merge and writes only what is missing (_revs_diff), so
// nothing is duplicated. Requests per database: create, _security and its revisions'
// `_bulk_docs` (no _revs_diff where this run created it); records and checkpoint resets are one
// request per state_store::write_batch databases.
//
// Never a conflict the user did not have: of a document with several leaves in central, a leaf
// below the revision history another leaf carries is an ancestor that the source's revs_limit
// stemmed away (fan-in wrote the newer revision beside it and listed it in GET /failures), and is
// not written (transfer_options::skip_stemmed_ancestors; counted per user as `stemmed`).
// Central ids that name no user (`nocolon`, `:doc`, `%FF:doc`: not written by fan-in) cannot be
// restored: counted, the first named once in the progress output and in the summary.
// A dry run goes through the same round up to the writes, so it counts what a real run writes.
#include <cstdint>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "gateway/config.hpp"

namespace couchgate::gateway {

struct restore_options {
  std::vector<std::string> users;
  bool all = false;
  bool dry_run = false;
  bool merge = false;
  bool progress_bar = false;   // draw on a terminal; otherwise periodic log lines
  std::size_t max_docs = 0;    // stop after this many central changes (tests of interruption); 0 = no limit
};

struct restore_user_result {
  std::string user;
  std::string db;
  std::size_t docs = 0;        // revisions written (or that would be, in dry-run)
  bool created = false;
  std::string error;           // empty = success
  std::size_t refused = 0;     // documents the target refused (its validate function, size): not written
  std::size_t stemmed = 0;     // leaves not written: ancestors stemmed away of another leaf (see above)
};

struct restore_summary {
  std::vector<restore_user_result> users;
  std::size_t central_changes = 0;
  double seconds = 0;
  std::uint64_t requests = 0;      // HTTP requests sent (the bench reports them per database)
  bool interrupted = false;
  std::size_t unmappable = 0;      // central documents whose id names no user: not restored
  std::string first_unmappable;    // the first of them
  bool ok() const;
};

restore_summary run_restore(const config& cfg, const restore_options& opts, std::ostream& progress);

}  // namespace couchgate::gateway
