// Tests for replicator/outage.hpp: one log line when CouchDB stops answering and one when it
// answers again, whatever number of requests fail meanwhile; injected time points, no sleeping.
#include <doctest/doctest.h>

#include <chrono>

#include "replicator/couch_error.hpp"
#include "replicator/outage.hpp"

using namespace couchgate::replicator;
using namespace std::chrono_literals;

namespace {
const outage_clock::time_point t0 = outage_clock::time_point{} + 1000h;
}

TEST_CASE("outage: 200 failures from 20 writers are one line when it begins and one when it ends") {
  outage_tracker o;
  int began = 0, ended = 0;
  auto count = [&](outage_decision d) {
    began += d.line == outage_line::began;
    ended += d.line == outage_line::ended;
    return d;
  };
  count(o.answered(t0));  // up: nothing to say
  CHECK(began + ended == 0);
  // The server restarts: every writer's request and retry fails for 15 s.
  for (int i = 0; i < 200; ++i) {
    const auto now = t0 + 1s + i * 75ms;
    count(o.failed(now - 50ms, now));
    CHECK(o.down());
  }
  CHECK(began == 1);
  CHECK(ended == 0);
  const auto d = count(o.answered(t0 + 16s));
  CHECK(d.line == outage_line::ended);
  CHECK(d.failures == 200);
  CHECK(d.lasted == 15s);
  CHECK(ended == 1);
  CHECK_FALSE(o.down());
  CHECK(o.outages() == 1);
  CHECK(o.failures() == 200);
}

TEST_CASE("outage: a request failing after the server answered another one since it started is no outage") {
  outage_tracker o;
  o.answered(t0);
  // A longpoll started before the last answer times out: the server is up, only that request failed.
  CHECK(o.failed(t0 - 25s, t0 + 1s).line == outage_line::none);
  CHECK_FALSE(o.down());
  CHECK(o.outages() == 0);
  CHECK(o.failures() == 1);
  // A request started after the last answer that fails: nothing has answered since, an outage.
  CHECK(o.failed(t0 + 1ms, t0 + 2s).line == outage_line::began);
  CHECK(o.outages() == 1);
}

TEST_CASE("outage: requests sent to the dead server that fail after the recovery are not a new outage") {
  outage_tracker o;
  CHECK(o.failed(t0, t0 + 1s).line == outage_line::began);
  CHECK(o.answered(t0 + 5s).line == outage_line::ended);
  // Started during the outage (before the recovery), timing out after it: leftovers.
  CHECK(o.failed(t0 + 2s, t0 + 6s).line == outage_line::none);
  CHECK(o.failed(t0 + 5s - 1ms, t0 + 9s).line == outage_line::none);
  CHECK_FALSE(o.down());
  CHECK(o.outages() == 1);
  CHECK(o.failures() == 3);
  // A request started after the recovery that fails: the server went away again.
  auto again = o.failed(t0 + 5s, t0 + 10s);
  CHECK(again.line == outage_line::began);
  CHECK(o.outages() == 2);
  auto end = o.answered(t0 + 12s);
  CHECK(end.line == outage_line::ended);
  CHECK(end.lasted == 2s);
  CHECK(end.failures == 1);
  // A second answer says nothing more.
  CHECK(o.answered(t0 + 13s).line == outage_line::none);
}

TEST_CASE("outage: which errors are part of an outage (logged once by the pool) and which are the caller's") {
  CHECK(outage_error(couch_error{couch_error_kind::network, 0, "Connection refused", ""}));
  CHECK(outage_error(couch_error{couch_error_kind::timeout, 0, "no data for 3000 ms", ""}));
  CHECK(outage_error(couch_error{couch_error_kind::server, 502, "bad_gateway", ""}));
  CHECK(outage_error(couch_error{couch_error_kind::server, 504, "gateway_timeout", ""}));
  CHECK_FALSE(outage_error(couch_error{couch_error_kind::server, 500, "internal_server_error", ""}));
  CHECK_FALSE(outage_error(couch_error{couch_error_kind::overloaded, 503, "service_unavailable", ""}));
  CHECK_FALSE(outage_error(couch_error{couch_error_kind::not_found, 404, "not_found", "missing"}));
  CHECK_FALSE(outage_error(couch_error{couch_error_kind::protocol, 200, "", "not JSON"}));
  CHECK(gateway_status(502));
  CHECK_FALSE(gateway_status(500));
}
