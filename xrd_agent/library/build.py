"""Building a library: CIFs in, a :class:`~xrd_agent.library.artifact.Library` folder out.

Structures are parsed and simulated in worker processes; a CIF that cannot be read or
simulated is recorded in the manifest's ``skipped`` list and never stops the build.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from xrd_agent.errors import LibraryError, StructureError
from xrd_agent.library.artifact import Library, Sticks
from xrd_agent.library.simulate import CU_KA1, SimulationSettings, simulate
from xrd_agent.peakshape import PeakProfile

DEFAULT_COUNT = 1012
LIBRARY_VERSION = "coremof2019-default-1"
SAME_PHASE_RULE = ("same material when the Niggli-reduced cell volumes and the sorted Niggli "
                   "cell lengths of the two determinations agree within 5 %")
NIGGLI_FILE = "niggli.json"


@dataclass(frozen=True)
class Job:
    key: str  # refcode or file stem
    source: str  # e.g. "2019-ASR/FIQCEN_clean.cif"
    text: str


@dataclass(frozen=True, eq=False)
class Outcome:
    key: str
    source: str
    meta: dict[str, Any] | None = None
    sticks: Sticks | None = None
    pattern: np.ndarray | None = None
    niggli: tuple[float, ...] | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class BuildReport:
    library: Library
    heldout: Library | None
    skipped: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    simulated: int = 0


def simulate_job(job: Job, settings: SimulationSettings = SimulationSettings()) -> Outcome:
    """Parse and simulate one CIF in a worker; every failure becomes a reason, never a crash."""
    from xrd_agent.library.cif import parse_cif

    t0 = time.perf_counter()
    try:
        parsed = parse_cif(job.text, job.source)
        sim = simulate(parsed.crystal, settings)
    except StructureError as exc:
        return Outcome(job.key, job.source, error=str(exc), seconds=time.perf_counter() - t0)
    except Exception as exc:  # a bug in a third-party parser must not end a 10,000-CIF build
        return Outcome(job.key, job.source, error=f"{job.source}: unexpected {type(exc).__name__}: {exc}"[:300],
                       seconds=time.perf_counter() - t0)
    meta = {
        "formula": parsed.formula,
        "metals": list(parsed.metals),
        "cell": list(parsed.cell),
        "volume": parsed.volume,
        "space_group": parsed.space_group,
        "atoms": len(parsed.crystal),
        "common_name": parsed.common_name,
        "cif_doi": parsed.doi,
    }
    sticks = Sticks(sim.two_theta.astype(np.float32), sim.intensity.astype(np.float32), sim.hkl.astype(np.int16))
    return Outcome(job.key, job.source, meta, sticks, sim.pattern, parsed.niggli, seconds=time.perf_counter() - t0)


def niggli_job(job: Job) -> Outcome:
    """Only the Niggli cell of one CIF (what :func:`store_niggli` needs; no simulation)."""
    from xrd_agent.library.cif import parse_cif

    t0 = time.perf_counter()
    try:
        parsed = parse_cif(job.text, job.source)
    except Exception as exc:  # StructureError or a third-party parser bug: a reason, not a crash
        return Outcome(job.key, job.source, error=f"{job.source}: {exc}"[:300], seconds=time.perf_counter() - t0)
    return Outcome(job.key, job.source, niggli=parsed.niggli, seconds=time.perf_counter() - t0)


def write_niggli(out: str | Path, cells: dict[str, tuple[float, ...]]) -> Path:
    """``niggli.json`` beside a library: refcode -> Niggli cell of its primitive lattice, the cells
    the held-out rule (:data:`SAME_PHASE_RULE`) compares. :mod:`xrd_agent.materials` groups the
    library's classes into materials with the same rule; entries.json and the class order stay."""
    path = Path(out) / NIGGLI_FILE
    doc = {"rule": SAME_PHASE_RULE, "cells": {k: [round(float(x), 4) for x in v] for k, v in sorted(cells.items())}}
    path.write_text(json.dumps(doc, indent=0) + "\n")
    return path


def store_niggli(directory: str | Path, workers: int = 2, progress: bool = True) -> tuple[int, list[str]]:
    """Add ``niggli.json`` to a built CoRE MOF library (the shipped one was built before the file
    existed): read each class's CIF again from core-mof, nothing is simulated. Returns (cells
    stored, reasons of the CIFs that failed)."""
    from xrd_agent.library.coremof import iter_cifs

    require_build_extra()
    lib = Library.load(directory)
    wanted: dict[str, set[str]] = {}
    keys: dict[tuple[str, str], str] = {}
    for e in lib.entries:
        dataset, _, name = str(e.get("source", "")).partition("/")
        if name.endswith(".cif"):
            wanted.setdefault(dataset, set()).add(name[:-4])
            keys[(dataset, name[:-4])] = e["refcode"]
    jobs = (Job(keys[(d, f)], f"{d}/{f}.cif", text) for d, f, text in iter_cifs(wanted))
    cells, failed = {}, []
    for o in run_jobs(jobs, len(keys), workers, progress, desc="Niggli cells", func=niggli_job):
        if o.ok and o.niggli is not None:
            cells[o.key] = o.niggli
        else:
            failed.append(o.error or o.key)
    write_niggli(directory, cells)
    return len(cells), failed


def require_build_extra() -> None:
    """Fail at once, with the install hint, when the library-building extra is missing
    (rather than skipping every CIF one by one)."""
    import importlib.util

    missing = [m for m in ("pymatgen", "spglib", "tqdm") if importlib.util.find_spec(m) is None]
    if missing:
        raise LibraryError(f"building a library needs {', '.join(missing)}: pip install 'xrd-agent[library]'")


#: Workers are spawned, not forked: a fork of a process that already runs TensorFlow's or
#: OpenBLAS's threads (evaluate, the test suite) can crash the child, which would then be
#: reported as a CIF that kills the simulator (seen once in the test suite).
_SPAWN = multiprocessing.get_context("spawn")


def run_jobs(jobs: Iterable[Job], total: int, workers: int = 2, progress: bool = True,
             desc: str = "simulating", func: Callable[[Job], Outcome] = simulate_job) -> Iterator[Outcome]:
    """Simulate jobs over ``workers`` processes (1: in this process), with a tqdm bar on stderr.

    Outcomes come in completion order. At most ``8 x workers`` jobs are in flight, so a full
    CoRE build never holds every CIF text in memory. A worker that dies (a crash in a C
    extension, the OOM killer) costs only the job that killed it: the jobs in flight are
    rerun one by one in fresh processes and the culprit is reported as skipped.
    """
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="cif", disable=not progress, file=sys.stderr, smoothing=0.05)
    try:
        if workers <= 1:
            for job in jobs:
                yield func(job)
                bar.update()
            return
        pending: dict[Future[Outcome], Job] = {}
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=_SPAWN)
        try:
            source = iter(jobs)
            exhausted = False
            while pending or not exhausted:
                while not exhausted and len(pending) < 8 * workers:
                    job = next(source, None)
                    if job is None:
                        exhausted = True
                    else:
                        pending[pool.submit(func, job)] = job
                if not pending:
                    break
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    job = pending.pop(future)
                    try:
                        outcome = future.result()
                    except BrokenProcessPool:
                        stranded = [job, *pending.values()]
                        pending.clear()
                        pool.shutdown(cancel_futures=True)
                        for lone in stranded:
                            yield _isolated(func, lone)
                            bar.update()
                        pool = ProcessPoolExecutor(max_workers=workers, mp_context=_SPAWN)
                        break
                    yield outcome
                    bar.update()
        finally:
            pool.shutdown(cancel_futures=True)
    finally:
        bar.close()


def _isolated(func: Callable[[Job], Outcome], job: Job) -> Outcome:
    """Run one job in a process of its own; if that process dies, the job is the culprit."""
    with ProcessPoolExecutor(max_workers=1, mp_context=_SPAWN) as solo:
        try:
            return solo.submit(func, job).result()
        except BrokenProcessPool:
            return Outcome(job.key, job.source, error=f"{job.source}: the simulation process died "
                                                      "(crash or out of memory); skipped")


def _library(entries: list[dict[str, Any]], outcomes: list[Outcome], manifest: dict[str, Any]) -> Library:
    from xrd_agent.pattern import GRID_POINTS

    patterns = np.stack([o.pattern for o in outcomes]) if outcomes else np.zeros((0, GRID_POINTS), np.float32)
    return Library.from_patterns(entries, patterns, [o.sticks for o in outcomes], manifest)


def _base_manifest(source: str, command: str | None) -> dict[str, Any]:
    p, s = PeakProfile(), SimulationSettings()
    return {
        "source": source,
        "wavelength": {"anode": "Cu", "line": "K-alpha1", "angstrom": CU_KA1},
        "profile": {"shape": "pseudo-Voigt", "caglioti_u": p.u, "caglioti_v": p.v, "caglioti_w": p.w, "eta": p.eta},
        "simulation": {"debye_waller": "none (B = 0)", "merge_tol_deg": s.merge_tol,
                       "min_relative_intensity": s.min_relative_intensity, "max_cost": s.max_cost,
                       "max_cost_meaning": "sites x reflections (Friedel half, 5-50 deg) above which a CIF is skipped"},
        "build_command": command or " ".join(["xrd-agent", *sys.argv[1:]]),
    }


# -- from a folder of CIFs ------------------------------------------------------------
def build_from_cif_dir(cif_dir: str | Path, out: str | Path, workers: int = 2, progress: bool = True,
                       command: str | None = None, two_theta: tuple[float, float] | None = None,
                       wavelength: float = CU_KA1) -> BuildReport:
    """Any CIFs, any symmetry: one class per readable file, named ``_chemical_name_common``
    or else the file stem.

    ``two_theta`` (deg) and ``wavelength`` (angstrom) are the lab's scan range: the sticks
    (Cu K-alpha1 scale) cover the same d-spacings, and the fit table (``fit.npz``, absolute
    |F|^2 as d-spacings, :mod:`xrd_agent.library.fitdata`) covers them for the physics check.
    Without a range the sticks keep 5-50 deg and the fit table covers Cu 1.5-80 deg. The
    network's grid stays 5-50 deg on the Cu scale."""
    from xrd_agent.library.fitdata import DEFAULT_CIF_DIR_TWO_THETA, build_fit_table, d_range

    require_build_extra()
    given = bool(two_theta)
    two_theta = tuple(two_theta) if two_theta else DEFAULT_CIF_DIR_TWO_THETA
    d_min, d_max = d_range(two_theta[0], two_theta[1], wavelength)
    if given:  # the sticks follow the lab's range; without it they keep the model's 5-50 deg
        cu_lo = 2.0 * np.degrees(np.arcsin(min(CU_KA1 / (2.0 * d_max), 1.0)))
        cu_hi = 2.0 * np.degrees(np.arcsin(min(CU_KA1 / (2.0 * d_min), 0.9999)))
    else:
        cu_lo, cu_hi = SimulationSettings().two_theta_min, SimulationSettings().two_theta_max
    settings = SimulationSettings(two_theta_min=float(cu_lo), two_theta_max=float(cu_hi))
    t0 = time.perf_counter()
    folder = Path(cif_dir)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".cif" and p.is_file()) if folder.is_dir() else []
    if not files:
        raise LibraryError(f"no .cif files in {folder}")
    skipped: list[dict[str, str]] = []

    def jobs() -> Iterator[Job]:
        for path in files:
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError as exc:
                skipped.append({"source": path.name, "reason": f"unreadable: {exc.strerror}"})
                continue
            yield Job(path.stem, path.name, text)

    entries, kept = [], []
    func = partial(simulate_job, settings=settings)
    done = {o.source: o for o in run_jobs(jobs(), len(files), workers, progress, func=func)}
    for o in (done[p.name] for p in files if p.name in done):  # class order = file-name order
        if not o.ok:
            skipped.append({"source": o.source, "reason": o.error or ""})
            continue
        assert o.meta is not None
        entries.append({
            "refcode": o.key, "name": o.meta["common_name"] or o.key, "aliases": [],
            **{k: o.meta[k] for k in ("formula", "metals", "cell", "volume", "space_group", "atoms")},
            "variants": [], "doi": o.meta["cif_doi"], "source": o.source,
        })
        kept.append(o)
    if not kept:
        raise LibraryError(f"none of the {len(files)} CIFs in {folder} could be simulated: "
                           + "; ".join(s["reason"] for s in skipped[:3]))
    manifest = {**_base_manifest(f"CIF folder {folder.name}", command), "version": f"cif-dir-{folder.name}",
                "skipped": skipped,
                "sticks_two_theta_cu": [round(float(cu_lo), 4), round(float(cu_hi), 4)],
                "fit_table": {"two_theta": list(two_theta), "wavelength": wavelength,
                              "d_min": round(d_min, 5), "d_max": round(d_max, 5)}}
    library = _library(entries, kept, manifest)
    library.save(out)
    _write_selection(Path(out), entries)
    write_niggli(out, {o.key: o.niggli for o in kept if o.niggli is not None})
    build_fit_table(out, cif_dir=folder, two_theta=two_theta, wavelength=wavelength, workers=workers,
                    progress=False)
    return BuildReport(library, None, skipped, time.perf_counter() - t0, len(kept) + len(skipped))


# -- from CoRE MOF 2019 ----------------------------------------------------------------
def build_from_coremof(out: str | Path, select: str = "default", workers: int = 2, limit: int | None = None,
                       progress: bool = True, command: str | None = None,
                       log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> BuildReport:
    """The default library (``select='default'``: the first 1,012 stems of the selection rule)
    or every stem (``'full'``); ``limit`` caps the number of classes (tests, trials)."""
    from xrd_agent.library.coremof import candidate_order, group_stems, iter_cifs, load_determinations
    from xrd_agent.library.names import load_names

    if select not in ("default", "full"):
        raise LibraryError(f"unknown selection {select!r}: use default or full")
    require_build_extra()
    t0 = time.perf_counter()
    determinations = load_determinations()
    stems = group_stems(determinations)
    names = load_names()
    order = candidate_order(stems, [r for r, n in names.items() if n.first])
    target = DEFAULT_COUNT if select == "default" else len(order)
    if limit is not None:
        target = min(target, max(1, int(limit)))
    named_by_stem: dict[str, str] = {}
    for refcode, common in names.items():
        if common.first and refcode in determinations:
            named_by_stem.setdefault(refcode[:6], refcode)

    outcomes: dict[str, Outcome] = {}
    chosen: list[tuple[str, str]] = []  # (stem, training refcode)
    skipped: list[dict[str, str]] = []
    pos = 0
    while len(chosen) < target and pos < len(order):
        need = target - len(chosen)
        batch = order[pos:pos + need + max(2, math.ceil(need * 0.03))]
        pos += len(batch)
        wanted: dict[str, set[str]] = {}
        todo = {}
        for stem in batch:
            for det in stems[stem]:
                dataset, file_stem = det.source
                wanted.setdefault(dataset, set()).add(file_stem)
                todo[(dataset, file_stem)] = det.refcode
        jobs = (Job(todo[(d, f)], f"{d}/{f}.cif", text) for d, f, text in iter_cifs(wanted))
        for o in run_jobs(jobs, len(todo), workers, progress, desc=f"simulating {len(batch)} stems"):
            outcomes[o.key] = o
            if not o.ok:
                skipped.append({"refcode": o.key, "source": o.source, "reason": o.error or ""})
        for stem in batch:
            if len(chosen) >= target:
                break
            refs = [d.refcode for d in stems[stem]]
            named = named_by_stem.get(stem)
            if named:
                refs.remove(named)
                refs.insert(0, named)
            training = next((r for r in refs if r in outcomes and outcomes[r].ok), None)
            if training:
                chosen.append((stem, training))
            else:
                log(f"stem {stem}: no determination could be simulated; skipped")

    if not chosen:
        raise LibraryError("no CoRE MOF structure could be simulated: "
                           + "; ".join(item["reason"] for item in skipped[:3]))
    entries, kept = [], []
    for stem, refcode in chosen:
        entries.append(_coremof_entry(determinations[refcode], outcomes[refcode], name_for(refcode, names),
                                      len(stems[stem])))
        kept.append(outcomes[refcode])
    held_entries, held = _heldout(chosen, stems, outcomes, entries)

    seconds = time.perf_counter() - t0
    skipped.sort(key=lambda item: item["source"])  # outcomes arrive in completion order
    manifest = {
        **_base_manifest("CoRE MOF 2019 (core-mof on PyPI, CC-BY 4.0), datasets 2019-ASR and 2019-FSR", command),
        "version": LIBRARY_VERSION if select == "default" and limit is None else f"coremof2019-{select}-{len(chosen)}",
        "selection": {
            "select": select,
            "rule": candidate_order.__doc__.strip().split("\n\n", 1)[1].strip() if candidate_order.__doc__ else "",
            "training_determination": "the curated named refcode if listed, else the first refcode "
                                      "(sorted) of the stem that parses and fits the cap",
            "candidates_tried": pos, "classes": len(chosen), "stems_available": len(stems),
        },
        "skipped": skipped,
        "build_seconds": round(seconds, 1),
    }
    library = _library(entries, kept, manifest)
    out = Path(out)
    library.save(out)
    _write_selection(out, entries)
    write_niggli(out, {r: outcomes[r].niggli for _, r in chosen if outcomes[r].niggli is not None})
    heldout = None
    stale = out / "heldout"
    if stale.is_dir() and (stale / "manifest.json").is_file():
        shutil.rmtree(stale)  # a held-out set from an earlier build into this folder would mislead
    if held:
        same = sum(1 for e in held_entries if e["same_phase"])
        hman = {**_base_manifest(manifest["source"], command), "version": manifest["version"] + "-heldout",
                "parent_version": manifest["version"], "same_phase_rule": SAME_PHASE_RULE,
                "same_phase_counts": {"true": same, "false": len(held_entries) - same},
                "stems_with_heldout": len({e["class_refcode"] for e in held_entries})}
        heldout = _library(held_entries, held, hman)
        heldout.save(out / "heldout")
    log(f"library: {len(entries)} classes, held-out: {len(held_entries)} determinations, "
        f"skipped {len(skipped)} CIFs, {seconds:.0f} s")
    return BuildReport(library, heldout, skipped, seconds, len(outcomes))


def _heldout(chosen: list[tuple[str, str]], stems: dict[str, list[Any]], outcomes: dict[str, Outcome],
             entries: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Outcome]]:
    """Every other simulated determination of each chosen stem, tied to its class and marked
    same phase or not by the structures (:func:`xrd_agent.library.cif.same_phase`)."""
    from xrd_agent.library.cif import same_phase

    held_entries, held = [], []
    for index, (stem, refcode) in enumerate(chosen):
        train = outcomes[refcode]
        for det in stems[stem]:
            other = outcomes.get(det.refcode)
            if det.refcode == refcode or other is None or not other.ok:
                continue
            entry = _coremof_entry(det, other, None, len(stems[stem]))
            entry.update(name=entries[index]["name"], class_refcode=refcode, class_index=index,
                         same_phase=same_phase(train.niggli, other.niggli), same_phase_rule=SAME_PHASE_RULE)
            held_entries.append(entry)
            held.append(other)
    return held_entries, held


def name_for(refcode: str, names: dict[str, Any]) -> Any:
    """The names-table row of a determination: its own refcode, else another of its stem."""
    return names.get(refcode) or next((names[r] for r in names if r[:6] == refcode[:6]), None)


def relabel(directory: str | Path, names: dict[str, Any] | None = None) -> tuple[int, int]:
    """Apply the names table to a built library (and its held-out set) without simulating
    again: names, aliases and DOIs change, classes and their order do not. Returns
    (classes named, classes whose name changed)."""
    from xrd_agent.library.names import load_names

    names = load_names() if names is None else names
    lib = Library.load(directory)
    named = changed = 0
    for e in lib.entries:
        row = name_for(e["refcode"], names)
        new = {"name": row.name if row else e["refcode"], "aliases": list(row.aliases) if row else [],
               "doi": (row.doi if row else None) or e.get("doi")}
        named += row is not None
        changed += new["name"] != e.get("name")
        e.update(new)
    lib.save(lib.path)
    held = lib.heldout() if lib.path is not None else None
    if held is not None:
        for e in held.entries:
            e["name"] = lib.entries[e["class_index"]]["name"]
        held.save(held.path)
    _write_selection(Path(directory), lib.entries)
    return named, changed


def _coremof_entry(det: Any, o: Outcome, name: Any, determinations: int) -> dict[str, Any]:
    assert o.meta is not None
    return {
        "refcode": det.refcode,
        "name": name.name if name else det.refcode,
        "aliases": list(name.aliases) if name else [],
        **{k: o.meta[k] for k in ("formula", "metals", "cell", "volume", "space_group", "atoms")},
        "variants": det.variants,
        "doi": (name.doi if name else None) or o.meta["cif_doi"],
        "source": o.source,
        "stem": det.stem,
        "stem_determinations": determinations,
    }


def _write_selection(out: Path, entries: list[dict[str, Any]]) -> None:
    lines = ["# class_index\tstem\trefcode\tname  (order = class index; see docs/library.md)"]
    lines += [f"{i}\t{e.get('stem', e['refcode'])}\t{e['refcode']}\t{e['name']}" for i, e in enumerate(entries)]
    (out / "selection.txt").write_text("\n".join(lines) + "\n")


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))
