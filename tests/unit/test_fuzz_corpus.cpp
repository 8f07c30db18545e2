// The fuzz targets' corpora (tests/fuzz/corpus/<target>/: seeds, and every input a fuzzer found
// a crash with, once fixed) replayed through the same code as the fuzz binaries, in the ordinary
// build: a crash found once stays a regression test without clang or libFuzzer.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "tests/fuzz/targets.hpp"

namespace fs = std::filesystem;

TEST_CASE("fuzz corpora: every seed and regression input runs through its parser without a crash") {
  const fs::path root = fs::path(COUCHGATE_SOURCE_DIR) / "tests" / "fuzz" / "corpus";
  for (const auto& t : couchgate::fuzz::all_targets()) {
    CAPTURE(t.name);
    const fs::path dir = root / t.name;
    REQUIRE(fs::is_directory(dir));
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(dir)) {
      if (e.is_regular_file()) files.push_back(e.path());
    }
    std::sort(files.begin(), files.end());
    CHECK(!files.empty());
    for (const auto& f : files) {
      CAPTURE(f.string());
      std::ifstream in(f, std::ios::binary);
      std::stringstream ss;
      ss << in.rdbuf();
      t.run(ss.str());  // a failed invariant aborts, which fails the suite
      // Every prefix too: truncated answers are what a dropped connection leaves.
      const std::string whole = ss.str();
      for (std::size_t n = 0; n < whole.size(); n += std::max<std::size_t>(1, whole.size() / 16)) t.run(whole.substr(0, n));
    }
  }
}
