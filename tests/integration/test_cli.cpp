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

// Issue 16: a table of broken configs and arguments. Each must end in exit 2 with a message that
// names the problem: never a crash (a signal, an uncaught exception), never a silent default.
// Written against the command's behaviour (exit code, stderr), not the config code's structure.
TEST_CASE("broken configs and arguments: exit 2 naming the problem, never a crash or a silent default") {
  struct row {
    const char* what;
    std::string yaml;           // written to a file and given to check-config; empty: args only
    std::vector<std::string> args;  // used when yaml is empty
    std::vector<std::string> named;  // each must appear in stderr
    std::map<std::string, std::string> env{};
  };
  const std::string missing = "/nonexistent/couchgate-" + unique("cfg") + ".yaml";
  char dir_tmpl[] = "/tmp/couchgate-cli-dir-XXXXXX";
  const std::string a_directory = mkdtemp(dir_tmpl);
  const std::vector<row> table = {
      {"not YAML", "couchdb: [unclosed\n", {}, {"invalid YAML"}},
      {"a scalar document", "just a string\n", {}, {"top level must be a map"}},
      {"a list document", "- a\n- b\n", {}, {"top level must be a map"}},
      {"two documents", "fanin:\n  batch_docs: 5\n---\nfanin:\n  batch_docs: 6\n", {}, {"single YAML document", ":3:"}},
      // (yaml-cpp's LoadAll never returned on this: found by the config fuzz target)
      {"a lone comma", ",\n", {}, {"single YAML document"}},
      {"unknown top-level key", "fanin:\n  batch_docs: 10\nfanin_typo: 1\n", {}, {"fanin_typo"}},
      {"section of the wrong type", "couchdb: 5\n", {}, {"couchdb"}},
      {"section as a list", "fanin:\n  - 1\n", {}, {"fanin"}},
      {"zero connections", "fanin:\n  max_connections: 0\n", {}, {"fanin.max_connections"}},
      {"negative connections", "fanin:\n  max_connections: -4\n", {}, {"fanin.max_connections"}},
      {"text for a number", "fanin:\n  max_connections: many\n", {}, {"fanin.max_connections"}},
      {"number beyond 64 bits", "fanin:\n  batch_docs: 99999999999999999999999\n", {}, {"fanin.batch_docs"}},
      {"fraction for a count", "fanin:\n  batch_docs: 2.5\n", {}, {"fanin.batch_docs"}},
      {"null value", "fanin:\n  batch_docs:\n", {}, {"fanin.batch_docs"}},
      {"list for a number", "fanin:\n  batch_docs: [1, 2]\n", {}, {"fanin.batch_docs"}},
      {"duration of an unknown unit", "couchdb:\n  request_timeout: 10 parsecs\n", {}, {"couchdb.request_timeout"}},
      {"negative duration", "couchdb:\n  request_timeout: -5s\n", {}, {"couchdb.request_timeout"}},
      {"url of another scheme", "couchdb:\n  url: ftp://example\n", {}, {"couchdb.url"}, {{"COUCHDB_URL", ""}}},
      {"url that is not one", "couchdb:\n  url: 'not a url'\n", {}, {"couchdb.url"}, {{"COUCHDB_URL", ""}}},
      {"illegal central database name", "fanin:\n  central_db: Central DB\n", {}, {"fanin.central_db"}},
      {"empty central database name", "fanin:\n  central_db: ''\n", {}, {"fanin.central_db"}},
      {"illegal database prefix", "provisioning:\n  db_prefix: UPPER-\n", {}, {"provisioning.db_prefix"}},
      {"unknown log level", "log:\n  level: loud\n", {}, {"log.level"}},
      {"port out of range", "admin_api:\n  port: 70000\n", {}, {"admin_api.port"}},
      {"unknown on_delete", "provisioning:\n  on_delete: sometimes\n", {}, {"provisioning.on_delete"}},
      {"unknown key inside a section", "provisioning:\n  select:\n    roles_anyy: [a]\n", {}, {"roles_anyy"}},
      {"duplicate key", "fanin:\n  batch_docs: 5\n  batch_docs: 6\n", {}, {"fanin.batch_docs"}},
      {"tab indentation", "fanin:\n\tbatch_docs: 5\n", {}, {"invalid YAML", ":2:"}},
      {"not UTF-8", std::string("fanin:\n  central_db: \"\xff\xfe\"\n"), {}, {"fanin.central_db"}},
      {"deeply nested", "fanin: " + std::string(5000, '[') + std::string(5000, ']') + "\n", {}, {"nested more than"}},
      {"environment: url", "fanin:\n  batch_docs: 10\n", {}, {"COUCHDB_URL"}, {{"COUCHDB_URL", "not a url"}}},
      // Arguments.
      {"no command", "", {}, {"subcommand"}},
      {"unknown command", "", {"no-such-command"}, {"no-such-command"}},
      {"unknown option", "", {"run", "--bogus"}, {"--bogus"}},
      {"run: --config without a value", "", {"run", "--config"}, {"--config"}},
      {"run: a stray argument", "", {"run", "stray"}, {"stray"}},
      {"check-config: no file", "", {"check-config"}, {"file"}},
      {"check-config: missing file", "", {"check-config", missing}, {missing}},
      {"check-config: a directory", "", {"check-config", a_directory}, {a_directory}},
      {"run: missing file", "", {"run", "--config", missing}, {missing}},
      {"restore: no selection", "", {"restore"}, {"--user"}},
      {"restore: --all and --user", "", {"restore", "--all", "--user", "x"}, {"--all"}},
      {"restore: --user without a value", "", {"restore", "--user"}, {"--user"}},
      {"restore: empty user name", "", {"restore", "--user", ""}, {"user name must not be empty"}},
      {"restore: negative --max-changes", "", {"restore", "--all", "--max-changes", "-5"}, {"--max-changes"}},
      {"restore: text for --max-changes", "", {"restore", "--all", "--max-changes", "lots"}, {"--max-changes"}},
      {"restore: missing config file", "", {"restore", "--all", "--config", missing}, {missing}},
      {"health: zero timeout", "", {"health", "--timeout", "0"}, {"--timeout"}},
      {"health: text for timeout", "", {"health", "--timeout", "soon"}, {"--timeout"}},
  };
  for (const auto& t : table) {
    const std::string what = t.what;
    CAPTURE(what);
    std::vector<std::string> args = t.args;
    if (!t.yaml.empty()) args = {"check-config", write_file(t.yaml)};
    auto r = run_couchgate(args, t.env);
    INFO("stdout: " << r.out << "\nstderr: " << r.err);
    CHECK(r.status == 2);
    for (const auto& word : t.named) CHECK_MESSAGE(r.err.find(word) != std::string::npos, "stderr does not name " << word);
    CHECK(r.err.find("terminate called") == std::string::npos);
    CHECK(r.err.find("what():") == std::string::npos);
    // The same file is refused by `run` as well, before anything starts.
    if (!t.yaml.empty() && r.status == 2) {  // (a file check-config took would start the daemon)
      auto run = run_couchgate({"run", "--config", args[1]}, t.env);
      INFO("run: " << run.err);
      CHECK(run.status == 2);
    }
  }
}
