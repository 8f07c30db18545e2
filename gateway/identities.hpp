#pragma once
// Owns: unique user names and e-mail addresses (sign-up, changing an e-mail address,
// availability) on top of CouchDB without transactions, and the reconciler that finishes or
// rolls back every intent a crash left behind. The rules and decisions are policy/identity;
// this is their I/O against the identities database and `_users`.
//
// Documents in `identities.db` (admin-only `_security`, created here):
//   signup/<uuid>, change/<uuid>   intents: {type, state, name, name_key, email, old_email,
//                                  created, updated} — never a password
//   name/<name_key>, email/<addr>  reservations: {type:"reservation", field, user, intent}
//   _local/couchgate-name-keys     the name keys every reservation has (rekey_names)
// A `_users` document made or changed through here carries `couchgate_intent: <intent id>`, so
// the reconciler can tell a user an intent made from one someone else made.
//
// Invariants after any crash, once the reconciler ran over intents older than intent_timeout:
// no reservation without its user, no user made here without its reservations, never two
// users with the same name key or e-mail address.
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <optional>
#include <string>
#include <vector>

#include "gateway/config.hpp"
#include "gateway/front/local.hpp"
#include "policy/identity.hpp"
#include "replicator/transport/couch_client.hpp"
#include "replicator/metrics.hpp"
#include "replicator/stop_flag.hpp"

namespace couchgate::gateway {

// An HTTP-shaped outcome: the front door sends it as is.
struct identity_answer {
  int status = 500;
  replicator::json body;
};

// Test-only fail points: COUCHGATE_FAILPOINT=<name> makes the process die (SIGKILL) right there,
// to prove the reconciler repairs a crash between any two steps. Names:
// signup:after_intent, signup:after_reserve, signup:after_reserved_state, signup:after_user,
// change:after_intent, change:after_reserve, change:after_user.
void fail_point(const char* name);

class identities {
 public:
  using clock_fn = std::function<std::chrono::system_clock::time_point()>;
  // user_ready(name): whether provisioning finished the user's database (sign-up waits for it,
  // bounded by cfg.provision_wait).
  identities(replicator::couch_client& client, replicator::registry& metrics, identities_config cfg,
             std::string users_db, std::function<bool(const std::string&)> user_ready,
             clock_fn now = [] { return std::chrono::system_clock::now(); });

  // Creates the identities database with an admin-only _security (idempotent).
  std::optional<replicator::couch_error> ensure_db();
  // Names were keyed by NFC and lower case before policy::name_key folded compatibility forms and
  // case (NFKC_Casefold): a user "Straße" signed up then holds only name/straße, and a sign-up of
  // "STRASSE" (key strasse) would find nothing in its way. Once per identities database (recorded
  // in its _local/couchgate-name-keys), every name reservation whose key is not its user's current
  // one is claimed under the current key as reserve() claims (same user, address and intent; a
  // 409 by another user is logged: two existing users that now fold to one name). Users no
  // selection provisions are covered too: the provisioner's admit() sees only the selected ones.
  // Run by start()'s thread before its first pass, retried; sign-ups and availability wait for
  // it (bounded by signup_deadline, then 503). An error leaves nothing recorded.
  std::optional<replicator::couch_error> rekey_names();

  // POST /_signup with this JSON body. With an Idempotency-Key (policy::check_idempotency_key),
  // a repeated sign-up whose name is taken by the finished sign-up of the same key, name,
  // address and password (checked against the `_users` hash) is answered 201 again ("replayed":
  // true; within cfg.retention, while its intent is kept), and 503 while that sign-up is still
  // running: a client whose answer was lost retries. Any other repeat gets 409 as a stranger would.
  // An Idempotency-Key header sent empty is refused (400) like any other invalid key.
  identity_answer signup(const replicator::json& body, const std::optional<std::string>& idempotency_key = std::nullopt);
  // GET /_signup/available?name=&email= (either may be empty: not asked).
  identity_answer available(const std::string& name, const std::string& email);
  // PUT /_identity/email for an authenticated user.
  identity_answer change_email(const std::string& user, const replicator::json& body);

  // The front door's local routes: POST /_signup, GET /_signup/available?name=&email=,
  // PUT /_identity/email (the caller's own), PUT /_identity/name (405: names do not change,
  // a user's database is named after it).
  front::local_answer serve(const front::local_request& request);

  // ---- users made without couchgate (called on the provisioner's thread) ----
  //
  // For each live user the provisioner selected whose address is not the one its reservations
  // were last seen to hold: its `_users` document is read again (a feed row or a reconcile page
  // may be older than a change made since: acting on it could reserve an address the user no
  // longer has and release the one it has), then the `name/` and (with a valid `email`)
  // `email/` reservations pointing at it are made — a 409 by the same user is success, so a
  // crash anywhere is repaired by the next pass — and cfg.on_duplicate decides what a value
  // reserved by another user means. An address changed in `_users` is reserved anew and the old
  // one released. That holds for users made through sign-up (`couchgate_intent`) too: an
  // administrator, the app's back end, or the user where `_users` was opened to users, may
  // rewrite `email` there; `PUT /_identity/email` is not the only way an address changes. nullopt for a user whose reservations could not be
  // checked (server error: retried). The name reservation also records the address, so a
  // deleted user's address can be found again.
  std::vector<std::optional<policy::direct_verdict>> admit(const std::vector<const policy::user_doc*>& users);
  // A user deleted (or no longer selected): its conflicts are forgotten; if no user of that name
  // exists now, its reservations are released, only those pointing at it and held by no intent
  // in flight. False on a server error (retried).
  bool release_deleted(const std::string& name);
  // Values of users made without couchgate reserved by another user, as last seen:
  // [{user, field, value, holder}] (the admin API's GET /identities/conflicts).
  replicator::json conflicts() const;

  struct reconcile_report {
    std::size_t seen = 0, finished = 0, rolled_back = 0, forgotten = 0, failed = 0;
  };
  // One pass over every intent (paged).
  reconcile_report reconcile();
  // The reconciler's thread: a pass at once, then every cfg.reconcile_interval (0 = at start only).
  void start();
  void stop();
  ~identities();

 private:
  identity_answer fail_answer(int status, const std::string& error, const std::string& reason);
  // A repeated sign-up (same Idempotency-Key, name, address and password) whose name is held by
  // the sign-up that key made: its answer again; nullopt when the name is someone else's.
  std::optional<identity_answer> replay(const std::string& name, const std::string& name_key, const std::string& email,
                                        const std::string& password, const std::string& idempotency_key);
  // Moves the intent to `to` if it still has `rev`; the new rev, or nullopt (lost the race or error).
  // A move answered 202 is checked against the intent's other revisions (confirm_transition).
  std::optional<std::string> transition(replicator::json& intent, const std::string& rev, policy::intent_state to);
  // Gives an intent up: rolling_back (conditional on `rev`), its reservations among
  // `reservation_ids` released, rolled_back. Losing the first move means a reconciler took the
  // intent over; it releases what the intent holds.
  void abandon(replicator::json& intent, std::string& rev, const std::vector<std::string>& reservation_ids);
  // PUT a reservation; true when created (or already held by this intent; with no intent, by
  // this user), false when taken, error otherwise. A stale one in the
  // way (policy::reservation_stale) is deleted and the PUT made once more (`retried`).
  // A name reservation also records the user's address (`email`), so deleting the user finds it.
  replicator::result<bool> reserve(policy::unique_field f, const std::string& key, const std::string& user,
                                   const std::string& intent_id, std::string& rev_out, const std::string& email = {},
                                   bool retried = false);
  // Whether rekey_names() has finished, waiting for it until `until`.
  bool names_current(std::chrono::steady_clock::time_point until) const;
  // A reservation the server answered 202 Accepted (a cluster: fewer copies than the write quorum
  // stored it) is not won: a concurrent claim of the same value through another node may have
  // met the quorum, and both would become conflicting revisions whose winner neither chose.
  // Its own revision is withdrawn at once (deleted by that revision, so a conflicting claim's
  // stays and wins) and the claim fails as an unavailable server does (retried; a sign-up answers
  // 503): unique values before availability while the cluster cannot reach its quorum. A 201
  // is conclusive while the quorum is a majority of the copies (CouchDB's default, n/2 + 1).
  replicator::couch_error unconfirmed(const std::string& reservation_id, const std::string& rev);
  // Whether an existing reservation is stale (its intent and its user looked at on the server).
  bool stale(const replicator::json& reservation);
  // The user's name reservation (when this user holds it) records `email`: where the address is
  // found again when the user is deleted. True when done or nothing to do.
  bool record_address(const std::string& user_name, const std::string& email);
  // Deletes the reservation if (and only if) its holder_field ("intent" or "user") is holder:
  // only what an intent (or, for an e-mail change's old address, the user) owns is released.
  bool release(const std::string& reservation_id, const char* holder_field, const std::string& holder);
  // What the reconciler did with one intent; nullopt when it failed (retried next pass).
  std::optional<policy::intent_action> act(const replicator::json& intent);
  // An intent with several live revisions (transitions answered 202 on a cluster whose copies
  // did not see each other): all of them and the user are read, policy::resolve_fork decides,
  // the reservations are ensured when a rollback is dropped for a leaf that is not one, the other
  // revisions are deleted, and the one kept is acted on as usual.
  std::optional<policy::intent_action> settle_fork(const std::string& id, const std::string& name);
  // An intent's live revisions (by revision, its document) and whether the user carries it;
  // nullopt when either could not be read or a revision is malformed.
  struct intent_fork {
    std::vector<policy::intent_leaf> live;
    std::map<std::string, replicator::json> docs;
    bool user_ours = false;
    std::string user_email;  // the user's address, when it is this intent's
  };
  std::optional<intent_fork> read_fork(const std::string& id, const std::string& name);
  // Carries out a verdict on a fork: logged and counted, reservations ensured when asked, the
  // dropped revisions deleted. False when a step failed (the reconciler's next pass retries).
  bool apply_fork(const std::string& id, const intent_fork& fork, const policy::fork_verdict& verdict);
  // A move answered 202 (`own_rev`): true when it stands (alone, or kept over the revisions
  // another node wrote, which are then deleted), false when another revision stands (its own is
  // withdrawn: the caller lost the race, as on a 409). Best effort: a read that misses a copy
  // sees no fork, and the reconciler's pass over all revisions is what settles one.
  bool confirm_transition(const std::string& id, const std::string& name, const std::string& own_rev);
  // What an intent whose user stands must hold: a sign-up its name reserved (recording
  // `user_email`, the user's address now) and its address while the user still has it; a change
  // its new address reserved, the old one released and the new one recorded on the name
  // reservation. True unless a server error stopped it.
  bool ensure_held(const replicator::json& intent, const std::string& user_email);
  std::string new_intent_id(const char* kind);
  // The state of the intent a reservation names; nullopt when it names none or the intent is gone.
  replicator::result<std::optional<policy::intent_state>> intent_of(const replicator::json& reservation);
  // Where a reservation that exists stands for `user`. users_intent: the `couchgate_intent` of the
  // user's document; a reservation made by that sign-up is held without reading the intent.
  replicator::result<policy::claim> classify(const replicator::json& reservation, const std::string& user,
                                             const std::string& users_intent = {});
  // PUTs a reservation for a user made without couchgate (answer awaited by settle_claim: on
  // 409 the holder is read and classified).
  replicator::pending_json put_claim(policy::unique_field f, const std::string& key, const std::string& user,
                                     const std::string& email);
  replicator::result<policy::claim> settle_claim(replicator::pending_json& put, policy::unique_field f,
                                                 const std::string& key, const std::string& user,
                                                 const std::string& users_intent);
  // Releases the reservation of an address `user` no longer has (policy::may_release_old_address):
  // true when released or not this user's; false when it must wait (an intent still decides it)
  // or on a server error.
  bool release_old_address(const std::string& reservation_id, const std::string& user);
  // Whether `user`'s document, read now, has this (normalised) address ("" for none); false when
  // it cannot be read or is gone.
  bool still_has_address(const std::string& user, const std::string& email);
  // The key a user name's reservation is under (policy::name_key of the checked name); "" for a
  // name couchgate would not reserve.
  std::string name_key_of(const std::string& name) const;
  // The user's address as reservations name it (policy::normalise_email); "" when it has none or
  // an invalid one.
  std::string address_of(const policy::user_doc& u) const;
  // Deletes a reservation if policy::may_release_for_deleted allows (the user is gone).
  bool release_if_held_by_deleted(const std::string& reservation_id, const std::string& user);
  // `own`: the user was made through sign-up and its address was then changed in `_users`.
  void note_conflicts(const std::string& user, const std::string& email, const std::string& name_key, bool own,
                      const policy::direct_verdict& v, const std::map<policy::unique_field, std::string>& holders);
  // Records that `user`'s reservations hold `email` (normalised; "" for none): admit() passes over
  // the user until its address in `_users` is another.
  void settle(const std::string& user, const std::string& email);
  std::string stamp() const;

  replicator::couch_client& client_;
  identities_config cfg_;
  std::string users_db_;
  std::function<bool(const std::string&)> user_ready_;
  clock_fn now_;
  std::mutex rnd_mu_;
  std::atomic<bool> names_current_{false};  // rekey_names() finished: sign-ups may be taken
  replicator::stop_flag stop_;
  std::thread thread_;

  struct conflict {
    std::string value, holder;
  };
  mutable std::mutex direct_mu_;
  std::map<std::pair<std::string, policy::unique_field>, conflict> duplicate_values_;  // (user, field) -> what
  std::map<std::string, std::string> settled_;  // user -> address: reservations held, nothing to redo

  replicator::counter& signups_;
  replicator::counter& conflicts_;
  replicator::counter& rejected_;
  replicator::counter& errors_;
  replicator::counter& repaired_;
  replicator::histogram& latency_;
  replicator::counter& duplicates_found_;
  replicator::gauge& duplicates_;
  replicator::counter& unconfirmed_;
  replicator::counter& forks_;
  replicator::counter& unconfirmed_intents_;
};

}  // namespace couchgate::gateway
