// Owns: the benchmark's databases and documents (see dataset.hpp).
#include "tests/bench/dataset.hpp"

#include <algorithm>
#include <atomic>
#include <mutex>
#include <thread>

#include "gateway/config.hpp"
#include "policy/id_map.hpp"
#include "policy/naming.hpp"

namespace couchgate::bench {

namespace {
const std::string filler =
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore "
    "magna aliqua.";

std::string doc_id(const source_db& s, int j) { return s.user + "-" + pad(j, 5); }

json doc_body(const source_db& s, int j) {
  std::string id = doc_id(s, j);
  std::string hash = policy::sha256_hex(id).substr(0, 32);
  return json{{"_id", id},
              {"_rev", "1-" + hash},
              {"_revisions", {{"start", 1}, {"ids", {hash}}}},
              {"type", "note"},
              {"title", "note " + std::to_string(j) + " of " + s.user},
              {"n", j},
              {"tags", {"bench", "fanin"}},
              {"done", j % 3 == 0},
              {"text", filler},
              {"created", "2024-01-01T00:00:00Z"}};
}
}  // namespace

std::vector<source_db> make_sources(const std::string& prefix, const std::string& stem, int n) {
  std::vector<source_db> out;
  out.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    std::string user = stem + pad(i, 5);
    out.push_back(source_db{user, policy::user_db_name(prefix, user)});
  }
  return out;
}

json source_doc(const source_db& s, int j) { return doc_body(s, j); }

json central_doc(const source_db& s, int j) {
  json d = doc_body(s, j);
  auto id = policy::to_central_id(policy::id_mode::namespaced, policy::owner{policy::owner::kind::user, s.user},
                                  d["_id"].get<std::string>());
  d["_id"] = id.value_or(d["_id"].get<std::string>());
  return d;
}

std::size_t doc_bytes(const source_db& s, int j) { return doc_body(s, j).dump().size(); }

std::string parallel_for(int n, int threads, const std::function<std::string(int, bench_client&)>& fn,
                         bool cleanup) {
  std::atomic<int> next{0};
  std::mutex mu;
  std::string first_error;
  std::atomic<bool> failed{false};
  std::vector<std::thread> pool;
  int t = std::max(1, std::min(threads, n));
  for (int k = 0; k < t; ++k) {
    pool.emplace_back([&] {
      bench_client c;
      for (;;) {
        if (!cleanup && (failed.load() || interrupted())) return;
        int i = next.fetch_add(1);
        if (i >= n) return;
        std::string e = fn(i, c);
        if (!e.empty()) {
          std::lock_guard lk(mu);
          if (first_error.empty()) first_error = e;
          failed.store(true);
          return;
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  if (first_error.empty() && !cleanup && interrupted()) return "interrupted";
  return first_error;
}

client_pool make_clients(int n, const endpoint& to) {
  client_pool out;
  for (int i = 0; i < std::max(1, n); ++i) out.push_back(std::make_unique<bench_client>(to, std::chrono::seconds(120)));
  return out;
}

std::string parallel_for(int n, client_pool& clients, const std::function<std::string(int, bench_client&)>& fn) {
  std::atomic<int> next{0};
  std::mutex mu;
  std::string first_error;
  std::vector<std::thread> pool;
  int t = std::min(static_cast<int>(clients.size()), n);
  for (int k = 0; k < t; ++k) {
    pool.emplace_back([&, k] {
      for (;;) {
        int i = next.fetch_add(1);
        if (i >= n) return;
        std::string e = fn(i, *clients[static_cast<std::size_t>(k)]);
        if (!e.empty()) {
          std::lock_guard lk(mu);
          if (first_error.empty()) first_error = e;
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  return first_error;
}

int paced_writers(double rate, int threads) { return std::clamp(static_cast<int>((rate + 1) / 2), std::max(1, threads), 64); }

void paced_for(std::size_t total, double rate, int threads, steady::time_point t0,
               const std::function<void(std::size_t, bench_client&)>& fn, const endpoint& to) {
  const int writers = paced_writers(rate, threads);
  std::vector<std::thread> pool;
  for (int w = 0; w < writers; ++w) {
    pool.emplace_back([&, w] {
      bench_client c(to, std::chrono::seconds(30));
      for (std::size_t i = static_cast<std::size_t>(w); i < total; i += static_cast<std::size_t>(writers)) {
        if (interrupted()) return;
        std::this_thread::sleep_until(t0 + std::chrono::duration_cast<steady::duration>(std::chrono::duration<double>(static_cast<double>(i) / rate)));
        fn(i, c);
      }
    });
  }
  for (auto& t : pool) t.join();
}

std::string create_db(context& ctx, bench_client& c, const std::string& db, const std::string& query) {
  auto r = c.put(db_path(db) + query, "");
  if (r.status != 201 && r.status != 202) return "PUT /" + db + ": " + describe(r);
  ctx.created(db);
  return "";
}

std::string delete_db(context& ctx, bench_client& c, const std::string& db) {
  auto r = c.del(db_path(db));
  if (r.status != 200 && r.status != 202 && r.status != 404) return "DELETE /" + db + ": " + describe(r);
  ctx.dropped(db);
  return "";
}

std::size_t couchgate_q(const json& cfg) {
  const std::size_t dflt = gateway::provisioning_config{}.q;
  if (!cfg.contains("provisioning") || !cfg["provisioning"].is_object()) return dflt;
  return cfg["provisioning"].value("q", dflt);
}

std::string q_query(std::size_t q) { return q > 0 ? "?q=" + std::to_string(q) : ""; }

std::string seed_sources(context& ctx, const std::vector<source_db>& sources, int docs_per_db, int threads,
                         const std::string& create_query) {
  return parallel_for(static_cast<int>(sources.size()), threads > 0 ? threads : ctx.opt.threads, [&](int i, bench_client& c) -> std::string {
    const auto& s = sources[static_cast<std::size_t>(i)];
    if (auto e = create_db(ctx, c, s.db, create_query); !e.empty()) return e;
    for (int off = 0; off < docs_per_db; off += 1000) {
      json docs = json::array();
      for (int j = off; j < std::min(docs_per_db, off + 1000); ++j) docs.push_back(source_doc(s, j));
      auto r = c.post(db_path(s.db) + "/_bulk_docs", json{{"new_edits", false}, {"docs", docs}}.dump());
      if (r.status != 201) return "_bulk_docs into " + s.db + ": " + describe(r);
      if (r.body.is_array()) {
        for (const auto& row : r.body) {
          if (row.is_object() && row.contains("error")) return "_bulk_docs into " + s.db + ": " + row.dump();
        }
      }
    }
    return "";
  });
}

std::string delete_dbs(context& ctx, const std::vector<std::string>& dbs) {
  return parallel_for(static_cast<int>(dbs.size()), ctx.opt.threads,
                      [&](int i, bench_client& c) { return delete_db(ctx, c, dbs[static_cast<std::size_t>(i)]); }, true);
}

}  // namespace couchgate::bench
