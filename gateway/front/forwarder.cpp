// Owns: the front door's request handling (see forwarder.hpp).
#include "gateway/front/forwarder.hpp"

// GCC 12 reports a false mismatched-new-delete on Asio's coroutine frames (Asio's own operator
// new/delete pair) in this file's larger coroutines.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

#include <boost/beast/core/string.hpp>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>

#include "gateway/front/responses.hpp"
#include "policy/naming.hpp"
#include "policy/users.hpp"
#include "replicator/logger.hpp"

namespace couchgate::gateway::front {
namespace {

std::shared_ptr<spdlog::logger> access_log() {
  static auto l = replicator::named_logger("front");
  return l;
}

// Hop-by-hop headers (RFC 9110 7.6.1) and what couchgate sets itself; never copied through.
bool hop_by_hop(http::field f, beast::string_view name) {
  switch (f) {
    case http::field::connection:
    case http::field::keep_alive:
    case http::field::proxy_connection:
    case http::field::proxy_authenticate:
    case http::field::proxy_authorization:
    case http::field::te:
    case http::field::trailer:
    case http::field::transfer_encoding:
    case http::field::upgrade:
    case http::field::content_length:
    case http::field::host:
    case http::field::expect:
      return true;
    default:
      break;
  }
  return beast::iequals(name, "Proxy-Connection");
}

// CouchDB's proxy authentication trusts these headers: a client must never set them.
bool proxy_auth_header(beast::string_view name) {
  return name.size() >= 15 && beast::iequals(name.substr(0, 15), "X-Auth-CouchDB-");
}

enum class relay_result { done, read_failed, write_failed };

// Bytes are waiting in a plain socket's receive queue: a read now completes without waiting.
// Never for TLS: raw bytes there may be part of a record, or a record with no application data
// (a session ticket), and the read would wait for the rest while what was read sits unsent.
bool readable_now(any_stream& s) {
  if (s.is_tls()) return false;
  error_code ec;
  const std::size_t n = s.tcp().socket().available(ec);
  return !ec && n > 0;
}

// Streams one message body from `in` (its parser has read the header) to `out` (its serializer
// holds the header to send) through `buffer`: never more than the buffer in memory.
// `in_done` runs once, as soon as `in` has given the whole message (before the last write to
// `out`); `in` and `in_buffer` are not touched after it.
template <class Parser, class Serializer, class Message, class InDone = void (*)()>
net::awaitable<relay_result> relay(any_stream& in, beast::flat_buffer& in_buffer, Parser& parser,
                                   std::chrono::milliseconds in_timeout, any_stream& out, Serializer& serializer,
                                   Message& message, std::chrono::milliseconds out_timeout, std::vector<char>& buffer,
                                   InDone in_done = [] {}) {
  error_code ec;
  bool in_done_called = false;
  const auto note_in_done = [&] {
    if (!in_done_called && parser.is_done()) {
      in_done_called = true;
      in_done();
    }
  };
  note_in_done();
  // The header goes alone only when no body byte is here yet (a feed whose first bytes come
  // later still gets its header now); otherwise it goes in one write with the first of them:
  // one segment, one wake-up of the receiver, instead of two.
  const auto header_alone = [&]() -> net::awaitable<bool> {
    if (serializer.is_header_done()) co_return true;
    out.tcp().expires_after(out_timeout);
    co_await http::async_write_header(out, serializer, ec_token(ec));
    co_return !ec;
  };
  if (!parser.is_done() && in_buffer.size() == 0 && !co_await header_alone()) co_return relay_result::write_failed;
  // A flat_buffer reads at most its free capacity at a time: a client connection's is sized for
  // a request header (4 KB) until a body comes (http_server gives the room back after the request).
  if (!parser.is_done() && in_buffer.capacity() < buffer.size()) in_buffer.reserve(buffer.size());
  while (!serializer.is_done()) {
    if (!parser.is_done()) {
      // Read, then read again while more has already arrived and the buffer has room: CouchDB
      // sends a row (of _changes, _all_docs, _bulk_get) per chunk, often a TCP segment each, and
      // relaying each alone cost a write, a wake-up of the client and a chunk header per row.
      // Nothing waits for bytes that are not here yet, so no answer is held back (plain
      // connections only: readable_now).
      std::size_t n = 0;
      for (;;) {
        parser.get().body().data = buffer.data() + n;
        parser.get().body().size = buffer.size() - n;
        in.tcp().expires_after(in_timeout);
        co_await http::async_read_some(in, in_buffer, parser, ec_token(ec));
        if (ec == http::error::need_buffer) ec = {};
        if (ec) co_return relay_result::read_failed;
        note_in_done();
        n = buffer.size() - parser.get().body().size;
        if (parser.is_done() || n == buffer.size() || !readable_now(in)) break;
      }
      if (n == 0 && !parser.is_done()) {  // framing only (a chunk header): nothing to pass on yet
        if (!co_await header_alone()) co_return relay_result::write_failed;
        continue;
      }
      message.body().data = n == 0 ? nullptr : buffer.data();
      message.body().size = n;
      message.body().more = n != 0;
    } else {
      message.body().data = nullptr;
      message.body().size = 0;
      message.body().more = false;
    }
    out.tcp().expires_after(out_timeout);
    co_await http::async_write(out, serializer, ec_token(ec));
    if (ec == http::error::need_buffer) ec = {};
    if (ec) co_return relay_result::write_failed;
  }
  co_return relay_result::done;
}

// Built outside the co_await expression: GCC 12 cannot move an initializer_list's backing array
// into a coroutine frame ("array used as initializer").
header_list retry_after(const std::string& seconds) {
  header_list h;
  h.emplace_back("Retry-After", seconds);
  return h;
}

std::optional<std::string> header_value(const http::fields& fields, std::string_view name) {
  const auto it = fields.find(beast::string_view(name.data(), name.size()));
  if (it == fields.end()) return std::nullopt;
  return std::string(it->value());
}

bool retryable(const error_code& ec) {
  return ec == net::error::eof || ec == http::error::end_of_stream || ec == net::error::connection_reset ||
         ec == net::error::broken_pipe || ec == net::error::connection_aborted;
}

}  // namespace

std::string credential_of(const http::fields& fields) {
  std::string out;
  if (auto it = fields.find(http::field::authorization); it != fields.end()) out += std::string(it->value());
  for (auto it = fields.find(http::field::cookie); it != fields.end() && it->name() == http::field::cookie; ++it) {
    const std::string_view cookies(it->value().data(), it->value().size());
    std::size_t pos = 0;
    while (pos < cookies.size()) {
      std::size_t end = cookies.find(';', pos);
      if (end == std::string_view::npos) end = cookies.size();
      std::string_view c = cookies.substr(pos, end - pos);
      while (!c.empty() && c.front() == ' ') c.remove_prefix(1);
      if (c.starts_with("AuthSession=")) {
        // The first one only, as CouchDB reads it (mochiweb's cookie list, first match): more
        // values after it change nothing for CouchDB, so they do not make another credential
        // here (each would have been a fresh session check and a fresh per-credential cap).
        out += "\ncookie:";
        out += c.substr(12);
        return out;
      }
      pos = end + 1;
    }
  }
  return out;
}

header_list with_cors(const cors_policy& cors, const http::fields& request, header_list extra) {
  if (!cors.enable) return extra;
  std::vector<std::string> names{"Server", "Content-Type", "Cache-Control"};  // write_response's own
  for (const auto& h : extra) names.push_back(h.first);
  for (auto& h : cors_answer_headers(cors, header_value(request, "Origin"), names)) extra.push_back(std::move(h));
  return extra;
}

forwarder::forwarder(forwarder_options options, upstream_pool& pool, front_metrics& metrics, clock_fn now)
    : options_(std::move(options)),
      client_timeout_ms_(options_.client_timeout.count()),
      pool_(pool),
      metrics_(metrics),
      now_(std::move(now)),
      sessions_(options_.session_cache_ttl, 100000),
      routes_(options_.route_cache_ttl, 100000),
      failures_(options_.auth_failure_limit, options_.auth_failure_window),
      slots_(options_.max_requests_per_user, options_.user_queue_length),
      local_attempts_(options_.local_rate_limit, options_.local_rate_window),
      local_pool_(options_.local || options_.provision_caller
                      ? std::make_unique<net::thread_pool>(std::max<std::size_t>(options_.local_threads, 1))
                      : nullptr) {}

void forwarder::apply_limits(const forwarder_options& o) {
  client_timeout_ms_.store(o.client_timeout.count(), std::memory_order_relaxed);
  sessions_.set_ttl(o.session_cache_ttl);
  routes_.set_ttl(o.route_cache_ttl);
  slots_.set_per_user(o.max_requests_per_user);
  failures_.set_limit(o.auth_failure_limit, o.auth_failure_window);
  local_attempts_.set_limit(o.local_rate_limit, o.local_rate_window);
}

forwarder::~forwarder() {
  if (local_pool_) local_pool_->join();
}

net::awaitable<bool> forwarder::handle(server_exchange& ex) {
  const auto start = std::chrono::steady_clock::now();
  const auto& req = ex.parser.get();
  const std::string method(req.method_string());
  const std::string target(req.target());
  const route rt = route_request(method, target, options_.shared_enabled);
  outcome out;
  next_step next;
  bool keep = co_await dispatch(ex, rt, out, next);
  if (next.k == next_step::kind::feed) {
    keep = co_await serve_feed(ex, rt, next.db, next.user, next.credential, next.verified, out);
  } else if (next.k == next_step::kind::forward) {
    keep = co_await forward(ex, next, out);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  metrics_.request(rt.label, out.status, seconds);
  // The path only (a query may carry anything), the user name, never a credential.
  access_log()->info("{} {} \"{} {}\" {} {:.1f}ms", ex.client_or_peer().empty() ? "-" : ex.client_or_peer(),
                     out.user.empty() ? "-" : out.user, method, target.substr(0, target.find('?')).substr(0, 512),
                     out.status, seconds * 1000);
  co_return keep;
}

net::awaitable<bool> forwarder::dispatch(server_exchange& ex, const route& rt, outcome& out, next_step& next) {
  const auto& req = ex.parser.get();
  // A request whose body we do not read cannot leave the connection reusable.
  const bool keep_if_answered_now = req.keep_alive() && ex.parser.is_done();
  const auto answer = [&](http::status status, std::string_view error, std::string_view reason,
                          header_list headers = {}) -> net::awaitable<bool> {
    out.status = static_cast<unsigned>(status);
    const header_list all = with_cors(options_.cors, req, std::move(headers));
    const bool ok = co_await write_json_error(ex.stream, status, error, reason, ex.keep_alive(keep_if_answered_now),
                                              client_timeout(), all);
    co_return ok && keep_if_answered_now;
  };

  // 1. Secure? Decided before anything is forwarded, the credential included.
  request_origin origin{ex.conn.tls, ex.conn.peer_ip, std::nullopt};
  // A field in several lines is one list (a proxy may add its line after the client's own);
  // nullopt when the request has none.
  const auto field_lines = [&](std::string_view name) -> std::optional<std::string> {
    std::vector<std::string_view> lines;
    for (auto [it, end] = req.equal_range(beast::string_view(name.data(), name.size())); it != end; ++it) {
      lines.emplace_back(it->value().data(), it->value().size());
    }
    if (lines.empty()) return std::nullopt;
    return joined_field_lines(lines);
  };
  // front.scheme_header "Forwarded" (RFC 7239) means its proto=, and the client's address from
  // its for=; otherwise the address comes from X-Forwarded-For. Never one for the other: the
  // header the proxy does not set is the client's own word.
  const bool rfc7239 = beast::iequals(options_.scheme_header, "Forwarded");
  std::optional<std::string> scheme_value = field_lines(options_.scheme_header);
  if (scheme_value && rfc7239) scheme_value = forwarded_proto(*scheme_value);
  if (scheme_value) origin.scheme_header = *scheme_value;  // (a view of scheme_value)
  if (const auto forwarded_for = field_lines(rfc7239 ? "Forwarded" : "X-Forwarded-For")) {
    ex.client = client_address(options_.secure, ex.conn.peer, ex.conn.peer_ip,
                               rfc7239 ? forwarded_for_list(*forwarded_for) : *forwarded_for);
  }
  const secure_verdict verdict = decide_secure(options_.secure, origin);
  ex.secure = verdict == secure_verdict::secure;
  if (verdict == secure_verdict::refused) {
    metrics_.tls_refusals.inc();
    co_return co_await answer(http::status::forbidden, "forbidden",
                              "couchgate requires TLS: this request did not arrive over TLS (nor from a trusted "
                              "proxy that says it did)");
  }

  // CORS preflights carry no credential: answered here (as CouchDB's [cors] would), for any path.
  if (options_.cors.enable && req.method() == http::verb::options) {
    const cors_request cr{std::string(req.method_string()), header_value(req, "Origin"),
                          header_value(req, "Access-Control-Request-Method"),
                          header_value(req, "Access-Control-Request-Headers")};
    if (auto preflight = cors_preflight(options_.cors, cr)) {
      out.status = 204;
      const bool ok = co_await write_response(ex.stream, http::status::no_content, {}, ex.keep_alive(keep_if_answered_now),
                                              client_timeout(), *preflight);
      co_return ok && keep_if_answered_now;
    }
  }

  // 2. Route.
  if (rt.kind == route_kind::bad_request) co_return co_await answer(http::status::bad_request, "bad_request", rt.reason);
  if (rt.kind == route_kind::not_found) co_return co_await answer(http::status::not_found, "not_found", rt.reason);

  // 3. An address that failed to authenticate too often is refused before its credential goes anywhere.
  const std::string credential = credential_of(req);
  const bool logs_in = rt.label == "session" && req.method() == http::verb::post;
  if (!credential.empty() || logs_in) {
    if (const auto wait = failures_.refused(ex.client_or_peer(), now_())) {
      metrics_.rate_limited.inc();
      co_return co_await answer(http::status::too_many_requests, "too_many_requests",
                                "too many failed authentications from this address",
                                retry_after(std::to_string(*wait)));
    }
  }

  // Local routes (sign-up, identities): enabled at all, and within the address's rate.
  const bool local = rt.kind == route_kind::local;
  if (local && !options_.local) {
    co_return co_await answer(http::status::not_found, "not_found", "sign-up is not enabled on this couchgate");
  }
  if (local) {
    if (const auto wait = local_attempts_.refused(ex.client_or_peer(), now_())) {
      metrics_.rate_limited.inc();
      co_return co_await answer(http::status::too_many_requests, "too_many_requests",
                                "too many sign-up requests from this address", retry_after(std::to_string(*wait)));
    }
    local_attempts_.record_failure(ex.client_or_peer(), now_());  // every attempt counts, not only failed ones
  }

  // 4. Who is calling? CouchDB says, for the caller's own database and own identity.
  std::string user;
  bool verified = true;
  if (rt.kind == route_kind::user_db || (local && rt.target.starts_with("/_identity/"))) {
    if (credential.empty()) {
      co_return co_await answer(http::status::unauthorized, "unauthorized",
                                local ? "You are not authorized." : "You are not authorized to access this db.");
    }
    // A live feed's first exchange queues for the pool up to the feed's own timeout: many
    // clients connecting at once wait their turn instead of getting 503.
    std::optional<std::chrono::milliseconds> pool_wait;
    bool live_feed = false;
    if (options_.feeds && is_changes_path(rt.rest) && live_feed_kind(rt.query)) {
      auto parsed = parse_feed_request(rt.query);
      if (auto* r = std::get_if<feed_request>(&parsed)) {
        pool_wait = feed_pool_wait(*r, pool_.wait_timeout());
        live_feed = rt.kind == route_kind::user_db;
      }
    }
    const identity who = co_await who_is(ex, credential, pool_wait, live_feed);
    if (who.k == identity::kind::unavailable) {
      co_return co_await answer(http::status::service_unavailable, "service_unavailable",
                                "CouchDB did not answer who the caller is", retry_after("1"));
    }
    if (who.k == identity::kind::rejected) {
      failures_.record_failure(ex.client_or_peer(), now_());
      metrics_.auth_failures.inc();
      co_return co_await answer(http::status::unauthorized, "unauthorized", "Name or password is incorrect.");
    }
    user = who.name;
    out.user = who.name;
    verified = who.verified;
    // A caller just authenticated may have no usable database yet: a `_users` document written
    // a moment ago (the provisioner has not applied it yet: no database, or CouchDB's admin-only
    // default `_security`), or a JWT caller with no `_users` document at all.
    // Asked once per fresh `_session` answer (at most once per credential per session_cache_ttl):
    // a user deleted and recreated, or given the selected role, is seen at the next one.
    if (rt.kind == route_kind::user_db && who.session && options_.provision_caller) {
      if (!options_.provision_caller.ready(user)) {
        const auto& fn = options_.provision_caller.ensure;
        const policy::session_user& s = *who.session;
        const bool ok = co_await net::co_spawn(
            local_pool_->get_executor(), [&fn, &s]() -> net::awaitable<bool> { co_return fn(s); }, net::use_awaitable);
        if (!ok) {
          forget_credential(session_cache::key_of(credential));  // asked again (and provisioned) next time
          co_return co_await answer(http::status::service_unavailable, "service_unavailable",
                                    "couchgate could not make this user's database", retry_after("1"));
        }
      }
    }
  }
  if (local) co_return co_await serve_local(ex, rt, user, out);

  // 5. Whose database?
  if (rt.kind == route_kind::user_db || rt.kind == route_kind::shared_db) {
    if (options_.feeds && is_changes_path(rt.rest) && (req.method() == http::verb::get || req.method() == http::verb::post) &&
        live_feed_kind(rt.query)) {
      next.k = next_step::kind::feed;
      next.db = rt.kind == route_kind::user_db ? policy::user_db_name(options_.db_prefix, user) : options_.shared_db;
      next.user = std::move(user);
      next.credential = credential;
      next.verified = verified;
      co_return true;
    }
  }
  if (rt.kind == route_kind::user_db) {
    const admitted a = co_await admit(user);
    if (a != admitted::yes) {
      metrics_.user_limited.inc();
      if (a == admitted::queue_full) {
        co_return co_await answer(http::status::too_many_requests, "too_many_requests",
                                  "too many requests of this user in flight and waiting", retry_after("1"));
      }
      co_return co_await answer(http::status::service_unavailable, "service_unavailable",
                                "this user's earlier requests did not finish in time", retry_after("1"));
    }
    next.slot.slots = &slots_;
    next.slot.user = user;
    next.db = policy::user_db_name(options_.db_prefix, user);
    next.mount = "/me";
  } else if (rt.kind == route_kind::shared_db) {
    next.db = options_.shared_db;
    next.mount = "/shared";
  }
  next.target = pool_.address().base_path + (next.db.empty() ? rt.target : db_target(next.db, rt));
  next.announce = options_.feeds && !next.db.empty() &&
                  may_add_changes(couch_method(std::string_view(req.method_string().data(), req.method_string().size()),
                                               header_value(req, "X-HTTP-Method-Override").value_or(std::string())),
                                  rt.rest);
  next.k = next_step::kind::forward;
  co_return true;
}

net::awaitable<forwarder::admitted> forwarder::admit(const std::string& user) {
  // The timer is shared with the wake-up: a release on another thread posts its cancel to this
  // coroutine's executor, which may run after this frame is gone.
  auto timer = std::make_shared<net::steady_timer>(co_await net::this_coro::executor);
  timer->expires_after(options_.user_queue_timeout);
  auto w = std::make_shared<user_slots::waiter>();
  w->wake = [timer] { net::post(timer->get_executor(), [timer] { timer->cancel(); }); };
  switch (slots_.acquire(user, w)) {
    case user_slots::admission::granted:
      co_return admitted::yes;
    case user_slots::admission::refused:
      co_return admitted::queue_full;
    case user_slots::admission::queued:
      break;
  }
  error_code ec;
  co_await timer->async_wait(ec_token(ec));
  // Woken (cancelled) or the deadline: the slots' own record says which, under their lock.
  co_return slots_.abandon(user, w) ? admitted::timed_out : admitted::yes;
}

void forwarder::user_changed(const std::string& name) {
  // What is stored from now on counts: the user's first requests right after a sign-up (which
  // is a change too) stay cached. A parked feed's own check waits user_change_settle for
  // CouchDB's cache; a request answered by CouchDB inside that second is cached as CouchDB
  // answered it, and every forwarded request carries the credential to CouchDB anyway.
  const auto now = now_();
  sessions_.forget_user(name, now, now);
  routes_.forget_user(name, now, now);
  if (options_.feeds != nullptr) options_.feeds->recheck_user(feed_owner(name, {}));
}

void forwarder::forget_credential(const std::string& key) {
  sessions_.forget(key);
  routes_.forget(key);
}

net::awaitable<forwarder::identity> forwarder::who_is(server_exchange& ex, const std::string& credential,
                                                     std::optional<std::chrono::milliseconds> pool_wait,
                                                     bool live_feed) {
  const std::string key = session_cache::key_of(credential);
  if (auto name = sessions_.lookup(key, now_())) {
    metrics_.session_cache_hits.inc();
    co_return identity{identity::kind::user, std::move(*name), std::nullopt};
  }
  // A live feed only routes with the name: before it parks, CouchDB accepts the credential (its
  // first check, a `_changes` read with it; or GET /_session when that check is skipped), and a
  // 401 there ends the feed with 401 and forgets the credential here (serve_feed's refuse).
  if (live_feed) {
    if (auto name = routes_.lookup(key, now_())) {
      metrics_.route_cache_hits.inc();
      co_return identity{identity::kind::user, std::move(*name), std::nullopt, false};
    }
  }
  metrics_.session_cache_misses.inc();
  const auto& req = ex.parser.get();
  co_return co_await ask_session(ex.conn.context, key, header_value(req, "Authorization").value_or(std::string()),
                                 header_value(req, "Cookie").value_or(std::string()), pool_wait, pool_priority::normal);
}

net::awaitable<forwarder::identity> forwarder::ask_session(std::size_t context, std::string key,
                                                          std::string authorization, std::string cookie,
                                                          std::optional<std::chrono::milliseconds> pool_wait,
                                                          pool_priority priority) {
  http::request<http::string_body> probe{http::verb::get, pool_.address().base_path + "/_session", 11};
  probe.set(http::field::host, pool_.address().host_header);
  probe.set(http::field::accept, "application/json");
  if (!authorization.empty()) probe.set(http::field::authorization, authorization);
  if (!cookie.empty()) probe.set(http::field::cookie, cookie);
  const upstream_answer res = co_await exchange(context, probe, 64 * 1024, pool_wait, priority);
  if (res.k != upstream_answer::kind::answered) co_return identity{};
  if (res.status == 401) co_return identity{identity::kind::rejected, {}};
  if (res.status != 200) co_return identity{};
  auto who = policy::parse_session_answer(nlohmann::json::parse(res.body, nullptr, false));
  if (!who) co_return identity{identity::kind::rejected, {}};
  sessions_.store(key, who->name, now_());
  routes_.store(key, who->name, now_());
  co_return identity{identity::kind::user, who->name, std::move(who)};
}

std::shared_ptr<forwarder::credential_check> forwarder::recheck(net::any_io_executor executor, std::size_t context,
                                                                const http::fields& request, const std::string& key,
                                                                std::function<void()> notify,
                                                                std::optional<clock_type::time_point> urgent_since) {
  std::shared_ptr<credential_check> check;
  const bool urgent = urgent_since.has_value();
  std::string slot_key = urgent ? "urgent:" + key : key;
  {
    std::lock_guard lk(checks_mu_);
    auto& slot = checks_[slot_key];
    // An urgent check sent before the change it is asked for may carry the old answer: not joined
    // (it goes on, and leaves the slot alone when it ends).
    if (slot && (!urgent || slot->sent >= *urgent_since)) {
      slot->notify.push_back(std::move(notify));
      return slot;
    }
    slot = check = std::make_shared<credential_check>();
    check->sent = now_();
    check->notify.push_back(std::move(notify));
  }
  metrics_.feed_rechecks.inc();
  net::co_spawn(executor,
                run_recheck(context, header_value(request, "Authorization").value_or(std::string()),
                            header_value(request, "Cookie").value_or(std::string()), key, std::move(slot_key), urgent,
                            check),
                net::detached);
  return check;
}

std::optional<forwarder::identity> forwarder::recheck_result(const credential_check& check) {
  std::lock_guard lk(checks_mu_);
  return check.result;
}

net::awaitable<void> forwarder::run_recheck(std::size_t context, std::string authorization, std::string cookie,
                                            std::string key, std::string slot, bool urgent,
                                            std::shared_ptr<credential_check> check) {
  identity who;
  try {
    // Background work waits long for a connection: the feed stays parked (and is served its
    // writes) meanwhile; only the re-check is late, and only while the pool is saturated. An
    // urgent one waits as a normal request does (asked again a second later if it gives up).
    const auto wait = urgent ? std::optional<std::chrono::milliseconds>()
                             : std::optional<std::chrono::milliseconds>(std::chrono::minutes(5));
    const auto priority = urgent ? pool_priority::normal : pool_priority::background;
    who = co_await ask_session(context, key, std::move(authorization), std::move(cookie), wait, priority);
  } catch (const std::exception&) {
    who = identity{};  // asked again by the feed
  }
  std::vector<std::function<void()>> notify;
  {
    std::lock_guard lk(checks_mu_);
    check->result = std::move(who);
    notify = std::move(check->notify);
    if (auto it = checks_.find(slot); it != checks_.end() && it->second == check) checks_.erase(it);
  }
  for (auto& n : notify) n();
}

net::awaitable<std::pair<std::optional<upstream_lease>, acquire_error>> forwarder::take_connection(
    std::size_t context, std::optional<std::chrono::milliseconds> wait, pool_priority priority) {
  const auto start = now_();
  auto got = co_await pool_.acquire(context, wait, priority);
  if (priority == pool_priority::normal) {
    metrics_.upstream_wait.observe(std::chrono::duration<double>(now_() - start).count());
  }
  co_return got;
}

net::awaitable<forwarder::upstream_answer> forwarder::exchange(std::size_t context,
                                                               const http::request<http::string_body>& request,
                                                               std::size_t body_limit,
                                                               std::optional<std::chrono::milliseconds> pool_wait,
                                                               pool_priority priority) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto [leased, why] = co_await take_connection(context, pool_wait, priority);
    if (!leased) {
      if (why == acquire_error::timeout) {
        metrics_.upstream_busy.inc();
        co_return upstream_answer{upstream_answer::kind::busy};
      }
      co_return upstream_answer{};
    }
    auto& conn = leased->conn();
    const bool reused = conn.uses > 0;
    error_code ec;
    conn.stream.tcp().expires_after(options_.upstream_timeout);
    co_await http::async_write(conn.stream, request, ec_token(ec));
    http::response_parser<http::string_body> parser;
    parser.body_limit(body_limit);
    if (!ec) {
      conn.stream.tcp().expires_after(options_.upstream_timeout);
      co_await http::async_read(conn.stream, conn.buffer, parser, ec_token(ec));
    }
    if (ec) {
      if (reused && retryable(ec)) continue;  // the server closed an idle connection: once more on a fresh one
      co_return upstream_answer{ec == http::error::body_limit ? upstream_answer::kind::too_large
                                                              : upstream_answer::kind::unreachable};
    }
    auto& res = parser.get();
    note_keep_alive(conn, std::string_view(res[http::field::keep_alive].data(), res[http::field::keep_alive].size()));
    if (parser.keep_alive()) leased->keep();
    upstream_answer answered{upstream_answer::kind::answered, res.result_int(), std::move(res.body()), {}};
    const auto [first, last] = res.equal_range(http::field::set_cookie);
    for (auto it = first; it != last; ++it) {
      if (it->value().starts_with("AuthSession=")) answered.set_cookie = std::string(it->value());
    }
    co_return answered;
  }
  co_return upstream_answer{};
}

net::awaitable<bool> forwarder::serve_local(server_exchange& ex, const route& rt, const std::string& user,
                                            outcome& out) {
  const auto& req = ex.parser.get();
  bool keep = req.keep_alive() && ex.parser.is_done();
  const auto answer = [&](http::status status, std::string_view error, std::string_view reason,
                          header_list headers = {}) -> net::awaitable<bool> {
    out.status = static_cast<unsigned>(status);
    const header_list all = with_cors(options_.cors, req, std::move(headers));
    const bool ok = co_await write_json_error(ex.stream, status, error, reason, ex.keep_alive(keep), client_timeout(), all);
    co_return ok && keep;
  };

  local_request lr;
  lr.method = std::string(req.method_string());
  lr.path = rt.target.substr(0, rt.target.find('?'));
  lr.query = rt.target.substr(lr.path.size());
  lr.peer = ex.client_or_peer();
  lr.user = user;
  if (const auto it = req.find("Idempotency-Key"); it != req.end()) lr.idempotency_key = std::string(it->value());

  // The body, bounded (a sign-up is a few hundred bytes).
  std::vector<char> chunk(16u << 10);
  error_code ec;
  while (!ex.parser.is_done()) {
    ex.parser.get().body().data = chunk.data();
    ex.parser.get().body().size = chunk.size();
    ex.stream.tcp().expires_after(client_timeout());
    co_await http::async_read_some(ex.stream, ex.buffer, ex.parser, ec_token(ec));
    if (ec == http::error::need_buffer) ec = {};
    if (ec) co_return false;
    lr.body.append(chunk.data(), chunk.size() - ex.parser.get().body().size);
    if (lr.body.size() > options_.local_body_limit) {
      keep = false;
      co_return co_await answer(http::status::payload_too_large, "too_large", "the request body is too large");
    }
  }
  keep = req.keep_alive();

  // The handler may wait on CouchDB: it runs on a worker, and this coroutine resumes here after.
  const local_handler& fn = options_.local;
  local_answer a = co_await net::co_spawn(
      local_pool_->get_executor(), [&fn, &lr]() -> net::awaitable<local_answer> { co_return fn(lr); },
      net::use_awaitable);
  out.status = a.status;
  const header_list headers = with_cors(options_.cors, req, std::move(a.headers));
  const bool ok = co_await write_response(ex.stream, static_cast<http::status>(a.status), std::move(a.body), ex.keep_alive(keep),
                                          client_timeout(), headers);
  co_return ok && keep;
}

net::awaitable<bool> forwarder::forward(server_exchange& ex, next_step& next, outcome& out) {
  const std::string& target = next.target;
  const std::string& db = next.db;
  const std::string& mount = next.mount;
  auto& req = ex.parser.get();
  const bool body_expected = !ex.parser.is_done();
  const auto answer = [&](http::status status, std::string_view error, std::string_view reason,
                          header_list headers = {}) -> net::awaitable<bool> {
    out.status = static_cast<unsigned>(status);
    const bool keep = req.keep_alive() && ex.parser.is_done();
    const header_list all = with_cors(options_.cors, req, std::move(headers));
    const bool ok = co_await write_json_error(ex.stream, status, error, reason, ex.keep_alive(keep), client_timeout(), all);
    co_return ok && keep;
  };

  http::request<http::buffer_body> up;
  if (req.method() == http::verb::unknown) {
    up.method_string(req.method_string());
  } else {
    up.method(req.method());
  }
  up.target(target);
  up.version(11);
  for (const auto& f : req) {
    if (hop_by_hop(f.name(), f.name_string()) || proxy_auth_header(f.name_string())) continue;
    if (beast::iequals(f.name_string(), options_.scheme_header)) continue;
    up.insert(f.name_string(), f.value());
  }
  up.set(http::field::host, pool_.address().host_header);
  if (!body_expected && (req.method() == http::verb::post || req.method() == http::verb::put)) {
    up.content_length(0);
  } else if (body_expected) {
    if (req.chunked()) {
      up.chunked(true);
    } else if (const auto length = ex.parser.content_length()) {
      up.content_length(*length);
    }
  }
  const bool expect_continue = body_expected && beast::iequals(req[http::field::expect], "100-continue");

  // The relay buffer is allocated once a connection is leased, not before the wait: thousands of
  // clients may queue for the pool at once, and a buffer each while they wait was most of the
  // memory of 10 000 live clients (64 KB each; freed, it stays scattered in the malloc arenas).
  std::vector<char> buffer;
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto acquired = co_await take_connection(ex.conn.context);
    auto& lease = acquired.first;
    if (!lease) {
      if (acquired.second == acquire_error::timeout) {
        metrics_.upstream_busy.inc();
        co_return co_await answer(http::status::service_unavailable, "service_unavailable",
                                  "all of couchgate's connections to CouchDB are busy", retry_after("1"));
      }
      co_return co_await answer(http::status::bad_gateway, "bad_gateway", "CouchDB is not reachable");
    }
    if (buffer.empty()) buffer.resize(options_.relay_buffer);
    auto& conn = lease->conn();
    const bool reused = conn.uses > 0;
    error_code ec;

    if (expect_continue && attempt == 0) {
      // The client waits for this before sending its body: we are ready to stream it now.
      http::response<http::empty_body> go{http::status::continue_, 11};
      ex.stream.tcp().expires_after(client_timeout());
      co_await http::async_write(ex.stream, go, ec_token(ec));
      if (ec) co_return false;
    }

    // Request: header, then the body streamed from the client.
    http::request_serializer<http::buffer_body> request_writer{up};
    const relay_result sent = co_await relay(ex.stream, ex.buffer, ex.parser, client_timeout(), conn.stream,
                                             request_writer, up, options_.upstream_timeout, buffer);
    if (sent == relay_result::read_failed) {
      out.status = 400;
      co_return false;  // the client went away or sent a broken body; the upstream socket is dropped
    }
    if (sent == relay_result::write_failed) {
      access_log()->debug("sending the request to CouchDB failed");
      if (reused && !body_expected && attempt == 0) continue;  // stale idle connection: nothing lost, try a fresh one
      co_return co_await answer(http::status::bad_gateway, "bad_gateway", "the connection to CouchDB failed");
    }

    // Response: header, then the body streamed to the client.
    http::response_parser<http::buffer_body> parser;
    parser.body_limit(std::numeric_limits<std::uint64_t>::max());
    if (req.method() == http::verb::head) parser.skip(true);
    conn.stream.tcp().expires_after(options_.upstream_timeout);
    co_await http::async_read_header(conn.stream, conn.buffer, parser, ec_token(ec));
    if (ec) {
      if (reused && !body_expected && attempt == 0 && retryable(ec)) continue;
      access_log()->debug("reading the response header from CouchDB failed: {}", ec.message());
      co_return co_await answer(http::status::bad_gateway, "bad_gateway", "CouchDB closed the connection");
    }
    const auto& upstream_res = parser.get();
    note_keep_alive(conn, std::string_view(upstream_res[http::field::keep_alive].data(),
                                           upstream_res[http::field::keep_alive].size()));
    http::response<http::buffer_body> res;
    res.result(upstream_res.result_int());
    res.reason(upstream_res.reason());
    res.version(req.version() == 10 ? 10 : 11);
    const std::string client_base =
        req.find(http::field::host) == req.end()
            ? std::string()
            : std::string(ex.secure ? "https://" : "http://") +
                  std::string(req[http::field::host]);
    for (const auto& f : upstream_res) {
      if (hop_by_hop(f.name(), f.name_string())) continue;
      if (!db.empty() && (f.name() == http::field::location || f.name() == http::field::content_location)) {
        std::string_view value(f.value().data(), f.value().size());
        std::string stripped;
        if (!pool_.address().base_path.empty()) {  // CouchDB under a path: take it out before matching the db
          const auto at = value.find(pool_.address().base_path + "/");
          if (at != std::string_view::npos) {
            stripped = std::string(value.substr(0, at)) + std::string(value.substr(at + pool_.address().base_path.size()));
            value = stripped;
          }
        }
        res.insert(f.name(), rewrite_location(value, db, mount, client_base));
        continue;
      }
      res.insert(f.name_string(), f.value());
    }
    const unsigned status = upstream_res.result_int();
    const bool no_body = req.method() == http::verb::head || status == 204 || status == 304 || status / 100 == 1;
    bool client_keep = req.keep_alive() && ex.parser.is_done();
    if (no_body) {
      if (upstream_res.has_content_length()) res.set(http::field::content_length, upstream_res[http::field::content_length]);
    } else if (const auto length = parser.content_length()) {
      res.content_length(*length);
    } else if (res.version() == 11) {
      res.chunked(true);
    } else {
      client_keep = false;  // HTTP/1.0 client, length unknown: the end of the body is the end of the connection
    }
    client_keep = ex.keep_alive(client_keep);
    res.keep_alive(client_keep);
    out.status = status;
    // The write is committed (a 202 may not be everywhere yet, batch=ok's not at all; a read of
    // another shard copy may not see it yet either: its `_db_updates` event still comes).
    if (next.announce && status / 100 == 2) options_.feeds->notify_written(db);
    if (status == 401) {
      // A cached identity CouchDB no longer accepts is asked about again on the next request.
      if (!db.empty()) forget_credential(session_cache::key_of(credential_of(req)));
      failures_.record_failure(ex.client_or_peer(), now_());
      metrics_.auth_failures.inc();
    }

    // CouchDB's answer all read: its connection and the caller's slot are given back before the
    // last bytes are written to the client (nothing but that write is left of this request).
    const auto upstream_done = [&] {
      if (parser.keep_alive()) lease->keep();
      lease.reset();
      next.slot.release();
    };
    http::response_serializer<http::buffer_body> response_writer{res};
    const relay_result relayed = co_await relay(conn.stream, conn.buffer, parser, options_.upstream_timeout, ex.stream,
                                                response_writer, res, client_timeout(), buffer, upstream_done);
    if (relayed != relay_result::done) co_return false;  // header already sent: only closing tells the client
    co_return client_keep;
  }
  co_return co_await answer(http::status::bad_gateway, "bad_gateway", "the connection to CouchDB failed");
}

}  // namespace couchgate::gateway::front
