#pragma once
// Owns: the benchmark's measurements, one function per phase of issue #5. Each returns its
// figures as JSON (the shape README.md documents), records functional failures in the context,
// cleans up the databases it created, and adds raw series to plot_data.
#include <string>
#include <utility>
#include <vector>

#include "tests/bench/context.hpp"
#include "tests/bench/dataset.hpp"

namespace couchgate::bench {

struct plot_series {
  std::string name;                               // e.g. "200x50 couchgate"
  std::vector<std::pair<double, double>> points;  // (seconds since start, documents in target)
};

struct plot_data {
  std::vector<plot_series> fanin;
  std::vector<double> latencies_ms;    // steady state, every arrived write
  std::vector<double> provision_ms;    // provisioning, every user
};

// What run_fanin leaves for run_fanin_builtin: the source databases (empty when nothing is left
// to replicate; they are then already deleted).
struct fanin_sources {
  size_spec size;
  test::names names;
  std::vector<source_db> sources;
};

// 1. Fan-in of one size: seeding, the ingest ceiling, couchgate (catch-up), then restore of the
// central database into the (deleted) sources. The sources stay for run_fanin_builtin.
json run_fanin(context& ctx, const size_spec& size, plot_data& plots, fanin_sources& keep);
// 1b. The server's own replicator over the kept sources (adds "builtin" and the ratio to the
// size's entry), then deletes the sources. Runs after every other phase.
void run_fanin_builtin(context& ctx, fanin_sources& kept, json& entry, plot_data& plots);
// 2. Steady state: rate writes/s over steady_dbs databases for seconds.
json run_steady(context& ctx, plot_data& plots);
// 3. Provisioning: users created at once.
json run_provisioning(context& ctx, plot_data& plots);
// 4. Sign-up: N POST /_signup through the front door, C at a time, each until its 201 (database
// provisioned), and the server's ceiling for the same writes (signup_phase.cpp).
json run_signup(context& ctx);

// Client phases (issues #13 and #14).
// 4. Front door: K clients replicating (push and pull) straight to the server and through
// couchgate's /me, in one run: throughput ratio and added latency.
json run_front(context& ctx);
// 5. Live feeds: C longpoll clients directly and through couchgate while W writes/s land in
// random user databases: couchgate's sockets and RSS, delivery latency.
json run_live(context& ctx);

}  // namespace couchgate::bench
