#!/usr/bin/env python3
"""How CouchDB's `_db_updates` costs the server, read as a longpoll per answer (couchgate's
follower) or as one continuous feed, at a steady write rate into many databases.

Usage: COUCHDB_URL=http://admin:pw@127.0.0.1:5984 db_updates_modes.py MODE SECONDS RATE [DBS]
MODE: none (no reader: the writes alone), longpoll, continuous.

Creates DBS databases (q=1), writes RATE small documents a second into random ones for SECONDS
over one keep-alive connection, while one reader follows `_db_updates` from "now" in MODE
(heartbeat 3 s; longpoll with limit 1000). Prints, per mode: writes, how many were announced,
announcement latency (write answered -> its database's event read) p50/p95/p99, the server's CPU
over the writes (the CouchDB pid's utime+stime from /proc: run it on the server's machine, with
COUCHDB_PID set or the only beam.smp found), and the reader's requests. Deletes its databases.
"""
import base64, http.client, json, os, random, subprocess, sys, threading, time, urllib.parse

mode, secs, rate = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
ndb = int(sys.argv[4]) if len(sys.argv) > 4 else 200
u = urllib.parse.urlsplit(os.environ["COUCHDB_URL"])
HOST, PORT = u.hostname, u.port or 5984
HDR = {"Content-Type": "application/json"}
if u.username:
    cred = urllib.parse.unquote(u.username) + ":" + urllib.parse.unquote(u.password or "")
    HDR["Authorization"] = "Basic " + base64.b64encode(cred.encode()).decode()
pid = int(os.environ.get("COUCHDB_PID") or subprocess.check_output(["pgrep", "-o", "beam.smp"]).split()[0])


def conn():
    return http.client.HTTPConnection(HOST, PORT, timeout=120)


def cpu_seconds():
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def call(c, method, path, body=None):
    c.request(method, path, body=body, headers=HDR)
    r = c.getresponse()
    return r.status, r.read()


c = conn()
run = "%06x" % random.randrange(1 << 24)
dbs = ["dbu-modes-%s-%04d" % (run, i) for i in range(ndb)]
for d in dbs:
    call(c, "PUT", "/" + d + "?q=1")
since = json.loads(call(c, "GET", "/_db_updates?since=now")[1])["last_seq"]
pending, latencies, lock = {}, [], threading.Lock()
stop, reads = False, [0]


def announced(db, at):
    with lock:
        for t in pending.get(db, []):
            latencies.append(at - t)
        pending.get(db, []).clear()


def reader():
    global since
    fc = conn()
    if mode == "longpoll":
        while not stop:
            status, body = call(fc, "GET", "/_db_updates?feed=longpoll&since=%s&timeout=10000&heartbeat=3000&limit=1000" % since)
            at = time.time()
            reads[0] += 1
            page = json.loads(body)
            for e in page.get("results", []):
                announced(e["db_name"], at)
            since = page.get("last_seq", since)
    else:
        fc.request("GET", "/_db_updates?feed=continuous&since=%s&heartbeat=3000" % since, headers=HDR)
        r = fc.getresponse()
        reads[0] += 1
        while not stop:
            line = r.readline()
            at = time.time()
            if not line:
                break
            if line.strip():
                e = json.loads(line)
                if "db_name" in e:
                    announced(e["db_name"], at)


if mode != "none":
    threading.Thread(target=reader, daemon=True).start()
time.sleep(1)
wc, n = conn(), 0
cpu0, t0 = cpu_seconds(), time.time()
while time.time() - t0 < secs:
    d = random.choice(dbs)
    call(wc, "POST", "/" + d, '{"a":1}')
    with lock:
        pending.setdefault(d, []).append(time.time())
    n += 1
    wait = t0 + n / rate - time.time()
    if wait > 0:
        time.sleep(wait)
deadline = time.time() + 5
while mode != "none" and time.time() < deadline:
    with lock:
        if not any(pending.values()):
            break
    time.sleep(0.05)
cpu1, elapsed = cpu_seconds(), time.time() - t0
stop = True
latencies.sort()
q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")
print("%-10s writes %d announced %d  p50 %.0f  p95 %.0f  p99 %.0f ms  server CPU %.1f%%  reader requests %d"
      % (mode, n, len(latencies), q(.5), q(.95), q(.99), 100 * (cpu1 - cpu0) / elapsed, reads[0]))
for d in dbs:
    call(c, "DELETE", "/" + d)
