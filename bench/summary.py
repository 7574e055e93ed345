#!/usr/bin/env python3
"""Reads the JSON lines every `make bench` case printed (one file, in run order) and prints one table:
each figure, Kiln's value, its peer's value from the same run, and Kiln / peer with which way is
better, so a regression is visible at a glance. Lines that are not JSON (logs) are skipped; a case
with no peer is listed with its goal, if it has one.

Usage: bench/summary.py RESULTS.jsonl"""
import json, sys


def rows(lines):
    by_case = {}
    bus = {}
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if d.get("bench") == "scale":  # bench/scale.sh: one line per topology, no peer
            by_case.setdefault("scale", []).append(d)
            continue
        if "server" in d:  # bench/bus.sh: kiln-broker, nats-server, Kiln's client on nats-server
            bus.setdefault(d.get("size"), {})[d["server"]] = d
            continue
        by_case.setdefault(d.get("case"), []).append(d)

    for size, servers in sorted(bus.items(), key=lambda kv: kv[0] or 0):
        kiln = next((v for k, v in servers.items() if k.startswith("kiln") and "nats" not in k), None)
        nats = servers.get("nats-server")
        if kiln and nats:
            yield (f"bus 1→1, {size} B, msgs/s", kiln["msgs_per_s"], nats["msgs_per_s"], "higher")
            yield (f"bus request/reply p99, {size} B, µs", kiln["rr_p99_us"], nats["rr_p99_us"], "lower")
        kclient = next((v for k, v in servers.items() if "nats" in k and k != "nats-server"), None)
        if kclient and nats:
            yield (f"Kiln's client on nats-server, {size} B, msgs/s", kclient["msgs_per_s"], nats["msgs_per_s"], "higher")
        if kiln and kclient:
            # The servers alone: the same (Kiln's) client against each.
            yield (f"bus 1→1, {size} B, msgs/s, kiln-broker vs nats-server, both with Kiln's client", kiln["msgs_per_s"], kclient["msgs_per_s"], "higher")
            yield (f"bus request/reply p99, {size} B, µs, both with Kiln's client", kiln["rr_p99_us"], kclient["rr_p99_us"], "lower")

    for d in by_case.pop("worker_vs_bare_cargo", []):
        yield ("hello build, process worker vs bare cargo, s", d["kiln_worker_s"], d["bare_cargo_s"], "lower")
    attest = by_case.pop("attest+package", [])
    kiln = next((d for d in attest if d.get("tool") == "kiln"), None)
    peer = next((d for d in attest if d.get("tool") != "kiln"), None)
    if kiln and peer:
        yield ("attest + package, MB/s", kiln["mb_per_s"], peer["mb_per_s"], "higher")
    for d in by_case.pop("vm_vs_process_worker", []):
        yield (f"hello build in a VM ({d.get('accel')}) vs process worker, s", d["vm_hello_s"], d["process_hello_s"], "lower")
        yield (f"worker boot to ready, VM ({d.get('accel')}) vs process, s", d["vm_boot_to_ready_s"], d["process_boot_to_ready_s"], "lower")
    for d in by_case.pop("ripgrep_vm_vs_process_vs_bare", []):
        a = d.get("accel")
        yield ("ripgrep, process worker (warm fetch cache) vs bare cargo, s", d["process_warm_s"], d["bare_cargo_s"], "lower")
        yield (f"ripgrep, fresh VM ({a}, 1 vCPU, warm fetch cache) vs bare cargo, s", d["vm_warm_s"], d["bare_cargo_s"], "lower")
        yield ("ripgrep, fetch phase, cold vs warm farm cache (process), s", d["process_cold_fetch_s"], d["process_warm_fetch_s"], "lower")
        if "vm_cold_fetch_s" in d:
            yield (f"ripgrep, fetch phase in a VM ({a}), cold vs warm farm cache, s", d["vm_cold_fetch_s"], d["vm_warm_fetch_s"], "lower")
        yield ("ripgrep, VM rg byte-identical to the process worker's", str(d["rg_identical_process_vm"]), None, "")
    for case in [c for c in by_case if c and c.startswith("hostile_")]:
        for d in by_case[case]:
            if "host_disk_peak_delta_mib" in d:
                yield (f"host disk peak during the job, {case[8:]}, MiB", d["host_disk_peak_delta_mib"], None, "lower")
    for d in by_case.pop("fetch_27_crates_vs_bare_cargo", []):
        yield ("27 crates, cold fetch cache vs bare cargo, s", d["kiln_cold_s"], d["bare_cargo_s"], "lower")
        yield ("27 crates, warm fetch cache vs bare cargo, s", d["kiln_warm_s"], d["bare_cargo_s"], "lower")
    for case in ("dependency_cache_clap_serde", "dependency_cache_ripgrep"):
        for d in by_case.pop(case, []):
            name = case[len("dependency_cache_"):].replace("_", " + ")
            yield (f"{name}, compiled-dependency cache hit vs bare cargo, s (goal 0.5×)", d["kiln_hit_s"], d["bare_cargo_s"], "lower")
            yield (f"{name}, cache miss (dependency-only step, stored) vs bare cargo, s", d["kiln_miss_s"], d["bare_cargo_s"], "lower")
            yield (f"{name}, skip_cache vs bare cargo, s", d["kiln_skip_cache_s"], d["bare_cargo_s"], "lower")
            yield (f"{name}, artifact byte-identical: miss, hit, skip_cache", str(d["artifact_identical"]), None, "")
    for d in by_case.pop("dispatch_post_to_accepted", []):
        yield ("dispatch POST → accepted p99, ms (goal 2)", d["p99_ms"], 2.0, "lower")
    sse = by_case.pop("sse_fanout", [])
    floor = by_case.pop("sse_fanout_floor_c", [])
    for d in sse:
        f = next((x for x in floor if x.get("events_per_s") == d.get("events_per_s")), None)
        if f:
            yield (f"SSE 1000 clients at {d.get('events_per_s')} ev/s, p99 ms (vs bare C)", d["p99_ms"], f["p99_ms"], "lower")
            yield (f"SSE 1000 clients at {d.get('events_per_s')} ev/s, p50 ms (vs bare C)", d["p50_ms"], f["p50_ms"], "lower")
    for d in by_case.pop("download_100MiB", []):
        yield ("download 100 MiB, MB/s (vs nginx)", d["gateway_mb_per_s"], d["nginx_mb_per_s"], "higher")
    for case in [c for c in by_case if c and c.startswith("upload_")]:
        for d in by_case.pop(case):
            if "nginx_mb_per_s" in d:
                yield (f"{case}, MB/s (vs nginx WebDAV)", d["gateway_mb_per_s"], d["nginx_mb_per_s"], "higher")
    farm = by_case.pop("farm_50_jobs_pool_4", [])
    bare = by_case.pop("cargo_back_to_back", [])
    for d in farm:
        b = bare[0] if bare else None
        yield ("50 hello jobs, pool of 4, jobs/min (vs bare cargo back to back)", d["jobs_per_min"], b["jobs_per_min"] if b else None, "higher")
        yield ("  queue wait p99, s", d["queue_wait_p99_s"], None, "lower")
    for case in [c for c in by_case if c and c.endswith("_breakdown") or c and "_breakdown_" in c]:
        for d in by_case.pop(case):
            if "median_ms" in d:
                m = d["median_ms"]
                yield (f"{case}: job wall time vs its compiler (build phase), ms", m["total"], m["build"], "lower")
    for case in [c for c in by_case if c and c.startswith("hostile_")]:
        for d in by_case.pop(case):
            yield (f"host worker peak RSS, {case[8:]}, MiB (vs the 256 bound)", d["worker_peak_rss_mib"], d["rss_bound_mib"], "lower")
    for d in by_case.pop("scale", []):
        yield (f"scale-out, {d.get('name')}: submissions/s, jobs ready/s, dispatch p99 ms",
               f"{d.get('submissions_per_s')} / {d.get('jobs_ready_per_s')} / {d.get('dispatch_p99_ms')}", None, "")
    for case, ds in by_case.items():
        for d in ds:
            yield (f"{case} (no peer)", json.dumps({k: v for k, v in d.items() if k != "case"})[:80], None, "")


def main():
    path = sys.argv[1]
    with open(path, encoding="utf-8") as f:
        table = list(rows(f))
    if not table:
        print(f"no benchmark results in {path}", file=sys.stderr)
        return 1
    width = max(len(r[0]) for r in table)
    print(f"\n{'figure'.ljust(width)}  {'Kiln':>12}  {'peer':>12}  {'Kiln/peer':>9}  better")
    print("-" * (width + 50))
    for name, kiln, peer, better in table:
        ratio = ""
        if isinstance(kiln, (int, float)) and isinstance(peer, (int, float)) and peer:
            ratio = f"{kiln / peer:.2f}×"
        fmt = lambda v: "" if v is None else (f"{v:,.2f}" if isinstance(v, float) else str(v))
        print(f"{name.ljust(width)}  {fmt(kiln):>12}  {fmt(peer):>12}  {ratio:>9}  {better}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
