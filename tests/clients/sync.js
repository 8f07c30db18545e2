// PouchDB 9 (in-memory databases, the real replicator) against couchgate's front door, as an
// app would use it: every remote is `<front>/me` or `<front>/shared` with the user's own
// credential; the test server is only ever reached directly to check what landed there.
//
//   1. alice's first client pushes N documents (binary attachments, some of 1 MiB, updates,
//      deletions, conflicting branches written with new_edits:false);
//   2. what the server holds equals what the client holds (leaf revisions, winners,
//      conflicts, attachment digests);
//   3. a second client pulls: identical revisions, histories and attachment bytes;
//   4. both clients edit one document: the conflict converges to one winner on all three;
//   5. `live: true, retry: true` sync: a write made directly on the server arrives, and a
//      local write reaches the server, each within a deadline;
//   6. bob through the same /me sees only his own documents, alice never sees his;
//   7. /shared works for both;
//   8. a third client authenticated by the AuthSession cookie from POST /_session pulls too.
//
// Usage: node sync.js PARAMS.json   (written by test_front_sync.cpp; see lib.js)
'use strict';

const describe = (e) => lib.trunc(e && `${e.status || ''} ${e.name || ''} ${e.message || ''} ${e.reason || ''} ${JSON.stringify(e)} ${e.stack || ''}`, 900);
const crypto = require('crypto');
const lib = require('./lib');
const PouchDB = require('pouchdb-core')
  .plugin(require('pouchdb-adapter-memory'))
  .plugin(require('pouchdb-adapter-http'))
  .plugin(require('pouchdb-replication'));

const p = lib.params();
const c = new lib.checks('sync');
const direct = lib.server(p);
const [alice, bob] = p.users;
const full = !!p.full;
const N = p.docs || 500;
const BIG = full ? 100 : 5;        // documents with a 1 MiB attachment
const SMALL_EVERY = 5;             // every 5th document has a small binary attachment
const MiB = 1024 * 1024;
const run = crypto.randomBytes(4).toString('hex');
const deadline_ms = 30000;

const local = (name) => new PouchDB(`${name}-${run}`, { adapter: 'memory' });
const remote = (path, u) => new PouchDB(`${p.front}${path}`, {
  skip_setup: true, auth: { username: u.name, password: u.password },
});

function id_of(i) { return `doc-${String(i).padStart(4, '0')}`; }

// The documents of step 1: their ids, attachments and the expected attachment digests.
function make_docs() {
  const docs = [];
  const expected = {};   // "id/name" -> md5 digest of the bytes written
  for (let i = 0; i < N; i++) {
    const doc = { _id: id_of(i), i, text: `document ${i} of ${run}`, nested: { list: [i, i * 2], s: 'é✓' } };
    const att = {};
    if (i < BIG) att['big.bin'] = lib.bytes(`big-${run}-${i}`, MiB);
    if (i % SMALL_EVERY === 0) att['small.bin'] = lib.bytes(`small-${run}-${i}`, 1000 + i);
    if (Object.keys(att).length) {
      doc._attachments = {};
      for (const [name, data] of Object.entries(att)) {
        doc._attachments[name] = { content_type: 'application/octet-stream', data };
        expected[`${doc._id}/${name}`] = lib.md5_digest(data);
      }
    }
    docs.push(doc);
  }
  return { docs, expected };
}

// Conflicting branches written as a replicator would (new_edits:false), one of them deleted
// for every third document.
function conflict_docs() {
  const out = [];
  for (let i = 0; i < 20; i++) {
    const root = crypto.createHash('md5').update(`root-${run}-${i}`).digest('hex');
    for (const side of ['a', 'b']) {
      const leaf = crypto.createHash('md5').update(`${side}-${run}-${i}`).digest('hex');
      const d = { _id: `conflict-${i}`, _rev: `2-${leaf}`, side, _revisions: { start: 2, ids: [leaf, root] } };
      if (side === 'b' && i % 3 === 0) d._deleted = true;
      out.push(d);
    }
  }
  return out;
}

// Every document's leaf revisions (deleted ones included), from _changes?style=all_docs.
async function leaves_local(db) {
  const out = {};
  const ch = await db.changes({ style: 'all_docs', since: 0 });
  for (const r of ch.results) out[r.id] = r.changes.map((x) => x.rev).sort();
  return out;
}
async function leaves_server(dbname) {
  const r = await direct(`/${encodeURIComponent(dbname)}/_changes?style=all_docs`);
  const out = {};
  if (r.status !== 200) return { error: `${r.status} ${lib.trunc(r.text)}` };
  for (const row of r.json.results) out[row.id] = row.changes.map((x) => x.rev).sort();
  return out;
}

// Winners with their conflicts and attachment digests: the view both sides must agree on.
function winners_view(rows) {
  const out = {};
  for (const row of rows) {
    if (!row.doc || row.id.startsWith('_design/')) continue;
    const d = row.doc;
    const atts = {};
    for (const [n, a] of Object.entries(d._attachments || {})) atts[n] = { digest: a.digest, length: a.length };
    out[row.id] = { rev: d._rev, conflicts: (d._conflicts || []).slice().sort(), atts };
  }
  return out;
}
async function winners_local(db) {
  return winners_view((await db.allDocs({ include_docs: true, conflicts: true })).rows);
}
async function winners_server(dbname) {
  const r = await direct(`/${encodeURIComponent(dbname)}/_all_docs?include_docs=true&conflicts=true`);
  if (r.status !== 200) return { error: `${r.status} ${lib.trunc(r.text)}` };
  return winners_view(r.json.rows);
}

// Every leaf of every document with its full history, body and attachment bytes (sha256).
async function full_snapshot(db) {
  const out = {};
  const ids = Object.keys(await leaves_local(db)).sort();
  for (const id of ids) {
    const leaves = await db.get(id, { open_revs: 'all', revs: true, attachments: true, binary: true });
    const snap = {};
    for (const l of leaves) {
      const d = l.ok;
      if (!d) { snap[`missing ${l.missing}`] = true; continue; }
      const atts = {};
      for (const [n, a] of Object.entries(d._attachments || {})) {
        atts[n] = { digest: a.digest, sha256: crypto.createHash('sha256').update(a.data).digest('hex'), md5: lib.md5_digest(a.data) };
      }
      const body = { ...d };
      delete body._attachments;
      snap[d._rev] = { body, atts };
    }
    out[id] = snap;
  }
  return out;
}

function diff_keys(a, b, what) {
  const ka = Object.keys(a), kb = Object.keys(b);
  const only_a = ka.filter((k) => !(k in b)), only_b = kb.filter((k) => !(k in a));
  const differ = ka.filter((k) => k in b && JSON.stringify(a[k]) !== JSON.stringify(b[k]));
  c.ok(!only_a.length && !only_b.length && !differ.length,
    `${what}: ${only_a.length} only left (${only_a.slice(0, 3)}), ${only_b.length} only right (${only_b.slice(0, 3)}), ` +
    `${differ.length} differ (${differ.slice(0, 3).map((k) => `${k}: ${lib.trunc(JSON.stringify(a[k]), 200)} vs ${lib.trunc(JSON.stringify(b[k]), 200)}`)})`);
}

async function replicate(label, from, to) {
  const t0 = Date.now();
  try {
    const r = await from.replicate.to(to);
    c.ok(r.ok && r.doc_write_failures === 0 && !(r.errors || []).length,
      `${label}: replication result ${lib.trunc(JSON.stringify(r), 500)}`);
    console.log(`${label}: ${r.docs_read} read, ${r.docs_written} written in ${Date.now() - t0} ms`);
    return r;
  } catch (e) {
    c.ok(false, `${label}: replication failed: ${describe(e)}`);
    return undefined;
  }
}

async function step(name, fn) {
  console.log(`--- ${name}`);
  try {
    await fn();
  } catch (e) {
    c.ok(false, `${name}: threw ${describe(e)}`);
  }
}

async function main() {
  lib.record_secrets(p, [alice.password, bob.password, lib.basic(alice.name, alice.password).slice(6),
    lib.basic(bob.name, bob.password).slice(6)]);
  const a1 = local('alice1'), a2 = local('alice2'), a3 = local('alice3'), b1 = local('bob1');
  const alice_me = remote('/me', alice), bob_me = remote('/me', bob);
  const { docs, expected } = make_docs();

  await step('1. alice pushes documents, attachments, updates, deletions and conflicts', async () => {
    for (let i = 0; i < docs.length; i += 50) {
      const res = await a1.bulkDocs(docs.slice(i, i + 50));
      c.ok(res.every((r) => r.ok), `local bulkDocs ${i}: ${lib.trunc(JSON.stringify(res.filter((r) => !r.ok)))}`);
    }
    for (let i = 0; i < N; i += 7) {       // two updates each: histories of 3
      for (let k = 0; k < 2; k++) {
        const d = await a1.get(id_of(i));
        d.updated = k + 1;
        await a1.put(d);
      }
    }
    for (let i = 3; i < N; i += 10) await a1.remove(await a1.get(id_of(i)));   // deletions
    const cres = await a1.bulkDocs(conflict_docs(), { new_edits: false });
    c.ok(cres.every((r) => !r.error), `local conflicts: ${lib.trunc(JSON.stringify(cres))}`);
    await replicate('push alice1 -> /me', a1, alice_me);
  });

  await step('2. the server holds exactly what alice1 holds', async () => {
    diff_keys(await leaves_server(alice.db), await leaves_local(a1), 'leaf revisions server vs alice1');
    const ws = await winners_server(alice.db), wl = await winners_local(a1);
    diff_keys(ws, wl, 'winners/conflicts/attachment digests server vs alice1');
    let bad = 0;
    for (const [key, digest] of Object.entries(expected)) {
      const [id, name] = key.split('/');
      const got = ws[id] && ws[id].atts[name];
      const deleted = Number(id.slice(4)) % 10 === 3;
      if (deleted) continue;
      if (!got || got.digest !== digest) bad++;
    }
    c.ok(bad === 0, `${bad} attachments on the server have another digest than the bytes written`);
    const conflicted = Object.values(ws).filter((w) => w.conflicts.length).length;
    c.ok(conflicted >= 13, `server shows ${conflicted} conflicted documents, want >= 13`);
  });

  await step('3. a second client pulls identical revisions, histories and attachments', async () => {
    await replicate('pull /me -> alice2', alice_me, a2);
    const [s1, s2] = [await full_snapshot(a1), await full_snapshot(a2)];
    c.ok(Object.keys(s1).length === N + 20, `alice1 has ${Object.keys(s1).length} documents, want ${N + 20}`);
    diff_keys(s2, s1, 'every leaf (body, history, attachment sha256) alice2 vs alice1');
    let bytes_ok = 0, bytes_bad = 0;
    for (const [key, digest] of Object.entries(expected)) {
      const [id, name] = key.split('/');
      for (const leaf of Object.values(s2[id] || {})) {
        if (!leaf.atts || !leaf.atts[name]) continue;
        if (leaf.atts[name].md5 === digest && leaf.atts[name].digest === digest) bytes_ok++;
        else bytes_bad++;
      }
    }
    c.ok(bytes_bad === 0 && bytes_ok >= BIG, `attachment bytes in alice2: ${bytes_ok} match what was written, ${bytes_bad} do not`);
  });

  await step('3b. timing: 1 MiB attachments one after another, through the front door and directly', async () => {
    const ids = [];
    for (let i = 0; i < Math.min(BIG, 10); i++) if (i % 10 !== 3) ids.push(`${id_of(i)}/big.bin`);
    const front = await lib.timed_gets(p.front, ids.map((x) => `/me/${x}`), { Authorization: lib.basic(alice.name, alice.password) });
    const straight = await lib.timed_gets(p.server.url, ids.map((x) => `/${encodeURIComponent(alice.db)}/${x}`),
      p.server.user ? { Authorization: lib.basic(p.server.user, p.server.password) } : {});
    c.ok([...front, ...straight].every((x) => x.status === 200 && x.bytes === MiB),
      `timed GETs: ${lib.trunc(JSON.stringify({ front, straight }))}`);
    console.log(`timing: ${JSON.stringify({ attachments: ids.length, front_tls_median_ms: lib.median(front.map((x) => x.ms)),
      direct_median_ms: lib.median(straight.map((x) => x.ms)) })}`);
  });

  await step('4. concurrent edits of one document converge to one winner everywhere', async () => {
    const id = id_of(1);
    for (const [db, who] of [[a1, 'alice1'], [a2, 'alice2']]) {
      const d = await db.get(id);
      d.edited_by = who;
      await db.put(d);
    }
    await replicate('push alice1', a1, alice_me);
    await replicate('push alice2', a2, alice_me);
    await replicate('pull alice1', alice_me, a1);
    await replicate('pull alice2', alice_me, a2);
    const d1 = await a1.get(id, { conflicts: true }), d2 = await a2.get(id, { conflicts: true });
    const ds = await direct(`/${encodeURIComponent(alice.db)}/${id}?conflicts=true`);
    c.ok((d1._conflicts || []).length === 1, `alice1 sees ${JSON.stringify(d1._conflicts)} as conflicts of ${id}, want one`);
    c.eq([d2._rev, d2._conflicts, d2.edited_by], [d1._rev, d1._conflicts, d1.edited_by], `${id} on alice2 vs alice1`);
    c.eq([ds.json && ds.json._rev, ds.json && ds.json._conflicts], [d1._rev, d1._conflicts], `${id} on the server vs alice1`);
  });

  await step('5. live, retrying sync delivers server-side and client-side writes within the deadline', async () => {
    const changes = [];
    const sync = a2.sync(alice_me, { live: true, retry: true });
    sync.on('change', (info) => changes.push(info.direction));
    sync.on('error', (e) => c.ok(false, `live sync error: ${lib.trunc(JSON.stringify(e))}`));
    const direct_id = `direct-${run}`;
    const w = await direct(`/${encodeURIComponent(alice.db)}/${direct_id}`, { method: 'PUT', body: { from: 'server' } });
    c.ok(w.status === 201, `direct write on the server: ${w.status} ${w.text}`);
    const t0 = Date.now();
    const got = await lib.eventually(() => a2.get(direct_id).then(() => true, () => false), deadline_ms);
    c.ok(got, `a write made directly on the server did not reach the live client within ${deadline_ms} ms`);
    console.log(`server -> live client: ${Date.now() - t0} ms`);
    const up_id = `live-up-${run}`;
    await a2.put({ _id: up_id, from: 'live client' });
    const t1 = Date.now();
    const up = await lib.eventually(async () => (await direct(`/${encodeURIComponent(alice.db)}/${up_id}`)).status === 200, deadline_ms);
    c.ok(up, `a write on the live client did not reach the server within ${deadline_ms} ms`);
    console.log(`live client -> server: ${Date.now() - t1} ms`);
    // A second server-side write after the feed has been idle a while (heartbeats/timeouts
    // of the front door must keep the continuous/longpoll feed alive).
    const second = `direct2-${run}`;
    await direct(`/${encodeURIComponent(alice.db)}/${second}`, { method: 'PUT', body: { from: 'server again' } });
    c.ok(await lib.eventually(() => a2.get(second).then(() => true, () => false), deadline_ms),
      `a second direct write did not reach the live client within ${deadline_ms} ms`);
    sync.cancel();
  });

  await step('6. two users never see each other\'s documents', async () => {
    const bob_docs = [];
    for (let i = 0; i < 20; i++) bob_docs.push({ _id: `bob-only-${i}`, marker: p.bob_marker });
    await b1.bulkDocs(bob_docs);
    await replicate('push bob1 -> /me (bob)', b1, bob_me);
    const b_all = await bob_me.allDocs();
    const a_all = await alice_me.allDocs();
    c.ok(b_all.rows.length === 20 && b_all.rows.every((r) => r.id.startsWith('bob-only-')),
      `bob's /me lists ${b_all.rows.length} documents: ${lib.trunc(b_all.rows.map((r) => r.id).join(','))}`);
    c.ok(!a_all.rows.some((r) => r.id.startsWith('bob-only-')), 'alice\'s /me lists one of bob\'s documents');
    const a_changes = await lib.request(p.front, '/me/_changes?include_docs=true&style=all_docs', {
      headers: { Authorization: lib.basic(alice.name, alice.password) } });
    c.ok(a_changes.status === 200 && !a_changes.text.includes(p.bob_marker),
      `alice's /me/_changes: ${a_changes.status}, bob's marker ${a_changes.text.includes(p.bob_marker) ? 'present' : 'absent'}`);
    const b_changes = await lib.request(p.front, '/me/_changes', { headers: { Authorization: lib.basic(bob.name, bob.password) } });
    c.ok(b_changes.status === 200 && !b_changes.text.includes(id_of(0)), `bob's /me/_changes mentions alice's ${id_of(0)}`);
    const s_bob = await leaves_server(bob.db);
    c.ok(Object.keys(s_bob).filter((k) => k.startsWith('bob-only-')).length === 20 && !(id_of(0) in s_bob),
      `bob's database on the server: ${lib.trunc(Object.keys(s_bob).join(','))}`);
    const s_alice = await leaves_server(alice.db);
    c.ok(!Object.keys(s_alice).some((k) => k.startsWith('bob-only-')), 'alice\'s database on the server holds bob\'s documents');
    // Wrong password: refused, not answered with someone's database.
    const wrong = await lib.request(p.front, '/me', { headers: { Authorization: lib.basic(alice.name, `${alice.password}-wrong`) } });
    c.ok(wrong.status === 401 || wrong.status === 403, `/me with a wrong password: ${wrong.status} ${lib.trunc(wrong.text)}`);
    const anon = await lib.request(p.front, '/me');
    c.ok(anon.status === 401 || anon.status === 403, `/me without a credential: ${anon.status} ${lib.trunc(anon.text)}`);
  });

  await step('7. /shared works for both users', async () => {
    const a_sh = remote('/shared', alice), b_sh = remote('/shared', bob);
    const as = local('alice-shared'), bs = local('bob-shared');
    await as.put({ _id: `from-alice-${run}`, who: 'alice' });
    await replicate('push alice -> /shared', as, a_sh);
    await replicate('pull /shared -> bob', b_sh, bs);
    c.ok(await bs.get(`from-alice-${run}`).then(() => true, () => false), 'bob does not see alice\'s shared document');
    await bs.put({ _id: `from-bob-${run}`, who: 'bob' });
    await replicate('push bob -> /shared', bs, b_sh);
    await replicate('pull /shared -> alice', a_sh, as);
    c.ok(await as.get(`from-bob-${run}`).then(() => true, () => false), 'alice does not see bob\'s shared document');
    const s = await leaves_server(p.shared);
    c.ok(`from-alice-${run}` in s && `from-bob-${run}` in s, `shared database on the server: ${lib.trunc(Object.keys(s).join(','))}`);
  });
  await step('8. a cookie (POST /_session through the front door) authenticates a third client (last: PouchDB\'s fetch keeps cookies in one jar per process, so alice\'s refreshed AuthSession would ride along with bob\'s requests)', async () => {
    const login = await lib.request(p.front, '/_session', { method: 'POST', body: { name: alice.name, password: alice.password } });
    const cookie = lib.auth_session(login);
    c.ok(login.status === 200 && cookie, `POST /_session: ${login.status} ${lib.trunc(login.text)}, cookie ${cookie ? 'set' : 'missing'}`);
    if (!cookie) return;
    lib.record_secrets(p, [cookie]);
    const who = await lib.request(p.front, '/_session', { headers: { Cookie: `AuthSession=${cookie}` } });
    c.ok(who.json && who.json.userCtx && who.json.userCtx.name === alice.name, `GET /_session with the cookie: ${lib.trunc(who.text)}`);
    const rc = await lib.auth_session(who);
    if (rc) lib.record_secrets(p, [rc]);
    const by_cookie = new PouchDB(`${p.front}/me`, {
      skip_setup: true,
      fetch: (url, opts) => {
        opts.headers.set('Cookie', `AuthSession=${cookie}`);
        return PouchDB.fetch(url, opts);
      },
    });
    await replicate('pull /me by cookie -> alice3', by_cookie, a3);
    diff_keys(await leaves_local(a3), await leaves_server(alice.db), 'leaf revisions alice3 (cookie) vs the server');
    const out = await lib.request(p.front, '/_session', { method: 'DELETE', headers: { Cookie: `AuthSession=${cookie}` } });
    c.ok(out.status === 200, `DELETE /_session: ${out.status} ${lib.trunc(out.text)}`);
  });
}

main().then(() => c.finish(), (e) => { c.ok(false, `unexpected: ${e && e.stack}`); c.finish(); });
