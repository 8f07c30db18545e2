#pragma once
// Test-side proof that nothing was lost or duplicated: the state of a database as the tests
// compare it (every document id with its leaf revisions — conflicts and deletions included —
// whether its winner is deleted, and the digests of the winner's attachments), read with the
// test's own client; the union of user databases as the central database must hold it (ids
// namespaced); and whether a user's database exists with the policy's _security.
#include <chrono>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "tests/support/harness.hpp"

namespace couchgate::test {

struct doc_state {
  std::set<std::string> leaves;                    // every leaf revision, deleted ones included
  bool deleted = false;                            // the winner is a tombstone
  std::map<std::string, std::string> attachments;  // the winner's: name -> digest
  bool operator==(const doc_state&) const = default;
};
using db_state = std::map<std::string, doc_state>;  // id -> state

// One database's documents (design documents included, _local ones never: they do not
// replicate). `ok` is false when it cannot be read.
db_state read_db_state(const std::string& db, bool* ok = nullptr);

// What the central database must hold for these user databases (db -> owner), ids namespaced
// ("owner:id"): the union of their states.
db_state expected_central_state(const std::map<std::string, std::string>& db_owner);

// The central database's state without couchgate's own design document.
db_state central_state(const std::string& central);

// "" when equal; else the first `max_lines` differences, one a line (missing, unexpected,
// leaves / deleted / attachments differ), and the counts.
std::string state_diff(const db_state& got, const db_state& want, std::size_t max_lines = 10);

// Polls (up to `deadline`) until the central database equals expected_central_state(db_owner).
// "" once it does, else the last differences. `want`, when given, receives the expected state.
std::string wait_central_converged(const std::string& central, const std::map<std::string, std::string>& db_owner,
                                   std::chrono::milliseconds deadline, db_state* want = nullptr);

// Revisions one after another, each followed by a space (for messages).
std::string join_revs(const std::set<std::string>& revs);

// The user's database (user_db_name(prefix, user)) exists and its _security is exactly the
// default policy's for that user; "" when so, else what is wrong.
std::string user_db_problem(const std::string& prefix, const std::string& user);

}  // namespace couchgate::test
