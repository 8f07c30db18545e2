// Owns: the replication protocol round for many sources and targets (see transfer.hpp).
#include "replicator/transfer.hpp"

#include <unordered_map>

#include "replicator/batching.hpp"

namespace couchgate::replicator {

namespace {

// (db, id) key for lookups.
std::string key_of(const std::string& db, const std::string& id) {
  std::string k;
  k.reserve(db.size() + id.size() + 1);
  k += db;
  k.push_back('\0');
  k += id;
  return k;
}

void fail_unit(transfer_result& res, const std::string& unit, const couch_error& e) {
  res.failed.emplace(unit, e);  // keeps the first error
}

couch_error protocol_error(const std::string& what) {
  return couch_error{couch_error_kind::protocol, 0, what, ""};
}

// Is this error "the server has no _bulk_get" rather than "the database is missing"?
bool bulk_get_unsupported(const couch_error& e) {
  if (e.status == 405 || e.status == 501) return true;
  if (e.kind == couch_error_kind::bad_request) return true;
  if (e.kind == couch_error_kind::not_found) {
    return e.reason != "Database does not exist." && e.reason != "no_db_file" && e.error != "no_db_file";
  }
  return false;
}

struct fetch {
  std::size_t row;
  std::string rev;
};

}  // namespace

result<feed_page> parse_changes(const json& answer) {
  if (!answer.is_object() || !answer.contains("results") || !answer["results"].is_array()) {
    return protocol_error("_changes answer has no results array");
  }
  feed_page page;
  page.last_seq = couch_client::resume_seq(answer);
  for (const auto& row : answer["results"]) {
    if (!row.is_object() || !row.contains("id") || !row["id"].is_string() || !row.contains("changes") ||
        !row["changes"].is_array()) {
      return protocol_error("_changes row without id or changes");
    }
    feed_change c;
    c.id = row["id"].get<std::string>();
    for (const auto& ch : row["changes"]) {
      if (ch.is_object() && ch.contains("rev") && ch["rev"].is_string()) c.revs.push_back(ch["rev"].get<std::string>());
    }
    c.deleted = row.value("deleted", false) == true;
    if (auto d = row.find("doc"); d != row.end()) c.body = inline_revision(c.revs, *d);
    page.changes.push_back(std::move(c));
  }
  return page;
}

std::optional<json> inline_revision(const std::vector<std::string>& leaf_revs, const json& doc) {
  if (leaf_revs.size() != 1 || !doc.is_object()) return std::nullopt;
  const std::string& rev = leaf_revs.front();
  if (rev.size() <= 2 || rev.compare(0, 2, "1-") != 0) return std::nullopt;
  auto r = doc.find("_rev");
  if (r == doc.end() || !r->is_string() || r->get_ref<const std::string&>() != rev) return std::nullopt;
  if (doc.contains("_attachments") || doc.contains("_deleted") || !doc.contains("_id")) return std::nullopt;
  json out = doc;
  out["_revisions"] = json{{"start", 1}, {"ids", json::array({rev.substr(2)})}};
  return out;
}

bool first_generation(const feed_change& c) {
  return !c.deleted && c.revs.size() == 1 && c.revs.front().size() > 2 && c.revs.front().compare(0, 2, "1-") == 0;
}

bool include_docs_next(bool current, std::size_t first_generation_rows, std::size_t rows) {
  if (rows == 0) return current;
  return first_generation_rows * 2 >= rows;
}

transfer_result transfer(couch_client& client, const std::vector<change_row>& rows, const transfer_options& opts,
                         protocol_caps& caps) {
  transfer_result res;
  if (rows.empty()) return res;
  const std::size_t batch = std::max<std::size_t>(1, opts.batch_docs);

  // 1. One _revs_diff per target and chunk.
  std::unordered_map<std::string, std::vector<std::size_t>> by_target_key;  // (target db, id) -> rows
  std::map<std::string, std::vector<std::size_t>> by_target;                // target db -> rows
  for (std::size_t i = 0; i < rows.size(); ++i) {
    auto& v = by_target_key[key_of(rows[i].target_db, rows[i].target_id)];
    if (v.empty()) by_target[rows[i].target_db].push_back(i);
    v.push_back(i);
  }
  struct diff_call {
    std::string target;
    std::vector<std::size_t> rows;  // first row of each key in the chunk
    pending_json call;
  };
  std::vector<diff_call> diffs;
  for (auto& [target, firsts] : by_target) {
    for (auto [from, to] : plan_batches(firsts.size(), batch)) {
      diff_call d;
      d.target = target;
      json body = json::object();
      for (std::size_t k = from; k < to; ++k) {
        std::size_t i = firsts[k];
        d.rows.push_back(i);
        json revs = json::array();
        for (std::size_t r : by_target_key[key_of(target, rows[i].target_id)]) {
          for (const auto& rev : rows[r].revs) revs.push_back(rev);
        }
        body[rows[i].target_id] = std::move(revs);
      }
      d.call = client.revs_diff(target, body);
      ++res.requests;
      diffs.push_back(std::move(d));
    }
  }

  // 2. What each source must send: (row, rev) for every missing revision, from the first row
  // that listed it. Revisions whose body the feed already carried go straight to the writes.
  std::map<std::string, std::vector<fetch>> fetches;  // source db -> fetches
  struct fetched_doc {
    std::size_t row;
    std::string body;
  };
  std::vector<fetched_doc> docs;
  auto add_doc = [&](std::size_t row, json doc) {
    doc["_id"] = rows[row].target_id;
    docs.push_back({row, doc.dump()});
  };
  for (auto& d : diffs) {
    auto answer = d.call.get();
    if (!answer.ok() || !answer.value().is_object()) {
      couch_error e = answer.ok() ? protocol_error("_revs_diff answer is not an object") : answer.error();
      for (std::size_t i : d.rows) {
        for (std::size_t r : by_target_key[key_of(d.target, rows[i].target_id)]) fail_unit(res, rows[r].unit, e);
      }
      continue;
    }
    const json& a = answer.value();
    for (std::size_t i : d.rows) {
      auto it = a.find(rows[i].target_id);
      if (it == a.end() || !it->is_object() || !it->contains("missing") || !(*it)["missing"].is_array()) continue;
      for (const auto& m : (*it)["missing"]) {
        if (!m.is_string()) continue;
        const std::string rev = m.get<std::string>();
        for (std::size_t r : by_target_key[key_of(d.target, rows[i].target_id)]) {
          const auto& rr = rows[r].revs;
          if (std::find(rr.begin(), rr.end(), rev) != rr.end()) {
            ++res.revs_missing;
            if (rows[r].body && rows[r].body->value("_rev", std::string()) == rev) {
              add_doc(r, *rows[r].body);
              ++res.docs_inline;
            } else {
              fetches[rows[r].source_db].push_back({r, rev});
            }
            break;
          }
        }
      }
    }
  }

  // 3. Fetch the missing revisions with their histories, one _bulk_get per source and chunk.
  std::unordered_map<std::string, std::size_t> row_of_source;  // (source db, id) -> row
  for (const auto& [source, fs] : fetches) {
    for (const auto& f : fs) row_of_source.emplace(key_of(source, rows[f.row].source_id), f.row);
  }

  auto accept_doc = [&](const std::string& source, json doc) {
    if (!doc.is_object() || !doc.contains("_id") || !doc["_id"].is_string()) return false;
    auto it = row_of_source.find(key_of(source, doc["_id"].get<std::string>()));
    if (it == row_of_source.end()) return false;
    add_doc(it->second, std::move(doc));
    return true;
  };

  auto open_revs_fallback = [&](const std::string& source, const std::vector<fetch>& fs) {
    std::map<std::size_t, std::vector<std::string>> per_row;
    for (const auto& f : fs) per_row[f.row].push_back(f.rev);
    std::vector<std::pair<std::size_t, pending_json>> calls;
    for (auto& [r, revs] : per_row) {
      calls.emplace_back(r, client.open_revs(source, rows[r].source_id, revs, opts.attachments));
      ++res.requests;
    }
    for (auto& [r, call] : calls) {
      auto answer = call.get();
      if (!answer.ok()) {
        if (answer.error().kind == couch_error_kind::not_found) {
          ++res.docs_vanished;
          continue;
        }
        fail_unit(res, rows[r].unit, answer.error());
        continue;
      }
      if (!answer.value().is_array()) {
        fail_unit(res, rows[r].unit, protocol_error("open_revs answer is not an array"));
        continue;
      }
      for (auto& entry : answer.value()) {
        if (entry.is_object() && entry.contains("ok")) {
          if (!accept_doc(source, std::move(entry["ok"]))) ++res.docs_vanished;
        } else {
          ++res.docs_vanished;
        }
      }
    }
  };

  struct get_call {
    std::string source;
    std::vector<fetch> fs;
    pending_json call;
  };
  std::vector<get_call> gets;
  for (auto& [source, fs] : fetches) {
    for (auto [from, to] : plan_batches(fs.size(), batch)) {
      get_call g;
      g.source = source;
      g.fs.assign(fs.begin() + static_cast<std::ptrdiff_t>(from), fs.begin() + static_cast<std::ptrdiff_t>(to));
      if (caps.bulk_get.load() != 0) {
        json list = json::array();
        for (const auto& f : g.fs) list.push_back({{"id", rows[f.row].source_id}, {"rev", f.rev}});
        g.call = client.bulk_get(source, json{{"docs", std::move(list)}}, opts.attachments);
        ++res.requests;
      }
      gets.push_back(std::move(g));
    }
  }
  for (auto& g : gets) {
    if (!g.call.valid()) {
      open_revs_fallback(g.source, g.fs);
      continue;
    }
    auto answer = g.call.get();
    if (!answer.ok()) {
      if (bulk_get_unsupported(answer.error())) {
        caps.bulk_get.store(0);
        open_revs_fallback(g.source, g.fs);
        continue;
      }
      for (const auto& f : g.fs) fail_unit(res, rows[f.row].unit, answer.error());
      continue;
    }
    caps.bulk_get.store(1);
    json& a = answer.value();
    if (!a.is_object() || !a.contains("results") || !a["results"].is_array()) {
      for (const auto& f : g.fs) fail_unit(res, rows[f.row].unit, protocol_error("_bulk_get answer has no results"));
      continue;
    }
    for (auto& r : a["results"]) {
      if (!r.is_object() || !r.contains("docs") || !r["docs"].is_array()) continue;
      for (auto& entry : r["docs"]) {
        // {"ok":doc} | {"error":{...}} (CouchDB) | {"missing":rev} | {} (pouchdb-server)
        if (entry.is_object() && entry.contains("ok")) {
          if (!accept_doc(g.source, std::move(entry["ok"]))) ++res.docs_vanished;
        } else {
          ++res.docs_vanished;
        }
      }
    }
  }

  // 4. Write, grouped by target, in chunks bounded by docs and bytes.
  std::map<std::string, std::vector<std::size_t>> docs_by_target;
  for (std::size_t i = 0; i < docs.size(); ++i) docs_by_target[rows[docs[i].row].target_db].push_back(i);
  struct write_call {
    std::vector<std::size_t> docs;
    std::size_t bytes = 0;
    pending_json call;
  };
  std::vector<write_call> writes;
  for (auto& [target, idx] : docs_by_target) {
    std::vector<std::size_t> sizes;
    sizes.reserve(idx.size());
    for (std::size_t i : idx) sizes.push_back(docs[i].body.size());
    for (auto [from, to] : plan_batches(sizes, batch, opts.batch_bytes)) {
      write_call w;
      std::string body = "{\"new_edits\":false,\"docs\":[";
      for (std::size_t k = from; k < to; ++k) {
        if (k != from) body.push_back(',');
        body += docs[idx[k]].body;
        w.bytes += sizes[k];
        w.docs.push_back(idx[k]);
      }
      body += "]}";
      w.call = client.bulk_docs(target, std::move(body));
      ++res.requests;
      writes.push_back(std::move(w));
    }
  }
  for (auto& w : writes) {
    auto answer = w.call.get();
    if (!answer.ok()) {
      for (std::size_t d : w.docs) fail_unit(res, rows[docs[d].row].unit, answer.error());
      continue;
    }
    std::unordered_map<std::string, std::size_t> failed_ids;
    if (answer.value().is_array()) {
      for (const auto& entry : answer.value()) {
        if (entry.is_object() && entry.contains("error") && entry.contains("id") && entry["id"].is_string()) {
          failed_ids.emplace(entry["id"].get<std::string>(), 0);
          couch_error e{couch_error_kind::bad_request, 0, entry["error"].is_string() ? entry["error"].get<std::string>() : "error",
                        entry.value("reason", std::string())};
          for (std::size_t d : w.docs) {
            if (rows[docs[d].row].target_id == entry["id"].get<std::string>()) fail_unit(res, rows[docs[d].row].unit, e);
          }
        }
      }
    }
    for (std::size_t d : w.docs) {
      if (failed_ids.count(rows[docs[d].row].target_id)) continue;
      ++res.docs_written;
      ++res.written_by_unit[rows[docs[d].row].unit];
      res.bytes_written += docs[d].body.size();
    }
  }
  return res;
}

}  // namespace couchgate::replicator
