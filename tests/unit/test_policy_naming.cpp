#include <doctest/doctest.h>

#include <set>
#include <string>
#include <vector>

#include "policy/naming.hpp"

using namespace couchgate::policy;

TEST_CASE("hex_encode: lowercase, two digits per byte") {
  CHECK(hex_encode("") == "");
  CHECK(hex_encode("alice") == "616c696365");
  CHECK(hex_encode(std::string("\x00\xff\x0a", 3)) == "00ff0a");
  CHECK(hex_encode("a:b/c%d e") == "613a622f6325642065");
  CHECK(hex_encode("\xF0\x9F\x98\x80") == "f09f9880");  // U+1F600
}

TEST_CASE("hex_decode: even-length lowercase hex only") {
  CHECK(hex_decode("") == std::string());
  CHECK(hex_decode("616c696365") == std::string("alice"));
  CHECK(hex_decode("00ff0a") == std::string("\x00\xff\x0a", 3));
  CHECK_FALSE(hex_decode("616").has_value());         // odd length
  CHECK_FALSE(hex_decode("616C696365").has_value());  // uppercase
  CHECK_FALSE(hex_decode("6g").has_value());
  CHECK_FALSE(hex_decode("61-2").has_value());
  CHECK_FALSE(hex_decode(" 61").has_value());
}

TEST_CASE("sha256_hex: FIPS 180 vectors and padding boundaries") {
  CHECK(sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  // Reference values from coreutils sha256sum over n repetitions of 'a'.
  CHECK(sha256_hex(std::string(55, 'a')) == "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318");
  CHECK(sha256_hex(std::string(56, 'a')) == "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a");
  CHECK(sha256_hex(std::string(63, 'a')) == "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34");
  CHECK(sha256_hex(std::string(64, 'a')) == "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb");
  CHECK(sha256_hex(std::string(65, 'a')) == "635361c48bb9eab14198e76ea8ab7f1a41685d6ad62aa9146d301d4f17eb0ae0");
  CHECK(sha256_hex(std::string(119, 'a')) == "31eba51c313a5c08226adf18d4a359cfdfd8d2e816b13f4af952f7ea6584dcfb");
  CHECK(sha256_hex(std::string(120, 'a')) == "2f3d335432c70b580af0e8e1b3674a7c020d683aa5f73aaaedfdc55af904c21c");
  CHECK(sha256_hex(std::string(1000, 'a')) == "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3");
  CHECK(sha256_hex("alice") == "2bd806c97f0e00af1a1fc3328fa763a9269723c8db8fac4f93af71db186d6e90");
}

TEST_CASE("is_valid_db_name follows ^[a-z][a-z0-9_$()+/-]*$ and the length limit") {
  CHECK(is_valid_db_name("a"));
  CHECK(is_valid_db_name("a0_$()+-/z"));
  CHECK(is_valid_db_name("userdb-616c696365"));
  CHECK(is_valid_db_name(std::string(max_db_name_length, 'a')));
  CHECK_FALSE(is_valid_db_name(std::string(max_db_name_length + 1, 'a')));
  CHECK_FALSE(is_valid_db_name(""));
  CHECK_FALSE(is_valid_db_name("_users"));
  CHECK_FALSE(is_valid_db_name("0abc"));
  CHECK_FALSE(is_valid_db_name("-abc"));
  CHECK_FALSE(is_valid_db_name("Abc"));
  CHECK_FALSE(is_valid_db_name("aBc"));
  CHECK_FALSE(is_valid_db_name("a.b"));
  CHECK_FALSE(is_valid_db_name("a b"));
  CHECK_FALSE(is_valid_db_name("a:b"));
  CHECK_FALSE(is_valid_db_name("a\xC3\xA9"));
  CHECK_FALSE(is_valid_db_name(std::string("a\0b", 3)));
}

TEST_CASE("user_db_name: couch_peruser form prefix + hex(name)") {
  CHECK(user_db_name("userdb-", "alice") == "userdb-616c696365");
  CHECK(user_db_name("userdb-", "a:b/c%d e") == "userdb-613a622f6325642065");
  CHECK(user_db_name("userdb-", "\xF0\x9F\x98\x80") == "userdb-f09f9880");
  CHECK(user_db_name("userdb-", "_admin") == "userdb-5f61646d696e");
  CHECK(is_valid_db_name(user_db_name("userdb-", "a:b/c%d e")));
}

TEST_CASE("user_db_name / user_from_db_name round trip for awkward names") {
  const std::vector<std::string> names = {
      "alice", "a:b", "a/b", "100%", "with space", "\xF0\x9F\x98\x80 emoji", "_leading",
      "%shared", "UPPER", "tab\there", std::string("nul\0byte", 8), std::string(115, 'z'),
  };
  for (const std::string prefix : {"userdb-", "u", "team/x-"}) {
    std::set<std::string> seen;
    for (const auto& n : names) {
      CAPTURE(prefix);
      CAPTURE(n);
      const std::string db = user_db_name(prefix, n);
      CHECK(is_valid_db_name(db));
      CHECK(user_from_db_name(prefix, db) == n);
      CHECK(seen.insert(db).second);
    }
  }
}

TEST_CASE("user_db_name: names too long for hex are hashed, exactly at the limit") {
  const std::string name(200, 'x');
  const std::string db = user_db_name("userdb-", name);
  // 238 - 7 (prefix) - 1 ("-") - 64 (sha) = 166 hex digits of the name survive.
  std::string expected = "userdb-";
  for (int i = 0; i < 83; ++i) expected += "78";
  expected += "-aa20c23e3201834050679e1d88941b9a6fed0557c9a705cb2c315e2e63fd486d";
  CHECK(db == expected);
  CHECK(db.size() == max_db_name_length);
  CHECK(is_valid_db_name(db));
  CHECK_FALSE(user_from_db_name("userdb-", db).has_value());

  // Same long head, different tail: still different databases.
  const std::string other = std::string(199, 'x') + "y";
  CHECK(user_db_name("userdb-", other) != db);
  CHECK(user_db_name("userdb-", other).substr(0, 7 + 166) == db.substr(0, 7 + 166));

  // Stable.
  CHECK(user_db_name("userdb-", name) == db);
}

TEST_CASE("user_db_name: boundary between the plain and the hashed form") {
  // prefix of 6 + 2*116 = 238: still plain.
  const std::string fits(116, 'a');
  const std::string plain = user_db_name("userdb", fits);
  CHECK(plain.size() == max_db_name_length);
  CHECK(plain == "userdb" + hex_encode(fits));
  CHECK(user_from_db_name("userdb", plain) == fits);

  // One more byte: 240 > 238, hashed, with an odd number (167) of hex digits kept.
  const std::string too_long(117, 'a');
  const std::string hashed = user_db_name("userdb", too_long);
  CHECK(hashed.size() == max_db_name_length);
  CHECK(hashed == "userdb" + hex_encode(too_long).substr(0, 167) + "-" + sha256_hex(too_long));
  CHECK(is_valid_db_name(hashed));
  CHECK_FALSE(user_from_db_name("userdb", hashed).has_value());
}

TEST_CASE("user_db_name: empty prefix") {
  CHECK(user_db_name("", "alice") == "616c696365");
  CHECK_FALSE(is_valid_db_name(user_db_name("", "alice")));  // hex starts with a digit
  CHECK(user_from_db_name("", "616c696365") == std::string("alice"));
  const std::string long_name(150, 'q');
  const std::string db = user_db_name("", long_name);
  CHECK(db.size() == max_db_name_length);
  CHECK(db == hex_encode(long_name).substr(0, 173) + "-" + sha256_hex(long_name));
  CHECK_FALSE(user_from_db_name("", db).has_value());
}

TEST_CASE("user_db_name: a prefix too long for the hashed form yields an invalid name") {
  const std::string prefix(200, 'p');
  CHECK(user_db_name(prefix, "a") == prefix + "61");  // short names still fit
  const std::string db = user_db_name(prefix, "abcdefghijklmnopqrst");
  CHECK(db == prefix + "-" + sha256_hex("abcdefghijklmnopqrst"));
  CHECK_FALSE(is_valid_db_name(db));
}

TEST_CASE("user_from_db_name rejects what user_db_name cannot produce") {
  CHECK_FALSE(user_from_db_name("userdb-", "other-616c696365").has_value());
  CHECK_FALSE(user_from_db_name("userdb-", "userdb-").has_value());          // empty name
  CHECK_FALSE(user_from_db_name("userdb-", "userdb").has_value());
  CHECK_FALSE(user_from_db_name("userdb-", "userdb-616C696365").has_value()); // uppercase
  CHECK_FALSE(user_from_db_name("userdb-", "userdb-616").has_value());        // odd
  CHECK_FALSE(user_from_db_name("userdb-", "userdb-ff").has_value());         // not UTF-8
  CHECK_FALSE(user_from_db_name("userdb-", "userdb-c0af").has_value());       // overlong '/'
  CHECK_FALSE(user_from_db_name("userdb-", "userdb-eda080").has_value());     // surrogate
  CHECK_FALSE(user_from_db_name("userdb-", "userdb-f4908080").has_value());   // > U+10FFFF
  CHECK_FALSE(user_from_db_name("userdb-", "userdb-e282").has_value());       // truncated
  CHECK(user_from_db_name("userdb-", "userdb-c3a9") == std::string("\xC3\xA9"));
  CHECK(user_from_db_name("userdb-", "userdb-f09f9880") == std::string("\xF0\x9F\x98\x80"));
  // Longer than any database name: user_db_name would have hashed it.
  std::string too_long = "userdb-";
  for (int i = 0; i < 116; ++i) too_long += "61";  // 239 characters of valid pure hex
  CHECK(hex_decode(too_long.substr(7)).has_value());
  CHECK_FALSE(user_from_db_name("userdb-", too_long).has_value());
}

TEST_CASE("user_doc_id / user_name_from_doc_id") {
  CHECK(user_doc_id("alice") == "org.couchdb.user:alice");
  CHECK(user_doc_id("a:b") == "org.couchdb.user:a:b");
  CHECK(user_name_from_doc_id("org.couchdb.user:alice") == std::string("alice"));
  CHECK(user_name_from_doc_id("org.couchdb.user:a:b") == std::string("a:b"));
  CHECK(user_name_from_doc_id(user_doc_id("\xF0\x9F\x98\x80 x")) == std::string("\xF0\x9F\x98\x80 x"));
  CHECK_FALSE(user_name_from_doc_id("org.couchdb.user:").has_value());
  CHECK_FALSE(user_name_from_doc_id("org.couchdb.user").has_value());
  CHECK_FALSE(user_name_from_doc_id("alice").has_value());
  CHECK_FALSE(user_name_from_doc_id("_design/_auth").has_value());
  CHECK_FALSE(user_name_from_doc_id("ORG.couchdb.user:alice").has_value());
}
