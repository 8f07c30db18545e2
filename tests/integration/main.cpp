// Integration test runner: checks that the test server is alive before and after every test
// case (pouchdb-server dies on some requests; a dead server must fail loudly, not as a cascade
// of confusing errors).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdlib>
#include <iostream>
#include <string>

#include "tests/support/harness.hpp"

namespace {
struct liveness_listener : doctest::IReporter {
  explicit liveness_listener(const doctest::ContextOptions&) {}
  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {}
  // What the run made on the server is deleted at its end (COUCHGATE_TEST_KEEP=1 keeps it to
  // look at after a failure); what could not be deleted is said, and does not fail the run.
  void test_run_end(const doctest::TestRunStats&) override {
    if (const char* keep = std::getenv("COUCHGATE_TEST_KEEP"); keep && *keep && std::string(keep) != "0") return;
    if (!couchgate::test::server_alive()) return;
    const auto left = couchgate::test::remove_leftovers(couchgate::test::run_token());
    std::cerr << "integration run " << couchgate::test::run_token() << ": deleted " << left.databases
              << " databases and " << left.users << " users it made on the server";
    if (left.failed) std::cerr << "; " << left.failed << " could not be deleted";
    std::cerr << "\n";
  }
  void test_case_start(const doctest::TestCaseData& tc) override { check("before", tc.m_name); }
  void test_case_reenter(const doctest::TestCaseData&) override {}
  void test_case_end(const doctest::CurrentTestCaseStats&) override { check("after", current_); }
  void test_case_exception(const doctest::TestCaseException&) override {}
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData&) override {}
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData&) override {}

 private:
  void check(const char* when, const char* name) {
    if (name) current_ = name;
    if (!couchgate::test::server_alive()) {
      std::cerr << "\nFATAL: the test server at " << couchgate::test::env().url << " is not answering " << when
                << " test case '" << current_ << "'. If it is pouchdb-server, it crashed: see its log in "
                << (std::getenv("COUCHGATE_SERVER_DIR") ? std::getenv("COUCHGATE_SERVER_DIR") : "the server run dir") << "\n";
      std::exit(3);
    }
  }
  const char* current_ = "";
};
}  // namespace

DOCTEST_REGISTER_LISTENER("liveness", 1, liveness_listener);

int main(int argc, char** argv) {
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
