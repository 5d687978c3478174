#!/usr/bin/env python3
"""timeline.py: one e2e scenario's timeline from what the harness recorded.

    timeline.py --pub PUB --started STARTED --jobs JOBS.events --pool POOL --out DIR

PUB has "ID PUBLISH_MS QUEUE" per message (tests/e2e/tool.py publish), STARTED "ID START_MS
ATTEMPT PID" per task run (tests/e2e/task.sh), JOBS.events "MS ADDED|DONE JOB POOL ..." (the Job
recorder). Writes DIR/timeline.csv, one row a second from the first publish:
    t_s, backlog (published, not yet started, at that second), workers (the most Jobs created
    and not finished at once during the second before: a Job that lives half a second still
    shows)
and DIR/waits.csv, one row per message: publish time (s from the first publish), seconds from
publish to its task's first start. Prints a one-line summary. Nothing here measures anything
itself: it only reshapes the recorded events for gnuplot (bench/e2e.sh, bench/plot_timeline.sh).
"""
import argparse, os


def read_rows(path):
    with open(path) as f:
        return [line.split() for line in f if line.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pub", required=True)
    ap.add_argument("--started", required=True)
    ap.add_argument("--jobs", required=True)
    ap.add_argument("--pool", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    pub = {int(r[0]): int(r[1]) for r in read_rows(a.pub)}
    if not pub:
        raise SystemExit("timeline: no publishes in %s" % a.pub)
    first = {}
    for r in read_rows(a.started):
        i, t = int(r[0]), int(r[1])
        if i in pub and (i not in first or t < first[i]):
            first[i] = t
    jobs = sorted((int(r[0]), 1 if r[1] == "ADDED" else -1) for r in read_rows(a.jobs)
                  if len(r) >= 4 and r[3] == a.pool and r[1] in ("ADDED", "DONE"))
    t0 = min(pub.values())
    end = max([t0] + list(first.values()) + [t for t, _ in jobs])
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "timeline.csv"), "w") as f:
        f.write("t_s,backlog,workers\n")
        live, k = 0, 0  # Jobs alive, and the next event of jobs
        for s in range(0, (end - t0) // 1000 + 3):
            at = t0 + s * 1000
            backlog = sum(1 for t in pub.values() if t <= at) - sum(1 for t in first.values() if t <= at)
            most = live
            while k < len(jobs) and jobs[k][0] <= at:
                live += jobs[k][1]
                most = max(most, live)
                k += 1
            f.write("%d,%d,%d\n" % (s, backlog, most))
    waits = sorted(((pub[i] - t0) / 1000.0, (first[i] - pub[i]) / 1000.0) for i in first)
    with open(os.path.join(a.out, "waits.csv"), "w") as f:
        f.write("publish_s,wait_s\n")
        for p, w in waits:
            f.write("%.3f,%.3f\n" % (p, w))
    ws = sorted(w for _, w in waits)
    # Nearest rank, as tests/e2e/tool.py's report computes the figures bench/e2e.sh prints.
    p = lambda q: ws[max(0, min(len(ws) - 1, int(round(q * len(ws) + 0.5)) - 1))] if ws else float("nan")
    print("timeline %s: %d messages, %d started, wait p50 %.1f s, p99 %.1f s, max %.1f s" %
          (a.pool, len(pub), len(first), p(0.5), p(0.99), ws[-1] if ws else float("nan")))


if __name__ == "__main__":
    main()
