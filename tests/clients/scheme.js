// Plain-HTTP front door, behind a test proxy: which requests count as secure.
//
// The script runs its own tiny TLS-terminating stand-in (a plain HTTP proxy on 127.0.0.1
// that forwards to couchgate's front door, adding `<header>: <value>` or nothing), then,
// depending on params.expect:
//   honoured  the scheme header from the proxy (a trusted peer) is believed: /me answers
//             200; without the header, with the header saying http, or straight to couchgate
//             without the header, 403 with a JSON reason;
//   ignored   couchgate does not trust the peer (or listens for another header): even with
//             the header saying https every request gets 403;
//   refused   no TLS, no trusted proxy: every plain request gets 403 (or no answer);
//   open      allow_insecure: plain requests are served (200).
// Every refused request carries credentials (alice's real one, and unique Basic, Bearer and
// AuthSession values): none of them may reach the server, which the recording proxy between
// couchgate and the server shows (params.record_file).
//
// Usage: node scheme.js PARAMS.json   (written by test_front_sync.cpp; see lib.js)
'use strict';

const fs = require('fs');
const http = require('http');
const lib = require('./lib');

const p = lib.params();
const c = new lib.checks(`scheme(${p.expect})`);
const [alice] = p.users;
const front = new URL(p.front);
const auth = lib.basic(alice.name, alice.password);
const header = p.header || 'X-Forwarded-Proto';

function record() {
  if (!p.record_file) return [];
  return fs.readFileSync(p.record_file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
}
const with_alice = () => record().filter((l) => l.authorization === auth).length;

// The stand-in for a TLS-terminating proxy. `add` is the header to add (or null).
function start_proxy(add) {
  return new Promise((resolve) => {
    const srv = http.createServer((req, res) => {
      const headers = { ...req.headers };
      // A real proxy overwrites whatever the client sent in its scheme header.
      delete headers[header.toLowerCase()];
      if (add) headers[add[0].toLowerCase()] = add[1];
      const fwd = http.request({ host: front.hostname, port: front.port, method: req.method, path: req.url, headers }, (ur) => {
        res.writeHead(ur.statusCode, ur.rawHeaders);
        ur.pipe(res);
      });
      fwd.on('error', (e) => { res.writeHead(502); res.end(String(e)); });
      req.pipe(fwd);
    });
    srv.listen(0, '127.0.0.1', () => resolve(srv));
  });
}
const url_of = (srv) => `http://127.0.0.1:${srv.address().port}`;

function is_refusal(r) {
  return r.status === 403 || r.status === 0;
}

// A refused request with each kind of credential: all refused, none forwarded.
async function refused(label, base, extra = {}) {
  const pw = lib.random_token('refused-pw-'), bearer = lib.random_token('refused-bearer-'), cookie = lib.random_token('refusedcookie');
  const b = lib.basic(alice.name, pw);
  lib.record_secrets(p, [pw, bearer, cookie, b.slice(6)]);
  const before = with_alice();
  for (const [what, h] of [['alice\'s own credential', { Authorization: auth }], ['a Basic credential', { Authorization: b }],
    ['a Bearer token', { Authorization: `Bearer ${bearer}` }], ['an AuthSession cookie', { Cookie: `AuthSession=${cookie}` }]]) {
    const r = await lib.request(base, '/me', { headers: { ...h, ...extra } });
    c.ok(is_refusal(r), `${label}, ${what}: want 403, got ${r.status} ${lib.trunc(r.text)}`);
    if (r.status === 403) {
      c.ok(r.json && typeof r.json.error === 'string' && typeof r.json.reason === 'string',
        `${label}, ${what}: 403 without a JSON error/reason: ${lib.trunc(r.text)}`);
    }
    const post = await lib.request(base, '/me/_bulk_docs', { method: 'POST', headers: { ...h, ...extra }, body: { docs: [{ _id: 'never' }] } });
    c.ok(is_refusal(post), `${label}, ${what}, POST /me/_bulk_docs: want 403, got ${post.status}`);
  }
  if (p.record_file) {
    c.ok(with_alice() === before, `${label}: alice's credential of a refused request reached the server`);
    const leaked = record().filter((l) => [pw, bearer, cookie, b.slice(6)].some((s) => JSON.stringify(l).includes(s)));
    c.ok(leaked.length === 0, `${label}: a refused request's credential reached the server: ${leaked.map((l) => `${l.method} ${l.url}`)}`);
  }
}

async function served(label, base, extra = {}) {
  const before = with_alice();
  const r = await lib.request(base, '/me', { headers: { Authorization: auth, ...extra } });
  c.ok(r.status === 200 && r.json && 'doc_count' in r.json, `${label}: want 200 with alice's database info, got ${r.status} ${lib.trunc(r.text)}`);
  if (p.record_file) c.ok(with_alice() > before, `${label}: the recording proxy did not see the served request (the refusal checks would prove nothing)`);
}

async function main() {
  lib.record_secrets(p, [alice.password, auth.slice(6)]);
  const says_https = await start_proxy([header, 'https']);
  const says_http = await start_proxy([header, 'http']);
  const says_nothing = await start_proxy(null);
  const other_header = await start_proxy([header === 'X-Forwarded-Proto' ? 'X-Forwarded-Scheme' : 'X-Forwarded-Proto', 'https']);
  if (p.expect === 'honoured') {
    await served(`proxy adding ${header}: https`, url_of(says_https));
    await refused(`proxy adding ${header}: http`, url_of(says_http));
    await refused('proxy adding no scheme header', url_of(says_nothing));
    await refused('proxy adding only another header saying https', url_of(other_header));
  } else if (p.expect === 'ignored') {
    await refused(`untrusted: proxy adding ${header}: https`, url_of(says_https));
    await refused('untrusted: proxy adding no header', url_of(says_nothing));
    await refused(`untrusted: straight to couchgate with ${header}: https`, p.front, { [header]: 'https' });
  } else if (p.expect === 'refused') {
    await refused('no TLS, no trusted proxy: straight to couchgate', p.front);
    await refused(`no TLS, no trusted proxy: ${header}: https from 127.0.0.1`, url_of(says_https));
  } else if (p.expect === 'open') {
    await served('allow_insecure: plain HTTP straight to couchgate', p.front);
  } else {
    c.ok(false, `unknown expect '${p.expect}'`);
  }
  for (const s of [says_https, says_http, says_nothing, other_header]) s.close();
}

main().then(() => c.finish(), (e) => { c.ok(false, `unexpected: ${e && e.stack}`); c.finish(); });
