// PouchDB's pull fetches every attachment of a batch at once (one request each, in parallel),
// and does not retry an attachment request that fails: a front door that refuses a user's
// requests beyond its per-user cap (429) breaks the pull. The driver
// (tests/integration/test_front_sync.cpp) sets front.max_requests_per_user far below that
// parallelism; requests beyond it must wait their turn.
//
//   1. documents with attachments (many small ones, some of 1 MiB) are written directly on the
//      server into alice's database;
//   2. PouchDB pulls /me: the replication succeeds and every attachment's bytes match what was
//      written (md5 and the server's digest);
//   3. timing: each 1 MiB attachment fetched one after another through the front door (TLS,
//      and plain HTTP on the same port) and directly from the server; the medians are printed
//      and written to p.timing_out.
//
// Usage: node burst.js PARAMS.json   (written by test_front_sync.cpp; see lib.js)
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const lib = require('./lib');
const PouchDB = require('pouchdb-core')
  .plugin(require('pouchdb-adapter-memory'))
  .plugin(require('pouchdb-adapter-http'))
  .plugin(require('pouchdb-replication'));

const p = lib.params();
const c = new lib.checks('burst');
const direct = lib.server(p);
const [alice] = p.users;
const SMALL = p.small || 40;
const BIG = p.big || 4;
const MiB = 1024 * 1024;
const run = crypto.randomBytes(4).toString('hex');

async function main() {
  lib.record_secrets(p, [alice.password, lib.basic(alice.name, alice.password).slice(6)]);
  const expected = {};
  const docs = [];
  for (let i = 0; i < SMALL + BIG; i++) {
    const big = i < BIG;
    const data = lib.bytes(`${run}-${i}`, big ? MiB : 2000 + i);
    const name = big ? 'big.bin' : 'small.bin';
    docs.push({ _id: `att-${String(i).padStart(3, '0')}`, _attachments: { [name]: { content_type: 'application/octet-stream', data: data.toString('base64') } } });
    expected[`att-${String(i).padStart(3, '0')}/${name}`] = lib.md5_digest(data);
  }
  const w = await direct(`/${encodeURIComponent(alice.db)}/_bulk_docs`, { method: 'POST', body: { docs }, timeout_ms: 120000 });
  c.ok(w.status === 201 && Array.isArray(w.json) && w.json.every((r) => r.ok), `direct _bulk_docs: ${w.status} ${lib.trunc(w.text)}`);

  const remote = new PouchDB(`${p.front}/me`, { skip_setup: true, auth: { username: alice.name, password: alice.password } });
  const local = new PouchDB(`burst-${run}`, { adapter: 'memory' });
  const t0 = Date.now();
  try {
    const r = await remote.replicate.to(local);
    c.ok(r.ok && r.doc_write_failures === 0 && r.docs_written === docs.length,
      `pull /me: ${lib.trunc(JSON.stringify(r), 500)}`);
    console.log(`pull /me: ${r.docs_written} documents with ${SMALL + BIG} attachments in ${Date.now() - t0} ms`);
  } catch (e) {
    c.ok(false, `pull /me failed: ${e && e.status} ${e && e.name} ${e && e.message} ${lib.trunc(JSON.stringify(e), 500)}`);
  }
  let bad = 0;
  for (const [key, digest] of Object.entries(expected)) {
    const [id, name] = key.split('/');
    const att = await local.getAttachment(id, name).catch(() => undefined);
    if (!att || lib.md5_digest(att) !== digest) bad++;
  }
  c.ok(bad === 0, `${bad} of ${Object.keys(expected).length} pulled attachments differ from what was written`);

  // Timing: the same 1 MiB attachments through the front door and directly.
  const paths = [];
  for (let i = 0; i < BIG; i++) paths.push(`att-${String(i).padStart(3, '0')}/big.bin`);
  const auth = { Authorization: lib.basic(alice.name, alice.password) };
  const through_tls = await lib.timed_gets(p.front, paths.map((x) => `/me/${x}`), auth);
  const through_plain = p.front_plain ? await lib.timed_gets(p.front_plain, paths.map((x) => `/me/${x}`), auth) : [];
  const server_auth = { Authorization: lib.basic(p.server.user, p.server.password) };
  const straight = await lib.timed_gets(p.server.url, paths.map((x) => `/${encodeURIComponent(alice.db)}/${x}`),
    p.server.user ? server_auth : {});
  for (const [label, list] of [['front door (TLS)', through_tls], ['front door (plain)', through_plain], ['direct', straight]]) {
    c.ok(list.every((x) => x.status === 200 && x.bytes === MiB), `${label}: ${lib.trunc(JSON.stringify(list))}`);
  }
  const timing = {
    attachments: BIG,
    bytes: MiB,
    front_tls_median_ms: lib.median(through_tls.map((x) => x.ms)),
    front_plain_median_ms: lib.median(through_plain.map((x) => x.ms)),
    direct_median_ms: lib.median(straight.map((x) => x.ms)),
  };
  console.log(`timing: ${JSON.stringify(timing)}`);
  if (p.timing_out) fs.writeFileSync(p.timing_out, JSON.stringify(timing));
}

main().then(() => c.finish(), (e) => { c.ok(false, `unexpected: ${e && e.stack}`); c.finish(); });
