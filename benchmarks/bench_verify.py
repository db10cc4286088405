"""The physics check (xrd_agent/verify) on the repository's real scans: accuracy and time per scan.

    python benchmarks/bench_verify.py [--byo] [--mof] [--synthetic N] [--measured-mixtures N] [--broad]

--byo        library from every tests/data/real-scans/byo-cif CIF together (5-165 deg, Cu), each
             scan identified against all of them: single-phase Top-1 and Top-5, and for the two-phase
             scans whether both phases are in the composition / Top-5.
--mof        the shipped library against tests/data/real-scans/mof (ZIF-67 rank, Zn-TBAPy verdicts).
--synthetic  N two-phase mixtures and N single phases simulated from first principles from the
             byo-cif structures (xrd_agent/testing/powder.py): both phases found, weight-fraction
             error, single phases called mixtures.
--measured-mixtures N
             N mixtures per row of two, three and four measured byo-cif single-phase scans added
             together at given shares of the diffraction signal (real intensities, profiles,
             backgrounds and noise, the misfit a lab's CIFs leave included): phases in the
             composition and in the Top-5, scans with every phase, phases reported that are not in.
--broad      every byo-cif structure simulated once more as a nanocrystalline single phase, with lines
             1.6, 2.5 and 3.5 deg wide (W of the Caglioti width, 10-90 deg, Cu, counting noise):
             Top-1 / Top-5 by structure, and the share explained and confidence the check reports.
Prints p50/p99 of the check's time per scan (prefilter + fits + composition; the network is not
included) and the load average, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import os
import sys
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


def _width(obs) -> str:
    """The scan's own line width as the check measures it (deg; fitted at it when broader than the
    laboratory bound)."""
    return "?" if obs.line_fwhm is None else f"{obs.line_fwhm:.2f} deg"


def byo() -> None:
    from xrd_agent.testing.mixture_eval import library_checker

    checker = library_checker(DATA / "byo-cif")
    top1 = top5 = singles = 0
    seconds = []
    for folder in sorted(p for p in (DATA / "byo-cif").iterdir() if p.is_dir()):
        truth = {c.stem for c in folder.glob("*.cif")}
        scan = read_scan(next(folder.glob("*.csv")), wavelength=CU)
        obs = observe_scan(scan)
        v = checker.check(obs)
        seconds.append(v.seconds)
        ranked = [c.refcode for c in v.candidates]
        comp = [(p.refcode, p.weight_fraction) for p in v.phases]
        if len(truth) == 1:
            singles += 1
            top1 += ranked[0] in truth
            top5 += bool(truth & set(ranked[:5]))
            verdict = "top1" if ranked[0] in truth else ("top5" if truth & set(ranked[:5]) else "MISS")
        else:
            # by material too: the library groups the lab's Ti-bcc CIF and Ti-2448's beta (both
            # Im-3m titanium, a = 3.28) as one material, and the check fits one of them
            mat = {r.refcode: int(checker.materials[r.index]) for r in checker.refs if r is not None}
            in_comp = truth <= {p for p, _ in comp}
            by_mat = {mat[t] for t in truth} <= {mat[p] for p, _ in comp}
            top5_mat = {mat[t] for t in truth} <= {mat[r] for r in ranked[:5]}
            verdict = (f"both in composition: {in_comp} (by material {by_mat}); both in Top-5: "
                       f"{truth <= set(ranked[:5])} (by material {top5_mat})")
        print(f"  {folder.name:28s} {verdict:10s} top {ranked[:3]} explained {v.explained:.3f} "
              f"composition {[(p, None if w is None else round(w, 3)) for p, w in comp]} "
              f"lines {_width(obs)}")
    print(f"byo-cif single phases: Top-1 {top1}/{singles}, Top-5 {top5}/{singles}")
    _times("byo-cif", seconds)


def mof() -> None:
    from xrd_agent.library.artifact import Library

    lib = Library.load()
    checker = checker_for(lib)
    seconds = []
    for path in sorted((DATA / "mof").glob("*.[cx][sy]*")):
        obs = observe_scan(read_scan(path, wavelength=CU))
        v = checker.check(obs)
        seconds.append(v.seconds)
        c = v.candidates[0]
        metals = lib.entries[c.index].get("metals", [])
        print(f"  {path.name:32s} top {c.name} ({c.refcode}, {'/'.join(metals)}) explained {v.explained:.3f} "
              f"fits {v.fits} confidence {v.confidence:.2f} cell change {np.round(c.cell_change[:3], 2)} "
              f"lines {_width(obs)}")
    _times("mof", seconds)


def synthetic(n: int) -> None:
    """The mixture table's cases (xrd_agent.testing.mixture_eval: same generator and seed 7)."""
    from xrd_agent.testing.mixture_eval import simulated

    sim = simulated(n, emit=lambda line: print(line, flush=True))
    seconds = [x for c in sim["cases"] for x in (c["seconds"], c["single"]["seconds"])]
    if sim["error_mean"] == sim["error_mean"]:  # not NaN: at least one mixture found
        print(f"synthetic two-phase: both phases {sim['both_found']}/{n} (by file stem; by structure "
              f"{sim['found']}/{sim['distinct_n']} pairs of two different structures), weight-fraction error mean "
              f"{100 * sim['error_mean']:.1f} points, max {100 * sim['error_max']:.1f} points; true fraction "
              f"within 2 reported uncertainties in {100 * sim['within_2sigma']:.0f} % of {sim['within_2sigma_n']}")
    else:
        print("no mixture found")
    print(f"synthetic single phases called mixtures: {sim['singles_called_mixtures']}/{n}")
    _times("synthetic", seconds)


#: The measured single phases the mixtures are made of: byo-cif scans on a fine step (<= 0.025 deg)
#: whose own CIF the check names first in them (not C: the lab's CIF is graphite nitrate's cell;
#: not Ti-bcc: 4.5 deg lines; not Tb2BaCoO5: its CIF explains 60 % of its scan; not CdS, MnS,
#: PbSe, ZnS: 0.12 deg steps; not LiTMO3: 15-50 deg only).
MEASURED_PHASES = ("Al2O3", "Mn2O3", "Ni(OH)2", "PbSO4", "RuO2", "Sn", "WO3", "Zr")
#: Shares of the diffraction signal per row of the measured-mixture table.
MEASURED_SHARES = ((0.7, 0.3), (0.85, 0.15), (0.5, 0.3, 0.2), (0.4, 0.3, 0.2, 0.1))


def measured_mixtures(n: int, seed: int = 3) -> None:
    """Sums of measured single-phase scans (xrd_agent.testing.mixture_eval.measured_sum) checked
    against the byo-cif library, phases drawn at random (seeded)."""
    from xrd_agent.testing.mixture_eval import library_checker, measured_sum

    checker = library_checker(DATA / "byo-cif")
    files = {m: (next((DATA / "byo-cif" / m).glob("*.csv")), next((DATA / "byo-cif" / m).glob("*.cif")).stem)
             for m in MEASURED_PHASES}
    rng = np.random.default_rng(seed)
    seconds = []
    for shares in MEASURED_SHARES:
        k = len(shares)
        in_comp = in_top5 = whole = spurious = 0
        for _ in range(n):
            names = [str(x) for x in rng.choice(MEASURED_PHASES, k, replace=False)]
            obs = measured_sum([(files[m][0], x) for m, x in zip(names, shares)])
            v = checker.check(obs)
            seconds.append(v.seconds)
            truth = {files[m][1] for m in names}
            comp = [p.refcode for p in v.phases]
            top5 = [c.refcode for c in v.candidates[:5]]
            in_comp += len(truth & set(comp))
            in_top5 += len(truth & set(top5))
            whole += truth <= set(comp)
            spurious += len(set(comp) - truth)
            found = [(p.refcode, None if p.weight_fraction is None else round(p.weight_fraction, 2))
                     for p in v.phases]
            print(f"  {' + '.join(f'{m} {x:.2f}' for m, x in zip(names, shares))} "
                  f"({obs.two_theta[0]:.0f}-{obs.two_theta[-1]:.0f} deg): composition {found} top {top5} "
                  f"explained {v.explained:.3f}{'' if v.fits else ' (nothing fits)'}",
                  flush=True)
        print(f"{k} phases, signal shares {'/'.join(f'{x:.2f}' for x in shares)}: in the composition "
              f"{in_comp}/{k * n}, in the Top-5 {in_top5}/{k * n}, scans with every phase {whole}/{n}, "
              f"phases reported that are not in {spurious}", flush=True)
    _times("measured mixtures", seconds)


BROAD_WIDTHS = (1.6, 2.5, 3.5)  # deg FWHM at low angle: crystallites of about 6, 4 and 2.5 nm


def broad() -> None:
    from xrd_agent.library.fitdata import cell_mass
    from xrd_agent.testing import mixture_eval as me
    from xrd_agent.testing.powder import Component, powder_scan
    from xrd_agent.verify.observed import observe

    parsed = me.structures()
    checker = me.checker_for_structures(parsed)
    tt = np.arange(*me.TWO_THETA)
    lam1, lam2 = CU.primary, CU.alpha2
    rng = np.random.default_rng(me.SEED)
    seconds = []
    for width in BROAD_WIDTHS:
        top1 = top5 = 0
        explained, confidence = [], []
        for key, p in parsed.items():
            y = powder_scan([Component(p.crystal, cell_mass(p.crystal))], tt, fwhm=(width**2, 0.2), counts=5000,
                            seed=int(rng.integers(1 << 30)))
            v = checker.check(observe(tt, y, lam1, lam2))
            seconds.append(v.seconds)
            same = {q for q in parsed if me.same_structure(parsed[q], p)}  # the lab's Ti-bcc is Ti-2448's beta
            ranked = [c.refcode for c in v.candidates]
            top1 += ranked[0] in same
            top5 += bool(same & set(ranked[:5]))
            explained.append(v.explained)
            confidence.append(v.confidence)
        print(f"  lines {width} deg: Top-1 {top1}/{len(parsed)}, Top-5 {top5}/{len(parsed)}, explained median "
              f"{np.median(explained):.3f} (min {min(explained):.3f}), confidence median {np.median(confidence):.2f} "
              f"(min {min(confidence):.2f})", flush=True)
    _times("broad", seconds)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--byo", action="store_true")
    ap.add_argument("--mof", action="store_true")
    ap.add_argument("--synthetic", type=int, default=0, metavar="N")
    ap.add_argument("--measured-mixtures", type=int, default=0, metavar="N")
    ap.add_argument("--broad", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()
    if args.byo:
        byo()
    if args.mof:
        mof()
    if args.synthetic:
        synthetic(args.synthetic)
    if args.measured_mixtures:
        measured_mixtures(args.measured_mixtures)
    if args.broad:
        broad()
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
