// Owns: the sign-up phase (see phases.hpp).
//
// couchgate runs with the front door and identities on (signed-up users get the selection role,
// so the provisioner creates their databases). The bench then sends N `POST /_signup` to the
// front door from C client threads (one keep-alive connection each, closed loop: a thread sends
// its next sign-up when the previous one answered). A sign-up's latency is from its send to its
// 201, which couchgate answers only once the user's database and `_security` exist (or after
// identities.provision_wait: counted as `not_ready`). `signups_per_s` = N / (last 201 − first
// send). `ceiling`: the server work of a sign-up without couchgate's bookkeeping — `PUT _users`
// (with a password: the server hashes it), `PUT /db`, `PUT /db/_security` — done by the bench
// over the same C connections, before couchgate starts.
#include <httplib.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "policy/naming.hpp"
#include "tests/bench/client.hpp"
#include "tests/bench/daemon_run.hpp"
#include "tests/bench/dataset.hpp"
#include "tests/bench/phases.hpp"

namespace couchgate::bench {

namespace {
using namespace std::chrono_literals;

// Deletes the _users documents of these names (whichever exist).
void delete_user_docs(bench_client& c, const std::vector<std::string>& names) {
  for (std::size_t off = 0; off < names.size(); off += 500) {
    json keys = json::array();
    for (std::size_t i = off; i < std::min(names.size(), off + 500); ++i) keys.push_back("org.couchdb.user:" + names[i]);
    auto r = c.post("/_users/_all_docs", json{{"keys", keys}}.dump());
    if (r.status != 200 || !r.body.is_object() || !r.body["rows"].is_array()) {
      note("cleanup: listing users failed: " + describe(r));
      continue;
    }
    json docs = json::array();
    for (const auto& row : r.body["rows"]) {
      if (!row.contains("value") || !row["value"].is_object() || row["value"].value("deleted", false)) continue;
      docs.push_back({{"_id", row["id"]}, {"_rev", row["value"]["rev"]}, {"_deleted", true}});
    }
    if (docs.empty()) continue;
    auto d = c.post("/_users/_bulk_docs", json{{"docs", docs}}.dump());
    if (d.status != 201) note("cleanup: deleting users failed: " + describe(d));
  }
}

int read_port_file(const std::string& path) {
  std::ifstream in(path);
  int port = 0;
  in >> port;
  return port;
}

// Runs fn(i, client) for i in [0, n) on `threads` threads, each with its own keep-alive
// connection to the front door, closed loop.
void front_loop(int port, int n, int threads, const std::function<void(int, httplib::Client&)>& fn) {
  std::atomic<int> next{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&] {
      httplib::Client c("127.0.0.1", port);
      c.set_keep_alive(true);
      c.set_tcp_nodelay(true);
      c.set_connection_timeout(10);
      c.set_read_timeout(120);
      for (int i; (i = next.fetch_add(1)) < n && !interrupted();) fn(i, c);
    });
  }
  for (auto& t : ts) t.join();
}
}  // namespace

json run_signup(context& ctx) {
  const int count = ctx.opt.signups, conc = std::max(1, ctx.opt.signup_concurrency);
  json out{{"signups", count}, {"concurrency", conc}};
  if (count <= 0) return out;
  test::names n = ctx.fresh("bench-signup");
  const std::string ids_db = n.state + "-ids";
  ctx.created(n.central);
  ctx.created(n.state);
  ctx.created(ids_db);
  char tmpl[] = "/tmp/couchgate-bench-signup-XXXXXX";
  const std::string dir = mkdtemp(tmpl) ? tmpl : "";
  json cfg = ctx.couchgate_config(n);
  cfg["front"] = json{{"enabled", true}, {"address", "127.0.0.1"}, {"port", 0}, {"port_file", dir + "/front.port"},
                      {"allow_insecure", true}};
  cfg["identities"] = json{{"enabled", true}, {"db", ids_db}, {"roles", {n.role}}, {"rate_limit", 100000000}};
  cfg.merge_patch(ctx.opt.couchgate_overrides);  // --couchgate-config wins here too

  const std::string stem = n.role.substr(std::string("role-").size()) + "-";
  std::vector<std::string> users, dbs, ceil_users, ceil_dbs;
  for (int i = 0; i < count; ++i) {
    users.push_back(stem + "s" + pad(i, 5));
    dbs.push_back(policy::user_db_name(n.prefix, users.back()));
    ceil_users.push_back(stem + "c" + pad(i, 5));
    ceil_dbs.push_back(policy::user_db_name(n.prefix, ceil_users.back()) + "-ceil");
  }
  for (const auto& db : dbs) ctx.created(db);
  bench_client admin(60s);
  auto cleanup = [&] {
    note("sign-up: cleaning up");
    std::vector<std::string> all_users = users;
    all_users.insert(all_users.end(), ceil_users.begin(), ceil_users.end());
    delete_user_docs(admin, all_users);
    std::vector<std::string> all = dbs;
    all.insert(all.end(), ceil_dbs.begin(), ceil_dbs.end());
    all.push_back(n.central);
    all.push_back(n.state);
    all.push_back(ids_db);
    if (auto e = delete_dbs(ctx, all); !e.empty()) note("cleanup: " + e);
    std::error_code ec;
    if (!dir.empty()) std::filesystem::remove_all(dir, ec);
  };

  if (!ctx.opt.skipped("ceiling")) {
    note("sign-up: ceiling (the bench writes " + std::to_string(count) + " users with passwords + database + _security over " +
         std::to_string(conc) + " connections)");
    std::vector<double> lat(static_cast<std::size_t>(count), -1);
    auto t = steady::now();
    auto e = parallel_for(count, conc, [&](int i, bench_client& c) -> std::string {
      const auto k = static_cast<std::size_t>(i);
      const auto t0 = steady::now();
      json doc{{"_id", "org.couchdb.user:" + ceil_users[k]}, {"name", ceil_users[k]}, {"type", "user"},
               {"roles", json::array()}, {"password", "bench-pw-" + pad(i, 6)}, {"email", ceil_users[k] + "@bench.example"}};
      auto u = c.put("/_users/" + test::enc("org.couchdb.user:" + ceil_users[k]), doc.dump());
      if (u.status != 201 && u.status != 202) return "PUT _users: " + describe(u);
      if (auto err = create_db(ctx, c, ceil_dbs[k]); !err.empty()) return err;
      json sec{{"admins", {{"names", json::array()}, {"roles", json::array()}}},
               {"members", {{"names", {ceil_users[k]}}, {"roles", json::array()}}}};
      auto r = c.put(db_path(ceil_dbs[k]) + "/_security", sec.dump());
      if (r.status != 200 && r.status != 201) return "PUT _security: " + describe(r);
      lat[k] = std::chrono::duration<double, std::milli>(steady::now() - t0).count();
      return "";
    });
    const double secs = seconds_since(t);
    std::sort(lat.begin(), lat.end());
    if (!e.empty()) ctx.fail("sign-up ceiling: " + e);
    else {
      out["ceiling"] = {{"seconds", round_to(secs)}, {"signups_per_s", round_to(count / secs, 1)},
                        {"latency_ms", {{"p50", round_to(percentile(lat, 50), 1)}, {"p99", round_to(percentile(lat, 99), 1)}}}};
    }
    if (auto err = delete_dbs(ctx, ceil_dbs); !err.empty()) note("cleanup: " + err);
  }

  daemon_run d(ctx, cfg, "signup");
  d.start();
  int port = 0;
  if (!d.wait_ready(60s) || !poll_until([&] { return (port = read_port_file(dir + "/front.port")) > 0; }, 10s, 20ms)) {
    ctx.fail("sign-up: couchgate not ready; log tail:\n" + d.log_tail(30));
    out.update(d.stop("signup"));
    cleanup();
    return out;
  }

  note("sign-up: " + std::to_string(count) + " sign-ups through the front door, " + std::to_string(conc) + " at a time");
  std::vector<double> lat;
  std::mutex mu;
  std::atomic<int> created{0}, not_ready{0}, failed{0};
  std::string first_error;
  const auto t0 = steady::now();
  std::atomic<std::int64_t> last_ns{0};
  front_loop(port, count, conc, [&](int i, httplib::Client& c) {
    const auto k = static_cast<std::size_t>(i);
    json body{{"name", users[k]}, {"password", "bench-pw-" + pad(i, 6)}, {"email", users[k] + "@bench.example"}};
    const auto sent = steady::now();
    auto r = c.Post("/_signup", body.dump(), "application/json");
    const auto got = steady::now();
    if (!r || r->status != 201) {
      ++failed;
      std::lock_guard lk(mu);
      if (first_error.empty()) {
        first_error = r ? "HTTP " + std::to_string(r->status) + " " + r->body.substr(0, 300) : httplib::to_string(r.error());
      }
      return;
    }
    ++created;
    if (r->body.find("\"ready\":true") == std::string::npos) ++not_ready;
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(got - t0).count();
    for (auto cur = last_ns.load(); ns > cur && !last_ns.compare_exchange_weak(cur, ns);) {
    }
    std::lock_guard lk(mu);
    lat.push_back(std::chrono::duration<double, std::milli>(got - sent).count());
  });
  std::sort(lat.begin(), lat.end());
  const double secs = static_cast<double>(last_ns.load()) / 1e9;
  out["created"] = created.load();
  out["not_ready"] = not_ready.load();
  out["failed"] = failed.load();
  if (!first_error.empty()) out["first_error"] = first_error;
  out["seconds"] = round_to(secs);
  out["signups_per_s"] = secs > 0 ? json(round_to(created.load() / secs, 1)) : json(nullptr);
  out["latency_ms"] = json{{"p50", round_to(percentile(lat, 50), 1)}, {"p99", round_to(percentile(lat, 99), 1)},
                           {"max", lat.empty() ? -1.0 : round_to(lat.back(), 1)}};
  auto m = d.metrics();
  if (m.count("couchgate_signups_total")) out["couchgate_signups"] = m["couchgate_signups_total"];
  out.update(d.stop("signup"));
  if (failed.load() > 0) ctx.fail("sign-up: " + std::to_string(failed.load()) + " of " + std::to_string(count) + " failed: " + first_error);
  if (not_ready.load() > 0) {
    ctx.fail("sign-up: " + std::to_string(not_ready.load()) + " users were not provisioned within identities.provision_wait");
  }
  cleanup();
  return out;
}

}  // namespace couchgate::bench
