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

json target(const std::string& what, const std::string& measured, json met, const std::string& note_text = {}) {
  json t{{"target", what}, {"measured", measured}, {"met", met}};
  if (!note_text.empty()) t["note"] = note_text;
  return t;
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
    if (ups < 0) out.push_back(target(what, "not measured", nullptr));
    else {
      double users = num(p, {"users"});
      std::string m = fmt("%.1f users/s (%.0f users)", ups, users);
      // A burst of a few users measures the latency of one pass, not a rate.
      if (users >= 1000) out.push_back(target(what, m, ups >= 200));
      else out.push_back(target(what, m, nullptr, "too few users for a rate: run --users 1000 or more"));
    }
  }
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
         "        database holds every document. sockets = peak established connections to the server.\n";
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
    bool any_restore = false;
    for (const auto& f : fanin) any_restore = any_restore || f.contains("restore");
    if (any_restore) {
      o += "\nRESTORE  `couchgate restore --all` into the deleted sources (wall time of the command)\n";
      o += fmt("%-10s %10s %9s %9s %8s %9s\n", "size", "revisions", "seconds", "docs/s", "sockets", "verified");
      for (const auto& f : fanin) {
        if (!f.contains("restore")) continue;
        const json& r = f["restore"];
        o += fmt("%-10s %10s %9s %9s %8s %9s\n", f.value("size", "").c_str(), cell(num(r, {"revisions_written"}), "%.0f").c_str(),
                 cell(num(r, {"seconds"})).c_str(), cell(num(r, {"docs_per_s"}), "%.0f").c_str(),
                 cell(num(r, {"sockets_peak"}), "%.0f").c_str(), r.value("verified", false) ? "yes" : "NO");
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
    o += fmt("\nPROVISIONING  %.0f users created at once (%s passwords)\n", num(p, {"users"}),
             p.value("passwords", false) ? "with" : "without");
    o += fmt("  %s users/s: all %s provisioned in %s s (creating them took %s s); per user ms p50 %s p99 %s max %s\n",
             cell(num(p, {"users_per_s"}), "%.1f").c_str(), cell(num(p, {"provisioned"}), "%.0f").c_str(),
             cell(num(p, {"seconds"})).c_str(), cell(num(p, {"create_seconds"})).c_str(),
             cell(num(p, {"latency_ms", "p50"}), "%.0f").c_str(), cell(num(p, {"latency_ms", "p99"}), "%.0f").c_str(),
             cell(num(p, {"latency_ms", "max"}), "%.0f").c_str());
    o += fmt("  couchgate: sockets %s, RSS %s MB;  ceiling (bench: PUT db + _security over %s connections) %s users/s\n",
             cell(num(p, {"sockets_peak"}), "%.0f").c_str(), cell(num(p, {"rss_peak_mb"}), "%.1f").c_str(),
             cell(num(p, {"ceiling", "connections"}), "%.0f").c_str(), cell(num(p, {"ceiling", "users_per_s"}), "%.1f").c_str());
  }
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
  o += "\nTARGETS (issue #5, stated for Apache CouchDB 3.5 on 2 cores; never a pass/fail of this run)\n";
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
