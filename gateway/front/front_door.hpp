#pragma once
// Owns: the front door's lifecycle and wiring: I/O threads, the TLS context (swapped on SIGHUP
// for new connections; open ones keep theirs), the upstream pool, the parked feeds' registry, the
// forwarder and the listener, and their gauges in /metrics. Start: contexts -> listener; stop: listener closed ->
// threads joined -> idle upstream connections closed -> contexts destroyed.
#include <memory>
#include <string>

#include "gateway/config.hpp"
#include "gateway/front/feed_park.hpp"
#include "gateway/front/local.hpp"
#include "replicator/metrics.hpp"

namespace couchgate::gateway {

class front_door {
 public:
  // Throws std::runtime_error when the configuration cannot be applied (unreadable certificate,
  // couchdb.url unusable): startup time only.
  front_door(const config& cfg, replicator::registry& metrics, front::local_handler local = {},
             front::caller_provisioner provision_caller = {});
  ~front_door();
  front_door(const front_door&) = delete;
  front_door& operator=(const front_door&) = delete;

  // Binds and serves; returns the bound port, or -1 with the reason.
  int start(std::string& error);
  // Closes the listener, lets requests in flight (not live feeds) finish for up to `drain`, then
  // stops the I/O threads (closing every connection) and the upstream pool.
  void stop(std::chrono::milliseconds drain = std::chrono::milliseconds(0));
  // SIGHUP: (re-)reads the certificate and key named by `tls` (the same files rotated, or new
  // paths); new connections use them, open ones keep the old. False (with the reason; the old
  // ones stay) when they cannot be loaded, or when TLS would be turned on or off (a restart).
  bool reload_tls(const front_tls_config& tls, std::string& error);
  // SIGHUP: the client limits and rate limits the config table marks live (front.max_connections,
  // the size caps and timeouts, session_cache_ttl, max_requests_per_user, auth_failure_*,
  // identities.rate_*), for requests from now on.
  void apply_limits(const config& cfg);
  // Labelled histograms (the registry renders the rest).
  std::string render_metrics() const;
  // The parked live feeds' subscriptions: the change notifier wakes them (gateway/feed_notifier.hpp).
  front::feed_registry& feeds();
  // `name`'s `_users` document changed (password, roles, deletion; any thread): what the front
  // door remembers of their credentials is asked about again (forwarder::user_changed).
  void user_changed(const std::string& name);

  struct impl;

 private:
  std::unique_ptr<impl> impl_;
};

}  // namespace couchgate::gateway
