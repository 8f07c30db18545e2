// Parked live feeds (issue 14) with real clients, driven by tests/integration/test_front_feeds.cpp.
// p.mode picks the case:
//   many:   every user in p.users runs PouchDB 9 `live: true` sync of its own <front>/me (one
//           Node process, one in-memory PouchDB per user); once all are idle (parked in
//           couchgate), a writer writes p.writes documents per user directly on the server, in
//           one burst per database; every client must receive every write of its own database
//           and no document of anyone else.
//   revoke: one user's live sync (retry: false) idles; its password is changed directly on the
//           server; the sync must end with a 401 (couchgate re-validates parked feeds at the
//           _session cache lifetime). With p.revoke === 'delete' the user's `_users` document is
//           deleted instead: the same 401, and the old credential is refused afterwards.
//   race:   a raw longpoll `_changes` through the front door while couchgate holds the first
//           check's answer (its test fail point); the writer writes as soon as couchgate's log
//           shows the check was answered; the longpoll must deliver that write. Then the other
//           shapes: a `_doc_ids` filter (POST body) re-run on wake, continuous with limit,
//           eventsource, timeout, and the per-user cap (429).
//   burst:  every user in p.users sends a raw longpoll at the same moment, over a front pool of
//           one socket that lets a normal request wait 0 ms: the first checks (and the
//           credentials' _session checks) queue for the socket; every client gets 200 (its
//           rows), then parks on a second longpoll and gets 200 with no rows at its timeout.
//           No 503.
//
// Usage: node live.js PARAMS.json
'use strict';

const fs = require('fs');
const crypto = require('crypto');
const lib = require('./lib');
const PouchDB = require('pouchdb-core')
  .plugin(require('pouchdb-adapter-memory'))
  .plugin(require('pouchdb-adapter-http'))
  .plugin(require('pouchdb-replication'));

const p = lib.params();
const c = new lib.checks(`live-${p.mode}`);
const direct = lib.server(p);
const run = crypto.randomBytes(4).toString('hex');
const deadline_ms = p.deadline_ms || 30000;

const remote = (u, password) => new PouchDB(`${p.front}/me`, {
  skip_setup: true, auth: { username: u.name, password: password || u.password },
});
const local = (u) => new PouchDB(`live-${u.name}-${run}`, { adapter: 'memory' });

// Resolves when the sync has caught up and waits (PouchDB's 'paused' without an error).
function idle(sync) {
  return new Promise((resolve) => {
    sync.on('paused', (err) => { if (!err) resolve(true); });
  });
}

async function many() {
  const clients = p.users.map((u) => ({ u, db: local(u), errors: [] }));
  for (const cl of clients) {
    cl.sync = cl.db.sync(remote(cl.u), { live: true, retry: true });
    cl.sync.on('error', (e) => cl.errors.push(lib.trunc(JSON.stringify(e))));
    cl.idle = idle(cl.sync);
  }
  const all_idle = await Promise.race([
    Promise.all(clients.map((cl) => cl.idle)),
    new Promise((r) => setTimeout(() => r(false), deadline_ms)),
  ]);
  c.ok(all_idle, `not every live sync became idle within ${deadline_ms} ms`);
  // Parked in couchgate: its gauge says so (the sync's own 'paused' comes before the longpoll).
  const parked = await lib.eventually(async () => {
    const m = await lib.request(p.admin, '/metrics');
    const hit = /^couchgate_front_feeds_parked (\S+)$/m.exec(m.text || '');
    return hit && Number(hit[1]) >= clients.length;
  }, deadline_ms);
  c.ok(parked, `couchgate never showed ${clients.length} parked feeds`);

  // The writer: a burst of p.writes documents per database, all databases at once.
  const t0 = Date.now();
  await Promise.all(clients.map(async (cl) => {
    for (let i = 0; i < p.writes; i++) {
      const id = `w-${run}-${i}`;
      const r = await direct(`/${encodeURIComponent(cl.u.db)}/${id}`, { method: 'PUT', body: { owner: cl.u.name, i } });
      c.ok(r.status === 201, `direct write ${cl.u.db}/${id}: ${r.status} ${r.text}`);
    }
  }));
  const delivered = await lib.eventually(async () => {
    for (const cl of clients) {
      const all = await cl.db.allDocs({ keys: Array.from({ length: p.writes }, (_, i) => `w-${run}-${i}`) });
      if (all.rows.some((r) => !r.value)) return false;
    }
    return true;
  }, deadline_ms);
  c.ok(delivered, `not every client received all ${p.writes} writes of its database within ${deadline_ms} ms`);
  console.log(`${clients.length} clients x ${p.writes} writes delivered in ${Date.now() - t0} ms`);
  for (const cl of clients) {
    const all = await cl.db.allDocs({ include_docs: true });
    const foreign = all.rows.filter((r) => !r.id.startsWith('_') && r.doc.owner !== cl.u.name);
    c.ok(foreign.length === 0, `${cl.u.name} holds documents of others: ${lib.trunc(JSON.stringify(foreign.map((r) => r.id)))}`);
    const mine = all.rows.filter((r) => r.id.startsWith(`w-${run}-`)).length;
    c.eq(mine, p.writes, `${cl.u.name}'s writes`);
    c.eq(cl.errors, [], `${cl.u.name}'s sync errors`);
  }
  for (const cl of clients) cl.sync.cancel();
}

async function burst() {
  const longpoll = (u, since, timeout) => lib.request(
    p.front, `/me/_changes?feed=longpoll&since=${encodeURIComponent(since)}&timeout=${timeout}`,
    { headers: { Authorization: lib.basic(u.name, u.password) }, timeout_ms: timeout + 20000 });
  const first = await Promise.all(p.users.map((u) => longpoll(u, '0', 20000)));
  first.forEach((r, i) => {
    c.eq(r.status, 200, `${p.users[i].name}'s first longpoll (${lib.trunc(r.text || r.error || '')})`);
  });
  const answered = first.filter((r) => r.status === 200 && r.json && Array.isArray(r.json.results));
  c.eq(answered.length, p.users.length, 'first longpolls answered with a results array');
  // All at once again, from where each is: nothing new, so each parks after its first check.
  const t0 = Date.now();
  const second = await Promise.all(p.users.map((u, i) => longpoll(u, first[i].json ? first[i].json.last_seq : '0', 3000)));
  second.forEach((r, i) => {
    c.eq(r.status, 200, `${p.users[i].name}'s parked longpoll (${lib.trunc(r.text || r.error || '')})`);
    c.ok(r.json && Array.isArray(r.json.results) && r.json.results.length === 0,
      `${p.users[i].name}'s parked longpoll timed out with no rows: ${lib.trunc(r.text || '')}`);
  });
  console.log(`${p.users.length} parked longpolls answered within ${Date.now() - t0} ms`);
}

async function revoke() {
  const u = p.users[0];
  const db = local(u);
  const sync = db.sync(remote(u), { live: true, retry: false });
  let failure = null;
  sync.on('error', (e) => { failure = e; });
  const became_idle = await Promise.race([idle(sync), new Promise((r) => setTimeout(() => r(false), deadline_ms))]);
  c.ok(became_idle, 'the live sync never became idle');
  const parked = await lib.eventually(async () => {
    const m = await lib.request(p.admin, '/metrics');
    const hit = /^couchgate_front_feeds_parked (\S+)$/m.exec(m.text || '');
    return hit && Number(hit[1]) >= 1;
  }, deadline_ms);
  c.ok(parked, 'couchgate never showed the feed parked');

  // The password changes (or the user is deleted) on the server; nothing is written to the database.
  const deleted = p.revoke === 'delete';
  const path = `/_users/${encodeURIComponent(`org.couchdb.user:${u.name}`)}`;
  const doc = await direct(path);
  c.ok(doc.status === 200, `read ${path}: ${doc.status}`);
  const fresh = `pw-${crypto.randomBytes(9).toString('hex')}`;
  lib.record_secrets(p, [fresh]);
  if (deleted) {
    const del = await direct(`${path}?rev=${encodeURIComponent(doc.json._rev)}`, { method: 'DELETE' });
    c.ok(del.status === 200, `user deletion: ${del.status} ${del.text}`);
  } else {
    const put = await direct(path, { method: 'PUT', body: { ...doc.json, password: fresh } });
    c.ok(put.status === 201, `password change: ${put.status} ${put.text}`);
  }
  const t0 = Date.now();
  const ended = await lib.eventually(() => failure !== null, deadline_ms);
  c.ok(ended, `the parked live sync did not end within ${deadline_ms} ms of the password change`);
  if (failure) {
    c.eq(failure.status, 401, `the live sync's error (${lib.trunc(JSON.stringify(failure))})`);
    console.log(`401 after ${Date.now() - t0} ms`);
  }
  // The old credential is refused at once now; the new one works.
  const old = await lib.request(p.front, '/me', { headers: { Authorization: lib.basic(u.name, u.password) } });
  c.eq(old.status, 401, 'the old password through the front door');
  if (!deleted) {
    const now = await lib.request(p.front, '/me', { headers: { Authorization: lib.basic(u.name, fresh) } });
    c.eq(now.status, 200, 'the new password through the front door');
  }
  sync.cancel();
}

async function race() {
  const u = p.users[0];
  const auth = { Authorization: lib.basic(u.name, u.password) };
  const info = await direct(`/${encodeURIComponent(u.db)}`);
  c.ok(info.status === 200, `db info: ${info.status}`);
  const since = info.json.update_seq;
  const id = `race-${run}`;
  const t0 = Date.now();
  const longpoll = lib.request(p.front, `/me/_changes?feed=longpoll&heartbeat=10000&since=${encodeURIComponent(since)}`,
    { headers: auth, timeout_ms: deadline_ms + 10000 });
  // The write lands while couchgate holds the check's (empty) answer: between check and park.
  const held = await lib.eventually(() => fs.readFileSync(p.log_file, 'utf8').includes('test fail point: first check answered'), deadline_ms);
  c.ok(held, 'couchgate never logged its check fail point');
  const w = await direct(`/${encodeURIComponent(u.db)}/${id}`, { method: 'PUT', body: { owner: u.name } });
  c.ok(w.status === 201, `direct write: ${w.status} ${w.text}`);
  const res = await longpoll;
  c.eq(res.status, 200, `longpoll status (${res.error || ''} ${lib.trunc(res.text)})`);
  const ids = (res.json && res.json.results || []).map((r) => r.id);
  c.ok(ids.includes(id), `the write made between check and park was not delivered: ${lib.trunc(res.text)}`);
  console.log(`race: delivered after ${Date.now() - t0} ms`);
  await formats(u, auth, ids.length ? res.json.last_seq : since);
}

// The other feed shapes and limits, on the same user (run after the race, p.max_parked = 2).
async function formats(u, auth, since) {
  const put = (id, body) => direct(`/${encodeURIComponent(u.db)}/${id}`, { method: 'PUT', body: { owner: u.name, ...body } });
  const q = (s) => encodeURIComponent(typeof s === 'string' ? s : JSON.stringify(s));
  const changes = (query, opts = {}) => lib.request(p.front, `/me/_changes?${query}`, { headers: auth, timeout_ms: deadline_ms, ...opts });
  const parked_at_least = (n) => lib.eventually(async () => {
    const m = await lib.request(p.admin, '/metrics');
    const hit = /^couchgate_front_feeds_parked (\S+)$/m.exec(m.text || '');
    return hit && Number(hit[1]) >= n;
  }, deadline_ms);

  // A _doc_ids filter (POST body) is re-run on every wake: an unrelated write wakes it and finds
  // nothing, the matching one is answered, alone.
  const wanted = `wanted-${run}`;
  const filtered = changes(`feed=longpoll&heartbeat=10000&filter=_doc_ids&since=${q(since)}`,
    { method: 'POST', body: { doc_ids: [wanted] } });
  c.ok(await parked_at_least(1), 'the filtered feed never parked');
  const fetches0 = await metric('couchgate_front_feed_wake_fetches_total');
  c.eq((await put(`other-${run}`, {})).status, 201, 'unrelated write');
  c.ok(await lib.eventually(async () => (await metric('couchgate_front_feed_wake_fetches_total')) > fetches0, deadline_ms),
    'the unrelated write did not wake the filtered feed');
  c.eq((await put(wanted, {})).status, 201, 'matching write');
  const fr = await filtered;
  c.eq(fr.status, 200, `filtered longpoll status ${lib.trunc(fr.text)}`);
  c.eq((fr.json && fr.json.results || []).map((r) => r.id), [wanted], 'the filtered longpoll answer');

  // Continuous with limit=2: rows one per line as they come, then the last_seq line and the end.
  const info = await direct(`/${encodeURIComponent(u.db)}`);
  const cont = changes(`feed=continuous&heartbeat=500&limit=2&since=${q(info.json.update_seq)}`);
  c.ok(await parked_at_least(1), 'the continuous feed never parked');
  c.eq((await put(`c1-${run}`, {})).status, 201, 'first continuous write');
  c.eq((await put(`c2-${run}`, {})).status, 201, 'second continuous write');
  const cr = await cont;
  c.eq(cr.status, 200, 'continuous status');
  const lines = cr.text.split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l));
  c.eq(lines.filter((l) => l.id).map((l) => l.id), [`c1-${run}`, `c2-${run}`], `continuous rows (${lib.trunc(cr.text)})`);
  c.ok(lines.length > 0 && 'last_seq' in lines[lines.length - 1], 'the continuous feed ends with its last_seq line');

  // Eventsource: SSE events with the row as data and its seq as id.
  const info2 = await direct(`/${encodeURIComponent(u.db)}`);
  const es = changes(`feed=eventsource&limit=1&since=${q(info2.json.update_seq)}`);
  c.ok(await parked_at_least(1), 'the eventsource feed never parked');
  c.eq((await put(`e1-${run}`, {})).status, 201, 'eventsource write');
  const er = await es;
  c.ok(/^text\/event-stream/.test(er.headers['content-type'] || ''), `eventsource content type ${er.headers['content-type']}`);
  c.ok(/data: \{.*"id":"e1-/.test(er.text) && /\nid: \S+/.test(er.text), `eventsource body ${lib.trunc(er.text)}`);

  // timeout without heartbeat: the empty answer, with a last_seq to resume from.
  const t = await changes(`feed=longpoll&timeout=500&since=${q(info2.json.update_seq)}&filter=_doc_ids&doc_ids=${q(['none'])}`);
  c.eq(t.status, 200, 'timed-out longpoll status');
  c.ok(t.json && Array.isArray(t.json.results) && t.json.results.length === 0 && 'last_seq' in t.json,
    `timed-out longpoll answer ${lib.trunc(t.text)}`);

  // front.max_parked_per_user (2 here): a third open feed is refused with 429 and Retry-After.
  const hold = [1, 2].map(() => changes(`feed=longpoll&timeout=3000&since=${q(info2.json.update_seq)}&filter=_doc_ids&doc_ids=${q(['none'])}`));
  c.ok(await parked_at_least(2), 'the two feeds never parked');
  const third = await changes(`feed=longpoll&timeout=3000&since=${q(info2.json.update_seq)}`);
  c.eq(third.status, 429, 'a third live feed of the user');
  c.ok(!!third.headers['retry-after'], 'the 429 says when to retry');
  await Promise.all(hold);
}

async function metric(name) {
  const m = await lib.request(p.admin, '/metrics');
  const hit = new RegExp(`^${name} (\\S+)$`, 'm').exec(m.text || '');
  return hit ? Number(hit[1]) : NaN;
}

(async () => {
  try {
    if (p.mode === 'many') await many();
    else if (p.mode === 'revoke') await revoke();
    else if (p.mode === 'race') await race();
    else if (p.mode === 'burst') await burst();
    else c.ok(false, `unknown mode ${p.mode}`);
  } catch (e) {
    c.ok(false, `exception: ${e && e.stack}`);
  }
  c.finish();
})();
