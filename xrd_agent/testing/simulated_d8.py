"""A simulated Bruker D8: measures library MOFs (and failures) and exports them like the real one.

Patterns come from the library's reflections (sticks), broadened with the project's
pseudo-Voigt profile on the instrument's own 2-theta steps, with what a real laboratory
scan has: a zero shift and sample displacement, crystallite-size broadening, intensity
changes (preferred orientation), air-scatter background and counting (Poisson) noise.

Exports are written in stages to a hidden temporary name and renamed into place, as
DIFFRAC.SUITE does on a local disk; ``mode="inplace"`` grows the final file instead, as a
RAW export does during a measurement.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from xrd_agent.peakshape import PeakProfile, broaden
from xrd_agent.testing.formats import WRITERS, Measurement

#: The instrument's scan: 2-theta 4-52 deg in 0.01 deg steps (covers the model's 5-50 deg;
#: the real D8 exports in the fixtures step 0.008-0.0105 deg with a LynxEye detector).
SCAN_START, SCAN_STOP, SCAN_STEP = 4.0, 52.0, 0.01


def scan_axis(start: float = SCAN_START, stop: float = SCAN_STOP, step: float = SCAN_STEP) -> np.ndarray:
    return np.round(start + step * np.arange(int(round((stop - start) / step)) + 1), 6)


def _background(tt: np.ndarray, rng: np.random.Generator, level: float) -> np.ndarray:
    air = level * 1.5 * np.exp(-(tt - tt[0]) / rng.uniform(4.0, 8.0))
    return level * (1.0 + 0.002 * (tt - tt[0])) + air


def _sticks_of(library: Any, index: int) -> tuple[np.ndarray, np.ndarray]:
    sticks = library.sticks(index)
    if sticks.two_theta.size:
        return np.asarray(sticks.two_theta, float), np.asarray(sticks.intensity, float)
    # no reflections stored: use the pattern's local maxima as reflections
    from scipy.signal import find_peaks

    from xrd_agent.pattern import MODEL_GRID

    y = library.patterns16[index].astype(float)
    peaks, _ = find_peaks(y, height=0.01)
    return MODEL_GRID[peaks], y[peaks]


def crystalline_counts(
    tt: np.ndarray,
    phases: list[tuple[np.ndarray, np.ndarray, float]],
    rng: np.random.Generator,
    *,
    peak_counts: float = 5000.0,
    background: float = 120.0,
) -> np.ndarray:
    """Counts of a crystalline sample: ``phases`` are (positions, intensities, weight)."""
    zero = rng.uniform(-0.04, 0.04)
    displacement = rng.uniform(-0.06, 0.06)  # deg at 2theta -> 0, scales with cos(theta)
    signal = np.zeros_like(tt)
    profile = PeakProfile()
    for pos, inten, weight in phases:
        shifted = pos + zero + displacement * np.cos(np.radians(pos / 2.0))
        jitter = rng.lognormal(0.0, 0.15, size=inten.size)
        signal += weight * broaden(shifted, inten * jitter, grid=tt, profile=profile,
                                   fwhm_scale=rng.uniform(1.0, 1.6))
    signal *= peak_counts / max(float(signal.max()), 1e-12)
    mean = signal + _background(tt, rng, background)
    return rng.poisson(mean).astype(float)


def amorphous_counts(tt: np.ndarray, rng: np.random.Generator, *, background: float = 150.0) -> np.ndarray:
    """A failed synthesis: a broad hump of disordered material on background and noise."""
    centre, width = rng.uniform(18.0, 26.0), rng.uniform(6.0, 10.0)
    hump = rng.uniform(250.0, 450.0) * np.exp(-4 * np.log(2) * ((tt - centre) / width) ** 2)
    return rng.poisson(_background(tt, rng, background) + hump).astype(float)


def foreign_phase(rng: np.random.Generator, n: int = 14) -> tuple[np.ndarray, np.ndarray]:
    """Reflections of a dense inorganic phase the MOF library does not hold (few, high-angle peaks)."""
    return np.sort(rng.uniform(24.0, 50.0, n)), rng.uniform(0.1, 1.0, n)


@dataclass(frozen=True)
class Export:
    """One file the simulated instrument exported."""

    path: Path
    sample_id: str
    kind: str  # crystalline | amorphous | unknown | mixture | duplicate | unreadable
    truth: tuple[str, ...] = ()  # refcodes really in the sample
    expected: tuple[str, ...] = ()  # what the robot said it expected (sidecar)


class SimulatedD8:
    """Writes exports into ``folder`` like the instrument software (staged, then renamed)."""

    def __init__(self, folder: str | Path, library: Any, *, seed: int = 7, stage_delay_s: float = 0.05,
                 stages: int = 4, step: float = SCAN_STEP) -> None:
        self.folder = Path(folder)
        self.library = library
        self.rng = np.random.default_rng(seed)
        self.stage_delay_s = stage_delay_s
        self.stages = max(1, stages)
        self.tt = scan_axis(step=step)

    # -- measuring ------------------------------------------------------------------------
    def measure(self, sample_id: str, refcodes: list[str] | None = None, *, kind: str = "crystalline",
                weights: list[float] | None = None) -> Measurement:
        if kind == "amorphous":
            counts = amorphous_counts(self.tt, self.rng)
        elif kind == "unknown":
            counts = crystalline_counts(self.tt, [(*foreign_phase(self.rng), 1.0)], self.rng)
        else:
            idx = [self.library.index_of(r) for r in (refcodes or [])]
            w = weights or [1.0] * len(idx)
            counts = crystalline_counts(self.tt, [(*_sticks_of(self.library, i), wi) for i, wi in zip(idx, w)],
                                        self.rng)
        return Measurement(start=float(self.tt[0]), step=float(self.tt[1] - self.tt[0]), counts=counts,
                           sample_id=sample_id)

    # -- exporting ------------------------------------------------------------------------
    def write_bytes(self, name: str, data: bytes, *, mode: str = "rename") -> Path:
        """Write ``data`` to ``folder/name`` in stages, the way the instrument does."""
        final = self.folder / name
        target = final if mode == "inplace" else self.folder / f".~{name}.part"
        chunk = max(1, -(-len(data) // self.stages))
        with open(target, "wb") as f:
            for i in range(0, len(data), chunk):
                f.write(data[i : i + chunk])
                f.flush()
                os.fsync(f.fileno())
                time.sleep(self.stage_delay_s)
        if mode != "inplace":
            os.replace(target, final)
        return final

    def export(self, name: str, m: Measurement, *, kind: str = "crystalline", truth: tuple[str, ...] = (),
               expected: tuple[str, ...] = (), top_k: int = 5, mode: str = "rename") -> Export:
        ext = Path(name).suffix.lower()
        if expected:
            import json

            (self.folder / f"{name}.expect.json").write_text(json.dumps({"phases": list(expected), "top_k": top_k}))
        path = self.write_bytes(name, WRITERS[ext](m), mode=mode)
        return Export(path, m.sample_id, kind, truth, expected)

    def reexport(self, original: Export, name: str) -> Export:
        """The operator exports the same measurement again under another name: identical bytes."""
        path = self.write_bytes(name, original.path.read_bytes())
        return replace(original, path=path, kind="duplicate")

    def export_unreadable(self, name: str, sample_id: str) -> Export:
        """A RAW export whose detector channel failed: the counts are not numbers."""
        m = self.measure(sample_id, kind="amorphous")
        counts = m.counts.copy()
        counts[len(counts) // 3 : len(counts) // 3 + 50] = np.nan
        path = self.write_bytes(name, WRITERS[".raw"](replace(m, counts=counts)))
        return Export(path, sample_id, "unreadable")
