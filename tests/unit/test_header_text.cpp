// Header-value text rules shared by every header reader (replicator/transport/header_text).
#include <doctest/doctest.h>

#include "replicator/transport/header_text.hpp"

using namespace couchgate::replicator;

TEST_CASE("header text: optional white space is trimmed on both sides, the value's inside kept") {
  CHECK(trim_ows(" \tBearer  x \r\n") == "Bearer  x");
  CHECK(trim_ows("a b") == "a b");
  CHECK(trim_ows(" \t\r\n").empty());
  CHECK(trim_ows("").empty());
  // Only SP, HTAB, CR and LF: a vertical tab or NUL is part of the value (and refused by its reader).
  CHECK(trim_ows("\va\v") == "\va\v");
}

TEST_CASE("header text: ASCII case folding touches A-Z only") {
  CHECK(lower_ascii("Set-Cookie: AuthSession") == "set-cookie: authsession");
  // UTF-8 bytes and punctuation unchanged (a locale-aware tolower could fold 0xC4).
  CHECK(lower_ascii("\xC3\x84[Z@`{") == "\xC3\x84[z@`{");
  CHECK(starts_with_ascii_ci("BeArEr token", "bearer "));
  CHECK_FALSE(starts_with_ascii_ci("Bearer", "bearer "));
  CHECK_FALSE(starts_with_ascii_ci("Basic x", "bearer "));
  CHECK(starts_with_ascii_ci("Max-Age=60", "max-age="));
  CHECK(starts_with_ascii_ci("", ""));
}
