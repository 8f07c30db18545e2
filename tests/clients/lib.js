// Shared helpers of the front-door client tests (tests/clients/*.js): the parameters file the
// C++ driver (tests/integration/test_front_sync.cpp) writes, a plain HTTP(S) client with no
// URL normalisation of its own, a raw-socket request writer, polling with a deadline, and a
// failure collector whose summary decides the exit status.
'use strict';

const fs = require('fs');
const http = require('http');
const https = require('https');
const net = require('net');
const tls = require('tls');
const crypto = require('crypto');

// node script.js PARAMS.json: every script takes its inputs from one JSON file.
function params() {
  const file = process.argv[2];
  if (!file) {
    console.error(`usage: node ${process.argv[1]} PARAMS.json`);
    process.exit(2);
  }
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

// Failures are collected (a test keeps going to report everything it can) and printed at
// the end; the exit status is 1 when there was any.
class checks {
  constructor(name) {
    this.name = name;
    this.failures = [];
    this.passed = 0;
  }
  ok(cond, what) {
    if (cond) this.passed++;
    else {
      this.failures.push(what);
      console.log(`FAIL ${what}`);
    }
    return !!cond;
  }
  eq(got, want, what) {
    const g = JSON.stringify(got), w = JSON.stringify(want);
    return this.ok(g === w, `${what}: got ${trunc(g)}, want ${trunc(w)}`);
  }
  note(msg) { console.log(`note: ${msg}`); }
  finish() {
    console.log(`${this.name}: ${this.passed} checks passed, ${this.failures.length} failed`);
    process.exit(this.failures.length ? 1 : 0);
  }
}

function trunc(s, n = 300) {
  s = String(s);
  return s.length > n ? s.slice(0, n) + '...' : s;
}

function basic(user, password) {
  return 'Basic ' + Buffer.from(`${user}:${password}`).toString('base64');
}

// One request through node's http/https (the path is sent as given: no URL parsing of it).
// Resolves {status, headers, body (Buffer), text, json}; never rejects (status 0 + error).
function request(base, path, { method = 'GET', headers = {}, body, timeout_ms = 30000, agent } = {}) {
  return new Promise((resolve) => {
    const u = new URL(base);
    const mod = u.protocol === 'https:' ? https : http;
    const payload = body === undefined ? undefined
      : Buffer.isBuffer(body) ? body : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
    const h = { Accept: 'application/json', ...headers };
    if (payload && !Object.keys(h).some((k) => k.toLowerCase() === 'content-type')) h['Content-Type'] = 'application/json';
    const req = mod.request({
      host: u.hostname, port: u.port, method, path, headers: h, agent: agent || false,
      timeout: timeout_ms,
    }, (res) => {
      const parts = [];
      res.on('data', (d) => parts.push(d));
      res.on('end', () => {
        const buf = Buffer.concat(parts);
        const text = buf.toString('utf8');
        let j;
        try { j = JSON.parse(text); } catch (e) { j = undefined; }
        resolve({ status: res.statusCode, headers: res.headers, body: buf, text, json: j });
      });
      res.on('error', (e) => resolve({ status: 0, error: String(e), headers: {}, text: '', body: Buffer.alloc(0) }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve({ status: 0, error: String(e), headers: {}, text: '', body: Buffer.alloc(0) }));
    if (payload) req.end(payload); else req.end();
  });
}

// Direct access to the test server as its admin (never through couchgate).
function server(p) {
  const auth = basic(p.server.user, p.server.password);
  return (path, opts = {}) => request(p.server.url, path, { ...opts, headers: { Authorization: auth, ...(opts.headers || {}) } });
}

// Writes `raw` (bytes, exactly as given) on a new connection, TLS when `tls_opts` is given,
// and reads until the peer closes or `timeout_ms` passes. Resolves {raw (Buffer), status
// (first status line's code, 0 when none), closed_without_answer, error}.
function raw_exchange(host, port, raw, { tls_opts, timeout_ms = 15000 } = {}) {
  return new Promise((resolve) => {
    const parts = [];
    let done = false;
    const finish = (error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      const buf = Buffer.concat(parts);
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(buf.toString('latin1'));
      resolve({ raw: buf, text: buf.toString('latin1'), status: m ? Number(m[1]) : 0, closed_without_answer: buf.length === 0, error });
    };
    const sock = tls_opts
      ? tls.connect({ host, port, servername: undefined, ...tls_opts }, () => sock.write(raw))
      : net.connect({ host, port }, () => sock.write(raw));
    const timer = setTimeout(() => finish('timeout'), timeout_ms);
    sock.on('data', (d) => parts.push(d));
    sock.on('end', () => finish());
    sock.on('close', () => finish());
    sock.on('error', (e) => finish(String(e)));
  });
}

// Polls `pred` (async) every 100 ms until it returns truthy or `deadline_ms` passes.
async function eventually(pred, deadline_ms) {
  const end = Date.now() + deadline_ms;
  for (;;) {
    const v = await pred();
    if (v) return v;
    if (Date.now() >= end) return v;
    await new Promise((r) => setTimeout(r, 100));
  }
}

// Deterministic pseudo-random bytes (so a digest mismatch is reproducible).
function bytes(seed, n) {
  const out = Buffer.alloc(n);
  let off = 0, i = 0;
  while (off < n) {
    const block = crypto.createHash('sha256').update(`${seed}:${i++}`).digest();
    off += block.copy(out, off);
  }
  return out;
}

function md5_digest(buf) {
  return 'md5-' + crypto.createHash('md5').update(buf).digest('base64');
}

function random_token(prefix) {
  return prefix + crypto.randomBytes(18).toString('hex');
}

// Appends secrets (strings that must never appear in couchgate's log) to the file the
// driver scans with, one JSON array, and to the whole run's register (COUCHGATE_TEST_SECRETS,
// one per line: tests/run.sh scans every log of the run for them at the end).
function record_secrets(p, list) {
  const items = list.filter(Boolean);
  if (process.env.COUCHGATE_TEST_SECRETS) {
    const lines = items.filter((s) => !/[\r\n]/.test(s)).map((s) => `${s}\n`).join('');
    if (lines) fs.appendFileSync(process.env.COUCHGATE_TEST_SECRETS, lines, { mode: 0o600 });
  }
  if (!p.secrets_out) return;
  let cur = [];
  try { cur = JSON.parse(fs.readFileSync(p.secrets_out, 'utf8')); } catch (e) { /* first write */ }
  fs.writeFileSync(p.secrets_out, JSON.stringify(cur.concat(items)));
}

// Milliseconds each of `paths` takes to GET in full, one after another on one keep-alive
// connection (the first request also pays for the connection and is left out), with its
// status and byte count.
async function timed_gets(base, paths, headers = {}) {
  const mod = new URL(base).protocol === 'https:' ? https : http;
  const agent = new mod.Agent({ keepAlive: true, maxSockets: 1 });
  const out = [];
  await request(base, paths[0], { headers, agent });
  for (const path of paths) {
    const t0 = process.hrtime.bigint();
    const r = await request(base, path, { headers: { Accept: '*/*', ...headers }, agent, timeout_ms: 60000 });
    out.push({ ms: Number(process.hrtime.bigint() - t0) / 1e6, status: r.status, bytes: r.body.length });
  }
  agent.destroy();
  return out;
}

function median(values) {
  const v = values.slice().sort((a, b) => a - b);
  return v.length ? v[Math.floor((v.length - 1) / 2)] : NaN;
}

// The AuthSession value in a Set-Cookie answer, if any.
function auth_session(res) {
  const sc = res.headers && res.headers['set-cookie'];
  for (const c of [].concat(sc || [])) {
    const m = /AuthSession=([^;]*)/.exec(c);
    if (m && m[1]) return m[1];
  }
  return undefined;
}

module.exports = {
  params, checks, request, server, raw_exchange, eventually, bytes, md5_digest, basic,
  random_token, record_secrets, auth_session, trunc, timed_gets, median,
};
