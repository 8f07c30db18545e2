// Tests for replicator/server_gate.hpp: pacing on overload and the credential hold, with an
// injected clock (time points are built from a fixed origin; nothing sleeps).
#include <doctest/doctest.h>

#include <chrono>
#include <string>

#include "replicator/server_gate.hpp"

using namespace couchgate::replicator;
using namespace std::chrono_literals;

namespace {
const gate_clock::time_point t0 = gate_clock::time_point{} + 1000h;

// Starts one request at `now` (it must be admitted) and returns whether it was the probe.
bool start(server_gate& g, gate_clock::time_point now) {
  const auto d = g.admit(now);
  REQUIRE(d.action == gate_action::start);
  return d.probe;
}
}  // namespace

TEST_CASE("server_gate: a fresh gate sends one probe, then everything once the credential is accepted") {
  server_gate g;
  const bool probe = start(g, t0);
  CHECK(probe);
  // Until the first answer, nothing else goes out (a wrong password costs one failure, not one per connection).
  const auto d = g.admit(t0);
  CHECK(d.action == gate_action::wait);
  CHECK(d.at == gate_clock::time_point::max());
  g.answered(t0 + 5ms, gate_answer::accepted, probe);
  CHECK(g.snapshot().credential == credential_state::accepted);
  for (int i = 0; i < 20; ++i) CHECK_FALSE(start(g, t0 + 5ms));
}

TEST_CASE("server_gate: a refused credential holds every request for the lockout window, then one probe") {
  gate_options o;
  o.auth_hold = 300s;
  server_gate g(o);
  bool probe = start(g, t0);
  g.answered(t0 + 1ms, gate_answer::auth_rejected, probe);
  auto s = g.snapshot();
  CHECK(s.credential == credential_state::held);
  CHECK(s.held_until == t0 + 1ms + 300s);
  // Refused at once, without being sent, for the whole hold.
  int sent = 1;
  for (auto t = t0 + 2ms; t < t0 + 1ms + 300s; t += 7s) {
    const auto d = g.admit(t);
    CHECK(d.action == gate_action::refuse);
    CHECK(d.at == t0 + 1ms + 300s);
  }
  CHECK(g.snapshot().refused > 0);
  // After the hold: exactly one probe, the others wait for its answer.
  const auto after = t0 + 1ms + 300s;
  probe = start(g, after);
  ++sent;
  CHECK(probe);
  CHECK(g.admit(after + 1ms).action == gate_action::wait);
  // Still wrong: held again; over a 5-minute window the server saw at most 2 failures.
  g.answered(after + 2ms, gate_answer::auth_rejected, probe);
  CHECK(g.admit(after + 3ms).action == gate_action::refuse);
  CHECK(sent <= 2);
  // Fixed by the operator meanwhile: the next probe is accepted and the pool opens.
  probe = start(g, after + 2ms + 300s);
  g.answered(after + 2ms + 300s + 1ms, gate_answer::accepted, probe);
  CHECK(g.snapshot().credential == credential_state::accepted);
  CHECK_FALSE(start(g, after + 2ms + 300s + 1ms));
  CHECK_FALSE(start(g, after + 2ms + 300s + 1ms));
}

TEST_CASE("server_gate: a rejection while running holds the pool; late answers of old requests do not end it") {
  server_gate g;
  bool probe = start(g, t0);
  g.answered(t0, gate_answer::accepted, probe);
  // Three requests in flight when the password is changed on the server.
  for (int i = 0; i < 3; ++i) CHECK_FALSE(start(g, t0 + 1s));
  g.answered(t0 + 2s, gate_answer::auth_rejected, false);
  CHECK(g.snapshot().credential == credential_state::held);
  g.answered(t0 + 2s, gate_answer::auth_rejected, false);  // the second in-flight one
  g.answered(t0 + 3s, gate_answer::accepted, false);       // a long poll that began earlier
  CHECK(g.snapshot().credential == credential_state::held);
  CHECK(g.admit(t0 + 4s).action == gate_action::refuse);
  CHECK(g.snapshot().auth_rejections == 2);
}

TEST_CASE("server_gate: a transport error during the probe lets the next probe go") {
  server_gate g;
  bool probe = start(g, t0);
  g.answered(t0 + 1ms, gate_answer::no_answer, probe);
  CHECK(g.snapshot().credential == credential_state::unproven);
  CHECK(start(g, t0 + 2ms));
}

TEST_CASE("server_gate: Retry-After is the least delay before the next request, pool-wide") {
  server_gate g;
  bool probe = start(g, t0);
  g.answered(t0, gate_answer::accepted, probe);
  start(g, t0 + 1s);
  g.answered(t0 + 1s, gate_answer::overloaded, false, 2000ms);
  auto d = g.admit(t0 + 1s);
  CHECK(d.action == gate_action::wait);
  CHECK(d.at == t0 + 3s);
  CHECK(g.admit(t0 + 2999ms).action == gate_action::wait);
  CHECK(g.admit(t0 + 3s).action == gate_action::start);
  CHECK(g.snapshot().overloaded == 1);
}

TEST_CASE("server_gate: an absurd Retry-After is capped") {
  gate_options o;
  o.max_retry_after = 60s;
  server_gate g(o);
  g.answered(t0, gate_answer::overloaded, false, std::chrono::milliseconds{std::chrono::hours(24 * 365)});
  CHECK(g.snapshot().not_before == t0 + 60s);
}

TEST_CASE("server_gate: overload slows the pace multiplicatively, successes speed it up again (AIMD)") {
  gate_options o;
  o.base_interval = 100ms;
  o.max_interval = 1000ms;
  o.increase = 2.0;
  server_gate g(o);
  auto now = t0;
  bool probe = start(g, now);
  g.answered(now, gate_answer::accepted, probe);
  g.answered(now, gate_answer::overloaded, false);  // no Retry-After
  CHECK(g.snapshot().interval == 100ms);
  // Answers of requests that were in flight together count once.
  g.answered(now + 10ms, gate_answer::overloaded, false);
  CHECK(g.snapshot().interval == 100ms);
  now += 100ms;
  g.answered(now, gate_answer::overloaded, false);
  CHECK(g.snapshot().interval == 200ms);
  for (int i = 0; i < 10; ++i) {
    now += 2s;
    g.answered(now, gate_answer::overloaded, false);
  }
  CHECK(g.snapshot().interval == 1000ms);  // capped
  // Paced: two starts are at least the interval apart.
  now += 2s;
  start(g, now);
  auto d = g.admit(now + 1ms);
  CHECK(d.action == gate_action::wait);
  CHECK(d.at == now + 1000ms);
  // Successes shrink it by a fifth each, down to no pacing at all.
  int successes = 0;
  while (g.snapshot().interval.count() > 0 && successes < 100) {
    g.answered(now, gate_answer::accepted, false);
    ++successes;
  }
  CHECK(g.snapshot().interval.count() == 0);
  CHECK(successes > 5);
  CHECK(g.admit(now + 2ms).action == gate_action::start);
}

TEST_CASE("is_credential_rejection: 401 and lockout are the credential; a 403 on a database is not") {
  CHECK(is_credential_rejection(401, "/_all_dbs", R"({"error":"unauthorized","reason":"Name or password is incorrect."})"));
  CHECK(is_credential_rejection(
      403, "/_all_dbs",
      R"({"error":"forbidden","reason":"Account is temporarily locked due to multiple authentication failures"})"));
  CHECK(is_credential_rejection(403, "/", R"({"error":"forbidden","reason":"x"})"));
  CHECK(is_credential_rejection(403, "/_session?basic=true", ""));
  CHECK_FALSE(is_credential_rejection(403, "/tx-userdb", R"({"error":"forbidden","reason":"You are not allowed to access this db."})"));
  CHECK_FALSE(is_credential_rejection(403, "/central/by-user", R"({"error":"forbidden","reason":"central database is written by couchgate only"})"));
  CHECK_FALSE(is_credential_rejection(403, "/db", "not json"));
  CHECK_FALSE(is_credential_rejection(429, "/", ""));
  CHECK_FALSE(is_credential_rejection(200, "/", ""));
}

TEST_CASE("parse_retry_after: delay-seconds and HTTP-date") {
  const auto now = std::chrono::system_clock::from_time_t(784111777);  // Sun, 06 Nov 1994 08:49:37 GMT
  CHECK(parse_retry_after("1", now) == std::chrono::milliseconds{1000});
  CHECK(parse_retry_after(" 120 ", now) == std::chrono::milliseconds{120000});
  CHECK(parse_retry_after("0", now) == std::chrono::milliseconds{0});
  CHECK(parse_retry_after("Sun, 06 Nov 1994 08:49:40 GMT", now) == std::chrono::milliseconds{3000});
  CHECK(parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now) == std::chrono::milliseconds{0});  // past
  CHECK(parse_retry_after("99999999999999999999", now).value() >= std::chrono::hours(24));       // no overflow
  // A date beyond what system_clock's nanoseconds hold (about year 2262): a long wait, no overflow.
  CHECK(parse_retry_after("Sun, 06 Nov 2300 08:49:37 GMT", now).value() >= std::chrono::hours(24));
  CHECK(parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now).value() >= std::chrono::hours(24));
  CHECK_FALSE(parse_retry_after("", now));
  CHECK_FALSE(parse_retry_after("-1", now));
  CHECK_FALSE(parse_retry_after("1.5", now));
  CHECK_FALSE(parse_retry_after("soon", now));
  CHECK_FALSE(parse_retry_after("Sun, 06 Nov 1994 08:49:40 GMT trailing", now));
}
