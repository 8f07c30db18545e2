// Owns: the replication protocol round for many sources and targets (see transfer.hpp).
#include "replicator/transfer.hpp"

#include <algorithm>
#include <unordered_map>
#include <unordered_set>

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

std::optional<wire::raw_doc> inline_revision(const std::vector<std::string>& leaf_revs, const wire::raw_doc& doc) {
  if (leaf_revs.size() != 1) return std::nullopt;
  const std::string& rev = leaf_revs.front();
  if (rev.size() <= 2 || rev.compare(0, 2, "1-") != 0) return std::nullopt;
  if (doc.rev != rev || doc.has_attachments || doc.deleted || doc.has_revisions) return std::nullopt;
  wire::raw_doc out = doc;
  out.text = wire::with_field(doc.text, "_revisions", "{\"start\":1,\"ids\":[" + wire::quote(rev.substr(2)) + "]}");
  out.has_revisions = true;
  return out;
}

std::optional<wire::raw_doc> inline_revision(const feed_change& c) {
  if (!c.doc) return std::nullopt;
  return inline_revision(c.revs, *c.doc);
}

std::optional<std::size_t> attachment_wire_bytes(std::string_view stub_doc_text) {
  auto doc = wire::parse(stub_doc_text, "document with attachment stubs");
  if (!doc.ok()) return std::nullopt;
  std::size_t total = stub_doc_text.size();
  const json* atts = wire::find_object(doc.value(), "_attachments");
  if (!atts) return total;
  for (const auto& [name, stub] : atts->items()) {
    const json* n = wire::find(stub, "encoded_length");
    if (!n || !n->is_number_unsigned()) n = wire::find(stub, "length");
    if (!n || !n->is_number_unsigned()) return std::nullopt;
    const auto bytes = n->get<std::uint64_t>();
    total += static_cast<std::size_t>((bytes + 2) / 3 * 4) + name.size() + 100;
  }
  return total;
}

bool row_error_transient(const std::string& error) {
  return error == "unknown_error" || error == "internal_server_error" || error == "timeout" ||
         error == "service_unavailable" || error == "too_many_requests" || error == "nodedown";
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
  std::vector<std::string> fresh;  // targets asked nothing (opts.fresh_targets)
  for (auto& [target, firsts] : by_target) {
    if (opts.fresh_targets && opts.fresh_targets->count(target)) {
      fresh.push_back(target);
      continue;
    }
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
    std::string rev;
    std::string body;
    std::uint64_t history_from = 1;  // the oldest generation its `_revisions` reaches
    bool deleted = false;
    // A revision with attachments fetched later (opts.budget, step 5): here for the stemmed-history
    // checks only (its history is the stub fetch's), never written from this entry.
    bool heavy = false;
  };
  std::vector<fetched_doc> docs;
  auto history_from = [](const wire::raw_doc& doc) -> std::uint64_t {
    if (doc.has_revisions && doc.revisions_count > 0 && doc.revisions_start >= doc.revisions_count) {
      return doc.revisions_start - doc.revisions_count + 1;
    }
    return 1;
  };
  auto add_doc = [&](std::size_t row, const wire::raw_doc& doc) {
    docs.push_back({row, doc.rev, wire::with_id(doc, rows[row].target_id), history_from(doc), doc.deleted});
  };
  auto refuse = [&](std::size_t row, const std::string& rev, std::string error, std::string reason) {
    const change_row& r = rows[row];
    res.doc_failures.push_back(
        doc_failure{r.unit, r.source_db, r.source_id, r.target_db, r.target_id, rev, std::move(error), std::move(reason)});
  };
  auto target_key = [&](std::size_t row) { return key_of(rows[row].target_db, rows[row].target_id); };
  std::unordered_set<std::string> wanted;                                   // key_of(target key, rev): to be written
  std::unordered_map<std::string, std::vector<std::string>> ancestors_of;  // target key -> _revs_diff's possible_ancestors
  // The revision `rev` of the document of key_rows is missing: from the feed's body or fetched.
  auto need = [&](const std::vector<std::size_t>& key_rows, const std::string& rev) {
    for (std::size_t r : key_rows) {
      const auto& rr = rows[r].revs;
      if (std::find(rr.begin(), rr.end(), rev) == rr.end()) continue;
      if (!wanted.insert(key_of(target_key(r), rev)).second) return;
      ++res.revs_missing;
      if (rows[r].body && rows[r].body->rev == rev) {
        add_doc(r, *rows[r].body);
        ++res.docs_inline;
      } else {
        fetches[rows[r].source_db].push_back({r, rev});
      }
      return;
    }
  };
  // A target that lacks everything: every revision its rows list is missing.
  auto need_all = [&](const std::string& target, const std::vector<std::size_t>& firsts) {
    for (std::size_t i : firsts) {
      const auto& key_rows = by_target_key[key_of(target, rows[i].target_id)];
      for (std::size_t r : key_rows) {
        for (const auto& rev : rows[r].revs) need(key_rows, rev);
      }
    }
  };
  for (const auto& target : fresh) need_all(target, by_target[target]);
  for (auto& d : diffs) {
    auto answer = d.call.get();
    if (!answer.ok() && opts.dry_run && answer.error().kind == couch_error_kind::not_found) {
      need_all(d.target, d.rows);  // no such target database yet
      continue;
    }
    auto entries = answer.ok() ? parse_revs_diff(answer.value()) : result<std::map<std::string, revs_diff_entry>>(answer.error());
    if (!entries.ok()) {
      for (std::size_t i : d.rows) {
        for (std::size_t r : by_target_key[key_of(d.target, rows[i].target_id)]) fail_unit(res, rows[r].unit, entries.error());
      }
      continue;
    }
    for (std::size_t i : d.rows) {
      auto entry = entries.value().find(rows[i].target_id);
      if (entry == entries.value().end()) continue;
      const std::string key = key_of(d.target, rows[i].target_id);
      for (const auto& rev : entry->second.missing) need(by_target_key[key], rev);
      if (!entry->second.possible_ancestors.empty()) ancestors_of[key] = entry->second.possible_ancestors;
    }
  }
  // Restore: the histories of every leaf of a document with several, missing or not (step 3b).
  if (opts.skip_stemmed_ancestors) {
    for (auto& [key, key_rows] : by_target_key) {
      std::vector<std::pair<std::size_t, std::string>> listed;
      bool any_wanted = false;
      for (std::size_t r : key_rows) {
        for (const auto& rev : rows[r].revs) {
          if (std::none_of(listed.begin(), listed.end(), [&](const auto& x) { return x.second == rev; })) listed.emplace_back(r, rev);
          any_wanted = any_wanted || wanted.count(key_of(key, rev)) > 0;
        }
      }
      if (listed.size() < 2 || !any_wanted) continue;
      for (const auto& [r, rev] : listed) {
        if (!wanted.count(key_of(key, rev))) fetches[rows[r].source_db].push_back({r, rev});
      }
    }
  }

  // 3. Fetch the missing revisions with their histories, one _bulk_get per source and chunk.
  std::unordered_map<std::string, std::size_t> row_of_source;  // (source db, id) -> row
  std::unordered_map<std::size_t, std::string> rev_of_row;     // the first revision fetched per row
  for (const auto& [source, fs] : fetches) {
    for (const auto& f : fs) {
      row_of_source.emplace(key_of(source, rows[f.row].source_id), f.row);
      rev_of_row.emplace(f.row, f.rev);
    }
  }

  // Attachments apart (opts.budget): the first fetch brings stubs; revisions with attachments
  // wait in `heavy` (with their wire size) and are fetched again, with them, under the budget.
  const bool apart = opts.budget != nullptr && opts.attachments;
  struct heavy_doc {
    std::size_t row;
    std::string rev;
    std::size_t bytes;
    std::size_t checked;  // its entry in docs (fetched_doc::heavy), for the stemmed-history checks
  };
  std::map<std::string, std::vector<heavy_doc>> heavy;  // source db -> revisions with attachments

  // What an answer entry means: a document to write, one the source cannot give (a document
  // failure of its row), or a revision gone meanwhile. False when it names no row of this round.
  // `final_fetch`: the entry carries attachment bodies if it has attachments (write it as is).
  auto take = [&](const std::string& source, fetched_entry& e, bool final_fetch) {
    if (e.what == fetched_entry::kind::absent) {
      ++res.docs_vanished;
      return true;
    }
    auto it = row_of_source.find(key_of(source, e.id));
    if (it == row_of_source.end()) return false;
    if (e.what == fetched_entry::kind::ok && !final_fetch && e.doc->has_attachments) {
      // A size we cannot read counts as the whole budget: the document is copied alone.
      const std::size_t bytes = attachment_wire_bytes(e.doc->text).value_or(opts.budget->capacity());
      docs.push_back({it->second, e.doc->rev, {}, history_from(*e.doc), e.doc->deleted, true});
      heavy[source].push_back({it->second, e.doc->rev, bytes, docs.size() - 1});
    } else if (e.what == fetched_entry::kind::ok) {
      add_doc(it->second, *e.doc);
    } else {
      refuse(it->second, rev_of_row[it->second], "unreadable", e.error);
    }
    e.doc.reset();  // its bytes are in docs now (a copy with the target's id)
    return true;
  };

  auto open_revs_fallback = [&](const std::string& source, const std::vector<fetch>& fs, bool with_attachments,
                                bool final_fetch) {
    std::map<std::size_t, std::vector<std::string>> per_row;
    for (const auto& f : fs) per_row[f.row].push_back(f.rev);
    std::vector<std::pair<std::size_t, pending_json>> calls;
    for (auto& [r, revs] : per_row) {
      calls.emplace_back(r, client.open_revs(source, rows[r].source_id, revs, with_attachments));
      ++res.requests;
    }
    for (auto& [r, call] : calls) {
      auto answer = call.text();
      if (!answer.ok()) {
        if (answer.error().kind == couch_error_kind::not_found) {
          ++res.docs_vanished;
          continue;
        }
        fail_unit(res, rows[r].unit, answer.error());
        continue;
      }
      auto entries = parse_open_revs(answer.value(), rows[r].source_id);
      answer = std::string();  // the entries hold their own copies
      if (!entries.ok()) {
        fail_unit(res, rows[r].unit, entries.error());
        continue;
      }
      for (auto& e : entries.value()) {
        if (!take(source, e, final_fetch)) ++res.docs_vanished;
      }
    }
  };

  // One _bulk_get answer (or its failure) for `fs`, parsed; the answer's text is let go at once.
  auto bulk_get_answer = [&](pending_json& call, const std::string& source, const std::vector<fetch>& fs,
                             bool with_attachments, bool final_fetch) {
    result<std::vector<fetched_entry>> entries = [&]() -> result<std::vector<fetched_entry>> {
      auto answer = call.text();
      if (!answer.ok()) return answer.error();
      return parse_bulk_get(answer.value());
    }();
    if (!entries.ok()) {
      if (bulk_get_unsupported(entries.error())) {
        caps.bulk_get.store(0);
        open_revs_fallback(source, fs, with_attachments, final_fetch);
        return;
      }
      for (const auto& f : fs) fail_unit(res, rows[f.row].unit, entries.error());
      return;
    }
    caps.bulk_get.store(1);
    for (auto& e : entries.value()) {
      // {"ok":doc} | {"error":{...}} (CouchDB) | {"missing":rev} | {} (pouchdb-server)
      if (!take(source, e, final_fetch)) ++res.docs_vanished;
    }
  };
  auto bulk_get_call = [&](const std::string& source, const std::vector<fetch>& fs, bool with_attachments) {
    json list = json::array();
    for (const auto& f : fs) list.push_back({{"id", rows[f.row].source_id}, {"rev", f.rev}});
    ++res.requests;
    return client.bulk_get(source, json{{"docs", std::move(list)}}, with_attachments);
  };

  struct get_call {
    std::string source;
    std::vector<fetch> fs;
    pending_json call;
  };
  const bool first_with_attachments = opts.attachments && !apart;
  std::vector<get_call> gets;
  for (auto& [source, fs] : fetches) {
    for (auto [from, to] : plan_batches(fs.size(), batch)) {
      get_call g;
      g.source = source;
      g.fs.assign(fs.begin() + static_cast<std::ptrdiff_t>(from), fs.begin() + static_cast<std::ptrdiff_t>(to));
      if (caps.bulk_get.load() != 0) g.call = bulk_get_call(source, g.fs, first_with_attachments);
      gets.push_back(std::move(g));
    }
  }
  for (auto& g : gets) {
    if (!g.call.valid()) {
      open_revs_fallback(g.source, g.fs, first_with_attachments, !apart);
      continue;
    }
    bulk_get_answer(g.call, g.source, g.fs, first_with_attachments, !apart);
  }

  // 3b. Stemmed histories. A leaf below the history of another leaf of the same document is, for
  // restore, an ancestor stemmed away: not written. A revision to write whose history does not
  // reach a leaf the target has (and the source has not) leaves that leaf beside it: reported.
  std::unordered_map<std::string, std::vector<std::size_t>> docs_of_key;
  for (std::size_t i = 0; i < docs.size(); ++i) docs_of_key[target_key(docs[i].row)].push_back(i);
  std::vector<bool> keep(docs.size(), true);
  for (auto& [key, idx] : docs_of_key) {
    for (std::size_t i : idx) {
      const bool is_wanted = wanted.count(key_of(key, docs[i].rev)) > 0;
      bool stemmed_ancestor = false;
      if (opts.skip_stemmed_ancestors) {
        const auto gen = revision_generation(docs[i].rev);
        for (std::size_t j : idx) {
          if (j != i && gen && *gen < docs[j].history_from) stemmed_ancestor = true;
        }
      }
      if (stemmed_ancestor && is_wanted) {
        ++res.stemmed_skipped;
        ++res.stemmed_skipped_by_unit[rows[docs[i].row].unit];
      }
      keep[i] = is_wanted && !stemmed_ancestor;  // (the others were fetched for their history only)
    }
  }
  {
    // The target's leaves of documents whose history is stemmed: from _revs_diff's
    // possible_ancestors where the server gives them, else read (GET ?open_revs=all).
    std::map<std::string, std::pair<std::size_t, pending_json>> leaf_calls;  // key -> (row, call)
    for (std::size_t i = 0; i < docs.size(); ++i) {
      if (!keep[i] || docs[i].history_from <= 1) continue;
      const std::string key = target_key(docs[i].row);
      if (ancestors_of.count(key) || leaf_calls.count(key)) continue;
      const change_row& row = rows[docs[i].row];
      leaf_calls.emplace(key, std::pair{docs[i].row, client.request("GET", db_path(row.target_db) + "/" +
                                                                              encode_doc_id(row.target_id) + "?open_revs=all")});
      ++res.requests;
    }
    for (auto& [key, call] : leaf_calls) {
      auto answer = call.second.text();
      if (!answer.ok()) continue;  // a new document or database: no leaves
      auto entries = parse_open_revs(answer.value(), rows[call.first].target_id);
      if (!entries.ok()) continue;
      auto& leaves = ancestors_of[key];
      for (const auto& e : entries.value()) {
        if (e.what == fetched_entry::kind::ok && !e.doc->deleted) leaves.push_back(e.doc->rev);
      }
    }
    for (std::size_t i = 0; i < docs.size(); ++i) {
      if (!keep[i] || docs[i].history_from <= 1) continue;
      const std::string key = target_key(docs[i].row);
      auto a = ancestors_of.find(key);
      if (a == ancestors_of.end()) continue;
      for (const auto& leaf : a->second) {
        const auto gen = revision_generation(leaf);
        if (!gen || *gen >= docs[i].history_from) continue;
        const bool source_leaf = std::any_of(by_target_key[key].begin(), by_target_key[key].end(), [&](std::size_t r) {
          return std::find(rows[r].revs.begin(), rows[r].revs.end(), leaf) != rows[r].revs.end();
        });
        if (source_leaf) continue;
        const change_row& row = rows[docs[i].row];
        res.stemmed.push_back(stemmed_history{row.unit, row.source_db, row.source_id, row.target_db, row.target_id, docs[i].rev,
                                              docs[i].history_from, leaf});
      }
    }
  }
  if (opts.dry_run) {
    for (std::size_t i = 0; i < docs.size(); ++i) {
      if (!keep[i] || docs[i].heavy) continue;
      ++res.docs_written;
      ++res.written_by_unit[rows[docs[i].row].unit];
      res.bytes_written += docs[i].body.size();
    }
    for (const auto& [source, hs] : heavy) {  // revisions with attachments, not fetched again
      for (const auto& h : hs) {
        if (res.failed.count(rows[h.row].unit) > 0 || !keep[h.checked]) continue;
        ++res.docs_written;
        ++res.written_by_unit[rows[h.row].unit];
        res.bytes_written += h.bytes;
      }
    }
    return res;
  }

  // 4. Write, grouped by target, in chunks bounded by docs and bytes. A 413 for a chunk splits
  // it in halves until the document too large for the target is alone, and refused.
  struct write_call {
    std::string target;
    std::vector<std::size_t> docs;
    pending_json call;
  };
  std::vector<write_call> writes;
  auto send = [&](const std::string& target, std::vector<std::size_t> chunk) {
    std::size_t size = 30;
    for (std::size_t d : chunk) size += docs[d].body.size() + 1;
    std::string body;
    body.reserve(size);
    body += "{\"new_edits\":false,\"docs\":[";
    for (std::size_t k = 0; k < chunk.size(); ++k) {
      if (k) body.push_back(',');
      body += docs[chunk[k]].body;
    }
    body += "]}";
    write_call w{target, std::move(chunk), {}};
    w.call = client.bulk_docs(target, std::move(body));
    ++res.requests;
    writes.push_back(std::move(w));
  };
  // Writes docs[first..] and waits for every answer.
  auto write_from = [&](std::size_t first) {
    writes.clear();
    std::map<std::string, std::vector<std::size_t>> docs_by_target;
    for (std::size_t i = first; i < docs.size(); ++i) {
      // (keep covers the first fetch, the entries of revisions with attachments included; those
      // fetched again with their attachments come after it and were chosen by it)
      if (i >= keep.size() || (keep[i] && !docs[i].heavy)) docs_by_target[rows[docs[i].row].target_db].push_back(i);
    }
    for (auto& [target, idx] : docs_by_target) {
      std::vector<std::size_t> sizes;
      sizes.reserve(idx.size());
      for (std::size_t i : idx) sizes.push_back(docs[i].body.size());
      for (auto [from, to] : plan_batches(sizes, batch, opts.batch_bytes)) {
        send(target, std::vector<std::size_t>(idx.begin() + static_cast<std::ptrdiff_t>(from),
                                              idx.begin() + static_cast<std::ptrdiff_t>(to)));
      }
    }
    for (std::size_t wi = 0; wi < writes.size(); ++wi) {  // send() may append halves
      auto answer = writes[wi].call.text();
      const std::vector<std::size_t> wdocs = writes[wi].docs;
      if (!answer.ok()) {
        if (answer.error().status == 413) {
          if (wdocs.size() > 1) {
            const auto half = static_cast<std::ptrdiff_t>(wdocs.size() / 2);
            const std::string target = writes[wi].target;
            send(target, std::vector<std::size_t>(wdocs.begin(), wdocs.begin() + half));
            send(target, std::vector<std::size_t>(wdocs.begin() + half, wdocs.end()));
          } else {
            const auto& e = answer.error();
            refuse(docs[wdocs[0]].row, docs[wdocs[0]].rev, e.error.empty() ? "too_large" : e.error, e.reason);
          }
          continue;
        }
        for (std::size_t d : wdocs) fail_unit(res, rows[docs[d].row].unit, answer.error());
        continue;
      }
      auto errors = parse_bulk_docs(answer.value());
      if (!errors.ok()) {
        for (std::size_t d : wdocs) fail_unit(res, rows[docs[d].row].unit, errors.error());
        continue;
      }
      std::unordered_map<std::string, const write_error*> failed_ids;
      for (const auto& e : errors.value()) failed_ids.emplace(e.id, &e);
      for (std::size_t d : wdocs) {
        const change_row& row = rows[docs[d].row];
        if (auto f = failed_ids.find(row.target_id); f != failed_ids.end()) {
          if (row_error_transient(f->second->error)) {
            fail_unit(res, row.unit, couch_error{couch_error_kind::server, 0, f->second->error, f->second->reason});
          } else {
            refuse(docs[d].row, docs[d].rev, f->second->error, f->second->reason);
          }
          continue;
        }
        ++res.docs_written;
        ++res.written_by_unit[row.unit];
        res.bytes_written += docs[d].body.size();
      }
    }
    writes.clear();
    for (std::size_t i = first; i < docs.size(); ++i) std::string().swap(docs[i].body);  // let the bytes go
  };
  write_from(0);

  // 5. Revisions with attachments (opts.budget): per source, groups of at most batch_bytes on the
  // wire, each fetched with its attachments and written under a lease of the budget, one group at
  // a time. A unit that already failed is not copied further (its checkpoint waits anyway).
  for (auto& [source, hs] : heavy) {
    std::erase_if(hs, [&](const heavy_doc& h) { return res.failed.count(rows[h.row].unit) > 0 || !keep[h.checked]; });
    std::vector<std::size_t> sizes;
    sizes.reserve(hs.size());
    for (const auto& h : hs) sizes.push_back(h.bytes);
    for (auto [from, to] : plan_batches(sizes, batch, opts.batch_bytes)) {
      std::vector<fetch> fs;
      std::size_t bytes = 0;
      for (std::size_t k = from; k < to; ++k) {
        fs.push_back({hs[k].row, hs[k].rev});
        bytes += hs[k].bytes;
      }
      const std::size_t want = bytes > opts.budget->capacity() / attachment_copies ? opts.budget->capacity()
                                                                                    : bytes * attachment_copies;
      auto lease = opts.budget->acquire(want);
      const std::size_t first = docs.size();
      if (caps.bulk_get.load() != 0) {
        auto call = bulk_get_call(source, fs, true);
        bulk_get_answer(call, source, fs, true, true);
      } else {
        open_revs_fallback(source, fs, true, true);
      }
      write_from(first);
    }
  }
  return res;
}

}  // namespace couchgate::replicator
