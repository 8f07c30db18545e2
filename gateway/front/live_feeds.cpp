// Owns: serving one parked live `_changes` feed (issue 14), the forwarder's serve_feed(): the
// client's request becomes normal `_changes?since=...` reads over the shared upstream pool (the
// client's own credential, the same parameters and POST body each time), and between reads the
// client is parked with no upstream connection: its session coroutine waits on one timer that
// a wake (feed_registry, fed by the change notifier), a heartbeat, the timeout or the
// credential's re-validation ends. Decisions are feed_park's; this file does the I/O.
//
// Order that no write is missed by: subscribe, then read; after every read the pending wake is
// taken before parking (a change announced during the read means one more read).
//
// Longpoll: the response header is held back until the first heartbeat is due, so that a
// credential refused before then is answered with a real 401. After it, a refused credential
// ends the body with CouchDB's error object and the connection is closed (the client's next
// request is answered 401: the cached identity is forgotten). Continuous and eventsource send
// the header at once; a refused credential ends the feed.
#include "gateway/front/forwarder.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

#include <nlohmann/json.hpp>

#include "gateway/front/feed_memo.hpp"
#include "gateway/front/responses.hpp"
#include "replicator/transport/couch_client.hpp"
#include "replicator/logger.hpp"

namespace couchgate::gateway::front {
namespace {

std::shared_ptr<spdlog::logger> feed_log() {
  static auto l = replicator::named_logger("feeds");
  return l;
}

// The timer a parked feed waits on; a wake cancels it from the feed's own executor.
struct feed_waiter {
  explicit feed_waiter(any_stream::executor_type ex) : timer(ex) {}
  net::steady_timer timer;
};

std::string seq_text(const nlohmann::json& seq) {
  if (seq.is_string()) return seq.get<std::string>();
  if (seq.is_null()) return {};
  return seq.dump();
}

// Continuous: the line that ends the feed.
std::string last_seq_line(const nlohmann::json& seq, long long pending) {
  nlohmann::json j = nlohmann::json::object();
  j["last_seq"] = seq;
  j["pending"] = pending;
  return j.dump() + "\n";
}

// Longpoll: nothing happened before the timeout.
std::string empty_answer(const std::string& since) {
  nlohmann::json j = nlohmann::json::object();
  j["results"] = nlohmann::json::array();
  j["last_seq"] = since;
  j["pending"] = 0;
  return j.dump() + "\n";
}

// When a parked feed's credential is asked about again: when what the session cache holds for
// it runs out (at least a second apart when the cache is off).
clock_type::time_point next_validation(const session_cache& sessions, const std::string& key, clock_type::time_point now) {
  const auto at = sessions.expires(key);
  return at ? *at : now + std::max(sessions.ttl(), std::chrono::milliseconds(1000));
}

double seconds_between(clock_type::time_point from, clock_type::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

header_list one_header(const char* name, std::string value) {
  header_list h;
  h.emplace_back(name, std::move(value));
  return h;
}

}  // namespace

net::awaitable<bool> forwarder::serve_feed(server_exchange& ex, const route& rt, const std::string& db,
                                           const std::string& user, const std::string& credential, bool verified,
                                           outcome& out) {
  auto& req = ex.parser.get();
  feed_registry& feeds = *options_.feeds;
  bool keep = req.keep_alive() && ex.parser.is_done();
  const auto answer = [&](http::status status, std::string_view error, std::string_view reason,
                          header_list headers = {}) -> net::awaitable<bool> {
    out.status = static_cast<unsigned>(status);
    const header_list all = with_cors(options_.cors, req, std::move(headers));
    const bool ok = co_await write_json_error(ex.stream, status, error, reason, ex.keep_alive(keep), client_timeout(), all);
    co_return ok && keep;
  };

  auto parsed = parse_feed_request(
      rt.query, std::string_view(req["Last-Event-ID"].data(), req["Last-Event-ID"].size()));
  if (auto* why = std::get_if<std::string>(&parsed)) co_return co_await answer(http::status::bad_request, "bad_request", *why);
  const feed_request request = std::get<feed_request>(std::move(parsed));

  // A POST body (doc_ids, selector) is sent again with every read: kept, bounded.
  std::string body;
  if (!ex.parser.is_done()) {
    std::vector<char> chunk(16u << 10);
    error_code ec;
    while (!ex.parser.is_done()) {
      ex.parser.get().body().data = chunk.data();
      ex.parser.get().body().size = chunk.size();
      ex.stream.tcp().expires_after(client_timeout());
      co_await http::async_read_some(ex.stream, ex.buffer, ex.parser, ec_token(ec));
      if (ec == http::error::need_buffer) ec = {};
      if (ec) co_return false;
      body.append(chunk.data(), chunk.size() - ex.parser.get().body().size);
      if (body.size() > options_.feed_body_limit) {
        keep = false;
        co_return co_await answer(http::status::payload_too_large, "too_large",
                                  "a live _changes request body is limited to " +
                                      std::to_string(options_.feed_body_limit) + " bytes");
      }
    }
    keep = req.keep_alive();
  }

  // The connection's read buffer, grown by a POST body just read, is not needed while the feed
  // waits: given back unless it holds the client's next pipelined request (http_server already
  // gave it back for a request without a body). With 10 000 parked clients this is ~40 MB.
  if (ex.buffer.size() == 0) ex.buffer.shrink_to_fit();

  // Subscribed before the first read.
  const std::string credential_key = session_cache::key_of(credential);
  const std::string cap_key = feed_owner(user, credential_key);
  auto waiter = std::make_shared<feed_waiter>(ex.stream.get_executor());
  // Ends the parked wait from any thread: a wake, or the answer of a credential re-check. The
  // waiter is only looked at on its own thread, so it is never destroyed on the caller's.
  const auto wake_me = [w = std::weak_ptr<feed_waiter>(waiter), on = waiter->timer.get_executor()] {
    net::post(on, [w] {
      if (auto s = w.lock()) s->timer.cancel();
    });
  };
  const std::size_t estimate = sizeof(feed_state) + sizeof(feed_request) + sizeof(feed_waiter) +
                               request.since.capacity() + request.passthrough.capacity() + body.capacity() +
                               ex.buffer.capacity() + 2 * credential_key.capacity();
  const auto id = feeds.subscribe(db, cap_key, wake_me, estimate);
  if (!id) {
    metrics_.user_limited.inc();
    co_return co_await answer(http::status::too_many_requests, "too_many_requests",
                              "too many live _changes feeds of this user are open (front.max_parked_per_user)",
                              one_header("Retry-After", "5"));
  }
  feed_read_gate& gate = *options_.feed_gate;
  struct unsubscribe {
    feed_registry& feeds;
    feed_read_gate& gate;
    feed_registry::id id;
    ~unsubscribe() {
      gate.leave(id);  // a turn held or a place in line, whichever way the feed ends
      feeds.unsubscribe(id);
    }
  } unsubscribe_at_end{feeds, gate, *id};

  feed_state state(request, now_(), next_validation(sessions_, credential_key, now_()));

  // The response as it goes: held back (longpoll) until rows, a heartbeat or the end.
  bool header_sent = false;
  // CouchDB refreshes a cookie session on a request made with it (once 10% of its timeout has
  // passed): the newest `Set-Cookie: AuthSession=...` of the feed's reads goes with the
  // client's header, so a client that only syncs live keeps its session.
  std::string fresh_cookie;
  const auto with_cookie = [&](header_list h) {
    if (!fresh_cookie.empty()) h.emplace_back("Set-Cookie", fresh_cookie);
    return h;
  };
  const auto send_header = [&]() -> net::awaitable<bool> {
    http::response<http::empty_body> res{http::status::ok, 11};
    res.set(http::field::content_type,
            request.kind == feed_kind::eventsource ? "text/event-stream" : "application/json");
    res.set(http::field::cache_control, "must-revalidate");
    res.chunked(true);
    keep = ex.keep_alive(keep);
    res.keep_alive(keep);
    // couchgate writes this answer, not CouchDB: CORS headers as for its other own answers.
    for (auto& [name, value] : with_cors(options_.cors, req, {})) res.set(name, value);
    if (!fresh_cookie.empty()) res.insert(http::field::set_cookie, fresh_cookie);
    http::response_serializer<http::empty_body> writer{res};
    error_code ec;
    ex.stream.tcp().expires_after(client_timeout());
    co_await http::async_write_header(ex.stream, writer, ec_token(ec));
    header_sent = !ec;
    out.status = 200;
    co_return !ec;
  };
  const auto send_chunk = [&](std::string data) -> net::awaitable<bool> {
    if (!header_sent && !co_await send_header()) co_return false;
    if (data.empty()) co_return true;
    error_code ec;
    ex.stream.tcp().expires_after(client_timeout());
    co_await net::async_write(ex.stream, http::make_chunk(net::buffer(data)), ec_token(ec));
    co_return !ec;
  };
  const auto end_body = [&]() -> net::awaitable<bool> {
    if (!header_sent && !co_await send_header()) co_return false;
    error_code ec;
    ex.stream.tcp().expires_after(client_timeout());
    co_await net::async_write(ex.stream, http::make_chunk_last(), ec_token(ec));
    co_return !ec && keep;
  };
  // The whole answer at once (longpoll, nothing sent yet) or the rest of the body (continuous
  // and eventsource always stream, with their own content type).
  const auto finish = [&](std::string text) -> net::awaitable<bool> {
    if (!header_sent && request.kind == feed_kind::longpoll) {
      out.status = 200;
      const header_list headers =
          with_cookie(with_cors(options_.cors, req, one_header("Cache-Control", "must-revalidate")));
      const bool ok = co_await write_response(ex.stream, http::status::ok, std::move(text), ex.keep_alive(keep), client_timeout(), headers);
      co_return ok && keep;
    }
    if (!co_await send_chunk(std::move(text))) co_return false;
    co_return co_await end_body();
  };
  // CouchDB refused the credential (or another error): passed on while it still can be. A 401
  // (credential no longer valid) or 403 (no longer a member of the database) to a read made
  // with the client's own credential forgets it in both caches (the route memo too): the next
  // request asks GET /_session again. A 403 stays a 403: the credential itself may be fine.
  const auto refuse = [&](unsigned status, std::string text) -> net::awaitable<bool> {
    if (status == 401 || status == 403) forget_credential(credential_key);
    if (status == 401) {
      failures_.record_failure(ex.client_or_peer(), now_());
      metrics_.auth_failures.inc();
    }
    if (!header_sent) {
      out.status = status;
      const header_list headers = with_cookie(with_cors(options_.cors, req, {}));
      co_return co_await write_response(ex.stream, static_cast<http::status>(status), std::move(text), false,
                                        client_timeout(), headers);
    }
    // Too late for a status: the longpoll body becomes CouchDB's error object; a continuous
    // or eventsource feed just ends. The connection closes either way.
    if (request.kind == feed_kind::longpoll) co_await send_chunk(std::move(text));
    keep = false;
    co_await end_body();
    co_return false;
  };

  // A longpoll answered here is remembered (feed_memo.hpp): the client's next request from
  // that last_seq may park at once if nothing of the database is announced meanwhile.
  // `since_mark`: the read mark of the read that state.since() comes from.
  // Not for a cookie session: CouchDB refreshes the cookie only on a request made with it, and
  // a skipped read would keep the client from ever getting the fresh one.
  const bool cookie_session = req.find(http::field::authorization) == req.end() && req.find(http::field::cookie) != req.end();
  const std::string memo_key =
      request.kind == feed_kind::longpoll && !cookie_session
          ? feed_memo_key(credential_key, std::string_view(req.method_string().data(), req.method_string().size()),
                          rt.query, body)
          : std::string();
  std::optional<feed_read_mark> since_mark;
  // Until when an answer may be remembered: a session cache lifetime after the last real read
  // (a feed that skipped its read keeps the record's expiry: feed_registry::skip_first_check).
  feed_clock::time_point memo_expires{};
  const auto remember = [&](const std::string& last_seq) {
    if (memo_key.empty() || !since_mark) return;
    feeds.remember(db, memo_key, last_seq, *since_mark, memo_expires);
  };

  // The feed's timeout: CouchDB's answer when nothing changed.
  const auto time_out = [&]() -> net::awaitable<bool> {
    state.finish();
    remember(state.since());
    std::string text = request.kind == feed_kind::longpoll     ? empty_answer(state.since())
                       : request.kind == feed_kind::continuous ? last_seq_line(state.since(), 0)
                                                               : std::string();
    co_return co_await finish(std::move(text));
  };
  const std::string heartbeat_text = request.kind == feed_kind::eventsource ? "event: heartbeat\ndata: \n\n" : "\n";

  bool first_read = true;
  const std::string changes_path = pool_.address().base_path + "/" + encode_db_name(db) + "/_changes";
  // The client re-issues a longpoll couchgate answered from this `since`, and nothing of the
  // database was announced since that answer's read: parked at once, no first check. The mark
  // is taken before the look (a change announced after it forgets the record or wakes us).
  // A credential CouchDB has not accepted within session_cache_ttl (routed by the route memo
  // alone) is asked about at once, in the background (GET /_session, lighter for CouchDB than a
  // `_changes` read, which opens the database), while the feed parks: a 401 there ends the feed
  // (with a real 401 while the longpoll's header is still held back), and a write meanwhile is
  // read with the credential itself, which CouchDB judges.
  const auto still_accepted = [&](const identity& who) {
    return !(who.k == identity::kind::rejected || (who.k == identity::kind::user && !user.empty() && who.name != user));
  };
  bool skip_read = false;
  if (!memo_key.empty()) {
    const feed_read_mark mark = feeds.mark_read(db, false);
    if (const auto expires = feeds.skip_first_check(db, memo_key, request, now_())) {
      skip_read = true;
      since_mark = mark;
      memo_expires = *expires;
      first_read = false;
      state.on_fetched(0, {}, false, now_());  // as a first check that found nothing new
      if (!verified) state.revalidated(now_());
    }
  }
  // The credential's re-check in flight (forwarder::recheck), if any; its answer ends the wait.
  std::shared_ptr<credential_check> check;
  // The user's `_users` document changed (feed_registry::recheck_user) at `changed_at`: the
  // credential is asked about again at `urgent_due` (user_change_settle later), whatever the
  // session cache holds, as a normal request (a background check lags under load), until a check
  // sent after the change is answered yes or no. Until then nothing moves the re-validation later
  // than `urgent_due`: an answer that came in meanwhile may predate CouchDB's own cache forgetting
  // the old document.
  std::optional<clock_type::time_point> changed_at;
  std::optional<clock_type::time_point> urgent_due;
  bool check_urgent = false;  // `check` is such a check, sent after `changed_at`
  const auto revalidate_at = [&](clock_type::time_point t) {
    state.revalidated(urgent_due ? std::min(t, *urgent_due) : t);
  };
  // When the change that ended the last park was announced: the wake's latency, observed once
  // the rows it brought are written to the client (couchgate_front_feed_wake_seconds).
  std::optional<feed_clock::time_point> woken_since;
  const auto rows_written = [&] {
    if (woken_since) {
      const auto now = feed_clock::now();
      const auto lag = now - *woken_since;
      metrics_.feed_wake.observe(std::chrono::duration<double>(lag).count());
      if (delivery_lag_.due(now, lag)) {
        const auto pool = pool_.stats();
        feed_log()->warn(
            "live feed deliveries are falling behind: a change reached its client {} ms after it was announced; {} "
            "feeds wait for a turn to read (at most {} read at once), {} requests wait for one of the {} front door "
            "connections to CouchDB. If CouchDB has CPU to spare, raise front.upstream.max_connections "
            "(couchgate_front_feed_wake_seconds, couchgate_front_upstream_wait_seconds); warned at most once a minute",
            std::chrono::duration_cast<std::chrono::milliseconds>(lag).count(), gate.waiting(), gate.limit(),
            pool.waiting, pool_.max_connections());
      }
    }
    woken_since.reset();
  };
  // The pool, or the turn to read, still busy at the feed's deadline (feed_state::on_busy): a
  // heartbeat and wait on (nullopt), or the feed ends with its timeout's answer or 503, out of
  // the gate first (whether the connection carries another request).
  const auto still_busy = [&](feed_clock::time_point now) -> net::awaitable<std::optional<bool>> {
    switch (state.on_busy(now)) {
      case feed_busy::retry:
        break;
      case feed_busy::heartbeat:
        if (!co_await send_chunk(heartbeat_text)) co_return false;
        state.heartbeat_sent(now_());
        break;
      case feed_busy::timeout:
        gate.leave(*id);
        co_return co_await time_out();
      case feed_busy::refuse:
        gate.leave(*id);
        co_return co_await refuse(503, json_error("service_unavailable",
                                                  "all of couchgate's connections to CouchDB are busy"));
    }
    co_return std::nullopt;
  };
  // 1 and 2: one normal read from where the client is, and what the client gets of it. A
  // coroutine of its own: what a read needs (the request, CouchDB's answer, its parse) is
  // allocated for the read and gone while the feed is parked (10 000 parked feeds).
  struct read_step {
    enum kind { park, again, end } k = park;
    bool keep = false;  // end: whether the connection carries another request
  };
  const auto read_once = [&]() -> net::awaitable<read_step> {
    // 1. One normal read from where the client is.
    http::request<http::string_body> up{body.empty() && req.method() == http::verb::get ? http::verb::get
                                                                                        : http::verb::post,
                                        changes_path + upstream_changes_query(request, state.since(), state.fetch_limit()),
                                        11};
    up.set(http::field::host, pool_.address().host_header);
    up.set(http::field::accept, "application/json");
    if (auto it = req.find(http::field::authorization); it != req.end()) up.set(http::field::authorization, it->value());
    if (auto it = req.find(http::field::cookie); it != req.end()) up.set(http::field::cookie, it->value());
    if (up.method() == http::verb::post) {
      up.set(http::field::content_type, "application/json");
      up.body() = body;
      up.prepare_payload();
    }
    // Every connection busy: the read queues again (heartbeats written meanwhile) until the
    // feed's own timeout, never a 503 for a feed that can still wait.
    const feed_read_mark read_mark = feeds.mark_read(db);
    // A change announced while the feed waited for its turn is read now, not once more after.
    if (auto announced = feeds.take_wake(*id); announced && !woken_since) woken_since = announced;
    upstream_answer got;
    struct end_turn {
      feed_read_gate& gate;
      feed_registry::id id;
      ~end_turn() { gate.leave(id); }
    };
    {
      const end_turn turn_ends_with_the_exchange{gate, *id};  // the answer (or none) is in: the next feed's turn
      const auto read_started = now_();
      for (;;) {
        got = co_await exchange(ex.conn.context, up, options_.feed_answer_limit,
                                state.pool_wait(now_(), pool_.wait_timeout(), !first_read));
        if (got.k != upstream_answer::kind::busy) break;
        if (const auto ended = co_await still_busy(now_())) co_return read_step{read_step::end, *ended};
      }
      if (woken_since) metrics_.feed_read.observe(seconds_between(read_started, now_()));
    }
    if (got.k == upstream_answer::kind::too_large) {
      const bool k = co_await refuse(502, json_error("bad_gateway", "CouchDB's _changes answer is larger than couchgate "
                                                                   "reads for a live feed: ask with a limit"));
      co_return read_step{read_step::end, k};
    }
    if (got.k != upstream_answer::kind::answered) {
      const bool k = co_await refuse(502, json_error("bad_gateway", "CouchDB is not reachable"));
      co_return read_step{read_step::end, k};
    }
    if (!got.set_cookie.empty()) fresh_cookie = std::move(got.set_cookie);
    if (got.status == 401) {
      feed_log()->info("db={} user={}: credential no longer accepted; live feed ended with 401 (CouchDB refused a "
                       "_changes read)", db, user.empty() ? "-" : user);
    }
    if (got.status != 200) {
      const bool k = co_await refuse(got.status, std::move(got.body));
      co_return read_step{read_step::end, k};
    }
    // CouchDB accepted the credential just now (the read carried it): what it names is known
    // to be valid for session_cache_ttl more, and the parked feed re-validates from now.
    if (!user.empty() && !credential.empty()) {
      sessions_.store(credential_key, user, now_());
      routes_.store(credential_key, user, now_());
      revalidate_at(next_validation(sessions_, credential_key, now_()));
    }
    if (first_read && options_.test_check_delay.count() > 0) {
      feed_log()->warn("db={}: test fail point: first check answered, held {} ms before it is looked at", db,
                       options_.test_check_delay.count());
      net::steady_timer hold(ex.stream.get_executor(), options_.test_check_delay);
      error_code ec;
      co_await hold.async_wait(ec_token(ec));
    }
    first_read = false;
    auto answer_json = nlohmann::json::parse(got.body, nullptr, false);
    if (!answer_json.is_object() || !answer_json.contains("results") || !answer_json["results"].is_array()) {
      const bool k = co_await refuse(502, json_error("bad_gateway", "CouchDB's _changes answer has no results array"));
      co_return read_step{read_step::end, k};
    }
    auto& rows = answer_json["results"];
    since_mark = read_mark;  // state.since() now comes from this read
    memo_expires = now_() + sessions_.ttl();
    const nlohmann::json resume = replicator::couch_client::resume_seq(answer_json);
    const auto pending_wake = feeds.take_wake(*id);  // a change announced while this read ran
    const bool pending = pending_wake.has_value();
    if (pending && !woken_since) woken_since = pending_wake;
    const fetch_decision d = state.on_fetched(rows.size(), seq_text(resume), pending, now_());

    // 2. What the client gets.
    // CouchDB's `pending` (rows left after a limit), when it is a whole number: read off the wire,
    // never trusted to be one.
    const auto pending_rows = answer_json.is_object() && answer_json.contains("pending") &&
                                      answer_json["pending"].is_number_integer()
                                  ? std::optional<long long>(answer_json["pending"].get<long long>())
                                  : std::nullopt;
    if (d.send_rows) {
      if (request.kind == feed_kind::longpoll) {
        // Resume from the last row: a last_seq past it may count a write the answer did not carry.
        if (answer_json.contains("last_seq") && answer_json["last_seq"] != resume) {
          answer_json["last_seq"] = resume;
          got.body = answer_json.dump();
        }
        if (answer_complete(rows.size(), state.fetch_limit(), pending_rows)) remember(seq_text(resume));
        const bool ok = co_await finish(std::move(got.body));
        rows_written();  // (ok is whether the connection stays open, not whether it was written)
        co_return read_step{read_step::end, ok};
      }
      std::string text;
      for (const auto& row : rows) {
        if (request.kind == feed_kind::eventsource) {
          text += "data: " + row.dump() + "\nid: " + (row.contains("seq") ? seq_text(row["seq"]) : std::string()) + "\n\n";
        } else {
          text += row.dump() + "\n";
        }
      }
      if (d.end) {
        if (request.kind == feed_kind::continuous) text += last_seq_line(resume, pending_rows.value_or(0));
        const bool ok = co_await finish(std::move(text));
        rows_written();  // (ok is whether the connection stays open, not whether it was written)
        co_return read_step{read_step::end, ok};
      }
      if (!co_await send_chunk(std::move(text))) co_return read_step{read_step::end, false};
      rows_written();
    } else if (d.end) {  // limit=0
      std::string text = request.kind == feed_kind::longpoll     ? std::move(got.body)
                         : request.kind == feed_kind::continuous ? last_seq_line(resume, 0)
                                                                 : std::string();
      const bool k = co_await finish(std::move(text));
      co_return read_step{read_step::end, k};
    }
    co_return read_step{d.fetch_again ? read_step::again : read_step::park, false};
  };

  for (;; skip_read = false) {
    if (!skip_read) {
      // 0. A turn to read (feed_read_gate), waited for parked: heartbeats and the feed's end
      // go on meanwhile; a change announced meanwhile is read with the turn.
      const auto turn_asked = now_();
      while (!gate.enter(*id, !first_read, wake_me)) {
        const auto deadline = state.turn_deadline();
        waiter->timer.expires_at(deadline);
        error_code ec;
        co_await waiter->timer.async_wait(ec_token(ec));  // cancelled when the turn comes
        const auto now = now_();
        if (now < deadline) continue;
        if (const auto ended = co_await still_busy(now)) co_return *ended;
      }
      if (woken_since) metrics_.feed_turn_wait.observe(seconds_between(turn_asked, now_()));
      const read_step r = co_await read_once();
      if (r.k == read_step::end) co_return r.keep;
      if (r.k == read_step::again) continue;
    }

    // 3. Parked: no upstream connection, one timer.
    feeds.park(*id, replicator::couch_client::seq_number(nlohmann::json(state.since())));
    woken_since.reset();  // a wake that brought no rows
    bool woken = false;
    while (!woken) {
      if (feeds.take_recheck(*id) && !credential.empty()) {
        changed_at = now_();
        urgent_due = *changed_at + user_change_settle;
        check.reset();  // whatever is in flight may have been answered before the change
        state.revalidated(*urgent_due);
      }
      if (check) {
        if (auto who = recheck_result(*check)) {
          check.reset();
          if (check_urgent) {
            // Unanswered (CouchDB unavailable, the pool full): asked again urgently a second later.
            urgent_due.reset();
            if (who->k == identity::kind::unavailable) urgent_due = now_() + std::chrono::seconds(1);
          }
          if (!still_accepted(*who)) {
            feeds.unpark(*id);
            feed_log()->info("db={} user={}: credential no longer accepted; live feed ended with 401", db,
                             user.empty() ? "-" : user);
            co_return co_await refuse(401, json_error("unauthorized", "Name or password is incorrect."));
          }
          // CouchDB unavailable (or the pool saturated for minutes): asked again soon.
          revalidate_at(who->k == identity::kind::user ? next_validation(sessions_, credential_key, now_())
                                                       : now_() + std::chrono::seconds(1));
        }
      }
      if (auto announced = feeds.take_wake(*id)) {
        woken_since = announced;
        woken = true;
        break;
      }
      const auto now = now_();
      switch (state.due(now)) {
        case feed_due::timeout:
          feeds.unpark(*id);
          co_return co_await time_out();
        case feed_due::revalidate: {
          if (credential.empty()) {
            state.revalidated(now + std::chrono::hours(24 * 365));  // anonymous: nothing to re-validate
            break;
          }
          if (urgent_due && now >= *urgent_due) {
            urgent_due.reset();
            check = recheck(ex.stream.get_executor(), ex.conn.context, req, credential_key, wake_me, changed_at);
            check_urgent = true;
            state.revalidated(now + std::chrono::hours(24));  // the check's answer sets the next one
            break;
          }
          // The session cache may already hold it (another request, or a read, was accepted).
          if (sessions_.expires(credential_key).value_or(now) > now) {
            revalidate_at(next_validation(sessions_, credential_key, now));
            break;
          }
          if (!check) {
            check = recheck(ex.stream.get_executor(), ex.conn.context, req, credential_key, wake_me);
            check_urgent = false;
          }
          revalidate_at(now + std::chrono::hours(24));  // the check's answer sets the next one
          break;
        }
        case feed_due::heartbeat:
          if (!co_await send_chunk(heartbeat_text)) {
            co_return false;  // the client went away
          }
          state.heartbeat_sent(now_());
          break;
        case feed_due::none: {
          waiter->timer.expires_at(state.next_deadline());
          error_code ec;
          co_await waiter->timer.async_wait(ec_token(ec));  // cancelled by a wake
          break;
        }
      }
    }
    feeds.unpark(*id);
    state.on_wake();
  }
}

}  // namespace couchgate::gateway::front
