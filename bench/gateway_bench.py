"""Gateway benchmarks (issue #5), driven against running processes:
  dispatch  — POST /build → the worker's `accepted` event, idle workers waiting (p50/p99 over N jobs)
  (SSE fan-out is measured by bench/sseclients.c against the gateway and bench/sse_floor.c.)
  download  — a 100 MiB result from the gateway vs the same file from nginx (MB/s)
Prints one JSON line per case."""
import argparse, base64, http.client, json, os, statistics, subprocess, sys, time, urllib.request
from datetime import datetime

# Principals on: every gateway request carries the bench principal's token.
AUTH = {"Authorization": "Bearer " + os.environ["KILN_TOKEN"]} if os.environ.get("KILN_TOKEN") else {}

def post(gw, body):
    req = urllib.request.Request(gw + "/build", data=json.dumps(body).encode(), headers={"Content-Type": "application/json", **AUTH})
    return json.load(urllib.request.urlopen(req))["job_id"]

def get(gw, path):
    return json.load(urllib.request.urlopen(urllib.request.Request(gw + path, headers=AUTH)))

def ts(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))]

def dispatch(args):
    archive = base64.b64encode(open(args.archive, "rb").read()).decode()
    lat, posts = [], []
    # One kept-alive connection, as a CI client would hold: the figure is the gateway's, not the
    # cost of a new TCP connection and Python's urllib per request.
    host, port = args.gateway.replace("http://", "").split(":")
    conn = http.client.HTTPConnection(host, int(port))
    body = json.dumps({"nonce": "abcd", "source_data": archive, "source_name": "p.tar.gz"})
    # One warm-up job first (a fresh connection, first-use paths in every process), not counted.
    for i in range(args.jobs + 1):
        # Wait until the pool has an idle worker (the case being measured).
        for _ in range(600):
            m = urllib.request.urlopen(args.pool_metrics).read().decode()
            ready = [l for l in m.splitlines() if l.startswith("kiln_pool_ready_workers")]
            busy = [l for l in m.splitlines() if l.startswith("kiln_pool_busy_workers")]
            # The pool at rest: every idle worker up and subscribed, no build running and no worker
            # starting that would compete for the 2 cores.
            if ready and float(ready[0].split()[1]) >= args.idle and busy and float(busy[0].split()[1]) == 0: break
            time.sleep(0.05)
        time.sleep(0.1)
        t0 = time.time()
        conn.request("POST", "/build", body, {"Content-Type": "application/json", **AUTH})
        job = json.loads(conn.getresponse().read())["job_id"]
        posts.append((time.time() - t0) * 1000)
        # The accepted event's own timestamp (same host clock) minus the POST start.
        with urllib.request.urlopen(urllib.request.Request(args.gateway + f"/build/{job}/events", headers=AUTH), timeout=30) as r:
            for raw in r:
                line = raw.decode().strip()
                if line.startswith("data: "):
                    e = json.loads(line[6:])
                    if e["type"] == "accepted":
                        lat.append((ts(e["time"]) - t0) * 1000)
                        if i == 0:
                            lat.pop()
                            posts.pop()
                        break
    print(json.dumps({"case": "dispatch_post_to_accepted", "jobs": len(lat), "warmup_jobs": 1, "p50_ms": round(pct(lat, 50), 2),
                      "p99_ms": round(pct(lat, 99), 2), "max_ms": round(max(lat), 2),
                      "post_answer_p50_ms": round(pct(posts, 50), 2), "post_answer_p99_ms": round(pct(posts, 99), 2)}), flush=True)
    if os.environ.get("BENCH_DEBUG"):
        print("slowest (total, post, index):", [(round(l, 2), round(p, 2), i) for l, p, i in sorted(zip(lat, posts, range(len(lat))))[-8:]], file=sys.stderr)

def download(args):
    def once(url):
        auth = ["-H", "Authorization: " + AUTH["Authorization"]] if AUTH and "/build/" in url else []
        out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{speed_download} %{size_download}", *auth, url], capture_output=True, text=True).stdout.split()
        return float(out[0]), int(float(out[1]))
    # Interleaved, so both see the same machine state (page cache, other load); medians of 7.
    g, n, size = [], [], 0
    for _ in range(7):
        speed, size = once(args.gateway + f"/build/{args.job}/result")
        g.append(speed)
        n.append(once(args.nginx)[0])
    gm, nm = statistics.median(g) / 1e6, statistics.median(n) / 1e6
    print(json.dumps({"case": "download_100MiB", "bytes": size, "gateway_mb_per_s": round(gm, 1), "nginx_mb_per_s": round(nm, 1),
                      "ratio": round(gm / nm, 2)}), flush=True)

p = argparse.ArgumentParser()
p.add_argument("case")
p.add_argument("--gateway")
p.add_argument("--pool-metrics")
p.add_argument("--archive")
p.add_argument("--jobs", type=int, default=100)
p.add_argument("--idle", type=int, default=3)
p.add_argument("--job")
p.add_argument("--nginx")
a = p.parse_args()
if a.case == "dispatch": dispatch(a)
elif a.case == "download": download(a)
