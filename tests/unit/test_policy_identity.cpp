#include <doctest/doctest.h>

#include <string>

#include "policy/identity.hpp"

using namespace couchgate::policy;
using namespace std::chrono_literals;

TEST_CASE("check_user_name: CouchDB's rules, NFC, length in bytes") {
  const identity_rules r{};
  CHECK(check_user_name("alice", r).ok());
  CHECK(check_user_name("alice", r).value == "alice");
  CHECK(check_user_name("Zoë 🦊", r).ok());
  // "e" + combining acute (U+0301) is stored in its composed form U+00E9.
  CHECK(check_user_name("re\xCC\x81my", r).value == "r\xC3\xA9my");
  CHECK_FALSE(check_user_name("", r).ok());
  CHECK(check_user_name("a:b", r).error == "name must not contain ':'");
  CHECK(check_user_name("_admin", r).error == "name must not start with '_'");
  CHECK_FALSE(check_user_name("tab\there", r).ok());
  CHECK_FALSE(check_user_name("c1\xC2\x85", r).ok());      // U+0085 NEL
  CHECK_FALSE(check_user_name("bad\xFF", r).ok());         // not UTF-8
  CHECK(check_user_name(std::string(64, 'a'), r).ok());
  CHECK_FALSE(check_user_name(std::string(65, 'a'), r).ok());
  identity_rules longer{};
  longer.max_name_bytes = 200;
  CHECK(check_user_name(std::string(200, 'a'), longer).ok());
}

TEST_CASE("check_password: length in characters, bytes bounded, never quoted in the error") {
  const identity_rules r{};
  CHECK(check_password("correct horse", r).ok());
  CHECK_FALSE(check_password("pw1", r).ok());
  CHECK(check_password("pw1", r).error == "password is shorter than 8 characters");
  CHECK(check_password("s3cr3t!", r).error.find("s3cr3t") == std::string::npos);
  CHECK(check_password("ééééééé\xC3\xA9", r).ok());           // 8 code points, 16 bytes
  CHECK_FALSE(check_password(std::string(1025, 'x'), r).ok());
  CHECK_FALSE(check_password("12345678\xFF", r).ok());
}

TEST_CASE("normalise_email: trim, NFKC, lower case, then syntax") {
  const identity_rules r{};
  CHECK(normalise_email("  Alice@Example.COM \n", r).value == "alice@example.com");
  CHECK(normalise_email("ÉLODIE@exemple.fr", r).value == "\xC3\xA9lodie@exemple.fr");
  CHECK(normalise_email("E\xCC\x81lodie@exemple.fr", r).value == "\xC3\xA9lodie@exemple.fr");
  CHECK(normalise_email("a.b+tag@sub.example.org", r).ok());
  CHECK(normalise_email("x@b\xC3\xBC" "cher.de", r).ok());
  for (const char* bad : {"", "   ", "plain", "a@b", "a@@b.com", "a@b@c.com", "@b.com", "a@.com", "a@b..com",
                          "a@-b.com", "a@b-.com", "a b@c.com", ".a@b.com", "a.@b.com", "a..b@c.com", "a@b_c.com",
                          "a\x01@b.com", "a@b.com\xFF"}) {
    INFO(bad);
    CHECK_FALSE(normalise_email(bad, r).ok());
  }
  CHECK_FALSE(normalise_email(std::string(65, 'a') + "@b.com", r).ok());
  CHECK_FALSE(normalise_email("a@" + std::string(250, 'b') + ".com", r).ok());
}

TEST_CASE("e-mail addresses are masked in what is logged; names and other ids are not") {
  CHECK(loggable_value(unique_field::email, "alice@example.com") == "a…@example.com");
  CHECK(loggable_value(unique_field::email, "\xC3\xA9mile@example.com") == "\xC3\xA9…@example.com");  // é kept whole
  CHECK(loggable_value(unique_field::email, "@example.com") == "…@example.com");
  CHECK(loggable_value(unique_field::email, "\xA9x@b.com") == "…@b.com");  // a stray continuation byte is left out
  CHECK(loggable_value(unique_field::email, "\xE2\x82@b.com") == "…@b.com");  // a sequence cut short by the '@'
  CHECK(loggable_value(unique_field::email, "no-at-sign") == "…");
  CHECK(loggable_value(unique_field::name, "alice") == "alice");
  CHECK(loggable_reservation_id(reservation_id(unique_field::email, "bob@b.org")) == "email/b…@b.org");
  CHECK(loggable_reservation_id(reservation_id(unique_field::name, "bob")) == "name/bob");
  CHECK(loggable_reservation_id("emailx/bob@b.org") == "emailx/bob@b.org");
  CHECK(loggable_reservation_id("email/robert.smith@b.org").find("robert") == std::string::npos);
}

TEST_CASE("reservation ids: one per unique value, names compared without case") {
  CHECK(reservation_id(unique_field::name, name_key("Alice")) == "name/alice");
  CHECK(name_key("ALICE") == name_key("alice"));
  CHECK(name_key("\xC3\x89mile") == name_key("\xC3\xA9mile"));  // É / é
  CHECK(reservation_id(unique_field::email, "a@b.com") == "email/a@b.com");
  CHECK(intent_state_from("reserved") == intent_state::reserved);
  CHECK_FALSE(intent_state_from("Reserved").has_value());
  for (const auto s : {intent_state::pending, intent_state::reserved, intent_state::done,
                       intent_state::rolling_back, intent_state::rolled_back}) {
    CHECK(intent_state_from(to_string(s)) == s);
  }
}

TEST_CASE("name keys: compatibility forms and case folding give one key (UTS #39); the name itself stays as typed, in NFC") {
  const identity_rules r{};
  CHECK(name_key("ａｌｉｃｅ") == "alice");             // U+FF41.. full-width letters
  CHECK(name_key("ＡＬＩＣＥ") == "alice");             // full-width capitals
  CHECK(name_key("Straße") == name_key("STRASSE"));   // ß folds to ss
  CHECK(name_key("ﬁle") == name_key("file"));         // U+FB01 ligature fi
  CHECK(name_key("ℍello") == name_key("hello"));      // U+210D double-struck capital H
  CHECK(name_key("①") == name_key("1"));              // circled digit one
  CHECK(name_key("ΣΑΣ") == name_key("σας"));          // final sigma
  CHECK(name_key("re\xCC\x81my") == name_key("RÉMY"));  // combining acute / precomposed capital
  CHECK(name_key("ali\xCD\x8F" "ce") == "alice");       // U+034F COMBINING GRAPHEME JOINER: default-ignorable
  CHECK(name_key("alice\xEF\xB8\x8F") == "alice");      // U+FE0F variation selector
  CHECK(name_key("\xE3\x85\xA4" "alice") == "alice");    // U+3164 HANGUL FILLER
  CHECK(legacy_name_key("Straße") == "straße");             // the key before NFKC, for releasing old reservations
  CHECK(legacy_name_key("ALICE") == "alice");
  CHECK(legacy_name_key("ＡＬＩＣＥ") == "ａｌｉｃｅ");
  CHECK(name_key("alice") != name_key("alicf"));
  CHECK(name_key("ß") != name_key("s"));
  CHECK(reservation_id(unique_field::name, name_key("ａｌｉｃｅ")) == "name/alice");
  // The name a user chose is kept (NFC only); only the key under which it is unique folds.
  CHECK(check_user_name("ａｌｉｃｅ", r).value == "ａｌｉｃｅ");
  CHECK(check_user_name("Straße", r).value == "Straße");
}

TEST_CASE("normalise_email: compatibility forms become the characters they stand for (NFKC), then lower case") {
  const identity_rules r{};
  CHECK(normalise_email("ａ@example.org", r).value == "a@example.org");         // full-width a
  CHECK(normalise_email("a＠example．org", r).value == "a@example.org");        // full-width @ and full stop
  CHECK(normalise_email("ℍ@example.org", r).value == "h@example.org");          // a capital only NFKC makes
  CHECK(normalise_email("ﬁ@example.org", r).value == "fi@example.org");
  CHECK(normalise_email("Straße@Example.DE", r).value == "straße@example.de");  // lower case, not folded: another mailbox
  CHECK_FALSE(normalise_email("a＠b＠example.org", r).ok());                     // two '@' once normalised
  CHECK_FALSE(normalise_email("a\xCD\x8F@example.org", r).ok());                  // U+034F: invisible
  CHECK_FALSE(normalise_email("a\xEF\xB8\x8F@example.org", r).ok());             // U+FE0F: invisible
}

TEST_CASE("may_release_old_address: only the user's own, never while an intent still decides it") {
  CHECK(may_release_old_address("u", "u", std::nullopt));
  CHECK(may_release_old_address("u", "u", intent_state::done));
  CHECK(may_release_old_address("u", "u", intent_state::rolled_back));
  CHECK_FALSE(may_release_old_address("v", "u", intent_state::done));
  CHECK_FALSE(may_release_old_address("u", "u", intent_state::pending));
  CHECK_FALSE(may_release_old_address("u", "u", intent_state::reserved));
  CHECK_FALSE(may_release_old_address("u", "u", intent_state::rolling_back));
}

TEST_CASE("decide_intent: the reconciler never races a young sign-up and finishes every old one") {
  const auto t0 = std::chrono::system_clock::time_point{} + 1000h;
  const auto timeout = 60s, retention = 3600s;
  auto facts = [&](intent_state s, std::chrono::seconds age, bool user = false, bool ours = false) {
    return intent_facts{s, t0 - age, user, ours};
  };
  // Young pending / reserved: the sign-up may still be running.
  CHECK(decide_intent(facts(intent_state::pending, 59s), t0, timeout, retention) == intent_action::leave);
  CHECK(decide_intent(facts(intent_state::reserved, 10s, true, true), t0, timeout, retention) == intent_action::leave);
  // Old and no user made by it: roll back (a user of the same name made by someone else counts as none).
  CHECK(decide_intent(facts(intent_state::pending, 60s), t0, timeout, retention) == intent_action::roll_back);
  CHECK(decide_intent(facts(intent_state::reserved, 61s, true, false), t0, timeout, retention) ==
        intent_action::roll_back);
  // Old with its user: finish (reservations ensured, marked done).
  CHECK(decide_intent(facts(intent_state::reserved, 61s, true, true), t0, timeout, retention) == intent_action::finish);
  // A started rollback is completed at once (a user of the same name made by someone else counts as none).
  CHECK(decide_intent(facts(intent_state::rolling_back, 1s), t0, timeout, retention) == intent_action::release);
  CHECK(decide_intent(facts(intent_state::rolling_back, 1s, true, false), t0, timeout, retention) ==
        intent_action::release);
  // A user made by a rolled-back intent is removed, once the rollback is older than the timeout
  // (a `done` written through another node of a cluster may still be on its way).
  CHECK(decide_intent(facts(intent_state::rolled_back, 1s, true, true), t0, timeout, retention) ==
        intent_action::leave);
  CHECK(decide_intent(facts(intent_state::rolled_back, 60s, true, true), t0, timeout, retention) ==
        intent_action::release);
  CHECK(decide_intent(facts(intent_state::rolling_back, 59s, true, true), t0, timeout, retention) ==
        intent_action::leave);
  CHECK(decide_intent(facts(intent_state::rolling_back, 60s, true, true), t0, timeout, retention) ==
        intent_action::release);
  CHECK(decide_intent(facts(intent_state::rolled_back, 1s, true, false), t0, timeout, retention) ==
        intent_action::leave);
  // Finished intents are kept for `retention`, then forgotten.
  CHECK(decide_intent(facts(intent_state::done, 3599s, true, true), t0, timeout, retention) == intent_action::leave);
  CHECK(decide_intent(facts(intent_state::done, 3600s, true, true), t0, timeout, retention) == intent_action::forget);
  CHECK(decide_intent(facts(intent_state::rolled_back, 3600s), t0, timeout, retention) == intent_action::forget);
}

TEST_CASE("resolve_fork: a forked intent is decided on all its leaves; done stays while its user does") {
  const auto t0 = std::chrono::system_clock::time_point{} + 1000h;
  const auto timeout = 60s;
  const auto old = t0 - 3600s;
  auto leaf = [&](std::string rev, intent_state s, std::chrono::system_clock::time_point at) {
    return intent_leaf{std::move(rev), s, at};
  };
  // The sign-up's done (generation 3) beside a rollback that CouchDB shows as the winner
  // (generation 4): with the user this intent made, done stays and the reservations are ensured.
  const std::vector<intent_leaf> done_vs_rollback{leaf("3-d", intent_state::done, old),
                                                  leaf("4-c", intent_state::rolled_back, old)};
  auto v = resolve_fork(done_vs_rollback, true, t0, timeout);
  CHECK_FALSE(v.wait);
  CHECK(v.keep == "3-d");
  CHECK(v.drop == std::vector<std::string>{"4-c"});
  CHECK(v.ensure_reservations);
  // With no user of this intent (none, or another's), the rollback stands: nothing to reserve.
  v = resolve_fork(done_vs_rollback, false, t0, timeout);
  CHECK(v.keep == "4-c");
  CHECK(v.drop == std::vector<std::string>{"3-d"});
  CHECK_FALSE(v.ensure_reservations);
  // Two rollbacks: the finished one stays whoever the user is.
  const std::vector<intent_leaf> rollbacks{leaf("3-a", intent_state::rolled_back, old),
                                           leaf("3-b", intent_state::rolling_back, old)};
  CHECK(resolve_fork(rollbacks, false, t0, timeout).keep == "3-a");
  CHECK(resolve_fork(rollbacks, true, t0, timeout).keep == "3-a");
  CHECK_FALSE(resolve_fork(rollbacks, true, t0, timeout).ensure_reservations);
  // An old reserved leaf beside a rollback, the user made by this intent: reserved stays.
  v = resolve_fork({leaf("3-r", intent_state::rolling_back, old), leaf("2-r", intent_state::reserved, old)}, true, t0,
                   timeout);
  CHECK(v.keep == "2-r");
  CHECK(v.ensure_reservations);
  // A young reserved leaf: the sign-up may still be running, nothing is decided.
  v = resolve_fork({leaf("2-r", intent_state::reserved, t0 - 10s), leaf("3-b", intent_state::rolling_back, old)}, false,
                   t0, timeout);
  CHECK(v.wait);
  CHECK(v.keep.empty());
  CHECK(v.drop.empty());
  // A young rolling_back leaf: its reconciler is still releasing; decided once it is old.
  v = resolve_fork({leaf("3-d", intent_state::done, old), leaf("3-b", intent_state::rolling_back, t0 - 5s)}, true, t0,
                   timeout);
  CHECK(v.wait);
  CHECK(v.drop.empty());
  // The caller's own young leaf (a transition answered 202 checking where it stands) does not
  // make it wait: the sign-up's reserved beside an old rollback, the user not made yet.
  v = resolve_fork({leaf("2-r", intent_state::reserved, t0 - 1s), leaf("3-b", intent_state::rolling_back, old)}, false,
                   t0, timeout, "2-r");
  CHECK_FALSE(v.wait);
  CHECK(v.keep == "3-b");
  CHECK(v.drop == std::vector<std::string>{"2-r"});
  // A young rollback that is kept needs no wait: the caller's own young reserved gives way to it.
  v = resolve_fork({leaf("2-r", intent_state::reserved, t0 - 1s), leaf("3-b", intent_state::rolling_back, t0 - 2s)},
                   false, t0, timeout, "2-r");
  CHECK_FALSE(v.wait);
  CHECK(v.keep == "3-b");
  // Nor does a young reserved that is kept (the user made by it), the old rollback beside it going.
  v = resolve_fork({leaf("2-r", intent_state::reserved, t0 - 1s), leaf("3-b", intent_state::rolling_back, old)}, true,
                   t0, timeout);
  CHECK_FALSE(v.wait);
  CHECK(v.keep == "2-r");
  CHECK(v.ensure_reservations);
  // ... and its own young rollback neither.
  v = resolve_fork({leaf("3-d", intent_state::done, old), leaf("4-c", intent_state::rolling_back, t0)}, true, t0,
                   timeout, "4-c");
  CHECK_FALSE(v.wait);
  CHECK(v.keep == "3-d");
  CHECK(v.ensure_reservations);
  // Equal states: CouchDB's winner (the higher generation, then the greater revision string).
  CHECK(resolve_fork({leaf("3-a", intent_state::done, old), leaf("3-b", intent_state::done, old)}, true, t0, timeout)
            .keep == "3-b");
  CHECK(resolve_fork({leaf("10-a", intent_state::done, old), leaf("9-z", intent_state::done, old)}, true, t0, timeout)
            .keep == "10-a");
  CHECK(couch_leaf_before(leaf("9-z", intent_state::done, old), leaf("10-a", intent_state::done, old)));
  CHECK_FALSE(couch_leaf_before(leaf("3-b", intent_state::done, old), leaf("3-a", intent_state::done, old)));
  // One leaf: kept, nothing dropped; none: nothing.
  v = resolve_fork({leaf("5-x", intent_state::done, old)}, false, t0, timeout);
  CHECK(v.keep == "5-x");
  CHECK(v.drop.empty());
  CHECK(resolve_fork({}, true, t0, timeout).keep.empty());
}

TEST_CASE("users made without couchgate: a value reserved by another user is a conflict; on_duplicate decides") {
  // Classifying an existing reservation.
  CHECK(classify_claim("bob", "bob", std::nullopt) == claim::held);
  CHECK(classify_claim("bob", "bob", intent_state::done) == claim::held);
  CHECK(classify_claim("bob", "bob", intent_state::rolled_back) == claim::held);
  CHECK(classify_claim("bob", "bob", intent_state::pending) == claim::in_flight);
  CHECK(classify_claim("bob", "bob", intent_state::reserved) == claim::in_flight);
  CHECK(classify_claim("Bob", "bob", std::nullopt) == claim::taken);  // another user, same name key
  CHECK(classify_claim("ann", "bob", intent_state::done) == claim::taken);

  // Nothing taken: provisioned, nothing to look at again.
  auto v = decide_direct_user(claim::held, claim::held, on_duplicate::exclude);
  CHECK(v.provision);
  CHECK_FALSE(v.look_again);
  CHECK(v.conflicts.empty());
  CHECK(decide_direct_user(claim::held, std::nullopt, on_duplicate::exclude).provision);

  // The address reserved by someone else.
  v = decide_direct_user(claim::held, claim::taken, on_duplicate::flag);
  CHECK(v.provision);
  CHECK(v.look_again);
  CHECK(v.conflicts == std::vector{unique_field::email});
  v = decide_direct_user(claim::held, claim::taken, on_duplicate::exclude);
  CHECK_FALSE(v.provision);
  CHECK(v.look_again);
  // Both taken: both named.
  v = decide_direct_user(claim::taken, claim::taken, on_duplicate::exclude);
  CHECK_FALSE(v.provision);
  CHECK(v.conflicts == std::vector{unique_field::name, unique_field::email});

  // An intent of the same name still running: not a conflict, but looked at again.
  v = decide_direct_user(claim::in_flight, claim::held, on_duplicate::exclude);
  CHECK(v.provision);
  CHECK(v.look_again);
  CHECK(v.conflicts.empty());

  CHECK(on_duplicate_from("flag") == on_duplicate::flag);
  CHECK(on_duplicate_from("exclude") == on_duplicate::exclude);
  CHECK_FALSE(on_duplicate_from("Exclude").has_value());
  CHECK(on_duplicate_from(to_string(on_duplicate::exclude)) == on_duplicate::exclude);
}

TEST_CASE("a deleted user's reservation is released only if it is really gone, it points at it and no intent runs") {
  CHECK(may_release_for_deleted(false, "bob", "bob", std::nullopt));
  CHECK(may_release_for_deleted(false, "bob", "bob", intent_state::done));
  CHECK(may_release_for_deleted(false, "bob", "bob", intent_state::rolling_back));
  // The user was made again since the feed entry: not released.
  CHECK_FALSE(may_release_for_deleted(true, "bob", "bob", std::nullopt));
  // Someone else's reservation.
  CHECK_FALSE(may_release_for_deleted(false, "ann", "bob", std::nullopt));
  CHECK_FALSE(may_release_for_deleted(false, "Bob", "bob", std::nullopt));
  // A sign-up of the same name in flight owns it.
  CHECK_FALSE(may_release_for_deleted(false, "bob", "bob", intent_state::pending));
  CHECK_FALSE(may_release_for_deleted(false, "bob", "bob", intent_state::reserved));
}

TEST_CASE("a reservation is stale only when its intent was rolled back or is gone and its user does not exist") {
  CHECK(reservation_stale(true, intent_state::rolled_back, false));
  CHECK(reservation_stale(true, std::nullopt, false));
  // Its user exists: held, whatever became of the intent (a done intent forgotten after retention).
  CHECK_FALSE(reservation_stale(true, std::nullopt, true));
  CHECK_FALSE(reservation_stale(true, intent_state::rolled_back, true));
  // An intent still running or finishing owns it.
  CHECK_FALSE(reservation_stale(true, intent_state::pending, false));
  CHECK_FALSE(reservation_stale(true, intent_state::reserved, false));
  CHECK_FALSE(reservation_stale(true, intent_state::rolling_back, false));
  CHECK_FALSE(reservation_stale(true, intent_state::done, false));
  // A user made without couchgate: released when that user is deleted, not here.
  CHECK_FALSE(reservation_stale(false, std::nullopt, false));
}

TEST_CASE("names and addresses that would look like another's are refused: invisible characters, white space at an edge") {
  const identity_rules r;
  CHECK_FALSE(check_user_name("alice ", r).ok());
  CHECK_FALSE(check_user_name(" alice", r).ok());
  CHECK_FALSE(check_user_name("alice\xC2\xA0", r).ok());            // U+00A0 no-break space
  CHECK_FALSE(check_user_name("\xE3\x80\x80" "alice", r).ok());       // U+3000 ideographic space
  CHECK_FALSE(check_user_name("al\xE2\x80\x8Bice", r).ok());       // U+200B zero-width space
  CHECK_FALSE(check_user_name("\xEF\xBB\xBF" "alice", r).ok());      // U+FEFF byte order mark
  CHECK_FALSE(check_user_name("ecila\xE2\x80\xAE", r).ok());        // U+202E right-to-left override
  CHECK_FALSE(check_user_name("al\xC2\xADice", r).ok());            // U+00AD soft hyphen
  CHECK(check_user_name("alice", r).error.empty());
  CHECK(check_user_name("alice ", r).error.find("white space") != std::string::npos);
  CHECK(check_user_name("al\xE2\x80\x8Bice", r).error.find("invisible") != std::string::npos);
  // White space inside a name, and letters beyond ASCII, stay allowed.
  CHECK(check_user_name("ann smith", r).ok());
  CHECK(check_user_name("Zo\xC3\xAB", r).ok());
  CHECK_FALSE(normalise_email("ann@example.org\xC2\xA0", r).ok());
  CHECK_FALSE(normalise_email("an\xE2\x80\x8Bn@example.org", r).ok());
  CHECK(normalise_email("  ann@example.org ", r).ok());  // ASCII white space is trimmed
}

TEST_CASE("identity: an Idempotency-Key is 1 to 128 visible ASCII characters, kept as sent") {
  CHECK(check_idempotency_key("7b1e0c7a-1f7e-4a53-9d0e-0c1f3e1a2b3c").value == "7b1e0c7a-1f7e-4a53-9d0e-0c1f3e1a2b3c");
  CHECK(check_idempotency_key(std::string(128, 'K')).ok());
  CHECK_FALSE(check_idempotency_key(std::string(129, 'K')).ok());
  CHECK_FALSE(check_idempotency_key("").ok());
  CHECK_FALSE(check_idempotency_key("a b").ok());
  CHECK_FALSE(check_idempotency_key("tab\there").ok());
  CHECK_FALSE(check_idempotency_key("caf\xc3\xa9").ok());
  CHECK(check_idempotency_key("caf\xc3\xa9").error.find("visible ASCII") != std::string::npos);
}
