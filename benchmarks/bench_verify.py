"""The physics check (xrd_agent/verify) on the repository's real scans: accuracy and time per scan.

    python benchmarks/bench_verify.py [--byo] [--mof] [--synthetic N]

--byo        library from every tests/data/real-scans/byo-cif CIF together (5-165 deg, Cu), each
             scan identified against all of them: single-phase Top-1 and Top-5, and for the two-phase
             scans whether both phases are in the composition / Top-5.
--mof        the shipped library against tests/data/real-scans/mof (ZIF-67 rank, Zn-TBAPy verdicts).
--synthetic  N two-phase mixtures and N single phases simulated from first principles from the
             byo-cif structures (xrd_agent/testing/powder.py): both phases found, weight-fraction
             error, single phases called mixtures.
Prints p50/p99 of the check's time per scan (prefilter + fits + composition; the network is not
included) and the load average, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xrd_agent.readers import read_scan  # noqa: E402
from xrd_agent.scan import Wavelength  # noqa: E402
from xrd_agent.verify.stage import checker_for, observe_scan  # noqa: E402

DATA = ROOT / "tests" / "data" / "real-scans"
CU = Wavelength.for_anode("Cu")


def _times(label: str, seconds: list[float]) -> None:
    if seconds:
        s = np.array(seconds)
        print(f"{label}: {len(s)} scans, check time p50 {np.percentile(s, 50):.2f} s, "
              f"p99 {np.percentile(s, 99):.2f} s, load average {os.getloadavg()[0]:.1f}")


def byo() -> None:
    from xrd_agent.library.artifact import Library
    from xrd_agent.library.build import build_from_cif_dir

    tmp = Path(tempfile.mkdtemp())
    try:
        for p in (DATA / "byo-cif").glob("*/*.cif"):
            shutil.copy(p, tmp / p.name)
        build_from_cif_dir(tmp, tmp / "lib", workers=1, progress=False, two_theta=(5.0, 165.0))
        checker = checker_for(Library.load(tmp / "lib"))
        top1 = top5 = singles = 0
        seconds = []
        for folder in sorted(p for p in (DATA / "byo-cif").iterdir() if p.is_dir()):
            truth = {c.stem for c in folder.glob("*.cif")}
            scan = read_scan(next(folder.glob("*.csv")), wavelength=CU)
            v = checker.check(observe_scan(scan))
            seconds.append(v.seconds)
            ranked = [c.refcode for c in v.candidates]
            comp = [(p.refcode, p.weight_fraction) for p in v.phases]
            if len(truth) == 1:
                singles += 1
                top1 += ranked[0] in truth
                top5 += bool(truth & set(ranked[:5]))
                verdict = "top1" if ranked[0] in truth else ("top5" if truth & set(ranked[:5]) else "MISS")
            else:
                in_comp = truth <= {p for p, _ in comp}
                verdict = f"both in composition: {in_comp}; both in Top-5: {truth <= set(ranked[:5])}"
            print(f"  {folder.name:28s} {verdict:10s} top {ranked[:3]} explained {v.explained:.3f} "
                  f"composition {[(p, None if w is None else round(w, 3)) for p, w in comp]}")
        print(f"byo-cif single phases: Top-1 {top1}/{singles}, Top-5 {top5}/{singles}")
        _times("byo-cif", seconds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def mof() -> None:
    from xrd_agent.library.artifact import Library

    lib = Library.load()
    checker = checker_for(lib)
    seconds = []
    for path in sorted((DATA / "mof").glob("*.[cx][sy]*")):
        v = checker.check(observe_scan(read_scan(path, wavelength=CU)))
        seconds.append(v.seconds)
        c = v.candidates[0]
        metals = lib.entries[c.index].get("metals", [])
        print(f"  {path.name:32s} top {c.name} ({c.refcode}, {'/'.join(metals)}) explained {v.explained:.3f} "
              f"fits {v.fits} confidence {v.confidence:.2f} cell change {np.round(c.cell_change[:3], 2)}")
    _times("mof", seconds)


def synthetic(n: int) -> None:
    from xrd_agent.library.cif import parse_cif
    from xrd_agent.library.fitdata import cell_mass, d_range, reflections
    from xrd_agent.testing.powder import Component, powder_scan
    from xrd_agent.verify.check import Checker
    from xrd_agent.verify.observed import observe
    from xrd_agent.verify.references import build_reference

    parsed = {p.stem: parse_cif(p.read_text(), p.name) for p in sorted((DATA / "byo-cif").glob("*/*.cif"))}
    d_min, d_max = d_range(5, 100)
    refs = []
    for i, (k, p) in enumerate(parsed.items()):
        r = reflections(p.crystal, d_min, d_max)
        refs.append(build_reference(i, k, k, np.array(p.cell), r.hkl, r.f2, cell_mass(p.crystal), p.crystal.volume, True))
    checker = Checker(refs)
    keys = list(parsed)
    rng = np.random.default_rng(7)
    tt = np.arange(10.0, 90.0, 0.02)
    both = 0
    errors: list[float] = []
    mixtures_called = 0
    seconds = []
    for i in range(n):
        a, b = rng.choice(len(keys), 2, replace=False)
        w = float(rng.uniform(0.1, 0.9))
        comps = [Component(parsed[keys[a]].crystal, cell_mass(parsed[keys[a]].crystal), w),
                 Component(parsed[keys[b]].crystal, cell_mass(parsed[keys[b]].crystal), 1 - w)]
        y = powder_scan(comps, tt, zero=float(rng.uniform(-0.1, 0.1)), seed=i)
        v = checker.check(observe(tt, y, CU.alpha1, CU.alpha2))
        seconds.append(v.seconds)
        found = {p.refcode: p.weight_fraction for p in v.phases}
        ok = keys[a] in found and keys[b] in found
        both += ok
        if ok:
            errors.append(abs(found[keys[a]] - w))
        single = Component(parsed[keys[a]].crystal, cell_mass(parsed[keys[a]].crystal), 1.0,
                           tuple(rng.uniform(0.97, 1.03, 3)))
        y = powder_scan([single], tt, zero=float(rng.uniform(-0.1, 0.1)), seed=1000 + i)
        v1 = checker.check(observe(tt, y, CU.alpha1, CU.alpha2))
        seconds.append(v1.seconds)
        mixtures_called += v1.mixture
        print(f"  {i}: {keys[a]}+{keys[b]} w={w:.2f} found {sorted(found)} "
              f"w_a={found.get(keys[a])}  single {keys[a]} -> {[p.refcode for p in v1.phases]}", flush=True)
    print(f"synthetic two-phase: both phases {both}/{n}, weight-fraction error mean "
          f"{100 * np.mean(errors):.1f} points, max {100 * np.max(errors):.1f} points" if errors else "no mixture found")
    print(f"synthetic single phases called mixtures: {mixtures_called}/{n}")
    _times("synthetic", seconds)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--byo", action="store_true")
    ap.add_argument("--mof", action="store_true")
    ap.add_argument("--synthetic", type=int, default=0, metavar="N")
    args = ap.parse_args()
    t0 = time.perf_counter()
    if args.byo:
        byo()
    if args.mof:
        mof()
    if args.synthetic:
        synthetic(args.synthetic)
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
