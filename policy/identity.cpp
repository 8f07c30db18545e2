// Owns: identity rules and the sign-up intent's decisions (see identity.hpp).
//
// Unicode normalisation (NFC, NFKC), lower-casing and case folding use GNU libunistring, which libcurl already
// brings in through libidn2: no new runtime library.
#include "policy/identity.hpp"

#include <unicase.h>
#include <unictype.h>
#include <uninorm.h>
#include <unistr.h>

#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <memory>

namespace couchgate::policy {

namespace {

struct free_deleter {
  void operator()(void* p) const { std::free(p); }
};

const uint8_t* bytes(std::string_view s) { return reinterpret_cast<const uint8_t*>(s.data()); }

bool valid_utf8(std::string_view s) { return u8_check(bytes(s), s.size()) == nullptr; }

// Takes a libunistring result (malloc'ed, `len` bytes; null when it failed, e.g. out of memory).
std::optional<std::string> owned(uint8_t* out, std::size_t len) {
  std::unique_ptr<uint8_t, free_deleter> held(out);
  if (!held) return std::nullopt;
  return std::string(reinterpret_cast<const char*>(held.get()), len);
}

// NFC form of valid UTF-8 (nullopt when libunistring fails, e.g. out of memory).
std::optional<std::string> nfc(std::string_view s) {
  if (s.empty()) return std::string();
  std::size_t len = 0;
  uint8_t* out = u8_normalize(UNINORM_NFC, bytes(s), s.size(), nullptr, &len);
  return owned(out, len);
}

// NFKC, then full Unicode lower case, then NFKC again (case mapping may denormalise; lowering
// first would miss capitals that only NFKC produces, such as U+210D DOUBLE-STRUCK CAPITAL H).
// Compatibility forms (full-width letters, ligatures, circled or styled letters) become the
// letters they stand for, so an address typed with them is the same address.
std::optional<std::string> lower_nfkc(std::string_view s) {
  if (s.empty()) return std::string();
  std::size_t len = 0;
  uint8_t* out = u8_normalize(UNINORM_NFKC, bytes(s), s.size(), nullptr, &len);
  const auto k = owned(out, len);
  if (!k) return std::nullopt;
  out = u8_tolower(bytes(*k), k->size(), nullptr, UNINORM_NFKC, nullptr, &len);
  return owned(out, len);
}

// Unicode's compatibility caseless form (NFKC and full case folding, as UTS #39 compares
// identifiers): "Alice", "ALICE", "ａｌｉｃｅ" (full width), "Straße" and "STRASSE" all fold to
// one key.
std::optional<std::string> casefold_nfkc(std::string_view s) {
  if (s.empty()) return std::string();
  std::size_t len = 0;
  uint8_t* out = u8_casefold(bytes(s), s.size(), nullptr, UNINORM_NFKC, nullptr, &len);
  return owned(out, len);
}

std::size_t code_points(std::string_view s) {
  return u8_mbsnlen(bytes(s), s.size());
}

// C0, DEL and C1 controls (the C1 range is U+0080..U+009F, encoded C2 80..C2 9F).
bool has_control(std::string_view s) {
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) return true;
    if (c == 0xc2 && i + 1 < s.size()) {
      const auto d = static_cast<unsigned char>(s[i + 1]);
      if (d >= 0x80 && d <= 0x9f) return true;
    }
  }
  return false;
}

// Each code point of valid UTF-8, in order.
template <typename F>
void each_code_point(std::string_view s, F f) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    ucs4_t uc = 0;
    const int n = u8_mbtouc(&uc, p, static_cast<std::size_t>(end - p));
    if (n <= 0) return;
    f(uc);
    p += n;
  }
}

// Format characters (Unicode category Cf): invisible, so two names that look the same would be
// two names (zero-width spaces and joiners, bidirectional overrides, the soft hyphen, the BOM).
bool has_format_char(std::string_view s) {
  bool found = false;
  each_code_point(s, [&](ucs4_t uc) { found = found || uc_is_general_category(uc, UC_CATEGORY_Cf); });
  return found;
}

// Default-ignorable code points (Unicode's Default_Ignorable_Code_Point: format characters, and
// also U+034F, variation selectors, the Hangul fillers): invisible when shown.
bool has_default_ignorable(std::string_view s) {
  bool found = false;
  each_code_point(s, [&](ucs4_t uc) { found = found || uc_is_property_default_ignorable_code_point(uc); });
  return found;
}

// White space (any Unicode white space: U+00A0, U+3000...) as the first or the last character.
bool space_at_edge(std::string_view s) {
  std::optional<ucs4_t> first, last;
  each_code_point(s, [&](ucs4_t uc) {
    if (!first) first = uc;
    last = uc;
  });
  return (first && uc_is_property_white_space(*first)) || (last && uc_is_property_white_space(*last));
}

bool is_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && is_space(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

checked_value fail(std::string why) { return checked_value{{}, std::move(why)}; }

bool valid_domain(std::string_view d) {
  if (d.empty() || d.size() > 253) return false;
  std::size_t labels = 0;
  while (true) {
    const auto dot = d.find('.');
    const std::string_view label = d.substr(0, dot);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') return false;
    for (const char ch : label) {
      const auto c = static_cast<unsigned char>(ch);
      const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c >= 0x80;
      if (!ok) return false;
    }
    ++labels;
    if (dot == std::string_view::npos) break;
    d.remove_prefix(dot + 1);
  }
  return labels >= 2;
}

}  // namespace

checked_value check_user_name(std::string_view name, const identity_rules& rules) {
  if (name.empty()) return fail("name is empty");
  if (!valid_utf8(name)) return fail("name is not valid UTF-8");
  auto n = nfc(name);
  if (!n) return fail("name could not be normalised");
  if (n->size() > rules.max_name_bytes) {
    return fail("name is longer than " + std::to_string(rules.max_name_bytes) + " bytes");
  }
  if (has_control(*n)) return fail("name contains a control character");
  if (has_format_char(*n)) return fail("name contains an invisible (format) character");
  if (space_at_edge(*n)) return fail("name starts or ends with white space");
  if (n->front() == '_') return fail("name must not start with '_'");
  if (n->find(':') != std::string::npos) return fail("name must not contain ':'");
  return checked_value{std::move(*n), {}};
}

checked_value check_password(std::string_view password, const identity_rules& rules) {
  if (!valid_utf8(password)) return fail("password is not valid UTF-8");
  if (password.size() > rules.max_password_bytes) {
    return fail("password is longer than " + std::to_string(rules.max_password_bytes) + " bytes");
  }
  if (code_points(password) < rules.min_password_chars) {
    return fail("password is shorter than " + std::to_string(rules.min_password_chars) + " characters");
  }
  return checked_value{std::string(password), {}};
}

checked_value check_idempotency_key(std::string_view key) {
  if (key.empty()) return fail("Idempotency-Key is empty");
  if (key.size() > 128) return fail("Idempotency-Key is longer than 128 characters");
  for (const char c : key) {
    if (c < 0x21 || c > 0x7e) return fail("Idempotency-Key may only hold visible ASCII characters");
  }
  return checked_value{std::string(key), {}};
}

checked_value normalise_email(std::string_view email, const identity_rules& rules) {
  const std::string_view t = trim(email);
  if (t.empty()) return fail("email is empty");
  if (!valid_utf8(t)) return fail("email is not valid UTF-8");
  auto low = lower_nfkc(t);
  if (!low) return fail("email could not be normalised");
  const std::string& e = *low;
  if (e.size() > rules.max_email_bytes) {
    return fail("email is longer than " + std::to_string(rules.max_email_bytes) + " bytes");
  }
  if (has_control(e)) return fail("email contains a control character");
  if (has_format_char(e) || has_default_ignorable(e)) return fail("email contains an invisible (format) character");
  bool spaced = false;
  each_code_point(e, [&](ucs4_t uc) { spaced = spaced || uc_is_property_white_space(uc); });
  if (spaced) return fail("email contains white space");
  for (const char c : e) {
    if (is_space(static_cast<unsigned char>(c))) return fail("email contains white space");
  }
  const auto at = e.find('@');
  if (at == std::string::npos || e.find('@', at + 1) != std::string::npos) {
    return fail("email must contain exactly one '@'");
  }
  const std::string_view local = std::string_view(e).substr(0, at);
  const std::string_view domain = std::string_view(e).substr(at + 1);
  if (local.empty() || local.size() > 64) return fail("email's part before '@' must be 1 to 64 bytes");
  if (local.front() == '.' || local.back() == '.' || local.find("..") != std::string_view::npos) {
    return fail("email's part before '@' has a misplaced '.'");
  }
  if (!valid_domain(domain)) return fail("email's domain is not a valid host name");
  return checked_value{e, {}};
}

std::string name_key(std::string_view checked_name) {
  auto folded = casefold_nfkc(checked_name);
  if (!folded) return std::string(checked_name);
  // NFKC_Casefold also drops default-ignorable code points (U+034F, variation selectors, the
  // Hangul fillers...): invisible, so "ali<U+034F>ce" is "alice".
  std::string key;
  key.reserve(folded->size());
  each_code_point(*folded, [&](ucs4_t uc) {
    if (uc_is_property_default_ignorable_code_point(uc)) return;
    uint8_t buf[6];
    const int n = u8_uctomb(buf, uc, static_cast<int>(sizeof buf));
    if (n > 0) key.append(reinterpret_cast<const char*>(buf), static_cast<std::size_t>(n));
  });
  return key;
}

std::string legacy_name_key(std::string_view checked_name) {
  if (checked_name.empty()) return std::string();
  std::size_t len = 0;
  uint8_t* out = u8_tolower(bytes(checked_name), checked_name.size(), nullptr, UNINORM_NFC, nullptr, &len);
  auto low = owned(out, len);
  return low ? *low : std::string(checked_name);
}

const char* to_string(unique_field f) {
  switch (f) {
    case unique_field::name: return "name";
    case unique_field::email: return "email";
  }
  return "?";
}

std::string reservation_id(unique_field f, std::string_view key) {
  std::string id = to_string(f);
  id += '/';
  id += key;
  return id;
}

std::string loggable_value(unique_field f, std::string_view key) {
  if (f == unique_field::name) return std::string(key);
  const auto at = key.rfind('@');
  if (at == std::string_view::npos) return "…";
  // The local part's first character: one UTF-8 sequence (its length from the lead byte; a stray
  // continuation byte or a sequence cut short is left out rather than split).
  std::string first;
  if (at > 0) {
    const auto lead = static_cast<unsigned char>(key[0]);
    const std::size_t len = lead < 0x80 ? 1 : (lead >> 5) == 0x6 ? 2 : (lead >> 4) == 0xE ? 3 : (lead >> 3) == 0x1E ? 4 : 0;
    if (len > 0 && len <= at) first = std::string(key.substr(0, len));
  }
  return first + "…" + std::string(key.substr(at));
}

std::string loggable_reservation_id(std::string_view id) {
  const std::string prefix = std::string(to_string(unique_field::email)) + "/";
  if (id.substr(0, prefix.size()) != prefix) return std::string(id);
  return prefix + loggable_value(unique_field::email, id.substr(prefix.size()));
}

const char* to_string(intent_state s) {
  switch (s) {
    case intent_state::pending: return "pending";
    case intent_state::reserved: return "reserved";
    case intent_state::done: return "done";
    case intent_state::rolling_back: return "rolling_back";
    case intent_state::rolled_back: return "rolled_back";
  }
  return "?";
}

std::optional<intent_state> intent_state_from(std::string_view s) {
  for (const auto st : {intent_state::pending, intent_state::reserved, intent_state::done,
                        intent_state::rolling_back, intent_state::rolled_back}) {
    if (s == to_string(st)) return st;
  }
  return std::nullopt;
}

const char* to_string(intent_action a) {
  switch (a) {
    case intent_action::leave: return "leave";
    case intent_action::finish: return "finish";
    case intent_action::roll_back: return "roll_back";
    case intent_action::release: return "release";
    case intent_action::forget: return "forget";
  }
  return "?";
}

intent_action decide_intent(const intent_facts& f, std::chrono::system_clock::time_point now,
                            std::chrono::seconds timeout, std::chrono::seconds retention) {
  const auto age = now - f.updated;
  switch (f.state) {
    case intent_state::rolled_back:
      // A sign-up that lost its `done` transition to a rollback deletes the user it made; if it
      // crashed first, that user is still here, without reservations: release removes it — once
      // the rollback is older than the timeout: on a cluster the sign-up's `done`, written through
      // another node (answered 202), may still be on its way, and then the user stays (see
      // resolve_fork).
      if (f.user_exists && f.user_from_this_intent) return age >= timeout ? intent_action::release : intent_action::leave;
      return age >= retention ? intent_action::forget : intent_action::leave;
    case intent_state::done:
      return age >= retention ? intent_action::forget : intent_action::leave;
    case intent_state::rolling_back:
      // A rollback already won its transition: only finishing it is left, however young; the
      // user this intent made is deleted only once it is old (as for rolled_back).
      if (f.user_exists && f.user_from_this_intent && age < timeout) return intent_action::leave;
      return intent_action::release;
    case intent_state::pending:
    case intent_state::reserved:
      if (age < timeout) return intent_action::leave;  // the sign-up may still be running
      return f.user_exists && f.user_from_this_intent ? intent_action::finish : intent_action::roll_back;
  }
  return intent_action::leave;
}

namespace {
// A revision's generation (the number before '-'); 0 when it has none.
std::uint64_t rev_generation(std::string_view rev) {
  std::uint64_t g = 0;
  const auto dash = rev.find('-');
  std::from_chars(rev.data(), rev.data() + (dash == std::string_view::npos ? 0 : dash), g);
  return g;
}

bool is_rollback(intent_state s) { return s == intent_state::rolling_back || s == intent_state::rolled_back; }

// How much a leaf's state counts in a fork (higher stays).
int fork_rank(intent_state s, bool user_from_this_intent) {
  switch (s) {
    case intent_state::done: return user_from_this_intent ? 5 : 3;
    case intent_state::reserved: return user_from_this_intent ? 4 : 2;
    case intent_state::pending: return user_from_this_intent ? 3 : 1;
    case intent_state::rolled_back: return user_from_this_intent ? 2 : 5;
    case intent_state::rolling_back: return user_from_this_intent ? 1 : 4;
  }
  return 0;
}
}  // namespace

bool couch_leaf_before(const intent_leaf& a, const intent_leaf& b) {
  const auto ga = rev_generation(a.rev), gb = rev_generation(b.rev);
  if (ga != gb) return ga < gb;
  return a.rev < b.rev;
}

fork_verdict resolve_fork(const std::vector<intent_leaf>& live, bool user_from_this_intent,
                          std::chrono::system_clock::time_point now, std::chrono::seconds timeout,
                          std::string_view own_rev) {
  fork_verdict v;
  if (live.empty()) return v;
  const intent_leaf* best = &live.front();
  for (const auto& l : live) {
    const int rl = fork_rank(l.state, user_from_this_intent), rb = fork_rank(best->state, user_from_this_intent);
    if (rl > rb || (rl == rb && couch_leaf_before(*best, l))) best = &l;
  }
  for (const auto& l : live) {
    if (&l == best) continue;
    // A young pending / reserved / rolling_back leaf to be dropped: its writer (a sign-up, a
    // reconciler releasing) may still be at work, and would undo what is settled now. The caller's
    // own leaf never waits; one that is kept needs no wait.
    const bool in_progress = l.state == intent_state::pending || l.state == intent_state::reserved ||
                             l.state == intent_state::rolling_back;
    if (l.rev != own_rev && in_progress && now - l.updated < timeout) return fork_verdict{true, {}, {}, false};
    v.drop.push_back(l.rev);
    if (is_rollback(l.state) && !is_rollback(best->state)) v.ensure_reservations = true;
  }
  v.keep = best->rev;
  return v;
}

const char* to_string(on_duplicate d) { return d == on_duplicate::flag ? "flag" : "exclude"; }

std::optional<on_duplicate> on_duplicate_from(std::string_view s) {
  if (s == "flag") return on_duplicate::flag;
  if (s == "exclude") return on_duplicate::exclude;
  return std::nullopt;
}

namespace {
bool in_flight(std::optional<intent_state> s) {
  return s == intent_state::pending || s == intent_state::reserved;
}
}  // namespace

claim classify_claim(std::string_view holder, std::string_view user, std::optional<intent_state> intent) {
  if (holder != user) return claim::taken;
  return in_flight(intent) ? claim::in_flight : claim::held;
}

direct_verdict decide_direct_user(claim name, std::optional<claim> email, on_duplicate mode) {
  direct_verdict v;
  if (name == claim::taken) v.conflicts.push_back(unique_field::name);
  if (email == claim::taken) v.conflicts.push_back(unique_field::email);
  v.look_again = !v.conflicts.empty() || name == claim::in_flight || email == claim::in_flight;
  v.provision = v.conflicts.empty() || mode == on_duplicate::flag;
  return v;
}

bool may_release_old_address(std::string_view holder, std::string_view user, std::optional<intent_state> intent) {
  return holder == user && !in_flight(intent) && intent != intent_state::rolling_back;
}

bool may_release_for_deleted(bool user_exists_now, std::string_view holder, std::string_view user,
                             std::optional<intent_state> intent) {
  return !user_exists_now && holder == user && !in_flight(intent);
}

bool reservation_stale(bool names_intent, std::optional<intent_state> intent, bool user_exists) {
  if (!names_intent || user_exists) return false;
  return !intent || *intent == intent_state::rolled_back;
}

}  // namespace couchgate::policy
