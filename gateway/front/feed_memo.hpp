#pragma once
// Owns: what couchgate remembers of the live longpoll feeds it answered (issue 14), so that a
// client's re-issued `_changes?feed=longpoll&since=S` can park at once without the upstream
// first check: the record of one answered feed (database, credential hash, query apart from
// `since`, the last_seq S it was answered with, when it expires), the pure decision whether a
// re-issued request may skip its first read (injected clock), and the bounded store (LRU over
// databases, a few feeds per database). Not thread-safe: feed_registry guards it with its lock
// and forgets a database's records whenever that database is announced as changed.
//
// Why a record means "nothing new since S": it is stored only when no change of its database
// was announced between the moment the read that produced S STARTED and the moment the record
// is stored, while the `_db_updates` follower was live; afterwards any announcement of the
// database (or a follower restart, or sweep mode) forgets it. A change committed after the read
// is announced after the read started, so it always forgets the record or wakes the parked
// re-issued feed (which subscribes before it looks here).
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <list>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "gateway/front/feed_park.hpp"

namespace couchgate::gateway::front {

// The identity of a feed apart from where it starts: the credential's hash, the method, the
// query without `since` (parameters in their order), and the POST body.
std::string feed_memo_key(std::string_view credential_key, std::string_view method, std::string_view query,
                          std::string_view body);

struct answered_feed {
  std::string key;       // feed_memo_key
  std::string last_seq;  // what the client was answered with (its next since)
  std::uint64_t generation = 0;  // the follower generation it was stored in
  feed_clock::time_point expires;
};

// Whether the answer with `rows` results (of at most `limit` asked, `pending` more reported by
// CouchDB when it said) left nothing behind in the database: only then may it be remembered.
bool answer_complete(std::size_t rows, std::optional<std::uint64_t> limit, std::optional<long long> pending);

// Whether the re-issued feed `r` may park at once: a record for its key exists (not forgotten
// by an announcement), was answered with exactly r.since, has not expired, was stored in the
// current follower generation, and the follower is live now. Longpoll only; never limit=0 or
// since=now.
bool may_skip_first_check(const answered_feed* record, const feed_request& r, bool follower_live,
                          std::uint64_t generation, feed_clock::time_point now);

class answered_feeds {
 public:
  // At most `max_records` in all, `per_db` per database (a user's few devices).
  explicit answered_feeds(std::size_t max_records = 32768, std::size_t per_db = 8)
      : max_records_(max_records), per_db_(per_db) {}

  void put(const std::string& db, answered_feed record);
  // The record of `key` in `db` (touching the database's LRU place), or null.
  const answered_feed* find(const std::string& db, const std::string& key);
  // `db` changed: its records are forgotten.
  void forget_db(const std::string& db);
  void clear();
  std::size_t size() const { return records_; }
  std::size_t bytes() const { return bytes_; }

 private:
  struct db_records {
    std::string db;
    std::vector<answered_feed> feeds;  // oldest first
  };
  static std::size_t bytes_of(const answered_feed& f);
  void drop_oldest();

  std::size_t max_records_;
  std::size_t per_db_;
  std::size_t records_ = 0;
  std::size_t bytes_ = 0;
  std::list<db_records> lru_;  // most recently used first
  std::unordered_map<std::string, std::list<db_records>::iterator> by_db_;
};

}  // namespace couchgate::gateway::front
