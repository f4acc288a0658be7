"""`python -m bench.etcd_transport [--watches N] [--writes W] [--json FILE]`: what each of
synapse's etcd transports costs etcd, and synapse.

synapse reads etcd over gRPC (one stream for every watch) or, for a few services, over etcd's
JSON gateway (`etcd_transport`: no gRPC loaded, ~17 MB less RSS per host). The gateway is
not free for etcd: each HTTP watch is a connection, a gRPC stream inside etcd and a JSON
encoding of every event. This starts one real etcd member on 127.0.0.1, opens N prefix
watches over each transport in turn (one connection, as a synapse does), writes W changes
under the watched prefix (every watch gets every event), and prints per transport: etcd's
RSS per watch, etcd's CPU per event delivered, and this process's CPU per event received (the
watch path of a synapse: receive, decode, queue; no HAProxy). The fleet benchmark measures
the whole synapse; this isolates the transport.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.report import machine
from bench.stack import cpu_seconds, rss_kib
from testbed.etcd import EtcdCluster

PREFIX = b"/bench/transport/"


def _rss_mb(pid: int) -> float:
    return rss_kib(pid)["VmRSS"] / 1024


async def _drain(watch: Any, received: list[int]) -> None:
    async for batch in watch.batches():
        received[0] += len(batch)


async def measure(transport: str, watches: int, writes: int) -> dict[str, float]:
    """One fresh etcd member, ``watches`` watches over ``transport``, ``writes`` changes."""
    import aetcd

    from smartstack.etcd import EtcdConnection
    from smartstack.etcd_json import EtcdJsonConnection

    workdir = Path(tempfile.mkdtemp(prefix="bench-transport-"))
    cluster = EtcdCluster(size=1, workdir=workdir)
    cluster.start()
    pid = cluster.pids[0]
    assert pid is not None
    writer = aetcd.Client(host=cluster.host, port=cluster.port)
    connection = (EtcdJsonConnection if transport == "json" else EtcdConnection)(
        cluster.endpoints, timeout=10
    )
    try:
        await writer.put(PREFIX + b"seed", b"x")  # etcd warmed, its first allocations done
        await asyncio.sleep(1)
        before = _rss_mb(pid)
        opened = [await connection.watch_prefix(PREFIX, 1) for _ in range(watches)]
        received = [0]
        tasks = [asyncio.ensure_future(_drain(w, received)) for w in opened]
        await asyncio.sleep(2)
        received[0] = 0  # the seed, replayed from revision 1
        held = _rss_mb(pid)
        etcd_cpu, own_cpu = cpu_seconds(pid), time.process_time()
        for i in range(writes):
            await writer.put(PREFIX + b"k%d" % (i % 10), b"x" * 200)
        deadline = time.monotonic() + 60
        while received[0] < watches * writes and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        events = max(received[0], 1)
        etcd_cpu, own_cpu = cpu_seconds(pid) - etcd_cpu, time.process_time() - own_cpu
        for watch in opened:
            await watch.cancel()
        for task in tasks:
            task.cancel()
        return {
            "watches": watches,
            "events_delivered": received[0],
            "etcd_rss_per_watch_kb": (held - before) * 1024 / watches,
            "etcd_cpu_per_event_us": etcd_cpu / events * 1e6,
            "client_cpu_per_event_us": own_cpu / events * 1e6,
        }
    finally:
        await connection.close()
        await writer.close()
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--watches", type=int, default=200)
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    rows = {t: asyncio.run(measure(t, args.watches, args.writes)) for t in ("grpc", "json")}
    print(f"{args.watches} watches on one prefix, {args.writes} writes, one etcd member")
    print(f"{'':34s} {'gRPC':>10s} {'JSON gateway':>14s}")
    for key, label in (("etcd_rss_per_watch_kb", "etcd RSS per watch (KB)"),
                       ("etcd_cpu_per_event_us", "etcd CPU per event delivered (us)"),
                       ("client_cpu_per_event_us", "client CPU per event received (us)"),
                       ("events_delivered", "events delivered")):  # fmt: skip
        print(f"{label:34s} {rows['grpc'][key]:10.0f} {rows['json'][key]:14.0f}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "results": rows}, indent=2))
    missing = [t for t, r in rows.items() if r["events_delivered"] < args.watches * args.writes]
    if missing:
        print(f"not every event arrived within 60 s: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
