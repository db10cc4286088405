"""The physics check's whole-library prefilter (xrd_agent/verify/prefilter.py): does the right
material reach the candidates it hands to the fit, and at what cost per scan.

    python benchmarks/bench_prefilter.py [--n 100] [--seed 11] [--anisotropic 60] [--ablation] [--heldout N] [--network]

Spectra of N classes of the shipped library (drawn with --seed), simulated by the training
generator (xrd_agent/model/augment.py) under four conditions:

  clean      the reference as it is, broadened with the library profile
  breathing  clean, with every independent axis changed by up to +-8 % (cell_axes = 1)
  realistic  the evaluation preset (strain, widths, texture, K-alpha2, backgrounds, counting
             noise and real baseline noise)
  instrument the as-synthesized preset (realistic + per-axis cell changes in 60 %, pore
             solvent, capillary hump, beam stop)

For each, the share of spectra whose material (xrd_agent/materials.py) is among the first k
distinct materials of the isotropic order alone and of the order the check takes its prefilter
candidates from (isotropic and anisotropic in turn; the check fits 6 of them); then p50/p99
of the search's time per scan with and without the anisotropic stage, and the load average.
Each condition's header also gives the line width the check measures on its spectra
(``Observed.line_fwhm``) and how many are broader than the fit's laboratory bound.

With --ablation the as-synthesized preset is run again with each of its effects beyond the
realistic preset off in turn (per-axis cell changes, pore solvent, capillary, beam stop, larger
displacement, its own texture range): which of them costs the prefilter its candidates.

With --heldout N the spectra are instead N held-out determinations per preset (realistic and
as-synthesized; xrd_agent/model/evaluate.py's preset_set, the rows `evaluate --materials` draws
from): another determination of a library material, whose intensities and cell differ from the
library's own as another lab's sample would, so a prefilter that only matches the library's own
intensities shows here.

With --network the shipped network reads the same spectra (they are already on its grid; with
--heldout too), and two more rows say what reaches the fit: the network's own order, and whether
the material is among the classes the check fits (Checker.candidates: the network's five, then
the prefilter's).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xrd_agent.config import GateConfig  # noqa: E402
from xrd_agent.library.artifact import Library  # noqa: E402
from xrd_agent.model.augment import AugmentOptions  # noqa: E402
from xrd_agent.model.dataset import synthesize_class  # noqa: E402
from xrd_agent.model.evaluate import as_scans  # noqa: E402
from xrd_agent.model.noise import NoiseBank, default_bank_path  # noqa: E402
from xrd_agent.verify import prefilter  # noqa: E402
from xrd_agent.verify.check import Checker  # noqa: E402
from xrd_agent.verify.fit import broad_fwhm  # noqa: E402
from xrd_agent.verify.stage import checker_for, observe_scan  # noqa: E402

if TYPE_CHECKING:
    from xrd_agent.model.engine import Engine

KS = (1, 3, 6, 10, 20)
CONDITIONS = {
    "clean": AugmentOptions.none(),
    "breathing": replace(AugmentOptions.none(), cell_axes=1.0),
    "realistic": AugmentOptions.realistic(),
    "instrument": AugmentOptions.instrument(),
}


def ablations() -> dict[str, AugmentOptions]:
    """The as-synthesized preset with each effect it adds to the realistic one off in turn."""
    real, inst = AugmentOptions.realistic(), AugmentOptions.instrument()
    return {"instrument": inst,
            "without cell axes": replace(inst, cell_axes=real.cell_axes),
            "without solvent": replace(inst, solvent=real.solvent),
            "without capillary": replace(inst, capillary=real.capillary),
            "without beam stop": replace(inst, beam_stop=real.beam_stop),
            "with the realistic displacement": replace(inst, displacement_mm=real.displacement_mm),
            "with the realistic texture range": replace(inst, march_r=real.march_r)}


def _rank(indices, materials, truth: int) -> int:
    """Place of material ``truth`` among the distinct materials of ``indices`` (999: absent)."""
    seen: list[int] = []
    for j in indices:
        m = int(materials[j])
        if m == truth:
            return len(seen)
        if m not in seen:
            seen.append(m)
    return 999


def _row(label: str, ranks: list[int]) -> str:
    r = np.array(ranks)
    return f"  {label:26s} " + "  ".join(f"top-{k} {100 * np.mean(r < k):5.1f} %" for k in KS)


def _places(res: prefilter.PrefilterResult, probs: np.ndarray | None, checker: Checker, materials: np.ndarray,
            truth: int) -> tuple[int, int, int | None, bool | None]:
    """The material's place in the isotropic and in the interleaved order; with the network's
    ``probs``, its place in the network's order and whether the check fits it."""
    iso = _rank((h.index for h in res.ranked()), materials, truth)
    both = _rank((h.index for h in res.interleaved()), materials, truth)
    if probs is None:
        return iso, both, None, None
    return (iso, both, _rank(np.argsort(-probs, kind="stable"), materials, truth),
            truth in {int(materials[j]) for j in checker.candidates(probs, res)})


def _report(places: list[tuple[int, int, int | None, bool | None]], checker: Checker) -> None:
    iso, both, net, fitted = zip(*places)
    print(_row("isotropic", list(iso)))
    print(_row("isotropic + anisotropic", list(both)), flush=True)
    if net[0] is not None:
        print(_row("network", list(net)))
        print(f"  {'fitted by the check':26s} {100 * np.mean(fitted):5.1f} % (network's "
              f"{checker.policy.network_candidates} + prefilter's {checker.policy.prefilter_candidates})",
              flush=True)


def heldout(lib: Library, checker: Checker, k_aniso: int, materials: np.ndarray, n: int, seed: int,
            engine: Engine | None = None) -> int:
    """The prefilter's orders on ``n`` held-out rows per preset, drawn as ``evaluate`` draws them;
    with ``engine``, also the network's order and whether the check fits the material."""
    from xrd_agent.model.evaluate import preset_set

    times: list[float] = []
    for preset in ("realistic", "instrument"):
        ts = preset_set(lib, lib.heldout(), preset, 1, seed)
        rows = np.sort(np.random.default_rng(seed).choice(len(ts.y), min(n, len(ts.y)), replace=False))
        probs = engine.predict_proba(ts.X[rows]) if engine is not None else None
        places = []
        for k, (scan, c) in enumerate(zip(as_scans(ts.X[rows]), ts.y[rows])):
            t0 = time.perf_counter()
            res = checker.index.search(observe_scan(scan), k_aniso)
            times.append(time.perf_counter() - t0)
            places.append(_places(res, None if probs is None else probs[k], checker, materials, int(materials[c])))
        print(f"held-out {preset} ({rows.size} rows of {len(ts.y)}, seed {seed}; anisotropic stage: the {k_aniso} "
              f"best screened references and the {prefilter.ISO_KEPT} best isotropic hits searched)")
        _report(places, checker)
    s = 1000 * np.array(times)
    print(f"search time, with anisotropic stage: p50 {np.percentile(s, 50):.0f} ms, p99 {np.percentile(s, 99):.0f} ms "
          f"({s.size} scans)")
    print(f"load average {os.getloadavg()[0]:.1f}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100, help="classes drawn (default 100)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--anisotropic", type=int, default=None,
                    help="screened references searched anisotropically (default: the check's VerifyPolicy.anisotropic)")
    ap.add_argument("--ablation", action="store_true",
                    help="the as-synthesized preset with each of its effects off in turn, instead of the four conditions")
    ap.add_argument("--heldout", type=int, default=0, metavar="N",
                    help="N held-out determinations per preset (realistic, instrument) instead of library classes")
    ap.add_argument("--network", action="store_true",
                    help="also the shipped network's order and the union the check fits (loads TensorFlow)")
    args = ap.parse_args()
    lib = Library.load()
    engine = None
    if args.network:
        from xrd_agent.model.engine import Engine

        engine = Engine(library=lib).load()
    checker = checker_for(lib)
    k_aniso = checker.policy.anisotropic if args.anisotropic is None else args.anisotropic
    materials = np.asarray(lib.materials.of_class)
    if args.heldout:  # the held-out rows carry their own noise: no bank to load
        return heldout(lib, checker, k_aniso, materials, args.heldout, args.seed, engine)
    bank = NoiseBank.load(default_bank_path())
    classes = np.random.default_rng(args.seed).choice(len(lib), min(args.n, len(lib)), replace=False)
    print(f"{len(classes)} classes of {len(lib)} (seed {args.seed}); anisotropic stage: the {k_aniso} best screened "
          f"references and the {prefilter.ISO_KEPT} best isotropic hits searched")
    t_iso: list[float] = []
    t_both: list[float] = []
    for name, options in (ablations() if args.ablation else CONDITIONS).items():
        places, widths, broad = [], [], []
        for c in classes:
            spectra = synthesize_class(lib, int(c), 1, seed=[99], options=options, bank=bank, gate=GateConfig())
            obs = observe_scan(as_scans(spectra)[0])
            widths.append(obs.line_fwhm or 0.0)
            broad.append(broad_fwhm(obs) is not None)
            t0 = time.perf_counter()
            checker.index.search(obs)
            t1 = time.perf_counter()
            res = checker.index.search(obs, k_aniso)
            t2 = time.perf_counter()
            t_iso.append(t1 - t0)
            t_both.append(t2 - t1)
            probs = engine.predict_proba(spectra)[0] if engine is not None else None
            places.append(_places(res, probs, checker, materials, int(materials[c])))
        w = np.array(widths)
        print(f"{name} (line width the check measures: median {np.median(w):.2f} deg, max {w.max():.2f} deg, "
              f"{sum(broad)} of {w.size} broader than the laboratory bound)")
        _report(places, checker)
    for label, t in (("isotropic", t_iso), ("with anisotropic stage", t_both)):
        s = 1000 * np.array(t)
        print(f"search time, {label}: p50 {np.percentile(s, 50):.0f} ms, p99 {np.percentile(s, 99):.0f} ms "
              f"({s.size} scans)")
    print(f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
