// Owns: the fuzz targets' bodies (see targets.hpp).
#include "tests/fuzz/targets.hpp"

#include <cstdlib>
#include <optional>
#include <string>

// Beast alone, not gateway/front/asio.hpp: its coroutine helpers do not build with clang 14 and
// libstdc++ (Boost 1.74 does not see co_await there), and no parser needs them.
#include <boost/asio/buffer.hpp>
#include <boost/beast/http.hpp>

#include "gateway/config.hpp"
#include "gateway/front/auth_limits.hpp"
#include "gateway/front/cidr.hpp"
#include "gateway/front/feed_park.hpp"
#include "gateway/front/route.hpp"
#include "gateway/front/secure_request.hpp"
#include "policy/id_map.hpp"
#include "replicator/answers.hpp"
#include "replicator/change_detector.hpp"
#include "replicator/couch_error.hpp"
#include "replicator/server_gate.hpp"
#include "replicator/transport/http_pool.hpp"
#include "replicator/transfer.hpp"
#include "replicator/wire_json.hpp"

namespace couchgate::fuzz {

namespace r = replicator;

namespace {

// An invariant that must hold for every input: abort() is what libFuzzer reports as a crash
// (and what fails the corpus replay of the unit suite).
void check(bool ok) {
  if (!ok) std::abort();
}

// What the replication round does with a document of an answer: rewrite its id, add a field.
void use_doc(const r::wire::raw_doc& d) {
  // The renamed text is still a document, with the new id. (Judged by the same reader as the
  // original, not by nlohmann: documents keep numbers JSON allows that nlohmann refuses, 1e400.)
  const std::string renamed = r::wire::with_id(d, "user:doc");
  auto again = r::wire::read_doc(renamed);
  check(again.ok() && again.value().id == "user:doc");
  (void)r::wire::with_field(d.text, "_revisions", "{\"start\":1,\"ids\":[\"a\"]}");
}

// The entries of a _bulk_get or ?open_revs answer, as the round uses them.
void use_entries(const r::result<std::vector<r::fetched_entry>>& entries) {
  if (!entries.ok()) return;
  for (const auto& e : entries.value()) {
    if (e.what != r::fetched_entry::kind::ok) continue;
    check(e.doc.has_value());
    use_doc(*e.doc);
  }
}

// Splits the bytes into (a small selector, the rest).
std::pair<unsigned, std::string_view> select(std::string_view data) {
  if (data.empty()) return {0, data};
  return {static_cast<unsigned char>(data[0]), data.substr(1)};
}

}  // namespace

void changes(std::string_view data) {
  auto page = r::parse_changes(data);
  if (!page.ok()) return;
  for (const auto& c : page.value().changes) {
    if (c.doc) {
      use_doc(*c.doc);
      (void)r::inline_revision(c);
    }
    (void)r::first_generation(c);
    (void)r::user_of(c);  // the _users feed reads the same rows as users
  }
}

void db_updates(std::string_view data) {
  auto answer = r::wire::parse(data, "_db_updates answer");
  if (!answer.ok()) return;
  auto page = r::parse_db_updates(answer.value());
  if (!page.ok()) return;
  for (const auto& e : page.value().events) check(!e.db.empty() || e.type.size() < (1u << 30));
}

void bulk_get(std::string_view data) {
  auto [which, body] = select(data);
  switch (which % 4) {
    case 0:
      use_entries(r::parse_bulk_get(body));
      break;
    case 1:
      use_entries(r::parse_open_revs(body, "doc"));
      break;
    case 2:
      (void)r::parse_bulk_docs(body);
      break;
    default: {
      auto rows = r::parse_all_docs(body);
      if (rows.ok()) {
        for (const auto& d : rows.value()) {
          if (d.doc) use_doc(*d.doc);
          (void)r::user_of(d);
        }
      }
      break;
    }
  }
}

void revs_diff(std::string_view data) {
  auto answer = r::wire::parse(data, "_revs_diff answer");
  if (!answer.ok()) return;
  auto entries = r::parse_revs_diff(answer.value());
  if (!entries.ok()) return;
  for (const auto& [id, e] : entries.value()) {
    check(!id.empty() || e.missing.size() < (1u << 30));
    for (const auto& rev : e.missing) (void)r::revision_generation(rev);
    for (const auto& rev : e.possible_ancestors) (void)r::revision_generation(rev);
  }
}

void route(std::string_view data) {
  static constexpr std::string_view methods[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "COPY", "PATCH"};
  auto [which, target] = select(data);
  const std::string_view method = methods[which % 8];
  const bool shared = (which & 8) != 0;
  const auto rt = gateway::front::route_request(method, target, shared);
  (void)gateway::front::query_param(rt.query, "key");
  if (rt.kind == gateway::front::route_kind::user_db || rt.kind == gateway::front::route_kind::shared_db) {
    // Whatever the path, the upstream target stays inside the caller's database: its first
    // segment decodes to that database, and no segment decodes to '.' or '..' or hides a '/'.
    const std::string db = "userdb-6a6f";
    const std::string up = gateway::front::db_target(db, rt);
    const std::string_view path = std::string_view(up).substr(0, up.find('?'));
    check(!path.empty() && path[0] == '/');
    std::size_t start = 1;
    bool first = true;
    for (;;) {
      const std::size_t end = path.find('/', start);
      const std::string_view seg = path.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
      const auto decoded = r::percent_decode(seg);
      check(decoded.has_value());
      if (first) check(*decoded == db);
      for (std::size_t a = 0;;) {
        const std::size_t b = decoded->find('/', a);
        const std::string piece = decoded->substr(a, b == std::string::npos ? std::string::npos : b - a);
        check(piece != "." && piece != "..");
        if (b == std::string::npos) break;
        a = b + 1;
      }
      first = false;
      if (end == std::string_view::npos) break;
      start = end + 1;
    }
    (void)gateway::front::rewrite_location(std::string("http://h:5984") + up, db, "/me", "https://x");
  }
  // The percent decoder and encoder are inverse on any bytes.
  const auto decoded = r::percent_decode(target);
  if (decoded) {
    const auto again = r::percent_decode(r::encode_segment(*decoded));
    check(again.has_value() && *again == *decoded);
  }
  check(gateway::front::encode_db_name(target).size() >= target.size());
}

void config(std::string_view data) {
  const gateway::env_lookup no_env = [](const std::string&) -> std::optional<std::string> { return std::nullopt; };
  auto loaded = gateway::load_config_text(std::string(data), no_env);
  for (const auto& e : loaded.errors) check(!e.message.empty());
  (void)gateway::format_errors("fuzz.yaml", loaded.errors);
}

void front_request(std::string_view data) {
  // The front door's own reading of a request, after Beast has parsed its header with the
  // listener's limits: the route, the live feed's query and Last-Event-ID, the proxy's scheme
  // header, the forwarded address, the credential's cache key.
  namespace front = gateway::front;
  namespace http = boost::beast::http;
  http::request_parser<http::empty_body> parser;
  parser.header_limit(16 * 1024);
  parser.eager(false);
  boost::system::error_code ec;
  (void)parser.put(boost::asio::buffer(data.data(), data.size()), ec);
  if (ec || !parser.is_header_done()) return;
  const auto& req = parser.get();
  const auto field = [&](std::string_view name) {
    const auto v = req[boost::beast::string_view(name.data(), name.size())];
    return std::string_view(v.data(), v.size());
  };
  const std::string_view method(req.method_string().data(), req.method_string().size());
  const std::string_view target(req.target().data(), req.target().size());
  const auto rt = front::route_request(method, target, true);
  if (rt.kind == front::route_kind::user_db || rt.kind == front::route_kind::shared_db) {
    if (front::live_feed_kind(rt.query)) {
      const std::string_view q = std::string_view(rt.query).substr(rt.query.empty() ? 0 : 1);
      const auto parsed = front::parse_feed_request(q, field("Last-Event-ID"));
      if (const auto* fr = std::get_if<front::feed_request>(&parsed)) {
        const std::string up = front::upstream_changes_query(*fr, fr->since, fr->limit);
        check(!up.empty() && up[0] == '?');
        // The feed's timers: never before the request, whatever the query said.
        const auto now = front::feed_clock::now();
        front::feed_state st(*fr, now, now + std::chrono::hours(1));
        check(st.next_deadline() >= now);
        st.heartbeat_sent(now);
        check(st.next_deadline() >= now);
      } else {
        check(!std::get<std::string>(parsed).empty());  // a 400 says why
      }
    }
  }
  front::secure_policy policy;
  policy.trusted_proxies.push_back(*front::parse_cidr("127.0.0.0/8"));
  front::request_origin origin;
  origin.peer = front::parse_ip(field("X-Real-IP"));
  if (const auto v = field("X-Forwarded-Proto"); !v.empty()) origin.scheme_header = v;
  (void)front::decide_secure(policy, origin);
  (void)front::parse_cidr(field("X-Forwarded-For"));
  (void)front::session_cache::key_of(field("Authorization"));
}

void error_answer(std::string_view data) {
  // Byte 0: the status (and whether the target is /_session); up to the first newline: the
  // Retry-After header; the rest: the body, also read as a central document id (restore).
  static constexpr long statuses[] = {400, 401, 403, 404, 409, 412, 413, 415, 429, 500, 502, 503, 504, 200, 201, 0};
  auto [which, rest] = select(data);
  const std::size_t nl = rest.find('\n');
  const std::string_view header = rest.substr(0, nl);
  const std::string_view body = nl == std::string_view::npos ? std::string_view{} : rest.substr(nl + 1);
  r::http_response res;
  res.status = statuses[which % 16];
  res.body = std::string(body);
  res.retry_after_header = std::string(header);
  const auto now = std::chrono::system_clock::now();
  res.retry_after = r::parse_retry_after(header, now);
  if (res.retry_after) check(res.retry_after->count() >= 0);
  res.credential_rejected = r::is_credential_rejection(res.status, (which & 16) ? "/_session" : "/db/_bulk_docs", body);
  const auto e = r::error_from(res);
  check(e.reason.size() <= 300);
  (void)e.describe();
  (void)e.retryable();
  if (const auto ref = policy::from_central_id(body)) {
    // What restore writes back: the id maps to the same central id again.
    const auto again = policy::to_central_id(policy::id_mode::namespaced, ref->who, ref->doc_id);
    check(again.has_value() && *again == body);
  }
}

const std::vector<target>& all_targets() {
  static const std::vector<target> list{{"changes", changes},       {"db_updates", db_updates}, {"bulk_get", bulk_get},
                                        {"revs_diff", revs_diff},   {"route", route},           {"config", config},
                                        {"front_request", front_request}, {"error_answer", error_answer}};
  return list;
}

}  // namespace couchgate::fuzz
