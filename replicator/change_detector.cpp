// Owns: the `_db_updates` follower and the update_seq sweep (see change_detector.hpp).
#include "replicator/change_detector.hpp"

#include <algorithm>
#include <cmath>

#include "replicator/logger.hpp"
#include "replicator/outage.hpp"
#include "replicator/server_limits.hpp"
#include "replicator/transport/url.hpp"
#include "replicator/wire_json.hpp"


namespace couchgate::replicator {

namespace {
std::shared_ptr<spdlog::logger> log() {
  static auto l = named_logger("detector");
  return l;
}
constexpr const char* db_updates_key = "db_updates";
// The canary's state document (feed:db_updates_canary): a counter, rewritten at each canary.
constexpr const char* canary_key = "db_updates_canary";
}  // namespace

const char* to_string(detection d) {
  switch (d) {
    case detection::automatic: return "auto";
    case detection::db_updates: return "db_updates";
    case detection::sweep: return "sweep";
  }
  return "unknown";
}

result<db_updates_page> parse_db_updates(const json& answer) {
  if (!answer.is_object() || !answer.contains("results") || !answer["results"].is_array()) {
    return couch_error{couch_error_kind::protocol, 0, "_db_updates answer has no results array", ""};
  }
  db_updates_page page;
  page.last_seq = couch_client::resume_seq(answer);
  for (const auto& row : answer["results"]) {
    if (!row.is_object() || !row.contains("db_name") || !row["db_name"].is_string()) {
      wire::malformed("_db_updates row without a db_name string");  // counted; the others are read
      continue;
    }
    db_event e;
    e.db = row["db_name"].get<std::string>();
    e.type = row.contains("type") && row["type"].is_string() ? row["type"].get<std::string>() : "updated";
    page.events.push_back(std::move(e));
  }
  return page;
}

change_detector::change_detector(couch_client& client, state_store& state, fanin* target, registry& metrics,
                                 detector_options opts, created_fn on_created)
    : client_(client),
      state_(state),
      fanin_(target),
      opts_(opts),
      on_created_(std::move(on_created)),
      events_(metrics.add_counter("couchgate_db_updates_events_total", "_db_updates events received")),
      reconnects_(metrics.add_counter("couchgate_feed_reconnects_total", "Feed reconnects after an error", "feed=\"db_updates\"")),
      mode_gauge_(metrics.add_gauge("couchgate_detection_mode", "Change detection in use: 0 undecided, 1 db_updates, 2 sweep")),
      recreations_(metrics.add_counter("couchgate_databases_recreated_total",
                                       "Source databases found deleted and created again under the same name (checkpoint reset, read from the start)")),
      silent_gauge_(metrics.add_gauge("couchgate_db_updates_silent",
                                      "1 while the server's _db_updates is judged silent ([global_changes] update_db off, or "
                                      "couchgate's canary write not reported): couchgate sweeps instead")) {
  if (!opts_.clock.jitter) opts_.clock.jitter = random_uniform_source();
}

change_detector::~change_detector() { stop(); }

std::chrono::steady_clock::time_point change_detector::now() const {
  return opts_.clock.now ? opts_.clock.now() : std::chrono::steady_clock::now();
}

bool change_detector::sleep(std::chrono::steady_clock::duration d) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(d);
  if (!opts_.clock.sleep) return stop_.sleep_for(ms);
  return !stop_.requested() && opts_.clock.sleep(ms) && !stop_.requested();
}

std::chrono::milliseconds change_detector::backoff(std::uint32_t failures) const {
  return backoff_delay(opts_.backoff, failures, opts_.clock.jitter);
}

void change_detector::start() {
  stop_.reset();
  thread_ = std::thread([this] { run(); });
  if (fanin_ != nullptr && opts_.verify_interval.count() > 0) verify_thread_ = std::thread([this] { verify_loop(); });
}

void change_detector::stop() {
  stop_.request();
  if (thread_.joinable()) thread_.join();
  if (verify_thread_.joinable()) verify_thread_.join();
}

std::chrono::milliseconds verify_gap(std::size_t n, std::chrono::milliseconds interval, double rate) {
  const double per_second = rate > 0 ? rate : 1;
  const auto fastest = std::chrono::milliseconds(static_cast<std::int64_t>(std::ceil(1000.0 / per_second)));
  if (n == 0) return std::max(fastest, interval);
  const auto spread = interval / 2 / static_cast<std::int64_t>(n);
  return std::max(fastest, spread);
}

void change_detector::verify_loop() {
  // One pass every verify_interval, counted from the start of the one before (a pass takes about
  // half of it); while the feed is not followed the sweep reads every source already.
  auto pass_at = std::chrono::steady_clock::now() + opts_.verify_interval;
  while (true) {
    const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(pass_at - std::chrono::steady_clock::now());
    if (wait.count() > 0 && !stop_.sleep_for(wait)) return;
    if (stop_.requested()) return;
    pass_at = std::chrono::steady_clock::now() + opts_.verify_interval;
    if (active_.load() != detection::db_updates) continue;
    const auto dbs = fanin_->sources();
    const auto gap = verify_gap(dbs.size(), opts_.verify_interval, opts_.sweep_rate);
    std::size_t marked = 0;
    for (const auto& db : dbs) {
      if (active_.load() != detection::db_updates) break;
      if (fanin_->verify(db)) ++marked;
      if (!stop_.sleep_for(gap)) return;
    }
    log()->debug("verify pass: {} of {} sources read again", marked, dbs.size());
  }
}

bool change_detector::updates_off() {
  auto r = client_.request("GET", "/_node/_local/_config/global_changes/update_db").get();
  return update_db_in_effect(r) == std::optional<bool>(false);
}

std::chrono::milliseconds change_detector::silence_check_interval() const {
  return opts_.node_check_interval.count() > 0 ? opts_.node_check_interval : std::chrono::milliseconds(60000);
}

bool change_detector::start_canary() {
  trial_.reset();
  auto start = client_.db_updates(json("now"), false, 1).get();
  if (!start.ok()) return false;
  auto first = parse_db_updates(start.value());
  if (!first.ok()) return false;
  json since = first.value().last_seq;
  if (auto w = state_.put_value(canary_key, json(++canaries_)); !w.ok() || !w.value()) {
    log()->info("could not write the _db_updates canary to {} ({}): the feed is tried again later", state_.db(),
                w.ok() ? "not written" : w.error().describe());
    return false;
  }
  trial_ = canary_trial{std::move(since), now() + opts_.canary_wait};
  return true;
}

std::optional<bool> change_detector::poll_canary() {
  if (!trial_) return false;
  const bool late = now() >= trial_->deadline;  // decided before the read: what it finds still counts
  auto r = client_.db_updates(trial_->since, false, db_updates_page).get();
  std::optional<bool> out;
  if (!r.ok()) {
    out = false;
  } else if (auto page = parse_db_updates(r.value()); !page.ok()) {
    out = false;
  } else {
    for (const auto& e : page.value().events) {
      if (e.db == state_.db()) out = true;
    }
    if (!out && !page.value().last_seq.is_null()) trial_->since = page.value().last_seq;
    // A full page may hold more after it: read on at the next poll, not judged yet.
    if (!out && late && page.value().events.size() < db_updates_page) out = false;
  }
  if (out) trial_.reset();
  return out;
}

bool change_detector::feed_records() {
  if (opts_.canary_wait.count() <= 0) return true;
  if (!start_canary()) return false;
  // Polled every half second; a feed whose pages stay full past the deadline is given up on after
  // as many polls again (an answer that never moves `since` must not hold the probe for ever).
  const auto polls = 2 * std::max<std::int64_t>(1, opts_.canary_wait.count() / 500);
  for (std::int64_t i = 0; i < polls; ++i) {
    if (!sleep(std::chrono::milliseconds(500))) break;
    if (auto seen = poll_canary()) return *seen;
  }
  trial_.reset();
  return false;
}

change_detector::feed_state change_detector::probe() {
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto r = client_.db_updates(json("now"), false, 1).get();
    if (r.ok()) {
      if (updates_off()) return feed_state::silent;
      // Found silent before (this process): followed again only when it reports a canary.
      if (silent_) {
        if (!feed_records()) return feed_state::silent;
        log()->info("CouchDB's _db_updates reports changes again (couchgate's own write was seen): following it");
        set_silent(false);
      }
      return feed_state::works;
    }
    const auto& e = r.error();
    if (e.kind == couch_error_kind::not_found && opts_.create_global_changes && attempt == 0) {
      log()->info("_db_updates needs the _global_changes database; creating it");
      auto c = client_.create_db("_global_changes").get();
      if (!c.ok() && c.error().kind != couch_error_kind::conflict) {
        log()->warn("could not create _global_changes: {}", c.error().describe());
        return feed_state::unavailable;
      }
      continue;
    }
    if (e.kind == couch_error_kind::network || e.kind == couch_error_kind::timeout || e.kind == couch_error_kind::cancelled) {
      throw e;  // undecided: the caller retries
    }
    log()->info("_db_updates unavailable ({})", e.describe());
    return feed_state::unavailable;
  }
  return feed_state::unavailable;
}

void change_detector::run() {
  std::uint32_t failures = 0;
  while (true) {
    if (stop_.requested()) return;
    if (active_.load() == detection::automatic) {
      detection chosen = opts_.mode;
      if (opts_.mode != detection::sweep) {
        try {
          const feed_state feed = probe();
          if (feed == feed_state::unavailable && opts_.mode == detection::db_updates) {
            log()->error("detection is db_updates but the server's _db_updates does not work; retrying");
            if (!sleep(backoff(++failures))) return;
            continue;
          }
          if (feed == feed_state::silent && !silent_) {
            // Following a feed that never reports would lose every change, whatever the mode
            // configured: sweep until the server records them again.
            log()->warn("CouchDB's [global_changes] update_db is false: its _db_updates feed reports no change; "
                        "sweeping every source instead, and trying the feed again every {} s (CouchDB 3.5 records "
                        "again only after the node restarted with update_db true)",
                        std::chrono::duration_cast<std::chrono::seconds>(silence_check_interval()).count());
          }
          if (feed == feed_state::silent) {
            set_silent(true);
            silence_checked_ = now();
          }
          chosen = feed == feed_state::works ? detection::db_updates : detection::sweep;
        } catch (const couch_error& e) {
          reconnects_.inc();
          if (!sleep(backoff(++failures))) return;
          continue;
        }
      }
      failures = 0;
      active_.store(chosen);
      mode_gauge_.set(chosen == detection::db_updates ? 1 : 2);
      log()->info("change detection: {}", to_string(chosen));
    }
    if (active_.load() == detection::db_updates) {
      follow_db_updates();
    } else {
      // A silent feed is tried again every silence_check_interval(): a canary written, then one
      // read of the feed per turn of the sweep (the sweep does not wait for it) until it reports
      // the canary or canary_wait has passed.
      bool records = false;
      if (silent_ && !trial_ && now() - silence_checked_ >= silence_check_interval()) {
        silence_checked_ = now();
        if (!updates_off()) {
          if (opts_.canary_wait.count() <= 0) records = true;  // canaries off: the config is trusted
          else start_canary();
        }
      } else if (silent_ && trial_) {
        const auto seen = poll_canary();
        records = seen == std::optional<bool>(true);
        if (seen) silence_checked_ = now();  // the next try an interval after this one ended
      }
      if (records) {
        // What changed between the last sweep and the first recorded event is in neither.
        log()->info("CouchDB's _db_updates reports changes again (couchgate's own write was seen): following it");
        set_silent(false);
        active_.store(detection::automatic);
        lost();
        continue;
      }
      auto started = now();
      // A server that cannot be reached ends the sweep: the next one waits with backoff (never
      // less than sweep_interval), not one request per source every interval meanwhile.
      auto next = started + opts_.sweep_interval;
      if (sweep_once()) {
        failures = 0;
      } else {
        next = std::max(next, started + backoff(++failures));
      }
      if (auto at = now(); next > at && !sleep(next - at)) return;
    }
  }
}

namespace {
// membership[key] as a set of names; nullopt when it is not a list of strings.
std::optional<std::set<std::string>> node_list(const json& membership, const char* key) {
  if (!membership.is_object()) return std::nullopt;
  auto it = membership.find(key);
  if (it == membership.end() || !it->is_array()) return std::nullopt;
  std::set<std::string> out;
  for (const auto& n : *it) {
    if (!n.is_string()) return std::nullopt;
    out.insert(n.get<std::string>());
  }
  return out;
}
}  // namespace

std::optional<std::set<std::string>> cluster_nodes(const json& membership) {
  auto nodes = node_list(membership, "cluster_nodes");
  if (!nodes || nodes->empty()) return std::nullopt;
  return nodes;
}

node_doubts doubtful_nodes(const json& membership, const std::map<std::string, json>& systems,
                           std::chrono::steady_clock::duration since) {
  const auto cluster = cluster_nodes(membership);
  if (!cluster) return {{"", node_doubt::unknown}};
  const auto up = node_list(membership, "all_nodes").value_or(std::set<std::string>{});
  // Whole seconds, and a margin for the clocks of two machines.
  const auto window = std::chrono::duration_cast<std::chrono::seconds>(since).count() + 2;
  node_doubts out;
  for (const auto& node : *cluster) {
    if (!up.contains(node)) {  // down: what it held is gone
      out.emplace(node, node_doubt::down);
      continue;
    }
    auto it = systems.find(node);
    const json* uptime = it != systems.end() && it->second.is_object() && it->second.contains("uptime")
                             ? &it->second["uptime"]
                             : nullptr;
    if (!uptime || !uptime->is_number()) {
      out.emplace(node, node_doubt::unknown);
    } else if (uptime->get<double>() <= static_cast<double>(window)) {
      out.emplace(node, node_doubt::restarted);
    }
  }
  return out;
}

bool lost_since_last_look(const node_doubts& previous, const node_doubts& now) {
  for (const auto& [node, doubt] : now) {
    if (doubt == node_doubt::restarted) return true;
    if (auto was = previous.find(node); was == previous.end() || was->second == node_doubt::restarted) return true;
  }
  return false;
}

std::optional<node_doubts> change_detector::ask_nodes(std::chrono::steady_clock::duration since) {
  // A cluster of more nodes than this is not asked node by node: counted as unknown.
  constexpr std::size_t max_nodes = 64;
  constexpr std::chrono::milliseconds node_answer_timeout{5000};
  // The server unreachable: asked again later. Once it answers, a node that does not (hung, or
  // gone meanwhile) counts as one that may have lost events.
  const auto started = now();
  std::optional<json> membership;
  if (auto r = client_.request("GET", "/_membership").get(); r.ok()) {
    membership = std::move(r.value());
  } else if (outage_error(r.error()) || r.error().kind == couch_error_kind::cancelled) {
    return std::nullopt;
  } else {
    membership = json();  // refused (not an admin, not CouchDB): judged unknown
  }
  std::map<std::string, json> systems;
  if (const auto nodes = cluster_nodes(*membership); nodes && nodes->size() <= max_nodes) {
    // Asked all at once, each for at most node_answer_timeout: CouchDB relays the question to
    // the node without a time limit of its own, and a hung node must not hold the feed for the
    // request timeout at every look.
    const auto up = node_list(*membership, "all_nodes").value_or(std::set<std::string>{});
    std::vector<std::pair<std::string, pending_json>> asked;
    for (const auto& name : *nodes) {
      if (!up.contains(name)) continue;  // down: not asked (its answer could only wait or fail)
      asked.emplace_back(name, client_.request("GET", "/_node/" + encode_segment(name) + "/_system", {},
                                               node_answer_timeout));
    }
    for (auto& [name, pending] : asked) {
      auto r = pending.get();
      systems.emplace(name, r.ok() ? std::move(r.value()) : json());  // unanswered: unknown
    }
  }
  // The answers took time too: a node that restarted while they were asked is within the window.
  return doubtful_nodes(*membership, systems, since + (now() - started));
}

namespace {
std::string describe(const node_doubts& doubts) {
  std::string out;
  for (const auto& [node, doubt] : doubts) {
    if (!out.empty()) out += ", ";
    out += (node.empty() ? std::string("the membership answer") : node) + " " +
           (doubt == node_doubt::restarted ? "restarted" : doubt == node_doubt::down ? "is down" : "could not be asked");
  }
  return out;
}
}  // namespace

bool change_detector::judge_break(std::chrono::steady_clock::time_point answered) {
  const auto since = now() - answered;
  const auto doubts = ask_nodes(since);
  if (!doubts) return false;
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(since).count();
  if (lost_since_last_look(nodes_, *doubts)) {
    log()->warn("_db_updates feed broke for {} s and the server may have lost events meanwhile ({}): every source "
                "is looked at",
                seconds, describe(*doubts));
    lost();
  } else if (doubts->empty()) {
    log()->info("_db_updates feed broke for {} s; every node was up throughout: nothing was lost, it resumes from "
                "its position",
                seconds);
  } else {
    log()->info("_db_updates feed broke for {} s; no node restarted meanwhile ({}, as at the previous look): it "
                "resumes from its position",
                seconds, describe(*doubts));
  }
  nodes_ = *doubts;
  return true;
}

bool change_detector::look_at_nodes(std::chrono::steady_clock::time_point last_look) {
  const auto doubts = ask_nodes(now() - last_look);
  if (!doubts) return false;
  if (lost_since_last_look(nodes_, *doubts)) {
    log()->warn("a CouchDB node may have lost _db_updates events while the feed stayed up ({}): every source is "
                "looked at",
                describe(*doubts));
    lost();
  }
  nodes_ = *doubts;
  return true;
}

void change_detector::follow_db_updates() {
  json since = "now";
  if (auto stored = state_.get_value(db_updates_key); stored.ok() && stored.value()) since = *stored.value();
  json saved = since;
  auto last_save = now();
  std::uint32_t failures = 0;
  auto answered = now();
  // Set while the feed is broken: when it last answered (judge_break before the next read).
  std::optional<std::chrono::steady_clock::time_point> broken_since;
  auto save = [&](bool force) {
    const auto at = now();
    if (since == saved || (!force && at - last_save < std::chrono::seconds(2))) return;
    if (state_.put_value(db_updates_key, since).ok()) saved = since;
    last_save = at;
  };
  // When the server's nodes were last asked about (a break's judgement counts).
  auto nodes_asked = now();
  // When the feed's own check (update_db, the canary) last ran: first at once.
  auto feed_checked = now() - silence_check_interval();
  // When a read last reached the feed's end (fewer events than asked for, or an idle wait).
  std::optional<std::chrono::steady_clock::time_point> caught_up_at;
  canary_sent_.reset();
  while (true) {
    if (stop_.requested()) break;
    if (broken_since) {
      const auto at = now();
      if (judge_break(*broken_since)) {
        broken_since.reset();
        nodes_asked = at;
      }
    } else {
      if (opts_.node_check_interval.count() > 0 && now() - nodes_asked >= opts_.node_check_interval) {
        const auto at = now();
        if (look_at_nodes(nodes_asked)) nodes_asked = at;
      }
      // The feed's own check, on its own clock (always moved on: a look that cannot be made
      // does not make it run at every read), first at once.
      if (now() - feed_checked >= silence_check_interval()) {
        const auto at = now();
        feed_checked = at;
        // Silent when update_db is off, or when the canary written at a previous check (at least
        // canary_wait ago) was not reported though the follower has read the feed to its end
        // since then (a follower that lags, on a busy server, has simply not reached it yet).
        // What the node held may never be written: every source is looked at, then swept until
        // the feed records again.
        const bool off = updates_off();
        const bool canary_lost = canary_sent_ && at - *canary_sent_ >= opts_.canary_wait && caught_up_at &&
                                 *caught_up_at - *canary_sent_ >= opts_.canary_wait;
        if (off || canary_lost) {
          if (off) {
            log()->warn("CouchDB's [global_changes] update_db was turned false: its _db_updates feed reports no change "
                        "from now on; every source is looked at, then swept, and the feed tried again every {} s "
                        "(CouchDB 3.5 records again only after the node restarted with update_db true)",
                        std::chrono::duration_cast<std::chrono::seconds>(silence_check_interval()).count());
          } else {
            log()->warn("CouchDB's _db_updates did not report couchgate's own write to {} within {} s: it records no "
                        "change (was [global_changes] update_db false since the node started?); every source is "
                        "looked at, then swept, and the feed tried again every {} s",
                        state_.db(), std::chrono::duration_cast<std::chrono::seconds>(at - *canary_sent_).count(),
                        std::chrono::duration_cast<std::chrono::seconds>(silence_check_interval()).count());
          }
          set_silent(true);
          silence_checked_ = at;
          canary_sent_.reset();
          active_.store(detection::automatic);
          lost();
          break;
        }
        if (opts_.canary_wait.count() > 0 && !canary_sent_) {
          if (auto w = state_.put_value(canary_key, json(++canaries_)); w.ok() && w.value()) canary_sent_ = at;
        }
      }
    }
    auto r = client_.db_updates(since, true, db_updates_page).get();
    if (!r.ok()) {
      const auto& e = r.error();
      if (e.kind == couch_error_kind::cancelled) break;
      reconnects_.inc();
      if (e.kind == couch_error_kind::timeout) {
        // Ended on the client's clock with its heartbeats flowing (CouchDB ignores `timeout` on a
        // feed with a heartbeat: an idle server's longpoll ends here): the feed was up, nothing
        // is missed, and the wait spaced the attempts. A connection silent for three heartbeats
        // is a network failure instead (below), judged as a break.
        log()->debug("_db_updates feed: {}; reconnecting", e.describe());
        if (!broken_since) answered = caught_up_at.emplace(now());
        continue;
      }
      if (e.kind == couch_error_kind::bad_request && since != json("now")) {
        log()->warn("stored _db_updates position rejected ({}); restarting from now and sweeping every source once",
                    e.describe());
        since = "now";
        canary_sent_.reset();  // its event may lie before "now"
        lost();
        continue;
      }
      if (e.kind == couch_error_kind::not_found) {
        log()->warn("_db_updates stopped working ({}); deciding the mode again", e.describe());
        active_.store(detection::automatic);
        lost();
        break;
      }
      auto delay = backoff(++failures);
      log()->log(outage_error(e) ? spdlog::level::debug : spdlog::level::warn, "_db_updates feed failed: {} (retry in {} ms)",
                 e.describe(), delay.count());
      if (!broken_since) broken_since = answered;
      if (!sleep(delay)) break;
      continue;
    }
    failures = 0;
    answered = now();
    auto page = parse_db_updates(r.value());
    if (!page.ok()) {
      reconnects_.inc();
      log()->warn("_db_updates answer malformed: {}", page.error().describe());
      if (!sleep(backoff(1))) break;
      continue;
    }
    events_.inc(page.value().events.size());
    if (page.value().events.size() < db_updates_page) caught_up_at = answered;
    for (const auto& e : page.value().events) {
      if (listener_.changed) listener_.changed(e.db);
      if (e.db == state_.db()) canary_sent_.reset();  // the feed records (the canary, or any state write)
      if (fanin_ == nullptr) continue;
      if (e.db == fanin_->central_db() || e.db == state_.db()) {
        // Our own databases: deleted or created again by someone, a look at once (fanin.hpp).
        if (e.type == "deleted" || e.type == "created") fanin_->request_target_check();
        continue;
      }
      if (e.type == "deleted") {
        if (fanin_->knows(e.db)) {
          log()->info("db={} deleted; dropped from fan-in", e.db);
          fanin_->remove_source(e.db);
        }
      } else if (e.type == "created") {
        recreated(e.db, false, "a created event");
      } else if (!fanin_->mark_dirty(e.db) && on_created_ && e.type == "updated") {
        on_created_(e.db, false);
      }
    }
    if (!page.value().last_seq.is_null()) since = page.value().last_seq;
    save(false);
  }
  save(true);
}

void change_detector::recreated(const std::string& db, bool surely, const char* why) {
  // A checkpoint under this name belongs to the database's previous life (a source dropped when
  // it was deleted keeps its checkpoint in the state database): it would skip the new one's
  // first changes. Without one (or at 0) there is nothing to reset: a `created` event of a
  // database just provisioned costs no state write.
  auto cp = state_.checkpoint(db);
  const bool had = surely || (cp && couch_client::seq_number(*cp) != std::optional<std::uint64_t>(0));
  if (had) {
    recreations_.inc();
    log()->info("db={} was created again ({}): read from its start", db, why);
    fanin_->source_recreated(db);
  } else {
    fanin_->mark_created(db);
  }
  if (on_created_) on_created_(db, had);
}

bool change_detector::sweep_once() {
  if (fanin_ == nullptr) return true;  // no sources of its own: the listener's owner sweeps
  auto dbs = fanin_->sources();
  for (const auto& db : gone_) {
    if (!fanin_->knows(db)) dbs.push_back(db);
  }
  const double rate = opts_.sweep_rate > 0 ? opts_.sweep_rate : 1;
  const std::size_t window = std::max<std::size_t>(1, std::min<std::size_t>(64, static_cast<std::size_t>(rate / 10)));
  const auto window_time = std::chrono::duration<double>(static_cast<double>(window) / rate);
  for (std::size_t off = 0; off < dbs.size(); off += window) {
    auto started = now();
    std::vector<std::pair<std::string, pending_json>> calls;
    for (std::size_t i = off; i < std::min(dbs.size(), off + window); ++i) calls.emplace_back(dbs[i], client_.db_info(dbs[i]));
    for (auto& [db, call] : calls) {
      auto r = call.get();
      if (!r.ok()) {
        if (r.error().kind == couch_error_kind::cancelled) return true;
        if (outage_error(r.error())) return false;
        if (r.error().kind == couch_error_kind::not_found && fanin_->knows(db)) {
          log()->info("db={} is gone; dropped from fan-in", db);
          fanin_->remove_source(db);
          gone_.insert(db);
          instances_.erase(db);
        }
        continue;
      }
      const json& info = r.value();
      if (gone_.erase(db)) {
        recreated(db, true, "it answers again after a 404");
        continue;
      }
      if (!info.is_object() || !info.contains("update_seq")) continue;
      if (auto ist = info.find("instance_start_time"); ist != info.end() && ist->is_string() && *ist != "0") {
        auto& known = instances_[db];
        const bool changed = !known.empty() && known != ist->get_ref<const std::string&>();
        known = ist->get<std::string>();
        if (changed) {
          recreated(db, true, "instance_start_time changed");
          continue;
        }
      }
      auto current = couch_client::seq_number(info["update_seq"]);
      auto cp = state_.checkpoint(db);
      auto done = cp ? couch_client::seq_number(*cp) : std::optional<std::uint64_t>(0);
      if (!current || !done) {
        fanin_->mark_dirty(db);
      } else if (*current < *done) {
        // The database is younger than its checkpoint: it was deleted and created again.
        recreated(db, true, "update_seq below its checkpoint");
      } else if (*current != *done) {
        fanin_->mark_dirty(db);
      }
    }
    auto next = started + std::chrono::duration_cast<std::chrono::steady_clock::duration>(window_time);
    if (auto at = now(); next > at && !sleep(next - at)) return true;
  }
  return true;
}

}  // namespace couchgate::replicator
