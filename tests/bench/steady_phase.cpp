// Owns: the steady-state phase (see phases.hpp).
//
// N empty source databases exist before couchgate starts; once couchgate is ready and idle, the
// bench writes K documents per second, round-robin over the N databases, each with a unique id
// and its write time in the body. One bench thread polls the central database's _changes feed
// (normal feed, every 20 ms) and records when each document's central id first appears.
// Latency = first seen in central - start of the PUT into the source (steady clock).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <thread>
#include <unordered_map>

#include "policy/id_map.hpp"
#include "tests/bench/client.hpp"
#include "tests/bench/daemon_run.hpp"
#include "tests/bench/dataset.hpp"
#include "tests/bench/phases.hpp"

namespace couchgate::bench {

namespace {
using namespace std::chrono_literals;

double ms(std::int64_t ns) { return static_cast<double>(ns) / 1e6; }

}  // namespace

json run_steady(context& ctx, plot_data& plots) {
  const int n_dbs = ctx.opt.steady_dbs;
  const int rate = ctx.opt.rate;
  const double secs = ctx.opt.seconds;
  const std::size_t total = static_cast<std::size_t>(std::llround(rate * secs));
  json out{{"dbs", n_dbs}, {"rate", rate}, {"seconds", secs}, {"writes_planned", total}};
  if (n_dbs <= 0 || rate <= 0 || total == 0) {
    out["note"] = "nothing to do";
    return out;
  }
  test::names n = ctx.fresh("bench-steady");
  auto sources = make_sources(n.prefix, "s", n_dbs);
  std::vector<std::string> all_dbs;
  for (const auto& s : sources) all_dbs.push_back(s.db);
  all_dbs.push_back(n.central);
  all_dbs.push_back(n.state);
  auto cleanup = [&] {
    note("steady state: cleaning up");
    if (auto e = delete_dbs(ctx, all_dbs); !e.empty()) note("cleanup: " + e);
  };

  note("steady state: creating " + std::to_string(n_dbs) + " empty source databases");
  auto t_create = steady::now();
  if (auto e = parallel_for(n_dbs, ctx.opt.threads,
                            [&](int i, bench_client& c) { return create_db(ctx, c, sources[static_cast<std::size_t>(i)].db); });
      !e.empty()) {
    ctx.fail("steady state: creating the sources failed: " + e);
    cleanup();
    return out;
  }
  out["create_seconds"] = round_to(seconds_since(t_create));

  json cfg = ctx.couchgate_config(n);
  ctx.created(n.central);
  ctx.created(n.state);
  daemon_run d(ctx, cfg, "steady");
  d.start();
  if (!d.wait_ready(std::chrono::duration<double>(60 + n_dbs / 100.0))) {
    ctx.fail("steady state: couchgate not ready; log tail:\n" + d.log_tail(30));
    out.update(d.stop("steady state"));
    cleanup();
    return out;
  }
  // Every source known (reconcile), then idle: each source's first turn done, nothing dirty or
  // in flight. The first is functional; the second is couchgate taking in N empty sources, which
  // without _db_updates on a slow server takes minutes at 10000 (generous deadline).
  json last_status;
  auto fanin_status = [&]() -> const json* {
    last_status = d.status();
    if (!last_status.is_object() || !last_status.contains("fanin")) return nullptr;
    return &last_status["fanin"];
  };
  bool registered = poll_until(
      [&] {
        const json* f = fanin_status();
        return f && f->value("sources", 0) >= n_dbs;
      },
      std::chrono::duration<double>(60 + n_dbs / 100.0), 200ms);
  out["registered_after_seconds"] = round_to(d.seconds());
  bool idle = registered && poll_until(
                                [&] {
                                  const json* f = fanin_status();
                                  return f && f->value("dirty", 1) == 0 && f->value("active", 1) == 0;
                                },
                                std::chrono::duration<double>(120 + n_dbs / 10.0), 200ms);
  out["idle_after_seconds"] = round_to(d.seconds());
  if (!idle) {
    ctx.fail("steady state: couchgate did not " + std::string(registered ? "go idle" : "register all " + std::to_string(n_dbs) + " sources") +
             " in time; /status: " + last_status.dump());
    out.update(d.stop("steady state"));
    cleanup();
    return out;
  }
  out["detection"] = last_status["fanin"].value("detection", "");

  // Idle cost: CPU over a quiet window.
  const double idle_window = ctx.opt.smoke ? 1.0 : 3.0;
  proc_usage u0 = read_usage(d.pid());
  std::this_thread::sleep_for(std::chrono::duration<double>(idle_window));
  proc_usage u1 = read_usage(d.pid());
  out["idle_cpu_percent"] = u0.cpu_seconds >= 0 && u1.cpu_seconds >= 0 ? json(round_to((u1.cpu_seconds - u0.cpu_seconds) / idle_window * 100, 1)) : json(nullptr);

  // The writes to come, and where each one lands in the central database.
  std::vector<std::string> db_of(total), id_of(total);
  std::unordered_map<std::string, std::size_t> index;
  index.reserve(total * 2);
  for (std::size_t i = 0; i < total; ++i) {
    const auto& s = sources[i % sources.size()];
    db_of[i] = s.db;
    id_of[i] = "w" + pad(static_cast<long long>(i), 7);
    auto cid = policy::to_central_id(policy::id_mode::namespaced, policy::owner{policy::owner::kind::user, s.user}, id_of[i]);
    index.emplace(cid.value_or(id_of[i]), i);
  }
  std::vector<std::atomic<std::int64_t>> sent(total), acked(total), arrived(total);
  for (std::size_t i = 0; i < total; ++i) sent[i] = acked[i] = arrived[i] = -1;

  bench_client pc(60s);
  json since = 0;
  if (auto info = pc.get(db_path(n.central)); info.status == 200 && info.body.contains("update_seq")) since = info.body["update_seq"];
  const auto base = steady::now();
  auto now_ns = [&] { return std::chrono::duration_cast<std::chrono::nanoseconds>(steady::now() - base).count(); };
  std::atomic<bool> stop_poll{false};
  std::atomic<std::size_t> seen{0};
  std::atomic<std::int64_t> last_arrival{0};
  std::atomic<int> poll_errors{0};
  std::thread poller([&] {
    while (!stop_poll.load()) {
      auto r = pc.get(db_path(n.central) + "/_changes?limit=10000&since=" + seq_param(since));
      auto t = now_ns();
      if (r.status != 200 || !r.body.contains("results")) {
        ++poll_errors;
        std::this_thread::sleep_for(100ms);
        continue;
      }
      for (const auto& row : r.body["results"]) {
        if (!row.is_object() || !row.contains("id") || !row["id"].is_string()) continue;
        auto it = index.find(row["id"].get<std::string>());
        if (it == index.end()) continue;
        std::int64_t expected = -1;
        if (arrived[it->second].compare_exchange_strong(expected, t)) {
          ++seen;
          last_arrival = t;
        }
      }
      if (r.body.contains("last_seq") && !r.body["last_seq"].is_null()) since = r.body["last_seq"];
      if (r.body["results"].empty()) std::this_thread::sleep_for(20ms);
    }
  });

  note("steady state: writing " + std::to_string(total) + " documents at " + std::to_string(rate) + "/s over " +
       std::to_string(n_dbs) + " databases");
  proc_usage w0 = read_usage(d.pid()), s0 = read_usage(ctx.server_pid);
  auto t_writes = steady::now();
  std::atomic<std::size_t> write_errors{0};
  std::string first_write_error;
  std::mutex err_mu;
  paced_for(total, rate, ctx.opt.threads, t_writes, [&](std::size_t i, bench_client& c) {
    auto wall = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    json body{{"t_write_ms", wall}, {"i", i}, {"type", "bench-write"}, {"text", "steady-state write " + std::to_string(i)}};
    sent[i] = now_ns();
    auto r = c.put(db_path(db_of[i]) + "/" + test::enc(id_of[i]), body.dump());
    if (r.status == 201 || r.status == 202) {
      acked[i] = now_ns();
    } else {
      ++write_errors;
      std::lock_guard lk(err_mu);
      if (first_write_error.empty()) first_write_error = db_of[i] + "/" + id_of[i] + ": " + describe(r);
    }
  });
  double write_secs = seconds_since(t_writes);
  std::size_t written = 0;
  for (std::size_t i = 0; i < total; ++i) written += acked[i] >= 0 ? 1 : 0;
  // Waiting for the last arrivals. A document not there yet is either late (couchgate is behind:
  // documents still arrive) or lost (nothing arrived for a long while): only the second is a
  // failure. "A long while" covers a full sweep over every database when there is no _db_updates.
  const double sweep_rate = cfg["fanin"].value("sweep_rate", 200.0);
  const double stall_window =
      out.value("detection", "") == "sweep" ? std::max(60.0, 2.0 * n_dbs / std::max(sweep_rate, 1.0)) : 60.0;
  const double drain = std::max((ctx.opt.smoke ? 30 : 60) + n_dbs / 50.0, stall_window + 30);
  const std::int64_t writes_end = now_ns();
  auto quiet_seconds = [&] { return static_cast<double>(now_ns() - std::max(last_arrival.load(), writes_end)) / 1e9; };
  poll_until([&] { return seen.load() >= written || quiet_seconds() >= stall_window; }, std::chrono::duration<double>(drain), 20ms);
  const bool stalled = seen.load() < written && quiet_seconds() >= stall_window;
  double window = seconds_since(t_writes);
  proc_usage w1 = read_usage(d.pid()), s1 = read_usage(ctx.server_pid);
  stop_poll.store(true);
  poller.join();

  std::vector<double> lat, write_lat;
  std::size_t missing = 0;
  for (std::size_t i = 0; i < total; ++i) {
    if (acked[i] < 0) continue;
    write_lat.push_back(ms(acked[i] - sent[i]));
    if (arrived[i] < 0) {
      ++missing;
      continue;
    }
    lat.push_back(std::max(0.0, ms(arrived[i] - sent[i])));
  }
  plots.latencies_ms = lat;
  out["writes_ok"] = written;
  out["write_errors"] = write_errors.load();
  if (!first_write_error.empty()) out["first_write_error"] = first_write_error;
  out["achieved_rate"] = round_to(static_cast<double>(written) / std::max(write_secs, 1e-9), 1);
  out["latency_ms"] = latency_summary(lat);
  out["write_ack_ms"] = latency_summary(write_lat);
  out["missing"] = missing;
  out["drain_deadline_seconds"] = drain;
  out["poll_interval_ms"] = 20;
  out["poll_errors"] = poll_errors.load();
  out["cpu_percent"] = w0.cpu_seconds >= 0 && w1.cpu_seconds >= 0 ? json(round_to((w1.cpu_seconds - w0.cpu_seconds) / window * 100, 1)) : json(nullptr);
  out["cpu_window_seconds"] = round_to(window, 1);
  out["server_cpu_percent_window"] = s0.cpu_seconds >= 0 && s1.cpu_seconds >= 0 ? json(round_to((s1.cpu_seconds - s0.cpu_seconds) / window * 100, 1)) : json(nullptr);
  auto m = d.metrics();
  if (m.count("couchgate_replication_lag_p99_seconds")) out["couchgate_reported_lag_p99_s"] = round_to(m["couchgate_replication_lag_p99_seconds"]);
  out.update(d.stop("steady state"));
  if (write_errors.load() > 0) note("steady state: " + std::to_string(write_errors.load()) + " writes failed: " + first_write_error);
  out["stall_window_seconds"] = round_to(stall_window, 1);
  if (missing > 0 && stalled) {
    ctx.fail("steady state: " + std::to_string(missing) + " of " + std::to_string(written) +
             " written documents never reached the central database, and none arrived in the last " +
             std::to_string(static_cast<int>(stall_window)) + " s");
  } else if (missing > 0) {
    out["behind_at_deadline"] = true;
    note("steady state: " + std::to_string(missing) + " documents had not arrived when the " + std::to_string(static_cast<int>(drain)) +
         " s drain deadline passed, but documents were still arriving: couchgate is behind (a timing, not a failure)");
  }
  cleanup();
  return out;
}

}  // namespace couchgate::bench
