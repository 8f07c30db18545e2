// Owns: targets, the stdout table and the plots (see report.hpp).
#include "tests/bench/report.hpp"

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <vector>

namespace couchgate::bench {

namespace {

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

// A number at path (e.g. {"couchgate","docs_per_s"}), or -1 when absent or not a number.
double num(const json& j, std::initializer_list<const char*> path) {
  const json* cur = &j;
  for (const char* k : path) {
    if (!cur->is_object() || !cur->contains(k)) return -1;
    cur = &(*cur)[k];
  }
  return cur->is_number() ? cur->get<double>() : -1;
}

std::string cell(double v, const char* f = "%.2f") { return v < 0 ? std::string("-") : fmt(f, v); }

// The provisioning ceiling couchgate's rate is judged against: the mean of the one measured
// before its run and the one after (the server's pace drifts within minutes), or the one there is.
double provisioning_ceiling(const json& p) {
  const double before = num(p, {"ceiling", "users_per_s"}), after = num(p, {"ceiling_after", "users_per_s"});
  if (before > 0 && after > 0) return (before + after) / 2;
  return before > 0 ? before : after;
}

json target(const std::string& what, const std::string& measured, json met, const std::string& note_text = {}) {
  json t{{"target", what}, {"measured", measured}, {"met", met}};
  if (!note_text.empty()) t["note"] = note_text;
  return t;
}

// The targets of issues #18 (floor, restore ceiling), #13 (front door) and #14 (live feeds).
void judge_client_targets(const json& results, json& out) {
  const json fanin = results.value("fanin", json::array());
  const json* at = nullptr;
  for (const auto& f : fanin) {
    if (f.value("size", "") == "1000x20") at = &f;
  }
  {
    std::string what = "fan-in >= 90% of the floor (ceiling + one _changes per source) at 1000x20 (issue #18)";
    double r = at ? num(*at, {"ratio_couchgate_to_floor"}) : -1;
    if (!at) out.push_back(target(what, "size 1000x20 not run", nullptr));
    else if (r < 0) out.push_back(target(what, "no floor measured", nullptr));
    else out.push_back(target(what, fmt("%.0f%% of the floor (%.2f s against %.2f s)", r * 100, num(*at, {"couchgate", "seconds"}),
                                        num(*at, {"floor", "seconds"})), r >= 0.9));
  }
  {
    std::string what = "restore >= 80% of the restore ceiling at 1000x20 (issue #18)";
    double r = at ? num(*at, {"ratio_restore_to_ceiling"}) : -1;
    if (!at) out.push_back(target(what, "size 1000x20 not run", nullptr));
    else if (r < 0) out.push_back(target(what, "not measured", nullptr));
    else {
      std::string m = fmt("%.0f%% (%.0f against %.0f docs/s%s)", r * 100, num(*at, {"restore", "docs_per_s"}),
                          num(*at, {"restore_ceiling_docs_per_s"}),
                          at->contains("restore_ceiling_before") ? ", the mean of the ceiling before and after the restore" : "");
      if (num(*at, {"ratio_restore_to_floor"}) > 0)
        m += fmt("; %.0f%% of the restore floor (the ceiling + a _security per database + reading central)",
                 100 * num(*at, {"ratio_restore_to_floor"}));
      out.push_back(target(what, m, r >= 0.8));
    }
  }
  {
    std::string what = "front door: <= 10% throughput loss and <= 2 ms added p50 (issue #13)";
    const json& f = results.value("front", json::object());
    double loss = num(f, {"throughput_loss_percent"}), p50 = num(f, {"added_latency_ms", "p50"});
    bool have_p50 = f.contains("added_latency_ms") && f["added_latency_ms"].contains("p50") && f["added_latency_ms"]["p50"].is_number();
    if (!f.contains("throughput_loss_percent") || !f["throughput_loss_percent"].is_number() || !have_p50) {
      out.push_back(target(what, "not measured", nullptr));
    } else {
      p50 = f["added_latency_ms"]["p50"].get<double>();
      loss = f["throughput_loss_percent"].get<double>();
      out.push_back(target(what, fmt("%.1f%% throughput loss, %+.2f ms p50, %+.2f ms p99 (%.0f clients)", loss, p50,
                                     num(f, {"added_latency_ms", "p99"}), num(f, {"users"})),
                           loss <= 10 && p50 <= 2));
    }
  }
  {
    std::string what = "live feeds: 10000 clients, 100 writes/s, 600 s: couchgate <= 16 sockets, <= 200 MB RSS, p99 <= 1 s (issue #14)";
    const json& l = results.value("live", json::object());
    if (!l.contains("front")) {
      out.push_back(target(what, "not measured", nullptr));
    } else {
      const json& f = l["front"];
      // The clients' sockets are the front pool's (its own peak, from couchgate's metrics); the
      // total to the server adds the fan-in's pool (fanin.max_connections), said beside it.
      const double all_sockets = num(f, {"couchgate_sockets_to_server_peak"});
      const double front_pool = num(l, {"couchgate_front_upstream_peak"});
      double sockets = front_pool >= 0 ? front_pool : all_sockets, rss = num(l, {"couchgate", "rss_peak_mb"});
      double p99 = num(f, {"delivery_ms", "p99"});
      std::string m = fmt("%.0f clients waiting of %.0f, %.0f front-pool sockets (%.0f with fan-in's), %.1f MB, p99 %s ms, "
                          "%.0f of %.0f writes delivered",
                          num(f, {"clients_waiting_before_writes"}), num(l, {"clients"}), sockets, all_sockets, rss,
                          cell(p99, "%.0f").c_str(), num(f, {"delivered"}), num(f, {"writes"}));
      bool met = sockets >= 0 && sockets <= 16 && rss >= 0 && rss <= 200 && p99 >= 0 && p99 <= 1000 && num(f, {"missing"}) == 0;
      if (num(l, {"clients"}) >= 10000 && num(l, {"seconds"}) >= 600 && num(l, {"rate"}) >= 100) out.push_back(target(what, m, met));
      else out.push_back(target(what, m, nullptr, "measured below the target's size: --live-clients 10000 --live-seconds 600"));
    }
  }
}

// The client phases' part of the table.
std::string client_tables(const json& results) {
  std::string o;
  if (results.contains("front") && results["front"].contains("front")) {
    const json& f = results["front"];
    o += fmt("\nFRONT DOOR  %.0f clients, each pushing and pulling %.0f documents per segment (batches of %.0f), "
             "segments direct, front, front, direct, %.0f round(s)\n",
             num(f, {"users"}), num(f, {"docs_per_user_per_segment"}), num(f, {"batch"}), num(f, {"rounds"}));
    o += fmt("%-8s %9s %9s %9s %9s %9s %9s %9s %7s\n", "side", "seconds", "requests", "req/s", "docs/s", "p50 ms", "p99 ms",
             "srv CPU s", "errors");
    for (const char* side : {"direct", "front"}) {
      const json& x = f[side];
      o += fmt("%-8s %9s %9s %9s %9s %9s %9s %9s %7s\n", side, cell(num(x, {"seconds"})).c_str(),
               cell(num(x, {"requests"}), "%.0f").c_str(), cell(num(x, {"requests_per_s"}), "%.0f").c_str(),
               cell(num(x, {"docs_per_s"}), "%.0f").c_str(), cell(num(x, {"latency_ms", "p50"})).c_str(),
               cell(num(x, {"latency_ms", "p99"})).c_str(), cell(num(x, {"server_cpu_seconds"})).c_str(),
               cell(num(x, {"errors"}), "%.0f").c_str());
    }
    o += fmt("  front/direct throughput %s (loss %s%%); added latency ms p50 %s p95 %s p99 %s; couchgate sockets %s, CPU %s s, "
             "RSS %s MB\n",
             cell(num(f, {"throughput_ratio"})).c_str(),
             f.value("throughput_loss_percent", json(nullptr)).dump().c_str(),
             f["added_latency_ms"].value("p50", json(nullptr)).dump().c_str(), f["added_latency_ms"].value("p95", json(nullptr)).dump().c_str(),
             f["added_latency_ms"].value("p99", json(nullptr)).dump().c_str(), cell(num(f, {"couchgate", "sockets_peak"}), "%.0f").c_str(),
             cell(num(f, {"couchgate", "cpu_seconds"})).c_str(), cell(num(f, {"couchgate", "rss_peak_mb"}), "%.1f").c_str());
    if (f.contains("by_round") && f["by_round"].is_array() && f["by_round"].size() > 1) {
      o += "  by round (loss %, added p50 ms):";
      for (const auto& r : f["by_round"]) {
        o += fmt(" %s/%s", r.value("throughput_loss_percent", json(nullptr)).dump().c_str(),
                 r.value("added_p50_ms", json(nullptr)).dump().c_str());
      }
      o += fmt("; median %s/%s\n", f["round_median"].value("throughput_loss_percent", json(nullptr)).dump().c_str(),
               f["round_median"].value("added_p50_ms", json(nullptr)).dump().c_str());
    }
    o += fmt("  couchgate CPU per front request: %s ms\n", cell(num(f, {"couchgate", "cpu_ms_per_front_request"}), "%.3f").c_str());
  }
  const char* const live_halves[] = {"direct", "front", "front_write_through"};
  const auto has_live_half = [&](const json& l) {
    return std::any_of(std::begin(live_halves), std::end(live_halves), [&](const char* h) { return l.contains(h); });
  };
  if (results.contains("live") && has_live_half(results["live"])) {
    const json& l = results["live"];
    const bool write_through = l.contains("front_write_through");
    o += fmt("\nLIVE FEEDS  %.0f longpoll clients (one per user database), %.0f writes/s for %.0f s per half into random "
             "databases, directly on the server%s\n",
             num(l, {"clients"}), num(l, {"rate"}), num(l, {"seconds"}),
             write_through ? " (front_write_through: through couchgate's front door)" : "");
    const int w = write_through ? 19 : 7;  // the half's name
    o += fmt("%-*s %8s %9s %9s %8s %8s %8s %8s %8s %8s %8s %9s %8s\n", w, "half", "waiting", "writes", "delivered", "p50 ms", "p99 ms",
             "max ms", "srv sock", "cg sock", "cg RSS", "bench", "refusals", "errors");
    for (const char* side : live_halves) {
      if (!l.contains(side)) continue;
      const json& x = l[side];
      double refused = 0;
      const json refs = x.contains("refusals") && x["refusals"].is_object() ? x["refusals"] : json::object();
      for (const auto& item : refs.items()) refused += item.value().get<double>();
      o += fmt("%-*s %8s %9s %9s %8s %8s %8s %8s %8s %8s %8s %9.0f %8s\n", w, side,
               cell(num(x, {"clients_waiting_before_writes"}), "%.0f").c_str(), cell(num(x, {"writes"}), "%.0f").c_str(),
               cell(num(x, {"delivered"}), "%.0f").c_str(), cell(num(x, {"delivery_ms", "p50"}), "%.0f").c_str(),
               cell(num(x, {"delivery_ms", "p99"}), "%.0f").c_str(), cell(num(x, {"delivery_ms", "max"}), "%.0f").c_str(),
               cell(num(x, {"server_sockets_peak"}), "%.0f").c_str(), cell(num(x, {"couchgate_sockets_to_server_peak"}), "%.0f").c_str(),
               cell(num(x, {"couchgate_rss_peak_mb"}), "%.1f").c_str(), cell(num(x, {"bench_sockets_to_server_peak"}), "%.0f").c_str(),
               refused, cell(num(x, {"transport_errors"}), "%.0f").c_str());
    }
    o += "  srv sock = sockets the server process held (its listener and every connection to it; needs its pid);\n"
         "  cg sock = couchgate's established connections to the server (fan-in's included); bench = the bench's own\n"
         "  (clients in the direct half, plus the writers' when they write to the server).\n";
    for (const char* side : {"front", "front_write_through"}) {
      if (!l.contains(side)) continue;
      const json& f = l[side];
      o += fmt("  %s: front pool peak %s sockets (couchgate_front_upstream_peak, over the run); couchgate RSS %s MB before the clients, "
               "%s MB with them parked: %s bytes per parked client; load average %s before the writes, %s after\n",
               side, cell(num(l, {"couchgate_front_upstream_peak"}), "%.0f").c_str(),
               cell(num(f, {"couchgate_rss_before_clients_mb"}), "%.1f").c_str(),
               cell(num(f, {"couchgate_rss_clients_waiting_mb"}), "%.1f").c_str(),
               cell(num(f, {"couchgate_bytes_per_waiting_client"}), "%.0f").c_str(),
               f.value("load_average_before_writes", json(nullptr)).dump().c_str(),
               f.value("load_average_after_writes", json(nullptr)).dump().c_str());
    }
    if (write_through) {
      const json& f = l["front_write_through"];
      o += fmt("  front_write_through: each write PUT /me/<id> through the front door as the database's user (AuthSession "
               "cookie): %s logins in %s s, %s renewed, %s writer connections; write round trip ms p50 %s p99 %s max %s\n",
               cell(num(f, {"logins"}), "%.0f").c_str(), cell(num(f, {"login_seconds"}), "%.1f").c_str(),
               cell(num(f, {"session_renewals"}), "%.0f").c_str(), cell(num(f, {"writer_connections"}), "%.0f").c_str(),
               cell(num(f, {"write_ms", "p50"}), "%.1f").c_str(), cell(num(f, {"write_ms", "p99"}), "%.1f").c_str(),
               cell(num(f, {"write_ms", "max"}), "%.1f").c_str());
    }
  }
  return o;
}

}  // namespace

json judge_targets(const json& results) {
  json out = json::array();
  const json& env = results.value("environment", json::object());
  const int max_conn = env.value("max_connections", 8);
  const json fanin = results.value("fanin", json::array());

  {
    std::string what = "fan-in >= 60% of the ingest ceiling at 1000x20 with <= max_connections (" + std::to_string(max_conn) + ") sockets";
    const json* at = nullptr;
    for (const auto& f : fanin) {
      if (f.value("size", "") == "1000x20") at = &f;
    }
    if (!at) {
      out.push_back(target(what, "size 1000x20 not run", nullptr));
    } else {
      double ratio = num(*at, {"ratio_couchgate_to_ceiling"});
      double sockets = num(*at, {"couchgate", "sockets_peak"});
      if (ratio < 0) {
        out.push_back(target(what, "no ratio (ceiling or couchgate missing)", nullptr));
      } else {
        out.push_back(target(what, fmt("%.0f%% of the ceiling, %.0f sockets", ratio * 100, sockets),
                             ratio >= 0.6 && sockets >= 0 && sockets <= max_conn));
      }
    }
  }
  {
    std::string what = "p99 write-to-central <= 1 s at 10000 dbs and 100 writes/s";
    const json& s = results.value("steady", json::object());
    double p99 = num(s, {"latency_ms", "p99"});
    double dbs = num(s, {"dbs"}), rate = num(s, {"rate"}), missing = num(s, {"missing"});
    if (p99 < 0) {
      out.push_back(target(what, "steady state not measured", nullptr));
    } else {
      std::string m = fmt("p99 %.0f ms (%.0f not arrived by the deadline) at %.0f dbs, %.0f writes/s", p99, missing, dbs, rate);
      if (dbs >= 10000 && rate >= 100) out.push_back(target(what, m, p99 <= 1000 && missing == 0));
      else out.push_back(target(what, m, nullptr, "measured below the target's size: run --steady-dbs 10000 --rate 100"));
    }
  }
  {
    std::string what = "couchgate RSS <= 64 MB at 10000 dbs";
    double worst = -1, worst_dbs = 0, any = -1, any_dbs = 0;
    auto consider = [&](double rss, double dbs) {
      if (rss < 0) return;
      if (dbs >= 10000 && rss > worst) {
        worst = rss;
        worst_dbs = dbs;
      }
      if (rss > any) {
        any = rss;
        any_dbs = dbs;
      }
    };
    for (const auto& f : fanin) consider(num(f, {"couchgate", "rss_peak_mb"}), num(f, {"dbs"}));
    const json& s = results.value("steady", json::object());
    consider(num(s, {"rss_peak_mb"}), num(s, {"dbs"}));
    if (worst >= 0) out.push_back(target(what, fmt("%.1f MB peak at %.0f dbs", worst, worst_dbs), worst <= 64));
    else if (any >= 0)
      out.push_back(target(what, fmt("%.1f MB peak at %.0f dbs", any, any_dbs), nullptr,
                           "measured below the target's size: run --steady-dbs 10000 or --sizes 10000x10"));
    else out.push_back(target(what, "not measured", nullptr));
  }
  {
    std::string what = "provisioning >= 200 users/s";
    const json& p = results.value("provisioning", json::object());
    double ups = num(p, {"users_per_s"});
    if (ups < 0 || num(p, {"rate"}) > 0) out.push_back(target(what, "not measured (users created at a set rate)", nullptr));
    else {
      double users = num(p, {"users"});
      std::string m = fmt("%.1f users/s (%.0f users)", ups, users);
      // A burst of a few users measures the latency of one pass, not a rate.
      if (users >= 1000) out.push_back(target(what, m, ups >= 200));
      else out.push_back(target(what, m, nullptr, "too few users for a rate: run --users 1000 or more"));
    }
  }
  {
    std::string what = "provisioning >= 90% of the provisioning ceiling (issue #18)";
    const json& p = results.value("provisioning", json::object());
    double ups = num(p, {"users_per_s"}), ceil = provisioning_ceiling(p);
    if (num(p, {"rate"}) > 0) out.push_back(target(what, "not measured (users created at a set rate)", nullptr));
    else if (ups < 0 || ceil <= 0) out.push_back(target(what, "not measured", nullptr));
    else {
      std::string m = fmt("%.0f%% (%.1f of %.1f users/s", 100 * ups / ceil, ups, ceil);
      if (num(p, {"ceiling_after", "users_per_s"}) > 0 && num(p, {"ceiling", "users_per_s"}) > 0)
        m += fmt(", the mean of the ceiling before (%.1f) and after (%.1f) couchgate's run", num(p, {"ceiling", "users_per_s"}),
                 num(p, {"ceiling_after", "users_per_s"}));
      if (p.value("backlog", false)) m += "; the users written before couchgate started, timed from its start";
      if (num(p, {"ceiling_with_users", "users_per_s"}) > 0)
        m += fmt("; %.0f%% of the ceiling with the user documents", 100 * ups / num(p, {"ceiling_with_users", "users_per_s"}));
      m += ")";
      out.push_back(target(what, m, ups >= 0.9 * ceil));
    }
  }
  {
    std::string what = "provisioning p99 <= 250 ms at 100 new users/s (issue #18)";
    const json& p = results.value("provisioning", json::object());
    double rate = num(p, {"rate"}), p99 = num(p, {"latency_ms", "p99"});
    if (rate <= 0 || p99 < 0) out.push_back(target(what, "not measured: run --provision-rate 100", nullptr));
    else if (rate < 100) out.push_back(target(what, fmt("p99 %.0f ms at %.0f users/s", p99, rate), nullptr, "below the target's rate"));
    else {
      std::string m = fmt("p99 %.0f ms at %.0f users/s (achieved %.1f)", p99, rate, num(p, {"achieved_rate"}));
      if (num(p, {"ceiling_with_users", "latency_ms", "p99"}) >= 0)
        m += fmt("; the server's own (the bench provisioning them itself at the same rate) p99 %.0f ms",
                 num(p, {"ceiling_with_users", "latency_ms", "p99"}));
      out.push_back(target(what, m, p99 <= 250));
    }
  }
  judge_client_targets(results, out);
  return out;
}

void print_table(const json& results) {
  std::string o;
  const json& b = results.value("bench", json::object());
  const json& env = results.value("environment", json::object());
  o += fmt("\ncouchgate benchmark  %s  (%s)\n", b.value("date", "").c_str(), b.value("mode", "").c_str());
  o += fmt("server:    %s at %s\n", env.value("server", "").c_str(), env.value("server_url", "").c_str());
  o += fmt("couchgate: %s (binary built %s), max_connections %d\n", env.value("couchgate_version", "").c_str(),
           env.value("couchgate_binary_built", "?").c_str(), env.value("max_connections", 0));
  o += fmt("machine:   %s; load average before the run %.2f\n", env.value("machine_summary", "").c_str(),
           env.value("loadavg_1m_at_start", -1.0));

  const json fanin = results.value("fanin", json::array());
  if (!fanin.empty()) {
    o += "\nFAN-IN  catch-up: sources written before couchgate starts; time from couchgate's fork until the central\n"
         "        database holds every document. sockets = peak established connections to the server.\n"
         "        ceil s = the ingest ceiling before couchgate's run; %ceil, %floor and the floors use the mean of it and\n"
         "        the same measured after couchgate's run (ceiling_after, floor_changes*_after in the JSON) when there is one\n";
    o += fmt("%-10s %8s | %8s %8s | %8s %8s %6s %7s %7s %5s | %8s %8s %7s %7s\n", "size", "docs", "ceil s", "docs/s",
             "cg s", "docs/s", "%ceil", "sockets", "RSS MB", "fds", "builtin", "docs/s", "sockets", "cg/bi");
    for (const auto& f : fanin) {
      std::string bi_s = "-";
      if (f.contains("builtin")) {
        const json& bi = f["builtin"];
        if (!bi.value("available", false)) bi_s = "n/a";
        else if (bi.value("timed_out", false)) bi_s = ">" + cell(num(bi, {"timeout_seconds"}), "%.0f");
        else bi_s = cell(num(bi, {"seconds"}));
      }
      double ratio = num(f, {"ratio_couchgate_to_ceiling"});
      o += fmt("%-10s %8.0f | %8s %8s | %8s %8s %6s %7s %7s %5s | %8s %8s %7s %7s\n", f.value("size", "").c_str(),
               num(f, {"docs_total"}), cell(num(f, {"ceiling", "seconds"})).c_str(),
               cell(num(f, {"ceiling", "docs_per_s"}), "%.0f").c_str(), cell(num(f, {"couchgate", "seconds"})).c_str(),
               cell(num(f, {"couchgate", "docs_per_s"}), "%.0f").c_str(), ratio < 0 ? "-" : fmt("%.0f%%", ratio * 100).c_str(),
               cell(num(f, {"couchgate", "sockets_peak"}), "%.0f").c_str(), cell(num(f, {"couchgate", "rss_peak_mb"}), "%.1f").c_str(),
               cell(num(f, {"couchgate", "fds_peak"}), "%.0f").c_str(), bi_s.c_str(),
               cell(num(f, {"builtin", "docs_per_s"}), "%.0f").c_str(), cell(num(f, {"builtin", "sockets_peak"}), "%.0f").c_str(),
               cell(num(f, {"ratio_couchgate_to_builtin"}), "%.2fx").c_str());
    }
    o += "\nFLOOR (issue #18)  floor = ceiling + one _changes?style=all_docs&since=0 per source over max_connections;\n"
         "        +bodies = the same _changes with include_docs=true (the cheapest read of the bodies a replicator needs);\n"
         "        requests = couchgate's to the server from its start to its stop; CPU s = couchgate / server over that window;\n"
         "        floor srv = the server's CPU s for the floor's requests (ceiling + _changes), +bodies likewise\n";
    o += fmt("%-10s %9s %9s %7s %9s %7s %9s %9s %9s %9s %9s %9s %9s\n", "size", "changes s", "floor s", "%floor", "+bodies s",
             "%fl+b", "req/doc", "req/src", "cg CPU s", "srv CPU s", "floor srv", "+b srv", "waiting s");
    for (const auto& f : fanin) {
      double r = num(f, {"ratio_couchgate_to_floor"});
      double rb = num(f, {"ratio_couchgate_to_floor_with_bodies"});
      o += fmt("%-10s %9s %9s %7s %9s %7s %9s %9s %9s %9s %9s %9s %9s\n", f.value("size", "").c_str(),
               cell(num(f, {"floor_changes", "seconds"})).c_str(), cell(num(f, {"floor", "seconds"})).c_str(),
               r < 0 ? "-" : fmt("%.0f%%", r * 100).c_str(), cell(num(f, {"floor_with_bodies", "seconds"})).c_str(),
               rb < 0 ? "-" : fmt("%.0f%%", rb * 100).c_str(),
               cell(num(f, {"couchgate", "requests_per_doc"}), "%.3f").c_str(), cell(num(f, {"couchgate", "requests_per_source"})).c_str(),
               cell(num(f, {"couchgate", "profile", "couchgate_cpu_seconds"})).c_str(),
               cell(num(f, {"couchgate", "profile", "server_cpu_seconds"})).c_str(),
               cell(num(f, {"floor", "server_cpu_seconds"})).c_str(), cell(num(f, {"floor_with_bodies", "server_cpu_seconds"})).c_str(),
               cell(num(f, {"couchgate", "profile", "waiting_seconds"})).c_str());
    }
    bool any_restore = false;
    for (const auto& f : fanin) any_restore = any_restore || f.contains("restore");
    if (any_restore) {
      o += "\nRESTORE  `couchgate restore --all` into the deleted sources (wall time of the command)\n";
      o += "        ceil d/s = the restore ceiling (the mean of before and after the restore); floor = it + a _security per\n"
           "        database + central's _changes with the bodies (restore_security, restore_central_read)\n";
      o += fmt("%-10s %10s %9s %9s %8s %9s %9s %6s %9s %6s\n", "size", "revisions", "seconds", "docs/s", "sockets", "verified", "ceil d/s",
               "%ceil", "floor d/s", "%floor");
      for (const auto& f : fanin) {
        if (!f.contains("restore")) continue;
        const json& r = f["restore"];
        double rr = num(f, {"ratio_restore_to_ceiling"});
        const double rf = num(f, {"ratio_restore_to_floor"});
        o += fmt("%-10s %10s %9s %9s %8s %9s %9s %6s %9s %6s\n", f.value("size", "").c_str(), cell(num(r, {"revisions_written"}), "%.0f").c_str(),
                 cell(num(r, {"seconds"})).c_str(), cell(num(r, {"docs_per_s"}), "%.0f").c_str(),
                 cell(num(r, {"sockets_peak"}), "%.0f").c_str(), r.value("verified", false) ? "yes" : "NO",
                 cell(num(f, {"restore_ceiling_docs_per_s"}), "%.0f").c_str(), rr < 0 ? "-" : fmt("%.0f%%", rr * 100).c_str(),
                 cell(num(f, {"restore_floor", "docs_per_s"}), "%.0f").c_str(), rf < 0 ? "-" : fmt("%.0f%%", rf * 100).c_str());
      }
    }
  }
  if (results.contains("steady")) {
    const json& s = results["steady"];
    o += fmt("\nSTEADY STATE  %.0f writes/s over %.0f dbs for %.0f s (detection: %s)\n", num(s, {"rate"}), num(s, {"dbs"}),
             num(s, {"seconds"}), s.value("detection", "?").c_str());
    o += fmt("  write-to-central ms: p50 %s  p95 %s  p99 %s  max %s   arrived %s, not arrived by the deadline %s (achieved %s writes/s)\n",
             cell(num(s, {"latency_ms", "p50"}), "%.0f").c_str(), cell(num(s, {"latency_ms", "p95"}), "%.0f").c_str(),
             cell(num(s, {"latency_ms", "p99"}), "%.0f").c_str(), cell(num(s, {"latency_ms", "max"}), "%.0f").c_str(),
             cell(num(s, {"latency_ms", "count"}), "%.0f").c_str(), cell(num(s, {"missing"}), "%.0f").c_str(),
             cell(num(s, {"achieved_rate"}), "%.1f").c_str());
    o += fmt("  before the writes: all sources registered after %s s, first turns done (idle) after %s s\n",
             cell(num(s, {"registered_after_seconds"}), "%.1f").c_str(), cell(num(s, {"idle_after_seconds"}), "%.1f").c_str());
    o += fmt("  couchgate: sockets %s, CPU %s%% (idle %s%%), RSS %s MB, fds %s;  source write ack ms p50 %s p99 %s\n",
             cell(num(s, {"sockets_peak"}), "%.0f").c_str(), cell(num(s, {"cpu_percent"}), "%.1f").c_str(),
             cell(num(s, {"idle_cpu_percent"}), "%.1f").c_str(), cell(num(s, {"rss_peak_mb"}), "%.1f").c_str(),
             cell(num(s, {"fds_peak"}), "%.0f").c_str(), cell(num(s, {"write_ack_ms", "p50"}), "%.0f").c_str(),
             cell(num(s, {"write_ack_ms", "p99"}), "%.0f").c_str());
  }
  if (results.contains("provisioning")) {
    const json& p = results["provisioning"];
    o += fmt("\nPROVISIONING  %.0f users created %s (%s passwords)\n", num(p, {"users"}),
             num(p, {"rate"}) > 0          ? fmt("at %.0f per second, one PUT each", num(p, {"rate"})).c_str()
             : p.value("backlog", false) ? "before couchgate started (its first start provisions them; timed from its start)"
                                         : "at once",
             p.value("passwords", false) ? "with" : "without");
    o += fmt("  %s users/s: all %s provisioned in %s s (creating them took %s s); per user ms p50 %s p99 %s max %s\n",
             cell(num(p, {"users_per_s"}), "%.1f").c_str(), cell(num(p, {"provisioned"}), "%.0f").c_str(),
             cell(num(p, {"seconds"})).c_str(), cell(num(p, {"create_seconds"})).c_str(),
             cell(num(p, {"latency_ms", "p50"}), "%.0f").c_str(), cell(num(p, {"latency_ms", "p99"}), "%.0f").c_str(),
             cell(num(p, {"latency_ms", "max"}), "%.0f").c_str());
    o += fmt("  couchgate: sockets %s, RSS %s MB;  ceiling (bench: PUT db?q=%s + _security over %s connections) %s users/s before, "
             "%s after%s\n",
             cell(num(p, {"sockets_peak"}), "%.0f").c_str(), cell(num(p, {"rss_peak_mb"}), "%.1f").c_str(),
             cell(num(p, {"ceiling", "q"}), "%.0f").c_str(), cell(num(p, {"ceiling", "connections"}), "%.0f").c_str(),
             cell(num(p, {"ceiling", "users_per_s"}), "%.1f").c_str(), cell(num(p, {"ceiling_after", "users_per_s"}), "%.1f").c_str(),
             provisioning_ceiling(p) > 0 && num(p, {"users_per_s"}) > 0 && num(p, {"rate"}) <= 0
                 ? fmt(" (couchgate %.0f%% of their mean)", 100.0 * num(p, {"users_per_s"}) / provisioning_ceiling(p)).c_str()
                 : "");
    if (p.contains("ceiling_with_users")) {
      o += fmt("  ceiling with the user documents (the bench also writes them, as in couchgate's run) %s users/s%s; per user ms p50 %s p99 %s\n",
               cell(num(p, {"ceiling_with_users", "users_per_s"}), "%.1f").c_str(),
               num(p, {"ceiling_with_users", "users_per_s"}) > 0 && num(p, {"users_per_s"}) > 0 && num(p, {"rate"}) <= 0
                   ? fmt(" (couchgate %.0f%% of it)", 100.0 * num(p, {"users_per_s"}) / num(p, {"ceiling_with_users", "users_per_s"})).c_str()
                   : "",
               cell(num(p, {"ceiling_with_users", "latency_ms", "p50"}), "%.0f").c_str(),
               cell(num(p, {"ceiling_with_users", "latency_ms", "p99"}), "%.0f").c_str());
    }
    o += fmt("  server CPU per user (ms): couchgate's run %s, ceiling %s (after %s), ceiling with the user documents %s\n",
             cell(num(p, {"server_cpu_ms_per_user"}), "%.1f").c_str(), cell(num(p, {"ceiling", "server_cpu_ms_per_user"}), "%.1f").c_str(),
             cell(num(p, {"ceiling_after", "server_cpu_ms_per_user"}), "%.1f").c_str(),
             cell(num(p, {"ceiling_with_users", "server_cpu_ms_per_user"}), "%.1f").c_str());
  }
  o += client_tables(results);
  if (results.contains("signup")) {
    const json& p = results["signup"];
    o += fmt("\nSIGN-UP  %.0f sign-ups through the front door, %.0f at a time (until the 201: database provisioned)\n",
             num(p, {"signups"}), num(p, {"concurrency"}));
    o += fmt("  %s sign-ups/s: %s created in %s s; per sign-up ms p50 %s p99 %s max %s; not ready %s, failed %s\n",
             cell(num(p, {"signups_per_s"}), "%.1f").c_str(), cell(num(p, {"created"}), "%.0f").c_str(),
             cell(num(p, {"seconds"})).c_str(), cell(num(p, {"latency_ms", "p50"}), "%.0f").c_str(),
             cell(num(p, {"latency_ms", "p99"}), "%.0f").c_str(), cell(num(p, {"latency_ms", "max"}), "%.0f").c_str(),
             cell(num(p, {"not_ready"}), "%.0f").c_str(), cell(num(p, {"failed"}), "%.0f").c_str());
    o += fmt("  ceiling (bench: PUT _users with password + db + _security, same concurrency) %s/s, ms p50 %s p99 %s\n",
             cell(num(p, {"ceiling", "signups_per_s"}), "%.1f").c_str(), cell(num(p, {"ceiling", "latency_ms", "p50"}), "%.0f").c_str(),
             cell(num(p, {"ceiling", "latency_ms", "p99"}), "%.0f").c_str());
  }
  o += "\nTARGETS (issues #5, #13, #14, #18, stated for Apache CouchDB 3.5 on 2 cores; never a pass/fail of this run)\n";
  for (const auto& t : results.value("targets", json::array())) {
    const json& met = t["met"];
    std::string tag = met.is_null() ? "[n/a]    " : met.get<bool>() ? "[met]    " : "[NOT MET]";
    o += "  " + tag + " " + t.value("target", "") + ": " + t.value("measured", "");
    if (t.contains("note")) o += " (" + t.value("note", "") + ")";
    o += "\n";
  }
  if (env.contains("target_caveat")) o += "  note: " + env.value("target_caveat", "") + "\n";
  const json failures = results.value("failures", json::array());
  o += failures.empty() ? std::string("\nfunctional failures: none\n") : fmt("\nFUNCTIONAL FAILURES: %zu\n", failures.size());
  for (const auto& f : failures) o += "  - " + f.get<std::string>().substr(0, 400) + "\n";
  std::cout << o << std::flush;
}

std::string write_plots(const std::string& dir, const plot_data& plots) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return "plots: cannot create " + dir + ": " + ec.message();
  std::string gp =
      "# Written by couchgate_bench; run `gnuplot bench.gp` in this directory.\n"
      "set terminal pngcairo size 1000,600 noenhanced\nset grid\nset key left top\n";
  // Fan-in: documents per second over time, one chart per size, one line per approach.
  std::map<std::string, std::vector<const plot_series*>> by_size;
  for (const auto& s : plots.fanin) by_size[s.name.substr(0, s.name.find(' '))].push_back(&s);
  for (const auto& [size, list] : by_size) {
    std::string plot_cmd, cumulative_cmd;
    for (const auto* s : list) {
      std::string approach = s->name.substr(s->name.find(' ') + 1);
      std::string file = "fanin-" + size + "-" + approach + ".dat";
      std::ofstream f(dir + "/" + file);
      f << "# seconds documents docs_per_s(over >=1 s)\n";
      std::size_t j = 0;
      for (std::size_t i = 0; i < s->points.size(); ++i) {
        const auto& [t, c] = s->points[i];
        while (j + 1 < i && s->points[j + 1].first <= t - 1.0) ++j;
        double dt = t - s->points[j].first;
        double r = dt > 0 ? (c - s->points[j].second) / dt : 0;
        f << t << " " << c << " " << r << "\n";
      }
      plot_cmd += std::string(plot_cmd.empty() ? "plot " : ", ") + "'" + file + "' using 1:3 with lines lw 2 title '" + approach + "'";
      cumulative_cmd += std::string(cumulative_cmd.empty() ? "plot " : ", ") + "'" + file + "' using 1:2 with lines lw 2 title '" + approach + "'";
    }
    gp += "set output 'fanin-" + size + "-documents.png'\nset title 'fan-in " + size +
          ": documents in the target'\nset xlabel 'seconds since start'\nset ylabel 'documents'\nunset logscale\n" +
          cumulative_cmd + "\n";
    gp += "set output 'fanin-" + size + ".png'\nset title 'fan-in " + size +
          ": documents/s into the target (1 s window)'\nset xlabel 'seconds since start'\nset ylabel 'docs/s'\nunset logscale\n" +
          plot_cmd + "\n";
  }
  auto cdf = [&](const std::vector<double>& v, const std::string& file, const std::string& title, const std::string& xlabel) {
    if (v.empty()) return;
    std::vector<double> sorted = v;
    std::sort(sorted.begin(), sorted.end());
    std::ofstream f(dir + "/" + file + ".dat");
    f << "# milliseconds cumulative_fraction\n";
    for (std::size_t i = 0; i < sorted.size(); ++i) f << std::max(sorted[i], 0.1) << " " << static_cast<double>(i + 1) / static_cast<double>(sorted.size()) << "\n";
    gp += "set output '" + file + ".png'\nset title '" + title + "'\nset xlabel '" + xlabel +
          " (log scale)'\nset ylabel 'fraction'\nset logscale x\nset yrange [0:1]\nplot '" + file +
          ".dat' using 1:2 with lines lw 2 title 'CDF'\nset autoscale y\nunset logscale\n";
  };
  cdf(plots.latencies_ms, "latency-cdf", "steady state: write-to-central latency CDF", "milliseconds");
  cdf(plots.provision_ms, "provisioning-cdf", "provisioning: user created -> database + _security, CDF", "milliseconds");
  std::ofstream(dir + "/bench.gp") << gp;
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) {
    return "plots: gnuplot is not on PATH; data and " + dir + "/bench.gp written, no PNGs (apt-get install gnuplot-nox)";
  }
  std::string cmd = "cd '" + dir + "' && gnuplot bench.gp 2>&1";
  int rc = std::system(cmd.c_str());
  if (rc != 0) return "plots: gnuplot failed (exit " + std::to_string(rc) + "); data and bench.gp are in " + dir;
  return "plots: PNGs, data and bench.gp written to " + dir;
}

}  // namespace couchgate::bench
