// Owns: reading and writing couchgate's state documents (see state_store.hpp).
#include "replicator/state_store.hpp"

#include <algorithm>

#include "policy/security.hpp"
#include "replicator/wire_json.hpp"
#include "replicator/batching.hpp"
#include "replicator/logger.hpp"

namespace couchgate::replicator {

namespace {
std::shared_ptr<spdlog::logger> log() {
  static auto l = named_logger("state");
  return l;
}
}  // namespace

result<bool> state_store::ensure_db() {
  auto created = client_.create_db(db_).get();
  if (!created.ok() && created.error().kind != couch_error_kind::conflict) return created.error();
  auto sec = client_.put_security(db_, policy::render_admin_only_security()).get();
  if (!sec.ok()) return sec.error();
  existed_.store(true);
  return created.ok();
}

result<json> state_store::docs_with_prefix(const std::string& prefix) {
  // Ids "<prefix>:..." sort between "<prefix>:" and "<prefix>;".
  std::string startkey = json(prefix + ":").dump();
  std::string endkey = json(prefix + ";").dump();
  auto r = client_.all_docs(db_, "include_docs=true&startkey=" + encode_query_value(startkey) +
                                     "&endkey=" + encode_query_value(endkey)).get();
  if (!r.ok()) return r.error();
  existed_.store(true);
  json& j = r.value();
  if (!j.contains("rows") || !j["rows"].is_array()) {
    return couch_error{couch_error_kind::protocol, 200, "_all_docs answer has no rows", ""};
  }
  json docs = json::array();
  std::lock_guard lk(mu_);
  for (auto& row : j["rows"]) {
    if (!row.is_object() || !row.contains("doc") || !row["doc"].is_object()) continue;
    auto& doc = row["doc"];
    auto id_rev = std::pair(wire::get_string(doc, "_id"), wire::get_string(doc, "_rev"));
    if (!id_rev.first || !id_rev.second) continue;
    revs_[*id_rev.first] = *id_rev.second;
    docs.push_back(std::move(doc));
  }
  return docs;
}

result<state_store::load_outcome> state_store::load_checkpoints() {
  auto docs = docs_with_prefix("checkpoint");
  if (!docs.ok()) return docs.error();
  std::lock_guard lk(mu_);
  load_outcome out;
  for (const auto& doc : docs.value()) {
    if (doc.contains("seq") && doc.contains("source") && doc["source"].is_string()) {
      const std::string source = doc["source"].get<std::string>();
      if (marker_ && !checkpoint_matches(stamp_of(doc), *marker_)) {
        // Written for another central database (or a newer one than is there now): the
        // documents it counts as sent may be missing. Start again; write the zero back.
        if (auto n = couch_client::seq_number(doc["seq"]); n && *n == 0) continue;
        checkpoints_.erase(source);
        unflushed_[source] = 0;
        ++out.voided;
        continue;
      }
      checkpoints_[source] = doc["seq"];
      ++out.loaded;
    }
  }
  return out;
}

void state_store::set_marker(const epoch_stamp& marker) {
  std::lock_guard lk(mu_);
  marker_ = marker;
}

std::optional<epoch_stamp> state_store::stamp_of(const json& doc) {
  auto c = doc.find("central");
  if (c == doc.end()) return std::nullopt;
  return epoch_stamp::from_json(*c);
}

std::size_t state_store::reset_all(const epoch_stamp& marker) {
  std::lock_guard lk(mu_);
  marker_ = marker;
  std::size_t n = 0;
  std::unordered_set<std::string> sources;
  for (const auto& [source, seq] : checkpoints_) sources.insert(source);
  for (const auto& [source, seq] : unflushed_) sources.insert(source);
  for (const auto& source : sources) {
    ++epochs_[source];  // a turn still running cannot advance it afterwards
    unflushed_[source] = 0;
    ++n;
  }
  checkpoints_.clear();
  adopt_pending_.clear();
  return n;
}

std::optional<json> state_store::checkpoint(const std::string& source) const {
  std::lock_guard lk(mu_);
  auto it = checkpoints_.find(source);
  if (it == checkpoints_.end()) return std::nullopt;
  return it->second;
}

json state_store::checkpoint_doc(const std::string& source, const json& seq) const {
  json d{{"_id", checkpoint_id(source)}, {"type", "checkpoint"}, {"source", source}, {"seq", seq}};
  if (marker_) d["central"] = marker_->to_json();
  return d;
}

state_store::position state_store::start_position(const std::string& source) const {
  std::lock_guard lk(mu_);
  position p;
  if (auto it = checkpoints_.find(source); it != checkpoints_.end()) p.seq = it->second;
  p.epoch = epoch_locked(source);
  return p;
}

std::uint64_t state_store::epoch_locked(const std::string& source) const {
  auto it = epochs_.find(source);
  return it == epochs_.end() ? 0 : it->second;
}

result<std::size_t> state_store::write(std::vector<json> docs, bool retry_conflicts, write_rows* rows, bool fill_revs) {
  if (fill_revs) {
    std::lock_guard lk(mu_);
    for (auto& d : docs) {
      auto it = revs_.find(d["_id"].get<std::string>());
      if (it != revs_.end()) d["_rev"] = it->second;
    }
  }
  json body = {{"docs", docs}};
  auto r = client_.bulk_docs(db_, body.dump()).get();
  if (!r.ok() && r.error().kind == couch_error_kind::not_found && recreate_db()) {
    // A new database holds none of the revisions we had: write as new documents.
    for (auto& d : docs) d.erase("_rev");
    body = {{"docs", docs}};
    r = client_.bulk_docs(db_, body.dump()).get();
  }
  if (!r.ok()) return r.error();
  if (!r.value().is_array()) return couch_error{couch_error_kind::protocol, 201, "_bulk_docs answer is not an array", ""};
  std::size_t written = 0;
  std::vector<json> retry;
  std::unordered_map<std::string, const json*> by_id;
  for (const auto& d : docs) by_id[d["_id"].get<std::string>()] = &d;
  for (const auto& row : r.value()) {
    if (!row.is_object() || !row.contains("id") || !row["id"].is_string()) continue;
    std::string id = row["id"].get<std::string>();
    auto mine = by_id.find(id);
    if (mine == by_id.end()) continue;
    if (row.contains("rev") && row["rev"].is_string() && !row.contains("error")) {
      std::lock_guard lk(mu_);
      revs_[id] = row["rev"].get<std::string>();
      ++written;
      if (rows) rows->written.insert(id);
    } else if (wire::get_string(row, "error") == "conflict" && retry_conflicts) {
      retry.push_back(*mine->second);
    } else if (wire::get_string(row, "error") == "conflict") {
      if (rows) rows->conflicts.insert(id);
    } else if (rows) {
      rows->failed.insert(id);
      const json* reason = wire::find(row, "reason");
      if (rows->first_error.empty()) {
        rows->first_error = id + ": " + wire::get_string(row, "error").value_or("?") + " " + (reason ? wire::text_of(*reason) : "");
      }
    }
    by_id.erase(mine);
  }
  if (rows) {
    for (const auto& [id, d] : by_id) {
      rows->failed.insert(id);
      if (rows->first_error.empty()) rows->first_error = id + ": no row in the _bulk_docs answer";
    }
  }
  if (!retry.empty()) {
    for (auto& d : retry) {
      // (a conflict retry of a feed position or a reset: one GET per document)
      std::string id = d["_id"].get<std::string>();
      auto cur = client_.get_doc(db_, id).get();
      std::lock_guard lk(mu_);
      if (auto rev = cur.ok() ? wire::get_string(cur.value(), "_rev") : std::nullopt) revs_[id] = *rev;
      else revs_.erase(id);
      d.erase("_rev");
    }
    auto again = write(std::move(retry), false, rows);
    if (!again.ok()) return again.error();
    written += again.value();
  }
  return written;
}

std::size_t state_store::advance(const std::vector<advance_to>& cps) {
  std::lock_guard lk(mu_);
  std::size_t taken = 0;
  for (const auto& cp : cps) {
    if (cp.epoch != epoch_locked(cp.source)) continue;  // reset or adopted meanwhile
    checkpoints_[cp.source] = cp.seq;
    unflushed_[cp.source] = cp.seq;
    ++taken;
  }
  return taken;
}

bool state_store::has_unflushed() const {
  std::lock_guard lk(mu_);
  return !unflushed_.empty() || !adopt_pending_.empty();
}

result<state_store::flush_outcome> state_store::flush(const std::function<result<epoch_stamp>()>& stamp) {
  std::lock_guard one(flush_mu_);
  std::vector<std::string> retry_adopt;
  {
    std::lock_guard lk(mu_);
    retry_adopt.swap(adopt_pending_);
  }
  for (const auto& source : retry_adopt) adopt(source);

  struct item {
    std::string source;
    json seq;
    std::uint64_t epoch;
  };
  std::vector<item> batch;
  std::vector<json> docs;
  {
    // The revision is taken together with the value (and none is filled in later): a
    // reset_checkpoint that writes between here and the request makes this write conflict
    // instead of overwriting it.
    std::lock_guard lk(mu_);
    for (const auto& [source, seq] : unflushed_) {
      json d = checkpoint_doc(source, seq);
      if (auto r = revs_.find(checkpoint_id(source)); r != revs_.end()) d["_rev"] = r->second;
      batch.push_back({source, seq, epoch_locked(source)});
      docs.push_back(std::move(d));
    }
  }
  flush_outcome out;
  if (docs.empty()) return out;
  if (stamp) {
    // The marker is raised after the snapshot: everything in it was acknowledged by the central
    // database before, so any copy of the central database with this generation holds it.
    auto s = stamp();
    if (!s.ok()) return s.error();
    std::lock_guard lk(mu_);
    if (marker_ && marker_->epoch != s.value().epoch) {
      return couch_error{couch_error_kind::conflict, 0, "central epoch changed", "checkpoints were reset"};
    }
    marker_ = s.value();
    for (auto& d : docs) d["central"] = s.value().to_json();
  }
  write_rows rows;
  auto r = write(std::move(docs), false, &rows, false);
  if (!r.ok()) return r.error();  // everything stays unflushed for the next attempt
  out.written = r.value();
  out.first_error = rows.first_error;
  std::vector<std::string> adopting, rereading;
  {
    std::lock_guard lk(mu_);
    for (const auto& it : batch) {
      const std::string id = checkpoint_id(it.source);
      auto u = unflushed_.find(it.source);
      if (rows.written.count(id)) {
        if (u != unflushed_.end() && u->second == it.seq) unflushed_.erase(u);  // a newer advance stays
        reset_pending_.erase(it.source);
      } else if (rows.conflicts.count(id) && reset_pending_.count(it.source)) {
        rereading.push_back(id);  // our reset must win: fetch the revision, write again next time
      } else if (rows.conflicts.count(id) && epoch_locked(it.source) == it.epoch) {
        if (u != unflushed_.end()) unflushed_.erase(u);  // the other writer wins
        adopting.push_back(it.source);
      } else if (rows.failed.count(id)) {
        out.refused.push_back(it.source);  // stays unflushed and is retried
      }
      // a conflict after a reset of ours is that reset's
    }
  }
  for (const auto& id : rereading) {
    auto cur = client_.get_doc(db_, id).get();
    std::lock_guard lk(mu_);
    if (cur.ok() && cur.value().contains("_rev") && cur.value()["_rev"].is_string()) revs_[id] = cur.value()["_rev"].get<std::string>();
    else if (!cur.ok() && cur.error().kind == couch_error_kind::not_found) revs_.erase(id);
  }
  for (const auto& source : adopting) adopt(source);
  return out;
}

void state_store::adopt(const std::string& source) {
  {
    std::lock_guard lk(mu_);
    if (reset_pending_.count(source)) return;  // our own reset is what must be stored
  }
  auto r = refresh_checkpoint(source);
  if (!r.ok()) {
    std::lock_guard lk(mu_);
    adopt_pending_.push_back(source);
  }
}

result<bool> state_store::reset_checkpoint(const std::string& source) {
  auto failed = reset_checkpoints({source});
  if (auto it = failed.find(source); it != failed.end()) return it->second;
  return true;
}

std::map<std::string, couch_error> state_store::reset_checkpoints(const std::vector<std::string>& sources) {
  std::map<std::string, couch_error> failed;
  for (auto [from, to] : plan_batches(sources.size(), write_batch)) {
    std::vector<json> docs;
    {
      std::lock_guard lk(mu_);
      for (std::size_t k = from; k < to; ++k) {
        const std::string& source = sources[k];
        checkpoints_.erase(source);
        unflushed_.erase(source);
        adopt_pending_.erase(std::remove(adopt_pending_.begin(), adopt_pending_.end(), source), adopt_pending_.end());
        ++epochs_[source];  // a turn still running on the old database cannot advance it
        docs.push_back(checkpoint_doc(source, 0));
      }
    }
    write_rows rows;
    auto r = write(std::move(docs), true, &rows);
    std::lock_guard lk(mu_);
    for (std::size_t k = from; k < to; ++k) {
      const std::string& source = sources[k];
      if (r.ok() && rows.written.count(checkpoint_id(source))) {
        reset_pending_.erase(source);
        checkpoints_.try_emplace(source, 0);  // a turn started since may already be further
        continue;
      }
      // Not stored: the old database's checkpoint must not survive a restart, so keep the reset
      // pending (turns on the new database may advance it meanwhile; flush writes it over others).
      unflushed_.try_emplace(source, 0);
      reset_pending_.insert(source);
      failed.emplace(source, !r.ok() ? r.error()
                                     : couch_error{couch_error_kind::conflict, 0, "checkpoint reset not stored (kept pending)",
                                                   rows.first_error.empty() ? "conflict" : rows.first_error});
    }
  }
  return failed;
}

result<bool> state_store::refresh_checkpoint(const std::string& source) {
  auto r = client_.get_doc(db_, checkpoint_id(source)).get();
  if (!r.ok() && r.error().kind != couch_error_kind::not_found) return r.error();
  std::lock_guard lk(mu_);
  // The stored checkpoint is the truth from here on: what turns advanced before is dropped.
  unflushed_.erase(source);
  ++epochs_[source];
  if (!r.ok()) {
    checkpoints_.erase(source);
    revs_.erase(checkpoint_id(source));
    return false;
  }
  const json& doc = r.value();
  if (doc.contains("_rev") && doc["_rev"].is_string()) revs_[checkpoint_id(source)] = doc["_rev"].get<std::string>();
  if (doc.contains("seq") && (!marker_ || checkpoint_matches(stamp_of(doc), *marker_))) checkpoints_[source] = doc["seq"];
  else checkpoints_.erase(source);  // none, or written for another central database: from 0
  return true;
}

bool state_store::recreate_db() {
  std::lock_guard one(recreate_mu_);
  // Another caller may have just done it: look before creating.
  auto info = client_.db_info(db_).get();
  if (info.ok()) {
    existed_.store(true);
    missing_.store(false);
    return true;
  }
  if (info.error().kind != couch_error_kind::not_found) return false;
  // Never seen by this process (a `couchgate restore` on a server couchgate has not run on):
  // made for the first time, nothing lost. Seen before: someone deleted it.
  const bool first_time = !existed_.load();
  if (first_time) {
    if (!missing_.exchange(true)) log()->info("state database {} does not exist yet; creating it", db_);
  } else if (!missing_.exchange(true)) {
    log()->warn("state database {} is missing; creating it again", db_);
  }
  auto made = ensure_db();
  if (!made.ok()) {
    log()->debug("state database {} not created yet: {}", db_, made.error().describe());
    return false;
  }
  std::size_t n = 0;
  {
    std::lock_guard lk(mu_);
    revs_.clear();
    for (const auto& [source, seq] : checkpoints_) {
      unflushed_.try_emplace(source, seq);
      ++n;
    }
  }
  missing_.store(false);
  if (first_time) {
    log()->info("state database {} created", db_);
  } else {
    log()->warn("state database {} created again; {} checkpoints held in memory are written back (feed positions with their next move)",
                db_, n);
  }
  return true;
}

result<bool> state_store::check_db() {
  auto info = client_.db_info(db_).get();
  if (info.ok()) return true;
  if (info.error().kind != couch_error_kind::not_found) return info.error();
  return recreate_db();
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
  write_rows rows;
  auto r = write({json{{"_id", "feed:" + key}, {"type", "feed"}, {"value", value}}}, true, &rows);
  if (!r.ok()) return r.error();
  if (r.value() == 1) return true;
  // Answered, not written (an error row, a conflict again after the one retry, no row): a failed
  // write to the caller, who keeps the value to write again.
  const bool conflict = !rows.conflicts.empty();
  return couch_error{conflict ? couch_error_kind::conflict : couch_error_kind::protocol, 201,
                     conflict ? "conflict" : "not written", rows.first_error};
}

result<std::unordered_set<std::string>> state_store::load_restores() {
  auto docs = docs_with_prefix("restore");
  if (!docs.ok()) {
    if (docs.error().kind == couch_error_kind::not_found) return std::unordered_set<std::string>{};  // no state database yet
    return docs.error();
  }
  std::unordered_set<std::string> dbs;
  for (const auto& doc : docs.value()) {
    if (auto db = wire::get_string(doc, "db")) dbs.insert(*db);
  }
  return dbs;
}

std::map<std::string, couch_error> state_store::write_restores(const std::vector<std::string>& dbs, const json* value) {
  std::map<std::string, couch_error> failed;
  for (auto [from, to] : plan_batches(dbs.size(), write_batch)) {
    std::vector<json> docs;
    for (std::size_t k = from; k < to; ++k) {
      json d{{"_id", restore_id(dbs[k])}, {"type", "restore"}, {"db", dbs[k]}};
      if (value) d["restore"] = *value;
      else d["_deleted"] = true;
      docs.push_back(std::move(d));
    }
    write_rows rows;
    auto r = write(std::move(docs), true, &rows);
    for (std::size_t k = from; k < to; ++k) {
      if (r.ok() && rows.written.count(restore_id(dbs[k]))) continue;
      failed.emplace(dbs[k], !r.ok() ? r.error()
                                     : couch_error{couch_error_kind::protocol, 0, "restore record not stored",
                                                   rows.first_error.empty() ? "no row" : rows.first_error});
    }
  }
  return failed;
}

std::map<std::string, couch_error> state_store::mark_restores(const std::vector<std::string>& dbs, const json& value) {
  return write_restores(dbs, &value);
}

std::map<std::string, couch_error> state_store::clear_restores(const std::vector<std::string>& dbs) {
  return write_restores(dbs, nullptr);
}

}  // namespace couchgate::replicator
