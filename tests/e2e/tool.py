#!/usr/bin/env python3
"""tool.py: the e2e suite's helpers (stdlib only): publish, peek (an exact basic.get that requeues), a Job recorder,
a process sampler, API-request counting from the audit log, and the latency/waste report.

  tool.py publish --queue Q --count N [--start 1] [--rate R] [--gaps LO,HI --seed S]
                  [--exchange X] [--sleep S] [--fail-mod M] --log F
  tool.py peek --queue Q            ids (first body word) of the ready messages, left in place
  tool.py jobwatch --out F          'ms ADDED|DONE job pool [Complete|Failed]' lines until killed
  tool.py sample --pid P --out F    'ms rss_kb hwm_kb utime+stime_ticks private_dirty_kb' each s
  tool.py auditcount --audit F --ua jobpool/ [--after-ms T0] [--before-ms T1]
  tool.py report --pub F --jobs F --started F --sim F [--pool P]   one JSON object of figures
  tool.py mgmtwatch --queue Q --out F [--interval S]   'ms messages' each time the management
                                    API's `messages` of Q changes, polled every S s until killed
  tool.py lag --pub F --seen F      the management API's lag per publish (JSON percentiles)
The management API URL and credentials come from JOBPOOL_TEST_MGMT_URL and JOBPOOL_TEST_RMQ_USER
/ _PASS; the API server's from JOBPOOL_TEST_KUBE_SERVER/_TOKEN/_CA.
"""

import argparse
import base64
import http.client
import json
import os
import random
import signal
import ssl
import sys
import time
import urllib.parse


def ms():
    return int(time.time() * 1000)


class Mgmt:
    def __init__(self):
        u = urllib.parse.urlsplit(os.environ["JOBPOOL_TEST_MGMT_URL"])
        self.host, self.port = u.hostname, u.port or 15672
        cred = "%s:%s" % (os.environ["JOBPOOL_TEST_RMQ_USER"], os.environ["JOBPOOL_TEST_RMQ_PASS"])
        self.auth = "Basic " + base64.b64encode(cred.encode()).decode()
        self.conn = None

    def call(self, method, path, body=None, tries=60):
        data = json.dumps(body).encode() if body is not None else None
        for i in range(tries):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
                self.conn.request(method, path, body=data, headers={
                    "Authorization": self.auth, "Content-Type": "application/json"})
                r = self.conn.getresponse()
                raw = r.read()
                if r.status >= 500 or r.status == 404 and "publish" in path:
                    raise OSError("HTTP %d" % r.status)   # a restarting broker
                if r.status >= 300:
                    raise SystemExit("tool: %s %s: HTTP %d %s" % (method, path, r.status, raw[:200]))
                return json.loads(raw) if raw else None
            except (OSError, http.client.HTTPException) as e:
                if self.conn:
                    self.conn.close()
                self.conn = None
                if i == tries - 1:
                    raise SystemExit("tool: %s %s: %s" % (method, path, e))
                time.sleep(0.5)
        return None


def qpath(q, vhost="/"):
    return "/api/queues/%s/%s" % (urllib.parse.quote(vhost, safe=""), urllib.parse.quote(q, safe=""))


def cmd_publish(a):
    m = Mgmt()
    path = "/api/exchanges/%s/%s/publish" % (urllib.parse.quote(a.vhost, safe=""),
                                            urllib.parse.quote(a.exchange, safe=""))
    t0 = time.time()
    rnd = random.Random(a.seed)
    lo, hi = (float(x) for x in a.gaps.split(",")) if a.gaps else (0, 0)
    with open(a.log, "a", buffering=1) as log:
        for k in range(a.count):
            i = a.start + k
            if a.rate > 0:
                delay = t0 + k / a.rate - time.time()
                if delay > 0:
                    time.sleep(delay)
            elif a.gaps and k > 0:
                time.sleep(rnd.uniform(lo, hi))
            fail = 1 if a.fail_mod and i % a.fail_mod == 0 else 0
            q = "%s%03d" % (a.queue, k % a.queues) if a.queues else a.queue
            props = {"delivery_mode": 2, "message_id": "m-%d" % i}
            if a.timestamp_ago is not None:  # the AMQP timestamp property: whole seconds
                props["timestamp"] = int(time.time()) - a.timestamp_ago
            body = {"properties": props,
                    "routing_key": q, "payload": "%d %s %d" % (i, a.sleep, fail),
                    "payload_encoding": "string"}
            t = ms()
            # The publish time travels with the message too (ms since the epoch).
            props["headers"] = {"x-published-ms": t}
            r = m.call("POST", path, body)
            if not r or not r.get("routed"):
                raise SystemExit("tool: message %d was not routed to %s" % (i, q))
            log.write("%d %d %s\n" % (i, t, q))
    return 0


def cmd_mgmtwatch(a):
    """The management API's view of one queue, as the controller's management source reads it:
    a line each time `messages` changes, with the time the answer arrived."""
    m = Mgmt()
    last = None
    signal.signal(signal.SIGTERM, lambda sig, frame: sys.exit(0))
    with open(a.out, "a", buffering=1) as out:
        while True:
            r = m.call("GET", qpath(a.queue, a.vhost) + "?columns=messages") or {}
            n = r.get("messages")
            if n is not None and n != last:
                out.write("%d %d\n" % (ms(), n))
                last = n
            time.sleep(a.interval)


def cmd_lag(a):
    """Per publish k (in publish order), the time until the watched queue's `messages` first
    showed at least k messages: the management API's lag, for a queue nobody consumes."""
    pubs = sorted(int(line.split()[1]) for line in open(a.pub) if len(line.split()) >= 2)
    seen = [tuple(int(x) for x in line.split()[:2]) for line in open(a.seen) if line.strip()]
    lags = []
    for k, t in enumerate(pubs, 1):
        at = next((ts for ts, n in seen if n >= k and ts >= t), None)
        if at is not None:
            lags.append(at - t)
    res = {"samples": len(lags), "published": len(pubs)}
    for p in (0, 50, 90, 99, 100):
        res["lag_p%d_ms" % p] = pct(lags, p) if p else (min(lags) if lags else None)
    print(json.dumps(res))
    return 0


def cmd_peek(a):
    r = Mgmt().call("POST", qpath(a.queue, a.vhost) + "/get",
                    {"count": 100000, "ackmode": "ack_requeue_true", "encoding": "auto"})
    for msg in r or []:
        print(msg["payload"].split()[0])
    return 0


def kube_conn():
    u = urllib.parse.urlsplit(os.environ["JOBPOOL_TEST_KUBE_SERVER"])
    ctx = ssl.create_default_context(cafile=os.environ["JOBPOOL_TEST_KUBE_CA"])
    return u.hostname, u.port, ctx


def cmd_jobwatch(a):
    host, port, ctx = kube_conn()
    hdr = {"Authorization": "Bearer " + os.environ["JOBPOOL_TEST_KUBE_TOKEN"],
           "User-Agent": "jobpool-e2e-recorder/1"}
    base = "/apis/batch/v1/namespaces/%s/jobs" % a.namespace
    sel = urllib.parse.quote("app.kubernetes.io/managed-by=jobpool")
    seen, done = set(), set()
    out = open(a.out, "a", buffering=1)
    running = [True]

    def on_term(sig, frame):
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, on_term)

    def handle(obj):
        meta = obj.get("metadata", {})
        name = meta.get("name")
        pool = (meta.get("labels") or {}).get("jobpool.dev/pool", "")
        if name not in seen:
            seen.add(name)
            out.write("%d ADDED %s %s\n" % (ms(), name, pool))
        for c in (obj.get("status") or {}).get("conditions") or []:
            if c.get("type") in ("Complete", "Failed") and c.get("status") == "True" \
                    and name not in done:
                done.add(name)
                out.write("%d DONE %s %s %s\n" % (ms(), name, pool, c["type"]))

    rv = None
    while running[0]:
        try:
            c = http.client.HTTPSConnection(host, port, context=ctx, timeout=60)
            if rv is None:
                c.request("GET", base + "?labelSelector=" + sel, headers=hdr)
                r = c.getresponse()
                lst = json.loads(r.read())
                if r.status != 200:
                    raise OSError("list: HTTP %d" % r.status)
                for j in lst.get("items", []):
                    handle(j)
                rv = lst["metadata"]["resourceVersion"]
            c.request("GET", base + "?watch=1&timeoutSeconds=50&labelSelector=%s&resourceVersion=%s"
                      % (sel, rv), headers=hdr)
            r = c.getresponse()
            if r.status == 410:
                rv = None
                continue
            if r.status != 200:
                raise OSError("watch: HTTP %d" % r.status)
            while running[0]:
                line = r.readline()
                if not line:
                    break
                ev = json.loads(line)
                if ev.get("type") == "ERROR":
                    rv = None
                    break
                rv = ev["object"].get("metadata", {}).get("resourceVersion", rv)
                if ev.get("type") in ("ADDED", "MODIFIED"):
                    handle(ev["object"])
            c.close()
        except (OSError, http.client.HTTPException, ValueError):
            time.sleep(0.5)
    return 0


def proc_sample(pid):
    with open("/proc/%d/stat" % pid) as f:
        st = f.read().rsplit(")", 1)[1].split()
    ticks = int(st[11]) + int(st[12])         # utime + stime (fields 14, 15)
    rss = hwm = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    pd = 0
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Private_Dirty:"):
                    pd = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm, ticks, pd


def cmd_sample(a):
    with open(a.out, "a", buffering=1) as out:
        while True:
            try:
                rss, hwm, ticks, pd = proc_sample(a.pid)
            except (OSError, ValueError, IndexError):
                return 0
            out.write("%d %d %d %d %d\n" % (ms(), rss, hwm, ticks, pd))
            time.sleep(a.interval)


def cmd_auditcount(a):
    """Requests by user agent prefix in [after, before), with a per-verb breakdown."""
    n = 0
    verbs = {}
    paths = [a.audit + ".1", a.audit] if os.path.exists(a.audit + ".1") else [a.audit]
    for p in paths:
        try:
            f = open(p)
        except OSError:
            continue
        with f:
            for line in f:
                if a.ua not in line:
                    continue
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if not ev.get("userAgent", "").startswith(a.ua):
                    continue
                ts = ev.get("requestReceivedTimestamp", "")
                t = parse_ts_ms(ts)
                if a.after_ms and t < a.after_ms or a.before_ms and t >= a.before_ms:
                    continue
                n += 1
                key = "%s %s" % (ev.get("verb"), (ev.get("objectRef") or {}).get("resource", ""))
                verbs[key] = verbs.get(key, 0) + 1
    print(json.dumps({"requests": n, "by_verb": verbs}))
    return 0


def parse_ts_ms(ts):
    # 2026-11-28T01:56:11.383563Z
    if not ts:
        return 0
    base, _, frac = ts.rstrip("Z").partition(".")
    t = time.mktime(time.strptime(base, "%Y-%m-%dT%H:%M:%S")) - time.timezone
    return int(t * 1000 + (int((frac + "000")[:3]) if frac else 0))


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    k = max(0, min(len(xs) - 1, int(round(p / 100.0 * len(xs) + 0.5)) - 1))
    return xs[k]


def cmd_report(a):
    """Figures for one scenario. Messages and Jobs are matched in order (FIFO queue, one
    message per worker): the k-th Job created is the k-th message's; task start is exact (the
    task logs its message id)."""
    pub = {}
    for line in open(a.pub):
        f = line.split()
        if len(f) >= 2 and (not a.queue or len(f) < 3 or f[2] == a.queue):
            pub.setdefault(int(f[0]), int(f[1]))
    jobs = []
    done = failed = 0
    active = max_active = 0      # Jobs created and not yet finished, in event order
    for line in open(a.jobs) if a.jobs and os.path.exists(a.jobs) else []:
        f = line.split()
        if len(f) >= 4 and (not a.pool or f[3].startswith(a.pool)):
            if f[1] == "ADDED":
                jobs.append(int(f[0]))
                active += 1
                max_active = max(max_active, active)
            elif f[1] == "DONE":
                done += 1
                active -= 1
                failed += len(f) > 4 and f[4] == "Failed"
    jobs.sort()
    starts = {}
    runs = 0                     # task runs, retries included: each took one worker
    for line in open(a.started) if os.path.exists(a.started) else []:
        f = line.split()
        if len(f) >= 2:
            runs += 1
            starts.setdefault(int(f[0]), int(f[1]))  # the first attempt
    workers = running = max_running = 0   # processes the node simulator ran for this pool
    pods = []                             # when each of them started (the pod turns Running)
    if a.sim and os.path.exists(a.sim):
        for line in open(a.sim):
            f = line.split()
            if len(f) < 4 or (a.pool and not f[3].startswith(a.pool)):
                continue
            if f[1] == "started":
                pods.append(int(float(f[0]) * 1000))   # seconds there
                workers += 1
                running += 1
                max_running = max(max_running, running)
            elif f[1] == "exited":
                running -= 1
    order = sorted(pub.items(), key=lambda kv: kv[1])
    p2j = [j - p[1] for p, j in zip(order, jobs)]
    p2s = [starts[i] - t for i, t in pub.items() if i in starts]
    p2p = [s - p[1] for p, s in zip(order, sorted(pods))]
    span = (jobs[-1] - jobs[0]) / 1000.0 if len(jobs) > 1 else 0
    tasks = runs
    res = {
        "messages": len(pub), "jobs_created": len(jobs), "jobs_finished": done,
        "jobs_failed": failed, "max_active_jobs": max_active, "max_running": max_running,
        "workers_started": workers, "tasks_started": tasks,
        "pub_to_job_p50_ms": pct(p2j, 50), "pub_to_job_p99_ms": pct(p2j, 99),
        "pub_to_job_max_ms": max(p2j) if p2j else None,
        "pub_to_pod_p50_ms": pct(p2p, 50), "pub_to_pod_p99_ms": pct(p2p, 99),
        "pub_to_task_p50_ms": pct(p2s, 50), "pub_to_task_p99_ms": pct(p2s, 99),
        "pub_to_task_max_ms": max(p2s) if p2s else None,
        "waste_ratio": round((workers - tasks) / workers, 4) if workers else None,
        "jobs_per_s": round((len(jobs) - 1) / span, 2) if span > 0 else None,
    }
    print(json.dumps(res))
    return 0


def main():
    p = argparse.ArgumentParser()
    sp = p.add_subparsers(dest="cmd", required=True)
    x = sp.add_parser("publish")
    x.add_argument("--queue", required=True)
    x.add_argument("--vhost", default="/")
    x.add_argument("--count", type=int, required=True)
    x.add_argument("--start", type=int, default=1)
    x.add_argument("--rate", type=float, default=0)
    x.add_argument("--sleep", default="0")
    x.add_argument("--fail-mod", type=int, default=0)
    x.add_argument("--queues", type=int, default=0, help="round-robin over QUEUE000..QUEUEnnn")
    x.add_argument("--gaps", help="LO,HI: a random pause of LO to HI s before each publish")
    x.add_argument("--seed", type=int, default=None)
    x.add_argument("--exchange", default="amq.default",
                   help="publish here with the queue name as routing key")
    x.add_argument("--timestamp-ago", type=int, default=None,
                   help="set the AMQP timestamp property to now minus this many seconds")
    x.add_argument("--log", required=True)
    x = sp.add_parser("mgmtwatch")
    x.add_argument("--queue", required=True)
    x.add_argument("--vhost", default="/")
    x.add_argument("--out", required=True)
    x.add_argument("--interval", type=float, default=0.05)
    x = sp.add_parser("lag")
    x.add_argument("--pub", required=True)
    x.add_argument("--seen", required=True)
    x = sp.add_parser("peek")
    x.add_argument("--queue", required=True)
    x.add_argument("--vhost", default="/")
    x = sp.add_parser("jobwatch")
    x.add_argument("--out", required=True)
    x.add_argument("--namespace", default="default")
    x = sp.add_parser("sample")
    x.add_argument("--pid", type=int, required=True)
    x.add_argument("--out", required=True)
    x.add_argument("--interval", type=float, default=1.0)
    x = sp.add_parser("auditcount")
    x.add_argument("--audit", required=True)
    x.add_argument("--ua", default="jobpool/")
    x.add_argument("--after-ms", type=int, default=0)
    x.add_argument("--before-ms", type=int, default=0)
    x = sp.add_parser("report")
    x.add_argument("--pub", required=True)
    x.add_argument("--jobs")
    x.add_argument("--started", required=True)
    x.add_argument("--sim")
    x.add_argument("--pool")
    x.add_argument("--queue")
    a = p.parse_args()
    return globals()["cmd_" + a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
