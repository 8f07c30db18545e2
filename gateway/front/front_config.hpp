#pragma once
// Owns: the front door's configuration (the `front:` section): listener, TLS, the secure-request
// rule, client limits and the upstream pool. Parsed and validated by gateway/config.cpp.
#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

namespace couchgate::gateway {

struct front_tls_config {
  std::string cert_file;  // PEM certificate chain; re-read on SIGHUP
  std::string key_file;   // PEM private key; re-read on SIGHUP
  bool operator==(const front_tls_config&) const = default;
};

// CouchDB's [cors] section, for the answers couchgate writes itself (forwarded answers carry
// CouchDB's own headers). Empty methods/headers: CouchDB's default lists.
struct front_cors_config {
  bool enable = false;                       // [chttpd] enable_cors
  std::vector<std::string> origins{};        // [cors] origins; "*" = any
  bool credentials = false;                  // [cors] credentials
  std::vector<std::string> methods{};        // [cors] methods
  std::vector<std::string> headers{};        // [cors] headers
  long long max_age = 600;                   // [cors] max_age, seconds
  bool operator==(const front_cors_config&) const = default;
};

struct front_upstream_config {
  // Sized so that one user at front.max_requests_per_user never fills it: pool waits happen only
  // when several users sync at full parallelism at once, and then they are served in turn (FIFO).
  std::size_t max_connections = 64;               // hard cap on the front door's sockets to CouchDB
  std::chrono::milliseconds wait_timeout{30000};  // a request waits this long for one, then 503
  std::chrono::seconds read_timeout{300};         // silence allowed on one upstream read (feeds!)
  bool operator==(const front_upstream_config&) const = default;
};

struct front_config {
  bool enabled = false;
  std::string address = "127.0.0.1";
  int port = 6984;                    // 0 = a free port, written to port_file
  std::string port_file;
  front_tls_config tls{};
  bool allow_insecure = false;        // plain HTTP accepted (local testing)
  bool require_secure = false;        // behind a TLS proxy: trusted peer + scheme header required
  std::vector<std::string> trusted_proxies{};  // CIDRs (or single addresses)
  std::string scheme_header = "X-Forwarded-Proto";
  std::size_t threads = 0;            // I/O threads; 0 = one per core (never more)
  std::size_t max_connections = 10000;
  std::size_t max_body_bytes = 256u << 20;
  std::size_t max_header_bytes = 64u << 10;
  std::chrono::milliseconds header_timeout{10000};  // a request's header must arrive within this
  std::chrono::milliseconds idle_timeout{60000};    // keep-alive idle, and each body read/write
  // At a stop: how long requests in flight (not live feeds) may take to finish after the
  // listener closed, before their connections are closed too.
  std::chrono::milliseconds drain_timeout{10000};
  std::chrono::milliseconds session_cache_ttl{10000};
  // How long a re-issued live feed finds its database from the credential's last GET /_session
  // (each of its `_changes` reads carries the credential, so CouchDB still refuses a revoked one).
  std::chrono::milliseconds route_cache_ttl{600000};
  // Requests of one user in flight; more wait in the user's FIFO queue (PouchDB fetches a
  // batch's attachments all at once and does not retry a 429), up to user_queue_length of them
  // for up to user_queue_timeout (then 429 / 503, with Retry-After).
  std::size_t max_requests_per_user = 16;
  std::size_t user_queue_length = 1024;
  std::chrono::milliseconds user_queue_timeout{60000};
  std::size_t auth_failure_limit = 20;              // failed authentications per address per window
  std::chrono::milliseconds auth_failure_window{60000};
  front_upstream_config upstream{};
  front_cors_config cors{};
  // Parked live feeds (issue 14): live `_changes` feeds one user may hold open (429 above), and
  // how often the databases with parked feeds are swept when the server has no `_db_updates`.
  std::size_t max_parked_per_user = 32;
  std::chrono::milliseconds feed_sweep_interval{1000};
  bool operator==(const front_config&) const = default;
};

}  // namespace couchgate::gateway
