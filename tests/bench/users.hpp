#pragma once
// Owns: the benchmark's client users: `_users` documents with passwords (what a PouchDB client
// logs in with) and a database per user with `_security` naming the user, created by the bench
// itself (not provisioned by couchgate: the client phases measure requests, not provisioning),
// and their removal.
#include <string>
#include <utility>
#include <vector>

#include "tests/bench/client.hpp"
#include "tests/bench/context.hpp"

namespace couchgate::bench {

struct bench_user {
  std::string name, password;
  std::string db;   // policy::user_db_name(prefix, name): what couchgate's /me resolves to
  std::string rev;  // of the _users document, once created
};

// count users named stem + zero-padded index, with their databases under prefix.
std::vector<bench_user> make_users(const std::string& prefix, const std::string& stem, int count);

// Creates every user's `_users` document (roles: [role], the role couchgate's config selects,
// as a real deployment's users have) and its database with `_security`
// members.names = [user]. On Apache CouchDB the password is stored pre-hashed (PBKDF2-SHA1, 10
// iterations: the server's own 600 000 would measure its hashing, not the clients); on
// pouchdb-server as a plain `password` (it hashes cheaply). `db_query` goes with each database's
// PUT ("?q=1": one shard, as couchgate's provisioning creates them). Returns the first error ("" = ok).
std::string create_users(context& ctx, std::vector<bench_user>& users, const std::string& role,
                         const std::string& db_query = {});

// Deletes `_users` documents by (id, rev), 500 per request; failures are noted, not fatal.
void delete_user_docs(bench_client& c, const std::vector<std::pair<std::string, std::string>>& id_revs);
// delete_user_docs for the users created by create_users, and their databases.
void delete_users(context& ctx, const std::vector<bench_user>& users);

}  // namespace couchgate::bench
