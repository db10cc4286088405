"""Helpers shared by the model tests (no tests here): a tiny made-up library and scans.

The tiny library has invented reflections, not real MOFs: the tests check the
machinery (train -> save -> load -> identify), not chemistry; the shipped model is
checked on the real fixtures in test_model_shipped.py.
"""

from __future__ import annotations

import numpy as np

from xrd_agent.library.artifact import Library, Sticks
from xrd_agent.pattern import MODEL_GRID
from xrd_agent.peakshape import broaden


def tiny_library(n: int = 12, seed: int = 1) -> Library:
    """``n`` classes of 8-20 random reflections in 6-48 deg, each with one strongest peak."""
    rng = np.random.default_rng(seed)
    entries, patterns, sticks = [], [], []
    for i in range(n):
        k = int(rng.integers(8, 20))
        tt = np.sort(rng.uniform(6.0, 48.0, k))
        inten = rng.uniform(0.05, 1.0, k)
        inten[int(rng.integers(k))] = 1.0
        p = broaden(tt, inten)
        entries.append({"refcode": f"TINY{i:02d}", "name": f"tiny phase {i}"})
        patterns.append(p / p.max())
        sticks.append(Sticks(tt.astype(np.float32), inten.astype(np.float32), np.zeros((k, 3), np.int16)))
    return Library.from_patterns(entries, np.array(patterns), sticks, {"version": f"tiny-{n}-{seed}"})


def counts_scan(library: Library, index: int, *, shift: float = 0.03, peak_counts: float = 4000.0,
                background: float = 300.0, seed: int = 0) -> np.ndarray:
    """A measured-looking scan of class ``index`` on MODEL_GRID: Poisson counts over a background."""
    rng = np.random.default_rng(seed)
    s = library.sticks(index)
    clean = broaden(s.two_theta + shift, s.intensity)
    expected = background * (1.0 + 0.3 * np.exp(-MODEL_GRID / 15.0)) + peak_counts * clean / clean.max()
    return rng.poisson(expected).astype(float)


def amorphous_scan(seed: int = 0, counts: float = 1500.0) -> np.ndarray:
    """A failed synthesis: a broad amorphous hump near 22 deg on a decaying background, Poisson noise."""
    rng = np.random.default_rng(seed)
    hump = counts * np.exp(-0.5 * ((MODEL_GRID - 22.0) / 4.5) ** 2)
    expected = 400.0 * np.exp(-MODEL_GRID / 30.0) + hump + 150.0
    return rng.poisson(expected).astype(float)


def tiny_library_with_heldout(directory, n: int = 12, seed: int = 1) -> Library:
    """``tiny_library`` saved to ``directory`` with a heldout/ folder: for every other class a
    second "determination" (lattice 0.4 % larger, intensities changed); the last one a
    different phase (``same_phase`` False)."""
    from pathlib import Path

    library = tiny_library(n, seed)
    library.save(Path(directory))
    rng = np.random.default_rng(seed + 100)
    entries, patterns, sticks = [], [], []
    for k, c in enumerate(range(0, n, 2)):
        s = library.sticks(c)
        theta = np.arcsin(np.sin(np.radians(s.two_theta / 2)) / 1.004)
        tt = np.degrees(2 * theta)
        inten = s.intensity * rng.uniform(0.7, 1.3, s.intensity.size)
        p = broaden(tt, inten)
        same = c != (n - 2)
        entries.append({"refcode": f"{library.refcodes[c]}01", "name": library.names[c],
                        "class_refcode": library.refcodes[c], "class_index": c, "same_phase": same})
        patterns.append(p / p.max())
        sticks.append(Sticks(tt.astype(np.float32), inten.astype(np.float32), s.hkl))
    held = Library.from_patterns(entries, np.array(patterns), sticks, {"version": f"{library.version}-heldout"})
    held.save(Path(directory) / "heldout")
    return Library.load(Path(directory))
