// Owns: the front door's wiring (see front_door.hpp).
#include "gateway/front/front_door.hpp"

#include <chrono>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "gateway/front/forwarder.hpp"
#include "gateway/front/front_metrics.hpp"
#include "gateway/front/http_server.hpp"
#include "gateway/front/io_threads.hpp"
#include "gateway/front/upstream_pool.hpp"
#include "replicator/logger.hpp"

namespace couchgate::gateway {

using namespace front;

namespace {
// TLS 1.2 or later, the certificate chain and key from PEM files.
std::shared_ptr<ssl::context> load_server_tls(const front_tls_config& tls, std::string& error) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  error_code ec;
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                       ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 | ssl::context::single_dh_use,
                   ec);
  if (!ec) ctx->use_certificate_chain_file(tls.cert_file, ec);
  if (ec) {
    error = "cannot load front.tls.cert_file '" + tls.cert_file + "': " + ec.message();
    return nullptr;
  }
  ctx->use_private_key_file(tls.key_file, ssl::context::pem, ec);
  if (ec) {
    error = "cannot load front.tls.key_file '" + tls.key_file + "': " + ec.message();
    return nullptr;
  }
  if (SSL_CTX_check_private_key(ctx->native_handle()) != 1) {
    error = "front.tls.key_file does not match front.tls.cert_file";
    return nullptr;
  }
  // OpenSSL keeps a read and a write buffer (about 34 KB) per connection for its whole life;
  // with this it frees them whenever a connection has nothing buffered: a parked live feed or
  // an idle keep-alive client holds none of OpenSSL's (Asio's TLS engine still holds its own
  // 17 KB each way per connection, and the connection its read buffer).
  SSL_CTX_set_mode(ctx->native_handle(), SSL_MODE_RELEASE_BUFFERS);
  return ctx;
}

// The forwarder's options and the listener's limits from the configuration: at start, and again
// on SIGHUP for the keys the config table marks live.
forwarder_options forwarder_options_of(const config& cfg) {
  forwarder_options fo;
  fo.db_prefix = cfg.provisioning.db_prefix;
  fo.shared_enabled = cfg.shared.enabled;
  fo.shared_db = cfg.shared.db;
  fo.secure.allow_insecure = cfg.front.allow_insecure;
  fo.secure.require_secure = cfg.front.require_secure;
  for (const auto& p : cfg.front.trusted_proxies) {
    if (auto range = parse_cidr(p)) fo.secure.trusted_proxies.push_back(*range);
  }
  fo.scheme_header = cfg.front.scheme_header;
  fo.client_timeout = cfg.front.idle_timeout;
  fo.upstream_timeout = cfg.front.upstream.read_timeout;
  fo.session_cache_ttl = cfg.front.session_cache_ttl;
  fo.route_cache_ttl = cfg.front.route_cache_ttl;
  fo.max_requests_per_user = cfg.front.max_requests_per_user;
  fo.user_queue_length = cfg.front.user_queue_length;
  fo.user_queue_timeout = cfg.front.user_queue_timeout;
  fo.auth_failure_limit = cfg.front.auth_failure_limit;
  fo.auth_failure_window = cfg.front.auth_failure_window;
  fo.local_rate_limit = cfg.identities.rate_limit;
  fo.local_rate_window = cfg.identities.rate_window;
  fo.cors = make_cors_policy(cfg.front.cors);
  return fo;
}

server_limits server_limits_of(const front_config& f) {
  server_limits limits;
  limits.max_connections = f.max_connections;
  limits.header_limit = f.max_header_bytes;
  limits.body_limit = f.max_body_bytes;
  limits.header_timeout = f.header_timeout;
  limits.idle_timeout = f.idle_timeout;
  return limits;
}
std::shared_ptr<spdlog::logger> log() {
  static auto l = replicator::named_logger("front");
  return l;
}

}  // namespace

struct front_door::impl {
  front_config cfg;
  front_metrics metrics;
  std::mutex tls_mu;
  std::shared_ptr<ssl::context> tls;  // guarded by tls_mu; null = no TLS
  feed_registry feeds;                // outlives the contexts: parked sessions unsubscribe when destroyed
  feed_read_gate feed_gate;           // likewise: a feed leaves it when destroyed
  // Declaration order is destruction order reversed: the pool and the forwarder outlive the
  // contexts (a coroutine destroyed with its context still returns its lease to the pool).
  // The contexts go first: sessions destroyed with them still reach the server's counters.
  std::unique_ptr<upstream_pool> pool;
  std::unique_ptr<forwarder> handler;
  std::unique_ptr<http_server> server;
  std::unique_ptr<io_threads> io;
  bool running = false;

  impl(const config& c, replicator::registry& registry)
      : cfg(c.front),
        metrics(registry),
        feeds(c.front.max_parked_per_user),
        // Twice the pool: every connection busy with a feed read and one more read waiting for it.
        feed_gate(2 * c.front.upstream.max_connections) {}
};

front_door::front_door(const config& cfg, replicator::registry& registry, front::local_handler local,
                       front::caller_provisioner provision_caller)
    : impl_(std::make_unique<impl>(cfg, registry)) {
  auto& d = *impl_;
  const auto address = parse_upstream_url(cfg.couchdb.url);
  if (!address) throw std::runtime_error("couchdb.url is not an http(s) URL the front door can use");
  if (!cfg.front.tls.cert_file.empty()) {
    std::string error;
    d.tls = load_server_tls(cfg.front.tls, error);
    if (!d.tls) throw std::runtime_error(error);
  }
  std::shared_ptr<ssl::context> client_tls;
  if (address->tls) {
    client_tls = std::make_shared<ssl::context>(ssl::context::tls_client);
    client_tls->set_default_verify_paths();
    client_tls->set_verify_mode(ssl::verify_peer);
  }
  d.io = std::make_unique<io_threads>(cfg.front.threads);  // created first, destroyed first
  d.pool = std::make_unique<upstream_pool>(*d.io, *address, cfg.front.upstream.max_connections,
                                           cfg.front.upstream.wait_timeout, std::chrono::milliseconds(10000), client_tls);
  forwarder_options fo = forwarder_options_of(cfg);
  fo.local = std::move(local);
  fo.provision_caller = std::move(provision_caller);
  fo.feeds = &d.feeds;
  fo.feed_gate = &d.feed_gate;
  if (const char* hold = std::getenv("COUCHGATE_TEST_FEED_CHECK_DELAY_MS"); hold != nullptr && *hold != '\0') {
    fo.test_check_delay = std::chrono::milliseconds(std::strtoll(hold, nullptr, 10));
  }
  d.handler = std::make_unique<forwarder>(fo, *d.pool, d.metrics);
  const server_limits limits = server_limits_of(cfg.front);
  tls_provider provider;
  if (d.tls) {
    provider = [&d] {
      std::lock_guard lk(d.tls_mu);
      return d.tls;
    };
  }
  d.server = std::make_unique<http_server>(
      *d.io, limits, [h = d.handler.get()](server_exchange& ex) { return h->handle(ex); }, provider);
  d.server->set_answer_headers([cors = fo.cors](const http::fields& request) { return with_cors(cors, request, {}); });

  auto* self = impl_.get();
  registry.add_callback("couchgate_front_client_connections", "Open client connections to the front door",
                        [self] { return static_cast<double>(self->server->counters().open.load()); });
  // The listener's cumulative counts are counters (rate() them); the rest are gauges.
  registry.add_counter_callback("couchgate_front_client_connections_refused_total",
                                "Client connections closed at once because front.max_connections were open",
                                [self] { return static_cast<double>(self->server->counters().refused_full.load()); });
  registry.add_counter_callback(
      "couchgate_front_tls_handshake_failures_total", "Failed TLS handshakes",
      [self] { return static_cast<double>(self->server->counters().tls_handshake_failures.load()); });
  registry.add_counter_callback("couchgate_front_client_timeouts_total",
                                "Client connections closed by the header or idle timeout",
                                [self] { return static_cast<double>(self->server->counters().timeouts.load()); });
  registry.add_counter_callback("couchgate_front_header_too_large_total", "Requests refused with 431",
                                [self] { return static_cast<double>(self->server->counters().header_too_large.load()); });
  registry.add_counter_callback("couchgate_front_body_too_large_total", "Requests refused with 413",
                                [self] { return static_cast<double>(self->server->counters().body_too_large.load()); });
  registry.add_callback("couchgate_front_user_queued",
                        "Requests waiting because their user had front.max_requests_per_user in flight",
                        [self] { return static_cast<double>(self->handler->user_queued()); });
  registry.add_callback("couchgate_front_upstream_open", "Front door connections to CouchDB open",
                        [self] { return static_cast<double>(self->pool->stats().open); });
  registry.add_callback("couchgate_front_upstream_in_use", "Front door connections to CouchDB in use",
                        [self] { return static_cast<double>(self->pool->stats().in_use); });
  registry.add_callback("couchgate_front_upstream_waiting", "Requests waiting for a connection to CouchDB",
                        [self] { return static_cast<double>(self->pool->stats().waiting); });
  registry.add_callback("couchgate_front_upstream_background_in_use",
                        "Front door connections to CouchDB in use by background work (parked live feeds' credential "
                        "re-checks; at most a quarter of the pool)",
                        [self] { return static_cast<double>(self->pool->stats().background_in_use); });
  registry.add_callback("couchgate_front_upstream_background_waiting",
                        "Parked live feeds' credential re-checks waiting for a connection to CouchDB",
                        [self] { return static_cast<double>(self->pool->stats().background_waiting); });
  registry.add_callback("couchgate_front_upstream_max", "front.upstream.max_connections",
                        [self] { return static_cast<double>(self->pool->max_connections()); });
  registry.add_counter_callback("couchgate_front_upstream_connects_total",
                                "Front door connections to CouchDB opened (the first ones, and each reopened after "
                                "CouchDB closed one, or a TLS one went to a request on another I/O thread)",
                                [self] { return static_cast<double>(self->pool->stats().connects); });
  registry.add_counter_callback("couchgate_front_upstream_moved_total",
                                "Freed front door connections to CouchDB handed to a request waiting on another "
                                "I/O thread (its socket moves; plain HTTP only)",
                                [self] { return static_cast<double>(self->pool->stats().moved); });
  registry.add_callback("couchgate_front_upstream_peak", "Most front door connections to CouchDB open at once",
                        [self] { return static_cast<double>(self->pool->stats().peak_open); });
  registry.add_callback("couchgate_front_feeds_open", "Live _changes feeds open through the front door",
                        [self] { return static_cast<double>(self->feeds.stats().subscribed); });
  registry.add_callback("couchgate_front_feeds_parked", "Live _changes feeds parked (no upstream connection)",
                        [self] { return static_cast<double>(self->feeds.stats().parked); });
  registry.add_callback("couchgate_front_feed_reads_in_progress",
                        "Live feeds reading from CouchDB now (waiting for a pool connection or for the answer); at "
                        "most twice front.upstream.max_connections",
                        [self] { return static_cast<double>(self->feed_gate.reading()); });
  registry.add_callback("couchgate_front_feed_reads_waiting",
                        "Live feeds waiting parked for their turn to read (deliveries first, then first checks)",
                        [self] { return static_cast<double>(self->feed_gate.waiting()); });
  registry.add_counter_callback("couchgate_front_feed_wakes_total", "Parked live feeds woken by a database change",
                        [self] { return static_cast<double>(self->feeds.stats().wakes); });
  registry.add_counter_callback("couchgate_front_feed_wake_fetches_total", "Upstream _changes reads made because of a wake",
                        [self] { return static_cast<double>(self->feeds.stats().fetches); });
  registry.add_counter_callback("couchgate_front_feed_coalesced_total",
                        "Database changes announced to a feed that already had a wake pending (coalesced)",
                        [self] { return static_cast<double>(self->feeds.stats().coalesced); });
  registry.add_counter_callback("couchgate_front_feed_reads_total",
                        "Upstream _changes reads of live feeds (first checks and wake fetches)",
                        [self] { return static_cast<double>(self->feeds.stats().reads); });
  registry.add_counter_callback("couchgate_front_feed_checks_skipped_total",
                        "Re-issued longpolls parked at once: couchgate had answered that since and nothing was announced",
                        [self] { return static_cast<double>(self->feeds.stats().skipped); });
  registry.add_counter_callback("couchgate_front_writes_announced_total",
                        "Writes through the front door CouchDB accepted, announced at once to their database's "
                        "parked live feeds, if any (before CouchDB's _db_updates event)",
                        [self] { return static_cast<double>(self->feeds.stats().written); });
  registry.add_callback("couchgate_front_feed_answers_remembered", "Answered longpolls remembered to skip a first check",
                        [self] { return static_cast<double>(self->feeds.stats().remembered); });
  registry.add_callback("couchgate_front_feed_bytes_estimate",
                        "Estimated memory of the open live feeds' own state (bytes; excludes sockets and coroutine frames)",
                        [self] {
                          const auto st = self->feeds.stats();
                          return static_cast<double>(st.bytes + st.remembered_bytes);
                        });
}

front_door::~front_door() { stop(); }

feed_registry& front_door::feeds() { return impl_->feeds; }

void front_door::user_changed(const std::string& name) { impl_->handler->user_changed(name); }

int front_door::start(std::string& error) {
  auto& d = *impl_;
  const int port = d.server->listen(d.cfg.address, d.cfg.port, error);
  if (port < 0) return -1;
  d.io->start();
  d.running = true;
  return port;
}

void front_door::stop(std::chrono::milliseconds drain) {
  auto& d = *impl_;
  if (!d.running) return;
  d.running = false;
  d.server->close();
  if (drain.count() > 0) {
    // Requests in flight that are not live feeds (those end now; their clients read on from
    // their since): a sign-up, a _bulk_docs, a document write.
    d.server->begin_drain();
    const auto plain = [&d] {
      return d.server->counters().busy.load() - static_cast<std::int64_t>(d.feeds.stats().subscribed);
    };
    const auto deadline = std::chrono::steady_clock::now() + drain;
    const std::int64_t at_start = plain();
    // Done when none is seen twice in a row: the two counters are read one after the other, so
    // a feed ending between the reads can hide a request once.
    int quiet = 0;
    while (quiet < 2 && std::chrono::steady_clock::now() < deadline) {
      quiet = plain() > 0 ? 0 : quiet + 1;
      if (quiet < 2) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (const std::int64_t left = plain(); left > 0) {
      log()->warn("front door: {} request(s) still in flight after front.drain_timeout ({} ms): their connections "
                  "are closed", left, drain.count());
    } else if (at_start > 0) {
      log()->info("front door: the {} request(s) in flight at the stop were answered", at_start);
    }
  }
  d.io->stop();
  d.server->release_acceptor();
  d.pool->close();
}

bool front_door::reload_tls(const front_tls_config& tls, std::string& error) {
  auto& d = *impl_;
  std::lock_guard lk(d.tls_mu);
  if (tls.cert_file.empty() != (d.tls == nullptr)) {
    error = d.tls ? "front.tls.cert_file and key_file were removed: turning TLS off needs a restart"
                  : "front.tls.cert_file and key_file were set: turning TLS on needs a restart";
    return false;
  }
  if (tls.cert_file.empty()) return true;
  auto fresh = load_server_tls(tls, error);
  if (!fresh) return false;
  d.tls = std::move(fresh);
  return true;
}

void front_door::apply_limits(const config& cfg) {
  auto& d = *impl_;
  d.server->set_limits(server_limits_of(cfg.front));
  d.handler->apply_limits(forwarder_options_of(cfg));
}

std::string front_door::render_metrics() const { return impl_->metrics.render(); }

}  // namespace couchgate::gateway
