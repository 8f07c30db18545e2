// Owns: the provisioning phase (see phases.hpp).
//
// Ceilings first (unless skipped): the bench itself creates U databases + `_security` over
// fanin.max_connections connections (`ceiling`, the issue's), then again while writing the same
// user documents as couchgate's run, each database once its user is written
// (`ceiling_with_users`: the server's whole work for the run, and at a set rate its latency).
// The server is let settle (its CPU quiet) after each, and after deleting what it made.
// Then couchgate runs and is ready, reaching the server through the bench's tap (a recording
// proxy); the bench creates U users with the selection role at once (admin POST
// _users/_bulk_docs, 100 users per request, back to back) or, with --provision-rate R, one
// `PUT _users/org.couchdb.user:<name>` each, the i-th sent at start + i/R (writer threads, closed
// loop; a slow server gives fewer per second: see `achieved_rate`). With --provision-backlog the
// users are written first (at once, the server let settle), then couchgate starts: its first
// reconcile provisions them, timed from its start (no `ceiling_with_users`: the users' writes are
// outside the timing, so the bare ceiling is the server's whole work in it). A user is provisioned when
// the server answered 200 to couchgate's `PUT /<db>/_security` (seen by the tap: watching costs
// the server nothing); per-user latency runs from the send of the request carrying the user to
// that answer. Afterwards each database's `_security` is read once from the server and must
// name its user.
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
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
#include "tests/support/fault_proxy.hpp"

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

// The users' documents, written as the phase writes them; shared by couchgate's run and the
// ceiling with the user documents, so both give the server the same work.
struct user_writes {
  explicit user_writes(std::size_t n) : sent(n), ok(n) {
    for (auto& s : sent) s = -1;
    for (auto& o : ok) o = 0;
  }
  std::vector<std::atomic<std::int64_t>> sent;  // ns after `base` the request carrying each was sent
  std::vector<std::atomic<char>> ok;             // 1: the server said it wrote it
  std::mutex mu;                                // guards revs and first_error
  std::vector<std::pair<std::string, std::string>> revs;  // (id, rev) written, for cleanup
  std::string first_error;
  std::atomic<int> errors{0};
  std::atomic<double> seconds{0};  // from base until the last answer
};

// At once (pace 0): POST _users/_bulk_docs, 100 per request, back to back, one connection.
// Paced: one PUT _users/org.couchdb.user:<name> each, writer w sending users w, w+W, ... each at
// base + i/pace (or as soon as its previous PUT returned, when the server is slower than that).
// written(i) is called once the request carrying user i was answered (written or not).
void write_users(const std::vector<json>& docs, double pace, steady::time_point base, user_writes& w,
                 const std::function<void(std::size_t)>& written) {
  const auto since_base = [&] { return std::chrono::duration_cast<std::chrono::nanoseconds>(steady::now() - base).count(); };
  const auto failed = [&](int n, const std::string& what) {
    w.errors += n;
    std::lock_guard lk(w.mu);
    if (w.first_error.empty()) w.first_error = what;
  };
  if (pace > 0) {
    const int writers = std::max(2, static_cast<int>(pace / 25) + 1);
    std::vector<std::thread> ws;
    for (int k = 0; k < writers; ++k) {
      ws.emplace_back([&, k] {
        bench_client c(60s);
        for (std::size_t i = static_cast<std::size_t>(k); i < docs.size() && !interrupted(); i += static_cast<std::size_t>(writers)) {
          std::this_thread::sleep_until(base + std::chrono::duration_cast<steady::duration>(std::chrono::duration<double>(static_cast<double>(i) / pace)));
          w.sent[i] = since_base();
          const std::string id = docs[i].value("_id", "");
          auto r = c.put("/_users/" + test::enc(id), docs[i].dump());
          if ((r.status == 201 || r.status == 202) && r.body.is_object() && r.body.contains("rev") && r.body["rev"].is_string()) {
            w.ok[i] = 1;
            std::lock_guard lk(w.mu);
            w.revs.emplace_back(id, r.body["rev"].get<std::string>());
          } else {
            failed(1, describe(r));
          }
          written(i);
        }
      });
    }
    for (auto& t : ws) t.join();
  } else {
    bench_client c(120s);
    for (std::size_t off = 0; off < docs.size() && !interrupted(); off += 100) {
      const std::size_t end = std::min(docs.size(), off + 100);
      json batch = json::array();
      for (std::size_t i = off; i < end; ++i) batch.push_back(docs[i]);
      const auto t = since_base();
      for (std::size_t i = off; i < end; ++i) w.sent[i] = t;
      auto r = c.post("/_users/_bulk_docs", json{{"docs", batch}}.dump());
      if (r.status != 201 || !r.body.is_array()) {
        failed(static_cast<int>(end - off), describe(r));
      } else {
        // Rows in the order of the documents; one missing is a failed write.
        for (std::size_t i = off; i < end; ++i) {
          const std::size_t k = i - off;
          const json row = k < r.body.size() ? r.body[k] : json();
          if (row.is_object() && row.value("id", json()) == docs[i].value("_id", json()) && row.contains("rev") &&
              row["rev"].is_string()) {
            w.ok[i] = 1;
            std::lock_guard lk(w.mu);
            w.revs.emplace_back(row["id"].get<std::string>(), row["rev"].get<std::string>());
          } else {
            failed(1, row.is_null() ? "no row for " + docs[i].value("_id", std::string()) : row.dump());
          }
        }
      }
      for (std::size_t i = off; i < end; ++i) written(i);
    }
  }
  w.seconds.store(seconds_since(base));
}

}  // namespace

json run_provisioning(context& ctx, plot_data& plots) {
  const int u_count = ctx.opt.users;
  const double pace = ctx.opt.provision_rate;
  const bool backlog = ctx.opt.provision_backlog;
  json out{{"users", u_count}, {"passwords", ctx.opt.user_passwords}};
  if (pace > 0) out["rate"] = pace;
  if (backlog) out["backlog"] = true;
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
  bench_client admin(60s);
  auto cleanup = [&](const std::vector<std::pair<std::string, std::string>>& user_revs) {
    note("provisioning: cleaning up");
    delete_user_docs(admin, user_revs);
    std::vector<std::string> all = dbs;
    all.push_back(n.central);
    all.push_back(n.state);
    if (auto e = delete_dbs(ctx, all); !e.empty()) note("cleanup: " + e);
  };

  std::vector<json> docs;
  for (std::size_t i = 0; i < users.size(); ++i) {
    json doc{{"_id", "org.couchdb.user:" + users[i]}, {"name", users[i]}, {"type", "user"}, {"roles", {n.role}}};
    if (ctx.opt.user_passwords) doc["password"] = "pw-" + pad(static_cast<long long>(i), 6);
    docs.push_back(std::move(doc));
  }

  // Reference: the server work couchgate does per user (PUT /db, then PUT /db/_security), done by
  // the bench itself over as many connections as couchgate may use: `ceiling` (the issue's),
  // measured before couchgate's run and again after it (`ceiling_after`: the same server's pace
  // drifts by tens of percent within minutes, so the ratio is taken to their mean).
  // `ceiling_with_users` adds the rest of the server's work in couchgate's run: the same user
  // documents written as that run writes them (POST _users/_bulk_docs, 100 at a time, one
  // connection), each user's database made once its document is written. All go through a tap,
  // as couchgate's run does (below).
  const auto measure_ceiling = [&](const bool with_users, const std::string& key, const std::string& infix) {
    const int conns = cfg["fanin"].value("max_connections", 8);
    // The same shards couchgate creates (provisioning.q; its default when the config leaves it out).
    const std::size_t q = couchgate_q(cfg);
    const std::string base = n.prefix.substr(0, n.prefix.size() - std::string("-userdb-").size());
    std::vector<std::string> cdbs;
    for (int i = 0; i < u_count; ++i) {
      cdbs.push_back(base + infix + pad(i, 5));
      ctx.created(cdbs.back());  // whatever happens, the run's cleanup looks for them
    }
    note(std::string("provisioning: ceiling") + (with_users ? " with the user documents" : "") + " (the bench creates " +
         std::to_string(u_count) + " databases + _security over " + std::to_string(conns) + " connections)");
    wait_server_quiet(ctx.server_pid);
    // Users whose document is written (all of them at once without documents): each
    // database is made once its user's is, as couchgate would at best.
    std::vector<char> ready(users.size(), with_users ? 0 : 1);
    std::mutex ready_mu;
    std::condition_variable ready_cv;
    user_writes w(users.size());
    std::vector<std::int64_t> finished(users.size(), -1);
    const double cpu0 = read_usage(ctx.server_pid).cpu_seconds;
    const auto t = steady::now();
    std::thread writer;
    if (with_users) {
      writer = std::thread([&] {
        write_users(docs, pace, t, w, [&](std::size_t i) {
          {
            std::lock_guard lk(ready_mu);
            ready[i] = 1;  // (a failed write too: its database does not wait for it)
          }
          ready_cv.notify_all();
        });
      });
    }
    // Through a tap of its own, as couchgate's run reaches the server through one: all three
    // pay the same loopback hop (and its CPU on the same cores).
    test::fault_proxy ceiling_tap;
    endpoint via_tap = endpoint::server_admin();
    via_tap.host = "127.0.0.1";
    via_tap.port = ceiling_tap.port();
    auto tap_clients = make_clients(conns, via_tap);
    auto e = parallel_for(u_count, tap_clients, [&](int i, bench_client& c) -> std::string {
      const auto k = static_cast<std::size_t>(i);
      {
        std::unique_lock lk(ready_mu);
        while (!ready_cv.wait_for(lk, 100ms, [&] { return ready[k] != 0; })) {
          if (interrupted()) return "interrupted";
        }
      }
      const auto& db = cdbs[k];
      if (auto err = create_db(ctx, c, db, q_query(q)); !err.empty()) return err;
      json sec{{"admins", {{"names", json::array()}, {"roles", json::array()}}},
               {"members", {{"names", {users[k]}}, {"roles", json::array()}}}};
      auto r = c.put(db_path(db) + "/_security", sec.dump());
      finished[k] = std::chrono::duration_cast<std::chrono::nanoseconds>(steady::now() - t).count();
      return r.status == 200 || r.status == 201 ? std::string() : "PUT " + db + "/_security: " + describe(r);
    });
    if (writer.joinable()) writer.join();
    double secs = seconds_since(t);
    const double cpu = read_usage(ctx.server_pid).cpu_seconds - cpu0;
    if (e.empty() && w.errors.load() > 0) e = "writing the users: " + w.first_error;
    if (!e.empty()) ctx.fail(std::string("provisioning ") + key + ": " + e);
    else {
      out[key] = {{"seconds", round_to(secs)}, {"users_per_s", round_to(u_count / secs, 1)}, {"connections", conns}, {"q", q}};
      if (cpu0 >= 0 && cpu >= 0) out[key]["server_cpu_ms_per_user"] = round_to(cpu * 1000 / u_count, 2);
      if (with_users) {
        // Per user, from the send of its document to the answer to its `_security`: the
        // latency the server allows, for couchgate's own (latency_ms).
        std::vector<double> ms;
        for (std::size_t i = 0; i < users.size(); ++i) {
          if (w.sent[i] >= 0 && finished[i] >= 0) ms.push_back(std::max(0.0, static_cast<double>(finished[i] - w.sent[i]) / 1e6));
        }
        out[key]["latency_ms"] = latency_summary(ms);
      }
    }
    {
      bench_client c(120s);
      delete_user_docs(c, w.revs);
    }
    if (auto err = delete_dbs(ctx, cdbs); !err.empty()) note("cleanup: " + err);
    else
      for (const auto& db : cdbs) ctx.dropped(db);
  };
  const bool ceilings = !ctx.opt.skipped("ceiling");
  if (ceilings) {
    measure_ceiling(false, "ceiling", "-pceil-");
    // With a backlog the users are written before couchgate starts, outside its timing: the
    // bare ceiling is the whole of the server's work in the timed part.
    if (!backlog) measure_ceiling(true, "ceiling_with_users", "-pceilu-");
  }

  // couchgate reaches the server through the bench's tap (a recording TCP proxy on loopback):
  // when each user's `_security` write was answered is read off the wire, not asked of the
  // server, so watching costs the server nothing.
  user_writes w(users.size());
  for (const auto& db : dbs) ctx.created(db);  // whatever happens next, cleanup looks for them
  if (backlog) {
    // A first start on a server that has users: they are all written, the server let settle,
    // then couchgate starts and its first reconcile provisions them (timed from its start).
    note("provisioning: writing " + std::to_string(u_count) + " users before couchgate starts");
    write_users(docs, 0, steady::now(), w, [](std::size_t) {});
    for (auto& s : w.sent) s = 0;  // each user's latency runs from couchgate's start
  }
  wait_server_quiet(ctx.server_pid);
  test::fault_proxy tap;
  daemon_run d(ctx, cfg, "provisioning", test::proxy_env(tap));
  std::vector<std::atomic<std::int64_t>> done(users.size());
  for (auto& d_ : done) d_ = -1;
  double server_cpu0 = read_usage(ctx.server_pid).cpu_seconds;
  auto base = steady::now();
  d.start();
  if (!backlog && !d.wait_ready(60s)) {
    ctx.fail("provisioning: couchgate not ready; log tail:\n" + d.log_tail(30));
    out.update(d.stop("provisioning"));
    cleanup({});
    return out;
  }
  std::thread creator;
  if (!backlog) {
    server_cpu0 = read_usage(ctx.server_pid).cpu_seconds;
    base = steady::now();
    note("provisioning: creating " + std::to_string(u_count) + " users " +
         (pace > 0 ? "at " + std::to_string(pace) + " per second, one PUT each" : std::string("at once")));
    creator = std::thread([&] { write_users(docs, pace, base, w, [](std::size_t) {}); });
  } else {
    note("provisioning: couchgate started with " + std::to_string(u_count) + " users to provision");
  }

  // Watch without asking the server: every 25 ms (100 ms at once) the tap's records are read
  // for the server's 200 answers to couchgate's `PUT /<db>/_security`; a user is provisioned
  // from the first one (its database exists, as the write succeeded). Checked against the
  // server once all are in (below), after the timing. (The watch used to poll `_all_dbs` and
  // each new database's `_security`: on CouchDB 3.5.0 one prefix `_all_dbs` over 1000 names
  // costs ~56 ms of server CPU and a `_security` read ~2 ms, so the watch took a third of the
  // server from what it measured: 163% server CPU for 75 users/s, against 113 users/s unwatched.)
  std::unordered_map<std::string, std::size_t> by_target;
  for (std::size_t i = 0; i < dbs.size(); ++i) by_target.emplace(db_path(dbs[i]) + "/_security", i);
  std::size_t scanned = 0;  // records before this one are matched or never will be
  const double deadline = 60 + u_count / 20.0 + (pace > 0 ? u_count / pace : 0);
  poll_until(
      [&] {
        const auto recs = tap.requests_since(scanned);
        const std::size_t first = scanned;
        bool pending = false;  // a record still waiting for its answer: scanned again next time
        for (std::size_t j = 0; j < recs.size(); ++j) {
          const std::size_t k = first + j;
          const auto& rec = recs[j];
          if (rec.method != "PUT") continue;
          auto it = by_target.find(rec.target.substr(0, rec.target.find('?')));
          if (it == by_target.end()) continue;
          if (!rec.answered_at) {
            if (!pending) scanned = k;
            pending = true;
            continue;
          }
          if (rec.status != 200 && rec.status != 201) continue;
          const auto at = std::chrono::duration_cast<std::chrono::nanoseconds>(*rec.answered_at - base).count();
          if (done[it->second] < 0) done[it->second] = at;
        }
        if (!pending) scanned = first + recs.size();
        // With a backlog nothing waited for couchgate to be ready: noted here (its admin port is
        // read then, for its metrics), and a couchgate that exited ends the wait at once.
        if (backlog) {
          d.check_ready();
          if (!d.running()) return true;
        }
        // Done once every user is written and each one the server wrote is provisioned.
        if (w.seconds.load() <= 0) return false;
        for (std::size_t i = 0; i < users.size(); ++i) {
          if (w.ok[i] != 0 && done[i] < 0) return false;
        }
        return true;
      },
      std::chrono::duration<double>(deadline), pace > 0 ? 25ms : 100ms);
  if (creator.joinable()) creator.join();
  if (backlog && !d.running()) ctx.fail("provisioning: couchgate exited during its first start; log tail:\n" + d.log_tail(30));
  else if (backlog && !d.wait_ready(30s)) ctx.fail("provisioning: couchgate not ready after its first reconcile; log tail:\n" + d.log_tail(30));
  const double server_cpu = read_usage(ctx.server_pid).cpu_seconds - server_cpu0;
  // The server's word, after the timing: each database exists and its `_security` names the
  // user (a user the tap saw provisioned but the server does not confirm is not counted).
  std::atomic<std::size_t> confirmed{0}, seen_unconfirmed{0};
  std::mutex unconfirmed_mu;
  std::string first_unconfirmed;  // what the server said of the first one it did not confirm
  {
    auto checkers = make_clients(ctx.opt.threads);
    parallel_for(u_count, checkers, [&](int k, bench_client& c) -> std::string {
      const auto i = static_cast<std::size_t>(k);
      if (done[i] < 0) return "";
      // A read that failed (no answer, 5xx) is asked again: only the server's answer decides.
      reply sec;
      for (int attempt = 0; attempt < 3; ++attempt) {
        sec = c.get(db_path(dbs[i]) + "/_security");
        if (sec.status > 0 && sec.status < 500) break;
      }
      if (sec.status == 200 && security_names_user(sec.body, users[i])) {
        ++confirmed;
        return "";
      }
      done[i] = -1;
      ++seen_unconfirmed;
      std::lock_guard lk(unconfirmed_mu);
      if (first_unconfirmed.empty()) first_unconfirmed = dbs[i] + "/_security: " + describe(sec) + " " + sec.body.dump().substr(0, 200);
      return "";
    });
  }
  double total_secs = 0;
  std::vector<double> lat;
  for (std::size_t i = 0; i < users.size(); ++i) {
    if (done[i] < 0 || w.sent[i] < 0) continue;
    total_secs = std::max(total_secs, static_cast<double>(done[i]) / 1e9);
    lat.push_back(std::max(0.0, static_cast<double>(done[i] - w.sent[i]) / 1e6));
  }
  out["latency_ms"] = latency_summary(lat);
  std::sort(lat.begin(), lat.end());
  plots.provision_ms = lat;
  out["create_seconds"] = round_to(w.seconds.load());
  out["create_errors"] = w.errors.load();
  if (!w.first_error.empty()) out["first_create_error"] = w.first_error;
  out["provisioned"] = confirmed.load();
  out["seconds"] = round_to(total_secs);
  out["users_per_s"] = total_secs > 0 ? json(round_to(static_cast<double>(confirmed.load()) / total_secs, 1)) : json(nullptr);
  if (!ctx.opt.logs.empty()) {
    // Every request couchgate made, for profiling: sent, answer begun, its last byte (ms since
    // the users were first sent), method, status, target.
    std::error_code ec;
    std::filesystem::create_directories(ctx.opt.logs, ec);
    std::ofstream f(ctx.opt.logs + "/tap-provisioning.tsv");
    f << "sent_ms\tanswered_ms\tlast_byte_ms\tmethod\tstatus\ttarget\n";
    const auto ms = [&](steady::time_point t) { return std::chrono::duration<double, std::milli>(t - base).count(); };
    for (const auto& r : tap.requests()) {
      f << ms(r.at) << '\t' << (r.answered_at ? std::to_string(ms(*r.answered_at)) : "-") << '\t'
        << (r.last_byte_at ? std::to_string(ms(*r.last_byte_at)) : "-") << '\t' << r.method << '\t' << r.status << '\t'
        << r.target << '\n';
    }
  }
  if (server_cpu0 >= 0 && server_cpu >= 0) out["server_cpu_ms_per_user"] = round_to(server_cpu * 1000 / u_count, 2);
  out["observed"] = "the server's answers to couchgate's PUT _security, recorded by the bench's proxy; checked on the server after";
  {
    const auto recs = tap.requests();
    out["tap_requests"] = recs.size();
    // With a backlog, how much of the time was couchgate starting before it asked the server anything.
    if (backlog && !recs.empty()) out["first_request_ms"] = round_to(std::chrono::duration<double, std::milli>(recs.front().at - base).count(), 1);
  }
  if (pace > 0 && w.seconds.load() > 0) out["achieved_rate"] = round_to(static_cast<double>(users.size()) / w.seconds.load(), 1);
  auto m = d.metrics();
  if (m.count("couchgate_databases_provisioned_total")) out["couchgate_databases_provisioned"] = m["couchgate_databases_provisioned_total"];
  out.update(d.stop("provisioning"));
  // couchgate's sockets go to the tap, not to the server's port: counted there.
  out["sockets_peak"] = tap.peak_connections();
  std::size_t expected = 0;
  for (const auto& o : w.ok) expected += o != 0 ? 1 : 0;
  if (w.errors.load() > 0) ctx.fail("provisioning: creating " + std::to_string(w.errors.load()) + " users failed: " + w.first_error);
  if (confirmed.load() < expected) {
    std::string why;
    if (seen_unconfirmed.load() > 0) {
      why = " (" + std::to_string(seen_unconfirmed.load()) + " of them answered 200 to couchgate's `_security` write, then " +
            "the server did not confirm it; the first: " + first_unconfirmed + ")";
    }
    ctx.fail("provisioning: only " + std::to_string(confirmed.load()) + " of " + std::to_string(expected) +
             " users got their database and _security within " + std::to_string(static_cast<int>(deadline)) + " s" + why);
  }
  cleanup(w.revs);
  if (ceilings && !interrupted()) measure_ceiling(false, "ceiling_after", "-pceila-");
  return out;
}

}  // namespace couchgate::bench
