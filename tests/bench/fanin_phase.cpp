// Owns: the fan-in phase of one size and the restore that follows it (see phases.hpp).
//
// Order: seed N source databases with M documents each (admin _bulk_docs new_edits:false, before
// couchgate runs: "catch-up" mode), then
//   ceiling   - the same documents, under their central ids, written by the bench into a fresh
//               database with _bulk_docs new_edits:false, 1000 per request, one connection;
//   couchgate - couchgate started; time from its fork until the central doc_count is N*M;
//   restore   - sources deleted, `couchgate restore --all`, every source checked;
// and, at the very end of the whole run (run_fanin_builtin):
//   builtin   - one continuous _replicator document per (restored) source into another fresh
//               database (one-shot on pouchdb-server, see run_builtin). It runs last because
//               thousands of replications leave pouchdb-server slower for everything after them.
#include <atomic>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <regex>
#include <thread>

#include "tests/bench/client.hpp"
#include "tests/bench/daemon_run.hpp"
#include "tests/bench/dataset.hpp"
#include "tests/bench/phases.hpp"
#include "tests/bench/probe.hpp"
#include "tests/bench/runner.hpp"

namespace couchgate::bench {

namespace {

using namespace std::chrono_literals;

std::string base_of(const test::names& n) { return n.prefix.substr(0, n.prefix.size() - std::string("-userdb-").size()); }

double rate(double docs, double seconds) { return seconds > 0 ? round_to(docs / seconds, 1) : 0; }

json run_ceiling(context& ctx, const test::names& n, const std::vector<source_db>& sources, int m, plot_data& plots,
                 const std::string& label) {
  const std::uint64_t total = sources.size() * static_cast<std::uint64_t>(m);
  const std::size_t batch = 1000;
  std::string db = base_of(n) + "-ceiling";
  json out{{"db_kind", "fresh database"}, {"batch_docs", batch}, {"connections", 1}};
  // Serialized before the clock starts: the ceiling measures the server, not the bench.
  std::vector<std::string> bodies;
  {
    json docs = json::array();
    auto flush = [&] {
      bodies.push_back(json{{"new_edits", false}, {"docs", std::move(docs)}}.dump());
      docs = json::array();
    };
    for (const auto& s : sources) {
      for (int j = 0; j < m; ++j) {
        docs.push_back(central_doc(s, j));
        if (docs.size() == batch) flush();
      }
    }
    if (!docs.empty()) flush();
  }
  bench_client c;
  if (auto e = create_db(ctx, c, db); !e.empty()) {
    ctx.fail("ceiling: " + e);
    return out;
  }
  sampler s(ctx.server_pid);
  plot_series series{label + " ceiling", {{0, 0}}};
  auto t0 = steady::now();
  std::uint64_t written = 0;
  std::string error;
  for (const auto& b : bodies) {
    auto r = c.post(db_path(db) + "/_bulk_docs", b);
    if (r.status != 201) {
      error = describe(r);
      break;
    }
    written += std::min<std::uint64_t>(batch, total - written);
    series.points.emplace_back(seconds_since(t0), static_cast<double>(written));
    if (interrupted()) break;
  }
  double secs = seconds_since(t0);
  s.stop();
  if (!error.empty()) {
    ctx.fail("ceiling: _bulk_docs failed: " + error);
    out["complete"] = false;
  } else if (auto dc = doc_count(c, db); !dc || *dc != total) {
    ctx.fail("ceiling: " + db + " holds " + (dc ? std::to_string(*dc) : std::string("?")) + " documents, expected " +
             std::to_string(total));
    out["complete"] = false;
  } else if (written < total) {
    out["complete"] = false;  // interrupted
  }
  out["seconds"] = round_to(secs);
  out["docs_per_s"] = rate(static_cast<double>(written), secs);
  out["sockets_peak"] = s.result().bench_peak;
  out["server_cpu_percent"] = cpu_or_null(s.result());
  out["profile"] = profile(secs, -1, s.result().server_cpu_seconds);
  plots.fanin.push_back(std::move(series));
  if (auto e = delete_db(ctx, c, db); !e.empty()) note("cleanup: " + e);
  return out;
}

// One request per source, made by `fn` (an error text, or empty), over `connections` keep-alive
// connections back to back, timed with the server's CPU: `seconds` and `profile` go into `out`.
// nullopt (and ctx.fail("<what>: <error>")) when a request failed.
std::optional<sampler::summary> per_source_timed(context& ctx, const std::vector<source_db>& sources, int connections,
                                                 const std::string& what,
                                                 const std::function<std::string(const source_db&, bench_client&)>& fn, json& out) {
  client_pool pool = make_clients(connections);
  sampler s(ctx.server_pid);
  auto t0 = steady::now();
  std::string error = parallel_for(static_cast<int>(sources.size()), pool,
                                   [&](int i, bench_client& c) { return fn(sources[static_cast<std::size_t>(i)], c); });
  double secs = seconds_since(t0);
  s.stop();
  if (!error.empty()) {
    ctx.fail(what + ": " + error);
    return std::nullopt;
  }
  out["seconds"] = round_to(secs);
  out["profile"] = profile(secs, -1, s.result().server_cpu_seconds);
  return s.result();
}

// Issue #18's floor, the part the ceiling lacks: what the server needs to answer one
// `_changes?style=all_docs&since=0` per source (what any replicator must read), over as many
// keep-alive connections as couchgate may use, back to back.
// `bodies`: with include_docs=true, the cheapest read of every body a replicator needs (what
// fan-in's _changes asks for): the floor with bodies, beside the issue's floor without.
json run_changes_floor(context& ctx, const std::vector<source_db>& sources, int connections, bool bodies) {
  const std::string query = bodies ? "/_changes?style=all_docs&since=0&include_docs=true" : "/_changes?style=all_docs&since=0";
  json out{{"request", "GET /{source}" + query}, {"connections", connections}};
  std::atomic<std::uint64_t> rows{0};
  auto res = per_source_timed(ctx, sources, connections, "floor", [&](const source_db& src, bench_client& c) -> std::string {
    auto r = c.get(db_path(src.db) + query);
    if (r.status != 200 || !r.body.contains("results") || !r.body["results"].is_array()) return "_changes: " + describe(r);
    rows += r.body["results"].size();
    return "";
  }, out);
  if (!res) return out;
  const double secs = out["seconds"].get<double>();
  out["requests"] = sources.size();
  out["rows"] = rows.load();
  out["ms_per_request"] = sources.empty() ? 0.0 : round_to(secs * 1000.0 / static_cast<double>(sources.size()), 2);
  out["server_cpu_percent"] = cpu_or_null(*res);
  double cpu = res->server_cpu_seconds;
  out["server_cpu_ms_per_request"] = cpu >= 0 && !sources.empty() ? json(round_to(cpu * 1000.0 / static_cast<double>(sources.size()), 2)) : json(nullptr);
  return out;
}

// Issue #18's restore ceiling: what `restore --all` writes (N databases created, their
// revisions with new_edits:false, batches of 1000), done by the bench into fresh databases over as
// many connections as couchgate may use.
json run_restore_ceiling(context& ctx, const json& cfg, const test::names& n, int dbs, int m, int connections) {
  // restore creates the databases with provisioning.q: so does the ceiling.
  const std::size_t q = couchgate_q(cfg);
  json out{{"connections", connections}, {"q", q}};
  auto fresh = make_sources(base_of(n) + "-rceil-userdb-", "u", dbs);
  sampler s(ctx.server_pid);
  auto t0 = steady::now();
  std::string error = seed_sources(ctx, fresh, m, connections, q_query(q));
  double secs = seconds_since(t0);
  s.stop();
  std::vector<std::string> names;
  for (const auto& f : fresh) names.push_back(f.db);
  if (auto e = delete_dbs(ctx, names); !e.empty()) note("cleanup: " + e);
  if (!error.empty()) {
    ctx.fail("restore ceiling: " + error);
    return out;
  }
  out["seconds"] = round_to(secs);
  out["docs_per_s"] = rate(static_cast<double>(dbs) * m, secs);
  out["server_cpu_percent"] = cpu_or_null(s.result());
  out["profile"] = profile(secs, -1, s.result().server_cpu_seconds);
  return out;
}

// The two parts of a restore's server work its ceiling lacks, each measured alone (as the fan-in
// floor adds one `_changes` per source to its ceiling): `restore_security`, one `PUT _security`
// per restored database over `connections` connections (restore gives each user its access;
// the ceiling writes none), and `restore_central_read`, central's `_changes` with the bodies in
// pages of fanin.batch_docs over one connection, back to back (what restore reads, the ceiling
// having its documents in hand). Run after the restore, on its databases and before central is
// deleted.
json run_restore_security(context& ctx, const std::vector<source_db>& sources, int connections) {
  json out{{"connections", connections}, {"requests", sources.size()}};
  per_source_timed(ctx, sources, connections, "restore floor", [](const source_db& src, bench_client& c) -> std::string {
    json sec{{"admins", {{"names", json::array()}, {"roles", json::array()}}}, {"members", {{"names", {src.user}}, {"roles", json::array()}}}};
    auto r = c.put(db_path(src.db) + "/_security", sec.dump());
    return r.status == 200 || r.status == 201 ? std::string() : "PUT " + src.db + "/_security: " + describe(r);
  }, out);
  return out;
}

json run_central_read(context& ctx, const std::string& central, std::size_t page) {
  json out{{"page_docs", page}, {"connections", 1}};
  bench_client c(120s);
  sampler s(ctx.server_pid);
  auto t0 = steady::now();
  json since = 0;
  std::uint64_t rows = 0, requests = 0;
  std::string error;
  for (;;) {
    auto r = c.get(db_path(central) + "/_changes?style=all_docs&include_docs=true&limit=" + std::to_string(page) +
                   "&since=" + seq_param(since));
    ++requests;
    if (r.status != 200 || !r.body.contains("results") || !r.body["results"].is_array() || !r.body.contains("last_seq")) {
      error = "_changes of " + central + ": " + describe(r);
      break;
    }
    const std::size_t got = r.body["results"].size();
    rows += got;
    since = r.body["last_seq"];
    if (got < page || interrupted()) break;
  }
  double secs = seconds_since(t0);
  s.stop();
  if (!error.empty()) {
    ctx.fail("restore floor: " + error);
    return out;
  }
  out["seconds"] = round_to(secs);
  out["rows"] = rows;
  out["requests"] = requests;
  out["profile"] = profile(secs, -1, s.result().server_cpu_seconds);
  return out;
}

// Design documents in db (CouchDB's doc_count includes them).
std::optional<std::uint64_t> design_doc_count(bench_client& c, const std::string& db) {
  auto r = c.get(db_path(db) + "/_all_docs?startkey=%22_design%2F%22&endkey=%22_design0%22");
  if (r.status != 200 || !r.body.contains("rows") || !r.body["rows"].is_array()) return std::nullopt;
  return r.body["rows"].size();
}

json run_couchgate(context& ctx, const json& cfg, const test::names& n, std::uint64_t total, double n_sources,
                   plot_data& plots, const std::string& label, bool& complete) {
  json out = json::object();
  bench_client c(30s);
  daemon_run d(ctx, cfg, "fanin-" + label);
  ctx.created(n.central);
  ctx.created(n.state);
  plot_series series{label + " couchgate", {{0, 0}}};
  double first_doc = -1, done = -1;
  std::uint64_t last = 0;
  std::optional<std::uint64_t> ddocs;  // couchgate's own design document(s) in the central database
  bool died = false;
  const double deadline = 120 + static_cast<double>(total) / 100.0;
  d.start();
  poll_until(
      [&] {
        if (!d.running()) {
          died = true;
          return true;
        }
        d.check_ready();
        auto dc = doc_count(c, n.central);
        double t = d.seconds();
        if (!dc) return false;
        // couchgate writes its guard design document before replicating anything: once the
        // database holds a document, count the design documents once.
        if (*dc > 0 && !ddocs) ddocs = design_doc_count(c, n.central);
        std::uint64_t user_docs = *dc - std::min<std::uint64_t>(*dc, ddocs.value_or(0));
        series.points.emplace_back(t, static_cast<double>(user_docs));
        if (user_docs > 0 && first_doc < 0) first_doc = t;
        last = user_docs;
        if (last >= total) {
          done = t;
          return true;
        }
        return false;
      },
      std::chrono::duration<double>(deadline), 50ms);
  complete = done >= 0;
  out["seconds"] = complete ? json(round_to(done)) : json(nullptr);
  out["docs_per_s"] = complete ? json(rate(static_cast<double>(total), done)) : json(nullptr);
  out["first_doc_seconds"] = first_doc >= 0 ? json(round_to(first_doc)) : json(nullptr);
  // Replication proper: from the first document in the central database to the last.
  out["replication_seconds"] = complete && first_doc >= 0 ? json(round_to(done - first_doc)) : json(nullptr);
  out["docs_at_end"] = last;
  if (!complete) {
    std::string why = died ? "couchgate exited" : interrupted() ? "interrupted" : "deadline of " + std::to_string(static_cast<int>(deadline)) + " s passed";
    ctx.fail("fan-in " + label + ": the central database holds " + std::to_string(last) + " of " + std::to_string(total) +
             " documents (" + why + "); couchgate log tail:\n" + d.log_tail(30));
  }
  if (complete) {
    // Every document is in; couchgate is done once its checkpoints are written and nothing is
    // dirty or in flight any more.
    bool idle = poll_until(
        [&] {
          json st = d.status();
          if (!st.is_object() || !st.contains("fanin")) return false;
          const json& f = st["fanin"];
          return f.value("dirty", 1) == 0 && f.value("active", 1) == 0 && f.value("backing_off", 1) == 0;
        },
        60s, 50ms);
    out["idle_seconds"] = idle ? json(round_to(d.seconds())) : json(nullptr);
  }
  plots.fanin.push_back(std::move(series));
  json stats = d.stop("fan-in " + label);
  out.update(stats);
  // couchgate's requests to the server from its start to its stop (start-up, reconcile,
  // detection and checkpoints included), per replicated document and per source.
  if (out["requests"].is_number() && total > 0) {
    const double req = out["requests"].get<double>();
    out["requests_per_doc"] = round_to(req / static_cast<double>(total));
    out["requests_per_source"] = n_sources > 0 ? json(round_to(req / n_sources)) : json(nullptr);
  }
  out["profile"] = profile(d.samples().result().seconds, out["cpu_seconds"].is_number() ? out["cpu_seconds"].get<double>() : -1,
                           d.samples().result().server_cpu_seconds);
  out["profile"]["window"] = "couchgate's start to its stop (idle included)";
  return out;
}

// The _replication_state of each _replicator document (pouchdb-server writes it; CouchDB 3
// does so only for finished or failed jobs), "missing" when the document is gone.
std::map<std::string, std::string> replication_states(bench_client& c, const std::vector<std::string>& ids) {
  std::map<std::string, std::string> out;
  for (const auto& id : ids) out[id] = "missing";
  auto r = c.post("/_replicator/_all_docs?include_docs=true", json{{"keys", ids}}.dump());
  if (r.status != 200 || !r.body.contains("rows")) return out;
  for (const auto& row : r.body["rows"]) {
    if (!row.is_object() || !row.contains("key") || !row["key"].is_string()) continue;
    if (row.contains("doc") && row["doc"].is_object()) {
      out[row["key"].get<std::string>()] = row["doc"].value("_replication_state", "(none)");
    }
  }
  return out;
}

// Deletes the _replicator documents, retrying when the server updated them meanwhile.
void delete_replications(bench_client& c, const std::vector<std::string>& ids) {
  std::vector<std::string> left = ids;
  for (int attempt = 0; attempt < 6 && !left.empty(); ++attempt) {
    auto r = c.post("/_replicator/_all_docs", json{{"keys", left}}.dump());
    if (r.status != 200 || !r.body.contains("rows")) {
      note("builtin: cannot list _replicator documents: " + describe(r));
      return;
    }
    json dels = json::array();
    for (const auto& row : r.body["rows"]) {
      if (!row.is_object() || !row.contains("value") || !row["value"].is_object()) continue;
      if (row["value"].value("deleted", false)) continue;
      dels.push_back({{"_id", row["id"]}, {"_rev", row["value"]["rev"]}, {"_deleted", true}});
    }
    if (dels.empty()) return;
    auto d = c.post("/_replicator/_bulk_docs", json{{"docs", dels}}.dump());
    left.clear();
    if (d.body.is_array()) {
      for (const auto& row : d.body) {
        if (row.is_object() && row.contains("error")) left.push_back(row.value("id", ""));
      }
    }
    if (!left.empty()) std::this_thread::sleep_for(200ms);
  }
  if (!left.empty()) note("builtin: " + std::to_string(left.size()) + " _replicator documents could not be deleted");
}

json run_builtin(context& ctx, const test::names& n, const std::vector<source_db>& sources, std::uint64_t total,
                 plot_data& plots, const std::string& label) {
  json out = json::object();
  bench_client c(30s);
  if (auto r = c.get("/_replicator"); r.status != 200) {
    out["available"] = false;
    out["note"] = "no _replicator database (" + describe(r) + ")";
    return out;
  }
  out["available"] = true;
  out["timeout_seconds"] = ctx.opt.builtin_timeout;
  // pouchdb-server 4.2.0 dies when the _replicator document of a running replication is deleted
  // (pouchdb-replicator's onReplicationComplete reads the deleted document with no catch): there,
  // the documents are one-shot and deleted only once their replication has finished.
  const bool continuous = !ctx.pouchdb;
  out["continuous"] = continuous;
  if (!continuous) {
    out["note"] = "one-shot _replicator documents (continuous:false): pouchdb-server crashes when a running "
                  "replication's document is deleted";
  }
  std::string target = base_of(n) + "-builtin";
  if (auto e = create_db(ctx, c, target); !e.empty()) {
    ctx.fail("builtin: " + e);
    return out;
  }
  const std::string url = url_with_credentials(ctx.opt.builtin_url);
  json docs = json::array();
  std::vector<std::string> ids;
  for (std::size_t i = 0; i < sources.size(); ++i) {
    ids.push_back(base_of(n) + "-" + pad(static_cast<long long>(i), 5));
    docs.push_back({{"_id", ids.back()},
                    {"source", url + db_path(sources[i].db)},
                    {"target", url + db_path(target)},
                    {"continuous", continuous}});
  }
  sampler s(ctx.server_pid);
  plot_series series{label + " builtin", {{0, 0}}};
  auto t0 = steady::now();
  auto r = c.post("/_replicator/_bulk_docs", json{{"docs", docs}}.dump());
  bool created = r.status == 201;
  if (created && r.body.is_array()) {
    for (const auto& row : r.body) {
      if (row.is_object() && row.contains("error")) created = false;
    }
  }
  if (!created) {
    s.stop();
    out["note"] = "creating the _replicator documents failed: " + describe(r);
    note("builtin " + label + ": " + out["note"].get<std::string>());
    delete_replications(c, ids);
    delete_db(ctx, c, target);
    return out;
  }
  double done = -1;
  std::uint64_t last = 0;
  poll_until(
      [&] {
        auto dc = doc_count(c, target);
        double t = seconds_since(t0);
        if (!dc) return false;
        series.points.emplace_back(t, static_cast<double>(*dc));
        last = *dc;
        if (last >= total) done = t;
        return last >= total;
      },
      std::chrono::duration<double>(ctx.opt.builtin_timeout), 100ms);
  double elapsed = seconds_since(t0);
  s.stop();
  auto sum = s.result();
  out["complete"] = done >= 0;
  out["seconds"] = done >= 0 ? json(round_to(done)) : json(nullptr);
  out["docs_per_s"] = rate(static_cast<double>(last), done >= 0 ? done : elapsed);
  out["docs_at_end"] = last;
  out["timed_out"] = done < 0;
  // Connections to the server from any local process but the bench: the replicator's own
  // (on a server elsewhere, e.g. in a container, these are invisible: then 0).
  out["sockets_peak"] = sum.clients_peak;
  out["server_process_sockets_peak"] = sum.server_held_peak >= 0 ? json(sum.server_held_peak) : json("n/a");
  out["server_cpu_percent"] = cpu_or_null(sum);
  if (done < 0) {
    // Why: the states the server reports for its jobs.
    std::map<std::string, int> states;
    for (const auto& [id, state] : replication_states(c, ids)) ++states[state];
    out["replication_states"] = states;
    note("builtin " + label + ": timed out after " + std::to_string(static_cast<int>(ctx.opt.builtin_timeout)) + " s with " +
         std::to_string(last) + "/" + std::to_string(total) + " documents");
  }
  plots.fanin.push_back(std::move(series));
  std::vector<std::string> deletable = ids;
  if (!continuous) {
    // Only finished replications may lose their document (see above).
    std::map<std::string, std::string> states;
    poll_until(
        [&] {
          states = replication_states(c, ids);
          for (const auto& [id, state] : states) {
            if (state != "completed" && state != "error") return false;
          }
          return true;
        },
        30s, 200ms);
    deletable.clear();
    for (const auto& [id, state] : states) {
      if (state == "completed" || state == "error") deletable.push_back(id);
    }
    if (deletable.size() < ids.size()) {
      note("builtin: " + std::to_string(ids.size() - deletable.size()) +
           " replications still running; their _replicator documents stay (deleting them would crash pouchdb-server)");
    }
  }
  delete_replications(c, deletable);
  std::this_thread::sleep_for(1s);  // let the server cancel the jobs before their target goes
  if (auto e = delete_db(ctx, c, target); !e.empty()) note("cleanup: " + e);
  return out;
}

json run_restore(context& ctx, const json& cfg, const std::vector<source_db>& sources, int m) {
  json out = json::object();
  std::vector<std::string> dbs;
  for (const auto& s : sources) dbs.push_back(s.db);
  if (auto e = delete_dbs(ctx, dbs); !e.empty()) {
    ctx.fail("restore: deleting the sources failed: " + e);
    return out;
  }
  std::string dir = make_temp_dir("couchgate-bench-restore");
  std::string path = dir + "/config.yaml";
  json c = cfg;
  c["admin_api"].erase("port_file");
  std::ofstream(path) << c.dump(2) << "\n";
  const std::uint64_t total = sources.size() * static_cast<std::uint64_t>(m);
  sampler s(ctx.server_pid);
  auto res = run_command({"restore", "--all", "--config", path}, std::chrono::duration<double>(120 + static_cast<double>(total) / 50.0),
                         [&s](pid_t pid) { s.watch(pid); });
  s.stop();
  remove_dir(dir);
  for (const auto& d : dbs) ctx.created(d);  // restore recreated them
  std::smatch mt;
  std::uint64_t revs = 0;
  static const std::regex written_re(R"((\d+) revisions written)");
  if (std::regex_search(res.out, mt, written_re)) revs = std::stoull(mt[1].str());
  out["seconds"] = round_to(res.seconds);
  out["revisions_written"] = revs;
  // Its HTTP requests, from the summary line ("..., <n> requests"): per database and document.
  static const std::regex requests_re(R"(ms, (\d+) requests)");
  if (std::regex_search(res.out, mt, requests_re) && !sources.empty()) {
    const double reqs = std::stod(mt[1].str());
    out["requests"] = reqs;
    out["requests_per_db"] = round_to(reqs / static_cast<double>(sources.size()));
    out["requests_per_doc"] = total ? json(round_to(reqs / static_cast<double>(total), 3)) : json(nullptr);
  }
  out["docs_per_s"] = rate(static_cast<double>(revs), res.seconds);
  out["exit_status"] = res.status;
  out["sockets_peak"] = s.result().watched_peak;
  out["server_cpu_percent"] = cpu_or_null(s.result());
  out["rss_peak_mb"] = s.result().rss_peak_kb > 0 ? json(round_to(static_cast<double>(s.result().rss_peak_kb) / 1024.0, 1)) : json(nullptr);
  out["profile"] = profile(res.seconds, res.cpu_seconds, s.result().server_cpu_seconds);
  if (res.status != 0 || res.timed_out) {
    ctx.fail("restore --all " + std::string(res.timed_out ? "timed out" : "exited with " + std::to_string(res.status)) +
             "; stdout:\n" + res.out.substr(0, 2000) + "\nstderr tail:\n" + res.err.substr(res.err.size() > 2000 ? res.err.size() - 2000 : 0));
    return out;
  }
  // Every source is back with all its documents.
  std::atomic<int> wrong{0};
  std::mutex mu;
  std::string example;
  parallel_for(static_cast<int>(sources.size()), ctx.opt.threads, [&](int i, bench_client& cl) -> std::string {
    const auto& src = sources[static_cast<std::size_t>(i)];
    auto dc = doc_count(cl, src.db);
    if (!dc || *dc != static_cast<std::uint64_t>(m)) {
      ++wrong;
      std::lock_guard lk(mu);
      if (example.empty()) example = src.db + " holds " + (dc ? std::to_string(*dc) : std::string("?")) + " documents";
    }
    return "";
  });
  out["verified"] = wrong.load() == 0;
  if (wrong.load() != 0) {
    ctx.fail("restore: " + std::to_string(wrong.load()) + " of " + std::to_string(sources.size()) +
             " restored databases are incomplete (e.g. " + example + ", expected " + std::to_string(m) + ")");
  }
  if (revs != total) note("restore: " + std::to_string(revs) + " revisions written, expected " + std::to_string(total));
  return out;
}

}  // namespace

namespace {
void set_ratios(json& out) {
  auto rate_of = [&](const char* k) -> double {
    if (!out.contains(k) || !out[k].contains("docs_per_s") || !out[k]["docs_per_s"].is_number()) return -1;
    if (out[k].contains("complete") && !out[k]["complete"].get<bool>()) return -1;
    return out[k]["docs_per_s"].get<double>();
  };
  // A reference measured before couchgate's run and again after it (`<k>_after`; the restore
  // ceiling: `restore_ceiling_before` and `restore_ceiling`): the server's pace drifts within
  // minutes, mostly slowing as databases are created and deleted, so couchgate is judged against
  // the mean of the two (seconds), or the one there is (-1: neither).
  // (A reference that failed or stopped partway, `complete` false, counts as not measured.)
  const auto seconds_of = [&](const std::string& k) -> double {
    if (!out.contains(k) || !out[k].is_object() || !out[k].value("complete", true)) return -1;
    return out[k].contains("seconds") && out[k]["seconds"].is_number() ? out[k]["seconds"].get<double>() : -1;
  };
  const auto mean_of = [](double a, double b) { return a >= 0 && b >= 0 ? (a + b) / 2 : (a >= 0 ? a : b); };
  const auto mean_seconds = [&](const std::string& before, const std::string& after) {
    return mean_of(seconds_of(before), seconds_of(after));
  };
  const double total = out.value("docs_total", 0.0);
  const double ceil_secs = mean_seconds("ceiling", "ceiling_after");
  double cg = rate_of("couchgate"), ceil = ceil_secs > 0 ? total / ceil_secs : -1, bi = rate_of("builtin");
  out["ratio_couchgate_to_ceiling"] = cg > 0 && ceil > 0 ? json(round_to(cg / ceil)) : json(nullptr);
  out["ratio_couchgate_to_builtin"] = cg > 0 && bi > 0 ? json(round_to(cg / bi)) : json(nullptr);
  // The server's own CPU for a phase (-1: not measured).
  const auto cpu_of = [&](const std::string& k) -> double {
    const json* p = out.contains(k) && out[k].contains("profile") ? &out[k]["profile"] : nullptr;
    return p && p->contains("server_cpu_seconds") && (*p)["server_cpu_seconds"].is_number() ? (*p)["server_cpu_seconds"].get<double>() : -1;
  };
  const auto cpu = [&](const std::string& k) { return mean_of(cpu_of(k), cpu_of(k + "_after")); };
  // A floor (issue #18): the ceiling's ingest plus the server's answers to one _changes per source
  // (the phase `changes`), in seconds and, to set beside what couchgate's run cost it, in the
  // server's CPU; couchgate's rate against it as `ratio`. False when either part is missing.
  const auto add_floor = [&](const char* name, const std::string& changes, const char* ratio) {
    const double changes_secs = mean_seconds(changes, changes + "_after");
    if (ceil_secs < 0 || changes_secs < 0) return false;
    const double secs = ceil_secs + changes_secs;
    const bool after = seconds_of("ceiling_after") >= 0 && seconds_of(changes + "_after") >= 0;
    out[name] = {{"seconds", round_to(secs)},
                 {"docs_per_s", rate(total, secs)},
                 {"what", std::string("ceiling seconds + ") + changes + " seconds" +
                              (after ? ", each the mean of the one before couchgate's run and the one after" : "")}};
    if (cpu("ceiling") >= 0 && cpu(changes) >= 0) out[name]["server_cpu_seconds"] = round_to(cpu("ceiling") + cpu(changes));
    const double fl = out[name]["docs_per_s"].get<double>();
    out[ratio] = cg > 0 && fl > 0 ? json(round_to(cg / fl)) : json(nullptr);
    return true;
  };
  // The issue's floor (no body read), then the one that reads the bodies as fan-in must.
  if (add_floor("floor", "floor_changes", "ratio_couchgate_to_floor")) {
    add_floor("floor_with_bodies", "floor_changes_docs", "ratio_couchgate_to_floor_with_bodies");
  }
  const double restore_ceil_secs = mean_seconds("restore_ceiling_before", "restore_ceiling");
  if (out.contains("restore") && restore_ceil_secs > 0) {
    const double r = out["restore"].value("docs_per_s", 0.0), rc = total / restore_ceil_secs;
    out["restore_ceiling_docs_per_s"] = round_to(rc, 1);  // the mean's rate, what the ratio is to
    out["ratio_restore_to_ceiling"] = r > 0 ? json(round_to(r / rc)) : json(nullptr);
    // The restore floor: the ceiling plus the two parts of a restore's work it lacks.
    const double sec_secs = seconds_of("restore_security"), read_secs = seconds_of("restore_central_read");
    if (sec_secs >= 0 && read_secs >= 0) {
      const double secs = restore_ceil_secs + sec_secs + read_secs;
      out["restore_floor"] = {{"seconds", round_to(secs)},
                              {"docs_per_s", rate(total, secs)},
                              {"what", "restore ceiling seconds (the mean) + restore_security seconds + restore_central_read seconds"}};
      const double cpu_sum = mean_of(cpu_of("restore_ceiling_before"), cpu_of("restore_ceiling")), c2 = cpu_of("restore_security"),
                   c3 = cpu_of("restore_central_read");
      if (cpu_sum >= 0 && c2 >= 0 && c3 >= 0) out["restore_floor"]["server_cpu_seconds"] = round_to(cpu_sum + c2 + c3);
      out["ratio_restore_to_floor"] = r > 0 ? json(round_to(r * secs / total)) : json(nullptr);
    }
  }
}

std::vector<std::string> db_names(const std::vector<source_db>& sources) {
  std::vector<std::string> dbs;
  for (const auto& s : sources) dbs.push_back(s.db);
  return dbs;
}
}  // namespace

json run_fanin(context& ctx, const size_spec& size, plot_data& plots, fanin_sources& keep) {
  const std::string label = size.label();
  const std::uint64_t total = static_cast<std::uint64_t>(size.dbs) * static_cast<std::uint64_t>(size.docs_per_db);
  json out{{"size", label}, {"dbs", size.dbs}, {"docs_per_db", size.docs_per_db}, {"docs_total", total}};
  test::names n = ctx.fresh("bench-fanin");
  auto sources = make_sources(n.prefix, "u", size.dbs);
  keep = fanin_sources{size, n, {}};
  out["doc_bytes"] = sources.empty() ? 0 : doc_bytes(sources[0], 0);
  out["mode"] = "catch-up: sources written before couchgate starts; registered by its reconcile (prefix + hex(user))";

  note("fan-in " + label + ": seeding " + std::to_string(size.dbs) + " databases with " + std::to_string(size.docs_per_db) +
       " documents each");
  auto t0 = steady::now();
  if (auto e = seed_sources(ctx, sources, size.docs_per_db); !e.empty()) {
    ctx.fail("fan-in " + label + ": seeding failed: " + e);
    delete_dbs(ctx, db_names(sources));
    return out;
  }
  out["seed_seconds"] = round_to(seconds_since(t0));

  if (!ctx.opt.skipped("ceiling") && !interrupted()) {
    note("fan-in " + label + ": ingest ceiling (_bulk_docs new_edits:false, one connection)");
    out["ceiling"] = run_ceiling(ctx, n, sources, size.docs_per_db, plots, label);
  }
  json cfg = ctx.couchgate_config(n);
  const int connections = cfg["fanin"].value("max_connections", 8);
  if (!ctx.opt.skipped("ceiling") && !interrupted()) {
    note("fan-in " + label + ": floor (one _changes?style=all_docs&since=0 per source over " + std::to_string(connections) +
         " connections)");
    out["floor_changes"] = run_changes_floor(ctx, sources, connections, false);
    note("fan-in " + label + ": floor with bodies (the same with include_docs=true)");
    out["floor_changes_docs"] = run_changes_floor(ctx, sources, connections, true);
  }
  bool complete = false;
  if (!interrupted()) {
    note("fan-in " + label + ": couchgate");
    out["couchgate"] = run_couchgate(ctx, cfg, n, total, size.dbs, plots, label, complete);
  }
  if (complete && !ctx.opt.skipped("ceiling") && !interrupted()) {
    // The references again, after couchgate's run: the ratios are to the mean of the two.
    note("fan-in " + label + ": ingest ceiling and floors again, after couchgate");
    out["ceiling_after"] = run_ceiling(ctx, n, sources, size.docs_per_db, plots, label + " after");
    out["floor_changes_after"] = run_changes_floor(ctx, sources, connections, false);
    out["floor_changes_docs_after"] = run_changes_floor(ctx, sources, connections, true);
  }
  // The sources hold their documents unless a restore deleted them and did not bring them all back.
  bool sources_intact = true;
  if (complete && !ctx.opt.skipped("restore") && !interrupted()) {
    if (!ctx.opt.skipped("ceiling")) {
      // Its ceiling both before the restore and after it (below); the ratio is to their mean.
      note("fan-in " + label + ": restore ceiling, before the restore");
      out["restore_ceiling_before"] = run_restore_ceiling(ctx, cfg, n, size.dbs, size.docs_per_db, connections);
    }
    note("fan-in " + label + ": restore --all");
    out["restore"] = run_restore(ctx, cfg, sources, size.docs_per_db);
    sources_intact = out["restore"].value("verified", false);
    if (!ctx.opt.skipped("ceiling") && !interrupted()) {
      if (sources_intact && !interrupted()) {
        note("fan-in " + label + ": restore floor parts (a _security per database; central's _changes with the bodies)");
        out["restore_security"] = run_restore_security(ctx, sources, connections);
        out["restore_central_read"] = run_central_read(ctx, n.central, static_cast<std::size_t>(cfg["fanin"].value("batch_docs", 1000)));
      }
      note("fan-in " + label + ": restore ceiling (create + _bulk_docs new_edits:false over " + std::to_string(connections) +
           " connections)");
      out["restore_ceiling"] = run_restore_ceiling(ctx, cfg, n, size.dbs, size.docs_per_db, connections);
    }
  }
  set_ratios(out);

  note("fan-in " + label + ": cleaning up");
  std::vector<std::string> dbs{n.central, n.state};
  if (!ctx.opt.skipped("builtin") && sources_intact && !interrupted()) {
    keep.sources = std::move(sources);  // the server's own replicator reads them at the end of the run
  } else {
    for (const auto& d : db_names(sources)) dbs.push_back(d);
  }
  if (auto e = delete_dbs(ctx, dbs); !e.empty()) note("cleanup: " + e);
  return out;
}

void run_fanin_builtin(context& ctx, fanin_sources& kept, json& entry, plot_data& plots) {
  if (kept.sources.empty()) return;
  const std::string label = kept.size.label();
  const std::uint64_t total = static_cast<std::uint64_t>(kept.size.dbs) * static_cast<std::uint64_t>(kept.size.docs_per_db);
  if (!interrupted()) {
    note("fan-in " + label + ": the server's own replicator (one _replicator document per source)");
    entry["builtin"] = run_builtin(ctx, kept.names, kept.sources, total, plots, label);
    set_ratios(entry);
  }
  note("fan-in " + label + ": deleting the sources");
  if (auto e = delete_dbs(ctx, db_names(kept.sources)); !e.empty()) note("cleanup: " + e);
  kept.sources.clear();
}

}  // namespace couchgate::bench
