// Memory with big attachments: documents with attachments are copied under fanin.max_bytes_in_flight
// (replicator/byte_budget.hpp), so six 20 MB attachments in six user databases, all dirty at
// once, do not take six copies' worth of memory. Measured from outside: couchgate's peak
// resident memory (VmHWM of /proc/<pid>/status) against its resident memory when idle.
// (Before the bound: six 20 MB attachments at once took ~600 MB; measured figures are printed.)
#include <doctest/doctest.h>
#include <httplib.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <random>
#include <string>

#include "policy/naming.hpp"
#include "tests/integration/fixtures.hpp"
#include "tests/support/harness.hpp"

using namespace couchgate::test;
using namespace std::chrono_literals;

namespace {

// PUT a binary attachment (the test's own client; the body is sent as is, not base64).
reply put_attachment(const std::string& db, const std::string& doc, const std::string& name, const std::string& bytes) {
  httplib::Client cli(env().host, env().port);
  cli.set_connection_timeout(10);
  cli.set_read_timeout(120);
  cli.set_write_timeout(120);
  cli.set_basic_auth(env().user.c_str(), env().password.c_str());
  reply r;
  auto res = cli.Put(("/" + enc(db) + "/" + enc(doc) + "/" + enc(name)).c_str(), bytes, "application/octet-stream");
  if (!res) return r;
  r.status = res->status;
  r.raw = res->body;
  r.body = json::parse(res->body, nullptr, false);
  return r;
}

std::string digest_of(const std::string& db, const std::string& id, const std::string& name) {
  auto r = couch().get("/" + enc(db) + "/" + enc(id));
  if (r.status != 200 || !r.body.contains("_attachments") || !r.body["_attachments"].contains(name)) return "";
  return r.body["_attachments"][name].value("digest", "");
}

}  // namespace

TEST_CASE("big attachments: six 20 MB attachments replicated at once stay within fanin.max_bytes_in_flight") {
  auto n = fresh_names("bigatt");
  const std::size_t att_bytes = 20u << 20;
  const long budget_mib = 128;  // the default: one 20 MB document (27 MB of base64, held ~4 times) at a time
  json cfg = base_config(n);
  cfg["fanin"]["max_bytes_in_flight"] = std::to_string(budget_mib) + "MiB";
  cfg["fanin"]["rounds"] = 3;  // rounds in parallel: several sources copied at the same time
  cfg["log"]["level"] = "info";
  std::vector<std::string> users, dbs;
  for (int i = 0; i < 6; ++i) {
    users.push_back("big" + std::to_string(i) + "-" + n.role);
    REQUIRE(create_user(users.back(), {n.role}).status == 201);
    dbs.push_back(couchgate::policy::user_db_name(n.prefix, users.back()));
  }
  couchgate_process cg(cfg);
  cg.start();
  REQUIRE_MESSAGE(cg.wait_ready(120s), tail(cg.log()));
  for (const auto& db : dbs) REQUIRE_MESSAGE(eventually([&] { return couch().get("/" + enc(db)).status == 200; }, 60s), db);
  // Its resident memory when idle (the same config and databases, nothing to copy).
  const long idle_kib = proc_status_kib(cg.pid(), "VmRSS");
  // Stopped while the attachments are written, so that all six sources are dirty at its start.
  REQUIRE(cg.terminate() == 0);
  std::mt19937 rng(16);
  std::string payload(att_bytes, '\0');
  for (auto& c : payload) c = static_cast<char>(rng());  // incompressible
  std::map<std::string, std::string> want;  // db -> digest
  for (std::size_t i = 0; i < dbs.size(); ++i) {
    payload[0] = static_cast<char>(i);  // six different attachments
    auto r = put_attachment(dbs[i], "blob", "data.bin", payload);
    REQUIRE_MESSAGE(r.status == 201, r.raw);
    want[dbs[i]] = digest_of(dbs[i], "blob", "data.bin");
    REQUIRE(!want[dbs[i]].empty());
  }
  payload.clear();
  payload.shrink_to_fit();

  cg.start();
  REQUIRE_MESSAGE(cg.wait_ready(120s), tail(cg.log()));
  const auto t0 = std::chrono::steady_clock::now();
  std::string pending;
  const bool arrived = eventually(
      [&] {
        pending.clear();
        for (std::size_t i = 0; i < users.size(); ++i) {
          const std::string central_id = users[i] + ":blob";
          if (digest_of(n.central, central_id, "data.bin") != want[dbs[i]]) pending += central_id + " ";
        }
        return pending.empty();
      },
      300s);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const long peak_kib = proc_status_kib(cg.pid(), "VmHWM");
  REQUIRE_MESSAGE(arrived, "not in central with the source's digest: " << pending << "\n" << tail(cg.log()));
  const long margin_mib = 64;  // allocator slack, curl's buffers, the rest of the daemon
  MESSAGE("six 20 MiB attachments replicated in " << seconds << " s; couchgate idle RSS " << idle_kib / 1024
                                                 << " MiB, peak (VmHWM) " << peak_kib / 1024 << " MiB; bound: idle + "
                                                 << budget_mib << " MiB budget + " << margin_mib << " MiB margin");
  REQUIRE(idle_kib > 0);
  if (rss_is_meaningful) {
    CHECK(peak_kib > idle_kib);
    CHECK_MESSAGE(peak_kib <= idle_kib + (budget_mib + margin_mib) * 1024, "peak " << peak_kib / 1024 << " MiB");
  } else {
    MESSAGE("AddressSanitizer build: the RSS bound is not checked (rss_is_meaningful)");
  }
  // couchgate's own account: leases held, never more than the budget (each document fits in it).
  const double leased_peak = cg.metric("couchgate_attachment_bytes_in_flight_peak").value_or(-1);
  MESSAGE("most bytes leased at once: " << leased_peak / 1048576 << " MiB");
  CHECK(leased_peak > 4.0 * att_bytes);
  CHECK(leased_peak <= static_cast<double>(budget_mib) * 1048576);
  // Every lease given back once the rounds are over.
  CHECK(eventually([&] { return cg.metric("couchgate_attachment_bytes_in_flight") == 0; }, 30s));
  CHECK(cg.terminate() == 0);
}
