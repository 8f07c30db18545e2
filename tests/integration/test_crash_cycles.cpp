// Crash cycles: couchgate is killed with SIGKILL at random moments (seeded) while users are
// created (provisioning) and user databases are written (fan-in: creates, updates, deletions,
// conflicts, attachments, design documents), and while `couchgate restore` rebuilds user
// databases; after every cycle it starts again. At the end the central database equals the union
// of the user databases (tests/support/convergence.hpp), every selected user has a database with
// the policy's _security, and a restore killed mid-way and run again leaves each user database
// equal to what central holds for it.
//
// COUCHGATE_CHAOS_SEED=<n> replays a run (the seed is printed); COUCHGATE_FULL=1 runs 20 cycles
// of each kind instead of 3. (Kills during sign-up: test_signup.cpp, "sign-up crash cycles".)
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "policy/naming.hpp"
#include "tests/integration/fixtures.hpp"
#include "tests/support/convergence.hpp"
#include "tests/support/harness.hpp"

using namespace couchgate::test;
using namespace std::chrono_literals;

namespace {

// Random writes into one user database: every kind of change fan-in must carry.
class writer {
 public:
  explicit writer(std::mt19937_64& rng) : rng_(rng) {}

  void write(const std::string& db, int ops) {
    couch c;
    const std::string base = "/" + enc(db);
    for (int i = 0; i < ops; ++i) {
      const std::string id = "doc-" + std::to_string(rng_() % 12);
      switch (rng_() % 6) {
        case 0:
        case 1: {  // create or update
          auto cur = c.get(base + "/" + id);
          json body{{"n", static_cast<std::uint64_t>(rng_() % 1000000)}};
          if (cur.status == 200) body["_rev"] = cur.body["_rev"];
          c.put(base + "/" + id, body);
          break;
        }
        case 2: {  // delete
          auto cur = c.get(base + "/" + id);
          if (cur.status == 200) c.del(base + "/" + id + "?rev=" + enc(cur.body["_rev"].get<std::string>()));
          break;
        }
        case 3: {  // a conflicting branch, as a replication from elsewhere would write it
          const std::string h = "c" + std::to_string(rng_() % 100000);
          c.post(base + "/_bulk_docs",
                 json{{"new_edits", false},
                      {"docs", {{{"_id", id}, {"_rev", "3-" + h}, {"branch", h},
                                 {"_revisions", {{"start", 3}, {"ids", {h, "b" + h, "root"}}}}}}}});
          break;
        }
        case 4: {  // an attachment
          auto cur = c.get(base + "/" + id);
          json body{{"_attachments", {{"a.txt", {{"content_type", "text/plain"}, {"data", b64("att " + std::to_string(rng_()))}}}}}};
          if (cur.status == 200) body["_rev"] = cur.body["_rev"];
          c.put(base + "/" + id, body);
          break;
        }
        default: {  // a design document (data in central, never code)
          auto cur = c.get(base + "/_design/d");
          json body{{"views", {{"v" + std::to_string(rng_() % 3), {{"map", "function(d){ emit(d._id); }"}}}}}};
          if (cur.status == 200) body["_rev"] = cur.body["_rev"];
          c.put(base + "/_design/d", body);
        }
      }
    }
  }

 private:
  std::mt19937_64& rng_;
};

// Runs `couchgate restore --config path --all` and SIGKILLs it after `after` unless it ended
// first. Its exit status, or -9 when killed.
int restore_killed_after(const std::string& path, std::chrono::milliseconds after) {
  const pid_t child = fork();
  if (child == 0) {
    const int null = ::open("/dev/null", O_WRONLY);
    dup2(null, 1);
    dup2(null, 2);
    execl(couchgate_binary(), couchgate_binary(), "restore", "--config", path.c_str(), "--all", static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  const auto end = std::chrono::steady_clock::now() + after;
  while (waitpid(child, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() >= end) {
      ::kill(child, SIGKILL);
      waitpid(child, &status, 0);
      return -9;
    }
    std::this_thread::sleep_for(5ms);
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

}  // namespace

TEST_CASE("crash cycles: kill -9 at random moments during provisioning and fan-in loses and duplicates nothing") {
  const std::uint64_t seed = chaos_seed();
  const int cycles = chaos_cycles();
  MESSAGE("COUCHGATE_CHAOS_SEED=" << seed << " cycles=" << cycles);
  std::mt19937_64 rng(seed);
  auto n = fresh_names("chaos");
  json cfg = base_config(n);
  cfg["fanin"]["checkpoint_interval"] = "200ms";
  cfg["log"]["level"] = "info";
  std::map<std::string, std::string> db_owner;  // every selected user's database
  std::vector<std::string> users;
  auto add_user = [&] {
    users.push_back("u" + std::to_string(users.size()) + "-" + n.role);
    REQUIRE(create_user(users.back(), {n.role}).status == 201);
    db_owner[couchgate::policy::user_db_name(n.prefix, users.back())] = users.back();
  };
  for (int i = 0; i < 6; ++i) add_user();
  writer w(rng);
  couchgate_process cg(cfg);
  // The first users' databases exist before the cycles begin, so every cycle has sources to write.
  cg.start();
  REQUIRE_MESSAGE(cg.wait_ready(120s), tail(cg.log()));
  for (const auto& [db, owner] : db_owner)
    REQUIRE_MESSAGE(eventually([&] { return couch().get("/" + enc(db)).status == 200; }, 60s), db << tail(cg.log()));
  cg.kill9();
  int kills = 0, writes = 0;
  for (int cycle = 0; cycle < cycles; ++cycle) {
    CAPTURE(seed);
    CAPTURE(cycle);
    cg.start();
    // Users created around the start: the kill may land while they are provisioned.
    for (int k = 0; k < 2; ++k) add_user();
    // Writes into the databases that exist by now, spread over a random time, then the kill.
    const auto kill_after = std::chrono::milliseconds(rng() % 2500);
    const auto start = std::chrono::steady_clock::now();
    do {
      auto it = db_owner.begin();
      std::advance(it, static_cast<long>(rng() % db_owner.size()));
      if (couch().get("/" + enc(it->first)).status == 200) {
        const int ops = 1 + static_cast<int>(rng() % 5);
        w.write(it->first, ops);
        writes += ops;
      }
    } while (std::chrono::steady_clock::now() - start < kill_after);
    REQUIRE_MESSAGE(cg.running(), "couchgate exited by itself in cycle " << cycle << ":\n" << tail(cg.log()));
    cg.kill9();
    ++kills;
  }
  // The last start: everything converges.
  cg.start();
  REQUIRE_MESSAGE(cg.wait_ready(120s), tail(cg.log()));
  std::string problem;
  const bool provisioned = eventually(
      [&] {
        problem.clear();
        for (const auto& u : users)
          if (auto p = user_db_problem(n.prefix, u); !p.empty()) problem += p + "\n";
        return problem.empty();
      },
      120s);
  CHECK_MESSAGE(provisioned, "seed " << seed << ": " << problem << tail(cg.log()));
  db_state want;
  const std::string diff = wait_central_converged(n.central, db_owner, 120s, &want);
  const bool converged = diff.empty();
  CHECK_MESSAGE(converged, "seed " << seed << ":\n" << diff << tail(cg.log()));
  std::size_t leaves = 0, conflicted = 0, deleted = 0, with_attachments = 0;
  for (const auto& [id, s] : want) {
    leaves += s.leaves.size();
    conflicted += s.leaves.size() > 1;
    deleted += s.deleted;
    with_attachments += !s.attachments.empty();
  }
  MESSAGE("seed " << seed << ": " << kills << " kill -9 cycles survived, " << users.size() << " users, " << writes
                  << " writes; central holds " << want.size() << " documents (" << leaves << " leaves, " << conflicted
                  << " conflicted, " << deleted << " deleted, " << with_attachments << " with attachments); lost: "
                  << std::string(converged ? "nothing" : "see above"));
  CHECK(want.size() > 0);
  CHECK(cg.terminate() == 0);
  if (!converged || !provisioned) return;

  // Restore under kill -9: the user databases are lost, `couchgate restore --all` is killed at
  // random moments, then run to the end; each database is then what it was.
  std::map<std::string, db_state> original;
  for (const auto& [db, owner] : db_owner) original[db] = read_db_state(db);
  for (const auto& [db, owner] : db_owner) REQUIRE(couch().del("/" + enc(db)).status == 200);
  char tmpl[] = "/tmp/couchgate-chaos-XXXXXX";
  const std::string path = std::string(mkdtemp(tmpl)) + "/config.yaml";
  std::ofstream(path) << cfg.dump(2) << "\n";
  // `cycles` runs are killed at random moments. A run killed after it had finished a database
  // (restored, marker removed) leaves it complete: the next run rightly refuses it without
  // --merge and exits 1 — the state check below is what counts. A run that gets to the end
  // before its kill tells how long a whole restore takes here: later kills land within that
  // time, and the user databases are dropped again so the next run starts over (otherwise the
  // cycles would end with the first run that was faster than its kill).
  int restore_kills = 0, restore_runs = 0, completed_runs = 0;
  bool finished = false;
  std::optional<std::chrono::milliseconds> whole_run;
  while (restore_kills < cycles && restore_runs < 3 * cycles) {
    ++restore_runs;
    // Before a whole run was seen the window doubles (300 ms, 600 ms, ... up to 19 s): the first
    // kills land while the run starts and creates databases, later ones while it writes revisions.
    const auto window = whole_run ? *whole_run : std::chrono::milliseconds(300u << std::min(restore_runs - 1, 6));
    const auto after = std::chrono::milliseconds(10 + rng() % static_cast<std::uint64_t>(window.count() + 1));
    const auto began = std::chrono::steady_clock::now();
    const int status = restore_killed_after(path, after);
    CHECK_MESSAGE((status == -9 || status == 0 || status == 1), "seed " << seed << ": restore exited " << status);
    if (status == -9) {
      ++restore_kills;
      finished = false;
      continue;
    }
    finished = true;
    ++completed_runs;
    if (!whole_run) {
      whole_run = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - began);
    }
    if (restore_kills < cycles) {
      for (const auto& [db, owner] : db_owner) couch().del("/" + enc(db));
      finished = false;
    }
  }
  CHECK(restore_kills >= cycles);
  if (!finished) {
    auto full = run_couchgate({"restore", "--config", path, "--all"});
    bool only_finished_refused = full.status == 1;
    std::istringstream out(full.out + full.err);
    for (std::string line; std::getline(out, line);)
      if (line.find("FAILED") != std::string::npos && line.find("without --merge") == std::string::npos) only_finished_refused = false;
    CHECK_MESSAGE((full.status == 0 || only_finished_refused), "seed " << seed << ": " << full.out << full.err);
  }
  std::string restore_diff;
  std::size_t restored = 0;
  for (const auto& [db, owner] : db_owner) {
    auto d = state_diff(read_db_state(db), original[db]);
    if (!d.empty()) restore_diff += db + ":\n" + d;
    // A user without documents has nothing in central: restore has nothing to create for them
    // (the daemon provisions their database when it runs).
    if (original[db].empty()) continue;
    ++restored;
    if (auto p = user_db_problem(n.prefix, owner); !p.empty()) restore_diff += p + "\n";
  }
  CHECK_MESSAGE(restore_diff.empty(), "seed " << seed << ": after " << restore_kills << " killed restores:\n" << restore_diff);
  MESSAGE("seed " << seed << ": restore killed " << restore_kills << " times in " << restore_runs << " runs ("
                  << completed_runs << " ran to the end first, the databases dropped again after each), then completed; "
                  << restored << " user databases with documents " << std::string(restore_diff.empty() ? "equal to before" : "DIFFER"));
}
