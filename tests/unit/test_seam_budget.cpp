// transfer() with the attachment byte budget (transfer_options::budget, byte_budget.hpp), driven
// by scripted exchanges: revisions are fetched with attachment stubs first; the plain ones are
// written at once, those with attachments fetched again with their bodies and written under a
// lease of attachment_copies times their wire size, given back afterwards. A dry run counts them
// without fetching them again or writing anything.
#include <doctest/doctest.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "replicator/byte_budget.hpp"
#include "replicator/transfer.hpp"
#include "replicator/transport/couch_client.hpp"
#include "tests/unit/scripted_transport.hpp"

namespace r = couchgate::replicator;
using namespace couchgate::test;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

const std::string plain_rev = "2-" + std::string(32, 'p');
const std::string heavy_rev = "2-" + std::string(32, 'h');

json revisions_of(const std::string& rev) { return {{"start", 2}, {"ids", {rev.substr(2), std::string(32, '0')}}}; }

// d-plain without attachments, d-heavy with one of 30000 bytes (a stub unless asked for).
json plain_doc() { return {{"_id", "d-plain"}, {"_rev", plain_rev}, {"n", 1}, {"_revisions", revisions_of(plain_rev)}}; }
json heavy_doc(bool with_body) {
  json att = {{"content_type", "application/octet-stream"}, {"revpos", 2}, {"digest", "md5-x"}, {"length", 30000}};
  if (with_body) att["data"] = std::string(40000, 'Q');
  else att["stub"] = true;
  return {{"_id", "d-heavy"}, {"_rev", heavy_rev}, {"_attachments", {{"blob.bin", att}}}, {"_revisions", revisions_of(heavy_rev)}};
}

std::vector<r::change_row> rows() {
  return {r::change_row{"userdb-a", "userdb-a", "d-plain", "central", "a:d-plain", {plain_rev}, std::nullopt},
          r::change_row{"userdb-a", "userdb-a", "d-heavy", "central", "a:d-heavy", {heavy_rev}, std::nullopt}};
}

struct budget_server : scripted_couch {
  std::vector<std::vector<std::string>> asked;    // ids per _bulk_get
  std::vector<bool> asked_attachments;            // attachments=true per _bulk_get
  std::vector<std::vector<std::string>> written;  // ids per _bulk_docs
  std::vector<std::size_t> in_use_at_write;       // the budget's bytes held when each _bulk_docs arrived
  explicit budget_server(const r::byte_budget& budget) {
    server.on("POST", "/central/_revs_diff", all_missing, -1);
    server.on("POST", "/userdb-a/_bulk_get", [this](const r::http_request& q) {
      const bool with = q.target.find("attachments=true") != std::string::npos;
      asked_attachments.push_back(with);
      asked.emplace_back();
      json results = json::array();
      const json body = json::parse(q.body_text());
      for (const auto& d : body["docs"]) {
        const std::string id = d["id"];
        asked.back().push_back(id);
        results.push_back({{"id", id}, {"docs", {{{"ok", id == "d-heavy" ? heavy_doc(with) : plain_doc()}}}}});
      }
      return answer(200, json{{"results", results}}.dump());
    }, -1);
    server.on("POST", "/central/_bulk_docs", [this, &budget](const r::http_request& q) {
      written.emplace_back();
      const json body = json::parse(q.body_text());
      for (const auto& d : body["docs"]) {
        written.back().push_back(d["_id"]);
        if (d["_id"] == "a:d-heavy") CHECK(d["_attachments"]["blob.bin"]["data"].get<std::string>().size() == 40000);
      }
      in_use_at_write.push_back(budget.in_use());
      return answer(201, "[]");
    }, -1);
  }
  // One transfer() of rows() under `budget` through this server.
  r::transfer_result run(r::byte_budget& budget, bool dry_run = false) {
    r::transfer_options o;
    o.budget = &budget;
    o.dry_run = dry_run;
    r::protocol_caps caps;
    return r::transfer(client, rows(), o, caps);
  }
};

}  // namespace

TEST_CASE("transfer with a byte budget: attachments fetched apart and written under a lease that is given back") {
  r::byte_budget budget(64u << 20);
  budget_server b(budget);
  auto res = b.run(budget);

  CHECK(res.failed.empty());
  CHECK(res.docs_written == 2);
  // Both with stubs first, then the one with an attachment again, with its body.
  REQUIRE(b.asked.size() == 2);
  CHECK(b.asked[0] == std::vector<std::string>{"d-plain", "d-heavy"});
  CHECK_FALSE(b.asked_attachments[0]);
  CHECK(b.asked[1] == std::vector<std::string>{"d-heavy"});
  CHECK(b.asked_attachments[1]);
  // The plain revision is written without waiting for the budget; the heavy one under its lease.
  CHECK(b.written == std::vector<std::vector<std::string>>{{"a:d-plain"}, {"a:d-heavy"}});
  const std::size_t wire = r::attachment_wire_bytes(heavy_doc(false).dump()).value();
  CHECK(wire > 40000);  // the base64 of the 30000 bytes counts, not the stub's text
  CHECK(b.in_use_at_write == std::vector<std::size_t>{0, wire * r::attachment_copies});
  CHECK(budget.peak() == wire * r::attachment_copies);
  CHECK(budget.in_use() == 0);
  CHECK(res.requests == 5);  // _revs_diff, 2 x _bulk_get, 2 x _bulk_docs
  CHECK(b.server.unexpected().empty());
}

TEST_CASE("transfer with a byte budget, lease larger than the budget: taken whole (the document copied alone)") {
  r::byte_budget budget(1000);  // smaller than the attachment
  budget_server b(budget);
  auto res = b.run(budget);
  CHECK(res.docs_written == 2);
  CHECK(b.in_use_at_write == std::vector<std::size_t>{0, budget.capacity()});
  CHECK(budget.in_use() == 0);
}

TEST_CASE("transfer with a byte budget, dry run: the revision with attachments is counted, not fetched again, nothing written") {
  r::byte_budget budget(64u << 20);
  budget_server b(budget);
  auto res = b.run(budget, true);
  CHECK(res.docs_written == 2);
  CHECK(res.written_by_unit.at("userdb-a") == 2);
  REQUIRE(b.asked.size() == 1);
  CHECK_FALSE(b.asked_attachments[0]);
  CHECK(b.written.empty());
  CHECK(budget.peak() == 0);
}
