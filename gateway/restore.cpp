// Owns: the restore command (see restore.hpp).
#include "gateway/restore.hpp"

#include <chrono>
#include <cstdio>
#include <map>
#include <set>

#include "policy/id_map.hpp"
#include "policy/naming.hpp"
#include "policy/security.hpp"
#include "replicator/transport/couch_client.hpp"
#include "replicator/transport/http_pool.hpp"
#include "replicator/transport/session_auth.hpp"
#include "replicator/state_store.hpp"
#include "replicator/transfer.hpp"
#include "replicator/wire_json.hpp"

namespace couchgate::gateway {

namespace r = replicator;
using r::couch_error_kind;
using r::json;

namespace {

constexpr const char* marker_id = "_local/couchgate-restore";

enum class target_state { ready, refused, failed };

struct target {
  restore_user_result res;
  target_state st = target_state::ready;
  bool had_marker = false;
};

class progress_reporter {
 public:
  progress_reporter(std::ostream& out, bool bar) : out_(out), bar_(bar), start_(clock::now()), last_(start_) {}
  void update(std::size_t users, std::size_t done, std::size_t total, std::size_t written, bool force = false) {
    auto now = clock::now();
    auto since_last = now - last_;
    if (!force && since_last < (bar_ ? std::chrono::milliseconds(200) : std::chrono::milliseconds(5000))) return;
    last_ = now;
    double secs = std::chrono::duration<double>(now - start_).count();
    double rate = secs > 0 ? static_cast<double>(done) / secs : 0;
    std::string eta = "?";
    if (rate > 0 && total > done) eta = std::to_string(static_cast<long long>(static_cast<double>(total - done) / rate)) + "s";
    else if (total <= done) eta = "0s";
    char line[256];
    if (bar_) {
      const int width = 30;
      int filled = total ? static_cast<int>(std::min<double>(1.0, static_cast<double>(done) / static_cast<double>(total)) * width) : 0;
      std::string b(static_cast<std::size_t>(filled), '=');
      b.resize(width, ' ');
      std::snprintf(line, sizeof line, "\r[%s] users %zu  docs %zu/%zu  written %zu  %.0f docs/s  ETA %s   ", b.c_str(), users,
                    done, total, written, rate, eta.c_str());
      out_ << line << std::flush;
    } else {
      std::snprintf(line, sizeof line, "restore: users %zu, central changes %zu/%zu, revisions written %zu, %.0f docs/s, ETA %s\n",
                    users, done, total, written, rate, eta.c_str());
      out_ << line << std::flush;
    }
  }
  void finish() {
    if (bar_) out_ << "\n";
  }

 private:
  using clock = std::chrono::steady_clock;
  std::ostream& out_;
  bool bar_;
  clock::time_point start_, last_;
};

}  // namespace

bool restore_summary::ok() const {
  if (interrupted) return false;
  for (const auto& u : users) {
    if (!u.error.empty()) return false;
  }
  return true;
}

restore_summary run_restore(const config& cfg, const restore_options& opts, std::ostream& progress) {
  auto started = std::chrono::steady_clock::now();
  restore_summary summary;
  r::http_pool pool(r::http_pool::options{cfg.couchdb.url, "", "", cfg.fanin.max_connections, "couchgate-restore"});
  r::session_auth auth(pool, r::session_options_for(cfg.couchdb.username, cfg.couchdb.password, cfg.couchdb.auth,
                                                    cfg.couchdb.request_timeout));
  // The pool's callbacks (a session renewal still in flight) must not outlive `auth`.
  struct shut_down_first {
    r::http_pool& p;
    ~shut_down_first() { p.shutdown(); }
  } pool_stops_first{pool};
  r::couch_client client(auth, r::timeouts{cfg.couchdb.request_timeout, cfg.couchdb.feed_timeout, cfg.couchdb.heartbeat});
  const std::string& central = cfg.fanin.central_db;
  const std::string& prefix = cfg.provisioning.db_prefix;

  std::map<std::string, target> targets;  // user -> target
  std::set<std::string> selected(opts.users.begin(), opts.users.end());

  auto prepare = [&](const std::string& user) -> target& {
    auto [it, fresh] = targets.try_emplace(user);
    target& t = it->second;
    if (!fresh) return t;
    t.res.user = user;
    t.res.db = policy::user_db_name(prefix, user);
    bool empty = false;
    auto info = client.db_info(t.res.db).get();
    if (!info.ok()) {
      if (info.error().kind != couch_error_kind::not_found) {
        t.st = target_state::failed;
        t.res.error = "cannot read " + t.res.db + ": " + info.error().describe();
        return t;
      }
      t.res.created = true;
      if (opts.dry_run) return t;
      auto c = client.create_db(t.res.db, cfg.provisioning.q, cfg.provisioning.n).get();
      if (!c.ok() && c.error().kind != couch_error_kind::conflict) {
        t.st = target_state::failed;
        t.res.error = "cannot create " + t.res.db + ": " + c.error().describe();
        return t;
      }
    } else {
      const json& i = info.value();
      std::uint64_t count = 0;
      for (const char* k : {"doc_count", "doc_del_count"}) {
        if (i.contains(k) && i[k].is_number_unsigned()) count += i[k].get<std::uint64_t>();
      }
      auto marker = client.get_doc(t.res.db, marker_id).get();
      t.had_marker = marker.ok();
      if (count > 0 && !t.had_marker && !opts.merge) {
        t.st = target_state::refused;
        t.res.error = t.res.db + " is not empty (" + std::to_string(count) +
                      " documents); refusing to write into it without --merge";
        return t;
      }
      empty = count == 0;
    }
    // The policy's _security on a database restore creates, resumes, or finds empty (a restore
    // killed between creating it and writing its _security left it so); a merge into a database
    // in use keeps its own (reconcile judges it).
    if (!opts.dry_run && (t.res.created || t.had_marker || empty)) {
      auto s = client.put_security(t.res.db, policy::render_security(cfg.provisioning.security, user)).get();
      if (!s.ok()) {
        t.st = target_state::failed;
        t.res.error = "cannot write _security of " + t.res.db + ": " + s.error().describe();
        return t;
      }
    }
    if (!opts.dry_run && !t.had_marker) {
      auto m = client.put_doc(t.res.db, marker_id, json{{"restoring_from", central}, {"merge", opts.merge}}).get();
      if (!m.ok() && m.error().kind != couch_error_kind::conflict) {
        t.st = target_state::failed;
        t.res.error = "cannot mark " + t.res.db + " as being restored: " + m.error().describe();
      }
    }
    return t;
  };

  for (const auto& u : opts.users) prepare(u);

  std::size_t total = 0;
  if (auto info = client.db_info(central).get(); info.ok()) {
    for (const char* k : {"doc_count", "doc_del_count"}) {
      if (info.value().contains(k) && info.value()[k].is_number_unsigned()) total += info.value()[k].get<std::size_t>();
    }
  } else {
    for (auto& [u, t] : targets) {
      if (t.res.error.empty()) t.res.error = "cannot read central database " + central + ": " + info.error().describe();
    }
    summary.users.clear();
    for (auto& [u, t] : targets) summary.users.push_back(t.res);
    if (targets.empty()) summary.users.push_back(restore_user_result{"*", central, 0, false, "cannot read central database " + central + ": " + info.error().describe()});
    return summary;
  }

  progress_reporter pr(progress, opts.progress_bar);
  r::protocol_caps caps;
  r::byte_budget attachment_budget(cfg.fanin.max_bytes_in_flight);
  r::transfer_options topts{cfg.fanin.batch_docs, cfg.fanin.batch_bytes, true, &attachment_budget};
  topts.skip_stemmed_ancestors = true;
  topts.dry_run = opts.dry_run;
  json since = 0;
  std::size_t written = 0;
  // Design documents are written last: a user's validate_doc_update would otherwise judge every
  // restore write that follows it (CouchDB runs it for admins too).
  std::vector<r::change_row> design_rows;
  std::map<std::string, std::string> first_refusal;  // user -> the first document the target refused
  auto run_transfer = [&](const std::vector<r::change_row>& rows) {
    auto res = r::transfer(client, rows, topts, caps);
    written += res.docs_written;
    for (const auto& [user, n] : res.written_by_unit) targets[user].res.docs += n;
    for (const auto& [user, n] : res.stemmed_skipped_by_unit) targets[user].res.stemmed += n;
    for (const auto& [user, e] : res.failed) {
      auto& t = targets[user];
      t.st = target_state::failed;
      if (t.res.error.empty()) t.res.error = e.describe();
    }
    for (const auto& f : res.doc_failures) {
      auto& t = targets[f.unit];
      if (t.res.refused++ == 0) first_refusal[f.unit] = f.target_id + " (" + f.rev + "): " + f.error + ": " + f.reason;
      progress << "restore: " << t.res.db << ": " << f.target_id << " " << f.rev << " not written: " << f.error << ": "
               << f.reason << "\n";
    }
  };
  for (;;) {
    r::changes_query q;
    q.since = since;
    // Every body is read anyway when restoring everything; then new documents need no _bulk_get.
    q.include_docs = opts.all;
    std::size_t limit = cfg.fanin.batch_docs;
    if (opts.max_docs) limit = std::min(limit, opts.max_docs - summary.central_changes);
    q.limit = limit;
    auto a = client.changes(central, q).text();
    r::result<r::feed_page> page = a.ok() ? r::parse_changes(a.value()) : r::result<r::feed_page>(a.error());
    if (!page.ok()) {
      summary.interrupted = true;
      progress << "\nrestore: reading " << central << " failed: " << page.error().describe() << "\n";
      break;
    }
    std::vector<r::change_row> rows;
    for (auto& c : page.value().changes) {
      auto ref = policy::from_central_id(c.id);
      if (!ref) {
        // Central's own design documents start with '_'; anything else names no owner.
        if (!c.id.empty() && c.id.front() == '_') continue;
        if (summary.unmappable++ == 0) {
          summary.first_unmappable = c.id;
          progress << "restore: central document " << r::wire::text_of(r::json(c.id), 120)
                   << " names no user (ids are <owner>:<document id>); it and any others like it are not restored\n";
        }
        continue;
      }
      if (ref->who.what != policy::owner::kind::user) continue;
      const std::string& user = ref->who.name;
      if (!opts.all && !selected.count(user)) continue;
      target& t = prepare(user);
      if (t.st != target_state::ready) continue;
      const bool design = policy::is_design_id(ref->doc_id);
      (design ? design_rows : rows)
          .push_back(r::change_row{user, central, c.id, t.res.db, ref->doc_id, std::move(c.revs), r::inline_revision(c)});
    }
    if (!rows.empty()) run_transfer(rows);
    summary.central_changes += page.value().changes.size();
    pr.update(targets.size(), summary.central_changes, total, written);
    if (page.value().changes.size() < limit || page.value().last_seq.is_null()) break;
    since = page.value().last_seq;
    if (opts.max_docs && summary.central_changes >= opts.max_docs) {
      summary.interrupted = true;
      break;
    }
  }
  // (only into databases whose data all arrived: a failed one is left for the rerun to finish).
  std::erase_if(design_rows, [&](const r::change_row& row) { return targets[row.unit].st != target_state::ready; });
  if (!summary.interrupted && !design_rows.empty()) run_transfer(design_rows);
  pr.update(targets.size(), summary.central_changes, std::max(total, summary.central_changes), written, true);
  pr.finish();

  // Finished targets: drop the marker and the old fan-in checkpoint (the database is new, so a
  // checkpoint of its previous life would skip its first changes).
  if (!opts.dry_run && !summary.interrupted) {
    r::state_store state(client, cfg.state_db);
    for (auto& [u, t] : targets) {
      if (t.st != target_state::ready) continue;
      auto m = client.get_doc(t.res.db, marker_id).get();
      if (m.ok() && m.value().contains("_rev") && m.value()["_rev"].is_string()) {
        auto del = client.delete_doc(t.res.db, marker_id, m.value()["_rev"].get<std::string>()).get();
        if (!del.ok()) t.res.error = "restored, but could not remove the restore marker: " + del.error().describe();
      }
      if (t.res.created || t.had_marker) {
        auto reset = state.reset_checkpoint(t.res.db);
        if (!reset.ok() && reset.error().kind != couch_error_kind::not_found) {
          t.res.error = "restored, but could not reset the fan-in checkpoint: " + reset.error().describe();
        }
      }
    }
  }
  for (auto& [u, t] : targets) {
    if (t.res.refused && t.res.error.empty()) {
      t.res.error = std::to_string(t.res.refused) + " document(s) refused by " + t.res.db + ", first " + first_refusal[u];
    }
    summary.users.push_back(t.res);
  }
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return summary;
}

}  // namespace couchgate::gateway
