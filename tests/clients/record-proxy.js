// A recording HTTP proxy between couchgate and the test server: forwards every request
// unchanged (bodies streamed, feeds included) and appends one JSON line per request to
// RECORD_FILE: method, target and the credential headers as they reached the server.
// The front-door tests read it to prove which requests (and whose credentials) couchgate
// sent upstream. Test data only: it holds test credentials, in the test's temp dir.
//
// Usage: node record-proxy.js UPSTREAM_URL PORT_FILE RECORD_FILE
//   listens on 127.0.0.1, a free port, written to PORT_FILE once listening.
'use strict';

const fs = require('fs');
const http = require('http');

const [, , upstream, port_file, record_file] = process.argv;
if (!upstream || !port_file || !record_file) {
  console.error('usage: node record-proxy.js UPSTREAM_URL PORT_FILE RECORD_FILE');
  process.exit(2);
}
const up = new URL(upstream);
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
const out = fs.openSync(record_file, 'a');

const server = http.createServer((req, res) => {
  fs.writeSync(out, JSON.stringify({
    method: req.method, url: req.url,
    authorization: req.headers.authorization || '', cookie: req.headers.cookie || '',
    headers: req.rawHeaders,
  }) + '\n');
  const headers = { ...req.headers, host: `${up.hostname}:${up.port}` };
  const fwd = http.request({ host: up.hostname, port: up.port, method: req.method, path: req.url, headers, agent }, (ur) => {
    res.writeHead(ur.statusCode, ur.rawHeaders);
    ur.pipe(res);
  });
  fwd.on('error', (e) => {
    if (!res.headersSent) res.writeHead(502, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ error: 'record_proxy', reason: String(e) }));
  });
  req.pipe(fwd);
  res.on('close', () => { if (!res.writableFinished) fwd.destroy(); });  // client went away mid-answer
});
server.keepAliveTimeout = 60000;
server.headersTimeout = 0;
server.requestTimeout = 0;
server.listen(0, '127.0.0.1', () => {
  fs.writeFileSync(`${port_file}.tmp`, String(server.address().port));
  fs.renameSync(`${port_file}.tmp`, port_file);
});
process.on('SIGTERM', () => process.exit(0));
