// Owns: the records of answered longpoll feeds and the skip decision (see feed_memo.hpp).
#include "gateway/front/feed_memo.hpp"

#include <algorithm>
#include <functional>

namespace couchgate::gateway::front {

std::string feed_memo_key(std::string_view credential_key, std::string_view method, std::string_view query,
                          std::string_view body) {
  std::string key;
  key.reserve(credential_key.size() + method.size() + query.size() + 24);
  key.append(credential_key).append(1, '\n').append(method).append(1, '\n');
  if (!query.empty() && query.front() == '?') query.remove_prefix(1);
  bool first = true;
  while (!query.empty()) {
    const std::size_t amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    if (pair.empty() || pair == "since" || pair.starts_with("since=")) continue;
    if (!first) key += '&';
    key.append(pair);
    first = false;
  }
  // The body itself is not kept: its hash and size (a POST feed sends the same body each time).
  key.append(1, '\n').append(std::to_string(std::hash<std::string_view>{}(body))).append(1, ':');
  key.append(std::to_string(body.size()));
  return key;
}

bool answer_complete(std::size_t rows, std::optional<std::uint64_t> limit, std::optional<long long> pending) {
  if (pending && *pending > 0) return false;
  if (limit && rows >= *limit) return false;  // the limit may have cut it short
  return true;
}

bool may_skip_first_check(const answered_feed* record, const feed_request& r, bool follower_live,
                          std::uint64_t generation, feed_clock::time_point now) {
  if (record == nullptr || !follower_live) return false;
  if (r.kind != feed_kind::longpoll || r.since == "now" || (r.limit && *r.limit == 0)) return false;
  if (record->generation != generation || now >= record->expires) return false;
  return record->last_seq == r.since;
}

std::size_t answered_feeds::bytes_of(const answered_feed& f) {
  return sizeof(answered_feed) + f.key.capacity() + f.last_seq.capacity();
}

void answered_feeds::put(const std::string& db, answered_feed record) {
  if (max_records_ == 0 || per_db_ == 0) return;
  auto it = by_db_.find(db);
  if (it == by_db_.end()) {
    lru_.push_front(db_records{db, {}});
    it = by_db_.emplace(db, lru_.begin()).first;
    bytes_ += sizeof(db_records) + db.size() * 2;
  } else {
    lru_.splice(lru_.begin(), lru_, it->second);
  }
  auto& feeds = it->second->feeds;
  if (auto same = std::find_if(feeds.begin(), feeds.end(), [&](const answered_feed& f) { return f.key == record.key; });
      same != feeds.end()) {
    bytes_ -= bytes_of(*same);
    --records_;
    feeds.erase(same);
  }
  if (feeds.size() >= per_db_) {
    bytes_ -= bytes_of(feeds.front());
    --records_;
    feeds.erase(feeds.begin());
  }
  bytes_ += bytes_of(record);
  ++records_;
  feeds.push_back(std::move(record));
  while (records_ > max_records_) drop_oldest();
}

void answered_feeds::drop_oldest() {
  if (lru_.empty()) return;
  auto& last = lru_.back();
  if (last.feeds.empty() || lru_.size() > 1) {
    // The least recently used database goes whole (its records are the oldest).
    for (const auto& f : last.feeds) bytes_ -= bytes_of(f);
    records_ -= last.feeds.size();
    bytes_ -= sizeof(db_records) + last.db.size() * 2;
    by_db_.erase(last.db);
    lru_.pop_back();
    return;
  }
  bytes_ -= bytes_of(last.feeds.front());
  --records_;
  last.feeds.erase(last.feeds.begin());
}

const answered_feed* answered_feeds::find(const std::string& db, const std::string& key) {
  const auto it = by_db_.find(db);
  if (it == by_db_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, it->second);
  for (const auto& f : it->second->feeds) {
    if (f.key == key) return &f;
  }
  return nullptr;
}

void answered_feeds::forget_db(const std::string& db) {
  const auto it = by_db_.find(db);
  if (it == by_db_.end()) return;
  for (const auto& f : it->second->feeds) bytes_ -= bytes_of(f);
  records_ -= it->second->feeds.size();
  bytes_ -= sizeof(db_records) + it->second->db.size() * 2;
  lru_.erase(it->second);
  by_db_.erase(it);
}

void answered_feeds::clear() {
  lru_.clear();
  by_db_.clear();
  records_ = 0;
  bytes_ = 0;
}

}  // namespace couchgate::gateway::front
