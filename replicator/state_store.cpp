// Owns: reading and writing couchgate's state documents (see state_store.hpp).
#include "replicator/state_store.hpp"

#include <algorithm>

#include "policy/security.hpp"

namespace couchgate::replicator {

result<bool> state_store::ensure_db() {
  auto created = client_.create_db(db_).get();
  if (!created.ok() && created.error().kind != couch_error_kind::conflict) return created.error();
  auto sec = client_.put_security(db_, policy::render_admin_only_security()).get();
  if (!sec.ok()) return sec.error();
  return created.ok();
}

result<std::size_t> state_store::load_checkpoints() {
  std::string startkey = json("checkpoint:").dump();
  std::string endkey = json("checkpoint;").dump();
  auto r = client_.all_docs(db_, "include_docs=true&startkey=" + encode_query_value(startkey) +
                                     "&endkey=" + encode_query_value(endkey)).get();
  if (!r.ok()) return r.error();
  const json& j = r.value();
  if (!j.contains("rows") || !j["rows"].is_array()) {
    return couch_error{couch_error_kind::protocol, 200, "_all_docs answer has no rows", ""};
  }
  std::lock_guard lk(mu_);
  std::size_t n = 0;
  for (const auto& row : j["rows"]) {
    if (!row.is_object() || !row.contains("doc") || !row["doc"].is_object()) continue;
    const auto& doc = row["doc"];
    if (!doc.contains("_id") || !doc["_id"].is_string() || !doc.contains("_rev")) continue;
    std::string id = doc["_id"].get<std::string>();
    revs_[id] = doc["_rev"].get<std::string>();
    if (doc.contains("seq") && doc.contains("source") && doc["source"].is_string()) {
      checkpoints_[doc["source"].get<std::string>()] = doc["seq"];
      ++n;
    }
  }
  return n;
}

std::optional<json> state_store::checkpoint(const std::string& source) const {
  std::lock_guard lk(mu_);
  auto it = checkpoints_.find(source);
  if (it == checkpoints_.end()) return std::nullopt;
  return it->second;
}

json state_store::checkpoint_doc(const std::string& source, const json& seq) {
  return json{{"_id", checkpoint_id(source)}, {"type", "checkpoint"}, {"source", source}, {"seq", seq}};
}

result<std::size_t> state_store::write(std::vector<json> docs, bool retry_conflicts, std::vector<std::string>* conflicts) {
  {
    std::lock_guard lk(mu_);
    for (auto& d : docs) {
      auto it = revs_.find(d["_id"].get<std::string>());
      if (it != revs_.end()) d["_rev"] = it->second;
    }
  }
  json body = {{"docs", docs}};
  auto r = client_.bulk_docs(db_, body.dump()).get();
  if (!r.ok()) return r.error();
  if (!r.value().is_array()) return couch_error{couch_error_kind::protocol, 201, "_bulk_docs answer is not an array", ""};
  std::size_t written = 0;
  std::vector<json> retry;
  std::unordered_map<std::string, const json*> by_id;
  for (const auto& d : docs) by_id[d["_id"].get<std::string>()] = &d;
  for (const auto& row : r.value()) {
    if (!row.is_object() || !row.contains("id") || !row["id"].is_string()) continue;
    std::string id = row["id"].get<std::string>();
    if (row.contains("rev") && row["rev"].is_string() && !row.contains("error")) {
      std::lock_guard lk(mu_);
      revs_[id] = row["rev"].get<std::string>();
      ++written;
    } else if (row.value("error", "") == "conflict" && by_id.count(id)) {
      if (retry_conflicts) retry.push_back(*by_id[id]);
      else if (conflicts) conflicts->push_back(id);
    }
  }
  if (!retry.empty()) {
    for (auto& d : retry) {
      std::string id = d["_id"].get<std::string>();
      auto cur = client_.get_doc(db_, id).get();
      std::lock_guard lk(mu_);
      if (cur.ok() && cur.value().contains("_rev")) revs_[id] = cur.value()["_rev"].get<std::string>();
      else revs_.erase(id);
      d.erase("_rev");
    }
    auto again = write(std::move(retry), false);
    if (!again.ok()) return again.error();
    written += again.value();
  }
  return written;
}

result<std::size_t> state_store::save_checkpoints(const std::vector<std::pair<std::string, json>>& cps) {
  if (cps.empty()) return std::size_t{0};
  std::vector<json> docs;
  docs.reserve(cps.size());
  for (const auto& [source, seq] : cps) docs.push_back(checkpoint_doc(source, seq));
  auto r = write(std::move(docs), true);
  if (r.ok()) {
    std::lock_guard lk(mu_);
    for (const auto& [source, seq] : cps) {
      checkpoints_[source] = seq;
      unflushed_.erase(source);
    }
  }
  return r;
}

void state_store::advance(const std::vector<std::pair<std::string, json>>& cps) {
  std::lock_guard lk(mu_);
  for (const auto& [source, seq] : cps) {
    checkpoints_[source] = seq;
    unflushed_[source] = seq;
  }
}

bool state_store::has_unflushed() const {
  std::lock_guard lk(mu_);
  return !unflushed_.empty();
}

result<std::size_t> state_store::flush() {
  std::unique_lock one(flush_mu_, std::try_to_lock);
  if (!one.owns_lock()) return std::size_t{0};
  std::vector<std::pair<std::string, json>> batch;
  {
    std::lock_guard lk(mu_);
    batch.assign(unflushed_.begin(), unflushed_.end());
  }
  if (batch.empty()) return std::size_t{0};
  std::vector<json> docs;
  docs.reserve(batch.size());
  for (const auto& [source, seq] : batch) docs.push_back(checkpoint_doc(source, seq));
  std::vector<std::string> conflicts;
  auto r = write(std::move(docs), false, &conflicts);
  if (!r.ok()) return r;  // everything stays unflushed for the next attempt
  std::vector<std::string> adopt;
  {
    std::lock_guard lk(mu_);
    for (const auto& [source, seq] : batch) {
      const bool conflicted = std::find(conflicts.begin(), conflicts.end(), checkpoint_id(source)) != conflicts.end();
      auto it = unflushed_.find(source);
      if (conflicted) {
        if (it != unflushed_.end()) unflushed_.erase(it);
        adopt.push_back(source);
      } else if (it != unflushed_.end() && it->second == seq) {
        unflushed_.erase(it);  // a newer advance since the snapshot stays for the next flush
      }
    }
  }
  for (const auto& source : adopt) (void)refresh_checkpoint(source);
  return r;
}

result<bool> state_store::reset_checkpoint(const std::string& source) {
  {
    std::lock_guard lk(mu_);
    checkpoints_.erase(source);
    unflushed_.erase(source);
  }
  auto r = write({checkpoint_doc(source, 0)}, true);
  if (!r.ok()) return r.error();
  std::lock_guard lk(mu_);
  checkpoints_[source] = 0;
  return true;
}

result<bool> state_store::refresh_checkpoint(const std::string& source) {
  auto r = client_.get_doc(db_, checkpoint_id(source)).get();
  std::lock_guard lk(mu_);
  unflushed_.erase(source);  // asked to re-read: the stored checkpoint is the truth
  if (!r.ok()) {
    if (r.error().kind != couch_error_kind::not_found) return r.error();
    checkpoints_.erase(source);
    revs_.erase(checkpoint_id(source));
    return false;
  }
  const json& doc = r.value();
  if (doc.contains("_rev") && doc["_rev"].is_string()) revs_[checkpoint_id(source)] = doc["_rev"].get<std::string>();
  if (doc.contains("seq")) checkpoints_[source] = doc["seq"];
  return true;
}

result<std::optional<json>> state_store::get_value(const std::string& key) {
  auto r = client_.get_doc(db_, "feed:" + key).get();
  if (!r.ok()) {
    if (r.error().kind == couch_error_kind::not_found) return std::optional<json>{};
    return r.error();
  }
  const json& doc = r.value();
  {
    std::lock_guard lk(mu_);
    if (doc.contains("_rev") && doc["_rev"].is_string()) revs_["feed:" + key] = doc["_rev"].get<std::string>();
  }
  if (!doc.contains("value")) return std::optional<json>{};
  return std::optional<json>(doc["value"]);
}

result<bool> state_store::put_value(const std::string& key, const json& value) {
  auto r = write({json{{"_id", "feed:" + key}, {"type", "feed"}, {"value", value}}}, true);
  if (!r.ok()) return r.error();
  return r.value() == 1;
}

}  // namespace couchgate::replicator
