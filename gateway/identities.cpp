// Owns: sign-up, e-mail changes, availability and the intent reconciler (see identities.hpp).
#include "gateway/identities.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <random>
#include <thread>

#include "gateway/databases.hpp"
#include "gateway/front/route.hpp"
#include "gateway/password_check.hpp"
#include "policy/naming.hpp"
#include "replicator/logger.hpp"
#include "replicator/wire_json.hpp"

namespace couchgate::gateway {

using policy::intent_state;
using policy::unique_field;
using replicator::couch_error;
using replicator::couch_error_kind;
using replicator::json;

namespace {

std::shared_ptr<spdlog::logger> log() { return replicator::named_logger("identities"); }

// Wire data is untrusted: a field of another type reads as absent.
std::string str_field(const json& j, const char* key) {
  if (!j.is_object()) return {};
  const auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// When an intent (or one revision of it) was last moved: its "updated" field, milliseconds since
// the epoch as a string; the epoch when absent or not a number (so it counts as old).
std::chrono::system_clock::time_point updated_of(const json& intent) {
  long long ms = 0;
  const std::string updated = str_field(intent, "updated");
  std::from_chars(updated.data(), updated.data() + updated.size(), ms);
  return std::chrono::system_clock::time_point{std::chrono::milliseconds{ms}};
}

// POST <db>/_all_docs?include_docs=true for these keys: each document found, by its row's key
// (a missing or deleted document has none). An answer without a rows array is a protocol error.
replicator::result<std::map<std::string, json>> docs_by_key(replicator::couch_client& client, const std::string& db,
                                                            const json& keys) {
  auto r = client.request("POST", replicator::db_path(db) + "/_all_docs?include_docs=true",
                          json{{"keys", keys}}.dump()).get();
  if (!r.ok()) return r.error();
  const auto rows = r.value().is_object() ? r.value().find("rows") : r.value().end();
  if (rows == r.value().end() || !rows->is_array()) {
    return couch_error{couch_error_kind::protocol, 200, "bad_answer", "_all_docs answer has no rows array"};
  }
  std::map<std::string, json> found;
  for (auto& row : *rows) {
    if (!row.is_object()) continue;
    const auto doc = row.find("doc");
    if (doc != row.end() && doc->is_object()) found[str_field(row, "key")] = std::move(*doc);
  }
  return found;
}

// A `_users` document read off the wire as a live user; nullopt when deleted, a design document
// or malformed.
std::optional<policy::user_doc> live_user(const json& doc) {
  auto parsed = policy::parse_user_doc(doc, false, doc.dump().size());
  auto* u = std::get_if<policy::user_doc>(&parsed);
  if (u == nullptr || u->deleted) return std::nullopt;
  return std::move(*u);
}

bool is_conflict(const couch_error& e) { return e.kind == couch_error_kind::conflict; }

// Every document of `db` whose id starts with `prefix`, in id order, a page at a time: `each` is
// called with each one read as an object and returns false to stop (`extra_query`: more
// parameters, each ending with '&'). An error when a page could not
// be read (the documents before it were seen).
std::optional<couch_error> for_each_doc(replicator::couch_client& client, const std::string& db,
                                        const std::string& prefix, const std::function<bool(const json&)>& each,
                                        const std::string& extra_query = {}) {
  constexpr std::size_t page_size = 200;
  std::string start = json(prefix).dump();
  // Up to the prefix's successor ("name/" -> "name0"), itself excluded: ids sort by their bytes,
  // so every id with the prefix comes before it, whatever characters follow (an end key such as
  // prefix + U+FFF0 would leave out ids going on with a character above it: "name/𝐀lice").
  std::string after = prefix;
  after.back() = static_cast<char>(after.back() + 1);
  const std::string end = json(after).dump();
  for (;;) {
    auto page = client.all_docs(db, extra_query + "include_docs=true&inclusive_end=false&limit=" + std::to_string(page_size) +
                                        "&startkey=" + replicator::encode_segment(start) +
                                        "&endkey=" + replicator::encode_segment(end))
                    .get();
    if (!page.ok()) return page.error();
    const auto rows = page.value().is_object() ? page.value().find("rows") : page.value().end();
    if (rows == page.value().end() || !rows->is_array()) {
      return couch_error{couch_error_kind::protocol, 200, "bad_answer", "_all_docs answer has no rows array"};
    }
    std::string last;
    for (const auto& row : *rows) {
      last = str_field(row, "id");
      const auto doc = row.is_object() ? row.find("doc") : row.end();
      if (doc == row.end() || !doc->is_object()) continue;
      if (!each(*doc)) return std::nullopt;
    }
    if (rows->size() < page_size || last.empty()) return std::nullopt;
    start = json(last + std::string(1, '\0')).dump();  // the next id after `last`
  }
}

// Where ensure_db records that every name reservation has one under policy::name_key too.
constexpr const char* name_keys_marker = "_local/couchgate-name-keys";
constexpr const char* name_keys_version = "nfkc-casefold";

constexpr std::chrono::milliseconds poll_step{50};

}  // namespace

void fail_point(const char* name) {
  static const char* armed = std::getenv("COUCHGATE_FAILPOINT");
  if (armed != nullptr && std::string_view(armed) == name) {
    log()->warn("fail point {} reached: killing the process", name);
    std::raise(SIGKILL);
  }
}

identities::identities(replicator::couch_client& client, replicator::registry& metrics, identities_config cfg,
                       std::string users_db, std::function<bool(const std::string&)> user_ready, clock_fn now)
    : client_(client),
      cfg_(std::move(cfg)),
      users_db_(std::move(users_db)),
      user_ready_(std::move(user_ready)),
      now_(std::move(now)),
      signups_(metrics.add_counter("couchgate_signups_total", "Sign-ups completed")),
      conflicts_(metrics.add_counter("couchgate_signup_conflicts_total",
                                     "Sign-ups and e-mail changes refused because a value was taken")),
      rejected_(metrics.add_counter("couchgate_signup_invalid_total", "Sign-ups refused for invalid input")),
      errors_(metrics.add_counter("couchgate_identity_errors_total", "Identity operations failed on a server error")),
      repaired_(metrics.add_counter("couchgate_identity_intents_repaired_total",
                                    "Intents the reconciler finished or rolled back")),
      latency_(metrics.add_histogram("couchgate_signup_seconds", "Sign-up latency, provisioning included")),
      duplicates_found_(metrics.add_counter("couchgate_identity_duplicates_total",
                                            "Users made without couchgate, or whose address was changed in _users, found with a name or address another user has reserved")),
      duplicates_(metrics.add_gauge("couchgate_identity_duplicates",
                                    "Such conflicts standing now (listed at the admin API's /identities/conflicts)")),
      unconfirmed_(metrics.add_counter("couchgate_identity_reservations_unconfirmed_total",
                                       "Reservations the server stored on fewer copies than its write quorum (202): "
                                       "withdrawn, the claim failed")),
      forks_(metrics.add_counter("couchgate_identity_intent_forks_total",
                                 "Intents found with several live revisions (transitions written on copies of a "
                                 "cluster that did not see each other) and settled")),
      unconfirmed_intents_(metrics.add_counter("couchgate_identity_intent_moves_unconfirmed_total",
                                               "Intent moves the server stored on fewer copies than its write "
                                               "quorum (202): checked against the intent's other revisions")) {}

std::optional<couch_error> identities::ensure_db() { return ensure_private_db(client_, cfg_.db); }

std::optional<couch_error> identities::rekey_names() {
  if (names_current_) return std::nullopt;
  auto marker = client_.get_doc(cfg_.db, name_keys_marker).get();
  if (marker.ok() && str_field(marker.value(), "keys") == name_keys_version) {
    names_current_ = true;
    return std::nullopt;
  }
  if (!marker.ok() && marker.error().kind != couch_error_kind::not_found) return marker.error();
  std::size_t made = 0, shared = 0;
  std::optional<couch_error> failed;
  const auto listed = for_each_doc(client_, cfg_.db, "name/", [&](const json& doc) {
    const std::string user = str_field(doc, "user");
    const std::string key = name_key_of(user);
    if (str_field(doc, "type") != "reservation" || key.empty()) return true;
    if (policy::reservation_id(unique_field::name, key) == str_field(doc, "_id")) return true;
    // Claimed as its sign-up would claim it now (same user, address and intent): a 202 is not
    // won, a stale holder is replaced, the same holder is success (reserve()).
    std::string rev;
    auto claimed = reserve(unique_field::name, key, user, str_field(doc, "intent"), rev, str_field(doc, "email"));
    if (!claimed.ok()) {
      failed = claimed.error();
      return false;
    }
    if (claimed.value()) {
      ++made;
      return true;
    }
    auto cur = client_.get_doc(cfg_.db, policy::reservation_id(unique_field::name, key)).get();
    if (!cur.ok()) {  // not found: released meanwhile, the next pass claims it
      failed = cur.error();
      return false;
    }
    if (const std::string holder = str_field(cur.value(), "user"); holder != user) {
      ++shared;
      log()->warn("users {} and {} have the same name key {} (one reads as the other once compatibility forms and "
                  "case are folded); {} holds it, {} keeps its reservation under the older key only: its sign-up "
                  "predates the folding. Rename or remove one of them",
                  user, holder, key, holder, user);
    }
    return true;
  });
  if (listed) return listed;
  if (failed) return failed;
  json done{{"keys", name_keys_version}, {"at", stamp()}, {"made", made}, {"shared", shared}};
  if (marker.ok()) done["_rev"] = str_field(marker.value(), "_rev");
  auto w = client_.put_doc(cfg_.db, name_keys_marker, done).get();
  if (!w.ok()) return w.error();
  if (made + shared > 0) {
    log()->info("user names re-keyed (compatibility forms and case folded): {} reservations made under the new key, "
                "{} names shared with another user",
                made, shared);
  }
  names_current_ = true;
  return std::nullopt;
}

bool identities::names_current(std::chrono::steady_clock::time_point until) const {
  while (!names_current_) {
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(poll_step);
  }
  return true;
}

std::string identities::stamp() const {
  return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(now_().time_since_epoch()).count());
}

std::string identities::new_intent_id(const char* kind) {
  std::lock_guard lk(rnd_mu_);
  static std::mt19937_64 gen{std::random_device{}()};
  char hex[33];
  std::snprintf(hex, sizeof hex, "%016llx%016llx", static_cast<unsigned long long>(gen()),
                static_cast<unsigned long long>(gen()));
  return std::string(kind) + "/" + hex;
}

void identities::abandon(json& intent, std::string& rev, const std::vector<std::string>& reservation_ids) {
  auto r = transition(intent, rev, intent_state::rolling_back);
  if (!r) return;  // a reconciler took the intent over: it releases what the intent holds
  rev = *r;
  const std::string intent_id = str_field(intent, "_id");
  bool ok = true;
  for (const auto& id : reservation_ids) ok = release(id, "intent", intent_id) && ok;
  if (ok) transition(intent, rev, intent_state::rolled_back);
}

identity_answer identities::fail_answer(int status, const std::string& error, const std::string& reason) {
  return identity_answer{status, json{{"error", error}, {"reason", reason}}};
}

std::optional<std::string> identities::transition(json& intent, const std::string& rev, intent_state to) {
  intent["state"] = policy::to_string(to);
  intent["updated"] = stamp();
  intent["_rev"] = rev;
  const std::string id = str_field(intent, "_id");
  auto r = client_.put_doc(cfg_.db, id, intent).get_write();
  if (!r.ok()) {
    if (!is_conflict(r.error())) log()->warn("intent {}: moving to {} failed: {}", id, policy::to_string(to),
                                             r.error().describe());
    return std::nullopt;
  }
  std::string nrev = str_field(r.value().body, "rev");
  if (nrev.empty()) return std::nullopt;
  // 202: stored on fewer copies than the quorum; another node may have moved the same revision.
  if (!r.value().quorum && !confirm_transition(id, str_field(intent, "name"), nrev)) return std::nullopt;
  intent["_rev"] = nrev;
  return nrev;
}

replicator::result<bool> identities::reserve(unique_field f, const std::string& key, const std::string& user,
                                             const std::string& intent_id, std::string& rev_out, const std::string& email,
                                             bool retried) {
  const std::string id = policy::reservation_id(f, key);
  json doc{{"type", "reservation"}, {"field", policy::to_string(f)}, {"user", user}, {"created", stamp()}};
  if (!intent_id.empty()) doc["intent"] = intent_id;
  if (f == unique_field::name && !email.empty()) doc["email"] = email;
  auto r = client_.put_doc(cfg_.db, id, doc).get_write();
  if (r.ok()) {
    if (!r.value().quorum) return unconfirmed(id, str_field(r.value().body, "rev"));
    rev_out = str_field(r.value().body, "rev");
    return true;
  }
  if (!is_conflict(r.error())) return r.error();
  // Taken — unless by this very intent (a repeated step after a crash).
  auto cur = client_.get_doc(cfg_.db, id).get();
  if (!cur.ok()) {
    // Not known to be taken: released between the PUT and this read (claimed again, once), or
    // unreadable — an error, never "taken".
    if (cur.error().kind == couch_error_kind::not_found && !retried) {
      return reserve(f, key, user, intent_id, rev_out, email, true);
    }
    return cur.error();
  }
  if (str_field(cur.value(), "intent") == intent_id && (!intent_id.empty() || str_field(cur.value(), "user") == user)) {
    rev_out = str_field(cur.value(), "_rev");
    return true;
  }
  // Or by a stale reservation (policy::reservation_stale): deleted by the revision read, and the
  // value claimed again, once; a claim racing for it wins or loses on that PUT.
  if (!retried && stale(cur.value())) {
    auto d = client_.delete_doc(cfg_.db, id, str_field(cur.value(), "_rev")).get();
    if (d.ok() || d.error().kind == couch_error_kind::not_found) {
      log()->info("reservation {} was left by intent {}, which was rolled back or is gone, for a user who does not "
                  "exist: released", policy::loggable_reservation_id(id), str_field(cur.value(), "intent"));
      return reserve(f, key, user, intent_id, rev_out, email, true);
    }
  }
  return false;
}

couch_error identities::unconfirmed(const std::string& reservation_id, const std::string& rev) {
  unconfirmed_.inc();
  auto withdrawn = client_.delete_doc(cfg_.db, reservation_id, rev).get();
  log()->warn("reservation {}: the server stored it on fewer copies than its write quorum (202 Accepted), so a "
              "concurrent claim of the same value may hold it; withdrawn{}, and the claim fails until the cluster "
              "reaches its quorum again",
              policy::loggable_reservation_id(reservation_id),
              withdrawn.ok() ? std::string()
                             : " — withdrawing failed (" + withdrawn.error().describe() + "): released with its claim");
  couch_error e;
  e.kind = couch_error_kind::server;
  e.status = 202;
  e.error = "quorum_not_met";
  e.reason = "the reservation reached fewer copies than the write quorum";
  return e;
}

bool identities::stale(const json& reservation) {
  const std::string intent_id = str_field(reservation, "intent");
  if (intent_id.empty()) return false;
  auto st = intent_of(reservation);
  if (!st.ok()) return false;
  const std::string holder = str_field(reservation, "user");
  if (holder.empty()) return false;
  auto u = client_.get_doc(users_db_, policy::user_doc_id(holder)).get();
  if (!u.ok() && u.error().kind != couch_error_kind::not_found) return false;
  return policy::reservation_stale(true, st.value(), u.ok());
}

bool identities::record_address(const std::string& user_name, const std::string& email) {
  const std::string key = name_key_of(user_name);
  if (key.empty()) return true;  // no name reservation for such a name
  const std::string name_id = policy::reservation_id(unique_field::name, key);
  auto nr = client_.get_doc(cfg_.db, name_id).get();
  if (!nr.ok()) return nr.error().kind == couch_error_kind::not_found;
  if (str_field(nr.value(), "user") != user_name || str_field(nr.value(), "email") == email) return true;
  json d = nr.value();
  d["email"] = email;
  return client_.put_doc(cfg_.db, name_id, d).get().ok();
}

bool identities::release(const std::string& reservation_id, const char* holder_field, const std::string& holder) {
  auto cur = client_.get_doc(cfg_.db, reservation_id).get();
  if (!cur.ok()) return cur.error().kind == couch_error_kind::not_found;
  if (str_field(cur.value(), holder_field) != holder) return true;  // someone else's: never touched
  auto d = client_.delete_doc(cfg_.db, reservation_id, str_field(cur.value(), "_rev")).get();
  return d.ok() || d.error().kind == couch_error_kind::not_found;
}

std::optional<identity_answer> identities::replay(const std::string& name, const std::string& name_key,
                                                 const std::string& email, const std::string& password,
                                                 const std::string& idempotency_key) {
  auto res = client_.get_doc(cfg_.db, policy::reservation_id(unique_field::name, name_key)).get();
  if (!res.ok() || str_field(res.value(), "user") != name) return std::nullopt;
  const std::string intent_id = str_field(res.value(), "intent");
  if (intent_id.empty()) return std::nullopt;
  auto intent = client_.get_doc(cfg_.db, intent_id).get();
  if (!intent.ok() || str_field(intent.value(), "idempotency_key") != idempotency_key ||
      str_field(intent.value(), "type") != "signup" || str_field(intent.value(), "name") != name ||
      str_field(intent.value(), "email") != email) {
    return std::nullopt;
  }
  const auto state = policy::intent_state_from(str_field(intent.value(), "state"));
  if (state == intent_state::done) {
    // The same sign-up carries the same password: the one the user now has. Checked here against
    // the `_users` document's hash (CouchDB's `_session` would count a wrong one towards
    // locking the account); anything else, or a hash that cannot be checked, is someone else's
    // sign-up of a taken name.
    auto user = client_.get_doc(users_db_, policy::user_doc_id(name)).get();
    if (!user.ok()) return std::nullopt;
    if (const auto m = check_couch_password(user.value(), password); m != password_match::matches) {
      log()->info("sign-up: a repeat of user {}'s sign-up with the same Idempotency-Key carries {}: refused as taken",
                  name, m == password_match::differs ? "another password" : "a password the stored hash cannot confirm");
      return std::nullopt;
    }
    log()->info("sign-up: user {} was created by an earlier request with the same Idempotency-Key: answered again",
                name);
    return identity_answer{201, json{{"ok", true}, {"name", name}, {"ready", user_ready_ ? user_ready_(name) : true},
                                     {"replayed", true}}};
  }
  if (state == intent_state::pending || state == intent_state::reserved) {
    return fail_answer(503, "service_unavailable", "the sign-up with this Idempotency-Key is still running; try again");
  }
  return std::nullopt;
}

identity_answer identities::signup(const json& body, const std::optional<std::string>& idempotency_header) {
  const auto started = std::chrono::steady_clock::now();
  // Sent at all, it must be a valid key (an empty header is a client bug, not "no key").
  const std::string idempotency_key = idempotency_header.value_or("");
  if (!body.is_object()) {
    rejected_.inc();
    return fail_answer(400, "bad_request", "the body must be a JSON object with name, password and email");
  }
  // Validation: every problem at once, each naming its field (never a value).
  json problems = json::object();
  const auto field = [&](const char* key) -> std::optional<std::string> {
    const auto it = body.find(key);
    if (it == body.end() || !it->is_string()) {
      problems[key] = "missing or not a string";
      return std::nullopt;
    }
    return it->get<std::string>();
  };
  auto name_in = field("name");
  auto password_in = field("password");
  auto email_in = field("email");
  policy::checked_value name, password, email;
  if (name_in && !(name = policy::check_user_name(*name_in, cfg_.rules)).ok()) problems["name"] = name.error;
  if (password_in && !(password = policy::check_password(*password_in, cfg_.rules)).ok()) {
    problems["password"] = password.error;
  }
  if (email_in && !(email = policy::normalise_email(*email_in, cfg_.rules)).ok()) problems["email"] = email.error;
  if (idempotency_header) {
    if (const auto k = policy::check_idempotency_key(*idempotency_header); !k.ok()) problems["Idempotency-Key"] = k.error;
  }
  json profile = json::object();
  for (const auto& [k, v] : body.items()) {
    if (k == "name" || k == "password" || k == "email") continue;
    if (std::find(cfg_.profile_fields.begin(), cfg_.profile_fields.end(), k) == cfg_.profile_fields.end()) {
      problems[k] = "not an allowed profile field";
      continue;
    }
    profile[k] = v;
  }
  if (!problems.empty()) {
    rejected_.inc();
    json b{{"error", "bad_request"}, {"reason", "invalid sign-up"}, {"problems", problems}};
    return identity_answer{400, std::move(b)};
  }
  const auto deadline = started + cfg_.signup_deadline;
  // Names are re-keyed at start (rekey_names, milliseconds when there is nothing to do).
  if (!names_current(deadline)) return fail_answer(503, "service_unavailable", "starting up; try again");
  const std::string key = policy::name_key(name.value);

  // 1. The intent (no password in it).
  const std::string intent_id = new_intent_id("signup");
  json intent{{"_id", intent_id}, {"type", "signup"},  {"state", policy::to_string(intent_state::pending)},
              {"name", name.value}, {"name_key", key}, {"email", email.value},
              {"created", stamp()}, {"updated", stamp()}};
  if (!idempotency_key.empty()) intent["idempotency_key"] = idempotency_key;
  auto put = client_.put_doc(cfg_.db, intent_id, intent).get();
  if (!put.ok()) {
    errors_.inc();
    log()->warn("sign-up: writing the intent failed: {}", put.error().describe());
    return fail_answer(503, "service_unavailable", "the identities database is not available; try again");
  }
  std::string rev = str_field(put.value(), "rev");
  fail_point("signup:after_intent");

  // 2. Both reservations, in parallel.
  std::string name_rev, email_rev;
  auto name_res = reserve(unique_field::name, key, name.value, intent_id, name_rev, email.value);
  auto email_res = reserve(unique_field::email, email.value, name.value, intent_id, email_rev);
  fail_point("signup:after_reserve");
  std::vector<std::string> taken;
  if (name_res.ok() && !name_res.value()) taken.push_back("name");
  if (email_res.ok() && !email_res.value()) taken.push_back("email");
  const bool failed = !name_res.ok() || !email_res.ok();

  const std::vector<std::string> held{policy::reservation_id(unique_field::name, key),
                                      policy::reservation_id(unique_field::email, email.value)};

  if (failed || !taken.empty()) {
    abandon(intent, rev, held);
    if (failed) {
      errors_.inc();
      const auto& e = !name_res.ok() ? name_res.error() : email_res.error();
      log()->warn("sign-up: reserving failed: {}", e.describe());
      return fail_answer(503, "service_unavailable", "the identities database is not available; try again");
    }
    if (!idempotency_key.empty() && taken.front() == "name") {
      if (auto again = replay(name.value, key, email.value, password.value, idempotency_key)) return std::move(*again);
    }
    conflicts_.inc();
    json b{{"error", "conflict"}, {"reason", "already taken: " + taken.front() + (taken.size() > 1 ? " and email" : "")},
           {"fields", taken}};
    return identity_answer{409, std::move(b)};
  }

  // 3. reserved: from here a reconciler finishes rather than rolls back once the user exists.
  if (auto r = transition(intent, rev, intent_state::reserved)) {
    rev = *r;
  } else {
    errors_.inc();
    return fail_answer(503, "service_unavailable", "the sign-up took too long; try again");
  }
  fail_point("signup:after_reserved_state");
  if (std::chrono::steady_clock::now() >= deadline) {
    abandon(intent, rev, held);
    errors_.inc();
    return fail_answer(503, "service_unavailable", "the sign-up took too long; try again");
  }

  // 4. The _users document (CouchDB hashes the password).
  json user = profile;
  user["_id"] = policy::user_doc_id(name.value);
  user["name"] = name.value;
  user["password"] = password.value;
  user["type"] = "user";
  user["roles"] = cfg_.roles;
  user["email"] = email.value;
  user["couchgate_intent"] = intent_id;
  auto created = client_.put_doc(users_db_, user["_id"].get<std::string>(), user).get();
  user["password"] = nullptr;  // not kept around longer than needed
  if (!created.ok()) {
    abandon(intent, rev, held);
    if (is_conflict(created.error())) {  // a user of that name made without couchgate
      conflicts_.inc();
      return identity_answer{409, json{{"error", "conflict"}, {"reason", "already taken: name"},
                                       {"fields", json::array({"name"})}}};
    }
    errors_.inc();
    log()->warn("sign-up: creating the _users document failed: {}", created.error().describe());
    return fail_answer(503, "service_unavailable", "the user could not be created; try again");
  }
  const std::string user_rev = str_field(created.value(), "rev");
  settle(name.value, email.value);  // the provisioner's admit() has nothing to check for it
  fail_point("signup:after_user");

  // 5. Wait, bounded, for the user's database.
  bool ready = false;
  const auto wait_until = std::chrono::steady_clock::now() + cfg_.provision_wait;
  while (!(ready = user_ready_ && user_ready_(name.value)) && std::chrono::steady_clock::now() < wait_until) {
    std::this_thread::sleep_for(poll_step);
  }

  // 6. done — unless a reconciler rolled this intent back meanwhile: then the user goes too.
  if (!transition(intent, rev, intent_state::done)) {
    auto cur = client_.get_doc(cfg_.db, intent_id).get();
    if (cur.ok() && str_field(cur.value(), "state") == policy::to_string(intent_state::done)) {
      // Finished by a reconciler: fine.
    } else {
      client_.delete_doc(users_db_, policy::user_doc_id(name.value), user_rev).get();
      errors_.inc();
      return fail_answer(503, "service_unavailable", "the sign-up took too long; try again");
    }
  }
  signups_.inc();
  latency_.observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  log()->info("sign-up: user {} created{}", name.value, ready ? "" : " (database not ready yet)");
  return identity_answer{201, json{{"ok", true}, {"name", name.value}, {"ready", ready}}};
}

identity_answer identities::available(const std::string& name, const std::string& email) {
  if (!names_current(std::chrono::steady_clock::now() + cfg_.signup_deadline)) {
    return fail_answer(503, "service_unavailable", "starting up; try again");
  }
  json out = json::object();
  const auto look = [&](unique_field f, const std::string& raw) -> bool {
    policy::checked_value v = f == unique_field::name ? policy::check_user_name(raw, cfg_.rules)
                                                      : policy::normalise_email(raw, cfg_.rules);
    if (!v.ok()) {
      out[policy::to_string(f)] = json{{"valid", false}, {"reason", v.error}};
      return true;
    }
    const std::string key = f == unique_field::name ? policy::name_key(v.value) : v.value;
    auto r = client_.get_doc(cfg_.db, policy::reservation_id(f, key)).get();
    if (!r.ok() && r.error().kind != couch_error_kind::not_found) return false;
    // A stale reservation (its intent rolled back or gone, its user absent: stale() read the user)
    // is released by the next claim: the value is available.
    bool taken = r.ok() && !stale(r.value());
    if (!r.ok() && f == unique_field::name) {  // a user made without couchgate, not reserved yet
      auto u = client_.get_doc(users_db_, policy::user_doc_id(v.value)).get();
      if (!u.ok() && u.error().kind != couch_error_kind::not_found) return false;
      taken = u.ok();
    }
    out[policy::to_string(f)] = json{{"valid", true}, {"available", !taken}};
    return true;
  };
  if (name.empty() && email.empty()) return fail_answer(400, "bad_request", "ask for name, email or both");
  if ((!name.empty() && !look(unique_field::name, name)) || (!email.empty() && !look(unique_field::email, email))) {
    errors_.inc();
    return fail_answer(503, "service_unavailable", "the identities database is not available; try again");
  }
  return identity_answer{200, std::move(out)};
}

identity_answer identities::change_email(const std::string& user_name, const json& body) {
  const auto it = body.is_object() ? body.find("email") : body.end();
  if (!body.is_object() || it == body.end() || !it->is_string()) {
    return fail_answer(400, "bad_request", "the body must be {\"email\": \"...\"}");
  }
  auto email = policy::normalise_email(it->get<std::string>(), cfg_.rules);
  if (!email.ok()) return identity_answer{400, json{{"error", "bad_request"}, {"reason", email.error},
                                                    {"problems", json{{"email", email.error}}}}};
  const std::string user_id = policy::user_doc_id(user_name);
  auto cur = client_.get_doc(users_db_, user_id).get();
  if (!cur.ok()) {
    errors_.inc();
    return fail_answer(cur.error().kind == couch_error_kind::not_found ? 404 : 503,
                       cur.error().kind == couch_error_kind::not_found ? "not_found" : "service_unavailable",
                       "the user could not be read");
  }
  json user = cur.value();
  const std::string old_email = str_field(user, "email");
  if (old_email == email.value) return identity_answer{200, json{{"ok", true}, {"email", email.value}}};

  const std::string intent_id = new_intent_id("change");
  json intent{{"_id", intent_id},     {"type", "change"},       {"state", policy::to_string(intent_state::pending)},
              {"name", user_name},    {"email", email.value},   {"old_email", old_email},
              {"created", stamp()},   {"updated", stamp()}};
  auto put = client_.put_doc(cfg_.db, intent_id, intent).get();
  if (!put.ok()) {
    errors_.inc();
    return fail_answer(503, "service_unavailable", "the identities database is not available; try again");
  }
  std::string rev = str_field(put.value(), "rev");
  fail_point("change:after_intent");
  std::string email_rev;
  auto res = reserve(unique_field::email, email.value, user_name, intent_id, email_rev);
  fail_point("change:after_reserve");
  const std::vector<std::string> held{policy::reservation_id(unique_field::email, email.value)};
  if (!res.ok() || !res.value()) {
    abandon(intent, rev, held);
    if (!res.ok()) {
      errors_.inc();
      return fail_answer(503, "service_unavailable", "the identities database is not available; try again");
    }
    conflicts_.inc();
    return identity_answer{409, json{{"error", "conflict"}, {"reason", "already taken: email"},
                                     {"fields", json::array({"email"})}}};
  }
  if (auto r = transition(intent, rev, intent_state::reserved)) {
    rev = *r;
  } else {
    return fail_answer(503, "service_unavailable", "the change took too long; try again");
  }
  user["email"] = email.value;
  // The sign-up that made the user stays named: a fork of that intent seen later (a cluster's
  // copies meeting again) is still decided with the user as its own (read_fork).
  if (const std::string made_by = str_field(user, "couchgate_intent"); made_by.rfind("signup/", 0) == 0) {
    user["couchgate_signup"] = made_by;
  }
  user["couchgate_intent"] = intent_id;
  auto upd = client_.put_doc(users_db_, user_id, user).get();
  if (!upd.ok()) {
    abandon(intent, rev, held);
    errors_.inc();
    return fail_answer(is_conflict(upd.error()) ? 409 : 503,
                       is_conflict(upd.error()) ? "conflict" : "service_unavailable",
                       "the user changed meanwhile; try again");
  }
  fail_point("change:after_user");
  // The old address is released (only if this user holds it) and the name reservation records the
  // new one, then done: until done, a crash leaves both to the reconciler's finish.
  const bool released =
      old_email.empty() || release(policy::reservation_id(unique_field::email, old_email), "user", user_name);
  if (record_address(user_name, email.value) && released) settle(user_name, email.value);
  transition(intent, rev, intent_state::done);
  return identity_answer{200, json{{"ok", true}, {"email", email.value}}};
}

std::optional<policy::intent_action> identities::act(const json& doc) {
  const std::string id = str_field(doc, "_id");
  const std::string type = str_field(doc, "type");
  const auto state = policy::intent_state_from(str_field(doc, "state"));
  const std::string name = str_field(doc, "name");
  const std::string email = str_field(doc, "email");
  std::string rev = str_field(doc, "_rev");
  if (!state || name.empty() || rev.empty() || (type != "signup" && type != "change")) {
    log()->warn("intent {}: malformed (type, state, name or _rev missing); left alone", id);
    return std::nullopt;
  }
  const auto conflicts = doc.find("_conflicts");
  if (conflicts != doc.end() && conflicts->is_array() && !conflicts->empty()) return settle_fork(id, name);

  policy::intent_facts f;
  f.state = *state;
  f.updated = updated_of(doc);
  const std::string user_id = policy::user_doc_id(name);
  auto u = client_.get_doc(users_db_, user_id).get();
  if (!u.ok() && u.error().kind != couch_error_kind::not_found) return std::nullopt;
  f.user_exists = u.ok();
  f.user_from_this_intent = u.ok() && str_field(u.value(), "couchgate_intent") == id;

  const auto action = policy::decide_intent(f, now_(), cfg_.intent_timeout, cfg_.retention);
  if (action == policy::intent_action::leave) return action;
  json intent = doc;
  intent.erase("_conflicts");  // read with the listing; never written back
  const std::string email_res = policy::reservation_id(unique_field::email, email);
  const std::string name_res = policy::reservation_id(unique_field::name, str_field(doc, "name_key"));
  // The name's reservation under the current key, where the intent recorded an older one (a
  // copy rekey_names made for it names the same intent).
  const std::string key_now = name_key_of(name);
  const std::string name_now = key_now.empty() ? name_res : policy::reservation_id(unique_field::name, key_now);
  // What the intent holds: a sign-up its name and address, a change its new address.
  const auto release_held = [&] {
    bool ok = type != "signup" ||
              (release(name_res, "intent", id) && (name_now == name_res || release(name_now, "intent", id)));
    return release(email_res, "intent", id) && ok;
  };
  log()->info("intent {} ({}): {}", id, policy::to_string(*state), policy::to_string(action));
  repaired_.inc(action == policy::intent_action::forget ? 0 : 1);
  switch (action) {
    case policy::intent_action::leave:
      return action;
    case policy::intent_action::forget: {
      // A rolled-back intent's reservations are released first: one whose PUT reached the server
      // after the rollback (a slow answer) is still here, and would hold its value forever.
      if (*state == intent_state::rolled_back && !release_held()) return std::nullopt;
      auto d = client_.delete_doc(cfg_.db, id, rev).get();
      if (d.ok() || d.error().kind == couch_error_kind::not_found || is_conflict(d.error())) return action;
      return std::nullopt;
    }
    case policy::intent_action::finish: {
      if (ensure_held(doc, str_field(u.value(), "email")) && transition(intent, rev, intent_state::done)) return action;
      return std::nullopt;
    }
    case policy::intent_action::roll_back: {
      auto r = transition(intent, rev, intent_state::rolling_back);
      if (!r) return std::nullopt;
      rev = *r;
      [[fallthrough]];
    }
    case policy::intent_action::release: {
      bool ok = true;
      if (f.user_from_this_intent) {
        if (type == "signup") {
          auto d = client_.delete_doc(users_db_, user_id, str_field(u.value(), "_rev")).get();
          ok = d.ok() || d.error().kind == couch_error_kind::not_found;
        } else {  // a change that reached the user: put the old address back
          json user = u.value();
          user["email"] = str_field(doc, "old_email");
          // The user names the sign-up that made it again, if one did (else no intent at all).
          const std::string made_by = str_field(user, "couchgate_signup");
          user.erase("couchgate_signup");
          if (made_by.empty()) user.erase("couchgate_intent");
          else user["couchgate_intent"] = made_by;
          ok = client_.put_doc(users_db_, user_id, user).get().ok();
        }
      }
      ok = release_held() && ok;
      if (!ok) return std::nullopt;
      if (*state == intent_state::rolled_back || transition(intent, rev, intent_state::rolled_back)) return action;
      return std::nullopt;
    }
  }
  return action;
}

bool identities::ensure_held(const json& doc, const std::string& user_email) {
  const std::string id = str_field(doc, "_id");
  const std::string name = str_field(doc, "name");
  const std::string email = str_field(doc, "email");
  // Claims a value for this intent; false only on a server error. Held by another user: logged
  // (the same user's claim without an intent, made by the provisioner, is no conflict).
  const auto claim = [&](unique_field f, const std::string& key, const std::string& name_email) {
    std::string r;
    auto res = reserve(f, key, name, id, r, name_email);
    if (!res.ok()) return false;
    if (!res.value()) {
      auto cur = client_.get_doc(cfg_.db, policy::reservation_id(f, key)).get();
      if (!cur.ok() || str_field(cur.value(), "user") != name) {
        log()->error("intent {}: user {} exists but its {} is reserved by another user", id, name,
                     policy::to_string(f));
      }
    }
    return true;
  };
  bool ok = true;
  if (str_field(doc, "type") == "signup") {
    // The name, recording the address the user has now; the sign-up's address only while the user
    // still has it (one changed since through couchgate is its change's to hold).
    const std::string address = user_email.empty() ? email : user_email;
    ok = claim(unique_field::name, str_field(doc, "name_key"), address);
    if (address == email) ok = claim(unique_field::email, email, std::string()) && ok;
  } else {
    // The new address (held since the change's start, unless a rollback of it released it), then
    // the old one released and the new one recorded on the name reservation.
    if (!claim(unique_field::email, email, std::string())) return false;
    const std::string old_email = str_field(doc, "old_email");
    if (!old_email.empty()) ok = release(policy::reservation_id(unique_field::email, old_email), "user", name);
    // The name reservation records the new address (a deleted user's is found there).
    ok = record_address(name, email) && ok;
  }
  return ok;
}

std::optional<identities::intent_fork> identities::read_fork(const std::string& id, const std::string& name) {
  auto leaves = client_.get_doc(cfg_.db, id, "open_revs=all").get();
  if (!leaves.ok()) {
    log()->warn("intent {}: reading its revisions failed: {}", id, leaves.error().describe());
    return std::nullopt;
  }
  if (!leaves.value().is_array()) {
    log()->warn("intent {}: its revisions answer is not a JSON array", id);
    return std::nullopt;
  }
  intent_fork fork;
  for (const auto& entry : leaves.value()) {
    const auto ok = entry.is_object() ? entry.find("ok") : entry.end();
    if (ok == entry.end() || !ok->is_object()) continue;  // {"missing": rev}
    const auto deleted = ok->find("_deleted");
    if (deleted != ok->end() && deleted->is_boolean() && deleted->get<bool>()) continue;
    const std::string rev = str_field(*ok, "_rev");
    const auto state = policy::intent_state_from(str_field(*ok, "state"));
    if (rev.empty() || !state || str_field(*ok, "name") != name) {
      log()->warn("intent {}: revision {} is malformed (state, name or _rev); the fork is left alone", id, rev);
      return std::nullopt;
    }
    fork.live.push_back(policy::intent_leaf{rev, *state, updated_of(*ok)});
    fork.docs[rev] = *ok;
    fork.docs[rev].erase("_conflicts");  // acted on as the only revision (act would read a fork again)
  }
  auto u = client_.get_doc(users_db_, policy::user_doc_id(name)).get();
  if (!u.ok() && u.error().kind != couch_error_kind::not_found) return std::nullopt;
  fork.user_ours = u.ok() && (str_field(u.value(), "couchgate_intent") == id || str_field(u.value(), "couchgate_signup") == id);
  if (fork.user_ours) fork.user_email = str_field(u.value(), "email");
  return fork;
}

bool identities::apply_fork(const std::string& id, const intent_fork& fork, const policy::fork_verdict& verdict) {
  std::string states;
  for (const auto& l : fork.live) states += (states.empty() ? "" : ", ") + l.rev + " " + policy::to_string(l.state);
  log()->warn("intent {}: {} live revisions ({}), written on copies that did not see each other; keeping {} "
              "(the user {} this intent's){}",
              id, fork.live.size(), states, verdict.keep, fork.user_ours ? "is" : "is not",
              verdict.ensure_reservations ? ", its reservations ensured first" : "");
  // What a dropped rollback released is held again before that rollback goes: a crash in between
  // leaves the fork to the next pass, never a done intent without its reservations.
  if (verdict.ensure_reservations && !ensure_held(fork.docs.at(verdict.keep), fork.user_email)) return false;
  // A 409 means that revision is no leaf any more (its writer moved it on): the fork stands, and
  // the next pass reads it again.
  for (const auto& rev : verdict.drop) {
    auto d = client_.delete_doc(cfg_.db, id, rev).get();
    if (!d.ok() && d.error().kind != couch_error_kind::not_found) {
      log()->warn("intent {}: deleting its revision {} failed: {}", id, rev, d.error().describe());
      return false;
    }
  }
  forks_.inc();
  return true;
}

std::optional<policy::intent_action> identities::settle_fork(const std::string& id, const std::string& name) {
  const auto fork = read_fork(id, name);
  if (!fork) return std::nullopt;
  if (fork->live.empty()) return policy::intent_action::leave;  // deleted meanwhile
  const auto verdict = policy::resolve_fork(fork->live, fork->user_ours, now_(), cfg_.intent_timeout);
  if (verdict.wait || verdict.keep.empty()) return policy::intent_action::leave;
  if (fork->live.size() > 1 && !apply_fork(id, *fork, verdict)) return std::nullopt;
  return act(fork->docs.at(verdict.keep));  // the only live revision now
}

bool identities::confirm_transition(const std::string& id, const std::string& name, const std::string& own_rev) {
  unconfirmed_intents_.inc();
  const auto fork = read_fork(id, name);
  // Unreadable: taken as written (the reconciler's pass decides on all revisions later).
  if (!fork || fork->live.size() < 2) return true;
  const auto verdict = policy::resolve_fork(fork->live, fork->user_ours, now_(), cfg_.intent_timeout, own_rev);
  if (verdict.wait || verdict.keep.empty()) return true;
  // Kept or not, the verdict is carried out (the reservations a dropped rollback released are
  // claimed again, whether that rollback is this move or another's); failing, the reconciler's
  // next pass does it.
  apply_fork(id, *fork, verdict);
  if (verdict.keep == own_rev) return true;
  log()->warn("intent {}: its move to revision {} (answered 202) lost to revision {} written through another node",
              id, own_rev, verdict.keep);
  return false;
}

identities::reconcile_report identities::reconcile() {
  reconcile_report rep;
  for (const std::string prefix : {"signup/", "change/"}) {
    const auto listed = for_each_doc(client_, cfg_.db, prefix, [&](const json& doc) {
      ++rep.seen;
      const auto done = act(doc);
      if (!done) ++rep.failed;
      else if (*done == policy::intent_action::finish) ++rep.finished;
      else if (*done == policy::intent_action::roll_back || *done == policy::intent_action::release) ++rep.rolled_back;
      else if (*done == policy::intent_action::forget) ++rep.forgotten;
      return true;
    }, "conflicts=true&");
    if (listed) {
      ++rep.failed;
      log()->warn("intent reconcile: listing intents failed: {}", listed->describe());
      return rep;
    }
  }
  return rep;
}

// ---- users made without couchgate, and addresses changed in _users ----

replicator::result<std::optional<intent_state>> identities::intent_of(const json& reservation) {
  const std::string intent_id = str_field(reservation, "intent");
  if (intent_id.empty()) return std::optional<intent_state>{};
  auto r = client_.get_doc(cfg_.db, intent_id).get();
  if (!r.ok()) {
    if (r.error().kind == couch_error_kind::not_found) return std::optional<intent_state>{};
    return r.error();
  }
  return policy::intent_state_from(str_field(r.value(), "state"));
}

replicator::result<policy::claim> identities::classify(const json& reservation, const std::string& user,
                                                       const std::string& users_intent) {
  const std::string holder = str_field(reservation, "user");
  if (holder != user) return policy::claim::taken;  // no need to look at its intent
  // Made by the sign-up whose user exists: that intent is finished (the reconciler finishes a
  // sign-up whose user exists), so it need not be read. A change intent may still roll back.
  if (users_intent.rfind("signup/", 0) == 0 && str_field(reservation, "intent") == users_intent) {
    return policy::claim::held;
  }
  auto st = intent_of(reservation);
  if (!st.ok()) return st.error();
  return policy::classify_claim(holder, user, st.value());
}

replicator::pending_json identities::put_claim(unique_field f, const std::string& key, const std::string& user,
                                               const std::string& email) {
  json doc{{"type", "reservation"}, {"field", policy::to_string(f)}, {"user", user}, {"created", stamp()}};
  if (f == unique_field::name && !email.empty()) doc["email"] = email;
  return client_.put_doc(cfg_.db, policy::reservation_id(f, key), doc);
}

replicator::result<policy::claim> identities::settle_claim(replicator::pending_json& put, unique_field f,
                                                           const std::string& key, const std::string& user,
                                                           const std::string& users_intent) {
  auto r = put.get_write();
  if (r.ok()) {
    if (!r.value().quorum) return unconfirmed(policy::reservation_id(f, key), str_field(r.value().body, "rev"));
    return policy::claim::held;
  }
  if (!is_conflict(r.error())) return r.error();
  auto cur = client_.get_doc(cfg_.db, policy::reservation_id(f, key)).get();
  if (!cur.ok()) {
    // Released between the two requests: the next pass claims it.
    if (cur.error().kind == couch_error_kind::not_found) return policy::claim::in_flight;
    return cur.error();
  }
  return classify(cur.value(), user, users_intent);
}

void identities::settle(const std::string& user, const std::string& email) {
  std::lock_guard lk(direct_mu_);
  settled_[user] = email;
}

void identities::note_conflicts(const std::string& user, const std::string& email, const std::string& name_key,
                                bool own, const policy::direct_verdict& v, const std::map<unique_field, std::string>& holders) {
  std::lock_guard lk(direct_mu_);
  for (const auto f : {unique_field::name, unique_field::email}) {
    const auto key = std::pair{user, f};
    if (std::find(v.conflicts.begin(), v.conflicts.end(), f) == v.conflicts.end()) {
      duplicate_values_.erase(key);
      continue;
    }
    conflict c{f == unique_field::name ? name_key : email, holders.count(f) ? holders.at(f) : std::string()};
    auto it = duplicate_values_.find(key);
    if (it != duplicate_values_.end() && it->second.value == c.value && it->second.holder == c.holder) continue;  // known
    duplicate_values_[key] = c;
    duplicates_found_.inc();
    log()->warn("user {} ({}): its {} {} is already reserved by user {}; {}", user,
                own ? "signed up, its address then changed in _users" : "made without couchgate",
                policy::to_string(f), policy::loggable_value(f, c.value), c.holder,
                v.provision ? "provisioned anyway (identities.on_duplicate: flag)"
                            : "not provisioned until resolved (identities.on_duplicate: exclude)");
  }
  duplicates_.set(static_cast<double>(duplicate_values_.size()));
}

std::vector<std::optional<policy::direct_verdict>> identities::admit(const std::vector<const policy::user_doc*>& users) {
  std::vector<std::optional<policy::direct_verdict>> out(users.size(), policy::direct_verdict{});
  struct want {
    std::size_t i;
    std::string name_key, email;
    std::string intent;  // the user document's `couchgate_intent` ("" for a user made without couchgate)
  };
  // What a user document asks for; false when it asks for nothing (no valid name or address).
  const auto wanted = [&](const policy::user_doc& u, want& w) {
    w.name_key.clear();
    w.email.clear();
    w.intent = u.intent;
    w.name_key = name_key_of(u.name);
    w.email = address_of(u);
    return !(w.name_key.empty() && w.email.empty());
  };
  const auto settled = [&](const std::string& user, const std::string& email) {
    const auto it = settled_.find(user);
    return it != settled_.end() && it->second == email;
  };
  std::vector<want> todo;
  {
    std::lock_guard lk(direct_mu_);
    for (std::size_t i = 0; i < users.size(); ++i) {
      const auto& u = *users[i];
      if (u.deleted) continue;
      want w{i, {}, {}};
      if (wanted(u, w) && !settled(u.name, w.email)) todo.push_back(std::move(w));
    }
  }
  if (todo.empty()) return out;

  // The users as they are now, in one request: a row read before an address changed (through
  // PUT /_identity/email, or in _users) or before the user was deleted would reserve an address
  // the user no longer has, and release the one it has.
  {
    json ids = json::array();
    for (const auto& w : todo) ids.push_back(policy::user_doc_id(users[w.i]->name));
    auto now_docs = docs_by_key(client_, users_db_, ids);
    if (!now_docs.ok()) {
      errors_.inc();
      log()->warn("users' documents cannot be read again before their reservations are checked: {} (retried)",
                  now_docs.error().describe());
      for (const auto& w : todo) out[w.i] = std::nullopt;
      return out;
    }
    std::map<std::string, policy::user_doc> current;  // by name; gone or unreadable users are absent
    for (const auto& [id, doc] : now_docs.value()) {
      if (auto u = live_user(doc)) current[u->name] = std::move(*u);
    }
    std::vector<want> still;
    std::lock_guard lk(direct_mu_);
    for (auto& w : todo) {
      const auto it = current.find(users[w.i]->name);
      // Gone since (its deletion is the feed's next row) or no longer a user document: nothing
      // is reserved for it, and its database is not made from an older row.
      if (it == current.end()) {
        out[w.i] = policy::direct_verdict{false, false, {}};
        continue;
      }
      if (wanted(it->second, w) && !settled(it->first, w.email)) still.push_back(std::move(w));
    }
    todo = std::move(still);
  }
  if (todo.empty()) return out;

  // What is reserved already, in one request.
  json keys = json::array();
  for (const auto& w : todo) {
    if (!w.name_key.empty()) keys.push_back(policy::reservation_id(unique_field::name, w.name_key));
    if (!w.email.empty()) keys.push_back(policy::reservation_id(unique_field::email, w.email));
  }
  auto listed = docs_by_key(client_, cfg_.db, keys);
  if (!listed.ok()) {
    errors_.inc();
    log()->warn("users' reservations cannot be read: {} (retried)", listed.error().describe());
    for (const auto& w : todo) out[w.i] = std::nullopt;
    return out;
  }
  const std::map<std::string, json>& found = listed.value();
  // The missing ones are created, all requests in flight at once.
  std::map<std::pair<std::size_t, unique_field>, replicator::pending_json> puts;
  for (const auto& w : todo) {
    for (const auto& [f, key] : {std::pair{unique_field::name, w.name_key}, std::pair{unique_field::email, w.email}}) {
      if (!key.empty() && !found.count(policy::reservation_id(f, key))) {
        puts.emplace(std::pair{w.i, f}, put_claim(f, key, users[w.i]->name, w.email));
      }
    }
  }

  for (const auto& w : todo) {
    const std::string& user = users[w.i]->name;
    std::map<unique_field, std::string> holders;
    std::optional<replicator::couch_error> failed;
    // One field: an existing reservation is classified; a missing one is created.
    const auto claim_field = [&](unique_field f, const std::string& key) -> std::optional<policy::claim> {
      const auto it = found.find(policy::reservation_id(f, key));
      auto c = it == found.end() ? settle_claim(puts.at({w.i, f}), f, key, user, w.intent)
                                 : classify(it->second, user, w.intent);
      if (!c.ok()) {
        failed = c.error();
        return std::nullopt;
      }
      if (c.value() == policy::claim::taken) {
        auto cur = it != found.end() ? replicator::result<json>(it->second)
                                     : client_.get_doc(cfg_.db, policy::reservation_id(f, key)).get();
        holders[f] = cur.ok() ? str_field(cur.value(), "user") : std::string();
      }
      return c.value();
    };
    auto name_claim = w.name_key.empty() ? std::optional(policy::claim::held) : claim_field(unique_field::name, w.name_key);
    std::optional<policy::claim> email_claim;
    if (!w.email.empty()) email_claim = claim_field(unique_field::email, w.email);
    if (failed) {
      errors_.inc();
      log()->warn("user {}: its reservations cannot be made: {} (retried)", user, failed->describe());
      out[w.i] = std::nullopt;
      continue;
    }
    // The address changed since the name reservation was made: the old one is released (only if
    // this user holds it) and the name reservation updated, in that order, so a crash between
    // them repeats the release.
    if (!w.name_key.empty() && name_claim == policy::claim::held) {
      const std::string name_id = policy::reservation_id(unique_field::name, w.name_key);
      auto it = found.find(name_id);
      std::optional<json> name_doc;
      if (it != found.end()) name_doc = it->second;
      if (name_doc && str_field(*name_doc, "email") != w.email) {
        const std::string old = str_field(*name_doc, "email");
        // The user is read once more right before: an address change that completed since the
        // documents above were read (PUT /_identity/email) recorded its new address where this
        // pass would see an "old" one, and releasing it would free an address the user has.
        bool ok = still_has_address(user, w.email);
        ok = ok && (old.empty() || release_old_address(policy::reservation_id(unique_field::email, old), user));
        if (ok) {
          json upd = *name_doc;
          if (w.email.empty()) upd.erase("email");
          else upd["email"] = w.email;
          ok = client_.put_doc(cfg_.db, name_id, upd).get().ok();
        }
        if (!ok) {
          out[w.i] = std::nullopt;  // retried
          continue;
        }
      }
    }
    auto v = policy::decide_direct_user(*name_claim, email_claim, cfg_.on_duplicate);
    note_conflicts(user, w.email, w.name_key, !w.intent.empty(), v, holders);
    if (!v.look_again) settle(user, w.email);
    out[w.i] = std::move(v);
  }
  return out;
}

bool identities::still_has_address(const std::string& user, const std::string& email) {
  auto doc = client_.get_doc(users_db_, policy::user_doc_id(user)).get();
  if (!doc.ok()) return false;
  const auto u = live_user(doc.value());
  return u && address_of(*u) == email;
}

std::string identities::name_key_of(const std::string& name) const {
  const auto checked = policy::check_user_name(name, cfg_.rules);
  return checked.ok() ? policy::name_key(checked.value) : std::string();
}

std::string identities::address_of(const policy::user_doc& u) const {
  if (u.email.empty()) return {};
  auto e = policy::normalise_email(u.email, cfg_.rules);
  return e.ok() ? e.value : std::string();
}

bool identities::release_old_address(const std::string& reservation_id, const std::string& user) {
  auto cur = client_.get_doc(cfg_.db, reservation_id).get();
  if (!cur.ok()) return cur.error().kind == couch_error_kind::not_found;
  if (str_field(cur.value(), "user") != user) return true;  // someone else's: never touched
  auto st = intent_of(cur.value());
  if (!st.ok()) return false;
  if (!policy::may_release_old_address(str_field(cur.value(), "user"), user, st.value())) return false;
  auto d = client_.delete_doc(cfg_.db, reservation_id, str_field(cur.value(), "_rev")).get();
  return d.ok() || d.error().kind == couch_error_kind::not_found;
}

bool identities::release_if_held_by_deleted(const std::string& reservation_id, const std::string& user) {
  auto cur = client_.get_doc(cfg_.db, reservation_id).get();
  if (!cur.ok()) return cur.error().kind == couch_error_kind::not_found;
  auto st = intent_of(cur.value());
  if (!st.ok()) return false;
  if (!policy::may_release_for_deleted(false, str_field(cur.value(), "user"), user, st.value())) return true;
  // The user is looked at again after the reservation was read (release_deleted's first look may
  // be older than a sign-up of the same name that has completed since, and holds this reservation
  // now); the delete is of the revision read, so nothing written after this look goes.
  auto u = client_.get_doc(users_db_, policy::user_doc_id(user)).get();
  if (!u.ok() && u.error().kind != couch_error_kind::not_found) return false;
  if (!policy::may_release_for_deleted(u.ok(), str_field(cur.value(), "user"), user, st.value())) return true;
  auto d = client_.delete_doc(cfg_.db, reservation_id, str_field(cur.value(), "_rev")).get();
  if (d.ok() || d.error().kind == couch_error_kind::not_found) return true;
  return false;  // changed meanwhile (409) or a server error: the next pass looks again
}

bool identities::release_deleted(const std::string& name) {
  std::string cached_email;
  {
    std::lock_guard lk(direct_mu_);
    if (auto it = settled_.find(name); it != settled_.end()) {
      cached_email = it->second;
      settled_.erase(it);
    }
    duplicate_values_.erase({name, unique_field::name});
    duplicate_values_.erase({name, unique_field::email});
    duplicates_.set(static_cast<double>(duplicate_values_.size()));
  }
  // A feed entry may be older than a user made again since: its reservations are its own.
  auto u = client_.get_doc(users_db_, policy::user_doc_id(name)).get();
  if (u.ok()) return true;
  if (u.error().kind != couch_error_kind::not_found) return false;

  auto checked = policy::check_user_name(name, cfg_.rules);
  std::vector<std::string> name_ids;  // under today's key, and under the key before NFKC
  std::vector<std::string> emails;
  if (!cached_email.empty()) emails.push_back(cached_email);
  if (checked.ok()) {
    name_ids.push_back(policy::reservation_id(unique_field::name, policy::name_key(checked.value)));
    const std::string legacy = policy::reservation_id(unique_field::name, policy::legacy_name_key(checked.value));
    if (legacy != name_ids.front()) name_ids.push_back(legacy);
  }
  for (const auto& name_id : name_ids) {
    auto cur = client_.get_doc(cfg_.db, name_id).get();
    if (!cur.ok() && cur.error().kind != couch_error_kind::not_found) return false;
    if (cur.ok() && str_field(cur.value(), "user") == name) {
      const std::string e = str_field(cur.value(), "email");
      if (!e.empty() && std::find(emails.begin(), emails.end(), e) == emails.end()) emails.push_back(e);
    }
  }
  bool ok = true;
  for (const auto& e : emails) ok = release_if_held_by_deleted(policy::reservation_id(unique_field::email, e), name) && ok;
  // The name reservations last: they are where the address is found again after a crash.
  for (const auto& name_id : name_ids) ok = ok && release_if_held_by_deleted(name_id, name);
  return ok;
}

json identities::conflicts() const {
  std::lock_guard lk(direct_mu_);
  json out = json::array();
  for (const auto& [key, c] : duplicate_values_) {
    out.push_back(json{{"user", key.first}, {"field", policy::to_string(key.second)}, {"value", c.value},
                       {"holder", c.holder}});
  }
  return out;
}

front::local_answer identities::serve(const front::local_request& r) {
  identity_answer a;
  const auto body = [&]() -> std::optional<json> {
    auto j = replicator::wire::parse(r.body, "request body");
    if (!j.ok()) return std::nullopt;
    return std::move(j.value());
  };
  if (r.method == "POST" && r.path == "/_signup") {
    auto j = body();
    a = j ? signup(*j, r.idempotency_key) : fail_answer(400, "bad_request", "the body is not JSON");
  } else if (r.method == "GET" && r.path == "/_signup/available") {
    a = available(front::query_param(r.query, "name").value_or(""), front::query_param(r.query, "email").value_or(""));
  } else if (r.method == "PUT" && r.path == "/_identity/email") {
    auto j = body();
    a = j ? change_email(r.user, *j) : fail_answer(400, "bad_request", "the body is not JSON");
  } else if (r.method == "PUT" && r.path == "/_identity/name") {
    a = fail_answer(405, "method_not_allowed",
                    "user names cannot be changed here: a user's database is named after the name");
  } else {
    a = fail_answer(404, "not_found", "no such identity endpoint");
  }
  front::local_answer out;
  out.status = static_cast<unsigned>(a.status);
  out.body = a.body.dump(-1, ' ', false, json::error_handler_t::replace);
  if (a.status == 503) out.headers.emplace_back("Retry-After", "1");
  return out;
}

void identities::start() {
  thread_ = std::thread([this] {
    for (;;) {
      // Before the first pass; sign-ups wait for it (names_current). Not in the daemon's setup:
      // a failing one must not hold up provisioning and fan-in.
      if (auto e = rekey_names()) {
        log()->warn("re-keying user names failed, sign-ups wait (tried again within 10 s): {}", e->describe());
      }
      const auto rep = reconcile();
      if (rep.finished + rep.rolled_back + rep.failed > 0) {
        log()->info("intent reconcile: {} intents, {} finished, {} rolled back, {} forgotten, {} failed", rep.seen,
                    rep.finished, rep.rolled_back, rep.forgotten, rep.failed);
      }
      // A failed pass is retried within a minute whatever the interval.
      auto next = cfg_.reconcile_interval;
      if (rep.failed > 0 && (next.count() == 0 || next > std::chrono::seconds(60))) next = std::chrono::seconds(60);
      if (!names_current_ && (next.count() == 0 || next > std::chrono::seconds(10))) next = std::chrono::seconds(10);
      if (next.count() == 0 || !stop_.sleep_for(next)) return;
    }
  });
}

void identities::stop() {
  stop_.request();
  if (thread_.joinable()) thread_.join();
}

identities::~identities() { stop(); }

}  // namespace couchgate::gateway
