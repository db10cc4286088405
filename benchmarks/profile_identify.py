"""Where the time of the identify path goes: cProfile of ``Engine.identify_many`` by stage.

    .venv/bin/python benchmarks/profile_identify.py [--scans 256] [--batch 64] [--top 30]

Simulated ``.xy`` scans of library MOFs (the bench's own generator), read once, then
identified in batches with the shipped model under cProfile; prints the rate and the
functions by cumulative time (stages: prepare, predict, peak evidence, decide).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()

    from xrd_agent import tfimport

    tfimport.quiet()
    from xrd_agent.bench import scans as bench_scans
    from xrd_agent.bench.machine import reference
    from xrd_agent.model.engine import Engine
    from xrd_agent.readers import read_scan
    from xrd_agent.scan import Wavelength

    print(reference().line())
    engine = Engine(None, None, device="cpu").load()
    lib = bench_scans.library_for_scans(engine.library_)
    items = bench_scans.measurements(args.scans, lib, seed=0)
    paths = bench_scans.write_files(Path(tempfile.mkdtemp(prefix="xrd-profile-")), "xy", items, distinct=args.scans)
    cu = Wavelength.for_anode("Cu")
    scans = [read_scan(p, wavelength=cu) for p in paths]
    engine.identify_many(scans[: args.batch])  # warm caches outside the profile
    profile = cProfile.Profile()
    t = time.perf_counter()
    profile.enable()
    for i in range(0, len(scans), args.batch):
        engine.identify_many(scans[i: i + args.batch])
    profile.disable()
    print(f"identify_many: {len(scans) / (time.perf_counter() - t):.0f} scans/s under the profiler")
    pstats.Stats(profile).sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
