// Owns: request building and answer parsing for couch_client (see couch_client.hpp).
#include "replicator/transport/couch_client.hpp"

#include <charconv>
#include <utility>

#include "replicator/wire_json.hpp"

namespace couchgate::replicator {

result<json> pending_json::get() {
  auto w = get_write();
  if (!w.ok()) return w.error();
  return std::move(w.value().body);
}

result<pending_json::write_answer> pending_json::get_write() {
  http_response r = f_.get();
  if (!r.ok()) return error_from(r);
  auto j = wire::parse(r.body, "answer");
  if (!j.ok()) {
    couch_error e = j.error();
    e.status = r.status;
    return e;
  }
  return write_answer{std::move(j.value()), r.status != 202};
}

result<std::string> pending_json::text() {
  http_response r = f_.get();
  if (!r.ok()) return error_from(r);
  return std::move(r.body);
}

pending_json couch_client::request(const std::string& method, const std::string& target, std::string body,
                                   std::optional<std::chrono::milliseconds> timeout, bool follow_up) {
  http_request req;
  req.method = method;
  req.target = target;
  req.follow_up = follow_up;
  if (!body.empty()) req.set_body(std::move(body));
  req.timeout = timeout.value_or(t_.request);
  return pending_json(wire_.request(std::move(req)));
}

pending_json couch_client::feed_request(const std::string& target) {
  http_request req;
  req.target = target;
  // The server ends a longpoll after t_.feed, except CouchDB when a heartbeat is asked for (it
  // ignores `timeout` then), so the client ends it too, a little later. Heartbeats keep an idle feed alive; silence for three
  // heartbeats means the connection is dead.
  req.timeout = t_.feed + std::chrono::seconds(15);
  req.idle_timeout = 3 * t_.heartbeat;
  req.feed = true;
  return pending_json(wire_.request(std::move(req)));
}

pending_json couch_client::get_security(const std::string& db, bool follow_up) {
  return request("GET", db_path(db) + "/_security", {}, std::nullopt, follow_up);
}

pending_json couch_client::put_security(const std::string& db, const json& sec, bool follow_up) {
  return request("PUT", db_path(db) + "/_security", sec.dump(), std::nullopt, follow_up);
}

pending_json couch_client::get_doc(const std::string& db, const std::string& id, const std::string& query) {
  return request("GET", db_path(db) + "/" + encode_doc_id(id) + (query.empty() ? "" : "?" + query));
}

pending_json couch_client::put_doc(const std::string& db, const std::string& id, const json& doc) {
  return request("PUT", db_path(db) + "/" + encode_doc_id(id), doc.dump());
}

pending_json couch_client::delete_doc(const std::string& db, const std::string& id, const std::string& rev) {
  return request("DELETE", db_path(db) + "/" + encode_doc_id(id) + "?rev=" + encode_query_value(rev));
}

pending_json couch_client::all_docs(const std::string& db, const std::string& query) {
  return request("GET", db_path(db) + "/_all_docs" + (query.empty() ? "" : "?" + query));
}

std::string couch_client::seq_param(const json& seq) {
  if (seq.is_string()) return encode_query_value(seq.get<std::string>());
  if (seq.is_null()) return "0";
  return encode_query_value(seq.dump());
}

pending_json couch_client::changes(const std::string& db, const changes_query& q) {
  std::string t = db_path(db) + "/_changes?since=" + seq_param(q.since);
  if (q.all_docs_style) t += "&style=all_docs";
  if (q.include_docs) t += "&include_docs=true";
  if (q.limit) t += "&limit=" + std::to_string(*q.limit);
  if (q.feed == changes_query::feed_kind::longpoll) {
    t += "&feed=longpoll&timeout=" + std::to_string(t_.feed.count()) +
         "&heartbeat=" + std::to_string(t_.heartbeat.count());
    return feed_request(t);
  }
  return request("GET", t);
}

pending_json couch_client::revs_diff(const std::string& db, const json& body) {
  return request("POST", db_path(db) + "/_revs_diff", body.dump());
}

pending_json couch_client::create_db(const std::string& db, std::size_t q, std::size_t n) {
  std::string t = db_path(db);
  char sep = '?';
  if (q) t += std::exchange(sep, '&') + std::string("q=") + std::to_string(q);
  if (n) t += std::exchange(sep, '&') + std::string("n=") + std::to_string(n);
  return request("PUT", t);
}

pending_json couch_client::bulk_get(const std::string& db, const json& body, bool attachments) {
  std::string t = db_path(db) + "/_bulk_get?revs=true";
  if (attachments) t += "&attachments=true";
  return request("POST", t, body.dump());
}

pending_json couch_client::open_revs(const std::string& db, const std::string& id,
                                     const std::vector<std::string>& revs, bool attachments) {
  std::string t = db_path(db) + "/" + encode_doc_id(id) +
                  "?revs=true&open_revs=" + encode_query_value(json(revs).dump());
  if (attachments) t += "&attachments=true";
  return request("GET", t);
}

pending_json couch_client::bulk_docs(const std::string& db, std::string body) {
  return request("POST", db_path(db) + "/_bulk_docs", std::move(body));
}

pending_json couch_client::db_updates(const json& since, bool longpoll, std::optional<std::size_t> limit) {
  std::string t = "/_db_updates?since=" + seq_param(since);
  if (limit) t += "&limit=" + std::to_string(*limit);
  if (longpoll) {
    t += "&feed=longpoll&timeout=" + std::to_string(t_.feed.count()) +
         "&heartbeat=" + std::to_string(t_.heartbeat.count());
    return feed_request(t);
  }
  return request("GET", t);
}

json couch_client::resume_seq(const json& answer) {
  if (!answer.is_object()) return nullptr;
  auto it = answer.find("results");
  if (it != answer.end() && it->is_array() && !it->empty()) {
    if (const json* seq = wire::find(it->back(), "seq")) return *seq;
  }
  auto ls = answer.find("last_seq");
  return ls != answer.end() ? *ls : json(nullptr);
}

std::optional<std::uint64_t> couch_client::seq_number(const json& seq) {
  if (seq.is_number_unsigned()) return seq.get<std::uint64_t>();
  if (seq.is_number_integer()) {
    auto v = seq.get<std::int64_t>();
    if (v < 0) return std::nullopt;
    return static_cast<std::uint64_t>(v);
  }
  if (!seq.is_string()) return std::nullopt;
  const auto& s = seq.get_ref<const std::string&>();
  std::uint64_t n = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
  if (ec != std::errc() || p == s.data()) return std::nullopt;
  if (p != s.data() + s.size() && *p != '-') return std::nullopt;
  return n;
}

}  // namespace couchgate::replicator
