// Owns: the provisioning phase (see phases.hpp).
//
// couchgate runs and is ready; the bench then creates U users with the selection role at once
// (admin POST _users/_bulk_docs, 100 users per request, back to back) and watches for each
// user's database and _security: every 100 ms one `_all_dbs` (prefix range), then GET _security
// of each database that appeared and is not confirmed yet. A user counts as provisioned when its
// database exists and `members.names` holds the user. Per-user latency is from the moment the
// request carrying the user was sent (an upper bound) to the first poll that saw it provisioned.
// With --provision-rate R the users come one `PUT _users/org.couchdb.user:<name>` each, the i-th
// sent at start + i/R (writer threads, closed loop; a slow server gives fewer per second: see
// `achieved_rate`), and the watch polls every 25 ms: the latency is then per user, from its own
// PUT to the poll that saw its database and _security (resolution ~25 ms plus the poll).
#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "policy/naming.hpp"
#include "tests/bench/client.hpp"
#include "tests/bench/daemon_run.hpp"
#include "tests/bench/dataset.hpp"
#include "tests/bench/phases.hpp"
#include "tests/bench/users.hpp"

namespace couchgate::bench {

namespace {
using namespace std::chrono_literals;

bool security_names_user(const json& sec, const std::string& user) {
  if (!sec.is_object() || !sec.contains("members") || !sec["members"].is_object()) return false;
  const auto& names = sec["members"].value("names", json::array());
  if (!names.is_array()) return false;
  for (const auto& nm : names) {
    if (nm.is_string() && nm.get<std::string>() == user) return true;
  }
  return false;
}

}  // namespace

json run_provisioning(context& ctx, plot_data& plots) {
  const int u_count = ctx.opt.users;
  const double pace = ctx.opt.provision_rate;
  json out{{"users", u_count}, {"passwords", ctx.opt.user_passwords}};
  if (pace > 0) out["rate"] = pace;
  if (u_count <= 0) return out;
  test::names n = ctx.fresh("bench-prov");
  json cfg = ctx.couchgate_config(n);
  ctx.created(n.central);
  ctx.created(n.state);
  std::vector<std::string> users, dbs;
  std::unordered_map<std::string, std::size_t> by_db;
  const std::string stem = n.role.substr(std::string("role-").size()) + "-";
  for (int i = 0; i < u_count; ++i) {
    users.push_back(stem + pad(i, 5));
    dbs.push_back(policy::user_db_name(n.prefix, users.back()));
    by_db.emplace(dbs.back(), users.size() - 1);
  }
  std::vector<std::pair<std::string, std::string>> created_revs;  // for cleanup
  bench_client admin(60s);
  auto cleanup = [&] {
    note("provisioning: cleaning up");
    delete_user_docs(admin, created_revs);
    std::vector<std::string> all = dbs;
    all.push_back(n.central);
    all.push_back(n.state);
    if (auto e = delete_dbs(ctx, all); !e.empty()) note("cleanup: " + e);
  };

  if (!ctx.opt.skipped("ceiling")) {
    // Reference: the server work couchgate does per user (PUT /db, then PUT /db/_security),
    // done by the bench itself over as many connections as couchgate may use.
    const int conns = cfg["fanin"].value("max_connections", 8);
    // The same shards couchgate creates (provisioning.q; its default when the config leaves it out).
    const std::size_t q = couchgate_q(cfg);
    std::string base = n.prefix.substr(0, n.prefix.size() - std::string("-userdb-").size());
    std::vector<std::string> cdbs;
    for (int i = 0; i < u_count; ++i) cdbs.push_back(base + "-pceil-" + pad(i, 5));
    note("provisioning: ceiling (the bench creates " + std::to_string(u_count) + " databases + _security over " +
         std::to_string(conns) + " connections)");
    auto t = steady::now();
    auto e = parallel_for(u_count, conns, [&](int i, bench_client& c) -> std::string {
      const auto& db = cdbs[static_cast<std::size_t>(i)];
      if (auto err = create_db(ctx, c, db, q_query(q)); !err.empty()) return err;
      json sec{{"admins", {{"names", json::array()}, {"roles", json::array()}}},
               {"members", {{"names", {users[static_cast<std::size_t>(i)]}}, {"roles", json::array()}}}};
      auto r = c.put(db_path(db) + "/_security", sec.dump());
      return r.status == 200 || r.status == 201 ? std::string() : "PUT " + db + "/_security: " + describe(r);
    });
    double secs = seconds_since(t);
    if (!e.empty()) ctx.fail("provisioning ceiling: " + e);
    else out["ceiling"] = {{"seconds", round_to(secs)}, {"users_per_s", round_to(u_count / secs, 1)}, {"connections", conns}, {"q", q}};
    if (auto err = delete_dbs(ctx, cdbs); !err.empty()) note("cleanup: " + err);
  }

  daemon_run d(ctx, cfg, "provisioning");
  d.start();
  if (!d.wait_ready(60s)) {
    ctx.fail("provisioning: couchgate not ready; log tail:\n" + d.log_tail(30));
    out.update(d.stop("provisioning"));
    cleanup();
    return out;
  }
  for (const auto& db : dbs) ctx.created(db);  // whatever happens next, cleanup looks for them

  std::vector<std::atomic<std::int64_t>> sent(users.size()), done(users.size());
  for (std::size_t i = 0; i < users.size(); ++i) sent[i] = done[i] = -1;
  const auto base = steady::now();
  auto now_ns = [&] { return std::chrono::duration_cast<std::chrono::nanoseconds>(steady::now() - base).count(); };
  std::atomic<int> create_errors{0};
  std::string first_error;
  std::atomic<double> create_secs{0};
  std::mutex rev_mu;

  auto user_doc = [&](std::size_t i) {
    json doc{{"_id", "org.couchdb.user:" + users[i]}, {"name", users[i]}, {"type", "user"}, {"roles", {n.role}}};
    if (ctx.opt.user_passwords) doc["password"] = "pw-" + pad(static_cast<long long>(i), 6);
    return doc;
  };
  // Paced: writer w sends users w, w+W, ... each at base + i/rate (or as soon as its previous
  // PUT returned, when the server is slower than that).
  auto paced = [&] {
    const int writers = std::max(2, static_cast<int>(pace / 25) + 1);
    std::vector<std::thread> ws;
    for (int w = 0; w < writers; ++w) {
      ws.emplace_back([&, w] {
        bench_client c(60s);
        for (std::size_t i = static_cast<std::size_t>(w); i < users.size() && !interrupted(); i += static_cast<std::size_t>(writers)) {
          std::this_thread::sleep_until(base + std::chrono::duration_cast<steady::duration>(std::chrono::duration<double>(static_cast<double>(i) / pace)));
          sent[i] = now_ns();
          auto r = c.put("/_users/" + test::enc("org.couchdb.user:" + users[i]), user_doc(i).dump());
          std::lock_guard lk(rev_mu);
          if ((r.status == 201 || r.status == 202) && r.body.is_object() && r.body.contains("rev")) {
            created_revs.emplace_back("org.couchdb.user:" + users[i], r.body["rev"].get<std::string>());
          } else {
            ++create_errors;
            if (first_error.empty()) first_error = describe(r);
          }
        }
      });
    }
    for (auto& t : ws) t.join();
    create_secs.store(seconds_since(base));
  };
  note("provisioning: creating " + std::to_string(u_count) + " users " +
       (pace > 0 ? "at " + std::to_string(pace) + " per second, one PUT each" : std::string("at once")));
  std::thread creator(pace > 0 ? std::function<void()>(paced) : std::function<void()>([&] {
    bench_client c(120s);
    const std::size_t chunk = 100;
    for (std::size_t off = 0; off < users.size() && !interrupted(); off += chunk) {
      json docs = json::array();
      std::size_t end = std::min(users.size(), off + chunk);
      for (std::size_t i = off; i < end; ++i) docs.push_back(user_doc(i));
      auto t = now_ns();
      for (std::size_t i = off; i < end; ++i) sent[i] = t;
      auto r = c.post("/_users/_bulk_docs", json{{"docs", docs}}.dump());
      if (r.status != 201 || !r.body.is_array()) {
        create_errors += static_cast<int>(end - off);
        std::lock_guard lk(rev_mu);
        if (first_error.empty()) first_error = describe(r);
        continue;
      }
      std::lock_guard lk(rev_mu);
      for (const auto& row : r.body) {
        if (row.is_object() && row.contains("rev") && row.contains("id")) {
          created_revs.emplace_back(row["id"].get<std::string>(), row["rev"].get<std::string>());
        } else {
          ++create_errors;
          if (first_error.empty()) first_error = row.dump();
        }
      }
    }
    create_secs.store(seconds_since(base));
  }));

  // Watch: one _all_dbs per 100 ms, then the _security of each database that appeared and is
  // not confirmed yet, read in parallel over a few kept-alive connections.
  std::atomic<std::size_t> confirmed{0};
  auto checkers = make_clients(ctx.opt.threads);
  std::string range = "startkey=" + test::enc(json(n.prefix).dump()) + "&endkey=" + test::enc(json(n.prefix + "\xef\xbf\xb0").dump());
  const double deadline = 60 + u_count / 20.0;
  poll_until(
      [&] {
        auto r = admin.get("/_all_dbs?" + range);
        if (r.status != 200 || !r.body.is_array()) return false;
        std::vector<std::size_t> fresh;
        for (const auto& v : r.body) {
          if (!v.is_string()) continue;
          auto it = by_db.find(v.get<std::string>());
          if (it != by_db.end() && done[it->second] < 0) fresh.push_back(it->second);
        }
        parallel_for(static_cast<int>(fresh.size()), checkers, [&](int k, bench_client& c) -> std::string {
          std::size_t i = fresh[static_cast<std::size_t>(k)];
          auto sec = c.get(db_path(dbs[i]) + "/_security");
          if (sec.status == 200 && security_names_user(sec.body, users[i])) {
            done[i] = now_ns();
            ++confirmed;
          }
          return "";
        });
        return confirmed.load() >= users.size() - static_cast<std::size_t>(create_errors.load()) && create_secs.load() > 0;
      },
      std::chrono::duration<double>(deadline), pace > 0 ? 25ms : 100ms);
  creator.join();
  double total_secs = 0;
  std::vector<double> lat;
  for (std::size_t i = 0; i < users.size(); ++i) {
    if (done[i] < 0 || sent[i] < 0) continue;
    total_secs = std::max(total_secs, static_cast<double>(done[i]) / 1e9);
    lat.push_back(std::max(0.0, static_cast<double>(done[i] - sent[i]) / 1e6));
  }
  std::sort(lat.begin(), lat.end());
  plots.provision_ms = lat;
  out["create_seconds"] = round_to(create_secs.load());
  out["create_errors"] = create_errors.load();
  if (!first_error.empty()) out["first_create_error"] = first_error;
  out["provisioned"] = confirmed.load();
  out["seconds"] = round_to(total_secs);
  out["users_per_s"] = total_secs > 0 ? json(round_to(static_cast<double>(confirmed.load()) / total_secs, 1)) : json(nullptr);
  out["latency_ms"] = json{{"p50", round_to(percentile(lat, 50), 1)}, {"p99", round_to(percentile(lat, 99), 1)},
                           {"max", lat.empty() ? -1.0 : round_to(lat.back(), 1)}};
  out["poll_interval_ms"] = pace > 0 ? 25 : 100;
  if (pace > 0 && create_secs.load() > 0) out["achieved_rate"] = round_to(static_cast<double>(users.size()) / create_secs.load(), 1);
  auto m = d.metrics();
  if (m.count("couchgate_databases_provisioned_total")) out["couchgate_databases_provisioned"] = m["couchgate_databases_provisioned_total"];
  out.update(d.stop("provisioning"));
  std::size_t expected = users.size() - static_cast<std::size_t>(create_errors.load());
  if (create_errors.load() > 0) ctx.fail("provisioning: creating " + std::to_string(create_errors.load()) + " users failed: " + first_error);
  if (confirmed.load() < expected) {
    ctx.fail("provisioning: only " + std::to_string(confirmed.load()) + " of " + std::to_string(expected) +
             " users got their database and _security within " + std::to_string(static_cast<int>(deadline)) + " s");
  }
  cleanup();
  return out;
}

}  // namespace couchgate::bench
