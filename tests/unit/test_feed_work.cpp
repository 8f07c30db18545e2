// feed_work (gateway/feed_work.hpp): the `_users` feed's rows start at once within the window,
// one revision per name at a time, and the position moves only over rows that are all finished.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gateway/feed_work.hpp"

using couchgate::gateway::feed_work;
using nlohmann::json;

namespace {
couchgate::policy::user_doc user(const std::string& name, bool deleted = false) {
  couchgate::policy::user_doc u;
  u.name = name;
  u.roles = {"app"};
  u.deleted = deleted;
  return u;
}
std::vector<std::string> names(const std::vector<feed_work::started>& s) {
  std::vector<std::string> out;
  for (const auto& x : s) out.push_back(x.user.name + (x.user.deleted ? "(deleted)" : ""));
  return out;
}
}  // namespace

TEST_CASE("feed_work: rows start as they arrive, at most `window` in flight, the oldest first") {
  feed_work w(2);
  w.arrived(user("a"));
  w.arrived(user("b"));
  w.arrived(user("c"));
  auto first = w.take();
  CHECK(names(first) == std::vector<std::string>{"a", "b"});
  CHECK(w.in_flight() == 2);
  CHECK(w.waiting() == 1);
  CHECK(w.take().empty());  // the window is full
  w.finished(first[1].id);
  auto next = w.take();
  CHECK(names(next) == std::vector<std::string>{"c"});
  w.finished(first[0].id);
  w.finished(next[0].id);
  CHECK(w.in_flight() == 0);
  CHECK(w.waiting() == 0);
}

TEST_CASE("feed_work: a later row of a name in flight waits for it; others pass it; a waiting one is superseded") {
  feed_work w(8);
  w.arrived(user("a"));
  auto a1 = w.take();
  REQUIRE(a1.size() == 1);
  w.arrived(user("a", true));  // deleted right after its creation
  w.arrived(user("b"));
  // a's deletion waits for its creation; b starts.
  CHECK(names(w.take()) == std::vector<std::string>{"b"});
  CHECK(w.waiting() == 1);
  w.arrived(user("a"));  // created again: replaces the waiting deletion
  CHECK(w.waiting() == 1);
  CHECK(w.take().empty());
  w.finished(a1[0].id);
  auto a2 = w.take();
  REQUIRE(a2.size() == 1);
  CHECK(names(a2) == std::vector<std::string>{"a"});
  CHECK(!a2[0].user.deleted);
}

TEST_CASE("feed_work: the position moves only to where every row before it is finished") {
  feed_work w(8);
  CHECK(!w.moved());
  w.reached("1-x");  // an empty page: nothing open, done at once
  CHECK(w.moved() == json("1-x"));
  CHECK(!w.moved());  // once per move

  w.arrived(user("a"));
  w.arrived(user("b"));
  w.reached("3-x");
  w.arrived(user("c"));
  w.reached("4-x");
  auto s = w.take();
  REQUIRE(s.size() == 3);
  // c (after 3-x) finishes first: nothing moves, a and b are open before it.
  w.finished(s[2].id);
  CHECK(!w.moved());
  w.finished(s[0].id);
  CHECK(!w.moved());  // b still open
  w.finished(s[1].id);
  CHECK(w.moved() == json("4-x"));  // everything finished: the newest mark
  // Rows arriving later do not hold back a mark reached before them.
  w.arrived(user("d"));
  w.reached("5-x");
  w.arrived(user("e"));
  auto de = w.take();
  REQUIRE(de.size() == 2);
  w.finished(de[0].id);
  CHECK(w.moved() == json("5-x"));
  w.reached("6-x");
  CHECK(!w.moved());  // e is before 6-x and open
  w.finished(de[1].id);
  CHECK(w.moved() == json("6-x"));
}

TEST_CASE("feed_work: a superseded row does not hold the position; its replacement does") {
  feed_work w(1);
  w.arrived(user("a"));
  auto a = w.take();
  w.arrived(user("b"));
  w.reached("2-x");
  w.arrived(user("b", true));  // supersedes the waiting b
  w.reached("3-x");
  w.finished(a[0].id);
  // The first b ended when superseded, so 2-x is done once a is; 3-x waits for the deletion.
  CHECK(w.moved() == json("2-x"));
  auto b = w.take();
  REQUIRE(b.size() == 1);
  CHECK(b[0].user.deleted);
  CHECK(!w.moved());
  w.finished(b[0].id);
  CHECK(w.moved() == json("3-x"));
  w.finished(b[0].id);  // twice: ignored
  CHECK(!w.moved());
}

TEST_CASE("feed_work: a name with a newer row waiting is superseded; finishing the old row lets the new one start") {
  feed_work w(8);
  w.arrived(user("a"));
  auto a1 = w.take();
  REQUIRE(a1.size() == 1);
  CHECK(!w.superseded("a"));  // in flight, nothing newer
  w.arrived(user("b"));
  w.arrived(user("a", true));
  CHECK(w.superseded("a"));
  auto b = w.take();
  CHECK(names(b) == std::vector<std::string>{"b"});
  w.reached("p1");
  w.finished(a1[0].id);  // the failing row given up for the newer one
  CHECK(!w.moved());     // the deletion is open: the position waits for it
  auto a2 = w.take();
  CHECK(names(a2) == std::vector<std::string>{"a(deleted)"});
  CHECK(!w.superseded("a"));
  w.finished(b[0].id);
  w.finished(a2[0].id);
  CHECK(w.moved() == json("p1"));
}

TEST_CASE("feed_work: while one row stays open the positions reached stay bounded, and the newest is reached once it ends") {
  feed_work w(4);
  w.arrived(user("stuck"));
  auto stuck = w.take();
  REQUIRE(stuck.size() == 1);
  const std::size_t pages = feed_work::max_marks * 3;
  for (std::size_t i = 0; i < pages; ++i) {
    w.arrived(user("u" + std::to_string(i)));
    for (const auto& s : w.take()) w.finished(s.id);
    w.reached(json(std::to_string(i) + "-p"));
    CHECK(w.marks() <= feed_work::max_marks);
    CHECK(!w.moved());  // the stuck row is before all of them
  }
  w.finished(stuck[0].id);
  CHECK(w.moved() == json(std::to_string(pages - 1) + "-p"));
  CHECK(w.marks() == 0);
}

TEST_CASE("feed_work: a row waiting for its retry leaves its place to the rows behind it, and holds the position") {
  feed_work w(2);
  for (const char* n : {"bad", "b", "c", "d"}) w.arrived(user(n));
  w.reached(json("4-u"));
  auto first = w.take();
  REQUIRE(names(first) == std::vector<std::string>{"bad", "b"});
  w.retrying(first[0].id);  // the server refused bad: it waits for its retry
  auto next = w.take();
  CHECK(names(next) == std::vector<std::string>{"c"});  // c took bad's place
  CHECK(w.retrying_rows() == 1);
  // bad's retry is due while b and c hold the window: it waits.
  CHECK(!w.resume(first[0].id));
  CHECK(w.retrying_rows() == 1);
  w.finished(first[1].id);
  CHECK(w.resume(first[0].id));  // b finished: bad starts again, in d's way
  CHECK(w.take().empty());
  // A later row of bad waits for it, retrying or not.
  w.arrived(user("bad", true));
  CHECK(w.superseded("bad"));
  w.finished(next[0].id);
  auto d = w.take();
  CHECK(names(d) == std::vector<std::string>{"d"});
  // Everything but bad is done: the position stays before it.
  CHECK(!w.moved());
  w.finished(first[0].id);
  auto deleted = w.take();
  REQUIRE(names(deleted) == std::vector<std::string>{"bad(deleted)"});
  w.finished(deleted[0].id);
  // d is still in flight: the position waits for it, then moves past everyone.
  CHECK(!w.moved());
  REQUIRE(d.size() == 1);
  w.finished(d[0].id);
  CHECK(w.moved() == json("4-u"));
}

TEST_CASE("feed_work: when every row is refused (an outage), at most twice the window is in play") {
  feed_work w(2);
  for (int i = 0; i < 10; ++i) w.arrived(user("u" + std::to_string(i)));
  std::size_t started = 0;
  for (int round = 0; round < 10; ++round) {
    auto s = w.take();
    started += s.size();
    for (const auto& x : s) w.retrying(x.id);
  }
  CHECK(started == 4);
  CHECK(w.retrying_rows() == 4);
  CHECK(w.in_flight() == 4);
  CHECK(w.waiting() == 6);
  // Past the window's worth, retrying rows count again: one of them may resume only in its own place.
  CHECK(w.take().empty());
}
