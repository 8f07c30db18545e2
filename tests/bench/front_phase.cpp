// Owns: the front-door phase of issue #13 (see phases.hpp).
//
// K users (each with a password and a database with _security naming them) replicate the way
// PouchDB does, all at once, each over its own keep-alive connection:
//   info     GET {db}
//   push     per batch of B documents: POST _revs_diff, POST _bulk_docs new_edits:false, PUT the
//            _local checkpoint
//   pull     GET _changes?style=all_docs&since=S&limit=B, POST _bulk_get?revs=true for the rows,
//            PUT the _local checkpoint; until a _changes answer is empty
// once straight to the server ({db} = /userdb-...) and once through couchgate's front door
// ({db} = /me, plain HTTP with front.allow_insecure), with the user's own Basic credentials.
// Segments run in the order direct, front, front, direct (fresh document ids each), so a server
// that slows down over the run does not favour either side. couchgate runs through all four
// (fan-in off: this measures the front door, not replication into the central database).
// Throughput ratio = front documents/s / direct documents/s; added latency = front - direct per
// percentile, over every request (and per kind of request).
#include <algorithm>
#include <cstdlib>
#include <atomic>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "tests/bench/client.hpp"
#include "tests/bench/daemon_run.hpp"
#include "tests/bench/dataset.hpp"
#include "tests/bench/phases.hpp"
#include "tests/bench/runner.hpp"
#include "tests/bench/users.hpp"

namespace couchgate::bench {

namespace {
using namespace std::chrono_literals;

// Every request of one side (direct or front), by kind.
struct side_record {
  std::mutex mu;
  std::map<std::string, std::vector<double>> ms_by_kind;
  std::uint64_t docs_pushed = 0, docs_pulled = 0, errors = 0;
  double seconds = 0;  // summed over this side's segments
  std::string first_error;
  double server_cpu_seconds = 0;
  bool server_cpu_known = true;
};

// One user's replication round trip (push then pull) against base (/me or /userdb-...).
void replicate(const endpoint& to, const std::string& base, const bench_user& u, int seg, int docs, int batch,
               side_record& rec) {
  bench_client c(to, 60s);
  std::map<std::string, std::vector<double>> local;
  std::uint64_t pushed = 0, pulled = 0, errors = 0;
  std::string first_error;
  auto timed = [&](const char* kind, auto&& call) {
    auto t0 = steady::now();
    reply r = call();
    local[kind].push_back(seconds_since(t0) * 1000.0);
    return r;
  };
  auto bad = [&](const char* what, const reply& r) {
    ++errors;
    if (first_error.empty()) first_error = std::string(what) + " as " + u.name + ": " + describe(r);
  };
  // PouchDB's checkpoint after each batch: PUT _local/<name> with the previous revision.
  auto checkpoint = [&](const std::string& name, const json& last_seq, std::string& rev) {
    json cp{{"last_seq", last_seq}, {"session_id", "bench"}};
    if (!rev.empty()) cp["_rev"] = rev;
    reply rc = timed("checkpoint", [&] { return c.put(base + "/_local/" + name, cp.dump()); });
    if (rc.status != 201 || !rc.body.contains("rev")) {
      bad("PUT _local", rc);
      return false;
    }
    rev = rc.body["rev"].get<std::string>();
    return true;
  };
  reply info = timed("info", [&] { return c.get(base); });
  if (info.status != 200 || !info.body.contains("update_seq")) {
    bad("GET {db}", info);
  } else {
    json since = info.body["update_seq"];
    // push
    const source_db src{u.name + "s" + std::to_string(seg), u.db};  // ids unique per segment
    std::string push_rev;
    for (int off = 0; off < docs && !interrupted(); off += batch) {
      json diff = json::object();
      std::map<std::string, json> by_id;
      for (int j = off; j < std::min(docs, off + batch); ++j) {
        json d = source_doc(src, j);
        diff[d["_id"].get<std::string>()] = json::array({d["_rev"]});
        by_id.emplace(d["_id"].get<std::string>(), std::move(d));
      }
      reply rd = timed("revs_diff", [&] { return c.post(base + "/_revs_diff", diff.dump()); });
      if (rd.status != 200 || !rd.body.is_object()) {
        bad("_revs_diff", rd);
        break;
      }
      json out = json::array();
      for (auto& [id, d] : by_id) {
        if (rd.body.contains(id)) out.push_back(d);
      }
      reply rb = timed("bulk_docs", [&] { return c.post(base + "/_bulk_docs", json{{"new_edits", false}, {"docs", out}}.dump()); });
      if (rb.status != 201) {
        bad("_bulk_docs", rb);
        break;
      }
      pushed += out.size();
      if (!checkpoint("push-" + std::to_string(seg), off + batch, push_rev)) break;
    }
    // pull: what this user's other device would fetch
    std::string pull_rev;
    for (int round = 0; errors == 0 && !interrupted() && round < docs / std::max(1, batch) + 2; ++round) {
      reply ch = timed("changes", [&] {
        return c.get(base + "/_changes?style=all_docs&limit=" + std::to_string(batch) + "&since=" + seq_param(since));
      });
      if (ch.status != 200 || !ch.body.contains("results") || !ch.body["results"].is_array()) {
        bad("_changes", ch);
        break;
      }
      if (ch.body["results"].empty()) break;
      json want = json::array();
      for (const auto& row : ch.body["results"]) {
        if (!row.contains("changes") || row["changes"].empty()) continue;
        want.push_back({{"id", row["id"]}, {"rev", row["changes"][0]["rev"]}});
      }
      reply bg = timed("bulk_get", [&] { return c.post(base + "/_bulk_get?revs=true", json{{"docs", want}}.dump()); });
      if (bg.status != 200 || !bg.body.contains("results")) {
        bad("_bulk_get", bg);
        break;
      }
      pulled += bg.body["results"].size();
      since = ch.body["last_seq"];
      if (!checkpoint("pull-" + std::to_string(seg), since, pull_rev)) break;
    }
  }
  std::lock_guard lk(rec.mu);
  for (auto& [k, v] : local) rec.ms_by_kind[k].insert(rec.ms_by_kind[k].end(), v.begin(), v.end());
  rec.docs_pushed += pushed;
  rec.docs_pulled += pulled;
  rec.errors += errors;
  if (rec.first_error.empty()) rec.first_error = first_error;
}

// One round's figures added to the whole run's.
void add_round(side_record& all, const side_record& r) {
  for (const auto& [kind, v] : r.ms_by_kind) all.ms_by_kind[kind].insert(all.ms_by_kind[kind].end(), v.begin(), v.end());
  all.docs_pushed += r.docs_pushed;
  all.docs_pulled += r.docs_pulled;
  all.errors += r.errors;
  all.seconds += r.seconds;
  all.server_cpu_seconds += r.server_cpu_seconds;
  all.server_cpu_known = all.server_cpu_known && r.server_cpu_known;
  if (all.first_error.empty()) all.first_error = r.first_error;
}

json side_json(side_record& r, std::uint64_t expected_docs) {
  std::vector<double> all;
  json kinds = json::object();
  for (const auto& [k, v] : r.ms_by_kind) {
    all.insert(all.end(), v.begin(), v.end());
    kinds[k] = latency_summary(v, 2);
  }
  const double docs = static_cast<double>(r.docs_pushed + r.docs_pulled);
  json out{{"seconds", round_to(r.seconds)},
           {"requests", all.size()},
           {"docs_pushed", r.docs_pushed},
           {"docs_pulled", r.docs_pulled},
           {"docs_expected_each_way", expected_docs},
           {"docs_per_s", r.seconds > 0 ? round_to(docs / r.seconds, 1) : 0.0},
           {"requests_per_s", r.seconds > 0 ? round_to(static_cast<double>(all.size()) / r.seconds, 1) : 0.0},
           {"latency_ms", latency_summary(all, 2)},
           {"latency_ms_by_request", kinds},
           {"errors", r.errors}};
  out["server_cpu_seconds"] = r.server_cpu_known ? json(round_to(r.server_cpu_seconds, 2)) : json(nullptr);
  if (!r.first_error.empty()) out["first_error"] = r.first_error;
  return out;
}

double at(const json& j, const char* a, const char* b) {
  return j.contains(a) && j[a].contains(b) && j[a][b].is_number() ? j[a][b].get<double>() : -1;
}

}  // namespace

json run_front(context& ctx) {
  const int k = ctx.opt.front_users, docs = ctx.opt.front_docs, batch = std::max(1, ctx.opt.front_batch);
  const bool tls = ctx.opt.front_tls;
  // Both sides over TLS when the server has its own listener ([ssl]); else the direct side is plain.
  const int direct_tls_port = tls ? ctx.opt.front_direct_tls_port : 0;
  json out{{"users", k}, {"docs_per_user_per_segment", docs}, {"batch", batch},
           {"transport", tls ? "TLS (front.tls, self-signed RSA-2048 certificate; the bench does not verify it)" : "plain HTTP (front.allow_insecure)"},
           {"direct_transport", direct_tls_port > 0 ? "TLS (the server's [ssl] listener, port " + std::to_string(direct_tls_port) + ")"
                                                    : std::string("plain HTTP (the server's URL)")},
           {"rounds", std::max(1, ctx.opt.front_rounds)},
           {"segments", {"direct", "front", "front", "direct"}}};
  if (k <= 0 || docs <= 0) return out;
  test::names n = ctx.fresh("bench-front");
  auto users = make_users(n.prefix, "f", k);
  note("front door: creating " + std::to_string(k) + " users and their databases");
  if (auto e = create_users(ctx, users, n.role); !e.empty()) {
    ctx.fail("front door: " + e);
    delete_users(ctx, users);
    return out;
  }
  std::string dir = make_temp_dir("couchgate-bench-front");
  json cfg = ctx.couchgate_config(n);
  cfg["fanin"]["enabled"] = false;
  cfg["front"] = front_door_config(dir + "/front.port", static_cast<std::size_t>(k) + 64);
  if (tls) {
    const std::string cmd = "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost -keyout '" + dir +
                            "/key.pem' -out '" + dir + "/cert.pem' >/dev/null 2>&1";
    if (std::system(cmd.c_str()) != 0) {
      ctx.fail("front door: `openssl req` could not make a certificate for the TLS variant");
      remove_dir(dir);
      delete_users(ctx, users);
      return out;
    }
    cfg["front"]["allow_insecure"] = false;
    cfg["front"]["tls"] = {{"cert_file", dir + "/cert.pem"}, {"key_file", dir + "/key.pem"}};
  }
  cfg.merge_patch(ctx.opt.couchgate_overrides);  // --couchgate-config may tune the front door too
  ctx.created(n.central);
  ctx.created(n.state);
  out["couchgate_front_config"] = cfg["front"];
  {
    daemon_run d(ctx, cfg, "front");
    d.start();
    const int port = d.wait_ready(60s) ? d.front_port(20s) : 0;
    if (port <= 0) {
      ctx.fail("front door: couchgate's front door did not start; log tail:\n" + d.log_tail(30));
      out.update(d.stop("front door"));
    } else {
      side_record direct, front;
      const endpoint server = endpoint::server_admin();
      const char* order[] = {"direct", "front", "front", "direct"};
      // Each round is the four segments again (fresh ids): the server's pace drifts by several
      // ms of p50 between segments, so one round's figures scatter; every round is reported
      // alone, and the headline pools them all.
      const int rounds = std::max(1, ctx.opt.front_rounds), segments = 4 * rounds;
      std::deque<side_record> round_direct(static_cast<std::size_t>(rounds)), round_front(static_cast<std::size_t>(rounds));
      for (int seg = 0; seg < segments && !interrupted(); ++seg) {
        const bool via_front = std::string(order[seg % 4]) == "front";
        side_record& round_rec = via_front ? round_front[static_cast<std::size_t>(seg / 4)] : round_direct[static_cast<std::size_t>(seg / 4)];
        note("front door: segment " + std::to_string(seg + 1) + "/" + std::to_string(segments) + " (" + order[seg % 4] +
             "), " + std::to_string(k) + " clients x " + std::to_string(docs) + " documents each way");
        sampler s(ctx.server_pid);
        auto t0 = steady::now();
        std::vector<std::thread> pool;
        for (int i = 0; i < k; ++i) {
          pool.emplace_back([&, i] {
            const auto& u = users[static_cast<std::size_t>(i)];
            endpoint to = via_front ? endpoint{"127.0.0.1", port, u.name, u.password, tls}
                                    : endpoint{server.host, direct_tls_port > 0 ? direct_tls_port : server.port, u.name,
                                               u.password, direct_tls_port > 0};
            replicate(to, via_front ? std::string("/me") : db_path(u.db), u, seg, docs, batch, round_rec);
          });
        }
        for (auto& t : pool) t.join();
        round_rec.seconds += seconds_since(t0);
        s.stop();
        if (s.result().server_cpu_seconds >= 0) round_rec.server_cpu_seconds += s.result().server_cpu_seconds;
        else round_rec.server_cpu_known = false;
      }
      for (const auto& r : round_direct) add_round(direct, r);
      for (const auto& r : round_front) add_round(front, r);
      const std::uint64_t expected = 2ull * static_cast<std::uint64_t>(k) * static_cast<std::uint64_t>(docs) *
                                     static_cast<std::uint64_t>(rounds);
      out["direct"] = side_json(direct, expected);
      out["front"] = side_json(front, expected);
      auto m = d.metrics();
      out["front"]["couchgate_upstream_peak"] = m.count("couchgate_front_upstream_peak") ? json(m["couchgate_front_upstream_peak"]) : json(nullptr);
      out["front"]["couchgate_upstream_busy"] = m.count("couchgate_front_upstream_busy_total") ? json(m["couchgate_front_upstream_busy_total"]) : json(nullptr);
      out["front"]["couchgate_session_cache_misses"] =
          m.count("couchgate_front_session_cache_misses_total") ? json(m["couchgate_front_session_cache_misses_total"]) : json(nullptr);
      out["couchgate"] = d.stop("front door");
      out["couchgate"]["note"] = "sockets_peak: couchgate's connections to the server over all four segments";
      double fd = out["front"].value("docs_per_s", 0.0), dd = out["direct"].value("docs_per_s", 0.0);
      out["throughput_ratio"] = fd > 0 && dd > 0 ? json(round_to(fd / dd)) : json(nullptr);
      out["throughput_loss_percent"] = fd > 0 && dd > 0 ? json(round_to((1 - fd / dd) * 100, 1)) : json(nullptr);
      json added = json::object();
      for (const char* p : {"p50", "p95", "p99"}) {
        double f = at(out["front"], "latency_ms", p), dr = at(out["direct"], "latency_ms", p);
        added[p] = f >= 0 && dr >= 0 ? json(round_to(f - dr, 2)) : json(nullptr);
      }
      out["added_latency_ms"] = added;
      // Round by round (each direct, front, front, direct), and the spread between them.
      json per_round = json::array();
      std::vector<double> round_loss, round_p50;
      const std::uint64_t round_expected = expected / static_cast<std::uint64_t>(rounds);
      for (int r = 0; r < rounds; ++r) {
        json dj = side_json(round_direct[static_cast<std::size_t>(r)], round_expected);
        json fj = side_json(round_front[static_cast<std::size_t>(r)], round_expected);
        const double rd = dj.value("docs_per_s", 0.0), rf = fj.value("docs_per_s", 0.0);
        const double dp = at(dj, "latency_ms", "p50"), fp = at(fj, "latency_ms", "p50");
        json row{{"direct_docs_per_s", rd}, {"front_docs_per_s", rf}, {"direct_p50_ms", dp}, {"front_p50_ms", fp}};
        if (rd > 0 && rf > 0 && dp >= 0 && fp >= 0) {
          row["throughput_loss_percent"] = round_to((1 - rf / rd) * 100, 1);
          row["added_p50_ms"] = round_to(fp - dp, 2);
          round_loss.push_back((1 - rf / rd) * 100);
          round_p50.push_back(fp - dp);
        }
        per_round.push_back(row);
      }
      out["by_round"] = per_round;
      const auto median = [](std::vector<double> v) -> json {  // nearest rank, as every p50 here
        if (v.empty()) return nullptr;
        std::sort(v.begin(), v.end());
        return round_to(percentile(v, 50), 2);
      };
      out["round_median"] = {{"throughput_loss_percent", median(round_loss)}, {"added_p50_ms", median(round_p50)}};
      // couchgate's CPU per request it relayed (its idle time in the direct segments included).
      const double cg_cpu = out["couchgate"].value("cpu_seconds", -1.0);
      const double front_requests = out["front"].value("requests", 0.0);
      out["couchgate"]["cpu_ms_per_front_request"] =
          cg_cpu >= 0 && front_requests > 0 ? json(round_to(cg_cpu * 1000 / front_requests, 3)) : json(nullptr);
      for (const char* side : {"direct", "front"}) {
        if (out[side].value("errors", 0) > 0) {
          ctx.fail(std::string("front door: ") + side + " replication had " + std::to_string(out[side].value("errors", 0)) +
                   " failed requests, e.g. " + out[side].value("first_error", ""));
        } else if (!interrupted() && (out[side].value("docs_pushed", 0ull) != expected || out[side].value("docs_pulled", 0ull) != expected)) {
          ctx.fail(std::string("front door: ") + side + " replication moved " + out[side]["docs_pushed"].dump() + " pushed / " +
                   out[side]["docs_pulled"].dump() + " pulled documents, expected " + std::to_string(expected) + " each way");
        }
      }
    }
  }
  remove_dir(dir);
  note("front door: cleaning up");
  delete_users(ctx, users);
  return out;
}

}  // namespace couchgate::bench
