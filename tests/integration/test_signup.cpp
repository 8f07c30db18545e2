// Sign-up through the daemon's front door (POST /_signup and friends), and kill -9 at every
// step of a sign-up: after a restart the reconciler leaves no reservation without its user and
// no user without its reservations.
#include <doctest/doctest.h>
#include <httplib.h>

#include <atomic>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <latch>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "policy/naming.hpp"
#include "tests/integration/fixtures.hpp"
#include "tests/support/fault_proxy.hpp"
#include "tests/support/harness.hpp"

using namespace couchgate::test;
using namespace std::chrono_literals;

namespace {

int read_port(const std::string& file) {
  int port = 0;
  eventually(
      [&] {
        std::ifstream in(file);
        return static_cast<bool>(in >> port) && port > 0;
      },
      20s);
  return port;
}

json signup_config(const names& n, const std::string& dir) {
  json cfg = base_config(n);
  cfg["front"] = json{{"enabled", true},       {"address", "127.0.0.1"}, {"port", 0},
                      {"port_file", dir + "/front.port"}, {"allow_insecure", true}};
  cfg["identities"] = json{{"enabled", true},        {"db", n.state + "-ids"}, {"signup_deadline", "5s"},
                           {"provision_wait", "10s"}, {"intent_timeout", "16s"}, {"reconcile_interval", "1s"},
                           {"rate_limit", 1000}};
  cfg["fanin"]["enabled"] = false;
  // Signed-up users get the test's selection role, so the provisioner creates their database.
  cfg["identities"]["roles"] = json::array({n.role});
  return cfg;
}

struct http_reply {
  int status = 0;
  json body;
  std::string retry_after;
};

http_reply call(int port, const std::string& method, const std::string& path, const json& body = nullptr,
                const std::string& user = {}, const std::string& password = {}, const httplib::Headers& headers = {}) {
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(60, 0);
  c.set_default_headers(headers);
  if (!user.empty()) c.set_basic_auth(user, password);
  httplib::Result r = method == "GET"    ? c.Get(path)
                      : method == "PUT"  ? c.Put(path, body.dump(), "application/json")
                                         : c.Post(path, body.dump(), "application/json");
  http_reply out;
  if (!r) return out;
  out.status = r->status;
  out.body = json::parse(r->body, nullptr, false);
  out.retry_after = r->get_header_value("Retry-After");
  return out;
}

std::string user_doc(const std::string& name) { return "/_users/" + enc("org.couchdb.user:" + name); }

// A test's own directory (the front door's port file), removed when the test ends.
struct scratch_dir {
  std::string path;
  explicit scratch_dir(const std::string& stem) : path("/tmp/" + stem) { std::filesystem::create_directories(path); }
  ~scratch_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  scratch_dir(const scratch_dir&) = delete;
  scratch_dir& operator=(const scratch_dir&) = delete;
};

void delete_user_doc(const std::string& name) {
  auto u = couch().get(user_doc(name));
  if (u.status == 200) couch().del(user_doc(name) + "?rev=" + u.body["_rev"].get<std::string>());
}

}  // namespace

TEST_CASE("sign-up through the front door: the new user syncs /me at once; taken values are named") {
  auto n = fresh_names("signup");
  const scratch_dir dir(n.state);  // unique per test
  couchgate_process cg(signup_config(n, dir.path));
  cg.start();
  REQUIRE(cg.wait_ready(60s));
  const int port = read_port(dir.path + "/front.port");
  REQUIRE(port > 0);

  const std::string name = unique("Signup");
  const std::string email = unique("su") + "@example.org";
  const std::string password = "secret-pw-" + unique("p");
  register_basic_secret(name, password);
  register_basic_secret(name, "wrong-password");
  auto a = call(port, "POST", "/_signup", json{{"name", name}, {"password", password}, {"email", email}});
  REQUIRE_MESSAGE(a.status == 201, a.body.dump());
  CHECK(a.body["ready"] == true);
  // The user's own database, through the front door, with the password just chosen.
  auto me = call(port, "GET", "/me", nullptr, name, password);
  REQUIRE_MESSAGE(me.status == 200, me.body.dump());
  CHECK(me.body.value("db_name", "") == n.prefix + couchgate::policy::hex_encode(name));

  // Taken: the same address, the same name in another case.
  std::string upper = name;
  upper[0] = 's';
  auto b = call(port, "POST", "/_signup", json{{"name", upper}, {"password", password}, {"email", email}});
  CHECK(b.status == 409);
  CHECK(b.body["fields"] == json::array({"name", "email"}));
  auto av = call(port, "GET", "/_signup/available?name=" + enc(upper) + "&email=" + enc(email));
  REQUIRE(av.status == 200);
  CHECK(av.body["name"]["available"] == false);
  CHECK(av.body["email"]["available"] == false);

  // Changing the address needs the user's own credential; a name change is refused.
  const std::string email2 = unique("su2") + "@example.org";
  CHECK(call(port, "PUT", "/_identity/email", json{{"email", email2}}).status == 401);
  CHECK(call(port, "PUT", "/_identity/email", json{{"email", email2}}, name, "wrong-password").status == 401);
  auto ch = call(port, "PUT", "/_identity/email", json{{"email", email2}}, name, password);
  CHECK_MESSAGE(ch.status == 200, ch.body.dump());
  CHECK(couch().get(user_doc(name)).body.value("email", "") == email2);
  CHECK(call(port, "GET", "/_signup/available?email=" + enc(email)).body["email"]["available"] == true);
  CHECK(call(port, "PUT", "/_identity/name", json{{"name", "x"}}, name, password).status == 405);
  CHECK(call(port, "POST", "/_signup", json{{"name", "a:b"}}).status == 400);

  // Never a password in the log.
  CHECK(cg.log().find(password) == std::string::npos);
  delete_user_doc(name);
}

TEST_CASE("sign-up with an Idempotency-Key: a repeat is answered 201 again; another key, none or other values (the password too) get 409") {
  auto n = fresh_names("signupidem");
  const scratch_dir dir(n.state);
  couchgate_process cg(signup_config(n, dir.path));
  cg.start();
  REQUIRE(cg.wait_ready(60s));
  const int port = read_port(dir.path + "/front.port");
  REQUIRE(port > 0);
  const std::string name = unique("idem");
  const std::string email = unique("idem") + "@example.org";
  const std::string password = "secret-pw-" + unique("p");
  register_basic_secret(name, password);
  const json body{{"name", name}, {"password", password}, {"email", email}};
  const httplib::Headers key{{"Idempotency-Key", "k-" + unique("key")}};

  auto first = call(port, "POST", "/_signup", body, {}, {}, key);
  REQUIRE_MESSAGE(first.status == 201, first.body.dump());
  CHECK_FALSE(first.body.contains("replayed"));
  // The answer was lost; the client sends the same request again.
  auto again = call(port, "POST", "/_signup", body, {}, {}, key);
  CHECK_MESSAGE(again.status == 201, again.body.dump());
  CHECK(again.body["replayed"] == true);
  CHECK(again.body["name"] == name);
  // Anyone else asking for that name is refused as before.
  CHECK(call(port, "POST", "/_signup", body).status == 409);
  CHECK(call(port, "POST", "/_signup", body, {}, {}, {{"Idempotency-Key", "k-" + unique("other")}}).status == 409);
  json other_address = body;
  other_address["email"] = unique("idem2") + "@example.org";
  auto moved = call(port, "POST", "/_signup", other_address, {}, {}, key);
  CHECK(moved.status == 409);
  CHECK(moved.body["fields"] == json::array({"name"}));
  // Same key, name and address with another password: not the same sign-up (the account has
  // the first password; answering 201 would tell this client otherwise).
  json other_password = body;
  other_password["password"] = "other-pw-" + unique("p");
  register_basic_secret(name, other_password["password"].get<std::string>());
  auto repassword = call(port, "POST", "/_signup", other_password, {}, {}, key);
  CHECK_MESSAGE(repassword.status == 409, repassword.body.dump());
  CHECK(repassword.body["fields"] == json::array({"name", "email"}));
  // ...and the first one still replays (the check is against the stored hash, every time).
  CHECK(call(port, "POST", "/_signup", body, {}, {}, key).status == 201);
  auto bad = call(port, "POST", "/_signup", body, {}, {}, {{"Idempotency-Key", std::string(129, 'k')}});
  CHECK(bad.status == 400);
  CHECK(bad.body["problems"].contains("Idempotency-Key"));
  // A header sent empty is a client bug, not "no key".
  auto empty = call(port, "POST", "/_signup", body, {}, {}, {{"Idempotency-Key", ""}});
  CHECK_MESSAGE(empty.status == 400, empty.body.dump());
  CHECK(empty.body["problems"].contains("Idempotency-Key"));
  // One user, made once.
  CHECK(couch().get(user_doc(name)).body["_rev"].get<std::string>().rfind("1-", 0) == 0);
  delete_user_doc(name);
}

TEST_CASE("sign-up: per-address rate limit answers 429 with Retry-After") {
  auto n = fresh_names("signuprl");
  const scratch_dir scratch(n.state);
  const std::string& dir = scratch.path;
  json cfg = signup_config(n, dir);
  cfg["identities"]["rate_limit"] = 3;
  couchgate_process cg(cfg);
  cg.start();
  REQUIRE(cg.wait_ready(60s));
  const int port = read_port(dir + "/front.port");
  for (int i = 0; i < 3; ++i) CHECK(call(port, "GET", "/_signup/available?name=x" + std::to_string(i)).status == 200);
  auto refused = call(port, "GET", "/_signup/available?name=y");
  CHECK(refused.status == 429);
  CHECK(std::atoi(refused.retry_after.c_str()) >= 1);
}

TEST_CASE("sign-up: kill -9 between any two steps; after a restart every invariant holds") {
  auto n = fresh_names("signupkill");
  const scratch_dir scratch(n.state);
  const std::string& dir = scratch.path;
  const json cfg = signup_config(n, dir);
  const std::string ids_db = "/" + enc(cfg["identities"]["db"].get<std::string>());
  struct point {
    const char* name;
    bool user_expected;  // the reconciler finishes a sign-up whose user exists, else rolls it back
  };
  const std::vector<point> points{{"signup:after_intent", false},
                                  {"signup:after_reserve", false},
                                  {"signup:after_reserved_state", false},
                                  {"signup:after_user", true}};
  std::vector<std::pair<std::string, bool>> made;
  for (const auto& p : points) {
    INFO(p.name);
    couchgate_process dying(cfg, {{"COUCHGATE_FAILPOINT", p.name}});
    dying.start();
    REQUIRE(dying.wait_ready(60s));
    const std::string name = unique("kill");
    auto r = call(read_port(dir + "/front.port"), "POST", "/_signup",
                  json{{"name", name}, {"password", signup_password()}, {"email", name + "@example.org"}});
    CHECK(r.status == 0);  // the process died mid-request
    CHECK(eventually([&] { return !dying.running(); }, 10s));
    made.emplace_back(name, p.user_expected);
  }
  // One restart repairs them all once their intents are older than intent_timeout.
  couchgate_process cg(cfg);
  cg.start();
  REQUIRE(cg.wait_ready(60s));
  for (const auto& [name, user_expected] : made) {
    INFO(name);
    const std::string email_res = ids_db + "/" + enc("email/" + name + "@example.org");
    const std::string name_res = ids_db + "/" + enc("name/" + name);
    CHECK(eventually(
        [&] {
          const bool user = couch().get(user_doc(name)).status == 200;
          const bool nr = couch().get(name_res).status == 200;
          const bool er = couch().get(email_res).status == 200;
          return user == user_expected && nr == user_expected && er == user_expected;
        },
        60s));
    if (user_expected) {
      // And the finished user got a database it can use.
      const std::string db = "/" + enc(n.prefix + couchgate::policy::hex_encode(name));
      CHECK(eventually([&] { return couch(name, signup_password()).get(db).status == 200; }, 30s));
    }
    delete_user_doc(name);
  }
  // Every intent ends done or rolled back (the reconciler marks an intent after it repaired what
  // the intent held, so the last mark may land just after the checks above).
  std::string states;
  CHECK_MESSAGE(eventually(
                    [&] {
                      auto all = couch().get(ids_db + "/_all_docs?include_docs=true&startkey=%22signup%2F%22&endkey=%22signup%2F%EF%BF%B0%22");
                      if (all.status != 200 || !all.body.contains("rows")) return false;
                      states.clear();
                      bool ended = all.body["rows"].size() == points.size();
                      for (const auto& row : all.body["rows"]) {
                        const std::string state = row["doc"].value("state", "");
                        states += state + " ";
                        ended = ended && (state == "done" || state == "rolled_back");
                      }
                      return ended;
                    },
                    60s),
                "intent states: " << states << tail(cg.log()));
}

TEST_CASE("sign-up crash cycles: kill -9 at random moments under concurrent sign-ups; each completes or leaves nothing") {
  // The failpoint test above kills between two chosen steps; this one kills at random moments
  // (seeded) while four clients sign up at once, some of them for the same address, and
  // restarts each time. After the last start (and intent_timeout) every sign-up is either
  // complete — user, both reservations naming it, its database with the policy's _security — or
  // left nothing behind; one answered 201 is complete; an address is never held by two users.
  const std::uint64_t seed = chaos_seed();
  const int cycles = chaos_cycles(3, 20);
  MESSAGE("COUCHGATE_CHAOS_SEED=" << seed << " cycles=" << cycles);
  std::mt19937_64 rng(seed);
  auto n = fresh_names("signupchaos");
  const scratch_dir scratch(n.state);
  json cfg = signup_config(n, scratch.path);
  cfg["identities"]["signup_deadline"] = "3s";
  cfg["identities"]["provision_wait"] = "2s";
  cfg["identities"]["intent_timeout"] = "6s";
  const std::string ids_db = "/" + enc(cfg["identities"]["db"].get<std::string>());
  const std::string port_file = scratch.path + "/front.port";
  struct attempt {
    std::string name, email;
    int status = 0;  // 0: no answer (the process died meanwhile)
  };
  std::vector<attempt> attempts;
  std::mutex mu;
  std::vector<std::string> shared_emails;
  for (int i = 0; i < 3; ++i) shared_emails.push_back(unique("shared") + "@example.org");
  couchgate_process cg(cfg);
  int kills = 0;
  for (int cycle = 0; cycle < cycles; ++cycle) {
    CAPTURE(cycle);
    std::filesystem::remove(port_file);
    cg.start();
    REQUIRE_MESSAGE(cg.wait_ready(60s), tail(cg.log()));
    const int port = read_port(port_file);
    REQUIRE(port > 0);
    std::atomic<bool> go{true};
    std::vector<std::thread> clients;
    for (int k = 0; k < 4; ++k) {
      clients.emplace_back([&, client_seed = rng()] {
        std::mt19937_64 r(client_seed);
        while (go.load()) {
          attempt a;
          a.name = unique("sc");
          a.email = r() % 3 == 0 ? shared_emails[r() % shared_emails.size()] : a.name + "@example.org";
          a.status = call(port, "POST", "/_signup", json{{"name", a.name}, {"password", signup_password()}, {"email", a.email}}).status;
          std::lock_guard lk(mu);
          attempts.push_back(std::move(a));
        }
      });
    }
    // The kill lands at a random moment of the sign-ups in flight (a chaos timer, not a wait;
    // CouchDB hashes each new password with PBKDF2, so a sign-up takes a while there).
    std::this_thread::sleep_for(std::chrono::milliseconds(500 + rng() % 4000));
    go = false;  // no client starts another sign-up; those in flight meet the kill
    const bool alive = cg.running();
    cg.kill9();
    ++kills;
    for (auto& t : clients) t.join();
    REQUIRE_MESSAGE(alive, "couchgate exited by itself in cycle " << cycle << ":\n" << tail(cg.log()));
  }
  std::filesystem::remove(port_file);
  cg.start();
  REQUIRE_MESSAGE(cg.wait_ready(60s), tail(cg.log()));

  auto reservation_holder = [&](const std::string& id) {
    auto r = couch().get(ids_db + "/" + enc(id));
    return r.status == 200 ? r.body.value("user", "") : std::string();
  };
  // What is wrong with one attempt now ("" = complete or nothing left; `complete` says which).
  auto problem = [&](const attempt& a, bool& complete) -> std::string {
    auto u = couch().get(user_doc(a.name));
    const bool user = u.status == 200;
    const bool name_res = reservation_holder("name/" + a.name) == a.name;
    const bool email_res = reservation_holder("email/" + a.email) == a.name;
    complete = user && name_res && email_res;
    if (complete && a.status != 0 && a.status != 201) return a.name + ": refused with " + std::to_string(a.status) + " but made";
    if (complete) {
      if (u.body.value("email", "") != a.email) return a.name + ": user holds email " + u.body.value("email", "");
      if (auto p = user_db_problem(n.prefix, a.name); !p.empty()) return p;
      return {};
    }
    if (a.status == 201) return a.name + ": answered 201 but incomplete (user " + std::to_string(user) + ")";
    if (a.status != 0 && (user || name_res || email_res)) return a.name + ": refused with " + std::to_string(a.status) + " but left a trace";
    if (user || name_res || email_res)
      return a.name + ": half done: user " + std::to_string(user) + ", name reservation " + std::to_string(name_res) +
             ", email reservation " + std::to_string(email_res);
    return {};
  };
  std::string problems;
  std::size_t complete_count = 0, finished_by_reconciler = 0, rolled_back = 0, answered_201 = 0, refused = 0;
  const bool repaired = eventually(
      [&] {
        problems.clear();
        complete_count = finished_by_reconciler = rolled_back = answered_201 = refused = 0;
        for (const auto& a : attempts) {
          bool complete = false;
          if (auto p = problem(a, complete); !p.empty()) problems += p + "\n";
          complete_count += complete;
          answered_201 += a.status == 201;
          refused += a.status != 0 && a.status != 201;
          finished_by_reconciler += complete && a.status == 0;
          rolled_back += !complete && a.status == 0;
        }
        return problems.empty();
      },
      90s);
  CHECK_MESSAGE(repaired, "seed " << seed << ":\n" << problems << tail(cg.log()));
  // An address is never held by two users.
  std::string duplicated;
  for (const auto& e : shared_emails) {
    std::vector<std::string> holders;
    for (const auto& a : attempts) {
      if (a.email != e) continue;
      auto u = couch().get(user_doc(a.name));
      if (u.status == 200 && u.body.value("email", "") == e) holders.push_back(a.name);
    }
    if (holders.size() > 1) duplicated += e + " held by " + std::to_string(holders.size()) + " users\n";
  }
  CHECK_MESSAGE(duplicated.empty(), "seed " << seed << ": " << duplicated);
  // Every intent ends done or rolled back.
  std::string open;
  CHECK_MESSAGE(eventually(
                    [&] {
                      auto all = couch().get(ids_db + "/_all_docs?include_docs=true&startkey=%22signup%2F%22&endkey=%22signup%2F%EF%BF%B0%22");
                      if (all.status != 200 || !all.body.contains("rows")) return false;
                      open.clear();
                      for (const auto& row : all.body["rows"]) {
                        const std::string state = row["doc"].value("state", "");
                        if (state != "done" && state != "rolled_back") open += row["id"].get<std::string>() + " " + state + "\n";
                      }
                      return open.empty();
                    },
                    60s),
                "seed " << seed << ": intents not ended:\n" << open << tail(cg.log()));
  MESSAGE("seed " << seed << ": " << kills << " kill -9 cycles survived during " << attempts.size() << " sign-ups: "
                  << answered_201 << " answered 201, " << refused << " refused (409: address taken, or another answer), "
                  << finished_by_reconciler << " cut by the kill and finished by the reconciler, " << rolled_back
                  << " cut by the kill and rolled back; " << complete_count << " users complete; lost or half done: "
                  << std::string(repaired && duplicated.empty() ? "nothing" : "see above"));
  CHECK(answered_201 > 0);
  CHECK(cg.terminate() == 0);
  for (const auto& a : attempts) delete_user_doc(a.name);
}

// ---- users made without couchgate ----

namespace {

struct direct_fixture {
  names n = fresh_names("direct");
  scratch_dir dir{n.state};
  json cfg;
  std::string ids_db;
  std::vector<std::string> made;  // users to delete at the end

  explicit direct_fixture(const std::string& on_duplicate) {
    cfg = signup_config(n, dir.path);
    cfg["identities"]["on_duplicate"] = on_duplicate;
    ids_db = "/" + enc(cfg["identities"]["db"].get<std::string>());
  }
  ~direct_fixture() {
    for (const auto& u : made) delete_user_doc(u);
  }
  // A user written straight into _users (selected by the provisioning role), with an address.
  void create(const std::string& name, const std::string& email) {
    json doc{{"_id", "org.couchdb.user:" + name}, {"name", name},           {"type", "user"},
             {"roles", {n.role}},                 {"password", "pw-123456"}, {"email", email}};
    auto r = couch().put(user_doc(name), doc);
    REQUIRE_MESSAGE(r.status == 201, r.raw);
    made.push_back(name);
  }
  void set_email(const std::string& name, const std::string& email) {
    auto cur = couch().get(user_doc(name));
    REQUIRE(cur.status == 200);
    json doc = cur.body;
    doc["email"] = email;
    REQUIRE(couch().put(user_doc(name), doc).status == 201);
  }
  // The `user` a reservation points at; "" when there is none.
  std::string holder(const std::string& id) const {
    auto r = couch().get(ids_db + "/" + enc(id));
    return r.status == 200 ? r.body.value("user", "") : std::string();
  }
  std::string db(const std::string& name) const { return n.prefix + couchgate::policy::hex_encode(name); }
  // The database exists with the user among its members.
  bool provisioned(const std::string& name) const {
    auto s = couch().get("/" + enc(db(name)) + "/_security");
    if (s.status != 200) return false;
    for (const auto& m : s.body["members"]["names"]) {
      if (m == name) return true;
    }
    return false;
  }
  static json conflicts(const couchgate_process& cg) {
    auto r = cg.admin_get("/identities/conflicts");
    REQUIRE_MESSAGE(r.status == 200, r.raw);
    return r.body["conflicts"];
  }
  static bool listed(const couchgate_process& cg, const std::string& user, const std::string& field,
                     const std::string& value, const std::string& holder) {
    for (const auto& c : conflicts(cg)) {
      if (c["user"] == user && c["field"] == field && c["value"] == value && c["holder"] == holder) return true;
    }
    return false;
  }
  static bool unlisted(const couchgate_process& cg, const std::string& user) {
    for (const auto& c : conflicts(cg)) {
      if (c["user"] == user) return false;
    }
    return true;
  }
};

std::size_t count(const std::string& haystack, const std::string& needle) {
  std::size_t k = 0;
  for (auto p = haystack.find(needle); p != std::string::npos; p = haystack.find(needle, p + 1)) ++k;
  return k;
}

}  // namespace

TEST_CASE("users made without couchgate: reservations made, a duplicate address flagged, released with its user") {
  direct_fixture f("flag");
  const std::string a = unique("da"), b = unique("db"), c = unique("dc");
  const std::string email = unique("shared") + "@example.org";
  // A crash after the provisioner's PUT of a reservation left it behind: the next pass takes
  // it as its own (a 409 by the same user is success).
  REQUIRE(couch().put(f.ids_db, json::object()).status / 100 == 2);
  REQUIRE(couch().put(f.ids_db + "/" + enc("name/" + c),
                      json{{"type", "reservation"}, {"field", "name"}, {"user", c}}).status == 201);

  couchgate_process cg(f.cfg);
  cg.start();
  REQUIRE(cg.wait_ready(60s));
  // a first has another address (written untrimmed, in upper case)...
  const std::string first = email.substr(0, 3) + "x" + email.substr(3);
  f.create(a, "  " + email.substr(0, 3) + "X" + email.substr(3) + " ");
  CHECK(eventually([&] { return f.holder("name/" + a) == a && f.holder("email/" + first) == a && f.provisioned(a); }, 30s));
  // ...then changes it in _users: the new one is reserved, the old one released.
  f.set_email(a, " " + email + " ");
  CHECK(eventually([&] { return f.holder("email/" + email) == a && f.holder("email/" + first).empty(); }, 30s));
  f.create(c, unique("own") + "@example.org");
  CHECK(eventually([&] { return f.provisioned(c); }, 30s));
  CHECK(f.holder("name/" + c) == c);
  // C: c's name in another case (CouchDB takes both; couchgate's names are unique without case).
  std::string c_upper = c;
  for (auto& ch : c_upper) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  f.create(c_upper, unique("cup") + "@example.org");
  CHECK(eventually([&] { return direct_fixture::listed(cg, c_upper, "name", c, c); }, 30s));
  CHECK(eventually([&] { return f.provisioned(c_upper); }, 30s));  // flag: provisioned anyway
  delete_user_doc(c_upper);
  CHECK(eventually([&] { return direct_fixture::unlisted(cg, c_upper); }, 30s));
  CHECK(f.holder("name/" + c) == c);  // not C's to release

  // b has a's address (in another case): flagged, provisioned anyway.
  std::string upper = email;
  upper[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(upper[0])));
  f.create(b, upper);
  CHECK(eventually([&] { return direct_fixture::listed(cg, b, "email", email, a); }, 30s));
  CHECK(eventually([&] { return f.provisioned(b); }, 30s));
  CHECK(f.holder("name/" + b) == b);
  CHECK(f.holder("email/" + email) == a);
  CHECK(cg.metric("couchgate_identity_duplicates_total") == 2.0);  // C's name, b's address
  CHECK(cg.metric("couchgate_identity_duplicates") == 1.0);
  // Looked at again every couple of seconds, logged once; never a password.
  const std::string line = "user " + b + " (made without couchgate)";
  CHECK(eventually([&] { return count(cg.log(), "user " + b + " (made without couchgate): its email") == 1; }, 10s));
  // Two more passes over b (each counts as a user seen) must not log it again.
  const double seen = cg.metric("couchgate_users_seen_total").value_or(0);
  CHECK(eventually([&] { return cg.metric("couchgate_users_seen_total").value_or(0) >= seen + 2; }, 20s));
  CHECK(count(cg.log(), line) == 1);
  CHECK(cg.metric("couchgate_identity_duplicates_total") == 2.0);
  CHECK(cg.admin_get("/identities/conflicts").raw.find("pw-123456") == std::string::npos);
  CHECK(cg.log().find("pw-123456") == std::string::npos);
  // The warning names the users; the address only masked (personal data: it is in _users).
  CHECK(cg.log().find(email) == std::string::npos);
  CHECK(cg.log().find(email.substr(0, 1) + "…" + email.substr(email.find('@'))) != std::string::npos);

  // A restart finds the conflict again (nothing stored but the reservations).
  cg.kill9();
  couchgate_process again(f.cfg);
  again.start();
  REQUIRE(again.wait_ready(60s));
  CHECK(eventually([&] { return direct_fixture::listed(again, b, "email", email, a); }, 30s));

  // a goes: its reservations are released, b gets the address and leaves the list.
  delete_user_doc(a);
  CHECK(eventually([&] { return f.holder("name/" + a).empty(); }, 30s));
  CHECK(eventually([&] { return f.holder("email/" + email) == b && direct_fixture::unlisted(again, b); }, 30s));
  CHECK(again.metric("couchgate_identity_duplicates") == 0.0);
  // b goes: only what points at b is released (c's reservation stays).
  delete_user_doc(b);
  CHECK(eventually([&] { return f.holder("name/" + b).empty() && f.holder("email/" + email).empty(); }, 30s));
  CHECK(f.holder("name/" + c) == c);
  couch().del(f.ids_db);
}

TEST_CASE("users made without couchgate: under on_duplicate exclude a duplicate is not provisioned until resolved") {
  direct_fixture f("exclude");
  couchgate_process cg(f.cfg);
  cg.start();
  REQUIRE(cg.wait_ready(60s));
  const int port = read_port(f.dir.path + "/front.port");

  // s signs up through couchgate and holds the address.
  const std::string s = unique("ssign"), d = unique("ddirect"), e = unique("edirect");
  const std::string email = unique("taken") + "@example.org";
  auto su = call(port, "POST", "/_signup", json{{"name", s}, {"password", signup_password()}, {"email", email}});
  REQUIRE_MESSAGE(su.status == 201, su.body.dump());
  f.made.push_back(s);

  // d, made directly with the same address: excluded (its name is still reserved: it exists).
  f.create(d, email);
  CHECK(eventually([&] { return direct_fixture::listed(cg, d, "email", email, s); }, 30s));
  CHECK(eventually([&] { return f.holder("name/" + d) == d; }, 10s));
  auto st = cg.admin_get("/status/users/" + enc(d));
  REQUIRE(st.status == 200);
  CHECK(st.raw.find("excluded") != std::string::npos);
  CHECK_FALSE(f.provisioned(d));
  CHECK(couch().get("/" + enc(f.db(d))).status == 404);

  // Resolved by changing d's address: provisioned by the next pass.
  const std::string other = unique("other") + "@example.org";
  f.set_email(d, other);
  CHECK(eventually([&] { return f.provisioned(d) && direct_fixture::unlisted(cg, d); }, 30s));
  CHECK(f.holder("email/" + other) == d);
  CHECK(f.holder("email/" + email) == s);

  // e takes s's address too; resolved when the other reservation goes (s is deleted).
  f.create(e, email);
  CHECK(eventually([&] { return direct_fixture::listed(cg, e, "email", email, s); }, 30s));
  CHECK_FALSE(f.provisioned(e));
  delete_user_doc(s);
  CHECK(eventually([&] { return f.holder("name/" + s).empty(); }, 30s));
  CHECK(eventually([&] { return f.provisioned(e) && f.holder("email/" + email) == e; }, 30s));
  CHECK(direct_fixture::unlisted(cg, e));

  // x takes d's address, then stops being selected (its role taken away): no longer listed.
  const std::string x = unique("xdirect");
  f.create(x, other);
  CHECK(eventually([&] { return direct_fixture::listed(cg, x, "email", other, d); }, 30s));
  auto cur = couch().get(user_doc(x));
  REQUIRE(cur.status == 200);
  json doc = cur.body;
  doc["roles"] = json::array();
  REQUIRE(couch().put(user_doc(x), doc).status == 201);
  CHECK(eventually([&] { return direct_fixture::unlisted(cg, x); }, 30s));
  CHECK(f.holder("email/" + other) == d);
  couch().del(f.ids_db);
}

TEST_CASE("a signed-up user whose address is rewritten in _users: the old one is freed, a taken one flagged, a free one reserved") {
  direct_fixture f("flag");
  couchgate_process cg(f.cfg);
  cg.start();
  REQUIRE(cg.wait_ready(60s));
  const int port = read_port(f.dir.path + "/front.port");
  const std::string s = unique("sown"), t = unique("tedit");
  const std::string s_email = unique("sown") + "@example.org", t_email = unique("tedit") + "@example.org";
  for (const auto& [name, email] : {std::pair{s, s_email}, std::pair{t, t_email}}) {
    auto r = call(port, "POST", "/_signup", json{{"name", name}, {"password", signup_password()}, {"email", email}});
    REQUIRE_MESSAGE(r.status == 201, r.body.dump());
    f.made.push_back(name);
  }
  // Someone rewrites t's _users document (an administrator or the app's back end: CouchDB 3's
  // _users is admin-only unless users_db_security_editable opened it; then t itself could).
  const auto edit = [&](const std::string& field, const std::string& value) {
    auto cur = couch().get(user_doc(t));
    REQUIRE_MESSAGE(cur.status == 200, cur.raw);
    json doc = cur.body;
    doc[field] = value;
    auto put = couch().put(user_doc(t), doc);
    REQUIRE_MESSAGE(put.status == 201, put.raw);
  };
  std::string s_upper = s_email;
  s_upper[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(s_upper[0])));
  edit("email", " " + s_upper + " ");
  CHECK(eventually([&] { return direct_fixture::listed(cg, t, "email", s_email, s); }, 30s));
  CHECK(f.holder("email/" + s_email) == s);
  // t's own old address is no longer in its document: released, as for any user whose address
  // changed in _users (a new sign-up may take it).
  CHECK(eventually([&] { return f.holder("email/" + t_email).empty(); }, 30s));
  CHECK(f.provisioned(t));                   // on_duplicate flag
  CHECK(count(cg.log(), "user " + t + " (signed up, its address then changed in _users): its email") == 1);

  // A free address: reserved for t, t unlisted.
  const std::string fresh = unique("tfresh") + "@example.org";
  edit("email", fresh);
  CHECK(eventually([&] {
    return f.holder("email/" + fresh) == t && direct_fixture::unlisted(cg, t);
  }, 30s));
  auto name_res = couch().get(f.ids_db + "/" + enc("name/" + t));
  REQUIRE(name_res.status == 200);
  CHECK(name_res.body.value("email", "") == fresh);  // where a deletion finds the address again
  CHECK(call(port, "GET", "/_signup/available?email=" + enc(fresh)).body["email"]["available"] == false);
  const std::string u = unique("utakes");
  auto took = call(port, "POST", "/_signup", json{{"name", u}, {"password", signup_password()}, {"email", t_email}});
  CHECK_MESSAGE(took.status == 201, took.body.dump());
  f.made.push_back(u);
  CHECK(f.holder("email/" + t_email) == u);

  // An address changed through couchgate afterwards is not undone when the provisioner sees t's
  // document again (it reads the document as it is then, never acts on an older row).
  const std::string via_api = unique("tapi") + "@example.org";
  auto ch = call(port, "PUT", "/_identity/email", json{{"email", via_api}}, t, signup_password());
  REQUIRE_MESSAGE(ch.status == 200, ch.body.dump());
  edit("note", "seen again");
  // A sign-up answers once the provisioner made its user's database: past t's rows by then.
  const std::string later = unique("vlater");
  auto v = call(port, "POST", "/_signup", json{{"name", later}, {"password", signup_password()},
                                              {"email", later + "@example.org"}});
  REQUIRE_MESSAGE(v.status == 201, v.body.dump());
  f.made.push_back(later);
  CHECK(v.body.value("ready", false));
  CHECK(f.holder("email/" + via_api) == t);
  CHECK(f.holder("email/" + fresh).empty());
  CHECK(direct_fixture::unlisted(cg, t));
  CHECK(cg.log().find(signup_password()) == std::string::npos);
  couch().del(f.ids_db);
}

TEST_CASE("a deleted user's reservations made under the key before NFKC are released too") {
  direct_fixture f("flag");
  // Reservations as couchgate made them before names were keyed by NFKC and case folding:
  // name/<NFC, lower case> recording the address.
  const std::string stem = unique("stra");
  const std::string name = stem + "\xC3\x9F" "e";   // ...ße
  const std::string old_key = "name/" + stem + "\xC3\x9F" "e";
  const std::string new_key = "name/" + stem + "sse";
  const std::string email = unique("legacy") + "@example.org";
  REQUIRE(couch().put(f.ids_db, json::object()).status / 100 == 2);
  REQUIRE(couch().put(f.ids_db + "/" + enc(old_key),
                      json{{"type", "reservation"}, {"field", "name"}, {"user", name}, {"email", email}}).status == 201);
  REQUIRE(couch().put(f.ids_db + "/" + enc("email/" + email),
                      json{{"type", "reservation"}, {"field", "email"}, {"user", name}}).status == 201);
  couchgate_process cg(f.cfg);
  cg.start();
  REQUIRE(cg.wait_ready(60s));
  f.create(name, email);
  // The first pass reserves the new key for the existing user.
  CHECK(eventually([&] { return f.holder(new_key) == name && f.provisioned(name); }, 30s));
  CHECK(f.holder("email/" + email) == name);
  CHECK(direct_fixture::unlisted(cg, name));
  delete_user_doc(name);
  CHECK(eventually([&] {
    return f.holder(new_key).empty() && f.holder(old_key).empty() && f.holder("email/" + email).empty();
  }, 30s));
  couch().del(f.ids_db);
}

TEST_CASE("at start, names reserved under the key before NFKC get the current key, for users no selection provisions too") {
  direct_fixture f("flag");
  // Straße signed up when names were keyed by NFC and lower case, and is not selected for
  // provisioning (no role): the provisioner never looks at it.
  const std::string stem = unique("strb");
  const std::string name = stem + "\xC3\x9F" "e";  // ...ße
  const std::string email = unique("rekey") + "@example.org";
  REQUIRE(couch().put(f.ids_db, json::object()).status / 100 == 2);
  REQUIRE(couch().put(f.ids_db + "/" + enc("name/" + name),
                      json{{"type", "reservation"}, {"field", "name"}, {"user", name}, {"email", email}}).status == 201);
  REQUIRE(couch().put(user_doc(name), json{{"_id", "org.couchdb.user:" + name}, {"name", name}, {"type", "user"},
                                           {"roles", json::array()}, {"password", "pw-123456"}}).status == 201);
  f.made.push_back(name);
  couchgate_process cg(f.cfg);
  cg.start();
  REQUIRE(cg.wait_ready(60s));
  const int port = read_port(f.dir.path + "/front.port");
  REQUIRE(port > 0);
  // The current key is held, and STRASSE cannot sign up as a look-alike (a sign-up made before
  // the re-keying finished waits for it).
  CHECK(eventually([&] { return f.holder("name/" + stem + "sse") == name; }, 30s));
  auto r = call(port, "POST", "/_signup",
                json{{"name", stem + "SSE"}, {"password", signup_password()}, {"email", unique("other") + "@example.org"}});
  CHECK_MESSAGE(r.status == 409, r.body.dump());
  CHECK(r.body["fields"] == json::array({"name"}));
  const auto recorded = couch().get(f.ids_db + "/" + enc("_local/couchgate-name-keys"));
  CHECK(recorded.body.value("made", 0) == 1);
  CHECK(cg.log().find("user names re-keyed") != std::string::npos);
  // Once recorded, a restart does not do it again: the record is the same revision.
  cg.terminate();
  couchgate_process again(f.cfg);
  again.start();
  REQUIRE(again.wait_ready(60s));
  const int again_port = read_port(f.dir.path + "/front.port");
  CHECK(call(again_port, "GET", "/_signup/available?name=" + enc(stem + "SSE")).body["name"]["available"] == false);
  CHECK(couch().get(f.ids_db + "/" + enc("_local/couchgate-name-keys")).body.value("_rev", "") ==
        recorded.body.value("_rev", "-"));
  couch().del(f.ids_db);
}

TEST_CASE("a reservation the server stores below its write quorum (202 Accepted) is not won: withdrawn, the claim fails and is made again") {
  // A CouchDB cluster answers 202 when fewer copies than the write quorum stored a write (nodes
  // unreachable): two sign-ups through two nodes may then both hold "their" reservation of one
  // address, as conflicting revisions. A single node always answers 201, so the proxy turns the
  // server's 201 into a cluster's 202 (same body) for one reservation at a time.
  fault_proxy proxy;
  direct_fixture f("flag");
  couchgate_process cg(f.cfg, proxy_env(proxy));
  cg.start();
  REQUIRE(cg.wait_ready(60s));
  const int port = read_port(f.dir.path + "/front.port");
  REQUIRE(port > 0);
  const auto rev_generation = [&](const std::string& id) {
    auto r = couch().get(f.ids_db + "/" + enc(id));
    return r.status == 200 ? std::stoi(r.body.value("_rev", "0-")) : 0;
  };

  // Sign-up: its address's reservation answered 202.
  const std::string name = unique("quorum");
  const std::string local = unique("q202");
  const std::string email = local + "@example.org";
  proxy.rewrite_status(1, "PUT", local, 201, 202);
  const json body{{"name", name}, {"password", signup_password()}, {"email", email}};
  auto a = call(port, "POST", "/_signup", body);
  CHECK_MESSAGE(a.status == 503, a.body.dump());
  CHECK(proxy.rewritten() == 1);
  CHECK(couch().get(user_doc(name)).status == 404);  // no user
  // Its revision withdrawn (deleted by that revision) and the name released with the intent.
  CHECK(couch().get(f.ids_db + "/" + enc("email/" + email)).status == 404);
  CHECK(eventually([&] { return f.holder("name/" + name).empty(); }, 10s));
  CHECK(cg.metric("couchgate_identity_reservations_unconfirmed_total") == 1.0);
  CHECK(cg.log().find("202 Accepted") != std::string::npos);
  CHECK(cg.log().find(local) == std::string::npos);  // the reservation named with its address masked
  // The client tries again once the cluster has its quorum: created; the address's reservation is
  // the third revision of its document (made, withdrawn, made again).
  auto b = call(port, "POST", "/_signup", body);
  REQUIRE_MESSAGE(b.status == 201, b.body.dump());
  f.made.push_back(name);
  CHECK(f.holder("email/" + email) == name);
  CHECK(rev_generation("email/" + email) == 3);

  // A user made without couchgate: the provisioner's claim of its address answered 202 is
  // withdrawn, and a later pass claims it again.
  const std::string direct = unique("qdirect");
  const std::string local2 = unique("q202d");
  proxy.rewrite_status(1, "PUT", local2, 201, 202);
  f.create(direct, local2 + "@example.org");
  CHECK(eventually([&] { return f.holder("email/" + local2 + "@example.org") == direct && f.provisioned(direct); }, 30s));
  CHECK(proxy.rewritten() == 2);
  CHECK(rev_generation("email/" + local2 + "@example.org") == 3);
  CHECK(cg.metric("couchgate_identity_reservations_unconfirmed_total") == 2.0);
  couch().del(f.ids_db);
}

// ---- the race through HTTP ----

TEST_CASE("sign-up race through the front door: 200 concurrent requests for 50 names and 50 addresses") {
  // The full size in the default run: about 10 s on pouchdb-server on a loaded 2-core machine.
  const int pairs = 50, per_pair = 4;
  auto n = fresh_names("signuprace");
  const scratch_dir dir(n.state);
  json cfg = signup_config(n, dir.path);
  cfg["identities"]["rate_limit"] = 1000000;  // every request comes from 127.0.0.1
  cfg["identities"]["provision_wait"] = "20s";
  cfg["identities"]["signup_deadline"] = "20s";
  cfg["identities"]["intent_timeout"] = "60s";
  const std::string ids_db = "/" + enc(cfg["identities"]["db"].get<std::string>());
  couchgate_process cg(cfg);
  cg.start();
  REQUIRE(cg.wait_ready(60s));
  const int port = read_port(dir.path + "/front.port");

  // Attempt k wants pair k % pairs: name i always with address i (in varied spelling), so each
  // name and each address can have exactly one winner. Under a real race two attempts can each
  // take one value of a pair and both lose; a client that got 409 then asks /_signup/available
  // and tries again while a value is free (a loser's reservations are released at once), and
  // accepts the 409 once both values stay taken — which only the winner's reservations do.
  const std::string stem = unique("hr");
  std::vector<std::string> pair_name, pair_email;
  for (int i = 0; i < pairs; ++i) {
    pair_name.push_back(stem + "-n" + std::to_string(i));
    pair_email.push_back(stem + "-e" + std::to_string(i) + "@example.org");
  }
  struct outcome {
    http_reply first, last;
    int attempts = 0;
  };
  std::vector<outcome> out(pairs * per_pair);
  std::latch go(pairs * per_pair);
  const auto started = std::chrono::steady_clock::now();
  {
    std::vector<std::thread> clients;
    for (int k = 0; k < pairs * per_pair; ++k) {
      clients.emplace_back([&, k] {
        const int i = k % pairs;
        std::string email = pair_email[i];
        if (k / pairs % 2 == 1) email[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(email[0])));
        const json body{{"name", pair_name[i]}, {"password", signup_password()}, {"email", " " + email}};
        const std::string avail = "/_signup/available?name=" + enc(pair_name[i]) + "&email=" + enc(pair_email[i]);
        auto& o = out[k];
        go.arrive_and_wait();
        for (int tries = 0; tries < 20; ++tries) {
          o.last = call(port, "POST", "/_signup", body);
          if (++o.attempts == 1) o.first = o.last;
          if (o.last.status != 409) return;
          int taken_twice = 0;
          for (int look = 0; look < 40 && taken_twice < 2; ++look) {
            auto a = call(port, "GET", avail);
            const bool both = a.status == 200 && a.body["name"]["available"] == false && a.body["email"]["available"] == false;
            taken_twice = both ? taken_twice + 1 : 0;
            if (a.status == 200 && !both) break;  // something is free: try again
            std::this_thread::sleep_for(50ms);    // poll interval
          }
          if (taken_twice >= 2) return;
        }
      });
    }
    for (auto& t : clients) t.join();
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  int attempts = 0;
  for (const auto& o : out) attempts += o.attempts;
  MESSAGE((pairs * per_pair) << " concurrent sign-ups through the front door settled in " << seconds << " s ("
                           << attempts << " POSTs with the retries of pairs where both attempts lost)");

  std::map<std::string, int> wins;
  int first_wave_201 = 0, first_wave_409 = 0;
  for (int k = 0; k < pairs * per_pair; ++k) {
    const auto& o = out[k];
    INFO("attempt " << k << ": " << o.last.body.dump());
    // Every first answer is a winner or a 409 naming what was taken.
    CHECK((o.first.status == 201 || o.first.status == 409));
    if (o.first.status == 201) ++first_wave_201;
    if (o.first.status == 409) {
      ++first_wave_409;
      CHECK_FALSE(o.first.body["fields"].empty());
      for (const auto& fld : o.first.body["fields"]) CHECK((fld == "name" || fld == "email"));
    }
    if (o.last.status == 201) {
      ++wins[pair_name[k % pairs]];
      CHECK(o.last.body["ready"] == true);
    } else {
      // The final loser's 409 names both: the winner holds both.
      CHECK(o.last.status == 409);
      CHECK(o.last.body["fields"] == json::array({"name", "email"}));
    }
  }
  CHECK(first_wave_201 > 0);
  CHECK(first_wave_201 + first_wave_409 == pairs * per_pair);
  // Exactly one winner per name and per address, each with its user, reservations and database.
  std::map<std::string, std::string> want;
  for (int i = 0; i < pairs; ++i) {
    INFO(pair_name[i]);
    CHECK(wins[pair_name[i]] == 1);
    auto u = couch().get(user_doc(pair_name[i]));
    REQUIRE(u.status == 200);
    CHECK(u.body.value("email", "") == pair_email[i]);
    const std::string db = "/" + enc(n.prefix + couchgate::policy::hex_encode(pair_name[i]));
    auto sec = couch().get(db + "/_security");
    REQUIRE(sec.status == 200);
    CHECK(sec.body["members"]["names"] == json::array({pair_name[i]}));
    want["name/" + pair_name[i]] = pair_name[i];
    want["email/" + pair_email[i]] = pair_name[i];
  }
  // No reservation left over: exactly the winners'.
  std::map<std::string, std::string> got;
  auto all = couch().get(ids_db + "/_all_docs?include_docs=true");
  REQUIRE(all.status == 200);
  for (const auto& row : all.body["rows"]) {
    if (row["doc"].value("type", "") == "reservation") got[row["id"]] = row["doc"].value("user", "");
  }
  CHECK(got == want);
  for (const auto& name : pair_name) delete_user_doc(name);
}
