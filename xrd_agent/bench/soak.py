"""Soak: the service's resident memory, sampled while it identifies a steady stream of
scans (mixed formats, duplicates, junk) for ``--minutes`` (default 30).

Flat means: no upward trend once warm. Reported: RSS when ready, after the first
minute, at the end, the maximum, and the slope (MiB per hour) fitted over the second
half of the run. Target: flat and <= 1 GiB. Linux only (reads /proc/<pid>/status).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from xrd_agent.bench import scans as bench_scans
from xrd_agent.bench.site import Site
from xrd_agent.bench.standin import service_engine
from xrd_agent.bench.workload import plan

TARGET_RSS_BYTES = 2**30
MIB = 2**20


@dataclass
class SoakResult:
    minutes: float
    scans: int
    outcomes: int
    engine: str
    samples: list[tuple[float, int]] = field(default_factory=list)  # (seconds since ready, RSS bytes)

    def _at(self, t: float) -> int:
        return next((rss for s, rss in self.samples if s >= t), self.samples[-1][1])

    @property
    def slope_mib_per_h(self) -> float:
        import numpy as np

        half = [(s, r) for s, r in self.samples if s >= self.samples[-1][0] / 2]
        if len(half) < 3:
            return float("nan")
        t, r = np.array(half, dtype=float).T
        return float(np.polyfit(t / 3600.0, r / MIB, 1)[0])

    @property
    def peak(self) -> int:
        return max(r for _, r in self.samples)

    def lines(self) -> list[str]:
        s = self.samples
        return [f"engine: {self.engine}",
                f"soak {self.minutes:g} min: {self.scans} files dropped, {self.outcomes} outcomes; RSS ready "
                f"{s[0][1] / MIB:.0f} MiB, after 1 min {self._at(60) / MIB:.0f} MiB, end {s[-1][1] / MIB:.0f} MiB, "
                f"max {self.peak / MIB:.0f} MiB; slope over the second half {self.slope_mib_per_h:+.1f} MiB/h "
                f"({len(s)} samples)"]


def run_soak(workdir: Path, minutes: float, *, rate_per_s: float = 2.0, sample_s: float = 5.0, seed: int = 0,
             engine: str = "cnn", log=print) -> SoakResult:
    workdir = Path(workdir)
    choice = service_engine(workdir, engine)
    site = Site(workdir / "site", engine=choice.engine, model_dir=choice.model_dir, library_dir=choice.library_dir)
    library = bench_scans.library_for_scans(choice.library_dir)
    # Encode a pool of distinct files once; the stream cycles through it with fresh names and
    # sample ids so every file is new content (duplicates and junk come from the plan).
    total = int(minutes * 60 * rate_per_s) + 1
    drops = plan(min(total, 3000), library, seed=seed, tag="soak", slow_share=0.0)
    for d in drops:
        d.bytes()
    log(f"engine: {choice.description}; {total} files at {rate_per_s:g}/s for {minutes:g} min")
    result = SoakResult(minutes, 0, 0, choice.description)
    stop = threading.Event()
    with site.agent:
        site.start()
        t0 = time.monotonic()

        def feed() -> None:
            i = 0
            while not stop.is_set() and i < total:
                d = drops[i % len(drops)]
                data = d.bytes() if i < len(drops) else d.bytes() + f"\n# soak {i}\n".encode() * (
                    1 if d.name.endswith(".xy") else 0)
                bench_scans.drop(site.export, f"{i:07d}-{d.name}", data)
                i += 1
                result.scans = i
                stop.wait(max(0.0, t0 + i / rate_per_s - time.monotonic()))

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        while time.monotonic() - t0 < minutes * 60:
            rss = site.rss_bytes()
            if rss is not None:
                result.samples.append((time.monotonic() - t0, rss))
            time.sleep(sample_s)
        stop.set()
        feeder.join()
        rss = site.rss_bytes()
        if rss is not None:
            result.samples.append((time.monotonic() - t0, rss))
        result.outcomes = len(site.receiver.outcomes())
        site.stop_or_kill()
    return result


def main(args: argparse.Namespace) -> tuple[bool, dict[str, object]]:
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="xrd-soak-"))
    result = run_soak(Path(workdir), args.minutes, seed=args.seed, engine=getattr(args, "engine", None) or "cnn")
    for line in result.lines():
        print(line)
    print(f"target: <= {TARGET_RSS_BYTES / MIB:.0f} MiB and flat: max {result.peak / MIB:.0f} MiB "
          f"({'met' if result.peak <= TARGET_RSS_BYTES else 'NOT met'}), slope {result.slope_mib_per_h:+.1f} MiB/h")
    return result.peak <= TARGET_RSS_BYTES, asdict(result) | {"slope_mib_per_h": result.slope_mib_per_h}
