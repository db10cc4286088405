"""Reflection tables for whole-pattern fitting: ``fit.npz`` beside a library's other files.

The library's ``sticks.npz`` holds Cu K-alpha1 reflections between 5 and 50 deg scaled to a
strongest of 1: enough for the network, not for a physics fit. A fit needs

* reflections over the lab's whole measured range (large-cell MOFs have their strongest
  reflections below 5 deg; inorganic phases are measured to 80-120 deg), stored as d-spacings
  so any wavelength can use them;
* the absolute m|F|^2 (electrons^2 per cell, Friedel mates and merged equivalents summed) with
  no Lorentz-polarisation factor, so the fit applies the factor for the scan's own wavelength;
* the mass of the cell contents (Z x M, atomic mass units) and the cell volume, for weight
  fractions (Hill & Howard, J. Appl. Cryst. 1987, 20, 467).

Rows are in the library's class order; nothing about the existing files changes.
Layout: ``offsets`` (count+1), ``d`` float32 (Angstrom), ``f2`` float32 (m|F|^2), ``hkl`` int16
(M, 3), ``cell_mass`` float64 (count), ``volume`` float64 (count), ``d_min``, ``d_max``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xrd_agent.errors import LibraryError, StructureError
from xrd_agent.library.simulate import CU_KA1, Crystal, structure_factors

FIT_FILE = "fit.npz"
#: Default d range of the shipped MOF library's fit table: Cu K-alpha1 1.5-50 deg.
DEFAULT_TWO_THETA = (1.5, 50.0)
#: Default range of a library built from a folder of the lab's CIFs (Cu K-alpha1 deg).
DEFAULT_CIF_DIR_TWO_THETA = (1.5, 80.0)
#: Reflections weaker than this share of the strongest are dropped (as in sticks.npz).
MIN_RELATIVE = 1e-3
#: Reflections whose d agree within this relative tolerance are one line (equivalents in a P1 cell).
MERGE_RTOL = 2e-5


def d_range(two_theta_min: float, two_theta_max: float, wavelength: float = CU_KA1) -> tuple[float, float]:
    """(d_min, d_max) in Angstrom covered by a 2-theta range at ``wavelength``."""
    lo = wavelength / (2.0 * np.sin(np.radians(min(two_theta_max, 179.0) / 2.0)))
    hi = wavelength / (2.0 * np.sin(np.radians(max(two_theta_min, 0.1) / 2.0)))
    return float(lo), float(hi)


@dataclass(frozen=True, eq=False)
class Reflections:
    """One phase's reflections: d (Angstrom), m|F|^2 (absolute), representative hkl."""

    d: np.ndarray
    f2: np.ndarray
    hkl: np.ndarray


def reflections(crystal: Crystal, d_min: float, d_max: float, max_cost: float = 2e9) -> Reflections:
    """Every reflection of ``crystal`` with d_min <= d <= d_max, equivalents merged (raises StructureError)."""
    g_min, g_max = 1.0 / d_max, 1.0 / d_min
    expected = 2.0 / 3.0 * np.pi * (g_max**3 - g_min**3) * crystal.volume
    if expected * len(crystal) > max_cost:
        raise StructureError(f"{len(crystal)} sites x ~{expected:.0f} reflections exceeds the cap")
    hkl, g, f2 = structure_factors(crystal, g_min, g_max, {})
    if hkl.size == 0:
        raise StructureError("no reflections in the d range")
    d = 1.0 / g
    order = np.argsort(-d, kind="stable")
    d, f2, hkl = d[order], 2.0 * f2[order], hkl[order]  # x2: the Friedel mate not computed
    new = np.concatenate([[True], np.abs(np.diff(d)) > MERGE_RTOL * d[1:]])
    starts = np.flatnonzero(new)
    total = np.add.reduceat(f2, starts)
    pos = np.add.reduceat(f2 * d, starts) / np.where(total > 0, total, 1.0)
    pos = np.where(total > 0, pos, d[starts])
    rep = hkl[starts]
    top = float(total.max())
    if not np.isfinite(top) or top <= 0:
        raise StructureError("every reflection has zero intensity")
    keep = total >= MIN_RELATIVE * top
    return Reflections(pos[keep], total[keep], rep[keep])


def cell_mass(crystal: Crystal) -> float:
    """Mass of the cell contents (Z x M) in atomic mass units, occupancies included."""
    from pymatgen.core import Element  # build-time dependency only

    masses = {s: float(Element(s).atomic_mass) for s in set(crystal.elements)}
    return float(sum(masses[s] * o for s, o in zip(crystal.elements, crystal.occupancy)))


@dataclass(frozen=True, eq=False)
class FitTable:
    """All classes' reflection tables, in class order."""

    offsets: np.ndarray
    d: np.ndarray
    f2: np.ndarray
    hkl: np.ndarray
    cell_mass: np.ndarray
    volume: np.ndarray
    d_min: float
    d_max: float

    def __len__(self) -> int:
        return int(self.offsets.size - 1)

    def rows(self, index: int) -> Reflections:
        a, b = int(self.offsets[index]), int(self.offsets[index + 1])
        return Reflections(self.d[a:b], self.f2[a:b], self.hkl[a:b])

    def save(self, path: str | Path) -> None:
        np.savez_compressed(path, offsets=self.offsets, d=self.d, f2=self.f2, hkl=self.hkl,
                            cell_mass=self.cell_mass, volume=self.volume,
                            d_min=np.float64(self.d_min), d_max=np.float64(self.d_max))

    @classmethod
    def load(cls, path: str | Path) -> FitTable:
        try:
            with np.load(path) as z:
                return cls(z["offsets"], z["d"], z["f2"], z["hkl"], z["cell_mass"], z["volume"],
                           float(z["d_min"]), float(z["d_max"]))
        except (OSError, ValueError, KeyError) as exc:
            raise LibraryError(f"fit table {path} is damaged: {exc}") from None

    @classmethod
    def from_rows(cls, rows: list[Reflections], masses: list[float], volumes: list[float],
                  d_min: float, d_max: float) -> FitTable:
        lengths = np.array([r.d.size for r in rows], np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        cat = (lambda attr, dt: np.concatenate([getattr(r, attr) for r in rows]).astype(dt))
        return cls(offsets, cat("d", np.float32), cat("f2", np.float32), cat("hkl", np.int16).reshape(-1, 3),
                   np.asarray(masses, float), np.asarray(volumes, float), d_min, d_max)


def table_job(text: str, source: str, d_min: float, d_max: float) -> tuple[Reflections, float, float]:
    """Parse one CIF and tabulate it (runs in a worker)."""
    from xrd_agent.library.cif import parse_cif

    parsed = parse_cif(text, source)
    return reflections(parsed.crystal, d_min, d_max), cell_mass(parsed.crystal), parsed.crystal.volume


def _coremof_texts(sources: list[str]) -> Iterator[tuple[str, str]]:
    from xrd_agent.library.coremof import iter_cifs

    wanted: dict[str, set[str]] = {}
    for s in sources:
        dataset, name = s.split("/", 1)
        wanted.setdefault(dataset, set()).add(name[:-4] if name.endswith(".cif") else name)
    for dataset, stem, text in iter_cifs(wanted):
        yield f"{dataset}/{stem}.cif", text


def build_fit_table(library_dir: str | Path, *, cif_dir: str | Path | None = None,
                    two_theta: tuple[float, float] = DEFAULT_TWO_THETA, wavelength: float = CU_KA1,
                    workers: int = 1, progress: bool = True) -> FitTable:
    """Write ``fit.npz`` for an existing library: CIFs from ``cif_dir`` (entries' ``source``
    file names) or, without it, from the core-mof package. Class order is the library's."""
    from concurrent.futures import ProcessPoolExecutor

    lib_dir = Path(library_dir)
    entries = json.loads((lib_dir / "entries.json").read_text())
    sources = [e["source"] for e in entries]
    d_min, d_max = d_range(*two_theta, wavelength)
    if cif_dir is not None:
        texts = {s: (Path(cif_dir) / s).read_text(encoding="utf-8", errors="replace") for s in sources}
        if workers <= 1:
            rows = [table_job(texts[s], s, d_min, d_max) for s in sources]
            table = FitTable.from_rows([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                                       d_min, d_max)
            table.save(lib_dir / FIT_FILE)
            return table
    else:
        texts = dict(_coremof_texts(sources))
    missing = [s for s in sources if s not in texts]
    if missing:
        raise LibraryError(f"CIFs not found for {len(missing)} classes, e.g. {missing[:3]}")
    t0 = time.perf_counter()
    results: list[tuple[Reflections, float, float]] = []
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(table_job, texts[s], s, d_min, d_max) for s in sources]
        for i, f in enumerate(futures):
            results.append(f.result())
            if progress and (i + 1) % 50 == 0:
                print(f"fit table: {i + 1}/{len(sources)} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    table = FitTable.from_rows([r[0] for r in results], [r[1] for r in results], [r[2] for r in results],
                               d_min, d_max)
    table.save(lib_dir / FIT_FILE)
    return table
