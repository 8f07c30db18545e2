#pragma once
// Owns: the pure decisions of parked live feeds (issue 14), with an injected clock and no I/O:
//  - feed_request: what a `_changes` request with feed=longpoll|continuous|eventsource asks for
//    (since, limit, heartbeat, timeout, the rest of the query passed on unchanged), and the
//    normal `_changes` query couchgate sends upstream for it;
//  - feed_state: one client's feed (checking -> parked -> fetching -> answering/done): what to do
//    after each upstream answer, which timer is due next (heartbeat, timeout, the credential's
//    re-validation at the `_session` cache lifetime);
//  - feed_registry: the per-database subscriptions shared by every I/O thread and the change
//    notifier: a change wakes each subscriber once (a burst is coalesced per subscriber into one
//    pending wake), the sweep's seq comparison, the per-user cap, and the counters.
// The I/O side (live_feeds.cpp) subscribes BEFORE its first upstream check and takes the pending
// wake before it parks: a change that lands between the check and the park wakes it.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

namespace couchgate::gateway::front {

class answered_feeds;

enum class feed_kind { longpoll, continuous, eventsource };

struct feed_request {
  feed_kind kind = feed_kind::longpoll;
  std::string since = "0";                         // decoded; "now" is resolved by the first check
  std::optional<std::uint64_t> limit;              // rows in all (continuous ends after them)
  std::optional<std::chrono::milliseconds> heartbeat;  // newline interval; set = never times out
  std::chrono::milliseconds timeout{60000};        // when no heartbeat: min(timeout, 60 s) as CouchDB
  std::string passthrough;  // the other query parameters, as sent ("a=1&b=2", no '?')
};

// CouchDB's default (and maximum without a heartbeat) wait: httpd/changes_timeout.
inline constexpr std::chrono::milliseconds changes_timeout_default{60000};

// The live feed a `_changes` query asks for; nullopt for a normal feed or one couchgate passes
// through (descending=true answers at once on CouchDB too).
std::optional<feed_kind> live_feed_kind(std::string_view query);
// The request, or the reason for a 400 (a value CouchDB would refuse too).
std::variant<feed_request, std::string> parse_feed_request(std::string_view query, std::string_view last_event_id = {});
// The upstream query ("?...") of one normal `_changes` read from `since`, at most `limit` rows.
std::string upstream_changes_query(const feed_request& r, std::string_view since, std::optional<std::uint64_t> limit);

using feed_clock = std::chrono::steady_clock;

enum class feed_phase { checking, parked, fetching, done };

// What to do with one upstream answer (rows = results in it).
struct fetch_decision {
  bool send_rows = false;   // longpoll: the answer; continuous/eventsource: the rows
  bool end = false;         // the response ends after what is sent (longpoll, limit reached)
  bool fetch_again = false; // a wake came in meanwhile: read again before parking
  bool park = false;
};

enum class feed_due { none, timeout, revalidate, heartbeat };

// A read of the feed found every upstream connection busy for as long as it could wait.
enum class feed_busy {
  retry,      // wait for the pool again (its end is still ahead)
  heartbeat,  // write a heartbeat, then wait again
  timeout,    // the feed's own timeout came: answer as CouchDB does when nothing changed
  refuse,     // since=now never resolved before the timeout: 503 (the client retries)
};

// How long the first upstream exchange of a live feed request (the credential's `_session`
// check, the first `_changes` read) may wait for a connection of the pool whose own wait is
// `pool_wait`: until the feed's timeout or its first heartbeat, never less than `pool_wait`.
// Thousands of clients connecting at once then queue (FIFO) instead of getting 503 after the
// pool's short wait; the pool's size still bounds the sockets.
std::chrono::milliseconds feed_pool_wait(const feed_request& r, std::chrono::milliseconds pool_wait);

class feed_state {
 public:
  feed_state(const feed_request& r, feed_clock::time_point now, feed_clock::time_point revalidate_at);

  // An upstream answer with `rows` results; `resume` is where the next read starts (the last
  // row's seq, or the answer's last_seq when it has no rows and since was "now"); `pending_wake`
  // whether a change was announced since the read started.
  fetch_decision on_fetched(std::size_t rows, const std::string& resume, bool pending_wake, feed_clock::time_point now);
  // A wake while parked: fetch.
  void on_wake();
  // What is due at `now` (the most urgent first); none when the timer woke early.
  feed_due due(feed_clock::time_point now) const;
  feed_clock::time_point next_deadline() const;
  void heartbeat_sent(feed_clock::time_point now);
  void revalidated(feed_clock::time_point next);
  // How long a feed waiting for its turn to read (feed_read_gate) waits before on_busy() says
  // what is due: its next heartbeat, or its end when it has none.
  feed_clock::time_point turn_deadline() const;
  void finish() { phase_ = feed_phase::done; }
  // How long the next read may wait for an upstream connection. A first check: up to the
  // feed's end (timeout) or its next heartbeat, never less than the pool's own `pool_wait`
  // (the pool serves the earliest deadline first, so many clients connecting at once queue
  // behind plain requests). A read after a wake (`delivering`: a write the client is waiting
  // for): the pool's own `pool_wait`, so it queues with plain requests, first come first
  // served, and not behind every feed closer to its end (with a full pool that left deliveries
  // waiting for up to a longpoll's timeout); when that wait runs out it queues again (on_busy).
  std::chrono::milliseconds pool_wait(feed_clock::time_point now, std::chrono::milliseconds pool_wait,
                                      bool delivering = false) const;
  // That wait ran out at `now` with every connection still busy.
  feed_busy on_busy(feed_clock::time_point now) const;

  feed_phase phase() const { return phase_; }
  const std::string& since() const { return since_; }
  // The limit of the next upstream read (what is left of the client's limit).
  std::optional<std::uint64_t> fetch_limit() const { return remaining_; }
  feed_kind kind() const { return kind_; }
  bool has_heartbeat() const { return heartbeat_.has_value(); }

 private:
  feed_kind kind_;
  feed_phase phase_ = feed_phase::checking;
  std::string since_;
  std::optional<std::uint64_t> remaining_;
  std::optional<std::chrono::milliseconds> heartbeat_;
  std::optional<feed_clock::time_point> ends_at_;  // timeout (no heartbeat)
  feed_clock::time_point next_heartbeat_;
  feed_clock::time_point revalidate_at_;
};

struct feed_registry_stats {
  std::size_t subscribed = 0;
  std::size_t parked = 0;
  std::uint64_t wakes = 0;      // subscribers woken (a wake pending where none was)
  std::uint64_t coalesced = 0;  // changes announced to a subscriber that already had one pending
  std::uint64_t fetches = 0;    // upstream reads made because of a wake
  std::size_t bytes = 0;        // estimated memory of the subscribed feeds
  std::uint64_t reads = 0;      // upstream _changes reads of live feeds (first checks included)
  std::uint64_t skipped = 0;    // first checks skipped: couchgate had answered that since itself
  std::uint64_t written = 0;    // writes through the front door announced (notify_written)
  std::size_t remembered = 0;   // answered feeds remembered (feed_memo)
  std::size_t remembered_bytes = 0;
};

// The state of a database's announcements when a read of it starts (feed_registry::mark_read).
struct feed_read_mark {
  std::uint64_t announced = 0;   // the database's announcement counter
  std::uint64_t generation = 0;  // the follower's generation (bumped by a restart or a mode change)
  bool live = false;             // the `_db_updates` follower was live
};

// The key a feed's per-user cap (feed_registry::subscribe) and feed_registry::recheck_user go
// by: the user's name, or for a credential CouchDB names no user by, the credential's key.
inline std::string feed_owner(const std::string& user, const std::string& credential_key) {
  return user.empty() ? "credential:" + credential_key : "user:" + user;
}

// How long after a user's `_users` document changed its parked feeds ask about their credential:
// CouchDB's own credential cache (chttpd_auth_cache) forgets the old document from a `_users`
// feed of its own, which couchgate's may read before it.
inline constexpr std::chrono::milliseconds user_change_settle{1000};

class feed_registry {
 public:
  using id = std::uint64_t;
  using wake_fn = std::function<void()>;  // called outside the lock, from any thread
  // `clock` stamps each wake (when its first change was announced), for the wake latency metric.
  explicit feed_registry(std::size_t max_per_user, std::function<feed_clock::time_point()> clock = feed_clock::now);
  ~feed_registry();

  // nullopt when `user` has max_per_user feeds open already.
  std::optional<id> subscribe(const std::string& db, const std::string& user, wake_fn wake, std::size_t bytes);
  void unsubscribe(id s);
  // The subscriber waits now; `known` is the seq number up to which it has seen everything.
  void park(id s, std::optional<std::uint64_t> known);
  // It is reading (or writing) now: wakes only leave a pending mark.
  void unpark(id s);
  // Takes the pending wake: when its first change was announced, nullopt when none was pending.
  // A taken wake counts as one fetch.
  std::optional<feed_clock::time_point> take_wake(id s);

  // `db` changed (the `_db_updates` follower).
  void notify(const std::string& db);
  // A write to `db` through the front door was answered (may_add_changes in route.hpp): its
  // feeds read at once rather than at the `_db_updates` event, which still comes (and wakes them
  // again: what they read then is usually nothing).
  void notify_written(const std::string& db);
  // Changes may have been missed (the follower reconnected): every subscriber reads again.
  void notify_all();
  // The sweep read `db`'s update_seq number: subscribers that know less are woken.
  void observe(const std::string& db, std::uint64_t update_seq);
  // The databases with subscribers (the sweep's work list).
  std::vector<std::string> watched() const;

  // The credential of `user`'s feeds (the key subscribe() was given) may no longer be valid:
  // its `_users` document changed (password, roles, deletion). Each of its feeds is marked and a
  // parked one woken, without a pending change: it asks CouchDB about its credential again
  // rather than waiting for the session cache lifetime.
  void recheck_user(const std::string& user);
  // Takes that mark: true when the feed's credential is to be asked about again.
  bool take_recheck(id s);

  // Whether `_db_updates` events reach notify() now (false: sweep mode or undecided). Any change
  // starts a new generation: what was remembered before is forgotten.
  void set_follower_live(bool live);
  // Taken BEFORE every upstream read of `db` by a subscriber of `db` (`counted` as a read), and
  // before skip_first_check (not counted): the mark the skipped feed's answer is remembered by.
  feed_read_mark mark_read(const std::string& db, bool counted = true);
  // The longpoll `key` of `db` was answered with `last_seq` by the read marked `mark`:
  // remembered (until `expires`) only when nothing of `db` was announced since the mark and
  // the follower stayed live in the same generation.
  void remember(const std::string& db, std::string key, std::string last_seq, const feed_read_mark& mark,
                feed_clock::time_point expires);
  // Whether the re-issued feed `r` (key `key`, already subscribed to `db`) may park at once:
  // then the record's expiry, which the feed remembers its own answer until (never later): a
  // chain of answers without a read ends one session cache lifetime after its last real read,
  // so an announcement CouchDB never made (`_db_updates` does not promise every event) hides a
  // write for at most that long.
  std::optional<feed_clock::time_point> skip_first_check(const std::string& db, const std::string& key,
                                                         const feed_request& r, feed_clock::time_point now);

  feed_registry_stats stats() const;
  std::size_t max_per_user() const { return max_per_user_; }

 private:
  struct subscriber {
    std::string db;
    std::string user;
    wake_fn wake;
    std::size_t bytes = 0;
    bool parked = false;
    bool pending = false;
    bool recheck = false;  // recheck_user() marked it
    feed_clock::time_point pending_since{};  // when the pending wake's first change was announced
    std::optional<std::uint64_t> known;
    std::uint64_t wake_seq = 0;  // highest update_seq a wake was observed at
  };
  // Marks `s` pending; returns true when its wake function must be called.
  bool mark(subscriber& s);
  void call(std::vector<wake_fn>& fns);

  std::size_t max_per_user_;
  std::function<feed_clock::time_point()> clock_;
  mutable std::mutex mu_;
  id next_ = 1;
  std::unordered_map<id, subscriber> subs_;
  std::unordered_map<std::string, std::vector<id>> by_db_;
  std::unordered_map<std::string, std::vector<id>> per_user_;  // at most max_per_user_ each
  std::size_t parked_ = 0;
  std::size_t bytes_ = 0;
  std::uint64_t wakes_ = 0;
  std::uint64_t coalesced_ = 0;
  std::uint64_t fetches_ = 0;
  std::uint64_t reads_ = 0;
  std::uint64_t skipped_ = 0;
  std::atomic<std::uint64_t> written_{0};
  // Announcements per database with subscribers (erased with its last subscriber).
  std::unordered_map<std::string, std::uint64_t> announced_;
  bool follower_live_ = false;
  std::uint64_t generation_ = 1;
  std::unique_ptr<answered_feeds> memo_;  // feed_memo.hpp
};

// When to tell the operator that live feed deliveries fall behind: a change delivered more than
// `threshold` after it was announced, at most once per `every` (the first such delivery in each
// period). Thread-safe (one atomic); the caller logs.
class delivery_lag_warning {
 public:
  delivery_lag_warning(feed_clock::duration threshold, feed_clock::duration every) : threshold_(threshold), every_(every) {}
  // A delivery that took `lag` ended at `now`: true when it is to be warned about.
  bool due(feed_clock::time_point now, feed_clock::duration lag);

 private:
  feed_clock::duration threshold_;
  feed_clock::duration every_;
  std::atomic<feed_clock::rep> next_{std::numeric_limits<feed_clock::rep>::min()};  // time_since_epoch ticks
};

// Turns to read from CouchDB among the live feeds: at most `limit` feeds at once are between
// asking the pool for a connection and having their answer. The others wait for their turn
// parked, holding nothing but their own state: 10 000 clients connecting at once, or a restart
// of the `_db_updates` follower waking every feed (feed_registry::notify_all), otherwise queue
// 10 000 reads at the pool, each with its request, parser and their coroutine frames (measured
// at 10 000 clients: 21 MB more heap in use, and 34 MB left free but held after the surge). Two
// lines, each first come first served: reads that deliver a change (`delivery`) go before first
// checks, as at the pool. Thread-safe; the wake functions are called outside the lock.
class feed_read_gate {
 public:
  using id = feed_registry::id;
  explicit feed_read_gate(std::size_t limit) : limit_(std::max<std::size_t>(limit, 1)) {}
  // True: `who` has a turn now, until leave(who). False: `who` waits in line (a second call
  // only replaces its wake function) and `wake` is called once a turn is handed to it; its next
  // enter() says true.
  bool enter(id who, bool delivery, std::function<void()> wake);
  // Ends `who`'s turn (handing it to the next in line), or takes it out of line. Nothing when
  // it has neither (so a feed may call it on every way out).
  void leave(id who);
  std::size_t reading() const;  // turns held (or handed over and not yet taken)
  std::size_t waiting() const;
  std::size_t limit() const { return limit_; }

 private:
  // The next one in line (under mu_): its id and wake function, or nullopt.
  std::optional<std::pair<id, std::function<void()>>> next_locked();

  std::size_t limit_;
  mutable std::mutex mu_;
  std::unordered_set<id> turns_;
  std::deque<id> deliveries_;  // may hold ids that left the line since (skipped when reached)
  std::deque<id> checks_;
  std::unordered_map<id, std::function<void()>> waiting_;
};

}  // namespace couchgate::gateway::front
