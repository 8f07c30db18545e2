#pragma once
// Owns: turning the phases' JSON into what people read: the targets judged against the
// measured figures (met / not met / not measured, never a failure), the table on stdout, and the
// gnuplot data files and PNGs.
#include <string>

#include "tests/bench/context.hpp"
#include "tests/bench/phases.hpp"

namespace couchgate::bench {

// [{"target": ..., "measured": ..., "met": true|false|null, "note": ...}]
json judge_targets(const json& results);

void print_table(const json& results);

// Writes DIR/*.dat, DIR/bench.gp and, when gnuplot is on PATH, the PNGs. Returns a one-line
// note on what was written (or why not).
std::string write_plots(const std::string& dir, const plot_data& plots);

}  // namespace couchgate::bench
