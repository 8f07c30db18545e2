// The pure decisions that tie checkpoints to the central database (replicator/central_epoch.hpp).
#include <doctest/doctest.h>

#include <set>

#include "replicator/central_epoch.hpp"

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
