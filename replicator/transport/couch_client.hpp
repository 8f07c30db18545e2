#pragma once
// Owns: the typed CouchDB calls couchgate makes (the api_wrap of couch_replicator), all through
// one transport (transport.hpp: http_pool, session_auth in front of it, or a test's script).
// Each call returns at once; get() waits and parses the answer on the caller's thread, so many
// calls can be in flight and the pool's thread never parses JSON.
#include <chrono>
#include <functional>
#include <future>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "replicator/couch_error.hpp"
#include "replicator/transport/transport.hpp"
#include "replicator/transport/url.hpp"

namespace couchgate::replicator {

using json = nlohmann::json;

class pending_json {
 public:
  pending_json() = default;
  explicit pending_json(std::future<http_response> f) : f_(std::move(f)) {}
  // Success = 2xx with a JSON body (depth-limited, see wire_json.hpp). Everything else is an
  // error value.
  result<json> get();
  // A document write's answer: success as get(); `quorum` false when the server answered 202
  // Accepted. In a CouchDB cluster that means fewer copies than the write quorum (w) stored it:
  // the revision exists, but a concurrent write of the same new document elsewhere may have met
  // the quorum, and the two become conflicting revisions — the body is the same as a 201's, so
  // only the status tells (CouchDB's cluster theory). A single node always answers 201.
  struct write_answer {
    json body;
    bool quorum = true;
  };
  result<write_answer> get_write();
  // Success = 2xx; the body as the server sent it, for the parsers of answers.hpp.
  result<std::string> text();
  // The raw answer, for callers that inspect it themselves.
  http_response get_raw() { return f_.get(); }
  bool valid() const { return f_.valid(); }
  // True when get() would not block.
  bool ready() const { return f_.valid() && f_.wait_for(std::chrono::seconds(0)) == std::future_status::ready; }

 private:
  std::future<http_response> f_;
};

struct changes_query {
  json since = 0;  // opaque: a string on CouchDB 2+, an integer on others; sent unquoted
  std::optional<std::size_t> limit;
  bool all_docs_style = true;   // every leaf revision (conflicts)
  bool include_docs = false;
  enum class feed_kind { normal, longpoll } feed = feed_kind::normal;
};

struct timeouts {
  std::chrono::milliseconds request{30000};
  std::chrono::milliseconds feed{60000};      // server-side longpoll timeout
  std::chrono::milliseconds heartbeat{10000};
};

class couch_client {
 public:
  couch_client(transport& wire, timeouts t) : wire_(wire), t_(t) {}

  // `timeout`: the whole exchange's limit (default: the configured request timeout).
  // `follow_up`: the next step of work already begun (http_request::follow_up).
  pending_json request(const std::string& method, const std::string& target, std::string body = {},
                       std::optional<std::chrono::milliseconds> timeout = std::nullopt, bool follow_up = false);

  pending_json server_info() { return request("GET", "/"); }
  pending_json db_info(const std::string& db) { return request("GET", db_path(db)); }
  // q (shards) and n (replicas): 0 = the server's default.
  pending_json create_db(const std::string& db, std::size_t q = 0, std::size_t n = 0);
  pending_json delete_db(const std::string& db, bool follow_up = false) {
    return request("DELETE", db_path(db), {}, std::nullopt, follow_up);
  }
  pending_json get_security(const std::string& db, bool follow_up = false);
  pending_json put_security(const std::string& db, const json& sec, bool follow_up = false);
  pending_json get_doc(const std::string& db, const std::string& id, const std::string& query = {});
  pending_json put_doc(const std::string& db, const std::string& id, const json& doc);
  pending_json delete_doc(const std::string& db, const std::string& id, const std::string& rev);
  pending_json all_dbs() { return request("GET", "/_all_dbs"); }
  pending_json all_docs(const std::string& db, const std::string& query);
  pending_json changes(const std::string& db, const changes_query& q);
  pending_json revs_diff(const std::string& db, const json& body);
  pending_json bulk_get(const std::string& db, const json& body, bool attachments);
  pending_json open_revs(const std::string& db, const std::string& id, const std::vector<std::string>& revs,
                         bool attachments);
  pending_json bulk_docs(const std::string& db, std::string body);
  pending_json db_updates(const json& since, bool longpoll, std::optional<std::size_t> limit);

  const timeouts& limits() const { return t_; }
  // The transport the calls go through (to put another in front of it: waking_transport.hpp).
  transport& wire() const { return wire_; }

  // Seq values are opaque; for CouchDB strings "N-..." the N before the dash is a sum of shard
  // positions, comparable for "has anything changed" checks. nullopt when not recognisable.
  static std::optional<std::uint64_t> seq_number(const json& seq);
  static std::string seq_param(const json& seq);
  // Where a feed answer ({"results":[...],"last_seq":...}) says to resume: the seq of its last
  // row, as couch_replicator checkpoints, because `last_seq` may already count a write made after
  // the rows were read (seen on pouchdb-server) and resuming there would skip that write.
  // `last_seq` when there are no rows; null when neither is present.
  static json resume_seq(const json& answer);

 private:
  pending_json feed_request(const std::string& target);
  transport& wire_;
  timeouts t_;
};

}  // namespace couchgate::replicator
