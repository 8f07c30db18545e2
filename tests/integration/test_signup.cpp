// Sign-up through the daemon's front door (POST /_signup and friends), and kill -9 at every
// step of a sign-up: after a restart the reconciler leaves no reservation without its user and
// no user without its reservations.
#include <doctest/doctest.h>
#include <httplib.h>

#include <filesystem>
#include <fstream>

#include "policy/naming.hpp"
#include "tests/integration/fixtures.hpp"
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
                const std::string& user = {}, const std::string& password = {}) {
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(60, 0);
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

void delete_user_doc(const std::string& name) {
  auto u = couch().get(user_doc(name));
  if (u.status == 200) couch().del(user_doc(name) + "?rev=" + u.body["_rev"].get<std::string>());
}

}  // namespace

TEST_CASE("sign-up through the front door: the new user syncs /me at once; taken values are named") {
  auto n = fresh_names("signup");
  const std::string dir = n.state;  // unique per test
  couchgate_process cg(signup_config(n, "/tmp/" + dir));
  std::filesystem::create_directories("/tmp/" + dir);
  cg.start();
  REQUIRE(cg.wait_ready(60s));
  const int port = read_port("/tmp/" + dir + "/front.port");
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

TEST_CASE("sign-up: per-address rate limit answers 429 with Retry-After") {
  auto n = fresh_names("signuprl");
  const std::string dir = "/tmp/" + n.state;
  std::filesystem::create_directories(dir);
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
  const std::string dir = "/tmp/" + n.state;
  std::filesystem::create_directories(dir);
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
                  json{{"name", name}, {"password", "correct-horse-1"}, {"email", name + "@example.org"}});
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
      CHECK(eventually([&] { return couch(name, "correct-horse-1").get(db).status == 200; }, 30s));
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
