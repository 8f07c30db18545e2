// The daemon's socket budget: fanin.max_connections for work, one more per change feed.
#include <doctest/doctest.h>

#include "gateway/connection_budget.hpp"

using namespace couchgate::gateway;

TEST_CASE("connection budget: the feeds' longpolls come on top of fanin.max_connections") {
  config cfg;
  cfg.fanin.max_connections = 8;
  SUBCASE("defaults: _users and _db_updates feeds") {
    auto b = budget_for(cfg);
    CHECK(b.work == 8);
    CHECK(b.feeds == 2);
    CHECK(b.total() == 10);
  }
  SUBCASE("provisioning keeps more users in flight than there are work sockets, in step with them") {
    auto b = budget_for(cfg);
    CHECK(b.provisioning_window() > b.work);
    cfg.fanin.max_connections = 2;
    auto small = budget_for(cfg);
    CHECK(small.provisioning_window() > small.work);
    CHECK(small.provisioning_window() < b.provisioning_window());
  }
  SUBCASE("sweep detection has no longpoll") {
    cfg.fanin.detection = detection_mode::sweep;
    CHECK(budget_for(cfg).feeds == 1);
  }
  SUBCASE("db_updates detection keeps it") {
    cfg.fanin.detection = detection_mode::db_updates;
    CHECK(budget_for(cfg).feeds == 2);
  }
  SUBCASE("fan-in off: only the _users feed") {
    cfg.fanin.enabled = false;
    auto b = budget_for(cfg);
    CHECK(b.feeds == 1);
    CHECK(b.work == 8);
  }
  SUBCASE("fan-in off, front door on: its live feeds keep the _db_updates follower") {
    cfg.fanin.enabled = false;
    cfg.front.enabled = true;
    CHECK(budget_for(cfg).feeds == 2);
    cfg.fanin.detection = detection_mode::sweep;
    CHECK(budget_for(cfg).feeds == 1);
  }
  SUBCASE("provisioning off: only _db_updates") {
    cfg.provisioning.enabled = false;
    CHECK(budget_for(cfg).feeds == 1);
  }
  SUBCASE("neither: the work budget is the whole cap") {
    cfg.provisioning.enabled = false;
    cfg.fanin.enabled = false;
    CHECK(budget_for(cfg).total() == 8);
  }
  SUBCASE("the work budget follows the config") {
    cfg.fanin.max_connections = 3;
    CHECK(budget_for(cfg).work == 3);
    CHECK(budget_for(cfg).total() == 5);
  }
}
