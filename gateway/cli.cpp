// Owns: argument parsing, config loading with exit code 2 on errors, signal handling for the
// daemon, and the restore command's terminal output (see cli.hpp).
#include "gateway/cli.hpp"

#include <CLI/CLI.hpp>
#include <csignal>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "gateway/config.hpp"
#include "gateway/config_table.hpp"
#include "gateway/daemon.hpp"
#include "gateway/health.hpp"
#include "gateway/logging.hpp"
#include "gateway/restore.hpp"
#include "replicator/wire_json.hpp"

namespace couchgate::gateway {

namespace {

// Loads the file (or the defaults + environment when no file is given); prints every problem.
std::optional<config> load_or_report(const std::string& path) {
  load_result r = path.empty() ? default_config(process_env()) : load_config_file(path, process_env());
  if (!r.errors.empty()) {
    std::cerr << "couchgate: invalid configuration (" << r.errors.size() << " problem" << (r.errors.size() == 1 ? "" : "s")
              << "):\n"
              << format_errors(path.empty() ? "(defaults)" : path, r.errors);
    return std::nullopt;
  }
  return r.cfg;
}

int run_daemon(const std::string& path) {
  auto cfg = load_or_report(path);
  if (!cfg) return 2;
  setup_logging(cfg->log);
  // Signals are taken by one thread with sigwait; every other thread has them blocked.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  daemon d(*cfg, path);
  std::thread signals([&d, set] {
    for (;;) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0) continue;
      if (sig == SIGHUP) {
        d.request_reload();
        continue;
      }
      d.request_stop();
      return;
    }
  });
  int rc = d.run();
  // Wake the signal thread if run() ended on its own (admin API bind failure).
  kill(getpid(), SIGTERM);
  signals.join();
  return rc;
}

int run_restore_cmd(const std::string& path, const restore_options& opts) {
  auto cfg = load_or_report(path);
  if (!cfg) return 2;
  setup_logging(cfg->log);
  restore_options o = opts;
  o.progress_bar = isatty(STDERR_FILENO) == 1;
  std::cerr << "restore " << (o.all ? std::string("all users") : std::to_string(o.users.size()) + " user(s)") << " from "
            << cfg->fanin.central_db << (o.dry_run ? " (dry run: nothing is written)" : "") << "\n";
  auto s = run_restore(*cfg, o, std::cerr);
  std::size_t failed = 0, docs = 0;
  for (const auto& u : s.users) {
    docs += u.docs;
    if (!u.error.empty()) ++failed;
  }
  std::cout << (o.dry_run ? "dry run: " : "") << s.users.size() << " user database(s), " << docs
            << (o.dry_run ? " revisions would be written" : " revisions written") << ", " << s.central_changes
            << " central changes read in " << static_cast<long long>(s.seconds * 1000) << " ms, " << s.requests << " requests\n";
  for (const auto& u : s.users) {
    std::cout << "  " << (u.error.empty() ? "ok     " : "FAILED ") << u.user << " -> " << u.db << ": " << u.docs
              << (o.dry_run ? " to write" : " written") << (u.created ? (o.dry_run ? ", would create" : ", created") : "")
              << (u.error.empty() ? "" : ", " + u.error) << "\n";
  }
  for (const auto& u : s.users) {
    if (u.stemmed) {
      std::cout << "  " << u.user << ": " << u.stemmed << " leaf revision(s) not " << (o.dry_run ? "to be " : "")
                << "written: ancestors that the source's revs_limit stemmed away, kept in central beside the newer "
                   "revision (see GET /failures); writing them would make conflicts the user never had\n";
    }
  }
  if (s.unmappable) {
    std::cout << s.unmappable << " central document(s) not restored: their ids name no user (ids are <owner>:<document id>), first "
              << replicator::wire::text_of(replicator::json(s.first_unmappable), 120) << "\n";
  }
  if (s.interrupted) std::cout << "restore stopped before the end of the central database; run it again to continue\n";
  if (failed) std::cout << failed << " user database(s) failed\n";
  return s.ok() ? 0 : 1;
}

// `couchgate health`: exit 0 when the admin API answers 200, 1 otherwise (also for a bad config:
// Docker's HEALTHCHECK reserves exit 2).
int run_health_cmd(const std::string& path, bool ready, double timeout_seconds) {
  auto cfg = load_or_report(path);
  if (!cfg) return 1;
  std::optional<std::string> port_file;
  if (!cfg->admin_api.port_file.empty()) {
    std::ifstream in(cfg->admin_api.port_file);
    std::stringstream text;
    if (in && text << in.rdbuf()) port_file = text.str();
  }
  std::string error;
  auto target = resolve_health_target(cfg->admin_api, port_file, error);
  if (!target) {
    std::cerr << "couchgate health: " << error << "\n";
    return 1;
  }
  auto r = probe_health(*target, ready, std::chrono::milliseconds(static_cast<long long>(timeout_seconds * 1000)));
  (r.healthy ? std::cout : std::cerr) << (r.healthy ? "healthy" : "unhealthy") << ": "
                                       << (r.status ? "HTTP " + std::to_string(r.status) + " " : std::string()) << r.detail << "\n";
  return r.healthy ? 0 : 1;
}

}  // namespace

int cli_main(int argc, char** argv) {
  CLI::App app{"couchgate: per-user CouchDB databases, provisioned, fanned in to one central database, and restorable"};
  app.set_version_flag("--version", std::string("couchgate ") + COUCHGATE_VERSION + "\n");
  app.require_subcommand(1);

  std::string run_config;
  auto* run = app.add_subcommand("run", "Run the daemon");
  run->add_option("-c,--config", run_config, "YAML config file (default: built-in defaults + environment)");

  std::string check_path;
  auto* check = app.add_subcommand("check-config", "Validate a config file; exit 2 listing every problem");
  check->add_option("file", check_path, "YAML config file")->required();

  auto* example = app.add_subcommand(
      "config-example", "Print every config key with its default and help (deploy/couchgate.example.yaml is this output)");

  std::string restore_config;
  restore_options ropts;
  auto* restore = app.add_subcommand("restore", "Rebuild user databases from the central database");
  restore->add_option("-c,--config", restore_config, "YAML config file");
  auto* users_opt = restore->add_option("-u,--user", ropts.users, "User name to restore (repeatable)");
  auto* all_flag = restore->add_flag("--all", ropts.all, "Restore every user found in the central database");
  restore->add_flag("--dry-run", ropts.dry_run, "Report what would be written; write nothing");
  restore->add_flag("--merge", ropts.merge, "Write into non-empty databases (adds missing revisions only)");
  // (NonNegativeNumber: CLI11 would wrap "-5" into a huge unsigned count)
  restore->add_option("--max-changes", ropts.max_docs, "Stop after this many central changes (0 = all)")
      ->check(CLI::NonNegativeNumber);
  users_opt->excludes(all_flag);
  restore->callback([&] {
    if (ropts.users.empty() && !ropts.all) throw CLI::ValidationError("restore", "give --user NAME (repeatable) or --all");
    for (const auto& u : ropts.users) {
      if (u.empty()) throw CLI::ValidationError("--user", "a user name must not be empty");
    }
  });

  std::string health_config;
  bool health_ready = false;
  double health_timeout = 5;
  auto* health = app.add_subcommand(
      "health", "Ask the running daemon's admin API for GET /healthz (the container HEALTHCHECK); exit 0 healthy, 1 not");
  health->add_option("-c,--config", health_config,
                     "The daemon's YAML config file (the admin API address; COUCHGATE_ADMIN_ADDRESS/_PORT override it)");
  health->add_flag("--ready", health_ready, "Ask GET /readyz instead: CouchDB reachable and the first reconcile done");
  health->add_option("--timeout", health_timeout, "Seconds to wait for the answer")->check(CLI::PositiveNumber);

  // An unknown command: CLI11 would only say that a subcommand is required, not which word it
  // did not know.
  if (argc > 1 && argv[1][0] != '-') {
    const std::string word = argv[1];
    const auto subs = app.get_subcommands([](const CLI::App*) { return true; });
    if (std::none_of(subs.begin(), subs.end(), [&](const CLI::App* s) { return s->get_name() == word; })) {
      std::string names;
      for (const CLI::App* s : subs) names += (names.empty() ? "" : ", ") + s->get_name();
      std::cerr << "couchgate: unknown command '" << word << "' (commands: " << names << "; see --help)\n";
      return 2;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }

  if (*check) {
    auto cfg = load_or_report(check_path);
    if (!cfg) return 2;
    std::cout << check_path << ": OK\n";
    return 0;
  }
  if (*example) {
    std::cout << config_example();
    return 0;
  }
  if (*run) return run_daemon(run_config);
  if (*restore) return run_restore_cmd(restore_config, ropts);
  if (*health) return run_health_cmd(health_config, health_ready, health_timeout);
  return 2;
}

}  // namespace couchgate::gateway
