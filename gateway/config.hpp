#pragma once
// Owns: couchgate's configuration: the structs with their defaults, the YAML parser that
// rejects unknown keys and collects every problem (with key path and line), and the
// environment overrides for the connection (COUCHDB_URL, COUCHDB_USER, COUCHDB_PASSWORD).
// Exceptions are fine here: this runs at startup only.
#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "gateway/front/front_config.hpp"
#include "policy/id_map.hpp"
#include "policy/identity.hpp"
#include "policy/security.hpp"
#include "policy/users.hpp"
#include "replicator/transport/session_auth.hpp"

namespace couchgate::gateway {

using std::chrono::milliseconds;
using std::chrono::seconds;

struct couchdb_config {
  std::string url = "http://127.0.0.1:5984";  // never contains credentials after load
  std::string username;                         // "" = anonymous
  std::string password;                         // secret: never logged or printed
  std::string password_file;                    // read at load time when set
  // Which settings the user name and password came from, for messages about a refused credential
  // (e.g. "the environment variables COUCHDB_USER and COUCHDB_PASSWORD"); never a value. "" = none.
  std::string credential_source;
  seconds request_timeout{30};
  seconds feed_timeout{60};        // longpoll `timeout`; the client read timeout is feed_timeout + 15 s
  milliseconds heartbeat{10000};   // feed heartbeat; no byte for 3 heartbeats = dead connection
  // cookie: one POST /_session, then the AuthSession cookie (Basic where the server has no
  // cookie authentication); basic: Basic on every request. See session_auth.hpp.
  replicator::auth_mode auth = replicator::auth_mode::cookie;
  bool operator==(const couchdb_config&) const = default;
};

struct provisioning_config {
  bool enabled = true;
  std::string users_db = "_users";
  std::string db_prefix = "userdb-";
  policy::criteria select{};
  policy::security_template security{};
  policy::on_delete on_delete = policy::on_delete::keep;
  seconds reconcile_interval{600};   // 0 = only at start
  std::size_t batch = 500;           // _users changes per request
  // CouchDB's q (shards) and n (replicas) for the user databases couchgate creates (provisioning
  // and restore); 0 = the server's [cluster] default. q=1 by default: CouchDB's developers advise
  // it for per-user databases (one shard file each, half the shards to keep open: issue 18).
  std::size_t q = 1;
  std::size_t n = 0;
  bool operator==(const provisioning_config&) const = default;
};

enum class detection_mode { automatic, db_updates, sweep };

struct fanin_config {
  bool enabled = true;
  std::string central_db = "couchgate-central";
  policy::id_mode ids = policy::id_mode::namespaced;
  std::size_t max_connections = 8;   // cap on sockets to CouchDB for work; the feeds get theirs on top (connection_budget.hpp)
  std::size_t max_active = 64;       // databases in flight
  std::size_t rounds = 2;            // replication rounds in flight; each takes max_active / rounds databases
  std::size_t batch_docs = 1000;     // docs per central _bulk_docs
  std::size_t batch_bytes = 8u << 20;
  // Memory for documents with attachments being copied, fan-in and restore together (their bytes
  // are held about four times while copied; see replicator/byte_budget.hpp). A larger document is
  // copied alone.
  std::size_t max_bytes_in_flight = 128u << 20;
  std::size_t turn_docs = 500;       // changes per database per turn (fairness cap)
  // Ask _changes for document bodies and write first-generation revisions straight from them,
  // skipping the _bulk_get (adaptive per database; see replicator::include_docs_next).
  bool inline_docs = true;
  detection_mode detection = detection_mode::automatic;
  bool create_global_changes = true;
  // Install _design/couchgate, a validate_doc_update that refuses every non-admin write to the
  // central database (defence in depth behind its admin-only _security). Every central write
  // then runs through the server's JavaScript engine (2.6x slower fan-in measured on CouchDB
  // 3.5.2), so it is off unless asked for; false also removes a guard installed earlier.
  bool central_guard = false;
  double sweep_rate = 200;           // databases checked per second in sweep mode
  milliseconds sweep_interval{5000}; // minimum time between two sweeps of the same database
  milliseconds node_check_interval{60000};  // db_updates mode: ask whether a node restarted (0: never)
  milliseconds verify_interval{std::chrono::minutes(30)};  // db_updates mode: read every source and live feed again (0: never)
  milliseconds checkpoint_interval{1000};  // checkpoints written to the state db at most this often (0 = every round)
  milliseconds target_check_interval{5000};  // central marker / state db looked at this often (0 = never)
  bool operator==(const fanin_config&) const = default;
};

struct shared_config {
  bool enabled = false;
  std::string db = "shared";
  std::vector<std::string> member_roles{};  // required (non-empty) when enabled: empty members would make it public
  std::vector<std::string> admin_roles{};
  bool operator==(const shared_config&) const = default;
};

struct admin_api_config {
  std::string address = "127.0.0.1";
  int port = 8490;                   // 0 = pick a free port (logged, and written to port_file)
  std::string port_file;             // optional: the bound port is written here (tests)
  // Bearer token required for everything but /healthz and /readyz (Authorization: Bearer ...).
  // Secret: never logged or printed. From `token`, `token_file` (read at load time) or the
  // environment variable COUCHGATE_ADMIN_TOKEN (wins). Required when `address` is not a
  // loopback address, unless allow_unauthenticated says otherwise explicitly.
  std::string token;
  std::string token_file;
  bool allow_unauthenticated = false;
  bool operator==(const admin_api_config&) const = default;
};

// Sign-up with unique user names and e-mail addresses (gateway/identities.hpp).
struct identities_config {
  bool enabled = false;
  std::string db = "couchgate-identities";  // intents and reservations; admin-only _security
  policy::identity_rules rules{};
  std::vector<std::string> profile_fields{};  // extra sign-up fields copied into the _users document
  std::vector<std::string> roles{};           // roles a signed-up user gets
  seconds signup_deadline{20};     // a sign-up still short of creating the user by then gives up
  seconds provision_wait{10};      // how long a sign-up waits for the user's database
  seconds intent_timeout{120};     // the reconciler repairs intents older than this (> deadline + wait)
  seconds retention{86400};        // finished intents are kept this long
  seconds reconcile_interval{60};
  // Sign-up and availability requests per client address per rate_window (429 with Retry-After above).
  std::size_t rate_limit = 20;
  seconds rate_window{60};
  // A user made directly in _users whose address (or name) another user has reserved:
  // flag = provisioned and listed at the admin API's /identities/conflicts; exclude = not
  // provisioned until resolved.
  policy::on_duplicate on_duplicate = policy::on_duplicate::flag;
  bool operator==(const identities_config&) const = default;
};

enum class log_format { text, json };
struct log_config {
  std::string level = "info";        // trace debug info warn error critical off
  log_format format = log_format::text;
  bool operator==(const log_config&) const = default;
};

struct config {
  couchdb_config couchdb{};
  std::string state_db = "couchgate";
  provisioning_config provisioning{};
  fanin_config fanin{};
  shared_config shared{};
  admin_api_config admin_api{};
  identities_config identities{};
  log_config log{};
  front_config front{};  // the clients' front door (gateway/front/)
  bool operator==(const config&) const = default;
};

struct config_error {
  std::string path;   // dotted key path, e.g. "fanin.max_connections"
  int line = 0;       // 1-based, 0 when unknown
  std::string message;
};

// Every problem found, not only the first; an empty vector means success.
struct load_result {
  config cfg;
  std::vector<config_error> errors;
};

using env_lookup = std::function<std::optional<std::string>(const std::string&)>;
env_lookup process_env();

// Parse YAML text (name used in messages), then apply environment overrides, then validate.
load_result load_config_text(const std::string& yaml_text, const env_lookup& env);
load_result load_config_file(const std::string& path, const env_lookup& env);
// Defaults + environment only (the embedded default when no file is given).
load_result default_config(const env_lookup& env);

// "file:LINE: path: message" lines, one per error.
std::string format_errors(const std::string& file, const std::vector<config_error>& errors);

// SIGHUP. Which keys a reload applies in place (live) and which need a restart is declared per
// key in gateway/config_table.cpp. The dotted keys that differ between the running and the
// freshly loaded configuration, split by that rule, in the table's order. Names only, never
// values (`couchdb.password` is a secret).
std::vector<std::string> live_changes(const config& running, const config& fresh);
std::vector<std::string> restart_needed(const config& running, const config& fresh);
// Copies the keys the table marks live from fresh into running, member by member (other threads
// may be reading the keys that stay).
void apply_live_keys(config& running, const config& fresh);

// True for addresses only this machine can reach: 127.0.0.0/8, ::1, localhost.
bool is_loopback_address(const std::string& address);

// URL without userinfo, for logs and API output.
std::string redact_url(const std::string& url);

}  // namespace couchgate::gateway
