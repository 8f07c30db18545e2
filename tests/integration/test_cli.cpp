// The command line as an operator meets it: exit codes, every config problem listed at once,
// and no credential ever printed.
#include <doctest/doctest.h>

#include <fstream>
#include <sstream>

#include "tests/support/harness.hpp"

using namespace couchgate::test;

namespace {
std::string write_file(const std::string& text) {
  char tmpl[] = "/tmp/couchgate-cli-XXXXXX";
  std::string path = std::string(mkdtemp(tmpl)) + "/config.yaml";
  std::ofstream(path) << text;
  return path;
}
}  // namespace

TEST_CASE("check-config: exit 2 listing every problem with its line; 0 for a good file") {
  std::string bad = write_file(
      "couchdb:\n  url: ftp://admin:hunter2-secret@example\n"
      "fanin:\n  max_conections: 8\n  batch_docs: -1\n"
      "log:\n  format: xml\n");
  // COUCHDB_URL from the test environment would override the file's url: unset it here.
  auto r = run_couchgate({"check-config", bad}, {{"COUCHDB_URL", ""}});
  CHECK(r.status == 2);
  CHECK(r.err.find(bad + ":4: fanin.max_conections") != std::string::npos);
  CHECK(r.err.find("fanin.batch_docs") != std::string::npos);
  CHECK(r.err.find(bad + ":7: log.format") != std::string::npos);
  CHECK(r.err.find("couchdb.url") != std::string::npos);
  CHECK(r.err.find("hunter2-secret") == std::string::npos);
  CHECK(r.out.find("hunter2-secret") == std::string::npos);

  auto good = run_couchgate({"check-config", std::string(COUCHGATE_SOURCE_DIR) + "/deploy/couchgate.example.yaml"});
  CHECK(good.status == 0);
}

TEST_CASE("run with an invalid config exits 2 without starting") {
  std::string bad = write_file("provisioning:\n  on_delete: sometimes\n");
  auto r = run_couchgate({"run", "--config", bad});
  CHECK(r.status == 2);
  CHECK(r.err.find("provisioning.on_delete") != std::string::npos);
}

TEST_CASE("bad arguments exit 2; --version and --help exit 0") {
  CHECK(run_couchgate({"restore"}).status == 2);
  CHECK(run_couchgate({"restore", "--all", "--user", "x"}).status == 2);
  CHECK(run_couchgate({"no-such-command"}).status == 2);
  auto v = run_couchgate({"--version"});
  CHECK(v.status == 0);
  CHECK(v.out.rfind("couchgate ", 0) == 0);
  auto h = run_couchgate({"--help"});
  CHECK(h.status == 0);
  CHECK(h.out.find("restore") != std::string::npos);
}

TEST_CASE("credentials from COUCHDB_URL never reach the logs or the admin API") {
  auto n = fresh_names("creds");
  json cfg = base_config(n);
  // The password travels inside COUCHDB_URL, as containers often pass it.
  std::string url = env().url;
  std::string with_creds = url.substr(0, url.find("://") + 3) + enc(env().user) + ":" + enc(env().password) + "@" +
                           url.substr(url.find("://") + 3);
  couchgate_process cg(cfg, {{"COUCHDB_URL", with_creds}, {"COUCHDB_USER", ""}, {"COUCHDB_PASSWORD", ""}});
  cg.start();
  REQUIRE_MESSAGE(cg.wait_ready(std::chrono::seconds(60)), cg.log());
  auto status = cg.admin_get("/status");
  REQUIRE(status.status == 200);
  CHECK(status.raw.find(env().password) == std::string::npos);
  CHECK(cg.admin_get("/metrics").raw.find(env().password) == std::string::npos);
  CHECK(cg.terminate() == 0);
  CHECK(cg.log().find(env().password) == std::string::npos);
  CHECK(cg.log().find("connected to CouchDB at " + url) != std::string::npos);
}

TEST_CASE("log.format json: every log line is a JSON object") {
  auto n = fresh_names("jsonlog");
  json cfg = base_config(n);
  cfg["log"] = {{"level", "debug"}, {"format", "json"}};
  couchgate_process cg(cfg);
  cg.start();
  REQUIRE_MESSAGE(cg.wait_ready(std::chrono::seconds(60)), cg.log());
  CHECK(cg.terminate() == 0);
  std::istringstream in(cg.log());
  std::string line;
  int lines = 0;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    ++lines;
    auto j = json::parse(line, nullptr, false);
    INFO(line);
    REQUIRE(j.is_object());
    CHECK(j.contains("time"));
    CHECK(j.contains("level"));
    CHECK(j.contains("logger"));
    CHECK(j["msg"].is_string());
  }
  CHECK(lines >= 3);
}
