// Owns: the pure decisions of parked live feeds (see feed_park.hpp).
#include "gateway/front/feed_park.hpp"

#include "gateway/front/feed_memo.hpp"

#include <algorithm>
#include <charconv>

#include "replicator/transport/header_text.hpp"
#include "replicator/transport/http_pool.hpp"

namespace couchgate::gateway::front {
namespace {

// A query component decoded ('+' is a space, then %XX); nullopt when its encoding is invalid.
std::optional<std::string> form_decode(std::string_view raw) {
  std::string text(raw);
  std::replace(text.begin(), text.end(), '+', ' ');
  return replicator::percent_decode(text);
}

// A query parameter's key as CouchDB reads it (chttpd_db:parse_changes_query): decoded, then
// lower-cased ("Feed", "%66eed" and "feed" are one key). An undecodable key stays as it came.
std::string key_as_couchdb_reads_it(std::string_view raw) {
  return replicator::lower_ascii(form_decode(raw).value_or(std::string(raw)));
}

// A live `feed` value (CouchDB's "live" is continuous); nullopt for any other.
std::optional<feed_kind> live_kind_of(std::string_view value) {
  if (value == "longpoll") return feed_kind::longpoll;
  if (value == "continuous" || value == "live") return feed_kind::continuous;
  if (value == "eventsource") return feed_kind::eventsource;
  return std::nullopt;
}

// Calls fn(key, raw pair, decoded value) for each parameter of a query ("?a=1&b" or "a=1&b"),
// the key as CouchDB reads it.
template <class Fn>
bool each_param(std::string_view query, Fn&& fn) {
  if (!query.empty() && query.front() == '?') query.remove_prefix(1);
  while (!query.empty()) {
    const std::size_t amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    if (pair.empty()) continue;
    const std::size_t eq = pair.find('=');
    const std::string key = key_as_couchdb_reads_it(pair.substr(0, eq));
    const auto decoded = form_decode(eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1));
    if (!fn(std::string_view(key), pair, decoded)) return false;
  }
  return true;
}

constexpr std::uint64_t max_heartbeat_ms = 4294967295;

std::optional<std::uint64_t> non_negative(const std::optional<std::string>& text) {
  if (!text || text->empty()) return std::nullopt;
  std::uint64_t n = 0;
  const auto [p, ec] = std::from_chars(text->data(), text->data() + text->size(), n);
  if (ec != std::errc() || p != text->data() + text->size()) return std::nullopt;
  return n;
}

}  // namespace

std::optional<feed_kind> live_feed_kind(std::string_view query) {
  std::optional<feed_kind> kind;
  bool descending = false;
  each_param(query, [&](std::string_view key, std::string_view, const std::optional<std::string>& v) {
    if (key == "feed" && v) kind = live_kind_of(*v);
    if (key == "descending" && v && *v == "true") descending = true;
    return true;
  });
  if (descending) return std::nullopt;
  return kind;
}

std::variant<feed_request, std::string> parse_feed_request(std::string_view query, std::string_view last_event_id) {
  feed_request r;
  std::optional<std::chrono::milliseconds> timeout;
  bool since_given = false;
  std::string error;
  const bool ok = each_param(query, [&](std::string_view key, std::string_view raw, const std::optional<std::string>& v) {
    if (!v) {
      error = "invalid percent-encoding in the query parameter '" + std::string(key) + "'";
      return false;
    }
    if (key == "feed") {
      const auto kind = live_kind_of(*v);
      if (!kind) {
        error = "feed must be longpoll, continuous or eventsource here";
        return false;
      }
      r.kind = *kind;
    } else if (key == "since" || key == "last-event-id") {  // CouchDB reads both as since, the last one winning
      r.since = *v;
      since_given = true;
    } else if (key == "limit") {
      r.limit = non_negative(v);
      if (!r.limit) {
        error = "limit must be a non-negative integer";
        return false;
      }
    } else if (key == "heartbeat") {
      if (*v == "true") {
        r.heartbeat = changes_timeout_default;
      } else if (*v == "false") {
        r.heartbeat.reset();
      } else {
        const auto ms = non_negative(v);
        // Bounded: a larger value overflowed the steady clock's nanoseconds (UB) or, above
        // 2^63, turned negative (a heartbeat due at once, every time). 4294967295 ms (49 days) is
        // also the longest wait an Erlang receive takes, CouchDB's limit.
        if (!ms || *ms == 0 || *ms > max_heartbeat_ms) {
          error = "heartbeat must be a positive integer (milliseconds, at most 4294967295) or true";
          return false;
        }
        r.heartbeat = std::chrono::milliseconds(*ms);
      }
    } else if (key == "timeout") {
      const auto ms = non_negative(v);
      if (!ms) {
        error = "timeout must be a non-negative integer (milliseconds)";
        return false;
      }
      // Capped before the conversion: above 2^63 it would turn negative.
      timeout = std::chrono::milliseconds(std::min<std::uint64_t>(*ms, changes_timeout_default.count()));
    } else {
      if (!r.passthrough.empty()) r.passthrough += '&';
      r.passthrough += raw;
    }
    return true;
  });
  if (!ok) return error;
  if (!since_given && !last_event_id.empty()) r.since = std::string(last_event_id);
  r.timeout = timeout ? std::min(*timeout, changes_timeout_default) : changes_timeout_default;
  return r;
}

std::string upstream_changes_query(const feed_request& r, std::string_view since, std::optional<std::uint64_t> limit) {
  std::string q = "?";
  if (!r.passthrough.empty()) q += r.passthrough + "&";
  q += "since=" + replicator::encode_query_value(since);
  if (limit) q += "&limit=" + std::to_string(*limit);
  return q;
}

feed_state::feed_state(const feed_request& r, feed_clock::time_point now, feed_clock::time_point revalidate_at)
    : kind_(r.kind), since_(r.since), remaining_(r.limit), heartbeat_(r.heartbeat), revalidate_at_(revalidate_at) {
  if (!heartbeat_) ends_at_ = now + r.timeout;
  next_heartbeat_ = now + heartbeat_.value_or(std::chrono::milliseconds(0));
}

fetch_decision feed_state::on_fetched(std::size_t rows, const std::string& resume, bool pending_wake,
                                      feed_clock::time_point now) {
  (void)now;
  fetch_decision d;
  if (!resume.empty() && (rows > 0 || since_ == "now")) since_ = resume;
  if (rows > 0) {
    d.send_rows = true;
    if (kind_ == feed_kind::longpoll) {
      d.end = true;
    } else if (remaining_) {
      *remaining_ -= std::min<std::uint64_t>(*remaining_, rows);
      d.end = *remaining_ == 0;
    }
  } else if (remaining_ && *remaining_ == 0) {
    d.end = true;  // limit=0: nothing more will ever be sent
  }
  if (d.end) {
    phase_ = feed_phase::done;
    return d;
  }
  if (pending_wake) {
    d.fetch_again = true;
    phase_ = feed_phase::fetching;
  } else {
    d.park = true;
    phase_ = feed_phase::parked;
  }
  return d;
}

void feed_state::on_wake() {
  if (phase_ == feed_phase::parked) phase_ = feed_phase::fetching;
}

feed_due feed_state::due(feed_clock::time_point now) const {
  if (ends_at_ && now >= *ends_at_) return feed_due::timeout;
  if (now >= revalidate_at_) return feed_due::revalidate;
  if (heartbeat_ && now >= next_heartbeat_) return feed_due::heartbeat;
  return feed_due::none;
}

feed_clock::time_point feed_state::next_deadline() const {
  auto t = revalidate_at_;
  if (ends_at_) t = std::min(t, *ends_at_);
  if (heartbeat_) t = std::min(t, next_heartbeat_);
  return t;
}

void feed_state::heartbeat_sent(feed_clock::time_point now) {
  if (heartbeat_) next_heartbeat_ = now + *heartbeat_;
}

void feed_state::revalidated(feed_clock::time_point next) { revalidate_at_ = next; }

feed_clock::time_point feed_state::turn_deadline() const {
  if (heartbeat_) return next_heartbeat_;
  return ends_at_.value_or(revalidate_at_);
}

std::chrono::milliseconds feed_pool_wait(const feed_request& r, std::chrono::milliseconds pool_wait) {
  return std::max(pool_wait, r.heartbeat.value_or(r.timeout));
}

std::chrono::milliseconds feed_state::pool_wait(feed_clock::time_point now, std::chrono::milliseconds pool_wait,
                                                bool delivering) const {
  if (delivering) return pool_wait;
  const auto until = ends_at_ ? *ends_at_ : next_heartbeat_;
  return std::max(pool_wait, std::chrono::ceil<std::chrono::milliseconds>(until - now));
}

feed_busy feed_state::on_busy(feed_clock::time_point now) const {
  if (heartbeat_) return feed_busy::heartbeat;
  if (ends_at_ && now >= *ends_at_) return since_ == "now" ? feed_busy::refuse : feed_busy::timeout;
  return feed_busy::retry;
}

feed_registry::feed_registry(std::size_t max_per_user, std::function<feed_clock::time_point()> clock)
    : max_per_user_(max_per_user), clock_(std::move(clock)), memo_(std::make_unique<answered_feeds>()) {}

feed_registry::~feed_registry() = default;

std::optional<feed_registry::id> feed_registry::subscribe(const std::string& db, const std::string& user,
                                                          wake_fn wake, std::size_t bytes) {
  std::lock_guard lk(mu_);
  auto& mine = per_user_[user];
  if (mine.size() >= max_per_user_) {
    if (mine.empty()) per_user_.erase(user);
    return std::nullopt;
  }
  const id s = next_++;
  mine.push_back(s);
  subscriber sub;
  sub.db = db;
  sub.user = user;
  sub.wake = std::move(wake);
  sub.bytes = bytes + db.capacity() + user.capacity();
  bytes_ += sub.bytes;
  subs_.emplace(s, std::move(sub));
  by_db_[db].push_back(s);
  announced_.try_emplace(db, 0);
  return s;
}

void feed_registry::unsubscribe(id s) {
  std::lock_guard lk(mu_);
  const auto it = subs_.find(s);
  if (it == subs_.end()) return;
  auto& sub = it->second;
  if (sub.parked) --parked_;
  bytes_ -= sub.bytes;
  if (auto u = per_user_.find(sub.user); u != per_user_.end()) {
    std::erase(u->second, s);
    if (u->second.empty()) per_user_.erase(u);
  }
  if (auto d = by_db_.find(sub.db); d != by_db_.end()) {
    std::erase(d->second, s);
    if (d->second.empty()) {
      announced_.erase(sub.db);
      by_db_.erase(d);
    }
  }
  subs_.erase(it);
}

void feed_registry::park(id s, std::optional<std::uint64_t> known) {
  std::lock_guard lk(mu_);
  const auto it = subs_.find(s);
  if (it == subs_.end()) return;
  auto& sub = it->second;
  if (!sub.parked) ++parked_;
  sub.parked = true;
  // Everything up to a wake's seq was committed before the read that followed it started.
  if (known || sub.wake_seq > 0) sub.known = std::max(known.value_or(0), sub.wake_seq);
}

void feed_registry::unpark(id s) {
  std::lock_guard lk(mu_);
  const auto it = subs_.find(s);
  if (it == subs_.end() || !it->second.parked) return;
  it->second.parked = false;
  --parked_;
}

std::optional<feed_clock::time_point> feed_registry::take_wake(id s) {
  std::lock_guard lk(mu_);
  const auto it = subs_.find(s);
  if (it == subs_.end() || !it->second.pending) return std::nullopt;
  it->second.pending = false;
  ++fetches_;
  return it->second.pending_since;
}

bool feed_registry::mark(subscriber& s) {
  if (s.pending) {
    ++coalesced_;
    return false;
  }
  s.pending = true;
  s.pending_since = clock_();
  ++wakes_;
  return s.parked;  // a reading subscriber sees the mark before it parks
}

void feed_registry::call(std::vector<wake_fn>& fns) {
  for (auto& f : fns) {
    if (f) f();
  }
}

void feed_registry::notify(const std::string& db) {
  std::vector<wake_fn> fns;
  {
    std::lock_guard lk(mu_);
    memo_->forget_db(db);
    if (auto a = announced_.find(db); a != announced_.end()) ++a->second;
    const auto d = by_db_.find(db);
    if (d == by_db_.end()) return;
    for (const id s : d->second) {
      auto& sub = subs_.at(s);
      if (mark(sub)) fns.push_back(sub.wake);
    }
  }
  call(fns);
}

void feed_registry::notify_written(const std::string& db) {
  written_.fetch_add(1, std::memory_order_relaxed);
  notify(db);
}

void feed_registry::notify_all() {
  std::vector<wake_fn> fns;
  {
    std::lock_guard lk(mu_);
    ++generation_;
    memo_->clear();
    for (auto& [s, sub] : subs_) {
      if (mark(sub)) fns.push_back(sub.wake);
    }
  }
  call(fns);
}

void feed_registry::observe(const std::string& db, std::uint64_t update_seq) {
  std::vector<wake_fn> fns;
  {
    std::lock_guard lk(mu_);
    const auto d = by_db_.find(db);
    if (d == by_db_.end()) return;
    for (const id s : d->second) {
      auto& sub = subs_.at(s);
      if (!sub.parked || (sub.known && *sub.known >= update_seq)) continue;
      sub.wake_seq = std::max(sub.wake_seq, update_seq);
      if (mark(sub)) fns.push_back(sub.wake);
    }
  }
  call(fns);
}

void feed_registry::recheck_user(const std::string& user) {
  std::vector<wake_fn> fns;
  {
    std::lock_guard lk(mu_);
    const auto u = per_user_.find(user);
    if (u == per_user_.end()) return;
    for (const id s : u->second) {
      auto& sub = subs_.at(s);
      if (sub.recheck) continue;
      sub.recheck = true;
      if (sub.parked) fns.push_back(sub.wake);  // a reading one sees the mark before it parks
    }
  }
  call(fns);
}

bool feed_registry::take_recheck(id s) {
  std::lock_guard lk(mu_);
  const auto it = subs_.find(s);
  if (it == subs_.end() || !it->second.recheck) return false;
  it->second.recheck = false;
  return true;
}

std::vector<std::string> feed_registry::watched() const {
  std::lock_guard lk(mu_);
  std::vector<std::string> out;
  out.reserve(by_db_.size());
  for (const auto& [db, ids] : by_db_) out.push_back(db);
  return out;
}

void feed_registry::set_follower_live(bool live) {
  std::lock_guard lk(mu_);
  if (live == follower_live_) return;
  follower_live_ = live;
  ++generation_;
  memo_->clear();
}

feed_read_mark feed_registry::mark_read(const std::string& db, bool counted) {
  std::lock_guard lk(mu_);
  if (counted) ++reads_;
  const auto a = announced_.find(db);
  // A database without subscribers has no counter: nothing read of it may be remembered.
  return feed_read_mark{a == announced_.end() ? 0 : a->second, generation_,
                        follower_live_ && a != announced_.end()};
}

void feed_registry::remember(const std::string& db, std::string key, std::string last_seq, const feed_read_mark& mark,
                             feed_clock::time_point expires) {
  std::lock_guard lk(mu_);
  const auto a = announced_.find(db);
  if (!mark.live || !follower_live_ || mark.generation != generation_ || a == announced_.end() ||
      a->second != mark.announced || last_seq.empty()) {
    return;
  }
  memo_->put(db, answered_feed{std::move(key), std::move(last_seq), generation_, expires});
}

std::optional<feed_clock::time_point> feed_registry::skip_first_check(const std::string& db, const std::string& key,
                                                                      const feed_request& r, feed_clock::time_point now) {
  std::lock_guard lk(mu_);
  const answered_feed* record = memo_->find(db, key);
  if (!may_skip_first_check(record, r, follower_live_, generation_, now)) return std::nullopt;
  ++skipped_;
  return record->expires;
}

feed_registry_stats feed_registry::stats() const {
  std::lock_guard lk(mu_);
  feed_registry_stats st{subs_.size(), parked_, wakes_, coalesced_, fetches_, bytes_};
  st.reads = reads_;
  st.skipped = skipped_;
  st.written = written_.load(std::memory_order_relaxed);
  st.remembered = memo_->size();
  st.remembered_bytes = memo_->bytes();
  return st;
}

bool delivery_lag_warning::due(feed_clock::time_point now, feed_clock::duration lag) {
  if (lag <= threshold_) return false;
  const auto at = now.time_since_epoch().count();
  auto next = next_.load(std::memory_order_relaxed);
  while (at >= next) {
    if (next_.compare_exchange_weak(next, (now + every_).time_since_epoch().count(), std::memory_order_relaxed)) return true;
  }
  return false;
}

bool feed_read_gate::enter(id who, bool delivery, std::function<void()> wake) {
  std::lock_guard lk(mu_);
  if (turns_.contains(who)) return true;
  if (auto w = waiting_.find(who); w != waiting_.end()) {
    w->second = std::move(wake);
    return false;
  }
  if (turns_.size() < limit_ && waiting_.empty()) {
    turns_.insert(who);
    return true;
  }
  auto& line = delivery ? deliveries_ : checks_;
  // Ids that left the line stay in it until reached: compacted when they are most of it.
  if (line.size() > 64 && line.size() > 2 * waiting_.size()) {
    std::erase_if(line, [&](id x) { return !waiting_.contains(x); });
  }
  line.push_back(who);
  waiting_.emplace(who, std::move(wake));
  return false;
}

std::optional<std::pair<feed_read_gate::id, std::function<void()>>> feed_read_gate::next_locked() {
  for (auto* line : {&deliveries_, &checks_}) {
    while (!line->empty()) {
      const id next = line->front();
      line->pop_front();
      if (auto w = waiting_.find(next); w != waiting_.end()) {
        auto wake = std::move(w->second);
        waiting_.erase(w);
        return std::pair<id, std::function<void()>>{next, std::move(wake)};
      }
    }
  }
  return std::nullopt;
}

void feed_read_gate::leave(id who) {
  std::function<void()> wake;
  {
    std::lock_guard lk(mu_);
    if (waiting_.erase(who) != 0) return;
    if (turns_.erase(who) == 0) return;
    auto next = next_locked();
    if (!next) return;
    turns_.insert(next->first);
    wake = std::move(next->second);
  }
  if (wake) wake();
}

std::size_t feed_read_gate::reading() const {
  std::lock_guard lk(mu_);
  return turns_.size();
}

std::size_t feed_read_gate::waiting() const {
  std::lock_guard lk(mu_);
  return waiting_.size();
}

}  // namespace couchgate::gateway::front
