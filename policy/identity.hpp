#pragma once
// Owns: the rules for unique identities (sign-up, changing a unique field) as pure functions:
// which user names, passwords and e-mail addresses are acceptable, how a unique value becomes
// the `_id` of its reservation document, and the sign-up intent's state machine — what the
// reconciler must do with an intent it finds, given what it observed.
//
// The pattern: CouchDB's only unique key is a document's `_id`, so each unique value has one
// reservation document whose `_id` is the (normalised) value and which names the user and the
// intent that holds it. Each step is idempotent and every transition of the intent is a
// conditional write (its `_rev`), so two processes — the sign-up in flight and a reconciler,
// or two couchgates — can never both win a transition.
#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace couchgate::policy {

struct identity_rules {
  std::size_t max_name_bytes = 64;       // UTF-8 bytes of the user name
  std::size_t min_password_chars = 8;    // code points
  std::size_t max_password_bytes = 1024; // CouchDB hashes it with PBKDF2: bound the work
  std::size_t max_email_bytes = 254;     // RFC 5321 path limit
  bool operator==(const identity_rules&) const = default;
};

// A value that passed the rules, or why not (one line, never quoting a password).
struct checked_value {
  std::string value;
  std::string error;
  bool ok() const { return error.empty(); }
};

// A user name: valid UTF-8, Unicode NFC (normalised here: the name stored is the NFC form),
// no control characters, no invisible format characters (zero-width, bidirectional overrides,
// soft hyphen: two names that look the same would be two names), no white space (any Unicode
// white space) at either end, no ':' (CouchDB 3.5 refuses it), not starting with '_' (CouchDB's
// reserved prefix), not empty, at most max_name_bytes.
checked_value check_user_name(std::string_view name, const identity_rules& rules);
// Password: valid UTF-8, min_password_chars code points, max_password_bytes bytes. The value
// returned is the password unchanged.
checked_value check_password(std::string_view password, const identity_rules& rules);
// E-mail: trimmed, NFKC (compatibility forms such as full-width letters become the letters they
// stand for), lower-cased (full Unicode lower case, not folded: "ß" stays); then local@domain with exactly one
// '@', a non-empty local part of at most 64 bytes, no white space or control characters, a domain
// of dot-separated labels (letters, digits, '-', non-ASCII; no empty label, not starting or
// ending with '-'), at most max_email_bytes in all.
checked_value normalise_email(std::string_view email, const identity_rules& rules);
// A sign-up's Idempotency-Key header: 1 to 128 visible ASCII characters (a UUID, say), kept as is.
checked_value check_idempotency_key(std::string_view key);

// The key under which a user name is unique: NFKC and full case folding (Unicode's compatibility
// caseless form, as UTS #39 compares identifiers), so "Alice" and "alice", "ａｌｉｃｅ" in
// full-width letters, "Straße" and "STRASSE", or two spellings of "é" cannot both be taken — one
// would impersonate the other. Reservations made under an earlier key (NFC and lower case) differ
// only for names with such characters; identities::rekey_names copies them under this key at start.
std::string name_key(std::string_view checked_name);
// The key before NFKC (NFC and lower case): what reservations made then are named by, so a
// deleted user's old reservation is found and released too.
std::string legacy_name_key(std::string_view checked_name);

// Reservation document ids: "name/<name_key>", "email/<normalised address>".
enum class unique_field { name, email };
const char* to_string(unique_field f);
std::string reservation_id(unique_field f, std::string_view key);
// How a unique value is named in logs: a name key as is (every log line names users), an e-mail
// address masked to its local part's first character and its domain ("a…@example.com"; "…" for
// something without '@'): an address is personal data, and the operator who needs it reads it
// from the user's `_users` document. loggable_reservation_id does the same for a reservation id
// ("email/a…@example.com"; any other id as is).
std::string loggable_value(unique_field f, std::string_view key);
std::string loggable_reservation_id(std::string_view id);

// ---- the sign-up intent ----
//
//   pending ──reserve both──▶ reserved ──PUT _users──▶ done
//      │                         │
//      └──────(reconciler, or a taken value)──▶ rolling_back ──release, delete user──▶ rolled_back
//
// The sign-up writes `pending`, reserves, moves to `reserved` (a 409 there means a reconciler
// took the intent over: abort), creates the `_users` document (marked with the intent id), and
// moves to `done`; if that last move fails with 409, the user it created is deleted again.
// A reconciler acts only on intents older than a timeout that is longer than the sign-up's own
// deadline, so it never races a healthy sign-up, and the conditional writes settle the rest.
enum class intent_state { pending, reserved, done, rolling_back, rolled_back };
const char* to_string(intent_state s);
std::optional<intent_state> intent_state_from(std::string_view s);

// What the reconciler saw for one intent.
struct intent_facts {
  intent_state state = intent_state::pending;
  std::chrono::system_clock::time_point updated{};
  bool user_exists = false;           // a _users doc for the name exists ...
  bool user_from_this_intent = false; // ... and carries this intent's id
};

enum class intent_action {
  leave,        // young, or finished: nothing to do
  finish,       // the user exists (made by this intent): ensure its reservations, mark done
  roll_back,    // no user of this intent: move to rolling_back, release what it holds
  release,      // already rolling_back: release what it holds (and the user it made), mark rolled_back
  forget,       // an old done / rolled_back intent: delete the intent document
};
const char* to_string(intent_action a);

intent_action decide_intent(const intent_facts& f, std::chrono::system_clock::time_point now,
                            std::chrono::seconds timeout, std::chrono::seconds retention);

// ---- an intent with several live revisions ----
//
// On a cluster a transition answered 202 reached fewer than `w` copies: another writer (the
// reconciler elsewhere, a sign-up's own rollback) may extend the same revision on other copies,
// and once the copies meet the intent has two live leaves. CouchDB then shows one of them (the
// highest generation, then the greatest revision string), which says nothing about which
// transition really happened: a `done` leaf losing to a rollback would have the reconciler delete
// a user who was answered 201. So a forked intent is decided on all its live leaves and the user:
//   - the user exists and was made by this intent: done > reserved > pending > rolled_back >
//     rolling_back (the sign-up reached its user; a rollback beside it is the mistake);
//   - otherwise: rolled_back > rolling_back > done > reserved > pending (nothing of it stands);
//   - a tie goes to CouchDB's own winner.
// The kept leaf stays, the others are deleted by revision; when a rollback leaf is dropped for a
// leaf that is not one, the intent's reservations are ensured first (the rollback may have
// released them). A pending, reserved or rolling_back leaf younger than the timeout that would be
// dropped means its writer (a sign-up, a reconciler releasing) may still be at work: nothing is
// decided yet (a young leaf that is kept needs no wait).
struct intent_leaf {
  std::string rev;
  intent_state state = intent_state::pending;
  std::chrono::system_clock::time_point updated{};
};
// CouchDB's winner order among live leaves: true when `a` would lose to `b`.
bool couch_leaf_before(const intent_leaf& a, const intent_leaf& b);

struct fork_verdict {
  bool wait = false;                 // a young pending / reserved / rolling_back leaf would go: decide later
  std::string keep;                  // the leaf that stays (empty when waiting or no leaves)
  std::vector<std::string> drop;     // the leaves to delete, by revision
  bool ensure_reservations = false;  // a rollback leaf dropped for one that is not: reserve again
};
// own_rev: the leaf the caller just wrote itself (a transition answered 202 checking where it
// stands), which never makes it wait however young.
fork_verdict resolve_fork(const std::vector<intent_leaf>& live, bool user_from_this_intent,
                          std::chrono::system_clock::time_point now, std::chrono::seconds timeout,
                          std::string_view own_rev = {});

// ---- users made without couchgate ----
//
// A user written straight into `_users` (no `couchgate_intent`) gets its reservations from the
// provisioner: `name/<name_key>` and, when the document has a valid `email`, `email/<address>`,
// each pointing at the user (no intent). A value already reserved by someone else is a
// conflict, handled by `identities.on_duplicate`.
enum class on_duplicate {
  flag,     // provisioned anyway; the conflict is logged once, counted and listed
  exclude,  // not provisioned until the conflict is resolved
};
const char* to_string(on_duplicate d);
std::optional<on_duplicate> on_duplicate_from(std::string_view s);

// What a reservation the provisioner wants for a user turned out to be.
enum class claim {
  held,       // points at this user (made now, earlier, or by a finished intent of this name)
  in_flight,  // points at this user's name but an intent still runs (a sign-up of that name
              // racing a user made directly): settled by that intent, looked at again later
  taken,      // points at another user: a conflict
};
// Classifies a reservation that exists: `holder` is its `user`; `intent` is the state of the
// intent it names (nullopt: it names none, or that intent document is gone).
claim classify_claim(std::string_view holder, std::string_view user, std::optional<intent_state> intent);

struct direct_verdict {
  bool provision = true;                 // the provisioner may create the user's database
  bool look_again = false;               // a conflict or an intent in flight: re-checked later
  std::vector<unique_field> conflicts;   // the fields reserved by another user
};
// email: nullopt when the user has no (valid) address.
direct_verdict decide_direct_user(claim name, std::optional<claim> email, on_duplicate mode);

// Whether a deleted user's reservation may be released: only when the user is really gone now
// (a feed entry may be older than a user made again since), the reservation points at that user,
// and no intent that holds it is still running (a sign-up of the same name in flight owns it).
bool may_release_for_deleted(bool user_exists_now, std::string_view holder, std::string_view user,
                             std::optional<intent_state> intent);
// Whether the reservation of an address a live user no longer has may be released: it is the
// user's, and no intent naming it is pending, reserved or rolling back (such an intent still
// decides what becomes of it).
bool may_release_old_address(std::string_view holder, std::string_view user, std::optional<intent_state> intent);

// Whether a reservation a sign-up or an address change made (it names its intent) is stale, so a
// new claim may delete it (by the revision read) and take the value: its intent was rolled back,
// or is gone (forgotten after its retention), and the user it names does not exist now. A
// reservation whose PUT reached the server only after its intent was rolled back (a slow
// answer, a request that waited long in the pool) is such one: nothing else ever releases it.
// intent: the intent's state, nullopt when its document is gone. A reservation with no intent (a
// user made without couchgate) is never stale here: its user's deletion releases it.
bool reservation_stale(bool names_intent, std::optional<intent_state> intent, bool user_exists);

}  // namespace couchgate::policy
