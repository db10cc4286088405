"""Preprocessing and synthesis speed on this machine.

    .venv/bin/python benchmarks/bench_preprocess.py [--repeat 300] [--mofs 60] [--per-class 60] [--full]

1. ``prepare`` on every real fixture (read once, then preprocessing alone), and
   ``prepare_arrays`` on a typical D8 .xy scan (5-50 deg, 0.02 deg step): median and best
   time per scan over ``repeat`` calls.
2. ``prepare_grid_batch`` on 256 rows already on the grid: rows per second.
3. The FFT gate's measure on clean simulated references and on the same with Poisson
   counting noise at several count levels (what the threshold 1.0 was chosen from).
4. How hard each augmentation preset makes a plain cosine search-match (a sanity
   check of augmentation strength, not a model result).
5. ``synthesize`` with the default augmentation and the shipped noise bank on the first
   ``mofs`` classes of the shipped library (else CoRE MOF 2019 structures simulated here,
   else made-up sticks): spectra per second with 1 and 2 worker processes, and the
   projected time for 1,012 classes x ``per_class``; with ``--full`` the real thing on
   the whole shipped library.

Prints the machine facts and a reference timing (xrd_agent.bench.machine) beside the
figures, because this 2-core machine is shared and timings wander.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time
import warnings
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "data" / "fixtures" / "scans"


def _per_call(fn, repeat: int) -> tuple[float, float]:
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times)


def _machine_lines() -> None:
    try:
        from xrd_agent.bench.machine import machine, reference
    except ImportError:
        return
    print(machine().line())
    print(reference().line())


def bench_single(repeat: int) -> None:
    from xrd_agent.preprocess import prepare, prepare_arrays
    from xrd_agent.readers import read_scan

    print("\n== prepare(scan), preprocessing only ==")
    for path in sorted(FIXTURES.iterdir()):
        if path.suffix in {".md", ".json"}:
            continue
        scan = read_scan(path)
        median, best = _per_call(lambda s=scan: prepare(s), repeat)
        p = prepare(scan)
        print(f"{path.name:48s} {scan.two_theta.size:6d} pts  median {median * 1e6:7.0f} us  "
              f"best {best * 1e6:7.0f} us  gate {'on ' if p.gate.applied else 'off'} "
              f"{p.gate.high_band_mean:6.3f}  coverage {p.coverage.fraction:.2f}")
    rng = np.random.default_rng(0)
    tt = np.round(np.arange(5.0, 50.0001, 0.02), 4)
    peaks = np.exp(-(((tt[:, None] - rng.uniform(5, 50, 40)) / 0.06) ** 2)).sum(1)
    y = rng.poisson(200 + 5000 * peaks).astype(float)
    median, best = _per_call(lambda: prepare_arrays(tt, y), repeat)
    print(f"{'typical .xy (5-50 deg, 0.02 step)':48s} {tt.size:6d} pts  median {median * 1e6:7.0f} us  "
          f"best {best * 1e6:7.0f} us  -> {1 / median:,.0f} scans/s on one core")
    from xrd_agent.preprocess import prepare_many
    from xrd_agent.scan import Scan, ScanRange, Wavelength

    scan = Scan(ranges=(ScanRange(tt, y),), source_path=Path("typical.xy"), format="xy", format_version="1",
                sha256="0" * 64, wavelength=Wavelength.for_anode("Cu"))
    batch = [scan] * 64
    median, best = _per_call(lambda: prepare_many(batch), max(repeat // 20, 5))
    print(f"{'prepare_many, 64 typical .xy scans':48s} {'':10s}  median {median / 64 * 1e6:7.0f} us  "
          f"best {best / 64 * 1e6:7.0f} us per scan -> {64 / median:,.0f} scans/s on one core")


def gate_study(library) -> None:
    """The gate's measure on clean references and on the same with counting noise."""
    from xrd_agent.config import GateConfig
    from xrd_agent.preprocess import prepare_grid_batch

    rng = np.random.default_rng(0)
    clean = library.patterns.astype(float)
    clean /= clean.max(axis=1, keepdims=True)
    off = GateConfig(threshold=np.inf)
    print(f"\n== FFT gate measure (mean |FFT| beyond bin 200), {len(clean)} references ==")
    rows = [("clean", clean)] + [
        (f"Poisson, {c:>6,} counts at the strongest peak", rng.poisson(clean * c + 0.05 * c) / c)
        for c in (100_000, 10_000, 1_000, 300, 100)]
    for label, y in rows:
        _, decisions = prepare_grid_batch(y, None, off)
        v = np.array([d.high_band_mean for d in decisions])
        print(f"{label:42s} min {v.min():5.2f}  median {np.median(v):5.2f}  max {v.max():5.2f}  "
              f"gated at 1.0: {np.mean(v > 1.0):4.0%}")


def augmentation_strength(library, per_class: int = 10) -> None:
    """How hard each preset makes the task for a plain cosine search-match against the
    clean references (the floor any model must clear; not the model's accuracy)."""
    from xrd_agent.model.dataset import synthesize
    from xrd_agent.preprocess import prepare_grid_batch

    refs, _ = prepare_grid_batch(library.patterns, None)
    refs /= np.linalg.norm(refs, axis=1, keepdims=True)
    print(f"\n== augmentation strength: cosine search-match over {len(library)} references, "
          f"{per_class} spectra each ==")
    for preset in ("none", "paper", "physics", "default", "realistic"):
        X, y = synthesize(library, per_class, seed=1, options=preset)
        X /= np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
        scores = X @ refs.T
        rank = (scores > scores[np.arange(y.size), y][:, None]).sum(axis=1)
        print(f"{preset:10s} cosine to own reference: median {np.median(scores[np.arange(y.size), y]):.3f}  "
              f"top-1 {np.mean(rank == 0):6.1%}  top-5 {np.mean(rank < 5):6.1%}")


def bench_batch() -> None:
    from xrd_agent.config import GateConfig
    from xrd_agent.pattern import GRID_POINTS
    from xrd_agent.preprocess import prepare_grid_batch

    rows = np.random.default_rng(1).random((256, GRID_POINTS))
    median, best = _per_call(lambda: prepare_grid_batch(rows, None, GateConfig()), 10)
    print(f"\n== prepare_grid_batch, 256 rows ==\nmedian {median * 1e3:.1f} ms  best {best * 1e3:.1f} ms  "
          f"-> {256 / median:,.0f} rows/s")


def _shipped_library(count: int):
    """The first ``count`` classes of the library shipped in the package (all if 0)."""
    from xrd_agent.library.artifact import Library

    library = Library.load()
    if count <= 0 or count >= len(library):
        return library, f"shipped library {library.version}"
    sticks = [library.sticks(i) for i in range(count)]
    return (Library.from_patterns(library.entries[:count], library.patterns16[:count], sticks),
            f"shipped library {library.version}, first {count} classes")


def _real_library(count: int):
    """Sticks of ``count`` CoRE MOF 2019 ASR structures (sha256 order of name), simulated here."""
    from xrd_agent.library.artifact import Library, Sticks
    from xrd_agent.library.cif import parse_cif
    from xrd_agent.library.coremof import DATASETS, iter_cifs, load_determinations
    from xrd_agent.library.simulate import simulate

    names = sorted((d.files[DATASETS[0]] for d in load_determinations().values() if DATASETS[0] in d.files),
                   key=lambda n: hashlib.sha256(n.encode()).hexdigest())[: count * 2]
    entries, patterns, sticks = [], [], []
    for _, name, text in iter_cifs({DATASETS[0]: set(names)}):
        if len(entries) == count:
            break
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sim = simulate(parse_cif(text, name).crystal)
        except Exception as exc:  # benchmark: report and go on
            print(f"{name}: skipped ({type(exc).__name__})")
            continue
        entries.append({"refcode": name.split("_")[0], "name": name})
        patterns.append(sim.pattern)
        sticks.append(Sticks(sim.two_theta, sim.intensity, sim.hkl))
    return Library.from_patterns(entries, np.array(patterns), sticks), "CoRE MOF 2019 ASR"


def _made_up_library(count: int):
    from xrd_agent.library.artifact import Library, Sticks
    from xrd_agent.peakshape import broaden

    rng = np.random.default_rng(0)
    sticks, patterns = [], []
    for _ in range(count):
        tt = np.sort(rng.uniform(5, 50, 600))
        inten = rng.exponential(1, 600)
        sticks.append(Sticks(tt, inten / inten.max(), rng.integers(-8, 9, (600, 3))))
        patterns.append(broaden(tt, inten))
    return Library.from_patterns([{"refcode": f"R{i}"} for i in range(count)], np.array(patterns), sticks), \
        "made-up, 600 sticks each"


def bench_synthesize(library, kind: str, per_class: int) -> None:
    from xrd_agent.model import dataset
    from xrd_agent.model.dataset import synthesize
    from xrd_agent.model.noise import NoiseBank

    counts = [library.sticks(i).two_theta.size for i in range(len(library))]
    bank = NoiseBank.load()
    n = len(library) * per_class
    print(f"\n== synthesize: {len(library)} classes ({kind}; sticks median {int(np.median(counts))}, "
          f"max {max(counts)}) x {per_class} ==")
    dataset._POOL_MIN_SPECTRA = 0  # measure the pool even on this small set
    for workers in (1, 2):
        t = time.perf_counter()
        synthesize(library, per_class, seed=0, bank=bank, workers=workers)
        dt = time.perf_counter() - t
        print(f"workers {workers}: {dt:6.2f} s  {n / dt:7.0f} spectra/s  {dt / n * 1e3:.2f} ms/spectrum  "
              f"-> 1,012 x {per_class} in {1012 * per_class / (n / dt) / 60:.1f} min")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=300)
    ap.add_argument("--mofs", type=int, default=60)
    ap.add_argument("--per-class", type=int, default=60)
    ap.add_argument("--skip-synthesis", action="store_true")
    ap.add_argument("--full", action="store_true",
                    help="also time synthesize on the whole shipped library (about 1.5 min here)")
    args = ap.parse_args()
    _machine_lines()
    bench_single(args.repeat)
    bench_batch()
    library, kind = None, ""
    for make in (_shipped_library, _real_library, _made_up_library):
        try:
            library, kind = make(args.mofs)
            break
        except Exception as exc:  # no shipped library yet / CoRE MOF data or pymatgen missing
            print(f"({make.__name__}: {type(exc).__name__}: {exc})")
    gate_study(library)
    augmentation_strength(library)
    if not args.skip_synthesis:
        bench_synthesize(library, kind, args.per_class)
    if args.full:
        from xrd_agent.model.dataset import synthesize

        full, kind = _shipped_library(0)
        t = time.perf_counter()
        X, _ = synthesize(full, args.per_class, seed=0, workers=1)
        dt = time.perf_counter() - t
        print(f"\n== synthesize, {kind}: {len(full)} classes x {args.per_class}, 1 process ==\n"
              f"{dt:.1f} s  {X.shape[0] / dt:.0f} spectra/s  "
              f"X {X.shape} {X.dtype} ({X.nbytes / 2**30:.2f} GiB)")


if __name__ == "__main__":
    main()
