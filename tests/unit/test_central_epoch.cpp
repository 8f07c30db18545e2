// The decisions that tie checkpoints to the central database (replicator/central_epoch.hpp), and
// the marker's reads and writes over scripted exchanges.
#include <doctest/doctest.h>

#include <chrono>
#include <optional>
#include <set>
#include <thread>

#include "replicator/central_epoch.hpp"
#include "tests/unit/scripted_transport.hpp"

using namespace couchgate::replicator;

TEST_CASE("central epoch: a checkpoint counts only under the same epoch and at most the marker's generation") {
  const epoch_stamp marker{"e1", 10};
  CHECK(checkpoint_matches(epoch_stamp{"e1", 10}, marker));
  CHECK(checkpoint_matches(epoch_stamp{"e1", 3}, marker));
  CHECK_FALSE(checkpoint_matches(epoch_stamp{"e1", 11}, marker));  // central older than the checkpoint
  CHECK_FALSE(checkpoint_matches(epoch_stamp{"e2", 1}, marker));   // another central database
  CHECK_FALSE(checkpoint_matches(std::nullopt, marker));           // written before markers existed
  CHECK_FALSE(checkpoint_matches(epoch_stamp{"e1", 1}, epoch_stamp{"", 5}));
}

TEST_CASE("central epoch: a marker read back is judged against ours") {
  const epoch_stamp ours{"e1", 10};
  CHECK(judge_marker(epoch_stamp{"e1", 10}, ours) == central_verdict::same);
  CHECK(judge_marker(epoch_stamp{"e1", 12}, ours) == central_verdict::same);  // raised by another couchgate
  CHECK(judge_marker(epoch_stamp{"e1", 9}, ours) == central_verdict::older);
  CHECK(judge_marker(epoch_stamp{"e2", 99}, ours) == central_verdict::replaced);
  CHECK(judge_marker(std::nullopt, ours) == central_verdict::new_marker);
}

TEST_CASE("central epoch: stamps parse only when well-formed; epoch ids are random hex") {
  auto s = epoch_stamp::from_json(json{{"epoch", "abc"}, {"generation", 3}, {"created", "x"}});
  REQUIRE(s);
  CHECK(*s == epoch_stamp{"abc", 3});
  CHECK(epoch_stamp::from_json(s->to_json()) == s);
  CHECK_FALSE(epoch_stamp::from_json(json{{"epoch", ""}, {"generation", 3}}));
  CHECK_FALSE(epoch_stamp::from_json(json{{"epoch", 7}, {"generation", 3}}));
  CHECK_FALSE(epoch_stamp::from_json(json{{"epoch", "a"}, {"generation", -1}}));
  CHECK_FALSE(epoch_stamp::from_json(json{{"epoch", "a"}, {"generation", "3"}}));
  CHECK_FALSE(epoch_stamp::from_json(json{{"epoch", "a"}}));
  CHECK_FALSE(epoch_stamp::from_json(json::array()));
  std::set<std::string> ids;
  for (int i = 0; i < 50; ++i) {
    auto id = new_epoch_id();
    CHECK(id.size() == 32);
    CHECK(id.find_first_not_of("0123456789abcdef") == std::string::npos);
    ids.insert(id);
  }
  CHECK(ids.size() == 50);
}

TEST_CASE("central epoch: a slow marker read is not taken for a rollback by our own bump made meanwhile") {
  couchgate::test::scripted_couch c;
  auto& s = c.server;
  const auto marker = [](int generation, const std::string& rev) {
    return couchgate::test::answer(200, json{{"_id", "_local/couchgate-epoch"}, {"_rev", rev}, {"epoch", "e1"},
                                             {"generation", generation}}.dump());
  };
  s.on("GET", "/central/_local/couchgate-epoch", marker(3, "0-3"));
  central_epoch e(c.client, "central");
  bool created = true;
  REQUIRE(e.load_or_create(created).ok());
  CHECK_FALSE(created);
  REQUIRE(e.current() == epoch_stamp{"e1", 3});
  // The fan-in's look at the central database reads the marker, and the server answers late.
  s.hold("GET", "/central/_local/couchgate-epoch", marker(3, "0-3"));
  s.on("PUT", "/central/_local/couchgate-epoch", couchgate::test::answer(201, R"({"ok":true,"id":"_local/couchgate-epoch","rev":"0-4"})"));
  std::optional<result<central_verdict>> verdict;
  std::thread checker([&] { verdict.emplace(e.check()); });
  const bool held = s.wait_for([&] { return s.held() == 1; }, std::chrono::seconds(5));
  CHECK(held);
  // A checkpoint write raises the generation meanwhile: it waits for the look in flight.
  std::optional<result<epoch_stamp>> bumped;
  std::thread bumper([&] { bumped.emplace(e.bump()); });
  CHECK_FALSE(s.wait_for([&] { return s.count("PUT", "/central/_local/couchgate-epoch") > 0; },
                         std::chrono::milliseconds(300)));
  s.release_held();  // (also when the read was never held: the threads are joined either way)
  checker.join();
  bumper.join();
  REQUIRE(held);
  REQUIRE(verdict);
  REQUIRE(verdict->ok());
  CHECK(verdict->value() == central_verdict::same);  // before: `older`, and every checkpoint reset
  REQUIRE(bumped);
  REQUIRE(bumped->ok());
  CHECK(bumped->value() == epoch_stamp{"e1", 4});
  CHECK(e.current() == epoch_stamp{"e1", 4});
  CHECK(s.unexpected().empty());
}
