// Owns: the restore command (see restore.hpp).
#include "gateway/restore.hpp"

#include <algorithm>
#include <chrono>
#include <iterator>
#include <cstdio>
#include <map>
#include <set>
#include <unordered_set>

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

enum class target_state { ready, refused, failed };

struct target {
  restore_user_result res;
  target_state st = target_state::ready;
  bool resumed = false;   // an earlier run recorded it as under way and did not finish
  bool recorded = false;  // recorded as under way in the state database (by this run or an earlier one)
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

// doc_count + doc_del_count of a database's info (0 for what is not there).
std::uint64_t doc_count_of(const json& info) {
  std::uint64_t n = 0;
  for (const char* k : {"doc_count", "doc_del_count"}) {
    if (info.contains(k) && info[k].is_number_unsigned()) n += info[k].get<std::uint64_t>();
  }
  return n;
}

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
  // Databases this run created: they hold only what it writes, so no _revs_diff is asked there.
  std::unordered_set<std::string> created_here;
  std::set<std::string> selected(opts.users.begin(), opts.users.end());

  // Restores a run began and did not finish (records in the state database, one read): a rerun
  // continues into those databases without --merge.
  r::state_store state(client, cfg.state_db);
  std::unordered_set<std::string> under_way;
  if (auto l = state.load_restores(); l.ok()) {
    under_way = std::move(l.value());
  } else {
    summary.users.push_back(restore_user_result{"*", cfg.state_db, 0, false,
                                                "cannot read the restores under way from " + cfg.state_db + ": " + l.error().describe()});
    return summary;
  }
  const json record{{"from", central}, {"merge", opts.merge}};

  // Prepares the targets of the users not seen before, all of them at once: each step's requests
  // are in flight together for every user (the pool caps the sockets), as the provisioner's
  // pipeline does; one user at a time cost a round trip per step, in series (issue #18). The
  // database is created first (restore usually writes into deleted ones): only a 412 costs a
  // read (its document count). A dry run reads instead of creating. Then, together: the
  // policy's _security per database and one state-database request recording them all as under
  // way (before any revision is written: a database that has revisions and no record was not
  // left by an interrupted restore). begin_prepare sends the first step's requests and returns;
  // end_prepare waits for them and does the rest, so the creates of the next page's users run
  // while this page is recorded and written (a database created and not yet recorded is empty:
  // a rerun after a crash in between writes its _security and records it, as below). No
  // revision is written before its database's _security is in place: on a server whose new
  // databases are open to everyone (default_security), or into an empty database found with
  // another _security, the data would be readable by others until it is.
  struct step {
    target* t;
    std::string user;
    r::pending_json create, info, security;
    std::uint64_t count = 0;
    bool exists = false;
  };
  auto begin_prepare = [&](const std::vector<std::string>& users) {
    std::vector<step> fresh;
    for (const auto& user : users) {
      auto [it, is_new] = targets.try_emplace(user);
      if (!is_new) continue;
      target& t = it->second;
      t.res.user = user;
      t.res.db = policy::user_db_name(prefix, user);
      t.resumed = t.recorded = under_way.count(t.res.db) > 0;
      step s{&t, user};
      if (opts.dry_run) s.info = client.db_info(t.res.db);
      else s.create = client.create_db(t.res.db, cfg.provisioning.q, cfg.provisioning.n);
      fresh.push_back(std::move(s));
    }
    return fresh;
  };
  auto end_prepare = [&](std::vector<step>& fresh) {
    auto fail = [](target& t, std::string why) {
      t.st = target_state::failed;
      t.res.error = std::move(why);
    };
    // 1. Created, or it exists: then read it.
    for (auto& s : fresh) {
      target& t = *s.t;
      if (s.create.valid()) {
        auto c = s.create.get();
        if (c.ok()) {
          t.res.created = true;
        } else if (c.error().kind == couch_error_kind::conflict) {
          s.info = client.db_info(t.res.db);
        } else {
          fail(t, "cannot create " + t.res.db + ": " + c.error().describe());
        }
        continue;
      }
      auto info = s.info.get();
      if (info.ok()) {
        s.exists = true;
        s.count = doc_count_of(info.value());
      } else if (info.error().kind == couch_error_kind::not_found) {
        t.res.created = true;  // would be
      } else {
        fail(t, "cannot read " + t.res.db + ": " + info.error().describe());
      }
    }
    // 2. An existing database: restore resumes into it (record), refuses it (documents, no
    //    --merge) or merges. Then the policy's _security on a database restore creates, resumes,
    //    or finds empty (a restore killed between creating it and writing its _security left it
    //    so); a merge into a database in use keeps its own (reconcile judges it).
    std::vector<std::string> to_record;
    for (auto& s : fresh) {
      target& t = *s.t;
      if (s.info.valid()) {
        auto info = s.info.get();
        if (!info.ok()) {
          fail(t, "cannot read " + t.res.db + ": " + info.error().describe());
          continue;
        }
        s.exists = true;
        s.count = doc_count_of(info.value());
      }
      if (t.st != target_state::ready) continue;
      if (s.exists && s.count > 0 && !t.resumed && !opts.merge) {
        t.st = target_state::refused;
        t.res.error = t.res.db + " is not empty (" + std::to_string(s.count) +
                      " documents); refusing to write into it without --merge";
        continue;
      }
      if (opts.dry_run) continue;
      if (t.res.created || t.resumed || s.count == 0) {
        s.security = client.put_security(t.res.db, policy::render_security(cfg.provisioning.security, s.user));
      }
      if (!t.recorded) to_record.push_back(t.res.db);
    }
    const auto not_recorded = to_record.empty() ? std::map<std::string, r::couch_error>{} : state.mark_restores(to_record, record);
    // 3. Both in place, or the database is left alone (a refused _security: nothing is written
    //    into it, its record stays, and a rerun writes the _security again and finishes it).
    for (auto& s : fresh) {
      target& t = *s.t;
      if (s.security.valid()) {
        auto sec = s.security.get();
        if (!sec.ok() && t.st == target_state::ready) {
          fail(t, "cannot write _security of " + t.res.db + ": " + sec.error().describe());
        }
      }
      if (opts.dry_run || t.st != target_state::ready || t.recorded) continue;
      if (auto e = not_recorded.find(t.res.db); e != not_recorded.end()) {
        fail(t, "cannot record the restore of " + t.res.db + " in " + cfg.state_db + ": " + e->second.describe());
        continue;
      }
      t.recorded = true;
      if (t.res.created) created_here.insert(t.res.db);
    }
  };

  {
    auto given = begin_prepare(opts.users);
    end_prepare(given);
  }

  std::size_t total = 0;
  if (auto info = client.db_info(central).get(); info.ok()) {
    total = doc_count_of(info.value());
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
  topts.fresh_targets = &created_here;
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
  // The next page of central's _changes is asked for as soon as this one is read, so the server
  // reads it while this page's revisions are written.
  auto page_limit = [&](std::size_t read) {
    std::size_t limit = cfg.fanin.batch_docs;
    if (opts.max_docs) limit = std::min(limit, opts.max_docs - std::min(opts.max_docs, read));
    return limit;
  };
  auto ask_page = [&](const json& from, std::size_t limit) {
    r::changes_query q;
    q.since = from;
    // Every body is read anyway when restoring everything; then new documents need no _bulk_get.
    q.include_docs = opts.all;
    q.limit = limit;
    return client.changes(central, q);
  };
  std::size_t limit = page_limit(0);
  r::pending_json next = ask_page(since, limit);
  std::size_t read = 0;  // changes read so far, the page ahead included
  // A page in hand: read, the next one asked for, its new users' databases being created.
  struct page_in_hand {
    r::result<r::feed_page> page = r::result<r::feed_page>(r::feed_page{});
    std::size_t limit = 0;
    bool last = true;     // no page after it is read
    bool reached = false;  // last because opts.max_docs was reached, not because central ended
    std::vector<step> prep;
  };
  auto take_page = [&]() {
    page_in_hand p;
    p.limit = limit;
    auto a = next.text();
    p.page = a.ok() ? r::parse_changes(a.value()) : r::result<r::feed_page>(a.error());
    if (!p.page.ok()) return p;
    const auto& changes = p.page.value().changes;
    read += changes.size();
    const bool ended = changes.size() < p.limit || p.page.value().last_seq.is_null();
    p.reached = !ended && opts.max_docs && read >= opts.max_docs;
    p.last = ended || p.reached;
    if (!p.last) {
      limit = page_limit(read);
      next = ask_page(p.page.value().last_seq, limit);
    }
    // The page's new users, all at once (see begin_prepare).
    std::vector<std::string> users;
    for (const auto& c : changes) {
      auto ref = policy::from_central_id(c.id);
      if (!ref || ref->who.what != policy::owner::kind::user) continue;
      if ((opts.all || selected.count(ref->who.name)) && !targets.count(ref->who.name)) users.push_back(ref->who.name);
    }
    p.prep = begin_prepare(users);
    return p;
  };
  page_in_hand cur = take_page();
  // Rows of a user whose documents go on in the page ahead wait for them, so each database gets
  // one _bulk_docs (up to transfer's batch limits) and not one per page it spans (issue #18:
  // central's pages split users, 3.2 requests per database instead of 3).
  std::vector<r::change_row> carried;
  for (;;) {
    if (!cur.page.ok()) {
      summary.interrupted = true;
      progress << "\nrestore: reading " << central << " failed: " << cur.page.error().describe() << "\n";
      break;  // (nothing is carried into a page that could not be read)
    }
    // The next page is read and its new users' databases are being created while this one's
    // are recorded and given their _security and its revisions are written: all of it goes on at
    // once over the pool's connections.
    page_in_hand ahead;
    if (!cur.last) ahead = take_page();
    end_prepare(cur.prep);
    // (Carried rows' databases were prepared with an earlier page and were in no write since:
    // nothing failed them in between.)
    std::vector<r::change_row> rows = std::move(carried);
    carried.clear();
    for (auto& c : cur.page.value().changes) {
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
      target& t = targets[user];
      if (t.st != target_state::ready) continue;
      const bool design = policy::is_design_id(ref->doc_id);
      // The body is taken before the row is built: its leaf revisions move into the row, and
      // inline_revision reads them (built in one go, it saw none and every body was fetched
      // again with _bulk_get).
      auto body = r::inline_revision(c);
      (design ? design_rows : rows)
          .push_back(r::change_row{user, central, c.id, t.res.db, ref->doc_id, std::move(c.revs), std::move(body)});
    }
    if (!cur.last && ahead.page.ok()) {
      std::unordered_set<std::string> continuing;
      for (const auto& c : ahead.page.value().changes) {
        if (auto ref = policy::from_central_id(c.id); ref && ref->who.what == policy::owner::kind::user) {
          continuing.insert(ref->who.name);
        }
      }
      auto waits = std::stable_partition(rows.begin(), rows.end(),
                                         [&](const r::change_row& row) { return !continuing.count(row.unit); });
      // At most a batch waits (a page's worth of bodies held once more): a user with more is
      // written in batches anyway.
      if (static_cast<std::size_t>(rows.end() - waits) <= topts.batch_docs) {
        carried.assign(std::make_move_iterator(waits), std::make_move_iterator(rows.end()));
        rows.erase(waits, rows.end());
      }
    }
    if (!rows.empty()) run_transfer(rows);
    summary.central_changes += cur.page.value().changes.size();
    pr.update(targets.size(), summary.central_changes, total, written);
    if (cur.last) {
      summary.interrupted = summary.interrupted || cur.reached;
      break;
    }
    cur = std::move(ahead);
  }
  // (only into databases whose data all arrived: a failed one is left for the rerun to finish).
  std::erase_if(design_rows, [&](const r::change_row& row) { return targets[row.unit].st != target_state::ready; });
  if (!summary.interrupted && !design_rows.empty()) run_transfer(design_rows);
  pr.update(targets.size(), summary.central_changes, std::max(total, summary.central_changes), written, true);
  pr.finish();

  // Finished targets: reset the old fan-in checkpoint (the database is new, so a checkpoint of
  // its previous life would skip its first changes), then drop the records: a crash in between
  // leaves the record, and the rerun resets again. Each a request per state_store::write_batch
  // databases, after one read of the stored checkpoints' revisions.
  if (!opts.dry_run && !summary.interrupted) {
    std::vector<target*> done;
    std::vector<std::string> resets;
    for (auto& [u, t] : targets) {
      if (t.st != target_state::ready) continue;
      done.push_back(&t);
      if (t.res.created || t.resumed) resets.push_back(t.res.db);
    }
    if (auto loaded = state.load_checkpoints(); !loaded.ok() && loaded.error().kind != couch_error_kind::not_found) {
      progress << "restore: reading the fan-in checkpoints failed (" << loaded.error().describe() << "); resetting them anyway\n";
    }
    const auto not_reset = resets.empty() ? std::map<std::string, r::couch_error>{} : state.reset_checkpoints(resets);
    std::vector<std::string> finished;
    for (auto* t : done) {
      if (auto e = not_reset.find(t->res.db); e != not_reset.end()) {
        t->res.error = "restored, but could not reset the fan-in checkpoint: " + e->second.describe();
      } else if (t->recorded) {
        finished.push_back(t->res.db);
      }
    }
    const auto not_cleared = finished.empty() ? std::map<std::string, r::couch_error>{} : state.clear_restores(finished);
    for (auto* t : done) {
      if (auto e = not_cleared.find(t->res.db); e != not_cleared.end()) {
        t->res.error = "restored, but could not remove its restore record from " + cfg.state_db + ": " + e->second.describe();
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
  summary.requests = pool.stats().requests;
  return summary;
}

}  // namespace couchgate::gateway
