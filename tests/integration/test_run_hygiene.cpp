// A run leaves nothing on a shared server: everything it makes is named by unique(), and the
// runner deletes what carries the run's token at its end (tests/integration/main.cpp). This
// checks that the names are recognised, and that the deletion removes the databases and users
// made with one token while leaving another's alone (with tokens of the test's own, so that the
// rest of the run keeps what it made).
#include <doctest/doctest.h>

#include <string>

#include "policy/naming.hpp"
#include "tests/support/harness.hpp"

using namespace couchgate::test;
using couchgate::policy::user_db_name;

namespace {
// A token no other name of the run has: six letters, unlike run_token().
std::string token_other_than(const std::string& not_this, char first) {
  std::string t = unique("t").substr(2);  // "<run token><n>": made unique by the counter
  std::string out(1, first);
  for (char ch : t) out.push_back(std::isdigit(static_cast<unsigned char>(ch)) ? static_cast<char>('a' + (ch - '0')) : ch);
  return out == not_this ? out + "x" : out;
}
}  // namespace

TEST_CASE("a run's names are recognised for its clean-up, plain and as couch_peruser's hex; others are not") {
  const auto& token = run_token();
  CHECK(made_by_run(unique("central"), token));
  CHECK(made_by_run("org.couchdb.user:" + unique("alice"), token));
  CHECK(made_by_run(user_db_name("userdb-", unique("bob")), token));
  CHECK(made_by_run(user_db_name(unique("p") + "-", "carol"), token));
  CHECK_FALSE(made_by_run("central-" + token, token));       // no counter after the token
  CHECK_FALSE(made_by_run("central" + token + "1", token));  // no dash before it
  CHECK_FALSE(made_by_run(user_db_name("userdb-", "dave"), token));
  CHECK_FALSE(made_by_run("_users", token));
  CHECK_FALSE(made_by_run(unique("central"), token_other_than(token, 'q')));
}

TEST_CASE("the clean-up deletes the databases and users made with its token and nothing else") {
  const couch c;
  const auto mine = token_other_than(run_token(), 'q');
  const auto theirs = token_other_than(mine, 'r');
  const auto db = "hygiene-" + mine + "1";
  const auto user = "hygiene-" + mine + "2";
  const auto user_db = user_db_name("userdb-", user);
  const auto other_db = "hygiene-" + theirs + "1";
  for (const auto& name : {db, user_db, other_db}) REQUIRE(c.put("/" + name, json::object()).status / 100 == 2);
  REQUIRE(create_user(user, {}).status / 100 == 2);
  const auto left = remove_leftovers(mine);
  CHECK(left.failed == 0);
  CHECK(left.databases == 2);
  CHECK(left.users == 1);
  CHECK(c.get("/" + db).status == 404);
  CHECK(c.get("/" + user_db).status == 404);
  CHECK(c.get("/_users/" + enc("org.couchdb.user:" + user)).status == 404);
  CHECK(c.get("/" + other_db).status == 200);
  c.del("/" + other_db);
}
