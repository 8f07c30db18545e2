// Deferred checkpoints against the real server: what state_store writes, and who wins when
// another writer (restore, a second couchgate) or a reset gets in between. Checked with the
// test's own HTTP client, never through state_store.
#include <doctest/doctest.h>

#include "replicator/transport/couch_client.hpp"
#include "replicator/transport/http_pool.hpp"
#include "replicator/state_store.hpp"
#include "tests/support/harness.hpp"

using namespace couchgate::test;
namespace r = couchgate::replicator;

namespace {

struct store_fixture {
  std::string db = unique("cg-state");
  r::http_pool pool{r::http_pool::options{env().url, env().user, env().password, 2, "couchgate-test"}};
  r::couch_client client{pool, r::timeouts{}};
  r::state_store store{client, db};

  store_fixture() {
    auto made = store.ensure_db();
    REQUIRE_MESSAGE(made.ok(), made.error().describe());
  }
  ~store_fixture() {
    pool.shutdown();
    couch().del("/" + enc(db));
  }
  reply stored(const std::string& source) const { return couch().get("/" + enc(db) + "/" + enc("checkpoint:" + source)); }
  // Another writer (restore, a second couchgate) replaces the stored checkpoint with `changes`
  // merged in, behind the store's back (its cached revision becomes stale).
  void overwrite(const std::string& source, const json& changes) const {
    auto cur = stored(source);
    REQUIRE(cur.status == 200);
    json other = cur.body;
    other.update(changes);
    auto put = couch().put("/" + enc(db) + "/" + enc("checkpoint:" + source), other);
    REQUIRE_MESSAGE(put.status == 201, put.raw);
  }
  // A validate_doc_update that refuses the given JavaScript condition on newDoc (CouchDB runs it
  // for admins too). Returns the design document's revision, for remove_refusal.
  std::string refuse(const std::string& condition) const {
    auto r = couch().put("/" + enc(db) + "/_design/refuse",
                         json{{"validate_doc_update", "function (newDoc) { if (" + condition + ") throw({forbidden: 'refused by the test'}); }"}});
    REQUIRE_MESSAGE(r.status == 201, r.raw);
    return r.body["rev"].get<std::string>();
  }
  void remove_refusal(const std::string& rev) const {
    auto r = couch().del("/" + enc(db) + "/_design/refuse?rev=" + enc(rev));
    REQUIRE_MESSAGE(r.status == 200, r.raw);
  }
};

}  // namespace

TEST_CASE("state_store: advanced checkpoints stay in memory until flushed, then are written in one request") {
  store_fixture f;
  auto at = f.store.start_position("userdb-a");
  CHECK(at.seq == json(0));
  CHECK(f.store.advance({{"userdb-a", "5-x", at.epoch}, {"userdb-b", "7-y", f.store.start_position("userdb-b").epoch}}) == 2);
  CHECK(f.store.has_unflushed());
  CHECK(f.store.checkpoint("userdb-a") == json("5-x"));  // the next turn starts there
  CHECK(f.stored("userdb-a").status == 404);             // nothing written yet

  auto flushed = f.store.flush();
  REQUIRE_MESSAGE(flushed.ok(), flushed.error().describe());
  CHECK(flushed.value().written == 2);
  CHECK(flushed.value().refused.empty());
  CHECK_FALSE(f.store.has_unflushed());
  CHECK(f.stored("userdb-a").body["seq"] == "5-x");
  CHECK(f.stored("userdb-b").body["seq"] == "7-y");

  // A second advance updates the same document (the cached revision is used).
  CHECK(f.store.advance({{"userdb-a", "9-z", f.store.start_position("userdb-a").epoch}}) == 1);
  REQUIRE(f.store.flush().ok());
  CHECK(f.stored("userdb-a").body["seq"] == "9-z");

  // A fresh store (a restart) loads what was flushed.
  r::state_store again(f.client, f.db);
  REQUIRE(again.load_checkpoints().ok());
  CHECK(again.checkpoint("userdb-a") == json("9-z"));
  CHECK(again.checkpoint("userdb-b") == json("7-y"));
}

TEST_CASE("state_store: another writer's checkpoint wins a conflict and is adopted") {
  store_fixture f;
  REQUIRE(f.store.advance({{"userdb-a", "5-x", 0}}) == 1);
  REQUIRE(f.store.flush().ok());
  // Another process (e.g. restore) resets the checkpoint behind this store's back.
  f.overwrite("userdb-a", {{"seq", 0}, {"by", "restore"}});

  // This store advanced meanwhile; its write must not overwrite the other writer's.
  const auto before = f.store.start_position("userdb-a");
  REQUIRE(f.store.advance({{"userdb-a", "8-w", before.epoch}}) == 1);
  auto flushed = f.store.flush();
  REQUIRE_MESSAGE(flushed.ok(), flushed.error().describe());
  CHECK(flushed.value().written == 0);
  auto now = f.stored("userdb-a");
  CHECK(now.body["seq"] == json(0));
  CHECK(now.body["by"] == "restore");
  CHECK(f.store.checkpoint("userdb-a") == json(0));  // adopted: the next turn starts from 0
  CHECK_FALSE(f.store.has_unflushed());
  // A turn that began before the adoption cannot move it back.
  CHECK(f.store.advance({{"userdb-a", "9-v", before.epoch}}) == 0);
  CHECK(f.store.checkpoint("userdb-a") == json(0));
  // Turns from here on advance it again, with the adopted revision.
  CHECK(f.store.advance({{"userdb-a", "2-n", f.store.start_position("userdb-a").epoch}}) == 1);
  REQUIRE(f.store.flush().ok());
  CHECK(f.stored("userdb-a").body["seq"] == "2-n");
}

TEST_CASE("state_store: a reset is not undone by a turn that started before it or by a pending flush") {
  store_fixture f;
  REQUIRE(f.store.advance({{"userdb-a", "5-x", 0}}) == 1);
  REQUIRE(f.store.flush().ok());

  const auto turn = f.store.start_position("userdb-a");  // a turn starts on the old database
  CHECK(turn.seq == json("5-x"));
  REQUIRE(f.store.advance({{"userdb-a", "6-x", turn.epoch}}) == 1);  // advanced, not yet flushed
  auto reset = f.store.reset_checkpoint("userdb-a");                // the database was recreated
  REQUIRE_MESSAGE(reset.ok(), reset.error().describe());
  CHECK_FALSE(f.store.has_unflushed());  // the old database's progress is dropped
  CHECK(f.store.advance({{"userdb-a", "7-x", turn.epoch}}) == 0);  // the old turn ends late
  CHECK(f.store.checkpoint("userdb-a") == json(0));
  REQUIRE(f.store.flush().ok());
  CHECK(f.stored("userdb-a").body["seq"] == json(0));
}

TEST_CASE("state_store: a refused checkpoint row stays pending and is named; the others are written") {
  store_fixture f;
  const auto rev = f.refuse("newDoc._id === 'checkpoint:userdb-bad'");
  REQUIRE(f.store.advance({{"userdb-good", "3-g", 0}, {"userdb-bad", "4-b", 0}}) == 2);
  auto flushed = f.store.flush();
  REQUIRE_MESSAGE(flushed.ok(), flushed.error().describe());
  CHECK(flushed.value().written == 1);
  CHECK(flushed.value().refused == std::vector<std::string>{"userdb-bad"});
  CHECK(flushed.value().first_error.find("forbidden") != std::string::npos);
  CHECK(f.stored("userdb-good").body["seq"] == "3-g");
  CHECK(f.stored("userdb-bad").status == 404);
  CHECK(f.store.has_unflushed());
  f.remove_refusal(rev);
  auto again = f.store.flush();
  REQUIRE(again.ok());
  CHECK(again.value().written == 1);
  CHECK(f.stored("userdb-bad").body["seq"] == "4-b");
  CHECK_FALSE(f.store.has_unflushed());
}

TEST_CASE("state_store: a reset that cannot be stored stays pending and wins over a stale checkpoint") {
  store_fixture f;
  REQUIRE(f.store.advance({{"userdb-r", "5-old", 0}}) == 1);
  REQUIRE(f.store.flush().ok());
  // The database is recreated, but the reset cannot be stored yet.
  const auto rev = f.refuse("newDoc._id === 'checkpoint:userdb-r' && newDoc.seq === 0");
  auto reset = f.store.reset_checkpoint("userdb-r");
  CHECK_FALSE(reset.ok());
  CHECK(f.store.checkpoint("userdb-r") == std::nullopt);  // turns start from 0 on the new database
  CHECK(f.store.start_position("userdb-r").seq == json(0));
  CHECK(f.store.has_unflushed());
  CHECK(f.stored("userdb-r").body["seq"] == "5-old");
  // Meanwhile another writer stores a stale checkpoint (conflicting with the cached revision).
  f.overwrite("userdb-r", {{"seq", "6-stale"}});
  f.remove_refusal(rev);
  // The reset is written over the other writer's checkpoint (a conflict only re-reads the
  // revision), never adopting the old database's position.
  for (int i = 0; i < 3 && f.store.has_unflushed(); ++i) REQUIRE(f.store.flush().ok());
  CHECK_FALSE(f.store.has_unflushed());
  CHECK(f.stored("userdb-r").body["seq"] == json(0));
  CHECK(f.store.start_position("userdb-r").seq == json(0));
}

TEST_CASE("state_store: checkpoints carry the central stamp they were written under; others count as none") {
  store_fixture f;
  const r::epoch_stamp first{"epoch-a", 1};
  f.store.set_marker(first);
  REQUIRE(f.store.advance({{"userdb-a", 5, 0}, {"userdb-b", 7, 0}}) == 2);
  // The stamp is raised after the snapshot, before the write, and every document carries it.
  int stamped = 0;
  auto flushed = f.store.flush([&]() -> r::result<r::epoch_stamp> {
    ++stamped;
    return r::epoch_stamp{"epoch-a", 4};
  });
  REQUIRE_MESSAGE(flushed.ok(), flushed.error().describe());
  CHECK(stamped == 1);
  CHECK(f.stored("userdb-a").body["central"] == json{{"epoch", "epoch-a"}, {"generation", 4}});
  // A stamp that fails keeps everything in memory and writes nothing.
  REQUIRE(f.store.advance({{"userdb-a", 9, 0}}) == 1);
  auto refused = f.store.flush([]() -> r::result<r::epoch_stamp> { return r::couch_error{r::couch_error_kind::not_found, 404, "not_found", ""}; });
  CHECK_FALSE(refused.ok());
  CHECK(f.store.has_unflushed());
  CHECK(f.stored("userdb-a").body["seq"] == 5);
  // A written zero (restore's reset) without a stamp is a zero anyway.
  REQUIRE(couch().put("/" + enc(f.db) + "/" + enc("checkpoint:userdb-z"), json{{"type", "checkpoint"}, {"source", "userdb-z"}, {"seq", 0}}).status == 201);

  auto load = [&](const r::epoch_stamp& marker) {
    auto fresh = std::make_unique<r::state_store>(f.client, f.db);
    fresh->set_marker(marker);
    auto l = fresh->load_checkpoints();
    REQUIRE_MESSAGE(l.ok(), l.error().describe());
    return std::pair{std::move(fresh), l.value()};
  };
  {
    auto [same, l] = load(r::epoch_stamp{"epoch-a", 4});  // the central database the stamps describe
    CHECK(l.loaded == 2);
    CHECK(l.voided == 0);
    CHECK(same->checkpoint("userdb-a") == json(5));
  }
  {
    auto [later, l] = load(r::epoch_stamp{"epoch-a", 9});  // raised since (by another couchgate)
    CHECK(l.voided == 0);
  }
  {
    auto [older, l] = load(r::epoch_stamp{"epoch-a", 3});  // restored from an older backup
    CHECK(l.voided == 2);
    CHECK_FALSE(older->checkpoint("userdb-a"));
    CHECK(older->start_position("userdb-a").seq == json(0));
    CHECK(older->has_unflushed());  // the zeros are written back
  }
  auto [other, l] = load(r::epoch_stamp{"epoch-b", 50});  // another central database
  CHECK(l.voided == 2);
  // reset_all: every source from 0 under the new marker; a turn that started before cannot
  // advance its source afterwards.
  auto before = other->start_position("userdb-c");
  REQUIRE(other->advance({{"userdb-c", 3, before.epoch}}) == 1);
  CHECK(other->reset_all(r::epoch_stamp{"epoch-c", 1}) >= 1);
  CHECK(other->advance({{"userdb-c", 4, before.epoch}}) == 0);
  CHECK(other->start_position("userdb-c").seq == json(0));
  REQUIRE(other->flush().ok());
  CHECK(f.stored("userdb-c").body["seq"] == 0);
  CHECK(f.stored("userdb-c").body["central"]["epoch"] == "epoch-c");
}
