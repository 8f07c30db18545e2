#pragma once
// Owns: the bodies of the libFuzzer targets (tests/fuzz/README.md): each takes arbitrary bytes,
// feeds them to one parser of wire data and checks what must hold whatever the input (no crash,
// no undefined behaviour, and a few invariants of the result). The fuzz binaries
// (fuzz_main.cpp, built with clang -fsanitize=fuzzer) and the unit suite's corpus replay
// (tests/unit/test_fuzz_corpus.cpp, every file of tests/fuzz/corpus/<name>/) call the same
// functions, so every crash found and added to the corpus stays a regression test of the
// ordinary build.
#include <string_view>
#include <vector>

namespace couchgate::fuzz {

void changes(std::string_view data);      // a _changes answer (with or without included docs)
void db_updates(std::string_view data);   // a _db_updates answer
void bulk_get(std::string_view data);     // _bulk_get, ?open_revs, _bulk_docs and _all_docs answers
void revs_diff(std::string_view data);    // a _revs_diff answer
void route(std::string_view data);        // the front door's request target routing, percent decoding
void config(std::string_view data);       // YAML text -> config load and validation
void front_request(std::string_view data);  // raw HTTP request bytes -> what the front door reads of them
void error_answer(std::string_view data);   // an error answer (status, Retry-After, body); central ids

struct target {
  const char* name;  // also the corpus directory: tests/fuzz/corpus/<name>
  void (*run)(std::string_view);
};
const std::vector<target>& all_targets();

}  // namespace couchgate::fuzz
