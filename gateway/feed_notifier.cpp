// Owns: waking parked live feeds from the detector's events or a bounded sweep (see feed_notifier.hpp).
#include "gateway/feed_notifier.hpp"

#include <algorithm>
#include <optional>

#include "replicator/logger.hpp"

namespace couchgate::gateway {

namespace {
// The detector decides its mode after the notifier's thread starts and may change it later (a
// silent feed): the mode is looked at at least this often, whatever the sweep's interval.
constexpr std::chrono::milliseconds mode_check{1000};

std::shared_ptr<spdlog::logger> log() {
  static auto l = replicator::named_logger("feeds");
  return l;
}
}  // namespace

feed_notifier::feed_notifier(replicator::couch_client& client, front::feed_registry& feeds,
                             replicator::change_detector* detector, feed_notifier_options opts)
    : client_(client), feeds_(feeds), detector_(detector), opts_(opts) {}

feed_notifier::~feed_notifier() { stop(); }

replicator::change_listener feed_notifier::listener() {
  return replicator::change_listener{[this](const std::string& db) { feeds_.notify(db); },
                                     [this] { feeds_.notify_all(); }};
}

void feed_notifier::start() {
  stop_.reset();
  thread_ = std::thread([this] { run(); });
}

void feed_notifier::stop() {
  stop_.request();
  if (thread_.joinable()) thread_.join();
}

bool feed_notifier::db_updates_active() const {
  return detector_ != nullptr && detector_->active_mode() == replicator::detection::db_updates;
}

void feed_notifier::run() {
  std::optional<bool> sweeping;  // the first mode is logged too
  auto verify_at = std::chrono::steady_clock::now() + opts_.verify_interval;
  auto sweep_at = std::chrono::steady_clock::now();
  while (!stop_.requested()) {
    const auto started = std::chrono::steady_clock::now();
    const bool sweep = !db_updates_active();
    // Only while events flow may a re-issued longpoll skip its first check (feed_memo.hpp).
    feeds_.set_follower_live(!sweep);
    if (sweep != sweeping) {
      const bool switched = sweeping.has_value();
      sweeping = sweep;
      log()->info("live feeds are woken by {}", sweep ? "a sweep of their databases' update_seq" : "_db_updates events");
      // Changes made while the mode switched may have been announced to nobody.
      if (!sweep && switched) feeds_.notify_all();
      verify_at = started + opts_.verify_interval;  // notify_all just read everything
    }
    if (sweep && started >= sweep_at) {
      sweep_once(opts_.sweep_rate, [] { return true; });
      sweep_at = started + opts_.sweep_interval;
    } else if (!sweep && opts_.verify_interval.count() > 0 && started >= verify_at) {
      const auto gap = replicator::verify_gap(feeds_.watched().size(), opts_.verify_interval, opts_.sweep_rate);
      sweep_once(1000.0 / static_cast<double>(gap.count()), [this] { return db_updates_active(); });
      verify_at = started + opts_.verify_interval;
    }
    const auto next = std::min(sweep ? sweep_at : started + opts_.sweep_interval, started + mode_check);
    const auto now = std::chrono::steady_clock::now();
    if (next > now && !stop_.sleep_for(std::chrono::duration_cast<std::chrono::milliseconds>(next - now))) return;
  }
}

void feed_notifier::sweep_once(double rate_asked, const std::function<bool()>& go) {
  const auto dbs = feeds_.watched();
  const double rate = rate_asked > 0 ? rate_asked : 1;
  const std::size_t window = std::max<std::size_t>(1, std::min<std::size_t>(64, static_cast<std::size_t>(rate / 10)));
  const auto window_time = std::chrono::duration<double>(static_cast<double>(window) / rate);
  for (std::size_t off = 0; off < dbs.size() && go(); off += window) {
    const auto started = std::chrono::steady_clock::now();
    std::vector<std::pair<std::string, replicator::pending_json>> calls;
    for (std::size_t i = off; i < std::min(dbs.size(), off + window); ++i) calls.emplace_back(dbs[i], client_.db_info(dbs[i]));
    for (auto& [db, call] : calls) {
      auto r = call.get();
      if (!r.ok()) {
        if (r.error().kind == replicator::couch_error_kind::cancelled) return;
        // Gone or unreadable: the feeds read again and get CouchDB's own answer.
        if (r.error().kind == replicator::couch_error_kind::not_found) feeds_.notify(db);
        continue;
      }
      const auto& info = r.value();
      if (!info.is_object() || !info.contains("update_seq")) continue;
      if (const auto seq = replicator::couch_client::seq_number(info["update_seq"])) feeds_.observe(db, *seq);
    }
    // The pause before the next window, in slices of at most sweep_interval and mode_check: `go`
    // is asked between them (a verify pass's pause can be minutes; a change of mode must not wait
    // for it).
    const auto next = started + std::chrono::duration_cast<std::chrono::steady_clock::duration>(window_time);
    for (auto now = std::chrono::steady_clock::now(); next > now && go(); now = std::chrono::steady_clock::now()) {
      const auto slice = std::min(std::chrono::duration_cast<std::chrono::milliseconds>(next - now) + std::chrono::milliseconds(1),
                                  std::clamp(opts_.sweep_interval, std::chrono::milliseconds(1), mode_check));
      if (!stop_.sleep_for(slice)) return;
    }
  }
}

}  // namespace couchgate::gateway
