// The front door's pure decisions: secure-request (TLS, trusted proxies, scheme header,
// allow_insecure), CIDR matching, the session cache, the auth-failure limiter, per-user slots.
#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

#include "gateway/front/auth_limits.hpp"
#include "gateway/front/cidr.hpp"
#include "gateway/front/secure_request.hpp"

namespace f = couchgate::gateway::front;
using namespace std::chrono_literals;

TEST_CASE("front cidr: parsing and membership, IPv4-mapped addresses count as IPv4") {
  const auto net = f::parse_cidr("10.0.0.0/8");
  REQUIRE(net);
  CHECK(f::contains(*net, *f::parse_ip("10.200.1.2")));
  CHECK_FALSE(f::contains(*net, *f::parse_ip("11.0.0.1")));
  CHECK(f::contains(*net, *f::parse_ip("::ffff:10.1.1.1")));
  const auto one = f::parse_cidr("127.0.0.1");
  REQUIRE(one);
  CHECK(f::contains(*one, *f::parse_ip("127.0.0.1")));
  CHECK_FALSE(f::contains(*one, *f::parse_ip("127.0.0.2")));
  const auto v6 = f::parse_cidr("fd00::/8");
  REQUIRE(v6);
  CHECK(f::contains(*v6, *f::parse_ip("fd12::1")));
  CHECK_FALSE(f::contains(*v6, *f::parse_ip("fe80::1")));
  CHECK_FALSE(f::contains(*v6, *f::parse_ip("10.0.0.1")));
  const auto odd = f::parse_cidr("192.168.1.0/23");
  REQUIRE(odd);
  CHECK(f::contains(*odd, *f::parse_ip("192.168.0.9")));
  CHECK_FALSE(f::contains(*odd, *f::parse_ip("192.168.2.1")));
  for (const char* bad : {"", "10.0.0.0/33", "10.0.0/8", "nonsense", "::1/129", "10.0.0.0/", "10.0.0.0/-1"}) {
    CAPTURE(bad);
    CHECK_FALSE(f::parse_cidr(bad));
  }
}

TEST_CASE("front secure: TLS, trusted proxy with the header, and everything else") {
  f::secure_policy strict;
  strict.require_secure = true;
  strict.trusted_proxies = {*f::parse_cidr("10.0.0.0/8")};
  const auto proxy = f::parse_ip("10.0.0.5");
  const auto stranger = f::parse_ip("192.0.2.1");
  using v = f::secure_verdict;
  CHECK(f::decide_secure(strict, {true, stranger, std::nullopt}) == v::secure);
  CHECK(f::decide_secure(strict, {false, proxy, std::string_view("https")}) == v::secure);
  CHECK(f::decide_secure(strict, {false, proxy, std::string_view("HTTPS")}) == v::secure);
  CHECK(f::decide_secure(strict, {false, proxy, std::string_view("http, https")}) == v::secure);
  CHECK(f::decide_secure(strict, {false, proxy, std::string_view("https, http")}) == v::refused);
  CHECK(f::decide_secure(strict, {false, proxy, std::string_view("true")}) == v::secure);  // $WSIS style
  CHECK(f::decide_secure(strict, {false, proxy, std::string_view("http")}) == v::refused);
  CHECK(f::decide_secure(strict, {false, proxy, std::nullopt}) == v::refused);               // missing header
  CHECK(f::decide_secure(strict, {false, stranger, std::string_view("https")}) == v::refused);  // untrusted peer
  CHECK(f::decide_secure(strict, {false, std::nullopt, std::string_view("https")}) == v::refused);

  f::secure_policy local;
  local.allow_insecure = true;
  CHECK(f::decide_secure(local, {false, stranger, std::nullopt}) == v::insecure_allowed);
  CHECK(f::decide_secure(local, {true, stranger, std::nullopt}) == v::secure);
  // The header means nothing from an untrusted peer, even when insecure is allowed.
  CHECK(f::decide_secure(local, {false, stranger, std::string_view("https")}) == v::insecure_allowed);

  f::secure_policy tls_only;  // native TLS, no allow_insecure: plain is refused
  CHECK(f::decide_secure(tls_only, {false, stranger, std::nullopt}) == v::refused);
}

TEST_CASE("front secure: a scheme header in several lines is one list; the nearest proxy's line counts") {
  // A proxy that adds its line after the client's own: the client's "https" does not count.
  CHECK(f::joined_field_lines({"https", "http"}) == "https, http");
  CHECK_FALSE(f::scheme_says_secure(f::joined_field_lines({"https", "http"})));
  CHECK(f::scheme_says_secure(f::joined_field_lines({"http", "https"})));
  CHECK(f::scheme_says_secure(f::joined_field_lines({"https"})));
  CHECK(f::joined_field_lines({}).empty());
}

TEST_CASE("front secure: behind a trusted proxy the client is the nearest untrusted X-Forwarded-For address") {
  f::secure_policy p;
  p.trusted_proxies = {*f::parse_cidr("10.0.0.0/8")};
  const auto proxy = f::parse_ip("10.0.0.5");
  const auto stranger = f::parse_ip("203.0.113.9");
  CHECK(f::client_address(p, "10.0.0.5", proxy, "198.51.100.7") == "198.51.100.7");
  // A client's own entries come first; the proxies' appended ones are read from the right.
  CHECK(f::client_address(p, "10.0.0.5", proxy, "1.2.3.4, 198.51.100.7") == "198.51.100.7");
  CHECK(f::client_address(p, "10.0.0.5", proxy, "1.2.3.4, 198.51.100.7, 10.0.0.9") == "198.51.100.7");
  CHECK(f::client_address(p, "10.0.0.5", proxy, "2001:db8::1") == "2001:db8::1");
  // Nothing usable: the proxy itself.
  CHECK(f::client_address(p, "10.0.0.5", proxy, "") == "10.0.0.5");
  CHECK(f::client_address(p, "10.0.0.5", proxy, "10.0.0.7") == "10.0.0.5");
  CHECK(f::client_address(p, "10.0.0.5", proxy, "1.2.3.4, unknown") == "10.0.0.5");
  // From a peer that is not a trusted proxy the header is the client's own word: ignored.
  CHECK(f::client_address(p, "203.0.113.9", stranger, "198.51.100.7") == "203.0.113.9");
}

TEST_CASE("front secure: RFC 7239 Forwarded gives the same list of addresses and the nearest proxy's proto") {
  CHECK(f::forwarded_for_list("for=192.0.2.60;proto=http;by=203.0.113.43") == "192.0.2.60");
  CHECK(f::forwarded_for_list(R"(for=192.0.2.43, for="[2001:db8:cafe::17]:4711")") == "192.0.2.43, 2001:db8:cafe::17");
  CHECK(f::forwarded_for_list(R"(For="192.0.2.60:8080" ; proto=https)") == "192.0.2.60");
  // Unknown, obfuscated, missing or broken nodes stop client_address where they stand.
  CHECK(f::forwarded_for_list("for=unknown, for=_hidden, proto=https, for=\"[2001:db8::1\", for=198.51.100.7") ==
        "unknown, unknown, unknown, unknown, 198.51.100.7");
  // A quoted value may hold a comma or a semicolon: still one element.
  CHECK(f::forwarded_for_list(R"(for="_a,b;c", for=198.51.100.7)") == "unknown, 198.51.100.7");
  CHECK(f::forwarded_for_list("") == "");
  // A quote a client left open would swallow what the proxy appended: the header is not read.
  const std::string spoof = R"(for=198.51.100.9;proto=https;x=", for=203.0.113.5;proto=http)";
  CHECK(f::forwarded_for_list(spoof) == "");
  CHECK(f::forwarded_proto(spoof) == "");

  CHECK(f::forwarded_proto("for=192.0.2.60;proto=HTTPS") == "https");
  CHECK(f::forwarded_proto("for=1.2.3.4;proto=https, for=10.0.0.9;proto=http") == "http");  // the nearest proxy's
  CHECK(f::forwarded_proto("for=1.2.3.4;proto=http, for=10.0.0.9;proto=\"https\"") == "https");
  CHECK(f::forwarded_proto("for=1.2.3.4") == "");
  CHECK(f::forwarded_proto("") == "");

  f::secure_policy p;
  p.trusted_proxies = {*f::parse_cidr("10.0.0.0/8")};
  const auto proxy = f::parse_ip("10.0.0.5");
  CHECK(f::client_address(p, "10.0.0.5", proxy, f::forwarded_for_list("for=1.2.3.4, for=198.51.100.7, for=10.0.0.9")) ==
        "198.51.100.7");
  CHECK(f::client_address(p, "10.0.0.5", proxy, f::forwarded_for_list("for=1.2.3.4, for=unknown")) == "10.0.0.5");
}

TEST_CASE("front session cache: keyed by a hash, expires after its ttl, 0 = no caching") {
  f::session_cache cache(10s, 100);
  const auto t0 = f::clock_type::time_point{} + 1h;
  const std::string key = f::session_cache::key_of("Basic YWxpY2U6cHc=");
  CHECK(key.size() == 64);
  CHECK(key.find("YWxpY2U") == std::string::npos);
  CHECK_FALSE(cache.lookup(key, t0));
  cache.store(key, "alice", t0);
  CHECK(cache.lookup(key, t0 + 9s) == "alice");
  CHECK(cache.expires(key) == t0 + 10s);  // when a parked live feed asks CouchDB again
  CHECK_FALSE(cache.expires(f::session_cache::key_of("Basic other")));
  CHECK_FALSE(cache.lookup(key, t0 + 10s));
  CHECK_FALSE(cache.lookup(f::session_cache::key_of("Basic other"), t0));
  cache.store(key, "alice", t0);
  cache.forget(key);
  CHECK_FALSE(cache.lookup(key, t0));
  f::session_cache off(0ms, 100);
  off.store(key, "alice", t0);
  CHECK_FALSE(off.lookup(key, t0));
  f::session_cache small(10s, 2);
  small.store("a", "1", t0);
  small.store("b", "2", t0);
  small.store("c", "3", t0);
  CHECK(small.size() <= 2);
  CHECK(small.lookup("c", t0) == "3");
}

TEST_CASE("front session cache: a user's changed document outdates the credentials cached as theirs before it") {
  const auto t0 = f::clock_type::time_point{} + 1h;
  f::session_cache cache(10min, 100);
  cache.store("alice-old", "alice", t0);
  cache.store("alice-cookie", "alice", t0 + 1s);
  cache.store("bob", "bob", t0);
  cache.forget_user("alice", t0 + 2s, t0 + 2s);
  CHECK_FALSE(cache.lookup("alice-old", t0 + 3s));
  CHECK_FALSE(cache.expires("alice-cookie"));  // a parked feed does not count on it either
  CHECK_FALSE(cache.lookup("alice-cookie", t0 + 3s));
  CHECK(cache.lookup("bob", t0 + 3s) == "bob");
  // Accepted again after the change: cached as before.
  cache.store("alice-new", "alice", t0 + 4s);
  CHECK(cache.lookup("alice-new", t0 + 5s) == "alice");
  CHECK(cache.expires("alice-new") == t0 + 4s + 10min);
  // A change at the same instant as a store counts as after it.
  cache.store("alice-new", "alice", t0 + 6s);
  cache.forget_user("alice", t0 + 6s, t0 + 6s);
  CHECK_FALSE(cache.lookup("alice-new", t0 + 7s));
  // Told at 8 s that what is stored until 9 s does not count (CouchDB's own cache may still take
  // the old password for a second): stored at 8.5 s, a miss; stored at 9.5 s, a hit.
  cache.forget_user("alice", t0 + 9s, t0 + 8s);
  cache.store("alice-late", "alice", t0 + 8500ms);
  CHECK_FALSE(cache.lookup("alice-late", t0 + 8600ms));
  cache.store("alice-late", "alice", t0 + 9500ms);
  CHECK(cache.lookup("alice-late", t0 + 9600ms) == "alice");
  // A later change never moves a mark back.
  cache.forget_user("alice", t0 + 5s, t0 + 5s);
  cache.store("alice-early", "alice", t0 + 8700ms);
  CHECK_FALSE(cache.lookup("alice-early", t0 + 8800ms));
  // Marks are dropped once no entry they could outdate is alive (one mark per changed user).
  for (int i = 0; i < 1000; ++i) {
    const auto at = t0 + 10s + std::chrono::seconds(i);
    cache.forget_user("user" + std::to_string(i), at, at);
  }
  CHECK(cache.user_marks() > 64);
  const auto later = t0 + 10s + 1000s + 11min;
  for (int i = 0; i < 200; ++i) cache.forget_user("late" + std::to_string(i), later, later);
  CHECK(cache.user_marks() <= 200);
  // The late marks still hold.
  cache.store("late5-key", "late5", later - 1s);
  CHECK_FALSE(cache.lookup("late5-key", later + 1s));
}

TEST_CASE("front session cache: bounded by its least recently used entry; a stored key is refreshed in place") {
  const auto t0 = f::clock_type::time_point{} + 1h;
  f::session_cache lru(10min, 3);
  lru.store("a", "alice", t0);
  lru.store("b", "bob", t0 + 1s);
  lru.store("c", "carol", t0 + 2s);
  CHECK(lru.lookup("a", t0 + 3s) == "alice");  // "a" used: "b" is now the least recently used
  lru.store("d", "dave", t0 + 4s);
  CHECK(lru.size() == 3);
  CHECK_FALSE(lru.lookup("b", t0 + 5s));
  CHECK(lru.lookup("a", t0 + 5s) == "alice");
  CHECK(lru.lookup("c", t0 + 5s) == "carol");
  CHECK(lru.lookup("d", t0 + 5s) == "dave");
  // Stored again: a new lifetime from then, still one entry.
  lru.store("a", "alice", t0 + 9min);
  CHECK(lru.size() == 3);
  CHECK(lru.expires("a") == t0 + 19min);
  CHECK(lru.lookup("a", t0 + 18min) == "alice");
  CHECK_FALSE(lru.lookup("c", t0 + 10min + 2s));  // its own lifetime ended
  CHECK(lru.size() == 2);
  lru.forget("a");
  lru.forget("a");
  CHECK_FALSE(lru.lookup("a", t0 + 9min));
  CHECK(lru.size() == 1);
  // A lowered ttl (SIGHUP) applies to what is stored from then on.
  lru.set_ttl(1s);
  lru.store("e", "eve", t0 + 20min);
  CHECK(lru.lookup("e", t0 + 20min + 999ms) == "eve");
  CHECK_FALSE(lru.lookup("e", t0 + 20min + 1s));
}

TEST_CASE("front route memo: outlives the session cache for the same credential, forgotten with it") {
  // The forwarder's two caches over one key: every request trusts the short one; a re-issued
  // live feed may fall back on the long one (its reads carry the credential to CouchDB).
  const auto t0 = f::clock_type::time_point{} + 1h;
  f::session_cache sessions(60s, 100);
  f::session_cache routes(10min, 100);
  const std::string key = f::session_cache::key_of("Basic YWxpY2U6cHc=");
  sessions.store(key, "alice", t0);
  routes.store(key, "alice", t0);
  CHECK_FALSE(sessions.lookup(key, t0 + 61s));
  CHECK(routes.lookup(key, t0 + 61s) == "alice");
  CHECK(routes.lookup(key, t0 + 9min) == "alice");
  CHECK_FALSE(routes.lookup(key, t0 + 10min));
}

TEST_CASE("front auth failures: the limit per address within the window, then the window ends") {
  f::auth_failures limiter(3, 60s);
  const auto t0 = f::clock_type::time_point{} + 1h;
  for (int i = 0; i < 3; ++i) {
    CHECK_FALSE(limiter.refused("192.0.2.1", t0 + std::chrono::seconds(i)));
    limiter.record_failure("192.0.2.1", t0 + std::chrono::seconds(i));
  }
  const auto wait = limiter.refused("192.0.2.1", t0 + 10s);
  REQUIRE(wait);
  CHECK(*wait == 50);
  CHECK_FALSE(limiter.refused("192.0.2.2", t0 + 10s));  // another address
  CHECK_FALSE(limiter.refused("192.0.2.1", t0 + 60s));  // window over
}

TEST_CASE("front user slots: the cap per user, then a FIFO queue of bounded length") {
  using adm = f::user_slots::admission;
  f::user_slots slots(2, 2);
  std::vector<std::string> woken;
  const auto waiter = [&](std::string name) {
    auto w = std::make_shared<f::user_slots::waiter>();
    w->wake = [&woken, name] { woken.push_back(name); };
    return w;
  };
  const auto a1 = waiter("a1"), a2 = waiter("a2"), a3 = waiter("a3"), a4 = waiter("a4"), a5 = waiter("a5");
  CHECK(slots.acquire("alice", a1) == adm::granted);
  CHECK(slots.acquire("alice", a2) == adm::granted);
  CHECK(slots.acquire("alice", a3) == adm::queued);  // over the cap: waits, not refused
  CHECK(slots.acquire("alice", a4) == adm::queued);
  CHECK(slots.acquire("alice", a5) == adm::refused);  // the queue is full
  CHECK(slots.acquire("bob", waiter("b1")) == adm::granted);  // another user is not held up
  CHECK(slots.queued() == 2);
  CHECK(woken.empty());

  // A released slot passes to the first in line, then the next: FIFO.
  slots.release("alice");
  CHECK(woken == std::vector<std::string>{"a3"});
  CHECK(a3->granted);
  CHECK_FALSE(a4->granted);
  CHECK(slots.acquire("alice", a5) == adm::queued);  // room again; behind a4
  slots.release("alice");
  CHECK(woken == std::vector<std::string>{"a3", "a4"});

  // A waiter whose deadline passed leaves the queue; one granted meanwhile keeps its slot.
  CHECK(slots.abandon("alice", a5));
  CHECK(slots.queued() == 0);
  CHECK_FALSE(slots.abandon("alice", a4));
  slots.release("alice");  // a3 done
  slots.release("alice");  // a4 done
  CHECK(woken.size() == 2);  // nobody left to wake
  CHECK(slots.acquire("alice", waiter("a6")) == adm::granted);
  CHECK(slots.acquire("alice", waiter("a7")) == adm::granted);
  CHECK(slots.acquire("alice", waiter("a8")) == adm::queued);
}

TEST_CASE("front user slots: a queue length of 0 refuses at once over the cap") {
  f::user_slots slots(1, 0);
  auto w = std::make_shared<f::user_slots::waiter>();
  CHECK(slots.acquire("alice", w) == f::user_slots::admission::granted);
  CHECK(slots.acquire("alice", w) == f::user_slots::admission::refused);
  slots.release("alice");
  CHECK(slots.acquire("alice", w) == f::user_slots::admission::granted);
}

TEST_CASE("front user slots: a raised cap (SIGHUP) lets the first in line in; a lowered one lets in-flight finish") {
  using adm = f::user_slots::admission;
  f::user_slots slots(1, 10);
  std::vector<std::string> woken;
  const auto waiter = [&](std::string name) {
    auto w = std::make_shared<f::user_slots::waiter>();
    w->wake = [&woken, name] { woken.push_back(name); };
    return w;
  };
  const auto a2 = waiter("a2"), a3 = waiter("a3"), a4 = waiter("a4");
  CHECK(slots.acquire("alice", waiter("a1")) == adm::granted);
  CHECK(slots.acquire("alice", a2) == adm::queued);
  CHECK(slots.acquire("alice", a3) == adm::queued);
  CHECK(slots.acquire("alice", a4) == adm::queued);
  slots.set_per_user(3);
  CHECK(woken == std::vector<std::string>{"a2", "a3"});
  CHECK(slots.queued() == 1);
  // Lowered to 1 with 3 in flight: releases do not pass slots on until the count is under it.
  slots.set_per_user(1);
  slots.release("alice");
  slots.release("alice");
  CHECK(woken.size() == 2);
  slots.release("alice");  // 1 in flight -> the slot passes to a4
  CHECK(woken == std::vector<std::string>{"a2", "a3", "a4"});
  CHECK(a4->granted);
}
