// Implementation of the convergence checks (see convergence.hpp).
#include "tests/support/convergence.hpp"

#include "policy/id_map.hpp"
#include "policy/naming.hpp"
#include "policy/security.hpp"

namespace couchgate::test {

db_state read_db_state(const std::string& db, bool* ok) {
  db_state out;
  if (ok) *ok = false;
  couch c;
  auto ch = c.get("/" + enc(db) + "/_changes?style=all_docs");
  if (ch.status != 200 || !ch.body.contains("results")) return out;
  for (const auto& row : ch.body["results"]) {
    auto& d = out[row["id"].get<std::string>()];
    for (const auto& r : row["changes"]) d.leaves.insert(r["rev"].get<std::string>());
    d.deleted = row.value("deleted", false);
  }
  // The winners' attachment digests (tombstones are not listed by _all_docs).
  auto all = c.get("/" + enc(db) + "/_all_docs?include_docs=true");
  if (all.status != 200 || !all.body.contains("rows")) return out;
  for (const auto& row : all.body["rows"]) {
    if (!row.contains("doc") || !row["doc"].is_object() || !row["doc"].contains("_attachments")) continue;
    auto it = out.find(row["id"].get<std::string>());
    if (it == out.end()) continue;  // written between the two reads: the next read sees both
    for (const auto& [name, stub] : row["doc"]["_attachments"].items()) it->second.attachments[name] = stub.value("digest", "");
  }
  if (ok) *ok = true;
  return out;
}

db_state expected_central_state(const std::map<std::string, std::string>& db_owner) {
  db_state out;
  for (const auto& [db, owner] : db_owner) {
    for (auto& [id, st] : read_db_state(db)) {
      auto central = policy::to_central_id(policy::id_mode::namespaced, policy::owner{policy::owner::kind::user, owner}, id);
      if (central) out[*central] = std::move(st);
    }
  }
  return out;
}

db_state central_state(const std::string& central) {
  db_state s = read_db_state(central);
  s.erase("_design/couchgate");
  return s;
}

std::string state_diff(const db_state& got, const db_state& want, std::size_t max_lines) {
  std::string out;
  std::size_t shown = 0, missing = 0, unexpected = 0, differ = 0;
  auto line = [&](const std::string& l) {
    if (shown++ < max_lines) out += l + "\n";
  };
  for (const auto& [id, w] : want) {
    auto it = got.find(id);
    if (it == got.end()) {
      ++missing;
      line("missing " + id);
    } else if (it->second.leaves != w.leaves) {
      ++differ;
      line("leaves differ " + id + ": got " + join_revs(it->second.leaves) + "want " + join_revs(w.leaves));
    } else if (it->second.deleted != w.deleted) {
      ++differ;
      line("deleted differs " + id);
    } else if (it->second.attachments != w.attachments) {
      ++differ;
      line("attachments differ " + id);
    }
  }
  for (const auto& [id, g] : got) {
    if (!want.count(id)) {
      ++unexpected;
      line("unexpected " + id);
    }
  }
  if (shown == 0) return "";
  return out + std::to_string(missing) + " missing, " + std::to_string(unexpected) + " unexpected, " + std::to_string(differ) +
         " differing of " + std::to_string(want.size()) + " expected\n";
}

std::string join_revs(const std::set<std::string>& revs) {
  std::string r;
  for (const auto& x : revs) r += x + " ";
  return r;
}

std::string wait_central_converged(const std::string& central, const std::map<std::string, std::string>& db_owner,
                                   std::chrono::milliseconds deadline, db_state* want) {
  std::string diff;
  db_state expected;
  eventually(
      [&] {
        expected = expected_central_state(db_owner);
        diff = state_diff(central_state(central), expected);
        return diff.empty();
      },
      deadline);
  if (want) *want = std::move(expected);
  return diff;
}

std::string user_db_problem(const std::string& prefix, const std::string& user) {
  const std::string db = policy::user_db_name(prefix, user);
  auto sec = couch().get("/" + enc(db) + "/_security");
  if (sec.status != 200) return db + ": _security answered " + std::to_string(sec.status);
  const auto want = policy::render_security(policy::security_template{}, std::string_view(user));
  if (!policy::security_equal(sec.body, want)) return db + ": _security is " + sec.raw;
  return "";
}

}  // namespace couchgate::test
