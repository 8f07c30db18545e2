#pragma once
// Owns: noticing which source databases changed, without a connection per database.
// - db_updates mode: one longpoll `_db_updates` feed for the whole server, resumed from the seq
//   stored in the state database. CouchDB 3.x needs the `_global_changes` database for it; when
//   missing it is created (if allowed).
// - sweep mode (servers without `_db_updates`): every known source's `update_seq` is read through
//   the shared pool at a bounded rate and compared with its checkpoint. Also while the node
//   couchgate talks to has `[global_changes] update_db = false`: its feed answers but never
//   reports a change (server_limits.hpp), or whose feed did not report couchgate's own write to
//   the state database (a canary, detector_options::canary_wait): CouchDB 3.5 keeps a node
//   silent after update_db was false at runtime, until it restarts, whatever the config says.
//   Tried again every node_check_interval; back to the feed once it reports a canary.
// Either way the result is fanin::mark_dirty; an idle database costs nothing but a map entry.
// While the feed is followed, a verify pass (detector_options::verify_interval, its own thread)
// reads every source once more (fanin::verify): a lost event delays a change, it does not lose it.
// A database created again under a name that has a checkpoint is a new database: its checkpoint
// is reset (fanin::source_recreated) and on_created is called (the daemon maps it to its owner,
// adds it as a source and re-applies its _security). db_updates mode sees `created`; the sweep
// // sees a source that answered 404 answer again, a changed instance_start_time (CouchDB 3 sets it
// at creation, in seconds; pouchdb-server gives its own start time), or an update_seq below the
// checkpoint. A database deleted and created again between two sweeps, within one second, with
// at least as many changes as before, is not seen by the sweep (db_updates sees it).
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <unordered_map>
#include <string>
#include <thread>

#include "replicator/transport/couch_client.hpp"
#include "replicator/fanin.hpp"
#include "replicator/metrics.hpp"
#include "replicator/state_store.hpp"
#include "replicator/stop_flag.hpp"

namespace couchgate::replicator {

enum class detection { automatic, db_updates, sweep };
const char* to_string(detection d);

// The detector's time. Tests inject all three (a fake clock whose sleeps move it); left empty:
// the steady clock, sleeps that stop() cuts short, and random jitter.
struct detector_clock {
  std::function<std::chrono::steady_clock::time_point()> now;
  std::function<bool(std::chrono::milliseconds)> sleep;  // false: stop
  uniform_source jitter;
};

struct detector_options {
  detection mode = detection::automatic;
  bool create_global_changes = true;
  double sweep_rate = 200;                      // databases per second
  std::chrono::milliseconds sweep_interval{5000};
  // db_updates mode: how often the server's nodes are asked whether one restarted while the feed
  // stayed up (lost_since_last_look); 0: never.
  std::chrono::milliseconds node_check_interval{60000};
  // How long couchgate's own write to the state database may take to appear in `_db_updates`
  // before the feed is judged silent (a node whose global_changes app records nothing, e.g.
  // `[global_changes] update_db` turned off at runtime, which CouchDB 3.5 keeps until a restart
  // whatever the config says later). Written once per look while the feed is followed (every
  // node_check_interval, or 60 s when that is 0), and waited for when the sweep tries the feed
  // again. 0: never written (the config is trusted).
  std::chrono::milliseconds canary_wait{20000};
  // db_updates mode: every this often, each source is read once more, paced over half of it
  // (verify_gap), whether or not an event announced a change (CouchDB does not guarantee that
  // every change reaches `_db_updates`): a lost event delays a change by at most about this,
  // instead of until the source's next announced write. 0: never. On the real clock (a thread
  // of its own beside the feed's).
  std::chrono::milliseconds verify_interval{std::chrono::minutes(30)};
  backoff_policy backoff{};
  detector_clock clock{};
};

// A `_db_updates` event, parsed.
struct db_event {
  std::string db;
  std::string type;  // created | updated | deleted | ...
};
struct db_updates_page {
  std::vector<db_event> events;
  json last_seq;
};
result<db_updates_page> parse_db_updates(const json& answer);

// Why a node of the server may have lost `_db_updates` events: CouchDB's global_changes app
// keeps the events it has not yet written to `_global_changes` in each node's memory (its docs:
// an event is not guaranteed to reach the feed), so a node that restarted or is down lost them;
// `unknown`: its `_system` answer is missing or not as expected.
enum class node_doubt { restarted, down, unknown };
using node_doubts = std::map<std::string, node_doubt>;

// The cluster's nodes as GET /_membership names them (`cluster_nodes`); nullopt when the answer
// is not as expected (not an object, no list, a name not a string, an empty list).
std::optional<std::set<std::string>> cluster_nodes(const json& membership);
// The nodes that may have lost events within the last `since` (plus two seconds for the clocks
// of two machines): restarted since then (`uptime` from GET /_node/<node>/_system, in `systems`),
// down (in cluster_nodes, not in all_nodes), or unknown. A membership answer not as expected is
// one unknown node named "". Empty: every node has been up throughout.
node_doubts doubtful_nodes(const json& membership, const std::map<std::string, json>& systems,
                           std::chrono::steady_clock::duration since);
// The periodic look at the nodes while the feed stays up (a node other than the one serving the
// feed may restart without breaking it), and the judgement after a break (a dropped connection
// alone loses nothing: the feed resumes from its stored position): lost when a node restarted since the previous look, or
// is down or unknown and was not at the previous look (a node down for hours counts once, not at
// every look).
bool lost_since_last_look(const node_doubts& previous, const node_doubts& now);

// The verify pass's pause between two of its `n` databases: the pass takes about half of
// `interval` (the rest is the quiet before the next), at most `rate` databases a second (the
// sweep's rate; 1 when not positive).
std::chrono::milliseconds verify_gap(std::size_t n, std::chrono::milliseconds interval, double rate);

// Who else hears of changes (the front door's parked live feeds, gateway/feed_notifier.hpp):
// every `_db_updates` event's database, and "events may have been lost" when the feed broke.
// Called on the detector's thread; must not block.
struct change_listener {
  std::function<void(const std::string& db)> changed;
  std::function<void()> lost;
};

class change_detector {
 public:
  // on_created(db, recreated): a database was created (or an unknown one was updated); the
  // owner of the callback decides whether it becomes a source and applies its _security.
  // `recreated` is true when it surely existed before (it had a checkpoint, or the sweep saw it
  // gone or younger), false for a `created` event of a database that may be brand new.
  using created_fn = std::function<void(const std::string& db, bool recreated)>;
  // `target` null: no fan-in (the front door's live feeds alone need to hear of changes): the
  // `_db_updates` feed only tells the listener; no verify pass, no sweep (the listener's owner
  // sweeps while this detector is not following the feed), on_created never called.
  change_detector(couch_client& client, state_store& state, fanin* target, registry& metrics,
                  detector_options opts, created_fn on_created);
  ~change_detector();

  // Decides the mode (probing the server in automatic mode) and starts the thread.
  // Returns the mode chosen; throws nothing: a probe failure is retried inside the thread.
  void start();
  void stop();
  // Before start(): also tell `l` what the `_db_updates` follower sees.
  void set_listener(change_listener l) { listener_ = std::move(l); }
  detection active_mode() const { return active_.load(); }
  // True while the server's `_db_updates` is judged silent (update_db off, or the canary not
  // reported) and couchgate sweeps instead.
  bool feed_silent() const { return silent_seen_.load(); }

 private:
  void run();
  // What the server's `_db_updates` can do (creating _global_changes if allowed): `silent` when
  // it answers but records nothing ([global_changes] update_db is false on the node couchgate
  // talks to). Throws couch_error when the server cannot be reached (undecided).
  enum class feed_state { works, unavailable, silent };
  feed_state probe();
  // True when the node couchgate talks to has [global_changes] update_db "false" (false when it
  // is on or cannot be told: a server without the config API has its feed judged by the probe
  // and the canary).
  bool updates_off();
  // The active canary: writes to the state database and polls `_db_updates` (normal feed, every
  // half second) for up to opts_.canary_wait for an event of it. True when seen (or canaries
  // are off). CouchDB 3.5's global_changes_server drops every message while update_db is false,
  // the one turning it on again included: only what the feed does tells.
  bool feed_records();
  // The active canary in steps, for the sweep's loop (which goes on meanwhile): start_canary
  // writes it (false: the feed or the state database could not be asked); each poll_canary reads
  // the feed once from where the last stopped: true when the canary (any state database write)
  // was reported, false when canary_wait has passed without it (or the read failed), nullopt
  // while it may still come. Detector thread only.
  bool start_canary();
  std::optional<bool> poll_canary();
  struct canary_trial {
    json since;
    std::chrono::steady_clock::time_point deadline;
  };
  std::optional<canary_trial> trial_;
  // How often a silent feed is tried again, and how often the canary is written while following.
  std::chrono::milliseconds silence_check_interval() const;
  void follow_db_updates();
  // Events asked for per read of `_db_updates` (the follower's and the canary's); a page this
  // full may have more after it.
  static constexpr std::size_t db_updates_page = 1000;
  // The verify thread (opts_.verify_interval): while the feed is followed, fanin::verify of every
  // source, paced by verify_gap.
  void verify_loop();
  // False when it stopped early because the server could not be reached (outage_error).
  bool sweep_once();
  // Resets its checkpoint (when it had one, or `surely` it existed before; then counted and
  // logged once, saying `why`), then on_created.
  void recreated(const std::string& db, bool surely, const char* why);

  couch_client& client_;
  state_store& state_;
  fanin* fanin_;  // null: the feed for the listener only
  detector_options opts_;
  created_fn on_created_;
  change_listener listener_;
  // Time through opts_.clock: now, a sleep (false when stopping), a backoff delay.
  std::chrono::steady_clock::time_point now() const;
  bool sleep(std::chrono::steady_clock::duration d);
  std::chrono::milliseconds backoff(std::uint32_t failures) const;
  // The server's nodes that may have lost events within the last `since` (doubtful_nodes);
  // nullopt when the server cannot be asked now.
  std::optional<node_doubts> ask_nodes(std::chrono::steady_clock::duration since);
  // The feed broke after answering at `answered`: lost() unless every node of the server has
  // been up since (doubtful_nodes, lost_since_last_look). False: the server cannot be asked now (asked again
  // before the next read).
  bool judge_break(std::chrono::steady_clock::time_point answered);
  // The periodic look (opts_.node_check_interval) while the feed stays up, covering the time
  // since `last_look`: lost() when lost_since_last_look says so. False: the server cannot be
  // asked now.
  bool look_at_nodes(std::chrono::steady_clock::time_point last_look);
  // What the last look or judgement found (detector thread only).
  node_doubts nodes_;
  void lost() {
    if (fanin_ != nullptr) fanin_->mark_all_dirty();
    if (listener_.lost) listener_.lost();
  }
  // Sweep mode, detector thread only: sources that answered 404 (looked at again by every
  // sweep: when they answer, they were created again) and each source's instance_start_time.
  std::set<std::string> gone_;
  // The feed was found silent (update_db off, or the canary not reported): the sweep runs and
  // the feed is tried again every silence_check_interval() with the active canary; followed
  // again only once it reported one (detector thread only).
  bool silent_ = false;
  std::chrono::steady_clock::time_point silence_checked_{};
  // While following: when the passive canary was written and not yet reported.
  std::optional<std::chrono::steady_clock::time_point> canary_sent_;
  std::uint64_t canaries_ = 0;
  std::unordered_map<std::string, std::string> instances_;
  std::atomic<detection> active_{detection::automatic};
  stop_flag stop_;
  std::thread thread_;
  std::thread verify_thread_;
  counter& events_;
  counter& reconnects_;
  gauge& mode_gauge_;
  counter& recreations_;
  gauge& silent_gauge_;  // couchgate_db_updates_silent: silent_, for /metrics
  std::atomic<bool> silent_seen_{false};  // silent_, for feed_silent()
  void set_silent(bool on) {
    silent_ = on;
    silent_seen_.store(on);
    silent_gauge_.set(on ? 1 : 0);
  }
};

}  // namespace couchgate::replicator
