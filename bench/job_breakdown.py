#!/usr/bin/env python3
"""Where a job's wall time goes (#31 item 2), from the gateway's own record: the job document's
queued_at / finished_at and the timestamps of the job's stored events (accepted, one `phase` event per
phase, done). For each job:

  dispatch  queued_at → the worker's `accepted` (pool hand-off, offer, acceptance)
  start     accepted → the first phase (sandbox and cgroup set-up, the worker reading its request)
  <phase>   one phase event → the next (source, detect, fetch, build, package, attest, upload)
  store     the worker's `done` → finished_at (the gateway storing the result and marking it ready)

Prints one JSON line: the median of each part in milliseconds over the given jobs, its share of the
median total, and "compiler" = the build phase. Usage: job_breakdown.py GATEWAY CASE JOB_ID...
"""
import json, statistics, sys, urllib.request
from datetime import datetime

PHASES = ["source", "detect", "fetch", "build", "package", "attest", "upload"]


def ts(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def events(gw, job):
    req = urllib.request.Request(f"{gw}/build/{job}/events", headers={"Accept": "text/event-stream"})
    out = []
    with urllib.request.urlopen(req, timeout=60) as r:
        for raw in r:
            line = raw.decode().rstrip("\n")
            if line.startswith("data:"):
                e = json.loads(line[5:])
                out.append(e)
                if e["type"] in ("done", "failed", "cancelled"):
                    break
    return out


def parts(gw, job):
    doc = json.load(urllib.request.urlopen(f"{gw}/build/{job}", timeout=60))
    evs = events(gw, job)
    if doc.get("status") != "ready" or not evs or evs[-1]["type"] != "done":
        return None
    marks = [("queued", ts(doc["queued_at"]))]
    accepted = next((e for e in evs if e["type"] == "accepted"), None)
    if accepted:
        marks.append(("accepted", ts(accepted["time"])))
    for e in evs:
        if e["type"] == "phase" and e.get("name") in PHASES:
            marks.append((e["name"], ts(e["time"])))
    marks.append(("done", ts(evs[-1]["time"])))
    marks.append(("finished", ts(doc["finished_at"])))
    names = {"queued": "dispatch", "accepted": "start", "done": "store"}
    result = {}
    for (a, ta), (_, tb) in zip(marks, marks[1:]):
        result[names.get(a, a)] = (tb - ta) * 1000
    result["total"] = (marks[-1][1] - marks[0][1]) * 1000
    return result


def main():
    gw, case, jobs = sys.argv[1], sys.argv[2], sys.argv[3:]
    rows = [p for p in (parts(gw, j) for j in jobs) if p]
    if not rows:
        print(json.dumps({"case": case, "error": "no ready job to break down"}))
        return
    keys = ["dispatch", "start"] + PHASES + ["store", "total"]
    median = {k: round(statistics.median(r.get(k, 0.0) for r in rows), 1) for k in keys}
    total = median["total"] or 1
    share = {k: round(100 * median[k] / total, 1) for k in keys if k != "total"}
    print(json.dumps({"case": case, "jobs": len(rows), "median_ms": median, "share_pct": share,
                      "not_compiler_ms": round(total - median["build"], 1)}))


if __name__ == "__main__":
    main()
