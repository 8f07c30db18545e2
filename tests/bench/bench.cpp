// couchgate_bench: the benchmark of issue #5, run with one command against the server in
// COUCHDB_URL (COUCHDB_USER / COUCHDB_PASSWORD: a server admin). See tests/bench/README.md.
//
// Owns: the command line, the description of the environment, the order of the phases, the
// final cleanup and the exit status (0 unless something functionally failed; timings never
// fail the run).
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "tests/bench/client.hpp"
#include "tests/bench/context.hpp"
#include "tests/bench/dataset.hpp"
#include "tests/bench/phases.hpp"
#include "tests/bench/report.hpp"
#include "tests/bench/runner.hpp"

using namespace couchgate::bench;
using couchgate::test::env;
namespace test = couchgate::test;
using namespace std::chrono_literals;

namespace {

const std::set<std::string> phase_names = {"fanin", "ceiling", "builtin", "restore", "steady", "provisioning", "front", "live", "signup"};

std::vector<size_spec> parse_sizes(const std::string& text) {
  std::vector<size_spec> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    auto x = item.find('x');
    if (x == std::string::npos) throw CLI::ValidationError("--sizes", "expected NxM, got '" + item + "'");
    size_spec s{std::atoi(item.substr(0, x).c_str()), std::atoi(item.substr(x + 1).c_str())};
    if (s.dbs <= 0 || s.docs_per_db <= 0) throw CLI::ValidationError("--sizes", "expected NxM with N, M > 0, got '" + item + "'");
    out.push_back(s);
  }
  return out;
}

std::string first_line_of(const std::string& path, const std::string& key) {
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind(key, 0) == 0) {
      auto colon = line.find_first_of(":=");
      std::string v = colon == std::string::npos ? line : line.substr(colon + 1);
      while (!v.empty() && (v.front() == ' ' || v.front() == '\t' || v.front() == '"')) v.erase(0, 1);
      while (!v.empty() && (v.back() == ' ' || v.back() == '"')) v.pop_back();
      return v;
    }
  }
  return {};
}

json describe_environment(context& ctx, const json& server_root) {
  json e;
  e["server_url"] = env().url;
  e["server_root"] = server_root;
  std::string server;
  if (server_root.contains("couchdb")) {
    server = "Apache CouchDB " + server_root.value("version", "?");
    if (server_root.contains("vendor") && server_root["vendor"].is_object()) {
      server += " (vendor " + server_root["vendor"].value("name", "?") + ")";
    }
  } else if (server_root.contains("express-pouchdb")) {
    server = "pouchdb-server " + server_root.value("version", "?") + " (express-pouchdb; in-memory when started by tests/server)";
  } else {
    server = server_root.dump();
  }
  e["server"] = server;
  e["server_is_couchdb"] = server_root.contains("couchdb");
  if (server_root.contains("couchdb")) {
    // The settings the figures depend on (README's recommended server): null when unset (the
    // server's default) or unreadable.
    json settings = json::object();
    for (const char* key : {"couchdb/max_dbs_open", "cluster/q", "global_changes/max_write_delay", "global_changes/max_event_delay",
                            "global_changes/update_db", "chttpd/server_options"}) {
      auto r = test::couch().get(std::string("/_node/_local/_config/") + key);
      settings[key] = r.status == 200 ? r.body : json(nullptr);
    }
    e["server_settings"] = settings;
  }
  e["server_pid"] = ctx.server_pid > 0 ? json(ctx.server_pid) : json(nullptr);
  auto v = run_command({"--version"}, std::chrono::seconds(10));
  std::string ver = v.out;
  while (!ver.empty() && (ver.back() == '\n' || ver.back() == '\r')) ver.pop_back();
  e["couchgate_version"] = ver;
  e["couchgate_binary"] = test::couchgate_binary();
  {
    // Which build was measured (the bench target does not rebuild couchgate by itself).
    struct stat st {};
    if (stat(test::couchgate_binary(), &st) == 0) {
      std::tm tm{};
      gmtime_r(&st.st_mtime, &tm);
      char buf[32];
      std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
      e["couchgate_binary_built"] = buf;
    }
  }
  test::names dummy{"p-", "s", "c", "r"};
  json cfg = ctx.couchgate_config(dummy);
  e["max_connections"] = cfg["fanin"].value("max_connections", 8);
  e["couchgate_config"] = {{"couchdb", cfg["couchdb"]}, {"fanin", cfg["fanin"]}, {"provisioning_batch", cfg["provisioning"]["batch"]},
                           {"log_level", cfg["log"]["level"]}, {"overrides", ctx.opt.couchgate_overrides}};
  struct utsname u {};
  uname(&u);
  std::string cpu = first_line_of("/proc/cpuinfo", "model name");
  long mem_kb = std::atol(first_line_of("/proc/meminfo", "MemTotal").c_str());
  unsigned cpus = std::thread::hardware_concurrency();
  std::string os = first_line_of("/etc/os-release", "PRETTY_NAME");
  e["machine"] = {{"cpus", cpus}, {"cpu_model", cpu}, {"mem_total_mb", mem_kb / 1024}, {"kernel", std::string(u.release)},
                  {"os", os}, {"hostname", std::string(u.nodename)}};
  {
    // Other load on the machine skews every figure: say so.
    std::ifstream la("/proc/loadavg");
    double l1 = -1;
    la >> l1;
    e["loadavg_1m_at_start"] = l1;
    if (l1 >= 0.5) {
      note("warning: the machine is already busy (1-minute load average " + std::to_string(l1).substr(0, 4) +
           " before the bench started); the figures will be slower than on an idle machine");
    }
  }
  e["machine_summary"] = std::to_string(cpus) + " CPUs (" + cpu + "), " + std::to_string(mem_kb / 1024 / 1024) + " GiB, " + os +
                         ", Linux " + u.release;
  if (!server_root.contains("couchdb")) {
    e["target_caveat"] = "this server is not Apache CouchDB: it lacks _db_updates (couchgate sweeps update_seq instead) and "
                         "its speed differs; judge the targets on CouchDB 3.5 (COUCHDB_URL=...)";
  }
  return e;
}

// Deletes whatever this run created and still exists: tracked databases, and any database
// carrying one of this run's name bases (a phase may have failed half-way).
void final_cleanup(context& ctx) {
  std::set<std::string> doomed;
  for (const auto& db : ctx.created_dbs()) doomed.insert(db);
  bench_client c(60s);
  auto all = c.get("/_all_dbs");
  if (all.status == 200 && all.body.is_array()) {
    std::set<std::string> existing;
    for (const auto& v : all.body) {
      if (!v.is_string()) continue;
      existing.insert(v.get<std::string>());
      for (const auto& base : ctx.name_bases()) {
        if (v.get<std::string>().rfind(base, 0) == 0) doomed.insert(v.get<std::string>());
      }
    }
    // pouchdb-server answers 200 to DELETE of a missing database; skip those not listed.
    for (auto it = doomed.begin(); it != doomed.end();) it = existing.count(*it) ? std::next(it) : doomed.erase(it);
  }
  if (doomed.empty()) return;
  note("cleanup: deleting " + std::to_string(doomed.size()) + " leftover databases");
  if (auto e = delete_dbs(ctx, {doomed.begin(), doomed.end()}); !e.empty()) note("cleanup: " + e);
}

}  // namespace

int main(int argc, char** argv) {
  context ctx;
  options& o = ctx.opt;
  CLI::App app{"couchgate_bench: fan-in, steady state, provisioning and restore against the server in COUCHDB_URL"};
  std::string sizes_text, skip_text, overrides_text;
  std::optional<int> steady_dbs, rate, users, signups;
  std::optional<double> seconds, builtin_timeout;
  app.add_flag("--smoke", o.smoke, "tiny sizes (20x5 fan-in, 3 s at 20 writes/s over 20 dbs, 20 users, 2 front-door clients, 10 live clients): CI keeps the bench from rotting");
  app.add_option("--sizes", sizes_text, "fan-in sizes, NxM,... (N databases x M documents; default 200x50,1000x20)");
  app.add_option("--steady-dbs", steady_dbs, "steady state: source databases (default 1000)");
  app.add_option("--rate", rate, "steady state: writes per second (default 100)");
  app.add_option("--seconds", seconds, "steady state: seconds of writing (default 60; 3 with --smoke)");
  app.add_option("--users", users, "provisioning: users created at once (default 1000)");
  app.add_option("--provision-rate", o.provision_rate,
                 "provisioning: create the users at this many per second, one PUT each, instead of all at once (0 = at once; "
                 "the latency goal is stated at 100)");
  app.add_flag("--provision-backlog", o.provision_backlog,
               "provisioning: write the users before couchgate starts, then time its first start provisioning them (a first "
               "deployment on a server that has users: the reconcile's path), against the bare ceiling")
      ->excludes(app.get_option("--provision-rate"));
  app.add_option("--signups", signups, "sign-up: sign-ups through the front door (default 200; 20 with --smoke)");
  app.add_option("--signup-concurrency", o.signup_concurrency, "sign-up: sign-ups in flight at once (default 16)");
  app.add_option("--builtin-timeout", builtin_timeout, "seconds CouchDB's own replicator gets per size (default 300; 60 with --smoke)");
  app.add_option("--builtin-url", o.builtin_url,
                 "URL (no credentials) the server's own replicator uses to reach the server, when COUCHDB_URL does not work "
                 "from inside it (e.g. a container with a remapped port: http://127.0.0.1:5984)");
  app.add_option("--out", o.out, "JSON results file")->capture_default_str();
  app.add_option("--plots", o.plots, "directory for gnuplot data, bench.gp and PNGs (PNGs only when gnuplot is on PATH)");
  app.add_option("--logs", o.logs, "directory to keep each couchgate run's log in (default: discarded)");
  app.add_option("--skip", skip_text, "comma-separated phases to skip: fanin,ceiling,builtin,restore,steady,provisioning,front,live,signup");
  app.add_option("--couchgate-config", overrides_text, "JSON merge patch applied to every couchgate config, e.g. '{\"fanin\":{\"max_connections\":4}}'");
  app.add_option("--log-level", o.log_level, "couchgate's log level during the bench")->capture_default_str();
  app.add_flag("--user-passwords", o.user_passwords, "provisioning: create users with passwords (the server's hashing cost is then included)");
  app.add_option("--threads", o.threads, "bench-side threads for seeding, deleting, verifying and steady-state writes")->capture_default_str();
  // Client phases (issues #13 and #14).
  std::optional<int> front_users, front_docs, front_rounds, live_clients, live_rate;
  std::optional<double> live_seconds;
  app.add_option("--front-users", front_users, "front door: concurrent replicating clients (default 32; 2 with --smoke)");
  app.add_option("--front-docs", front_docs, "front door: documents each client pushes and pulls per segment (default 200; 10 with --smoke)");
  app.add_option("--front-rounds", front_rounds,
                 "front door: rounds of the four segments direct, front, front, direct (default 10: one round scatters by 10-30%; 1 with --smoke)")
      ->check(CLI::Range(1, 100));
  app.add_flag("--front-tls", o.front_tls, "front door phase over TLS (front.tls with a certificate made by `openssl req`) instead of plain HTTP");
  app.add_option("--front-direct-tls-port", o.front_direct_tls_port,
                 "with --front-tls: the server's own TLS port (CouchDB's [ssl] listener, same host) for the direct segments, "
                 "so both sides pay for TLS (default: the direct segments use the server's plain HTTP URL)")
      ->check(CLI::Range(1, 65535));
  app.add_option("--live-clients", live_clients, "live feeds: longpoll clients, one per user database (default 10000; 10 with --smoke)");
  app.add_option("--live-rate", live_rate, "live feeds: writes per second into random user databases (default 100; 10 with --smoke)");
  app.add_option("--live-seconds", live_seconds, "live feeds: seconds of writing per half (default 600; 0.5 with --smoke)");
  std::string live_halves = "direct,front";
  app.add_option("--live-halves", live_halves,
                 "live feeds: halves to run, 'direct,front' (default), 'direct' or 'front' (a server that cannot hold the "
                 "clients directly)");
  std::string live_writes = "server";
  app.add_option("--live-writes", live_writes,
                 "live feeds: where the front half's writer writes: 'server' (default: straight to the server as its admin), "
                 "'front' (PUT /me/<id> through couchgate's front door as the database's user, with an AuthSession cookie: the "
                 "half 'front_write_through') or 'both' (the front half twice, server then front)")
      ->check(CLI::IsMember({"server", "front", "both"}));
  try {
    app.parse(argc, argv);
    o.sizes = parse_sizes(sizes_text.empty() ? (o.smoke ? "20x5" : "200x50,1000x20") : sizes_text);
    std::stringstream ss(skip_text);
    std::string item;
    while (std::getline(ss, item, ',')) {
      if (item.empty()) continue;
      if (!phase_names.count(item)) throw CLI::ValidationError("--skip", "unknown phase '" + item + "'");
      o.skip.insert(item);
    }
    {
      o.live_direct = o.live_front = false;
      std::stringstream halves(live_halves);
      while (std::getline(halves, item, ',')) {
        if (item == "direct") o.live_direct = true;
        else if (item == "front") o.live_front = true;
        else throw CLI::ValidationError("--live-halves", "unknown half '" + item + "' (direct, front)");
      }
      if (!o.live_direct && !o.live_front) throw CLI::ValidationError("--live-halves", "names no half (direct, front)");
      o.live_writes_server = live_writes != "front";
      o.live_writes_front = live_writes != "server";
    }
    if (!overrides_text.empty()) {
      o.couchgate_overrides = json::parse(overrides_text, nullptr, false);
      if (!o.couchgate_overrides.is_object()) throw CLI::ValidationError("--couchgate-config", "not a JSON object");
    }
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  o.steady_dbs = steady_dbs.value_or(o.smoke ? 20 : 1000);
  o.rate = rate.value_or(o.smoke ? 20 : 100);
  o.seconds = seconds.value_or(o.smoke ? 3 : 60);
  o.users = users.value_or(o.smoke ? 20 : 1000);
  o.signups = signups.value_or(o.smoke ? 20 : 200);
  o.builtin_timeout = builtin_timeout.value_or(o.smoke ? 60 : 300);
  o.threads = std::max(1, o.threads);
  o.front_users = front_users.value_or(o.smoke ? 2 : 32);
  o.front_docs = front_docs.value_or(o.smoke ? 10 : 200);
  o.front_batch = o.smoke ? 10 : 100;
  o.front_rounds = front_rounds.value_or(o.smoke ? 1 : 10);
  o.live_clients = live_clients.value_or(o.smoke ? 10 : 10000);
  o.live_rate = live_rate.value_or(o.smoke ? 10 : 100);
  o.live_seconds = live_seconds.value_or(o.smoke ? 0.5 : 600);
  {
    // The live-feeds phase holds one socket per client (and couchgate, a child, inherits this).
    struct rlimit rl {};
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
      rl.rlim_cur = rl.rlim_max;
      setrlimit(RLIMIT_NOFILE, &rl);
    }
  }

  if (const char* u = std::getenv("COUCHDB_URL"); !u || !*u) {
    std::cerr << "couchgate_bench: COUCHDB_URL is not set. Start a local server with\n"
                 "  eval \"$(tests/server/start-server.sh)\"\n"
                 "or point COUCHDB_URL (and COUCHDB_USER/COUCHDB_PASSWORD, a server admin) at Apache CouchDB.\n";
    return 2;
  }
  if (const char* p = std::getenv("COUCHGATE_SERVER_PID"); p && *p) ctx.server_pid = std::atoi(p);
  install_signal_handlers();

  json results;
  results["bench"] = {{"version", 1}, {"date", iso_now()}, {"mode", o.smoke ? "smoke" : "full"}};
  {
    std::string cmd;
    for (int i = 0; i < argc; ++i) cmd += (i ? " " : "") + std::string(argv[i]);
    results["bench"]["command"] = cmd;
  }
  reply root;
  {
    // A connection of its own, closed before the phases (the bench counts its own sockets).
    bench_client root_client(30s);
    root = root_client.get("/");
    if (root.status != 200) {
      std::cerr << "couchgate_bench: GET " << env().url << "/ failed: " << describe(root) << "\n";
      return 1;
    }
    if (auto s = root_client.get("/_session"); s.status != 200 || s.raw.find("\"_admin\"") == std::string::npos) {
      std::cerr << "couchgate_bench: COUCHDB_USER is not a server admin at " << env().url << " (" << describe(s) << ")\n";
      return 1;
    }
  }
  ctx.pouchdb = root.body.is_object() && root.body.contains("express-pouchdb");
  results["environment"] = describe_environment(ctx, root.body);
  note("server: " + results["environment"]["server"].get<std::string>() + "; couchgate: " +
       results["environment"]["couchgate_version"].get<std::string>());

  plot_data plots;
  auto server_ok = [&](const std::string& before) {
    if (test::server_alive()) return true;
    ctx.fail("the server at " + env().url + " stopped answering before " + before);
    return false;
  };
  auto t_total = steady::now();
  std::vector<fanin_sources> kept;
  if (!o.skipped("fanin")) {
    results["fanin"] = json::array();
    for (const auto& s : o.sizes) {
      if (interrupted() || !server_ok("fan-in " + s.label())) break;
      kept.emplace_back();
      results["fanin"].push_back(run_fanin(ctx, s, plots, kept.back()));
    }
  }
  if (!o.skipped("steady") && !interrupted() && server_ok("steady state")) results["steady"] = run_steady(ctx, plots);
  if (!o.skipped("provisioning") && !interrupted() && server_ok("provisioning")) {
    results["provisioning"] = run_provisioning(ctx, plots);
  }
  if (!o.skipped("front") && !interrupted() && server_ok("the front door phase")) results["front"] = run_front(ctx);
  if (!o.skipped("live") && !interrupted() && server_ok("the live feeds phase")) results["live"] = run_live(ctx);
  if (!o.skipped("signup") && !interrupted() && server_ok("sign-up")) results["signup"] = run_signup(ctx);
  // Last: the server's own replicator (it leaves pouchdb-server slower for whatever follows).
  for (std::size_t i = 0; i < kept.size(); ++i) {
    if (kept[i].sources.empty()) continue;
    if (!interrupted() && server_ok("the built-in replicator")) run_fanin_builtin(ctx, kept[i], results["fanin"][i], plots);
  }
  if (interrupted()) note("interrupted: cleaning up");
  if (test::server_alive()) final_cleanup(ctx);
  else ctx.fail("the server at " + env().url + " stopped answering; nothing was cleaned up");

  results["bench"]["seconds"] = round_to(seconds_since(t_total), 1);
  {
    std::ifstream la("/proc/loadavg");
    double l1 = -1;
    la >> l1;
    results["bench"]["loadavg_1m_at_end"] = l1;
  }
  results["bench"]["interrupted"] = interrupted();
  results["targets"] = judge_targets(results);
  results["failures"] = ctx.failures();
  if (!o.plots.empty()) {
    std::string n = write_plots(o.plots, plots);
    results["bench"]["plots"] = n;
    note(n);
  }
  {
    std::ofstream f(o.out);
    f << results.dump(2) << "\n";
    if (!f) ctx.fail("cannot write " + o.out);
    else note("results written to " + o.out);
  }
  results["failures"] = ctx.failures();
  print_table(results);
  if (interrupted()) return 130;
  return ctx.failures().empty() ? 0 : 1;
}
