"""Inference speed of the resident engine: one scan, and batches, on this machine.

    .venv/bin/python benchmarks/bench_inference.py [--model DIR] [--library DIR] [--json FILE]

Measures, after the engine's own warm-up (nothing here is first-call cost):
* single-scan latency of the network alone (softmax), with the CAM backward pass, and
  the whole ``identify_patterns`` path (peak match, flags, CAM regions);
* batch throughput of the network alone at the largest fixed batch size, and of the
  whole identify path.
Targets (brief): single scan <= 5 ms, batch >= 2,000 scans/s on CPU. Reported, not enforced.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def _median_ms(fn, repeats: int) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--library", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--batch", type=int, default=4096, help="scans in the throughput runs")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    from xrd_agent.library.artifact import Library
    from xrd_agent.model.engine import Engine
    from xrd_agent.model.evaluate import _patterns

    t = time.perf_counter()
    library = Library.load(args.library)
    engine = Engine(args.model, library, batch_sizes=(1, 8, 64, 256)).load()
    load_s = time.perf_counter() - t
    rng = np.random.default_rng(0)
    # Realistic rows: library patterns (the network's cost does not depend on content).
    rows = library.patterns[rng.integers(0, len(library), args.batch)].astype(np.float32)
    one = rows[:1]
    patterns = _patterns(rows[:512])

    res: dict[str, object] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "device": engine.device_,
                    "load_avg": os.getloadavg()[0]},
        "model": engine.manifest_.version, "classes": len(library), "engine_load_s": round(load_s, 2),
    }
    med, p95 = _median_ms(lambda: engine.predict_proba(one), args.repeats)
    res["single_softmax_ms"] = {"median": round(med, 3), "p95": round(p95, 3)}
    med, p95 = _median_ms(lambda: engine.explain(one), args.repeats)
    res["single_softmax_cam_ms"] = {"median": round(med, 3), "p95": round(p95, 3)}
    med, p95 = _median_ms(lambda: engine.identify_patterns(patterns[:1]), args.repeats)
    res["single_identify_ms"] = {"median": round(med, 3), "p95": round(p95, 3)}

    engine.predict_proba(rows[:256])
    t = time.perf_counter()
    engine.predict_proba(rows)
    res["batch_softmax_scans_per_s"] = round(len(rows) / (time.perf_counter() - t), 1)
    t = time.perf_counter()
    engine.identify_patterns(patterns)
    res["batch_identify_scans_per_s"] = round(len(patterns) / (time.perf_counter() - t), 1)
    res["traces"] = engine.traces_  # 1: the fixed signature never retraced
    text = json.dumps(res, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
