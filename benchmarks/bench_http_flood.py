"""Does an HTTP request flood delay identifications? Latency (scan renamed into place ->
identification at a subscriber in another process) with the HTTP API on, first quiet, then
while one client sends ~200 requests/s over one keep-alive connection to /health,
/results?sample_id= and /results/{seq} (open loop; the achieved rate is reported).

    .venv/bin/python benchmarks/bench_http_flood.py [--scans 200] [--rate 200] [--engine cnn|cosine]

Prints the machine line, a reference timing, both latency distributions and the flood's
achieved rate and status codes. A benchmark, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

from xrd_agent.bench import scans as bench_scans
from xrd_agent.bench.machine import machine, reference
from xrd_agent.bench.site import Site
from xrd_agent.bench.standin import service_engine
from xrd_agent.bench.stats import fmt_ms, percentiles


class Flood(threading.Thread):
    """One client, one keep-alive connection, requests paced at ``rate`` per second."""

    def __init__(self, url: str, rate: float, paths: list[str]) -> None:
        super().__init__(daemon=True, name="flood")
        self.url, self.rate, self.paths = urlparse(url), rate, paths
        self.stop_event = threading.Event()
        self.codes: Counter[int] = Counter()
        self.sent = 0
        self.started_at = self.ended_at = 0.0

    def run(self) -> None:
        conn = http.client.HTTPConnection(self.url.hostname, self.url.port, timeout=10)
        self.started_at = time.monotonic()
        next_at = self.started_at
        for path in itertools.cycle(self.paths):
            if self.stop_event.is_set():
                break
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            next_at += 1.0 / self.rate
            try:
                conn.request("GET", path)
                reply = conn.getresponse()
                reply.read()
                self.codes[reply.status] += 1
            except (OSError, http.client.HTTPException):
                self.codes[0] += 1
                conn.close()
                conn = http.client.HTTPConnection(self.url.hostname, self.url.port, timeout=10)
            self.sent += 1
        self.ended_at = time.monotonic()
        conn.close()

    @property
    def achieved(self) -> float:
        return self.sent / max(1e-9, self.ended_at - self.started_at)


def phase(site: Site, items: list, fmt: str, tag: str, interval_s: float) -> tuple[dict[str, float], list[float]]:
    sent: dict[str, float] = {}
    next_at = time.monotonic()
    for i, m in enumerate(items):
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        name = f"{tag}-{i:05d}{bench_scans.FORMATS[fmt]}"
        _, done = bench_scans.drop(site.export, name, bench_scans.encode(m, fmt))
        sent[name] = done
        next_at += interval_s
    names = set(sent)
    site.receiver.wait_for(lambda: names <= set(site.receiver.outcomes()), 120 + 2 * len(items) * interval_s)
    outcomes = site.receiver.outcomes()
    latencies = [outcomes[n][0].at - t for n, t in sent.items() if n in outcomes]
    stats = percentiles(latencies)
    stats["missing"] = len(names) - len(latencies)
    return stats, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scans", type=int, default=200, help="scans per condition (default 200)")
    parser.add_argument("--blocks", type=int, default=10,
                        help="quiet and flooded blocks per condition, alternating (default 10)")
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between scans (default 0.25)")
    parser.add_argument("--rate", type=float, default=200.0, help="HTTP requests per second (default 200)")
    parser.add_argument("--connections", type=int, default=4,
                        help="keep-alive connections the one flooding client spreads the rate over (default 4)")
    parser.add_argument("--warmup", type=int, default=10, help="scans identified first, not measured (default 10)")
    parser.add_argument("--engine", choices=("cnn", "cosine"), default="cnn")
    parser.add_argument("--format", default="xy", choices=sorted(bench_scans.FORMATS))
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    print(machine().line(), flush=True)
    print(reference().line(), flush=True)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="xrd-http-flood-"))
    choice = service_engine(workdir, args.engine)
    site = Site(workdir / "site", engine=choice.engine, model_dir=choice.model_dir, library_dir=choice.library_dir,
                http={"enabled": True, "port": 0})
    library = bench_scans.library_for_scans(choice.library_dir)
    items = bench_scans.measurements(2 * args.scans + args.warmup, library, seed=1, tag="flood")
    warm, items = items[:args.warmup], items[args.warmup:]
    print(f"engine: {choice.description}; {args.scans} {args.format} scans per condition in {args.blocks} blocks each, one every "
          f"{args.interval:g} s", flush=True)
    with site.agent:
        site.start()
        url = site.agent.endpoints["http"]
        if warm:
            phase(site, warm, args.format, "warmup", args.interval)
        first = min(r.seq for r in site.receiver.items)
        sample = site.receiver.items[0].message.get("sample_id") or "x"
        paths = ["/health", f"/results?sample_id={sample}", f"/results/{first}", "/results?sample_id=nobody"]
        # quiet and flooded blocks alternate, so that the other load on the machine, which drifts,
        # falls on both conditions alike
        per_block = max(1, args.scans // args.blocks)
        lat: dict[str, list[float]] = {"quiet": [], "flood": []}
        missing = Counter()
        sent_requests, flood_time, codes = 0, 0.0, Counter()
        for block in range(2 * args.blocks):
            kind = "flood" if block % 2 else "quiet"
            chunk = items[block * per_block:(block + 1) * per_block]
            floods = [Flood(url, args.rate / args.connections, paths) for _ in range(args.connections)] \
                if kind == "flood" else []
            for f in floods:
                f.start()
            if floods:
                time.sleep(0.5)
            stats, values = phase(site, chunk, args.format, f"{kind}{block:02d}", args.interval)
            lat[kind] += values
            missing[kind] += int(stats["missing"])
            for f in floods:
                f.stop_event.set()
            for f in floods:
                f.join(15)
                sent_requests += f.sent
                flood_time += (f.ended_at - f.started_at) / len(floods)
                codes += f.codes
        achieved = sent_requests / max(flood_time, 1e-9)
        quiet, loaded = percentiles(lat["quiet"]), percentiles(lat["flood"])
        print(f"quiet:  {fmt_ms(quiet)} (missing {missing['quiet']})", flush=True)
        print(f"flood:  {fmt_ms(loaded)} (missing {missing['flood']})", flush=True)
        print(f"flood client: {sent_requests} requests over {args.connections} connections at "
              f"{achieved:.0f}/s achieved while flooding (asked {args.rate:g}/s); status codes {dict(codes)}",
              flush=True)
        site.stop()
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(json.dumps({"quiet": quiet, "flood": loaded, "flood_rate": achieved, "codes": dict(codes)}))


if __name__ == "__main__":
    main()
