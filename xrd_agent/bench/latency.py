"""Latency: scan file complete (renamed into place) -> identification received by a
subscriber in another process, per format, with the product's default watch settings.

Scans arrive open-loop at a fixed interval (default one every 0.25 s, far below the
service's capacity, so queueing adds little): each latency is the subscriber's arrival
time minus the moment the rename returned, on the same monotonic clock. The message's
own timestamps split it into watch (rename -> ``detected_at``), pipeline (``detected_at``
-> ``published_at``: debounce, read, identify, record) and delivery (-> arrival).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from xrd_agent.bench import scans as bench_scans
from xrd_agent.bench.site import Site
from xrd_agent.bench.standin import service_engine
from xrd_agent.bench.stats import percentiles
from xrd_agent.config import WatchConfig

TARGET_P50_S, TARGET_P99_S = 0.050, 0.200


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@dataclass
class FormatLatency:
    format: str
    total: dict[str, float]
    watch: dict[str, float]
    pipeline: dict[str, float]
    delivery: dict[str, float]
    missing: int

    def line(self) -> str:
        t = self.total
        return (f"{self.format:<5} n={int(t['n'])}: p50 {t['p50'] * 1e3:.0f} ms, p95 {t['p95'] * 1e3:.0f} ms, "
                f"p99 {t['p99'] * 1e3:.0f} ms, max {t['max'] * 1e3:.0f} ms  | median split: watch "
                f"{self.watch['p50'] * 1e3:.0f} ms, pipeline {self.pipeline['p50'] * 1e3:.0f} ms, delivery "
                f"{self.delivery['p50'] * 1e3:.0f} ms; missing {self.missing}")


def run_latency(workdir: Path, formats: list[str], n: int, *, interval_s: float = 0.25, seed: int = 0,
                engine: str = "cnn", watch: dict | None = None, log=print) -> tuple[list[FormatLatency], dict]:
    workdir = Path(workdir)
    choice = service_engine(workdir, engine)
    defaults = WatchConfig()
    settings = {"settle_s": defaults.settle_s, "rescan_interval_s": defaults.rescan_interval_s,
                "poll_interval_s": defaults.poll_interval_s, "incomplete_timeout_s": defaults.incomplete_timeout_s,
                "mode": defaults.mode, **(watch or {})}
    site = Site(workdir / "site", engine=choice.engine, model_dir=choice.model_dir,
                library_dir=choice.library_dir, watch=settings)
    library = bench_scans.library_for_scans(choice.library_dir)
    items = bench_scans.measurements(n * len(formats), library, seed=seed, tag="latency")
    log(f"engine: {choice.description} (physics check off); watch settings: {settings}; "
        f"one scan every {interval_s:g} s")
    out: list[FormatLatency] = []
    with site.agent:
        t = time.monotonic()
        site.start()
        log(f"service ready in {time.monotonic() - t:.1f} s")
        for f_i, fmt in enumerate(formats):
            payloads = [(f"lat-{fmt}-{i:05d}{bench_scans.FORMATS[fmt]}", bench_scans.encode(m, fmt))
                        for i, m in enumerate(items[f_i * n:(f_i + 1) * n])]
            sent: dict[str, tuple[float, float]] = {}
            next_at = time.monotonic()
            for name, data in payloads:
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                _, done = bench_scans.drop(site.export, name, data)
                sent[name] = (done, time.time())
                next_at += interval_s
            names = set(sent)
            site.receiver.wait_for(lambda: names <= set(site.receiver.outcomes()), 60 + 2 * n * interval_s)
            outcomes = site.receiver.outcomes()
            total, watch_s, pipe_s, deliver_s = [], [], [], []
            for name, (mono, wall) in sent.items():
                got = outcomes.get(name)
                if not got:
                    continue
                r = got[0]
                total.append(r.at - mono)
                detected, published = _epoch(r.message["detected_at"]), _epoch(r.message["published_at"])
                watch_s.append(detected - wall)
                pipe_s.append(published - detected)
                deliver_s.append(max(0.0, (r.at - mono) - (published - wall)))
            result = FormatLatency(fmt, percentiles(total), percentiles(watch_s), percentiles(pipe_s),
                                   percentiles(deliver_s), len(names) - len(total))
            log(result.line())
            out.append(result)
        site.stop()
    return out, {"engine": choice.description, "watch": settings, "interval_s": interval_s}


def main(args: argparse.Namespace) -> tuple[bool, dict[str, object]]:
    n = args.scans or 500
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="xrd-latency-"))
    results, meta = run_latency(Path(workdir), formats, n, seed=args.seed, engine=getattr(args, "engine", None) or "cnn",
                                watch={"settle_s": args.settle} if getattr(args, "settle", None) is not None else None)
    for r in results:
        met = r.total["p50"] <= TARGET_P50_S and r.total["p99"] <= TARGET_P99_S
        print(f"target {r.format}: p50 <= {TARGET_P50_S * 1e3:.0f} ms, p99 <= {TARGET_P99_S * 1e3:.0f} ms: "
              f"{'met' if met else 'NOT met'}")
    ok = all(r.missing == 0 for r in results)
    return ok, {**meta, "results": [asdict(r) for r in results]}
