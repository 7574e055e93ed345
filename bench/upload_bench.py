"""Concurrent large uploads (#12): N clients each send an M MiB source archive at once, as multipart
or as JSON base64; reports the receiver's peak RSS (sampled every 10 ms, summed over its processes)
and its throughput. The same body is PUT to nginx (WebDAV, body spooled to disk) as the peer.
Prints one JSON line."""
import argparse, base64, json, os, socket, threading, time

def rss_kib(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"): return int(line.split()[1])
    except OSError: pass
    return 0

def hwm_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"): return int(line.split()[1])
    return 0

def upload(host, port, head, parts, results, i):
    s = socket.create_connection((host, port))
    s.sendall(head)
    for p in parts:
        view = memoryview(p)
        for off in range(0, len(view), 1 << 20): s.sendall(view[off:off + (1 << 20)])
    answer = b""
    while True:
        b = s.recv(65536)
        if not b: break
        answer += b
    s.close()
    results[i] = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") else "none"

def run(host, port, pids, clients, make_request):
    peak = [0]
    done = threading.Event()
    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], sum(rss_kib(p) for p in pids))
            time.sleep(0.01)
    sampler = threading.Thread(target=sample); sampler.start()
    results = [None] * clients
    threads = [threading.Thread(target=upload, args=(host, port, *make_request(i), results, i)) for i in range(clients)]
    t0 = time.time()
    for t in threads: t.start()
    for t in threads: t.join()
    seconds = time.time() - t0
    done.set(); sampler.join()
    return peak[0], seconds, results

p = argparse.ArgumentParser()
p.add_argument("--gateway-port", type=int, required=True)
p.add_argument("--gateway-pid", type=int, required=True)
p.add_argument("--token")
p.add_argument("--nginx-port", type=int)
p.add_argument("--nginx-pids", default="")
p.add_argument("--clients", type=int, default=50)
p.add_argument("--mb", type=int, default=100)
p.add_argument("--mode", choices=["multipart", "json"], default="multipart")
a = p.parse_args()

archive = b"\x1f\x8b" + os.urandom((a.mb << 20) - 2)
auth = f"Authorization: Bearer {a.token}\r\n" if a.token else ""
if a.mode == "multipart":
    boundary = "KilnBenchBoundary"
    pre = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"nonce\"\r\n\r\nabcd\r\n"
           f"--{boundary}\r\nContent-Disposition: form-data; name=\"source\"; filename=\"big.tar.gz\"\r\n\r\n").encode()
    post = f"\r\n--{boundary}--\r\n".encode()
    ctype = f"multipart/form-data; boundary={boundary}"
    parts = [pre, archive, post]
else:
    parts = [b'{"nonce":"abcd","source_data":"', base64.b64encode(archive), b'"}']
    ctype = "application/json"
length = sum(len(x) for x in parts)
def gateway_request(i):
    head = (f"POST /build HTTP/1.1\r\nHost: bench\r\nConnection: close\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {length}\r\n{auth}\r\n").encode()
    return head, parts
base = rss_kib(a.gateway_pid)
peak, seconds, results = run("127.0.0.1", a.gateway_port, [a.gateway_pid], a.clients, gateway_request)
out = {"case": f"upload_{a.clients}x{a.mb}MiB_{a.mode}", "clients": a.clients, "body_mib_each": round(length / 2**20, 1),
       "ok": sum(1 for r in results if r == "200"), "gateway_rss_before_mib": round(base / 1024, 1),
       "gateway_peak_rss_mib": round(peak / 1024, 1), "gateway_vmhwm_mib": round(hwm_kib(a.gateway_pid) / 1024, 1),
       "gateway_seconds": round(seconds, 2), "gateway_mb_per_s": round(a.clients * length / seconds / 1e6, 1)}
if a.nginx_port:
    pids = [int(x) for x in a.nginx_pids.split(",") if x]
    def nginx_request(i):
        head = (f"PUT /upload/{a.mode}-{i}.bin HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n"
                f"Content-Length: {length}\r\n\r\n").encode()
        return head, parts
    npeak, nseconds, nresults = run("127.0.0.1", a.nginx_port, pids, a.clients, nginx_request)
    out.update({"nginx_ok": sum(1 for r in nresults if r in ("201", "204")), "nginx_peak_rss_mib": round(npeak / 1024, 1),
                "nginx_seconds": round(nseconds, 2), "nginx_mb_per_s": round(a.clients * length / nseconds / 1e6, 1)})
print(json.dumps(out), flush=True)
