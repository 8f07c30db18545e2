// The path table: crafted request targets and encodings, written byte for byte on a raw TLS
// socket (no client library that would normalise them first), each with alice's valid
// credential, each aiming at bob's database or at something that is not alice's own.
//
// The test is made sensitive on purpose: the driver's provisioning policy lists a role both
// users have in member_roles, so CouchDB's _security would let alice read bob's database
// (checked first, directly on the server): only couchgate's routing keeps her out.
//
// For every row: the answer never contains bob's marker; it is a 4xx (or a closed
// connection), or a 2xx that is about alice's own database; never a 5xx. After the table:
// bob's database is untouched, alice's holds none of bob's data, couchgate still answers,
// and the recording proxy between couchgate and the server shows that every request sent
// upstream with a client's credential went to /, /_session, /_uuids or alice's own
// database, never with a `.`/`..` segment.
// Also: plain HTTP on the TLS listener is refused, and that credential never went upstream.
//
// Usage: node paths.js PARAMS.json   (written by test_front_sync.cpp; see lib.js)
'use strict';

const fs = require('fs');
const lib = require('./lib');

const p = lib.params();
const c = new lib.checks('paths');
const direct = lib.server(p);
const [alice, bob] = p.users;
const front = new URL(p.front);
const host = front.hostname, port = Number(front.port);
const tls_opts = { ca: fs.readFileSync(p.ca_file) };
const auth = lib.basic(alice.name, alice.password);
const B = bob.db, doc = p.bob_doc;
const server_port = new URL(p.server.url).port;

function req(method, target, { headers = [], body, version = '1.1', host_header = `${host}:${port}` } = {}) {
  let s = `${method} ${target} HTTP/${version}\r\n`;
  if (host_header !== null) s += `Host: ${host_header}\r\n`;
  s += `Authorization: ${auth}\r\nAccept: application/json\r\nConnection: close\r\n`;
  for (const h of headers) s += `${h}\r\n`;
  if (body !== undefined) s += `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n`;
  return Buffer.from(`${s}\r\n${body === undefined ? '' : body}`, 'latin1');
}

// [name, raw request, {write: true} when it tries to change bob's data]
function table() {
  const put_body = JSON.stringify({ planted: p.alice_marker });
  return [
    ['bob\'s database by name', req('GET', `/${B}/${doc}`)],
    ['bob\'s _all_docs by name', req('GET', `/${B}/_all_docs?include_docs=true`)],
    ['/me/../bob', req('GET', `/me/../${B}/${doc}`)],
    ['/me/%2e%2e/bob', req('GET', `/me/%2e%2e/${B}/${doc}`)],
    ['/me/%2E%2E/bob', req('GET', `/me/%2E%2E/${B}/${doc}`)],
    ['/me/.%2e/bob', req('GET', `/me/.%2e/${B}/${doc}`)],
    ['/me%2F..%2Fbob/doc', req('GET', `/me%2F..%2F${B}/${doc}`)],
    ['/me%2f..%2fbob%2fdoc', req('GET', `/me%2f..%2f${B}%2f${doc}`)],
    ['/me/..%2Fbob%2Fdoc', req('GET', `/me/..%2F${B}%2F${doc}`)],
    ['/me%2F%2E%2E%2Fbob%2Fdoc', req('GET', `/me%2F%2E%2E%2F${B}%2F${doc}`)],
    ['/%6de/../bob', req('GET', `/%6de/../${B}/${doc}`)],
    ['/%6D%65/%2e%2e/bob', req('GET', `/%6D%65/%2e%2e/${B}/${doc}`)],
    ['//bob', req('GET', `//${B}/${doc}`)],
    ['/me//../bob', req('GET', `/me//../${B}/${doc}`)],
    ['/me/./../bob', req('GET', `/me/./../${B}/${doc}`)],
    ['/./bob', req('GET', `/./${B}/${doc}`)],
    ['/me/..\\bob\\doc (backslashes)', req('GET', `/me/..\\${B}\\${doc}`)],
    ['/me\\..\\bob/doc', req('GET', `/me\\..\\${B}/${doc}`)],
    ['/me%5C..%5Cbob', req('GET', `/me%5C..%5C${B}/${doc}`)],
    ['/me/%252e%252e/bob (double encoding)', req('GET', `/me/%252e%252e/${B}/${doc}`)],
    ['/me/..%252Fbob', req('GET', `/me/..%252F${B}%252F${doc}`)],
    ['/me/..;/bob', req('GET', `/me/..;/${B}/${doc}`)],
    ['/me;/../bob', req('GET', `/me;/../${B}/${doc}`)],
    ['/me%00/../bob (NUL)', req('GET', `/me%00/../${B}/${doc}`)],
    ['/ME/../bob', req('GET', `/ME/../${B}/${doc}`)],
    ['/me/_local/../../bob', req('GET', `/me/_local/../../${B}/${doc}`)],
    ['/shared/../bob', req('GET', `/shared/../${B}/${doc}`)],
    ['/shared%2F..%2Fbob', req('GET', `/shared%2F..%2F${B}/${doc}`)],
    ['/_session/../bob', req('GET', `/_session/../${B}/${doc}`)],
    ['/_uuids/../bob', req('GET', `/_uuids/../${B}/${doc}`)],
    ['absolute URL to the server', req('GET', `http://127.0.0.1:${server_port}/${B}/${doc}`)],
    ['absolute URL to couchgate', req('GET', `https://${host}:${port}/${B}/${doc}`)],
    ['absolute URL with /me/..', req('GET', `http://evil.example/me/../${B}/${doc}`)],
    ['absolute URL with userinfo', req('GET', `http://admin@127.0.0.1:${server_port}/${B}/${doc}`)],
    ['/_all_dbs', req('GET', '/_all_dbs')],
    ['/me/../_all_dbs', req('GET', '/me/../_all_dbs')],
    ['/_users', req('GET', '/_users')],
    ['/_users/_all_docs', req('GET', '/_users/_all_docs?include_docs=true')],
    ['/_users/org.couchdb.user:bob', req('GET', `/_users/org.couchdb.user:${encodeURIComponent(bob.name)}`)],
    ['/me/../_users/org.couchdb.user:bob', req('GET', `/me/../_users/org.couchdb.user:${encodeURIComponent(bob.name)}`)],
    ['/_active_tasks', req('GET', '/_active_tasks')],
    ['/_node/_local/_config', req('GET', '/_node/_local/_config')],
    ['/_scheduler/docs', req('GET', '/_scheduler/docs')],
    ['/_dbs_info', req('POST', '/_dbs_info', { body: JSON.stringify({ keys: [B] }) })],
    ['POST /_replicate bob -> me', req('POST', '/_replicate', {
      body: JSON.stringify({ source: `${p.server.url}/${B}`, target: `${p.server.url}/${alice.db}` }) })],
    ['POST /_replicator', req('POST', '/_replicator', {
      body: JSON.stringify({ source: `${p.server.url}/${B}`, target: `${p.server.url}/${alice.db}` }) })],
    ['OPTIONS *', req('OPTIONS', '*')],
    ['HTTP/1.0 /me/../bob without Host', req('GET', `/me/../${B}/${doc}`, { version: '1.0', host_header: null })],
    ['Host header naming the server', req('GET', `/${B}/${doc}`, { host_header: `127.0.0.1:${server_port}` })],
    ['X-Forwarded-Prefix / X-Original-URL headers', req('GET', '/me', {
      headers: [`X-Original-URL: /${B}/${doc}`, `X-Rewrite-URL: /${B}/${doc}`, `X-Forwarded-Prefix: /${B}`] })],
    ['PUT into bob via /me/../', req('PUT', `/me/../${B}/planted-1`, { body: put_body }), { write: true }],
    ['PUT into bob via %2e%2e', req('PUT', `/me/%2e%2e/${B}/planted-2`, { body: put_body }), { write: true }],
    ['PUT into bob via %2F', req('PUT', `/me%2F..%2F${B}/planted-3`, { body: put_body }), { write: true }],
    ['DELETE bob\'s doc via /me/../', req('DELETE', `/me/../${B}/${doc}?rev=${p.bob_rev}`), { write: true }],
    ['DELETE bob\'s database via %2e%2e', req('DELETE', `/me/%2e%2e/${B}`), { write: true }],
    ['POST bob\'s _bulk_docs via ..', req('POST', `/me/../${B}/_bulk_docs`, {
      body: JSON.stringify({ docs: [{ _id: 'planted-4', planted: p.alice_marker }] }) }), { write: true }],
    ['_rewrite to ../../bob', req('GET', '/me/_design/leak/_rewrite/leak2')],
    ['_rewrite to ../../../bob', req('GET', '/me/_design/leak/_rewrite/leak3')],
  ];
}

// Rows whose only acceptable answers are refusals (they name no route couchgate serves).
function answer_ok(name, r) {
  if (r.closed_without_answer) return { ok: true, how: 'closed without an answer' };
  if (r.status >= 400 && r.status < 500) return { ok: true, how: String(r.status) };
  if (r.status >= 200 && r.status < 400) {
    if (/_replicat|_all_dbs|_users|_dbs_info|_node|_scheduler|_active_tasks/.test(name)) {
      return { ok: false, how: `${r.status}: an endpoint outside the user's database answered` };
    }
    // Must be about alice's own database: never bob's name in a successful answer.
    if (r.text.includes(B)) return { ok: false, how: `${r.status} naming bob's database` };
    return { ok: true, how: `${r.status} (about alice's own database)` };
  }
  return { ok: false, how: `status ${r.status}${r.error ? ` (${r.error})` : ''}` };
}

async function main() {
  lib.record_secrets(p, [alice.password, bob.password, auth.slice(6)]);
  // Control: the server itself would give bob's document to alice.
  const ctrl = await lib.request(p.server.url, `/${B}/${doc}`, { headers: { Authorization: auth } });
  c.ok(ctrl.status === 200 && ctrl.text.includes(p.bob_marker),
    `control: alice reads bob's document directly on the server (${ctrl.status}); without that the table proves less`);
  // alice's own design document with a rewrite aiming at bob's database (CouchDB rewrites
  // may climb out of the database with ../..).
  const ddoc = await lib.request(p.front, '/me/_design/leak', {
    method: 'PUT', headers: { Authorization: auth },
    body: { rewrites: [{ from: 'leak2', to: `../../${B}/${doc}` }, { from: 'leak3', to: `../../../${B}/${doc}` }] },
  });
  c.note(`PUT /me/_design/leak (rewrite to bob): ${ddoc.status}`);

  const rows = table();
  c.ok(rows.length >= 30, `the table has ${rows.length} rows, want >= 30`);
  for (const [name, raw] of rows) {
    const r = await lib.raw_exchange(host, port, raw, { tls_opts });
    const leak = r.text.includes(p.bob_marker);
    const verdict = answer_ok(name, r);
    c.ok(!leak, `${name}: the answer contains bob's document`);
    c.ok(verdict.ok, `${name}: ${verdict.how}: ${lib.trunc(r.text.split('\r\n\r\n').slice(-1)[0], 200)}`);
    console.log(`${verdict.ok && !leak ? 'ok  ' : 'BAD '} ${name}: ${verdict.how}`);
  }

  // Nothing of bob's changed, nothing of his reached alice.
  const still = await direct(`/${B}/${doc}`);
  c.ok(still.status === 200 && still.json._rev === p.bob_rev, `bob's document after the table: ${still.status} ${lib.trunc(still.text)}`);
  const bob_all = await direct(`/${B}/_all_docs`);
  c.ok(bob_all.status === 200 && !bob_all.text.includes('planted'), `bob's database holds planted documents: ${lib.trunc(bob_all.text)}`);
  const alice_all = await direct(`/${alice.db}/_all_docs?include_docs=true`);
  c.ok(alice_all.status === 200 && !alice_all.text.includes(p.bob_marker), 'alice\'s database holds bob\'s data');
  const alive = await lib.request(p.front, '/me', { headers: { Authorization: auth } });
  c.ok(alive.status === 200, `GET /me after the table: ${alive.status} ${lib.trunc(alive.text)}`);

  // Plain HTTP on the TLS listener: refused, and its credential never forwarded.
  const plain_pw = lib.random_token('plain-pw-');
  const plain_bearer = lib.random_token('plain-bearer-');
  const plain_cookie = lib.random_token('plaincookie');
  const plain_auth = lib.basic(alice.name, plain_pw);
  lib.record_secrets(p, [plain_pw, plain_bearer, plain_cookie, plain_auth.slice(6)]);
  for (const [what, header] of [['basic', `Authorization: ${plain_auth}`], ['bearer', `Authorization: Bearer ${plain_bearer}`],
    ['cookie', `Cookie: AuthSession=${plain_cookie}`]]) {
    const raw = Buffer.from(`GET /me HTTP/1.1\r\nHost: ${host}:${port}\r\n${header}\r\nConnection: close\r\n\r\n`, 'latin1');
    const r = await lib.raw_exchange(host, port, raw);
    c.ok(!(r.status >= 200 && r.status < 400), `plain HTTP (${what}) on the TLS listener answered ${r.status}: ${lib.trunc(r.text)}`);
  }

  // What reached the server (through the recording proxy).
  const admin_auth = lib.basic(p.server.user, p.server.password);
  const allowed = new RegExp(`^/(|_session|_uuids|${alice.db}(/.*)?)(\\?.*)?$`);
  const lines = fs.readFileSync(p.record_file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
  const clients = lines.filter((l) => l.authorization !== admin_auth);
  c.ok(clients.some((l) => l.authorization === auth), `the recording proxy saw no request with alice's credential (${lines.length} recorded): the check below would prove nothing`);
  const bad = clients.filter((l) => {
    const path = l.url.split('?')[0];
    const segs = path.split('/');
    return !allowed.test(l.url) || segs.includes('..') || segs.includes('.') || /%2e%2e/i.test(path.split('/')[1] || '');
  });
  c.ok(bad.length === 0, `requests sent upstream with a client's credential outside alice's database: ${lib.trunc(JSON.stringify(bad.map((l) => `${l.method} ${l.url}`)), 1500)}`);
  const leaked = lines.filter((l) => [plain_pw, plain_bearer, plain_cookie, plain_auth.slice(6)].some((s) => JSON.stringify(l).includes(s)));
  c.ok(leaked.length === 0, `a credential sent over plain HTTP reached the server: ${leaked.length} requests`);
  console.log(`upstream: ${lines.length} requests recorded, ${clients.length} with a client credential`);
}

main().then(() => c.finish(), (e) => { c.ok(false, `unexpected: ${e && e.stack}`); c.finish(); });
