"""The crystallinity table of ``xrd-agent evaluate``: simulated products with known crystalline
fractions (``xrd_agent.testing.products``, frameworks held out of the calibration and fresh
seeds) and what the measured scans in tests/data get. No model needed: the estimate and the
verdict do not read the network."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from xrd_agent import crystallinity as C
from xrd_agent.identification import Flag
from xrd_agent.model.flags import VERDICT_FIRST_MAX_DEG, FlagPolicy, crystallinity_verdict
from xrd_agent.pattern import Coverage
from xrd_agent.testing import products as P

BINS = ((0.0, 0.1), (0.1, 0.2), (0.2, 0.35), (0.35, 0.5), (0.5, 0.7), (0.7, 0.85), (0.85, 1.0001))
#: Seed of the evaluation products: not the calibration's (2026).
SEED = 7070


def _coverage(two_theta: np.ndarray) -> Coverage:
    from xrd_agent.preprocess import coverage_of
    from xrd_agent.pattern import GRID_POINTS, MODEL_GRID

    mask = coverage_of(np.sort(np.asarray(two_theta, float)))
    hits = np.flatnonzero(mask)
    if hits.size == 0:
        return Coverage(float("nan"), float("nan"), 0.0)
    return Coverage(float(MODEL_GRID[hits[0]]), float(MODEL_GRID[hits[-1]]), hits.size / GRID_POINTS)


def simulated(n: int = 240, seed: int = SEED, policy: FlagPolicy = FlagPolicy(),
              names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """MAE, failed-flagged and false-alarm rates, and a per-bin table, on ``n`` fresh products
    (held-out frameworks by default)."""
    items = P.products(n, seed, names=names if names is not None else P.HELD_OUT)
    est = [C.estimate(p.two_theta, p.counts) for p in items]
    truth = np.array([p.fraction for p in items])
    frac = np.array([e.fraction for e in est])
    unc = np.array([e.uncertainty for e in est])
    verdicts = [crystallinity_verdict(e, _coverage(p.two_theta), policy) for e, p in zip(est, items)]
    amorphous = np.array([v is Flag.AMORPHOUS for v in verdicts])
    low = np.array([v is Flag.LOW_CRYSTALLINITY for v in verdicts])
    failed, crystalline = truth <= 0.10, truth >= 0.50
    rows = []
    for lo, hi in BINS:
        s = (truth >= lo) & (truth < hi)
        if s.any():
            rows.append({"bin": f"{lo:.2f}-{min(hi, 1.0):.2f}", "n": int(s.sum()),
                         "mean_estimate": float(frac[s].mean()), "mae": float(np.abs(frac[s] - truth[s]).mean()),
                         "mean_uncertainty": float(unc[s].mean()),
                         "amorphous": float(amorphous[s].mean()), "low_crystallinity": float(low[s].mean())})
    inside = np.abs(frac - truth) <= unc
    return {"n": n, "seed": seed, "frameworks": sorted({p.framework for p in items}),
            "mae": float(np.abs(frac - truth).mean()),
            "failed_flagged": float(amorphous[failed].mean()) if failed.any() else float("nan"),
            "failed_n": int(failed.sum()),
            "false_alarms": float((amorphous | low)[crystalline].mean()) if crystalline.any() else float("nan"),
            "false_amorphous": float(amorphous[crystalline].mean()) if crystalline.any() else float("nan"),
            "crystalline_n": int(crystalline.sum()),
            "within_1sigma": float(inside.mean()),
            "thresholds": {"amorphous_below": policy.amorphous_below,
                           "low_crystallinity_below": policy.low_crystallinity_below},
            "bins": rows}


def real_scans(paths: Iterable[Path], policy: FlagPolicy = FlagPolicy()) -> list[dict[str, Any]]:
    """What each measured scan gets: estimate, uncertainty, verdict, or the rejection."""
    from xrd_agent import preprocess
    from xrd_agent.errors import ScanError
    from xrd_agent.readers import read_scan
    from xrd_agent.scan import Wavelength

    out = []
    for path in paths:
        row: dict[str, Any] = {"file": str(path)}
        try:
            scan = read_scan(path, wavelength=Wavelength.for_anode("Cu"))  # applies where the file does not say
            tt = preprocess.cu_two_theta(scan)
            pattern, _ = preprocess.prepare_raw(scan)
        except ScanError as exc:
            row["rejected"] = exc.code
            out.append(row)
            continue
        e = C.estimate(*preprocess.measured_points(tt, scan.intensity))
        v = crystallinity_verdict(e, pattern.coverage, policy)
        judged = pattern.coverage.fraction >= policy.min_coverage and pattern.coverage.first <= VERDICT_FIRST_MAX_DEG
        row.update({"span": [round(float(tt.min()), 1), round(float(tt.max()), 1)],
                    "coverage": round(pattern.coverage.fraction, 3), "fraction": round(e.fraction, 3),
                    "uncertainty": round(e.uncertainty, 3),
                    "verdict": v.value if v else ("crystalline" if judged else "not judged (coverage)")})
        out.append(row)
    return out


def default_real_paths(root: Path) -> list[Path]:
    """The measured scans in tests/data (fixtures/scans, real-scans/mof, real-scans/byo-cif)."""
    data = root / "tests" / "data"
    keep = {".brml", ".raw", ".uxd", ".xrdml", ".xy", ".csv"}
    paths = sorted(p for p in (data / "fixtures" / "scans").glob("*") if p.suffix.lower() in keep)
    paths += sorted(p for p in (data / "real-scans" / "mof").glob("*") if p.suffix.lower() in keep)
    paths += sorted((data / "real-scans" / "byo-cif").glob("*/data.*"))
    return paths


def markdown(sim: dict[str, Any], real: list[dict[str, Any]] | None = None, command: str = "") -> str:
    t = sim["thresholds"]
    lines = [f"Crystallinity on {sim['n']} simulated products (frameworks {', '.join(sim['frameworks'])}; "
             f"seed {sim['seed']}; amorphous below {t['amorphous_below']}, low_crystallinity below "
             f"{t['low_crystallinity_below']}):", ""]
    if command:
        lines += [f"    {command}", ""]
    lines += [f"- mean absolute error {sim['mae']:.3f}; estimate within its 1-sigma in {100 * sim['within_1sigma']:.0f} %",
              f"- failed (<= 10 % crystalline) flagged amorphous: {100 * sim['failed_flagged']:.1f} % of {sim['failed_n']}",
              f"- crystalline (>= 50 %) flagged amorphous or low_crystallinity: {100 * sim['false_alarms']:.1f} % "
              f"(amorphous {100 * sim['false_amorphous']:.1f} %) of {sim['crystalline_n']}", "",
              "| crystalline fraction | n | mean estimate | MAE | mean uncertainty | amorphous | low_crystallinity |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in sim["bins"]:
        lines.append(f"| {r['bin']} | {r['n']} | {r['mean_estimate']:.3f} | {r['mae']:.3f} | {r['mean_uncertainty']:.3f} | "
                     f"{100 * r['amorphous']:.0f} % | {100 * r['low_crystallinity']:.0f} % |")
    if real:
        lines += ["", "| measured scan | 2-theta | coverage | crystalline fraction | verdict |", "| --- | --- | --- | --- | --- |"]
        for r in real:
            name = r["file"].split("tests/data/")[-1]
            if "rejected" in r:
                lines.append(f"| {name} | | | | rejected: {r['rejected']} |")
            else:
                lines.append(f"| {name} | {r['span'][0]}-{r['span'][1]} | {100 * r['coverage']:.0f} % | "
                             f"{r['fraction']:.2f} +- {r['uncertainty']:.2f} | {r['verdict']} |")
    return "\n".join(lines) + "\n"
