// Owns: the declared configuration table (see config_table.hpp) and the example generated from it.
//
// HOW TO ADD A KEY (one place: the `table` below; nothing else to edit for parsing, reload or docs):
//  1. Add the member, with its default as initialiser, to the typed struct that code reads
//     (gateway/config.hpp or gateway/front/front_config.hpp).
//  2. Add one entry to `table`, after its section's other keys, in the order the example shows:
//       key<&config::fanin, &fanin_config::my_key>({.name = "fanin.my_key", .kind = key_kind::integer,
//           .on_reload = reload::live, .min = 1, .max = 100, .help = "What it does (1..100)."}),
//     The member pointers bind the entry to the struct member (its type picks the parser); the
//     fields, in this order, are: name, kind, on_reload, min, max, choices, check, secret,
//     note, help (designated initialisers must keep that order; leave out what does not apply).
//     A new section is a {.name = "x", .kind = key_kind::section, .help = ...} entry before its keys.
//  3. reload::live only when the code reading the key picks a new value up on SIGHUP; else
//     restart. The daemon's reload_config() copies every live key into the running config
//     (apply_live_keys) and hands the running parts their new values: log -> setup_logging,
//     provisioning -> provisioner::update_policy, front.* / identities.rate_* ->
//     front_door::apply_limits (server_limits_of and forwarder_options_of feed the listener and
//     forwarder::apply_limits: a new live front-door key is read there), certificates ->
//     front_door::reload_tls. A reload names every changed restart key in one warning.
//  4. Run `build/couchgate config-example > deploy/couchgate.example.yaml` (the unit test
//     "config table: the committed example is the generated one" fails until you do).
//  Checks that involve several keys (a clash of database names, TLS needs a certificate) stay in
//  config.cpp's validate().
#include "gateway/config_table.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <type_traits>

#include "gateway/front/cidr.hpp"

namespace couchgate::gateway {
namespace {

// ---------------------------------------------------------------------------------------------
// Binding a key to its member: the member's type picks the reader and the example's format.

template <typename T>
void read_into(value_reader& r, T& out) {
  if constexpr (std::is_same_v<T, bool>) {
    r.read_bool(out);
  } else if constexpr (std::is_same_v<T, std::string>) {
    r.read_string(out);
  } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
    r.read_list(out);
  } else if constexpr (std::is_same_v<T, double>) {
    if (const auto v = r.read_number()) out = *v;
  } else if constexpr (std::is_same_v<T, std::chrono::seconds>) {
    if (const auto ms = r.read_duration_ms()) out = std::chrono::seconds{*ms / 1000};
  } else if constexpr (std::is_same_v<T, std::chrono::milliseconds>) {
    if (const auto ms = r.read_duration_ms()) out = std::chrono::milliseconds{*ms};
  } else if constexpr (std::is_enum_v<T>) {
    if (const auto v = r.read_choice()) out = static_cast<T>(*v);
  } else {
    static_assert(std::is_integral_v<T>, "a config key's member type has no reader: add one to read_into");
    if (const auto v = r.read_integer()) out = static_cast<T>(*v);
  }
}

// A string as a YAML scalar: plain when it cannot be read as anything else, else single-quoted.
std::string yaml_scalar(const std::string& s) {
  const bool plain = !s.empty() && s.front() != '-' && s.front() != ':' && s.back() != ':' &&
                     std::all_of(s.begin(), s.end(), [](char c) {
                       return std::isalnum(static_cast<unsigned char>(c)) || std::strchr("_./:@+-", c) != nullptr;
                     });
  if (plain) return s;
  if (s.empty()) return "\"\"";
  std::string out = "'";
  for (const char c : s) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

template <typename T>
std::string show_value(const key_spec& k, const T& v) {
  if constexpr (std::is_same_v<T, bool>) {
    return v ? "true" : "false";
  } else if constexpr (std::is_same_v<T, std::string>) {
    return yaml_scalar(v);
  } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
    std::string out = "[";
    for (std::size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + yaml_scalar(v[i]);
    return out + "]";
  } else if constexpr (std::is_same_v<T, double>) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", v);
    return buf;
  } else if constexpr (std::is_same_v<T, std::chrono::seconds> || std::is_same_v<T, std::chrono::milliseconds>) {
    return format_duration_ms(std::chrono::duration_cast<std::chrono::milliseconds>(v).count());
  } else if constexpr (std::is_enum_v<T>) {
    for (const auto& c : k.choices) {
      if (c.value == static_cast<int>(v)) return std::string(c.name);
    }
    return "?";
  } else {
    static_assert(std::is_integral_v<T>);
    return k.kind == key_kind::size ? format_size_bytes(static_cast<long long>(v)) : std::to_string(v);
  }
}

template <auto... Path>
struct bound {
  static auto& ref(config& c) { return (c .* ... .* Path); }
  static const auto& ref(const config& c) { return (c .* ... .* Path); }
  static void read(value_reader& r, config& c) { read_into(r, ref(c)); }
  static bool same(const config& a, const config& b) { return ref(a) == ref(b); }
  static void copy(config& to, const config& from) { ref(to) = ref(from); }
  static std::string show(const key_spec& k, const config& c) { return show_value(k, ref(c)); }
};

template <auto... Path>
constexpr key_spec key(key_spec k) {
  using b = bound<Path...>;
  k.read = &b::read;
  k.same = &b::same;
  k.copy = &b::copy;
  k.show = &b::show;
  return k;
}

constexpr key_spec section(std::string_view name, std::string_view help = {}) {
  key_spec k;
  k.name = name;
  k.kind = key_kind::section;
  k.help = help;
  return k;
}

// ---------------------------------------------------------------------------------------------
// Choices and custom checks

constexpr key_choice on_delete_choices[] = {{"keep", static_cast<int>(policy::on_delete::keep)},
                                            {"delete", static_cast<int>(policy::on_delete::remove)}};
constexpr key_choice auth_choices[] = {{"cookie", static_cast<int>(replicator::auth_mode::cookie)},
                                       {"basic", static_cast<int>(replicator::auth_mode::basic)}};
constexpr key_choice id_mode_choices[] = {{"namespaced", static_cast<int>(policy::id_mode::namespaced)},
                                          {"unchanged", static_cast<int>(policy::id_mode::unchanged)}};
constexpr key_choice detection_choices[] = {{"auto", static_cast<int>(detection_mode::automatic)},
                                            {"db_updates", static_cast<int>(detection_mode::db_updates)},
                                            {"sweep", static_cast<int>(detection_mode::sweep)}};
constexpr key_choice on_duplicate_choices[] = {{"flag", static_cast<int>(policy::on_duplicate::flag)},
                                               {"exclude", static_cast<int>(policy::on_duplicate::exclude)}};
constexpr key_choice log_level_choices[] = {{"trace", 0}, {"debug", 1}, {"info", 2}, {"warn", 3},
                                            {"error", 4}, {"critical", 5}, {"off", 6}};
constexpr key_choice log_format_choices[] = {{"text", static_cast<int>(log_format::text)},
                                             {"json", static_cast<int>(log_format::json)}};

const char* not_empty_address(std::string_view v) {
  return v.empty() ? "must not be empty (e.g. 127.0.0.1, ::1 or 0.0.0.0)" : nullptr;
}

const char* http_header_name(std::string_view v) {
  const bool token = !v.empty() && std::all_of(v.begin(), v.end(), [](char ch) {
    return std::isalnum(static_cast<unsigned char>(ch)) || std::strchr("!#$%&'*+-.^_`|~", ch) != nullptr;
  });
  return token ? nullptr : "expected an HTTP header name (e.g. X-Forwarded-Proto)";
}

const char* cidr_range(std::string_view v) {
  return front::parse_cidr(v) ? nullptr : "expected an IP address or CIDR range (e.g. 10.0.0.0/8, 127.0.0.1, fd00::/8)";
}

using pc = provisioning_config;
using fc = fanin_config;
using sc = shared_config;
using ic = identities_config;
using ac = admin_api_config;
using lc = log_config;
using cc = couchdb_config;
using frc = front_config;
constexpr auto live = reload::live;
using k = key_kind;

// ---------------------------------------------------------------------------------------------
// The table. Order = the example's order = the order a reload names changed keys in.

constexpr key_spec table[] = {
    section("couchdb"),
    key<&config::couchdb, &cc::url>(
        {.name = "couchdb.url",
         .help = "The CouchDB server (3.x), http:// or https://, optionally with a path when CouchDB sits behind a "
                 "reverse proxy. user:password@ in the URL is accepted (percent-encode special characters), split "
                 "out into username/password and removed from the URL."}),
    key<&config::couchdb, &cc::username>(
        {.name = "couchdb.username",
         .help = "A server admin. Empty = anonymous (only useful against an \"admin party\" test server)."}),
    key<&config::couchdb, &cc::password>(
        {.name = "couchdb.password",
         .secret = true,
         .help = "Discouraged: prefer password_file or the COUCHDB_PASSWORD environment variable. Empty = not set. "
                 "Cannot be combined with password_file."}),
    key<&config::couchdb, &cc::password_file>(
        {.name = "couchdb.password_file",
         .help = "A file whose content is the password (a trailing newline is ignored), e.g. a systemd credential "
                 "or a container secret such as /run/secrets/couchdb. Empty = not set."}),
    key<&config::couchdb, &cc::request_timeout>({.name = "couchdb.request_timeout",
                                                 .kind = k::duration_s,
                                                 .min = 1,
                                                 .help = "Timeout for an ordinary request to CouchDB (at least 1s)."}),
    key<&config::couchdb, &cc::feed_timeout>({.name = "couchdb.feed_timeout",
                                              .kind = k::duration_s,
                                              .min = 1,
                                              .help = "Longpoll timeout of the change feeds (at least 1s)."}),
    key<&config::couchdb, &cc::heartbeat>(
        {.name = "couchdb.heartbeat",
         .kind = k::duration_ms,
         .min = 1,
         .help = "Heartbeat of the change feeds; no byte for 3 heartbeats means the connection is dead."}),
    key<&config::couchdb, &cc::auth>(
        {.name = "couchdb.auth",
         .kind = k::choice,
         .choices = auth_choices,
         .help = "How couchgate authenticates: cookie = one POST /_session, then CouchDB's session cookie, renewed "
                 "before it expires (Basic where the server has no cookie authentication); basic = Basic on every "
                 "request."}),

    key<&config::state_db>({.name = "state_db", .help = "couchgate's own database (checkpoints and state)."}),

    section("provisioning", "One database per user of the users database, like CouchDB's couch_peruser."),
    key<&config::provisioning, &pc::enabled>({.name = "provisioning.enabled", .kind = k::boolean}),
    key<&config::provisioning, &pc::users_db>(
        {.name = "provisioning.users_db", .help = "The authentication database whose users get a database."}),
    key<&config::provisioning, &pc::db_prefix>(
        {.name = "provisioning.db_prefix",
         .help = "A user's database is db_prefix + the lowercase hex of the UTF-8 user name (couch_peruser's rule, "
                 "so that clients can compute it)."}),
    section("provisioning.select",
            "Which users get a database. Empty lists mean \"no requirement\"; every non-empty condition must hold."),
    key<&config::provisioning, &pc::select, &policy::criteria::roles_any>(
        {.name = "provisioning.select.roles_any",
         .kind = k::string_list,
         .on_reload = live,
         .help = "The user has at least one of these roles."}),
    key<&config::provisioning, &pc::select, &policy::criteria::roles_all>(
        {.name = "provisioning.select.roles_all",
         .kind = k::string_list,
         .on_reload = live,
         .help = "The user has all of these roles."}),
    key<&config::provisioning, &pc::select, &policy::criteria::roles_none>(
        {.name = "provisioning.select.roles_none",
         .kind = k::string_list,
         .on_reload = live,
         .help = "The user has none of these roles."}),
    key<&config::provisioning, &pc::select, &policy::criteria::names>({.name = "provisioning.select.names",
                                                                        .kind = k::string_list,
                                                                        .on_reload = live,
                                                                        .help = "Only these user names."}),
    section("provisioning.security", "The _security object of every user database. The owner is always a member."),
    key<&config::provisioning, &pc::security, &policy::security_template::owner_is_admin>(
        {.name = "provisioning.security.owner_is_admin",
         .kind = k::boolean,
         .on_reload = live,
         .help = "The owner is also an admin of their database."}),
    key<&config::provisioning, &pc::security, &policy::security_template::member_names>(
        {.name = "provisioning.security.member_names", .kind = k::string_list, .on_reload = live}),
    key<&config::provisioning, &pc::security, &policy::security_template::member_roles>(
        {.name = "provisioning.security.member_roles", .kind = k::string_list, .on_reload = live}),
    key<&config::provisioning, &pc::security, &policy::security_template::admin_names>(
        {.name = "provisioning.security.admin_names", .kind = k::string_list, .on_reload = live}),
    key<&config::provisioning, &pc::security, &policy::security_template::admin_roles>(
        {.name = "provisioning.security.admin_roles", .kind = k::string_list, .on_reload = live}),
    key<&config::provisioning, &pc::on_delete>(
        {.name = "provisioning.on_delete",
         .kind = k::choice,
         .on_reload = live,
         .choices = on_delete_choices,
         .help = "When a user is deleted: keep = the database stays and the owner is removed from its _security; "
                 "delete = the database is deleted. A user who is no longer selected (a role taken away) is always "
                 "handled as keep."}),
    key<&config::provisioning, &pc::reconcile_interval>(
        {.name = "provisioning.reconcile_interval",
         .kind = k::duration_s,
         .on_reload = live,
         .help = "Full comparison of the users with the databases, besides following the changes feed. 0 = only "
                 "at start."}),
    key<&config::provisioning, &pc::batch>({.name = "provisioning.batch",
                                            .kind = k::integer,
                                            .min = 1,
                                            .max = 10000,
                                            .help = "_users changes per request (1..10000)."}),
    key<&config::provisioning, &pc::q>(
        {.name = "provisioning.q",
         .kind = k::integer,
         .min = 0,
         .max = 1024,
         .help = "Shards (q, 0..1024) and replicas (n, 0..16) of the user databases couchgate creates "
                 "(provisioning and restore); 0 = the server's [cluster] q / n. Thousands of small databases are "
                 "best with q: 1 (the default: one shard file each instead of CouchDB's default 2, so half as many "
                 "shards for the server's max_dbs_open to keep open)."}),
    key<&config::provisioning, &pc::n>({.name = "provisioning.n", .kind = k::integer, .min = 0, .max = 16}),

    section("fanin", "Replication of every user database (and the shared one) into one central database."),
    key<&config::fanin, &fc::enabled>({.name = "fanin.enabled", .kind = k::boolean}),
    key<&config::fanin, &fc::central_db>({.name = "fanin.central_db"}),
    key<&config::fanin, &fc::ids>(
        {.name = "fanin.ids",
         .kind = k::choice,
         .choices = id_mode_choices,
         .help = "namespaced = central ids are \"<user>:<doc id>\" (design documents of users become plain data); "
                 "unchanged = ids are copied as they are (design documents are not copied)."}),
    key<&config::fanin, &fc::max_connections>(
        {.name = "fanin.max_connections",
         .kind = k::integer,
         .min = 3,
         .max = 1024,
         .note = "replication, provisioning and checkpoints share them",
         .help = "Hard cap on connections to CouchDB for work (replication, provisioning, checkpoints): 3..1024. "
                 "The change feeds' longpolls (_users with provisioning on, _db_updates with fan-in on unless "
                 "detection is sweep) get one more each, so they never take the work's sockets."}),
    key<&config::fanin, &fc::max_active>({.name = "fanin.max_active",
                                          .kind = k::integer,
                                          .min = 1,
                                          .max = std::nullopt,
                                          .help = "User databases being replicated at the same time (at least 1)."}),
    key<&config::fanin, &fc::rounds>(
        {.name = "fanin.rounds",
         .kind = k::integer,
         .min = 1,
         .max = 64,
         .help = "Replication rounds in flight at once (1..64); each round takes up to max_active / rounds dirty "
                 "databases and makes one coalesced write to the central database."}),
    key<&config::fanin, &fc::batch_docs>(
        {.name = "fanin.batch_docs",
         .kind = k::integer,
         .min = 1,
         .max = 100000,
         .help = "Documents per write to the central database (1..100000) and their size limit (at least 64KiB)."}),
    key<&config::fanin, &fc::batch_bytes>({.name = "fanin.batch_bytes", .kind = k::size, .min = 64 * 1024}),
    key<&config::fanin, &fc::max_bytes_in_flight>(
        {.name = "fanin.max_bytes_in_flight",
         .kind = k::size,
         .min = 1 << 20,
         .help = "Memory for documents with attachments being copied (fan-in and restore): their bodies travel as "
                 "base64 and are held about four times while copied, so they are fetched apart and copied a group "
                 "at a time under this bound; a larger document is copied alone (at least 1MiB)."}),
    key<&config::fanin, &fc::turn_docs>(
        {.name = "fanin.turn_docs",
         .kind = k::integer,
         .min = 1,
         .max = std::nullopt,
         .help = "Changes taken from one database before others get their turn (at least 1)."}),
    key<&config::fanin, &fc::inline_docs>(
        {.name = "fanin.inline_docs",
         .kind = k::boolean,
         .help = "Ask each _changes for document bodies, so a new document (first revision, no attachments) is "
                 "written without a second request to its database. Decided per database from its last turn: off "
                 "while most of its changes are edits, whose history must be fetched anyway."}),
    key<&config::fanin, &fc::detection>(
        {.name = "fanin.detection",
         .kind = k::choice,
         .choices = detection_choices,
         .help = "How changed databases are found: db_updates = the _db_updates feed (needs the _global_changes "
                 "database); sweep = check every database in turn; auto = db_updates when it works, sweep "
                 "otherwise."}),
    key<&config::fanin, &fc::create_global_changes>(
        {.name = "fanin.create_global_changes",
         .kind = k::boolean,
         .help = "Create the _global_changes database when it is missing (needed by db_updates)."}),
    key<&config::fanin, &fc::central_guard>(
        {.name = "fanin.central_guard",
         .kind = k::boolean,
         .help = "Install _design/couchgate in the central database: a validate_doc_update refusing every write by "
                 "a non-admin, behind its admin-only _security. It costs a JavaScript call per replicated document "
                 "on the server (fan-in 2.6x slower on CouchDB 3.5.2); false removes it."}),
    key<&config::fanin, &fc::sweep_rate>(
        {.name = "fanin.sweep_rate",
         .kind = k::number,
         .help = "Sweep mode: databases checked per second (greater than 0) and the minimum time between two "
                 "checks of the same database."}),
    key<&config::fanin, &fc::sweep_interval>({.name = "fanin.sweep_interval", .kind = k::duration_ms, .min = 0}),
    key<&config::fanin, &fc::node_check_interval>(
        {.name = "fanin.node_check_interval",
         .kind = k::duration_ms,
         .min = 0,
         .help = "db_updates mode: how often couchgate asks the server's nodes (GET /_membership, each node's "
                 "/_node/<node>/_system) whether one restarted while the _db_updates feed stayed up: a node keeps "
                 "the events it has not yet written to _global_changes in memory, so after its restart every "
                 "source is read and every live feed woken once. 0: never (a break of the feed is still judged). "
                 "The same interval paces the feed's own check (its [global_changes] update_db, and a write to the "
                 "state database that the feed must report within 20 s, else couchgate sweeps; 60 s when this is "
                 "0)."}),
    key<&config::fanin, &fc::verify_interval>(
        {.name = "fanin.verify_interval",
         .kind = k::duration_ms,
         .min = 0,
         .help = "db_updates mode: every this often each source database is read once more, and the databases "
                 "with parked live feeds have their update_seq looked at, each pass spread over half of it: CouchDB "
                 "does not promise that every change reaches _db_updates, and a lost event would otherwise wait for "
                 "the database's next write. Changes found this way are counted (couchgate_fanin_unannounced_total) "
                 "and logged. 0: never."}),
    key<&config::fanin, &fc::checkpoint_interval>(
        {.name = "fanin.checkpoint_interval",
         .kind = k::duration_ms,
         .min = 0,
         .help = "How often replication checkpoints are written to the state database (0 = after every round). In "
                 "between they are kept in memory: a crash only means those changes are read again, never written "
                 "twice."}),
    key<&config::fanin, &fc::target_check_interval>(
        {.name = "fanin.target_check_interval",
         .kind = k::duration_ms,
         .min = 0,
         .help = "How often the central database's epoch marker and the state database are looked at (0 = never). "
                 "A central database found missing is created again at the next look (/readyz says so meanwhile); a "
                 "new or older central database makes every source be read again from the start, once. A deleted "
                 "state database is created again and the checkpoints rewritten."}),

    section("shared", "An optional database shared by several users (replicated into the central database too)."),
    key<&config::shared, &sc::enabled>({.name = "shared.enabled", .kind = k::boolean}),
    key<&config::shared, &sc::db>({.name = "shared.db"}),
    key<&config::shared, &sc::member_roles>(
        {.name = "shared.member_roles",
         .kind = k::string_list,
         .help = "Roles that may read and write it; required (non-empty) when enabled, because a database without "
                 "members is public."}),
    key<&config::shared, &sc::admin_roles>({.name = "shared.admin_roles", .kind = k::string_list}),

    section("identities",
            "Sign-up with unique user names and e-mail addresses (POST /_signup on the front door). Each unique "
            "value is a reservation document in `db` (admin-only); every step is repaired by a reconciler after a "
            "crash. Needs provisioning.enabled: its _users feed tells couchgate of deleted users (their values "
            "are freed) and of users made without couchgate (theirs are reserved)."),
    key<&config::identities, &ic::enabled>({.name = "identities.enabled", .kind = k::boolean}),
    key<&config::identities, &ic::db>({.name = "identities.db"}),
    key<&config::identities, &ic::rules, &policy::identity_rules::max_name_bytes>(
        {.name = "identities.max_name_bytes",
         .kind = k::integer,
         .min = 1,
         .max = 1000,
         .help = "Longest user name, in UTF-8 bytes; shortest password, in characters."}),
    key<&config::identities, &ic::rules, &policy::identity_rules::min_password_chars>(
        {.name = "identities.min_password_chars", .kind = k::integer, .min = 1, .max = 1000}),
    key<&config::identities, &ic::profile_fields>(
        {.name = "identities.profile_fields",
         .kind = k::string_list,
         .help = "Extra sign-up fields copied into the _users document (anything else is refused)."}),
    key<&config::identities, &ic::roles>({.name = "identities.roles",
                                          .kind = k::string_list,
                                          .help = "Roles a signed-up user gets (make them match provisioning.select)."}),
    key<&config::identities, &ic::signup_deadline>(
        {.name = "identities.signup_deadline",
         .kind = k::duration_s,
         .min = 1,
         .help = "A sign-up gives up if it has not created the user by then, and then waits at most provision_wait "
                 "for the user's database."}),
    key<&config::identities, &ic::provision_wait>({.name = "identities.provision_wait", .kind = k::duration_s, .min = 0}),
    key<&config::identities, &ic::intent_timeout>(
        {.name = "identities.intent_timeout",
         .kind = k::duration_s,
         .min = 1,
         .help = "The reconciler finishes or rolls back intents older than this; it must be longer than "
                 "signup_deadline + provision_wait."}),
    key<&config::identities, &ic::retention>({.name = "identities.retention",
                                              .kind = k::duration_s,
                                              .min = 0,
                                              .help = "Finished intents are kept this long, then deleted."}),
    key<&config::identities, &ic::reconcile_interval>(
        {.name = "identities.reconcile_interval", .kind = k::duration_s, .min = 0}),
    key<&config::identities, &ic::rate_limit>(
        {.name = "identities.rate_limit",
         .kind = k::integer,
         .on_reload = live,
         .min = 1,
         .max = std::nullopt,
         .help = "Sign-up and availability requests per client address per rate_window; above it, 429 with "
                 "Retry-After."}),
    key<&config::identities, &ic::rate_window>(
        {.name = "identities.rate_window", .kind = k::duration_s, .on_reload = live, .min = 1}),
    key<&config::identities, &ic::on_duplicate>(
        {.name = "identities.on_duplicate",
         .kind = k::choice,
         .choices = on_duplicate_choices,
         .help = "Users made directly in _users get their name/ and email/ reservations from the provisioner. When "
                 "one of those values is already reserved by another user: flag = provision the user anyway, log the "
                 "conflict once, count it and list it at the admin API's /identities/conflicts; exclude = do not "
                 "provision the user until the conflict is resolved."}),

    section("admin_api", "The admin HTTP API."),
    key<&config::admin_api, &ac::address>(
        {.name = "admin_api.address",
         .check = not_empty_address,
         .help = "The environment variables COUCHGATE_ADMIN_ADDRESS and COUCHGATE_ADMIN_PORT override address and "
                 "port (`couchgate health` reads them too)."}),
    key<&config::admin_api, &ac::port>(
        {.name = "admin_api.port",
         .kind = k::integer,
         .min = 0,
         .max = 65535,
         .help = "0 = pick a free port (it is logged and written to port_file)."}),
    key<&config::admin_api, &ac::port_file>(
        {.name = "admin_api.port_file", .help = "Optional file the bound port is written to. Empty = none."}),
    key<&config::admin_api, &ac::token>(
        {.name = "admin_api.token",
         .secret = true,
         .help = "Bearer token for everything but /healthz and /readyz (`Authorization: Bearer <token>`), at least "
                 "16 printable characters, e.g. `openssl rand -hex 32`. Required when `address` is not a loopback "
                 "address. Prefer token_file (or the environment variable COUCHGATE_ADMIN_TOKEN, which wins) to "
                 "writing it here. Empty = no token."}),
    key<&config::admin_api, &ac::token_file>({.name = "admin_api.token_file"}),
    key<&config::admin_api, &ac::allow_unauthenticated>(
        {.name = "admin_api.allow_unauthenticated",
         .kind = k::boolean,
         .help = "true: listen on a non-loopback address without a token (anyone who can reach the port may read "
                 "/status and /metrics). Only behind something else that authenticates."}),

    section("log"),
    key<&config::log, &lc::level>({.name = "log.level",
                                   .on_reload = live,
                                   .choices = log_level_choices,
                                   .help = "trace, debug, info, warn, error, critical or off."}),
    key<&config::log, &lc::format>(
        {.name = "log.format", .kind = k::choice, .on_reload = live, .choices = log_format_choices, .help = "text or json."}),

    section("front",
            "The front door: clients (PouchDB, apps) sync their own database through couchgate at /me (and /shared "
            "when configured); CouchDB still authenticates and authorises every request."),
    key<&config::front, &frc::enabled>({.name = "front.enabled", .kind = k::boolean}),
    key<&config::front, &frc::address>({.name = "front.address", .check = not_empty_address}),
    key<&config::front, &frc::port>({.name = "front.port",
                                     .kind = k::integer,
                                     .min = 0,
                                     .max = 65535,
                                     .help = "0 = pick a free port (it is logged and written to port_file)."}),
    key<&config::front, &frc::port_file>({.name = "front.port_file"}),
    section("front.tls",
            "Native TLS (1.2+): PEM files, re-read on every SIGHUP without dropping connections (open ones keep "
            "theirs). Turning TLS on or off needs a restart."),
    key<&config::front, &frc::tls, &front_tls_config::cert_file>(
        {.name = "front.tls.cert_file", .on_reload = live}),
    key<&config::front, &frc::tls, &front_tls_config::key_file>({.name = "front.tls.key_file", .on_reload = live}),
    key<&config::front, &frc::allow_insecure>(
        {.name = "front.allow_insecure",
         .kind = k::boolean,
         .help = "Plain HTTP without TLS. Local testing only: credentials cross the network in clear text."}),
    key<&config::front, &frc::require_secure>(
        {.name = "front.require_secure",
         .kind = k::boolean,
         .help = "Behind a TLS-terminating proxy: only requests from trusted_proxies whose scheme_header says https "
                 "(or true/on) are served; any other plain request gets 403 and its credentials are never "
                 "forwarded. A missing header counts as not secure."}),
    key<&config::front, &frc::trusted_proxies>(
        {.name = "front.trusted_proxies", .kind = k::string_list, .check = cidr_range}),
    key<&config::front, &frc::scheme_header>(
        {.name = "front.scheme_header",
         .check = http_header_name,
         .help = "\"Forwarded\" (RFC 7239) reads the proto= of its last element (the nearest proxy's)."}),
    key<&config::front, &frc::threads>({.name = "front.threads",
                                        .kind = k::integer,
                                        .min = 0,
                                        .max = 256,
                                        .help = "I/O threads (0 = one per core; never more than the cores)."}),
    key<&config::front, &frc::max_connections>({.name = "front.max_connections",
                                                .kind = k::integer,
                                                .on_reload = live,
                                                .min = 1,
                                                .max = 1000000,
                                                .help = "Client connections held at once; more are refused."}),
    key<&config::front, &frc::max_body_bytes>(
        {.name = "front.max_body_bytes",
         .kind = k::size,
         .on_reload = live,
         .min = 1024,
         .help = "Request body and header caps (413 and 431 above them)."}),
    key<&config::front, &frc::max_header_bytes>(
        {.name = "front.max_header_bytes", .kind = k::size, .on_reload = live, .min = 1024}),
    key<&config::front, &frc::header_timeout>(
        {.name = "front.header_timeout",
         .kind = k::duration_ms,
         .on_reload = live,
         .min = 100,
         .help = "A request header must arrive within header_timeout; idle_timeout bounds keep-alive idleness and "
                 "each read/write of a body (slow clients are dropped)."}),
    key<&config::front, &frc::idle_timeout>(
        {.name = "front.idle_timeout", .kind = k::duration_ms, .on_reload = live, .min = 100}),
    key<&config::front, &frc::drain_timeout>(
        {.name = "front.drain_timeout",
         .kind = k::duration_ms,
         .on_reload = live,
         .min = 0,
         .max = 20000,
         .help = "At a stop (SIGTERM) the listener closes at once; requests in flight (a sign-up, a _bulk_docs) "
                 "get up to drain_timeout to finish, then every connection closes, live feeds' included (their "
                 "clients read on from their since). At most 20 s: the unit's TimeoutStopSec is 30 s."}),
    key<&config::front, &frc::session_cache_ttl>(
        {.name = "front.session_cache_ttl",
         .kind = k::duration_ms,
         .on_reload = live,
         .min = 0,
         .help = "How long the user name learned from CouchDB's GET /_session is reused for one credential (kept "
                 "under a SHA-256 of the credential, never the credential itself). A parked live feed asks again "
                 "when it runs out: with thousands of live clients use minutes (each costs CouchDB a check per "
                 "ttl). A changed _users document (followed when provisioning is on) ends that user's cached "
                 "credentials and parked feeds within about a second whatever the ttl."}),
    key<&config::front, &frc::route_cache_ttl>(
        {.name = "front.route_cache_ttl",
         .kind = k::duration_ms,
         .on_reload = live,
         .min = 0,
         .help = "How long a re-issued live _changes feed (longpoll, continuous, eventsource) finds the caller's "
                 "database from the credential's last GET /_session, past session_cache_ttl (same hashed keys, the "
                 "100 000 most recently used). The credential is still checked before the feed parks (its first "
                 "_changes read carries it; GET /_session when that read is skipped), so a parked feed is re-checked "
                 "at the latest after session_cache_ttl; a 401 to a read answers the client 401 and forgets the "
                 "credential in both caches. 0 = live feeds ask GET /_session like any request."}),
    key<&config::front, &frc::max_requests_per_user>({.name = "front.max_requests_per_user",
                                                      .kind = k::integer,
                                                      .on_reload = live,
                                                      .min = 1,
                                                      .max = 100000,
                                                      .help = "Requests of one user in flight at once; more wait in that "
                                                              "user's queue, first come first served (PouchDB fetches a "
                                                              "batch's attachments all at once and does not retry a "
                                                              "refused one)."}),
    key<&config::front, &frc::user_queue_length>(
        {.name = "front.user_queue_length",
         .kind = k::integer,
         .min = 0,
         .max = 1000000,
         .help = "Requests of one user waiting for one of its max_requests_per_user (429 with Retry-After above)."}),
    key<&config::front, &frc::user_queue_timeout>(
        {.name = "front.user_queue_timeout",
         .kind = k::duration_ms,
         .min = 0,
         .help = "Longest wait in that queue (then 503 with Retry-After)."}),
    key<&config::front, &frc::auth_failure_limit>(
        {.name = "front.auth_failure_limit",
         .kind = k::integer,
         .on_reload = live,
         .min = 1,
         .max = 1000000,
         .help = "Failed authentications per client address within auth_failure_window before 429."}),
    key<&config::front, &frc::auth_failure_window>(
        {.name = "front.auth_failure_window", .kind = k::duration_ms, .on_reload = live, .min = 1000}),
    key<&config::front, &frc::max_parked_per_user>(
        {.name = "front.max_parked_per_user",
         .kind = k::integer,
         .min = 1,
         .max = 1000000,
         .help = "Live _changes feeds (longpoll, continuous, eventsource) one user may hold open; they wait parked in "
                 "couchgate with no connection to CouchDB (429 with Retry-After above)."}),
    key<&config::front, &frc::feed_sweep_interval>(
        {.name = "front.feed_sweep_interval",
         .kind = k::duration_ms,
         .min = 100,
         .help = "Servers without _db_updates: how often the databases with parked live feeds are swept (at most "
                 "fanin.sweep_rate databases per second)."}),
    section("front.cors",
            "CORS headers on the answers couchgate writes itself (404s, refusals, sign-up) and on preflights, as "
            "CouchDB's [cors] would give them: set these like CouchDB's [chttpd] enable_cors and [cors] section "
            "(answers from CouchDB carry CouchDB's own headers)."),
    key<&config::front, &frc::cors, &front_cors_config::enable>({.name = "front.cors.enable", .kind = k::boolean}),
    key<&config::front, &frc::cors, &front_cors_config::origins>(
        {.name = "front.cors.origins", .kind = k::string_list, .help = "e.g. [\"https://app.example\"]; \"*\" = any."}),
    key<&config::front, &frc::cors, &front_cors_config::credentials>({.name = "front.cors.credentials", .kind = k::boolean}),
    key<&config::front, &frc::cors, &front_cors_config::methods>(
        {.name = "front.cors.methods", .kind = k::string_list, .help = "[] = CouchDB's default list."}),
    key<&config::front, &frc::cors, &front_cors_config::headers>(
        {.name = "front.cors.headers", .kind = k::string_list, .help = "[] = CouchDB's default list."}),
    key<&config::front, &frc::cors, &front_cors_config::max_age>(
        {.name = "front.cors.max_age", .kind = k::integer, .min = 0, .max = 100000000, .help = "Seconds."}),
    section("front.upstream",
            "The front door's own keep-alive pool of sockets to CouchDB (apart from fanin.max_connections): when all "
            "are busy a request waits up to wait_timeout, then gets 503 with Retry-After."),
    key<&config::front, &frc::upstream, &front_upstream_config::max_connections>(
        {.name = "front.upstream.max_connections", .kind = k::integer, .min = 1, .max = 4096}),
    key<&config::front, &frc::upstream, &front_upstream_config::wait_timeout>(
        {.name = "front.upstream.wait_timeout", .kind = k::duration_ms, .min = 0}),
    key<&config::front, &frc::upstream, &front_upstream_config::read_timeout>(
        {.name = "front.upstream.read_timeout",
         .kind = k::duration_s,
         .min = 1,
         .help = "Longest silence on one read from CouchDB (longpoll and continuous feeds wait this long)."}),
};

// The example's opening comment (what the table cannot say key by key).
constexpr std::string_view example_header =
    R"text(# couchgate configuration: every key with its default value.
# Generated from the key table (gateway/config_table.cpp) by `couchgate config-example`; edit the
# table, not this file.
#
# Every key is optional; a missing key keeps the default shown here, and an empty file is a
# valid configuration. Unknown keys are errors (couchgate reports all problems at once, with
# their line numbers).
#
# SIGHUP (systemctl reload couchgate) applies the keys marked "(live)" at once (a changed
# provisioning policy reconciles every user database); a reload names every other changed key
# in one warning: they need a restart.
#
# Durations: an integer number of seconds, or an integer with a unit: ms, s, m, h
#            ("250ms", "30s", "10m", "2h").
# Sizes:     an integer number of bytes, or an integer with a unit: B, KiB, MiB, GiB
#            (1024-based; "8MiB").
#
# Environment variables override the file:
#   COUCHDB_URL       replaces couchdb.url; user:password@ in it sets the credentials
#   COUCHDB_USER      replaces the user name (wins over COUCHDB_URL)
#   COUCHDB_PASSWORD  replaces the password (wins over COUCHDB_URL and the password keys)
# Empty environment variables count as unset.
)text";

constexpr std::size_t example_width = 96;

// Help text as comment lines at `indent`, words wrapped at example_width.
void append_comment(std::string& out, const std::string& indent, std::string_view text) {
  const std::string lead = indent + "# ";
  std::string line = lead;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find(' ', start);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view word = text.substr(start, end - start);
    if (line.size() > lead.size() && line.size() + 1 + word.size() > example_width) {
      out += line + "\n";
      line = lead;
    }
    if (line.size() > lead.size()) line += ' ';
    line += word;
    start = end + 1;
  }
  if (line.size() > lead.size()) out += line + "\n";
}

}  // namespace

std::string_view key_spec::parent() const {
  const std::size_t dot = name.rfind('.');
  return dot == std::string_view::npos ? std::string_view() : name.substr(0, dot);
}

std::string_view key_spec::leaf() const {
  const std::size_t dot = name.rfind('.');
  return dot == std::string_view::npos ? name : name.substr(dot + 1);
}

std::span<const key_spec> config_keys() { return table; }

const key_spec* find_key(std::string_view dotted_name) {
  for (const auto& k : table) {
    if (k.name == dotted_name) return &k;
  }
  return nullptr;
}

std::string format_duration_ms(long long ms) {
  if (ms % 3'600'000 == 0 && ms != 0) return std::to_string(ms / 3'600'000) + "h";
  if (ms % 60'000 == 0 && ms != 0) return std::to_string(ms / 60'000) + "m";
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

std::string format_size_bytes(long long bytes) {
  if (bytes != 0 && bytes % (1LL << 30) == 0) return std::to_string(bytes >> 30) + "GiB";
  if (bytes != 0 && bytes % (1LL << 20) == 0) return std::to_string(bytes >> 20) + "MiB";
  if (bytes != 0 && bytes % (1LL << 10) == 0) return std::to_string(bytes >> 10) + "KiB";
  return std::to_string(bytes) + "B";
}

std::string config_example() {
  const config defaults{};
  std::string out(example_header);
  for (const auto& k : table) {
    const std::size_t depth = static_cast<std::size_t>(std::count(k.name.begin(), k.name.end(), '.'));
    const std::string indent(2 * depth, ' ');
    if (depth == 0) out += "\n";
    std::string help(k.help);
    if (k.on_reload == reload::live) help.append(help.empty() ? "" : " ").append("(live)");
    if (!help.empty()) append_comment(out, indent, help);
    // Appends, not " " + std::string&&: GCC 12's -O3 reports a false -Wrestrict on that.
    out.append(indent).append(k.leaf()).append(":");
    if (!k.is_section()) out.append(" ").append(k.show(k, defaults));
    out.append("\n");
  }
  return out;
}

}  // namespace couchgate::gateway
