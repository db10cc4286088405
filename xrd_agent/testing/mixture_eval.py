"""The mixture table of ``xrd-agent evaluate``: two-phase mixtures (10-90 % by weight) and single
phases simulated from first principles from the lab's byo-cif structures
(:mod:`xrd_agent.testing.powder`), and the measured two-phase scans in
tests/data/real-scans/byo-cif, through the physics check's composition. No model needed: the
check runs without the network's prior.

The simulated cases are the ones ``benchmarks/bench_verify.py --synthetic N`` has always drawn
(same generator, seed 7, same scan range), so figures stay comparable across runs."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xrd_agent.model.augment import tied_axes
from xrd_agent.scan import Wavelength

if TYPE_CHECKING:  # the CIF parser and the check load pymatgen/scipy: only when a table is made
    from xrd_agent.library.cif import ParsedCif
    from xrd_agent.verify.check import Checker, Verification
    from xrd_agent.verify.observed import Observed

#: The bench's seed: the same cases as every earlier ``bench_verify.py --synthetic`` figure.
SEED = 7
ROOT = Path(__file__).resolve().parents[2]
BYO = ROOT / "tests" / "data" / "real-scans" / "byo-cif"
CU = Wavelength.for_anode("Cu")
#: The simulated scans' 2-theta (deg, Cu) and the d-range of the references fitted to them.
TWO_THETA = (10.0, 90.0, 0.02)
REFERENCE_TWO_THETA = (5.0, 100.0)
#: The measured scans' library: every byo-cif CIF over the lab's 5-165 deg.
LIBRARY_TWO_THETA = (5.0, 165.0)

Emit = Callable[[str], None]
YES = {True: "yes", False: "no"}


def structures(names: Sequence[str] | None = None, folder: Path = BYO) -> dict[str, ParsedCif]:
    """The byo-cif CIFs parsed, by file stem, in the bench's order (sorted by path); ``names``
    keeps only those stems (a small library for a fast run)."""
    from xrd_agent.library.cif import parse_cif

    parsed = {p.stem: parse_cif(p.read_text(), p.name) for p in sorted(folder.glob("*/*.cif"))}
    if names is not None:
        unknown = set(names) - set(parsed)
        if unknown:
            raise ValueError(f"no byo-cif structure named {sorted(unknown)}")
        parsed = {k: v for k, v in parsed.items() if k in set(names)}
    return parsed


def same_structure(p: ParsedCif, q: ParsedCif, tol: float = 0.005) -> bool:
    """Two CIFs of one structure (formula, space group, Niggli cell within ``tol``): their
    mixture is one phase to diffraction (the lab's Ti-bcc and the beta phase of Ti-2448 are)."""
    return (p.formula == q.formula and p.space_group.replace(" ", "") == q.space_group.replace(" ", "")
            and bool(np.allclose(p.niggli, q.niggli, rtol=tol)))


def checker_for_structures(parsed: dict[str, ParsedCif]) -> Checker:
    """A physics check whose references are ``parsed`` (refcode = file stem), |F|^2 absolute."""
    from xrd_agent.library.fitdata import cell_mass, d_range, reflections
    from xrd_agent.verify.check import Checker
    from xrd_agent.verify.references import build_reference

    d_min, d_max = d_range(*REFERENCE_TWO_THETA)
    refs = []
    for i, (k, p) in enumerate(parsed.items()):
        r = reflections(p.crystal, d_min, d_max)
        refs.append(build_reference(i, k, k, np.array(p.cell), r.hkl, r.f2, cell_mass(p.crystal),
                                    p.crystal.volume, True))
    return Checker(refs)


def _phases(v: Verification) -> list[dict[str, Any]]:
    return [{"refcode": p.refcode,
             "weight_fraction": None if p.weight_fraction is None else float(p.weight_fraction),
             "uncertainty": None if p.uncertainty is None else float(p.uncertainty)} for p in v.phases]


def _share(phases: list[dict[str, Any]], refcodes: set[str]) -> tuple[float | None, float | None] | None:
    """Weight fraction and uncertainty the composition gives a structure (its CIF or a CIF of the
    same structure); None when it is not in the composition."""
    hits = [p for p in phases if p["refcode"] in refcodes]
    if not hits:
        return None
    if len(hits) > 1 or hits[0]["weight_fraction"] is None:  # two copies: their covariance is not reported
        ws = [p["weight_fraction"] for p in hits]
        return (None if None in ws else float(sum(ws))), None
    return hits[0]["weight_fraction"], hits[0]["uncertainty"]


def _times(seconds: Sequence[float]) -> dict[str, float]:
    s = np.asarray(seconds, float)
    if s.size == 0:
        return {"p50": float("nan"), "p99": float("nan")}
    return {"p50": float(np.percentile(s, 50)), "p99": float(np.percentile(s, 99))}


def simulated(n: int, seed: int = SEED, checker: Checker | None = None, names: Sequence[str] | None = None,
              emit: Emit | None = None) -> dict[str, Any]:
    """``n`` two-phase mixtures and ``n`` single phases, per case and summed up.

    Case i: phases a and b drawn from the structures, weight fraction w of a uniform in
    0.1-0.9, zero shift within +-0.1 deg, noise seed i; then a alone with each independent axis
    strained by 0.97-1.03 (axes of equal length together) and noise seed 1000 + i. A mixture is found when both a and b are in the
    composition; its error is |w_a reported - w|, and it is "within 2 sigma" when that error
    is at most twice the reported uncertainty of w_a. A phase counts as found when the
    composition holds it or a CIF of the same structure (:func:`same_structure`: the lab's
    Ti-bcc for the beta phase of Ti-2448); pairs of one structure twice are one phase to
    diffraction and are not scored as mixtures. ``both_found`` keeps the bench's older count
    (both file stems in the composition, every pair). ``names`` restricts the structures (and
    the library, unless ``checker`` is given) to a few for a fast run."""
    from xrd_agent.library.fitdata import cell_mass
    from xrd_agent.testing.powder import Component, powder_scan
    from xrd_agent.verify.observed import observe

    parsed = structures(names)
    if checker is None:
        checker = checker_for_structures(parsed)
    keys = list(parsed)
    if len(keys) < 2:
        raise ValueError("a mixture needs at least two structures")
    twins = {k: {j for j in keys if same_structure(parsed[k], parsed[j])} for k in keys}
    rng = np.random.default_rng(seed)
    tt = np.arange(*TWO_THETA)
    cases: list[dict[str, Any]] = []
    seconds: list[float] = []
    for i in range(n):
        a, b = rng.choice(len(keys), 2, replace=False)
        ka, kb = keys[a], keys[b]
        w = float(rng.uniform(0.1, 0.9))
        ma, mb = cell_mass(parsed[ka].crystal), cell_mass(parsed[kb].crystal)
        comps = [Component(parsed[ka].crystal, ma, w), Component(parsed[kb].crystal, mb, 1 - w)]
        y = powder_scan(comps, tt, zero=float(rng.uniform(-0.1, 0.1)), seed=i)
        v = checker.check(observe(tt, y, CU.alpha1, CU.alpha2))
        seconds.append(v.seconds)
        phases = _phases(v)
        same = kb in twins[ka]
        share_a, share_b = _share(phases, twins[ka]), _share(phases, twins[kb])
        found = not same and share_a is not None and share_b is not None
        wa, ua = share_a if found else (None, None)
        error = None if wa is None else abs(wa - w)
        within = None if (error is None or ua is None) else bool(error <= 2 * ua)
        # the single phase strained within its symmetry: axes of equal length (cubic, the a = b of
        # a hexagonal or tetragonal cell) move together, as a real cell does; strained apart
        # they made a cubic phase orthorhombic, which no symmetry-kept fit can follow
        draw = rng.uniform(0.97, 1.03, 3)
        single = Component(parsed[ka].crystal, ma, 1.0, tuple(float(x) for x in draw[tied_axes(parsed[ka].crystal.lattice)]))
        y1 = powder_scan([single], tt, zero=float(rng.uniform(-0.1, 0.1)), seed=1000 + i)
        v1 = checker.check(observe(tt, y1, CU.alpha1, CU.alpha2))
        seconds.append(v1.seconds)
        refcodes = {p["refcode"] for p in phases}
        case = {"case": i, "a": ka, "b": kb, "w_a": w, "phases": phases, "same_structure": same, "found": found,
                "both_found": ka in refcodes and kb in refcodes,
                "error": error, "within_2sigma": within, "seconds": v.seconds,
                "single": {"refcode": ka, "strain": [float(x) for x in single.strain],
                           "phases": _phases(v1), "found": bool(v1.phases) and v1.phases[0].refcode in twins[ka],
                           "mixture": bool(v1.mixture), "seconds": v1.seconds}}
        cases.append(case)
        if emit is not None:
            emit(f"  mixture {i}: {ka}+{kb} w={w:.2f} found {sorted(refcodes)} w_a={wa}  "
                 f"single {ka} -> {[p['refcode'] for p in case['single']['phases']]}")
    errors = [c["error"] for c in cases if c["error"] is not None]
    judged = [c["within_2sigma"] for c in cases if c["within_2sigma"] is not None]
    distinct = [c for c in cases if not c["same_structure"]]
    return {"n": n, "seed": seed, "structures": keys,
            "two_theta": list(TWO_THETA),
            "both_found": sum(c["both_found"] for c in cases),
            "distinct_n": len(distinct), "found": sum(c["found"] for c in cases),
            "error_mean": float(np.mean(errors)) if errors else float("nan"),
            "error_max": float(np.max(errors)) if errors else float("nan"),
            "within_2sigma": float(np.mean(judged)) if judged else float("nan"),
            "within_2sigma_n": len(judged),
            "singles_called_mixtures": sum(c["single"]["mixture"] for c in cases),
            "singles_found": sum(c["single"]["found"] for c in cases),
            "seconds": _times(seconds), "cases": cases}


def multiphase(n: int, k: int, seed: int = SEED, checker: Checker | None = None,
               names: Sequence[str] | None = None, emit: Emit | None = None) -> dict[str, Any]:
    """``n`` mixtures of ``k`` different structures (no two of one structure), weight fractions
    u_i / sum(u) with u_i uniform in 0.2-1 (so every phase holds at least 0.2 / (0.2 + k - 1) of
    the sample: 9 % of three, 6 % of four), zero shift within +-0.1 deg, noise seed 2000 + i.
    Per scan: how many of the k phases the composition holds (a CIF of the same structure
    counts), how many the Top-5 holds (the check's first five structures, as the search-match
    engine lists a lab's library: a phase the composition misses may still be there), how many
    phases it adds that are not there, and the weight-fraction error of each phase found. A
    lab's three- and four-phase products are what this scores."""
    from xrd_agent.library.fitdata import cell_mass
    from xrd_agent.testing.powder import Component, powder_scan
    from xrd_agent.verify.observed import observe

    parsed = structures(names)
    if checker is None:
        checker = checker_for_structures(parsed)
    keys = list(parsed)
    twins = {key: {j for j in keys if same_structure(parsed[key], parsed[j])} for key in keys}
    distinct = [key for key in keys if min(twins[key]) == key]  # one file per structure
    if len(distinct) < k:
        raise ValueError(f"a {k}-phase mixture needs {k} different structures")
    rng = np.random.default_rng(seed + 100 * k)
    tt = np.arange(*TWO_THETA)
    cases: list[dict[str, Any]] = []
    for i in range(n):
        picked = [distinct[j] for j in rng.choice(len(distinct), k, replace=False)]
        u = rng.uniform(0.2, 1.0, k)
        w = u / u.sum()
        comps = [Component(parsed[key].crystal, cell_mass(parsed[key].crystal), float(wi))
                 for key, wi in zip(picked, w)]
        y = powder_scan(comps, tt, zero=float(rng.uniform(-0.1, 0.1)), seed=2000 + i)
        v = checker.check(observe(tt, y, CU.alpha1, CU.alpha2))
        phases = _phases(v)
        shares = [_share(phases, twins[key]) for key in picked]
        errors = [None if s is None or s[0] is None else abs(s[0] - float(wi)) for s, wi in zip(shares, w)]
        truth = set().union(*(twins[key] for key in picked))
        top5 = list(dict.fromkeys(min(twins[c.refcode]) for c in v.candidates))[:5]
        case = {"case": i, "truth": [{"refcode": key, "weight_fraction": float(wi)} for key, wi in zip(picked, w)],
                "phases": phases, "found": sum(s is not None for s in shares), "top5": top5,
                "in_top5": sum(min(twins[key]) in top5 for key in picked),
                "extra": sum(p["refcode"] not in truth for p in phases),
                "errors": errors, "seconds": v.seconds}
        cases.append(case)
        if emit is not None:
            emit(f"  {k} phases {i}: {' + '.join(f'{key} {wi:.2f}' for key, wi in zip(picked, w))} -> "
                 f"{_composition(phases)}")
    errs = [e for c in cases for e in c["errors"] if e is not None]
    return {"n": n, "k": k, "seed": seed, "two_theta": list(TWO_THETA),
            "phases_found": sum(c["found"] for c in cases), "phases_total": n * k,
            "all_found": sum(c["found"] == k for c in cases),
            "phases_in_top5": sum(c["in_top5"] for c in cases),
            "all_in_top5": sum(c["in_top5"] == k for c in cases),
            "extra": sum(c["extra"] for c in cases),
            "error_mean": float(np.mean(errs)) if errs else float("nan"),
            "error_max": float(np.max(errs)) if errs else float("nan"),
            "seconds": _times([c["seconds"] for c in cases]), "cases": cases}


def multiphase_markdown(runs: Sequence[dict[str, Any]], command: str = "") -> str:
    """One summary line per phase count, then one row per simulated scan."""
    if not runs:
        return ""
    lines = ["Multi-phase mixtures (structures of tests/data/real-scans/byo-cif, each phase at least "
             "9 % of three or 6 % of four; Cu, 2-theta "
             f"{runs[0]['two_theta'][0]:g}-{runs[0]['two_theta'][1]:g} deg):", ""]
    if command:
        lines += [f"    {command}", ""]
    lines += ["| phases | scans | phases found | scans with every phase | phases in the Top-5 | scans with every phase "
              "in the Top-5 | phases reported that are not there | weight-fraction error mean / max (points) "
              "| check p50 / p99 (s) |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in runs:
        t = r["seconds"]
        lines.append(f"| {r['k']} | {r['n']} | {r['phases_found']}/{r['phases_total']} | {r['all_found']}/{r['n']} | "
                     f"{r['phases_in_top5']}/{r['phases_total']} | {r['all_in_top5']}/{r['n']} | "
                     f"{r['extra']} | {_pct(r['error_mean'])} / {_pct(r['error_max'])} | "
                     f"{t['p50']:.1f} / {t['p99']:.1f} |")
    lines += ["", "| phases | case | true composition | reported composition | Top-5 |",
              "| --- | --- | --- | --- | --- |"]
    for r in runs:
        for c in r["cases"]:
            true = ", ".join(f"{t['refcode']} {t['weight_fraction']:.3f}" for t in c["truth"])
            lines.append(f"| {r['k']} | {c['case']} | {true} | {_composition(c['phases'])} | "
                         f"{', '.join(c['top5'])} |")
    return "\n".join(lines) + "\n"


def library_checker(folder: Path = BYO) -> Checker:
    """The check over a library built from every CIF under ``folder`` together (5-165 deg, Cu),
    as ``bench_verify.py --byo`` builds it; the temporary library is removed once loaded."""
    from xrd_agent.library.artifact import Library
    from xrd_agent.library.build import build_from_cif_dir
    from xrd_agent.verify.stage import checker_for

    tmp = Path(tempfile.mkdtemp(prefix="xrd-mixtures-"))
    try:
        for p in folder.glob("*/*.cif"):
            shutil.copy(p, tmp / p.name)
        build_from_cif_dir(tmp, tmp / "lib", workers=1, progress=False, two_theta=LIBRARY_TWO_THETA)
        return checker_for(Library.load(tmp / "lib"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def measured_sum(parts: Sequence[tuple[Path, float]], step: float = 0.02, max_span: float = 70.0) -> Observed:
    """Measured single-phase scans (``(file, share)``) added together, each at its share of the
    diffraction signal: interpolated onto one ``step`` grid over the range all of them cover (at
    most ``max_span`` deg), each scaled so that its net signal (above the prefilter's rough
    background) is its share. Real intensities, profiles, backgrounds and noise, and the misfit
    the lab's CIFs leave on them, which first-principles mixtures lack."""
    from xrd_agent.readers import read_scan
    from xrd_agent.verify.observed import observe, rough_background

    scans = []
    for path, share in parts:
        s = read_scan(path, wavelength=CU)
        scans.append((np.asarray(s.two_theta, float), np.asarray(s.intensity, float), share))
    lo = max(tt[0] for tt, _, _ in scans)
    grid = np.arange(lo, min(min(tt[-1] for tt, _, _ in scans), lo + max_span), step)
    mix = np.zeros(grid.size)
    for tt, y, share in scans:
        yi = np.interp(grid, tt, y)
        o = observe(grid, yi, CU.primary, CU.alpha2)
        mix += share * yi / float(np.sum(np.maximum(o.y - rough_background(o), 0.0)))
    return observe(grid, mix * 1e5, CU.primary, CU.alpha2)


def real(folder: Path = BYO, checker: Checker | None = None) -> list[dict[str, Any]]:
    """Each measured two-phase scan (``biphase-*`` folders: its CIFs and one .csv scan): the
    composition, and whether both phases are in it and in the Top-5."""
    from xrd_agent.readers import read_scan
    from xrd_agent.verify.stage import observe_scan

    if checker is None:
        checker = library_checker(folder)
    # the library's material name of each class: two CIFs of one structure (the lab's Ti-bcc and
    # the beta phase of Ti-2448 are both "Titanium", Im-3m, a = 3.282) are one answer
    material = {r.refcode: r.name for r in checker.refs if r is not None}
    out = []
    for sub in sorted(p for p in folder.glob("biphase-*") if p.is_dir()):
        truth = sorted(c.stem for c in sub.glob("*.cif"))
        scan = read_scan(next(sub.glob("*.csv")), wavelength=CU)
        v = checker.check(observe_scan(scan))
        ranked = [c.refcode for c in v.candidates]
        phases = _phases(v)
        names = {material.get(p["refcode"], p["refcode"]) for p in phases}
        out.append({"scan": sub.name, "truth": truth, "phases": phases, "top5": ranked[:5],
                    "in_composition": set(truth) <= {p["refcode"] for p in phases},
                    "in_composition_material": {material.get(t, t) for t in truth} <= names,
                    "in_top5": set(truth) <= set(ranked[:5]),
                    "in_top5_material": ({material.get(t, t) for t in truth}
                                         <= {material.get(r, r) for r in ranked[:5]}),
                    "seconds": v.seconds})
    return out


def _pct(x: float | None) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{100 * x:.1f}"


def _composition(phases: list[dict[str, Any]]) -> str:
    parts = []
    for p in phases:
        w, u = p["weight_fraction"], p["uncertainty"]
        if w is None:
            parts.append(p["refcode"])
        else:
            parts.append(f"{p['refcode']} {w:.3f}" + ("" if u is None else f" ± {u:.3f}"))
    return ", ".join(parts) or "none"


def markdown(sim: dict[str, Any] | None, real: list[dict[str, Any]] | None = None, command: str = "") -> str:
    """The summary, one row per simulated case and one per measured scan, with the command."""
    lines: list[str] = []
    if sim is not None and sim["n"]:
        n = sim["n"]
        lines += [f"Mixtures on {n} simulated two-phase scans and {n} single phases (structures of "
                  f"tests/data/real-scans/byo-cif; seed {sim['seed']}; Cu, 2-theta {sim['two_theta'][0]:g}-"
                  f"{sim['two_theta'][1]:g} deg):", ""]
        if command:
            lines += [f"    {command}", ""]
        distinct, t = sim["distinct_n"], sim["seconds"]
        lines += [f"- both phases found: {sim['found']}/{distinct} pairs of two different structures "
                  f"({n - distinct} pairs were one structure twice; a CIF of the same structure counts as the "
                  f"phase); both file stems in the composition, as bench_verify counted: {sim['both_found']}/{n}",
                  f"- weight-fraction error where both were found: mean {_pct(sim['error_mean'])}, "
                  f"max {_pct(sim['error_max'])} points",
                  f"- true weight fraction within 2 reported uncertainties: {_pct(sim['within_2sigma'])} % "
                  f"of {sim['within_2sigma_n']}",
                  f"- single phases (strained 0.97-1.03 within their symmetry) called mixtures: "
                  f"{sim['singles_called_mixtures']}/{n}; reported as the first phase: {sim['singles_found']}/{n}",
                  f"- check time per scan p50 {t['p50']:.1f} s, p99 {t['p99']:.1f} s", "",
                  "| case | true (weight fraction of the first) | reported composition | both found | error (points) "
                  "| single phase: reported |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for c in sim["cases"]:
            err = "–" if c["error"] is None else f"{100 * c['error']:.1f}" + (
                "" if c["within_2sigma"] is None else (" (≤ 2σ)" if c["within_2sigma"] else " (> 2σ)"))
            same = " (one structure twice)" if c["same_structure"] else ""
            lines.append(f"| {c['case']} | {c['a']} {c['w_a']:.3f} + {c['b']}{same} | "
                         f"{_composition(c['phases'])} | {'–' if c['same_structure'] else YES[c['found']]} | {err} | "
                         f"{c['single']['refcode']}: "
                         f"{_composition(c['single']['phases'])} |")
    elif command:
        lines += [f"    {command}"]
    if real:
        lines += ["", "Measured two-phase scans (library of every byo-cif CIF, 5-165 deg):", "",
                  "| measured two-phase scan | true phases | reported composition | both in composition "
                  "| ... as materials | both in Top-5 | ... as materials |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in real:
            lines.append(f"| {r['scan']} | {' + '.join(r['truth'])} | {_composition(r['phases'])} | "
                         f"{YES[r['in_composition']]} | {YES[r['in_composition_material']]} | {YES[r['in_top5']]} | "
                         f"{YES[r['in_top5_material']]} |")
    return "\n".join(lines) + "\n"
