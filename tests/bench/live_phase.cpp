// Owns: the live-feeds phase of issue #14 (see phases.hpp).
//
// C users (password, database with _security naming them) each get one live client (see
// live_clients.hpp: Asio coroutines on one thread, one connection each) waiting on
// `_changes?feed=longpoll&since=<current>`. couchgate runs (its defaults, the front door on
// plain HTTP) through both halves:
//   direct  - the clients wait on /userdb-... at the server itself;
//   front   - the same clients wait on /me through couchgate's front door;
//   front_write_through (--live-writes front|both) - the front half again, its writer writing
//             through couchgate's front door (see live_writer.hpp).
// In each half, once the clients wait, a writer (admin, straight to the server; as the user
// through the front door in front_write_through) writes W documents/s into databases picked at
// random (fixed seed) for D seconds. Delivery latency =
// the moment the answer carrying a document was read completely - the start of its PUT (one
// steady clock). A sampler reads /proc: couchgate's established connections to the server
// (fan-in's included) and its RSS, the bench's own connections to the server, and the server's
// CPU. Nothing here is a functional failure but a phase that cannot start or a write that was
// refused: undelivered writes are counted (a couchgate without parking answers 503 once its
// upstream pool is held by waiting clients: that is the figure).
#include <sys/resource.h>

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <unordered_map>

#include "replicator/server_limits.hpp"
#include "tests/bench/client.hpp"
#include "tests/bench/daemon_run.hpp"
#include "tests/bench/dataset.hpp"
#include "tests/bench/live_clients.hpp"
#include "tests/bench/live_writer.hpp"
#include "tests/bench/phases.hpp"
#include "tests/bench/probe.hpp"
#include "tests/bench/runner.hpp"
#include "tests/bench/users.hpp"

namespace couchgate::bench {

namespace {
using namespace std::chrono_literals;

// /proc/loadavg's 1, 5 and 15 minute figures (the machine may be shared).
json load_average() {
  std::ifstream f("/proc/loadavg");
  double a = 0, b = 0, c = 0;
  if (!(f >> a >> b >> c)) return nullptr;
  return json::array({a, b, c});
}

// "Max open files" soft limit of a process (-1 when unreadable).
long open_files_limit(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/limits");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("Max open files", 0) == 0) return std::atol(line.c_str() + 14);
  }
  return -1;
}

// The server's own announcement latency, the floor under any parked design: the bench reads
// a continuous `_db_updates` feed (as couchgate's follower reads one) and keeps each event's
// arrival time by database. A write's announcement is the first event of its database at or
// after the write's start (writes go to random databases among thousands: two writes to one
// database within the same second are rare). Servers without `_db_updates` (pouchdb-server):
// `supported()` is false and no figure is given.
class db_updates_watch {
 public:
  explicit db_updates_watch(steady::time_point base) : base_(base), thread_([this] { run(); }) {}
  ~db_updates_watch() { stop(); }
  db_updates_watch(const db_updates_watch&) = delete;
  db_updates_watch& operator=(const db_updates_watch&) = delete;
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  bool supported() const { return supported_.load(); }
  // The feed answered (its header arrived): announcements from now on are seen. False for a
  // server without `_db_updates` (the thread has ended).
  bool wait_open(std::chrono::seconds deadline) const {
    return poll_until([&] { return open_.load() || ended_.load(); }, deadline, 20ms) && open_.load();
  }
  int reconnects() const { return reconnects_.load(); }
  // The first event of `db` at or after `t` (ns since base), -1 when none.
  std::int64_t first_at_or_after(const std::string& db, std::int64_t t) const {
    std::lock_guard lk(mu_);
    const auto it = events_.find(db);
    if (it == events_.end()) return -1;
    const auto e = std::lower_bound(it->second.begin(), it->second.end(), t);
    return e == it->second.end() ? -1 : *e;
  }

 private:
  void run() {
    const auto ep = endpoint::server_admin();
    httplib::Client cli(ep.host, ep.port);
    if (!ep.user.empty()) cli.set_basic_auth(ep.user.c_str(), ep.password.c_str());
    cli.set_read_timeout(std::chrono::seconds(30));
    std::string pending, since = "now";
    for (int attempt = 0; !stop_; ++attempt) {
      pending.clear();
      if (attempt > 0) ++reconnects_;
      // After a break the feed resumes from the last seq seen (events replayed then arrive late:
      // `reconnects` says whether that happened).
      const auto on_response = [&](const httplib::Response& r) {
        if (r.status == 200) open_ = true;
        return true;
      };
      auto res = cli.Get("/_db_updates?feed=continuous&heartbeat=1000&since=" + since, on_response, [&](const char* data, std::size_t n) {
        const auto t = std::chrono::duration_cast<std::chrono::nanoseconds>(steady::now() - base_).count();
        pending.append(data, n);
        for (auto nl = pending.find('\n'); nl != std::string::npos; nl = pending.find('\n')) {
          const auto row = json::parse(pending.substr(0, nl), nullptr, false);
          pending.erase(0, nl + 1);
          if (!row.is_object() || !row.contains("db_name") || !row["db_name"].is_string()) continue;
          supported_ = true;
          if (row.contains("seq") && (row["seq"].is_string() || row["seq"].is_number())) since = seq_param(row["seq"]);
          std::lock_guard lk(mu_);
          events_[row["db_name"].get<std::string>()].push_back(t);  // arrival order: sorted
        }
        return !stop_.load();
      });
      if (res && res->status != 200) {  // no _db_updates on this server
        ended_ = true;
        return;
      }
      if (!stop_) std::this_thread::sleep_for(100ms);
    }
    ended_ = true;
  }

  steady::time_point base_;
  std::atomic<bool> stop_{false}, supported_{false}, open_{false}, ended_{false};
  std::atomic<int> reconnects_{0};
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::vector<std::int64_t>> events_;
  std::thread thread_;
};

struct half_setup {
  std::string name;  // "direct", "front" or "front_write_through"
  std::string host;
  int port = 0;
  bool via_front = false;
  bool writes_via_front = false;  // the writer too goes through the front door (host:port)
};

// couchgate's parked live feeds (0 when it does not report them).
double parked_feeds(daemon_run& d) {
  auto m = d.metrics();
  auto it = m.find("couchgate_front_feeds_parked");
  return it == m.end() ? 0.0 : it->second;
}

// A front half after another: the previous half's clients are gone, but couchgate notices only
// when their feeds end (a wake or their timeout). Waiting for that keeps the next half's "all
// parked" from counting them.
void wait_parked_drained(const half_setup& h, daemon_run& d, std::chrono::milliseconds longpoll_timeout) {
  if (parked_feeds(d) <= 0) return;
  if (!poll_until([&] { return parked_feeds(d) <= 0; }, longpoll_timeout + 10s, 500ms)) {
    note("live feeds (" + h.name + "): " + std::to_string(static_cast<long long>(parked_feeds(d))) +
         " feeds of the previous half still parked; going on");
  }
}

// A half after another: the previous half's clients have closed their connections, but CouchDB
// lets go of a longpoll's socket only when the feed ends (its timeout), so for up to a timeout
// the server still holds them, and the next half's server-socket peak would count them. Waits
// until the server holds no more than it did before the first half (and a margin for the
// writers and couchgate), or a timeout and a bit; the count at the start goes into out.
void wait_server_sockets_settled(const context& ctx, const half_setup& h, int idle, std::chrono::milliseconds longpoll_timeout,
                                 json& out) {
  if (idle < 0) return;
  const int margin = 64;
  int held = server_sockets(ctx.server_pid);
  const bool settled = poll_until([&] { return (held = server_sockets(ctx.server_pid)) <= idle + margin; }, longpoll_timeout + 15s, 500ms);
  out["server_sockets_at_start"] = held;
  if (!settled) {
    note("live feeds (" + h.name + "): the server still holds " + std::to_string(held) + " sockets (" + std::to_string(idle) +
         " before the first half); measuring anyway");
  }
}

// The write-through writer's sessions: one POST /_session through the front door per user that
// will be written to. Its figures go into out; "" or the first error.
std::string login_writer(context& ctx, live_writer& writer, std::size_t users, const std::vector<int>& client_of, json& out) {
  std::vector<char> seen(users, 0);
  std::vector<std::size_t> which;
  for (int k : client_of) {
    if (!seen[static_cast<std::size_t>(k)]) which.push_back(static_cast<std::size_t>(k));
    seen[static_cast<std::size_t>(k)] = 1;
  }
  const auto t0 = steady::now();
  auto e = writer.login(which, ctx.opt.threads);
  out["logins"] = writer.logins();
  out["login_seconds"] = round_to(seconds_since(t0), 1);
  return e;
}

json run_half(context& ctx, const half_setup& h, const std::vector<bench_user>& users, daemon_run& d, int half_index,
              int server_sockets_idle) {
  const int c = static_cast<int>(users.size());
  const int rate = ctx.opt.live_rate;
  const double secs = ctx.opt.live_seconds;
  const std::size_t total = static_cast<std::size_t>(std::llround(rate * secs));
  const auto longpoll_timeout = std::chrono::milliseconds(ctx.opt.smoke ? 10000 : 30000);
  json out{{"clients", c}, {"target", h.via_front ? "/me through couchgate's front door" : "/{db} at the server"}};
  if (h.writes_via_front) out["writes_through"] = "PUT /me/<id> through couchgate's front door, as the database's user (AuthSession cookie)";

  // The writes to come: database (client) and id of each, and the index of each id.
  std::mt19937 rng(static_cast<unsigned>(1234 + half_index));
  std::uniform_int_distribution<int> pick(0, c - 1);
  std::vector<int> client_of(total);
  std::vector<std::string> id_of(total);
  std::unordered_map<std::string, std::size_t> index;
  index.reserve(total * 2);
  for (std::size_t i = 0; i < total; ++i) {
    client_of[i] = pick(rng);
    id_of[i] = "live" + std::to_string(half_index) + "-" + pad(static_cast<long long>(i), 7);
    index.emplace(id_of[i], i);
  }
  std::vector<std::atomic<std::int64_t>> sent(total), arrived(total);
  for (std::size_t i = 0; i < total; ++i) sent[i] = arrived[i] = -1;
  std::atomic<std::size_t> delivered{0}, foreign{0};
  const auto base = steady::now();
  auto ns = [&](steady::time_point t) { return std::chrono::duration_cast<std::chrono::nanoseconds>(t - base).count(); };

  std::vector<live_client_spec> specs;
  for (const auto& u : users) specs.push_back({h.via_front ? std::string("/me") : db_path(u.db), basic_auth(u.name, u.password)});
  live_fleet fleet(
      h.host, h.port, std::move(specs),
      [&](std::size_t k, const std::string& id, steady::time_point t) {
        auto it = index.find(id);
        if (it == index.end()) return;
        if (client_of[it->second] != static_cast<int>(k)) {
          ++foreign;
          return;
        }
        std::int64_t expected = -1;
        if (arrived[it->second].compare_exchange_strong(expected, ns(t))) ++delivered;
      },
      1000, longpoll_timeout);

  // /proc sampling: every 50 ms reads ~C lines of /proc/net/tcp; slower for thousands.
  const auto period = std::chrono::milliseconds(c > 1000 ? 1000 : 200);
  wait_server_sockets_settled(ctx, h, server_sockets_idle, longpoll_timeout, out);
  sampler s(ctx.server_pid, period);
  s.watch(d.pid());
  if (h.via_front) wait_parked_drained(h, d, longpoll_timeout);
  const proc_usage cg0 = read_usage(d.pid());
  note("live feeds (" + h.name + "): connecting " + std::to_string(c) + " clients");
  auto t_connect = steady::now();
  fleet.start();
  const double ready_deadline = 30 + c / 100.0;
  bool all_waiting = poll_until([&] { return fleet.waiting() >= c; }, std::chrono::duration<double>(ready_deadline), 100ms);
  out["connect_seconds"] = round_to(seconds_since(t_connect), 1);
  out["clients_waiting_before_writes"] = fleet.waiting();
  if (!all_waiting) {
    note("live feeds (" + h.name + "): only " + std::to_string(fleet.waiting()) + " of " + std::to_string(c) +
         " clients got their database's update_seq within " + std::to_string(static_cast<int>(ready_deadline)) + " s; writing anyway");
  }
  // The first longpolls sent before the first write (a write before one is still delivered: its
  // since= is the update_seq read before).
  poll_until([&] { return fleet.polling() >= fleet.waiting(); }, 10s, 20ms);
  // Through the front door, a longpoll sent is not yet a longpoll parked: couchgate first checks
  // the client's credential and its database (two upstream reads each over the capped pool), so
  // after a connect burst of C clients it parks them over tens of seconds. The writes start once
  // couchgate reports them parked (or the deadline passes); the time to get there is a figure
  // of its own, and a write made before its client is parked would be delivered by that client's
  // first check, which measures the connect burst, not the delivery of a parked client's wake.
  if (h.via_front) {
    const double park_deadline = 60 + c / 50.0;
    const bool all_parked = poll_until([&] { return parked_feeds(d) >= fleet.polling(); }, std::chrono::duration<double>(park_deadline), 500ms);
    out["park_seconds"] = round_to(seconds_since(t_connect), 1);
    if (!all_parked) {
      note("live feeds (" + h.name + "): couchgate parked " + std::to_string(static_cast<long long>(parked_feeds(d))) + " of " +
           std::to_string(fleet.polling()) + " longpolls within " + std::to_string(static_cast<int>(park_deadline)) + " s; writing anyway");
    }
  }
  // Memory per waiting client: couchgate's RSS now (every client connected and waiting, parked
  // in the front half) against before the clients connected.
  const proc_usage cg_waiting = read_usage(d.pid());
  if (cg0.rss_kb > 0 && cg_waiting.rss_kb > 0) {
    out["couchgate_rss_before_clients_mb"] = round_to(static_cast<double>(cg0.rss_kb) / 1024.0, 1);
    out["couchgate_rss_clients_waiting_mb"] = round_to(static_cast<double>(cg_waiting.rss_kb) / 1024.0, 1);
    out["couchgate_bytes_per_waiting_client"] =
        std::llround(static_cast<double>(cg_waiting.rss_kb - cg0.rss_kb) * 1024.0 / std::max<std::size_t>(fleet.waiting(), 1));
  }
  auto m_waiting = d.metrics();
  if (m_waiting.count("couchgate_front_feeds_parked")) out["couchgate_feeds_parked_before_writes"] = m_waiting["couchgate_front_feeds_parked"];
  if (m_waiting.count("couchgate_front_feed_bytes_estimate")) out["couchgate_feed_bytes_estimate"] = m_waiting["couchgate_front_feed_bytes_estimate"];
  out["load_average_before_writes"] = load_average();
  auto writer = h.writes_via_front ? std::make_unique<live_writer>(users, h.host, h.port) : std::make_unique<live_writer>(users);
  if (h.writes_via_front) {
    note("live feeds (" + h.name + "): logging the writer in through the front door (POST /_session per user)");
    if (auto e = login_writer(ctx, *writer, users.size(), client_of, out); !e.empty()) {
      ctx.fail("live feeds (" + h.name + "): the writer could not log in: " + e);
      return out;
    }
  }

  note("live feeds (" + h.name + "): writing " + std::to_string(total) + " documents at " + std::to_string(rate) +
       "/s into random user databases for " + std::to_string(static_cast<int>(secs)) + " s");
  std::atomic<std::size_t> write_errors{0};
  std::string first_write_error;
  std::mutex err_mu;
  // Where a delivery's time goes: the server's own announcement (_db_updates, read by the bench
  // as couchgate reads it), and couchgate's share (its histograms, over the writes only).
  db_updates_watch announced(base);
  if (!announced.wait_open(10s)) note("live feeds (" + h.name + "): no _db_updates feed on this server: no announcement figure");
  const auto wake_before = d.histogram("couchgate_front_feed_wake_seconds");
  const auto wait_before = d.histogram("couchgate_front_upstream_wait_seconds");
  const auto turn_before = d.histogram("couchgate_front_feed_turn_wait_seconds");
  const auto read_before = d.histogram("couchgate_front_feed_read_seconds");
  std::vector<double> put_ms(total, -1);  // each index written by one writer thread only
  auto t_writes = steady::now();
  paced_for(
      total, rate, ctx.opt.threads, t_writes,
      [&](std::size_t i, bench_client& cl) {
        const auto k = static_cast<std::size_t>(client_of[i]);
        json body{{"type", "live-write"}, {"i", i}, {"text", "live feed write " + std::to_string(i)}};
        auto r = writer->put(cl, k, id_of[i], body.dump(), [&] { sent[i] = ns(steady::now()); });
        put_ms[i] = static_cast<double>(ns(steady::now()) - sent[i]) / 1e6;
        if (r.status != 201 && r.status != 202) {
          sent[i] = -1;
          ++write_errors;
          std::lock_guard lk(err_mu);
          const std::string where = writer->via_front() ? "/me/" + id_of[i] + " as " + users[k].name : users[k].db + "/" + id_of[i];
          if (first_write_error.empty()) first_write_error = where + ": " + describe(r);
        }
      },
      writer->to());
  const double write_secs = seconds_since(t_writes);
  std::size_t written = 0;
  for (std::size_t i = 0; i < total; ++i) written += sent[i] >= 0 ? 1 : 0;
  // Late deliveries: at most one longpoll timeout and a bit after the last write.
  const auto drain = longpoll_timeout + 5s;
  poll_until([&] { return delivered.load() >= written; }, drain, 50ms);
  const double window = seconds_since(t_connect);
  announced.stop();
  if (h.via_front) {
    out["couchgate_wake_to_answer_ms"] = histogram_summary(wake_before, d.histogram("couchgate_front_feed_wake_seconds"));
    out["couchgate_upstream_wait_ms"] = histogram_summary(wait_before, d.histogram("couchgate_front_upstream_wait_seconds"));
    out["couchgate_feed_turn_wait_ms"] = histogram_summary(turn_before, d.histogram("couchgate_front_feed_turn_wait_seconds"));
    out["couchgate_feed_read_ms"] = histogram_summary(read_before, d.histogram("couchgate_front_feed_read_seconds"));
  }
  out["load_average_after_writes"] = load_average();
  const proc_usage cg1 = read_usage(d.pid());
  s.stop();
  fleet.stop();

  std::vector<double> lat;
  for (std::size_t i = 0; i < total; ++i) {
    if (sent[i] >= 0 && arrived[i] >= 0) lat.push_back(std::max(0.0, static_cast<double>(arrived[i] - sent[i]) / 1e6));
  }
  const auto sum = s.result();
  out["writes"] = written;
  out["write_errors"] = write_errors.load();
  if (!first_write_error.empty()) out["first_write_error"] = first_write_error;
  out["achieved_rate"] = round_to(static_cast<double>(written) / std::max(write_secs, 1e-9), 1);
  out["delivered"] = delivered.load();
  out["missing"] = written - std::min(written, delivered.load());
  out["foreign_rows"] = foreign.load();
  out["delivery_ms"] = latency_summary(lat);
  if (h.writes_via_front) {
    std::vector<double> put_ok;
    for (std::size_t i = 0; i < total; ++i) {
      if (sent[i] >= 0) put_ok.push_back(put_ms[i]);
    }
    out["write_ms"] = latency_summary(put_ok);
    out["writer_connections"] = paced_writers(rate, ctx.opt.threads);
    out["session_renewals"] = writer->renewals();
  }
  if (announced.supported()) {
    std::vector<double> ann;
    std::size_t unseen = 0;
    for (std::size_t i = 0; i < total; ++i) {
      if (sent[i] < 0) continue;
      const auto at = announced.first_at_or_after(users[static_cast<std::size_t>(client_of[i])].db, sent[i]);
      if (at < 0) {
        ++unseen;
        continue;
      }
      ann.push_back(static_cast<double>(at - sent[i]) / 1e6);
    }
    out["server_db_updates_ms"] = latency_summary(ann);
    out["server_db_updates_unseen"] = unseen;
    out["server_db_updates_reconnects"] = announced.reconnects();
  }
  out["longpoll_answers"] = fleet.answers();
  out["transport_errors"] = fleet.transport_errors();
  json refusals = json::object();
  for (const auto& [status, count] : fleet.refusals()) refusals[std::to_string(status)] = count;
  out["refusals"] = refusals;
  if (!fleet.first_error().empty()) out["first_client_error"] = fleet.first_error();
  out["couchgate_sockets_to_server_peak"] = sum.watched_peak;
  out["bench_sockets_to_server_peak"] = sum.bench_peak;
  out["server_sockets_peak"] = sum.server_held_peak >= 0 ? json(sum.server_held_peak) : json(nullptr);
  out["couchgate_rss_peak_mb"] = sum.rss_peak_kb > 0 ? json(round_to(static_cast<double>(sum.rss_peak_kb) / 1024.0, 1)) : json(nullptr);
  out["couchgate_fds_peak"] = sum.fds_peak;
  out["sample_period_ms"] = period.count();
  out["sample_longest_wait_ms"] = round_to(sum.longest_wait_ms, 0);
  out["longpoll_timeout_ms"] = longpoll_timeout.count();
  const double cg_cpu = cg0.cpu_seconds >= 0 && cg1.cpu_seconds >= 0 ? cg1.cpu_seconds - cg0.cpu_seconds : -1;
  out["profile"] = profile(window, cg_cpu, sum.server_cpu_seconds);
  out["server_cpu_percent"] = cpu_or_null(sum);
  if (write_errors.load() > 0) ctx.fail("live feeds (" + h.name + "): " + std::to_string(write_errors.load()) + " writes failed: " + first_write_error);
  note("live feeds (" + h.name + "): " + std::to_string(delivered.load()) + " of " + std::to_string(written) + " writes delivered");
  return out;
}

}  // namespace

json run_live(context& ctx) {
  const int c = ctx.opt.live_clients;
  json out{{"clients", c}, {"rate", ctx.opt.live_rate}, {"seconds", ctx.opt.live_seconds}, {"order", json::array()}};
  if (ctx.opt.live_direct) out["order"].push_back("direct");
  if (ctx.opt.live_front && ctx.opt.live_writes_server) out["order"].push_back("front");
  if (ctx.opt.live_front && ctx.opt.live_writes_front) out["order"].push_back("front_write_through");
  if (c <= 0 || ctx.opt.live_rate <= 0 || ctx.opt.live_seconds <= 0) return out;
  {
    // What 2*C sockets need: the bench's own limit (raised at start), the server's, the ports.
    struct rlimit rl {};
    getrlimit(RLIMIT_NOFILE, &rl);
    json lim{{"bench_nofile_soft", static_cast<long long>(rl.rlim_cur)}, {"bench_nofile_hard", static_cast<long long>(rl.rlim_max)}};
    const long server_nofile = ctx.server_pid > 0 ? open_files_limit(ctx.server_pid) : -1;
    if (ctx.server_pid > 0) lim["server_nofile_soft"] = server_nofile;
    std::ifstream ports("/proc/sys/net/ipv4/ip_local_port_range"), backlog("/proc/sys/net/core/somaxconn");
    long lo = 0, hi = 0, somaxconn = 0;
    ports >> lo >> hi;
    backlog >> somaxconn;
    lim["ephemeral_ports"] = hi - lo + 1;
    lim["somaxconn"] = somaxconn;
    out["limits"] = lim;
    const long need = c + 256;
    if (static_cast<long>(rl.rlim_cur) < need || (ctx.server_pid > 0 && server_nofile < need)) {
      note("live feeds: warning: " + std::to_string(c) + " clients need about " + std::to_string(need) +
           " open files per process; limits: " + lim.dump());
    }
    // The direct half on CouchDB: besides a socket per client the server keeps up to
    // max_dbs_open shard files open (its cache; 500 when unset), each a descriptor too. More than
    // its open-files limit ends in emfile and a server that stops answering (sessions 30, 32).
    if (!ctx.pouchdb && ctx.opt.live_direct && ctx.server_pid > 0) {
      // Read as the daemon reads it (replicator/server_limits.hpp): 404 is CouchDB's default.
      const auto r = test::couch().get("/_node/_local/_config/couchdb/max_dbs_open");
      const auto max_dbs_open = r.status == 404   ? std::optional<std::uint64_t>(replicator::couchdb_default_max_dbs_open)
                                : r.status == 200 ? replicator::parse_config_uint(r.body)
                                                  : std::nullopt;
      if (r.status == 200 || r.status == 404) out["limits"]["server_max_dbs_open"] = max_dbs_open ? json(*max_dbs_open) : json(nullptr);
      const long dbs = max_dbs_open ? static_cast<long>(*max_dbs_open) : -1;
      const long server_need = need + std::min<long>(dbs, c);
      if (dbs >= 0 && server_nofile < server_need) {
        note("live feeds: warning: in the direct half the server may need " + std::to_string(server_need) +
             " descriptors (" + std::to_string(c) + " client sockets and up to max_dbs_open " + std::to_string(dbs) +
             " shard files) but may open " + std::to_string(server_nofile) + ": lower [couchdb] max_dbs_open or raise its nofile limit");
      }
    }
  }
  test::names n = ctx.fresh("bench-live");
  auto users = make_users(n.prefix, "l", c);
  note("live feeds: creating " + std::to_string(c) + " users and their databases");
  auto t_users = steady::now();
  // The databases as couchgate's provisioning makes them (provisioning.q, one shard by default):
  // CouchDB keeps the shards it opened (up to its max_dbs_open), so in the direct half the server
  // needs a descriptor per shard it keeps as well as one per client socket.
  json prov = ctx.couchgate_config(n);
  prov.merge_patch(ctx.opt.couchgate_overrides);
  const std::size_t q = couchgate_q(prov);
  out["q"] = q;
  if (auto e = create_users(ctx, users, n.role, q_query(q)); !e.empty()) {
    ctx.fail("live feeds: " + e);
    delete_users(ctx, users);
    return out;
  }
  out["setup_seconds"] = round_to(seconds_since(t_users), 1);
  std::string dir = make_temp_dir("couchgate-bench-live");
  json cfg = ctx.couchgate_config(n);
  cfg["front"] = front_door_config(dir + "/front.port", static_cast<std::size_t>(c) + 256);
  // As the README sizes it for thousands of live clients: the 16 sockets, and a session
  // cache of minutes (a changed `_users` document still ends a parked feed within a second; with
  // the 10 s default, 10 000 clients ask CouchDB ~1 000 credential checks a second, more than a
  // 2-core server answers). --couchgate-config may say otherwise.
  cfg["front"]["upstream"] = {{"max_connections", 16}};
  cfg["front"]["session_cache_ttl"] = "10m";
  cfg.merge_patch(ctx.opt.couchgate_overrides);
  ctx.created(n.central);
  ctx.created(n.state);
  out["couchgate_front_config"] = cfg["front"];
  {
    daemon_run d(ctx, cfg, "live");
    d.start();
    // The front door listens from the start; couchgate's readiness (its first reconcile over C
    // databases) is waited for, but a slow one does not stop the phase.
    const int port = d.front_port(60s);
    out["couchgate_ready"] = port > 0 && d.wait_ready(std::chrono::duration<double>(60 + c / 100.0));
    if (port > 0 && !out["couchgate_ready"].get<bool>()) note("live feeds: couchgate not ready (/readyz) yet; measuring anyway");
    if (port <= 0) {
      ctx.fail("live feeds: couchgate's front door did not start; log tail:\n" + d.log_tail(30));
    } else {
      const auto& e = test::env();
      const int idle = server_sockets(ctx.server_pid);
      out["server_sockets_idle"] = idle >= 0 ? json(idle) : json(nullptr);
      if (ctx.opt.live_direct) out["direct"] = run_half(ctx, half_setup{"direct", e.host, e.port, false}, users, d, 0, idle);
      if (ctx.opt.live_front && ctx.opt.live_writes_server && !interrupted()) {
        out["front"] = run_half(ctx, half_setup{"front", "127.0.0.1", port, true}, users, d, 1, idle);
      }
      if (ctx.opt.live_front && ctx.opt.live_writes_front && !interrupted()) {
        out["front_write_through"] = run_half(ctx, half_setup{"front_write_through", "127.0.0.1", port, true, true}, users, d, 2, idle);
      }
      auto m = d.metrics();
      out["couchgate_front_upstream_peak"] = m.count("couchgate_front_upstream_peak") ? json(m["couchgate_front_upstream_peak"]) : json(nullptr);
      out["couchgate_front_upstream_busy"] = m.count("couchgate_front_upstream_busy_total") ? json(m["couchgate_front_upstream_busy_total"]) : json(nullptr);
      // What each delivery cost CouchDB: live feeds' upstream `_changes` reads (first checks and
      // wake fetches), the first checks of re-issued longpolls skipped (issue 14), the GET
      // /_session checks and the live feeds routed by the route memo instead.
      for (const char* name : {"couchgate_front_feed_reads_total", "couchgate_front_feed_checks_skipped_total",
                               "couchgate_front_feed_wake_fetches_total", "couchgate_front_session_cache_misses_total",
                               "couchgate_front_route_cache_hits_total"}) {
        out[name] = m.count(name) ? json(m[name]) : json(nullptr);
      }
    }
    out["couchgate"] = d.stop("live feeds");
    out["couchgate"]["note"] = "over both halves; sockets_peak includes fan-in's connections";
  }
  remove_dir(dir);
  if (!ctx.opt.out.empty()) {
    // The figures are safe before the (long, at 10 000 users) cleanup: <out>.live.json.
    std::ofstream partial(ctx.opt.out + ".live.json");
    partial << out.dump(2) << "\n";
  }
  note("live feeds: cleaning up");
  delete_users(ctx, users);
  return out;
}

}  // namespace couchgate::bench
