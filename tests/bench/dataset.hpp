#pragma once
// Owns: the benchmark's data: which source databases exist (prefix + hex(user), exactly what
// couchgate's reconcile registers), the documents in them (deterministic ids, revisions and
// bodies, so the ceiling writes byte-for-byte the documents couchgate writes), and the
// parallel admin operations that create, fill, check and delete databases.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tests/bench/client.hpp"
#include "tests/bench/context.hpp"

namespace couchgate::bench {

struct source_db {
  std::string user;
  std::string db;  // policy::user_db_name(prefix, user)
};

// n users named stem + zero-padded index, and their database names under prefix.
std::vector<source_db> make_sources(const std::string& prefix, const std::string& stem, int n);

// Document j of a source: id "<user>-<j>" (unique across sources, so CouchDB's own replicator
// can fan them into one database without collisions), revision 1-<hash> with _revisions.
json source_doc(const source_db& s, int j);
// The same document under its central id ("<owner>:<id>"), as couchgate writes it.
json central_doc(const source_db& s, int j);
// Serialized size of one source document (for the report).
std::size_t doc_bytes(const source_db& s, int j);

// Runs fn(i, client) for i in [0, n) on `threads` threads, each with its own keep-alive
// connection. Stops early after the first error (fn returns a non-empty message) or an
// interruption (unless cleanup is true: cleanup runs to the end); returns the first error
// ("" when everything succeeded).
std::string parallel_for(int n, int threads, const std::function<std::string(int, bench_client&)>& fn,
                         bool cleanup = false);

// The same over connections that outlive the call (one thread per client): for loops that
// fan out every few milliseconds and must not open new sockets each time. make_clients connects
// to the server as its admin unless told otherwise.
using client_pool = std::vector<std::unique_ptr<bench_client>>;
client_pool make_clients(int n, const endpoint& to = endpoint::server_admin());
std::string parallel_for(int n, client_pool& clients, const std::function<std::string(int, bench_client&)>& fn);

// Calls fn(i, client) for i in [0, total), call i due at t0 + i/rate, over as many threads as a
// slow server (500 ms per request) needs to keep the rate (rate/2, at least `threads`, at most
// 64), each with its own keep-alive connection to `to` (the server as its admin unless told
// otherwise). Closed loop: a server slower than that gets fewer calls per second than asked.
// Stops early when interrupted.
void paced_for(std::size_t total, double rate, int threads, steady::time_point t0,
               const std::function<void(std::size_t, bench_client&)>& fn, const endpoint& to = endpoint::server_admin());
// How many connections paced_for uses for that rate and `threads`.
int paced_writers(double rate, int threads);

// Admin PUT /db (412 = already there is an error: names are unique per run).
// query: "" or "?q=1" and the like (the server's defaults otherwise).
std::string create_db(context& ctx, bench_client& c, const std::string& db, const std::string& query = "");
// Admin DELETE /db (404 is fine).
std::string delete_db(context& ctx, bench_client& c, const std::string& db);

// Creates every source database and writes docs_per_db documents into each with
// _bulk_docs new_edits:false (batches of 1000), over `threads` connections (0 = --threads).
// create_query: as create_db's (the ceilings create what couchgate would: couchgate_q below).
std::string seed_sources(context& ctx, const std::vector<source_db>& sources, int docs_per_db, int threads = 0,
                         const std::string& create_query = "");
// The shards (provisioning.q) of the databases couchgate creates with this config (its default
// when the config leaves it out), and that as a PUT /db query ("?q=1"; "" for 0 = the server's).
std::size_t couchgate_q(const json& cfg);
std::string q_query(std::size_t q);
// Deletes every database, even after an interruption; returns the first error.
std::string delete_dbs(context& ctx, const std::vector<std::string>& dbs);

}  // namespace couchgate::bench
