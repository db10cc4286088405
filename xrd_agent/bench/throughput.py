"""Throughput: identify many scan files in batch, per format, stage by stage.

Stages, each timed over the same scans so the bottleneck is visible:
``read`` (read_scan), ``preprocess`` (preprocess.prepare_many in batches: grid, gate, normalise),
``network`` (the compiled network alone, Engine.predict_proba), ``model`` (network +
CAM + flags/confidence, Engine.identify_patterns) and ``end-to-end`` (read_scan then
Engine.identify_many in batches of the engine's largest batch size: what
``xrd-agent identify`` and the service's worker do).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

TARGET_XY_PER_S = 1000.0  # issue 11: >= 1,000 .xy scans/s end to end on a 2-core CPU


@dataclass(frozen=True)
class FormatThroughput:
    format: str
    scans: int
    read: float  # scans/s
    preprocess: float
    network: float
    model: float
    end_to_end: float
    failed: int

    def line(self) -> str:
        return (f"{self.format:<5} n={self.scans:<6} read {self.read:8,.0f}/s  preprocess {self.preprocess:7,.0f}/s  "
                f"network {self.network:7,.0f}/s  model(net+CAM+flags) {self.model:6,.0f}/s  "
                f"end-to-end {self.end_to_end:6,.0f}/s  failed {self.failed}")


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def measure(workdir: Path, formats: list[str], n: int, *, seed: int = 0, model_dir: Path | None = None,
            library: Path | None = None, distinct: int = 1000, log=print) -> tuple[list[FormatThroughput], dict]:
    import numpy as np

    from xrd_agent import preprocess
    from xrd_agent.bench import scans as bench_scans
    from xrd_agent.bench.standin import choose
    from xrd_agent.model.engine import Engine
    from xrd_agent.readers import read_scan
    from xrd_agent.scan import Wavelength

    choice = choose(workdir, model_dir, library)
    t = time.perf_counter()
    engine = Engine(choice.model_dir, choice.library, device="cpu").load()
    load_s = time.perf_counter() - t
    log(f"model: {choice.description}; engine load + warm-up {load_s:.1f} s; batch sizes {engine.batch_sizes}")
    lib = bench_scans.library_for_scans(engine.library_)
    k = min(n, distinct)
    t = time.perf_counter()
    base = bench_scans.measurements(k, lib, seed=seed)
    items = [base[i % k] for i in range(n)]
    log(f"simulated {k} distinct measurements in {time.perf_counter() - t:.1f} s "
        f"({n} files per format cycle through them)")
    cu = Wavelength.for_anode("Cu")
    batch = engine.batch_sizes[-1]
    out = []
    for fmt in formats:
        t = time.perf_counter()
        paths = bench_scans.write_files(Path(workdir) / fmt, fmt, items, distinct=k)
        log(f"{fmt}: wrote {len(paths)} files in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        scans = [read_scan(p, wavelength=cu) for p in paths]
        read_s = time.perf_counter() - t
        t = time.perf_counter()
        patterns = [r[0] for i in range(0, len(scans), batch)
                    for r in preprocess.prepare_many(scans[i: i + batch], engine.gate)]
        prep_s = time.perf_counter() - t
        X = np.stack([p.intensity for p in patterns])
        t = time.perf_counter()
        engine.predict_proba(X)
        net_s = time.perf_counter() - t
        t = time.perf_counter()
        for i in range(0, len(patterns), batch):
            engine.identify_patterns(patterns[i: i + batch])
        model_s = time.perf_counter() - t
        del scans, patterns, X
        failed = 0
        t = time.perf_counter()
        for i in range(0, len(paths), batch):
            chunk = [read_scan(p, wavelength=cu) for p in paths[i: i + batch]]
            failed += sum(1 for r in engine.identify_many(chunk) if not hasattr(r, "top"))
        e2e_s = time.perf_counter() - t
        result = FormatThroughput(fmt, len(paths), _rate(n, read_s), _rate(n, prep_s), _rate(n, net_s),
                                  _rate(n, model_s), _rate(n, e2e_s), failed)
        log(result.line())
        out.append(result)
    return out, {"model": choice.description, "engine_load_s": load_s, "batch_sizes": list(engine.batch_sizes),
                 "distinct_measurements": k}


def main(args: argparse.Namespace) -> tuple[bool, dict[str, object]]:
    n = args.scans or 10_000
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="xrd-throughput-"))
    results, meta = measure(Path(workdir), formats, n, seed=args.seed)
    xy = next((r for r in results if r.format == "xy"), None)
    if xy:
        print(f"target: >= {TARGET_XY_PER_S:,.0f} scans/s end-to-end for xy on CPU; measured {xy.end_to_end:,.0f}/s "
              f"({'met' if xy.end_to_end >= TARGET_XY_PER_S else 'NOT met'}); slowest stage: "
              f"{min(('read', xy.read), ('preprocess', xy.preprocess), ('model', xy.model), key=lambda kv: kv[1])[0]}")
    ok = all(r.failed == 0 for r in results)
    return ok, {**meta, "results": [asdict(r) for r in results]}
