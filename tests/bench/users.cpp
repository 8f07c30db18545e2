// Owns: the benchmark's client users (see users.hpp).
#include "tests/bench/users.hpp"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <cstdio>

#include "policy/naming.hpp"
#include "tests/bench/dataset.hpp"

namespace couchgate::bench {

namespace {

std::string hex(const unsigned char* p, std::size_t n) {
  std::string out;
  char b[3];
  for (std::size_t i = 0; i < n; ++i) {
    std::snprintf(b, sizeof b, "%02x", p[i]);
    out += b;
  }
  return out;
}

// The `_users` document CouchDB stores for a password: scheme pbkdf2 (HMAC-SHA1, the scheme's
// default when no pbkdf2_prf is given), the hex salt string used as the salt bytes.
json prehashed(const std::string& password) {
  unsigned char salt_bytes[16];
  RAND_bytes(salt_bytes, sizeof salt_bytes);
  const std::string salt = hex(salt_bytes, sizeof salt_bytes);
  const int iterations = 10;
  unsigned char key[20];
  PKCS5_PBKDF2_HMAC_SHA1(password.data(), static_cast<int>(password.size()), reinterpret_cast<const unsigned char*>(salt.data()),
                         static_cast<int>(salt.size()), iterations, sizeof key, key);
  return json{{"password_scheme", "pbkdf2"}, {"iterations", iterations}, {"salt", salt}, {"derived_key", hex(key, sizeof key)}};
}

}  // namespace

std::vector<bench_user> make_users(const std::string& prefix, const std::string& stem, int count) {
  std::vector<bench_user> out;
  out.reserve(static_cast<std::size_t>(count));
  for (int i = 0; i < count; ++i) {
    bench_user u;
    u.name = stem + pad(i, 5);
    u.password = "pw-" + u.name;
    u.db = policy::user_db_name(prefix, u.name);
    out.push_back(std::move(u));
  }
  return out;
}

std::string create_users(context& ctx, std::vector<bench_user>& users, const std::string& role,
                         const std::string& db_query) {
  bench_client admin(std::chrono::seconds(120));
  for (std::size_t off = 0; off < users.size(); off += 100) {
    json docs = json::array();
    for (std::size_t i = off; i < std::min(users.size(), off + 100); ++i) {
      json d{{"_id", "org.couchdb.user:" + users[i].name}, {"name", users[i].name}, {"type", "user"}, {"roles", {role}}};
      if (ctx.pouchdb) d["password"] = users[i].password;
      else d.update(prehashed(users[i].password));
      docs.push_back(std::move(d));
    }
    auto r = admin.post("/_users/_bulk_docs", json{{"docs", docs}}.dump());
    if (r.status != 201 || !r.body.is_array()) return "creating users: " + describe(r);
    for (std::size_t k = 0; k < r.body.size() && off + k < users.size(); ++k) {
      const json& row = r.body[k];
      if (!row.is_object() || !row.contains("rev")) return "creating user " + users[off + k].name + ": " + row.dump();
      users[off + k].rev = row["rev"].get<std::string>();
    }
    if (interrupted()) return "interrupted";
  }
  return parallel_for(static_cast<int>(users.size()), ctx.opt.threads, [&](int i, bench_client& c) -> std::string {
    const auto& u = users[static_cast<std::size_t>(i)];
    if (auto e = create_db(ctx, c, u.db, db_query); !e.empty()) return e;
    json sec{{"admins", {{"names", json::array()}, {"roles", json::array()}}},
             {"members", {{"names", {u.name}}, {"roles", json::array()}}}};
    auto r = c.put(db_path(u.db) + "/_security", sec.dump());
    if (r.status != 200 && r.status != 201) return "PUT /" + u.db + "/_security: " + describe(r);
    return "";
  });
}

void delete_user_docs(bench_client& c, const std::vector<std::pair<std::string, std::string>>& id_revs) {
  for (std::size_t off = 0; off < id_revs.size(); off += 500) {
    json docs = json::array();
    for (std::size_t i = off; i < std::min(id_revs.size(), off + 500); ++i) {
      docs.push_back({{"_id", id_revs[i].first}, {"_rev", id_revs[i].second}, {"_deleted", true}});
    }
    auto r = c.post("/_users/_bulk_docs", json{{"docs", docs}}.dump());
    if (r.status != 201) note("cleanup: deleting users failed: " + describe(r));
  }
}

void delete_users(context& ctx, const std::vector<bench_user>& users) {
  std::vector<std::pair<std::string, std::string>> id_revs;
  std::vector<std::string> dbs;
  for (const auto& u : users) {
    if (!u.rev.empty()) id_revs.emplace_back("org.couchdb.user:" + u.name, u.rev);
    dbs.push_back(u.db);
  }
  bench_client admin(std::chrono::seconds(120));
  delete_user_docs(admin, id_revs);
  if (auto e = delete_dbs(ctx, dbs); !e.empty()) note("cleanup: " + e);
}

}  // namespace couchgate::bench
