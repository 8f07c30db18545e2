#pragma once
// Owns: the benchmark's measurements, one function per phase of issue #5. Each returns its
// figures as JSON (the shape README.md documents), records functional failures in the context,
// cleans up the databases it created, and adds raw series to plot_data.
#include <string>
#include <utility>
#include <vector>

#include "tests/bench/context.hpp"

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

// 1. Fan-in of one size: seeding, the ingest ceiling, couchgate (catch-up), CouchDB's own
// replicator, then restore of the central database into the (deleted) sources.
json run_fanin(context& ctx, const size_spec& size, plot_data& plots);
// 2. Steady state: rate writes/s over steady_dbs databases for seconds.
json run_steady(context& ctx, plot_data& plots);
// 3. Provisioning: users created at once.
json run_provisioning(context& ctx, plot_data& plots);

}  // namespace couchgate::bench
