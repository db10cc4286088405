"""A small stand-in reference library for tests and for demos on a checkout without the
shipped one: made-up MOF-like reflections, stored through the real library contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xrd_agent.library.artifact import Library, Sticks
from xrd_agent.peakshape import broaden


def tiny_library(count: int = 12, *, seed: int = 3) -> Library:
    """``count`` classes named TESTMOF-01 …, each with 12-30 reflections, strongest at low angle
    (large cells), as MOF patterns are."""
    rng = np.random.default_rng(seed)
    entries, patterns, sticks = [], [], []
    for i in range(count):
        n = int(rng.integers(12, 30))
        pos = np.sort(np.concatenate([rng.uniform(6.0, 15.0, 4), rng.uniform(15.0, 49.0, n - 4)]))
        inten = rng.uniform(0.05, 0.6, n) * np.exp(-(pos - 5.0) / 25.0)
        inten[rng.integers(0, 4)] = 1.0
        pattern = broaden(pos, inten)
        patterns.append(pattern / pattern.max())
        sticks.append(Sticks(pos.astype(np.float32), inten.astype(np.float32), np.zeros((n, 3), np.int16)))
        refcode = f"TSTMOF{i + 1:02d}"
        entries.append({"refcode": refcode, "name": f"TESTMOF-{i + 1:02d}", "aliases": [f"TM{i + 1}"],
                        "formula": "", "metals": [], "source": "xrd_agent.testing.library"})
    manifest = {"version": f"tiny-{count}-{seed}", "source": "xrd_agent.testing.library.tiny_library"}
    return Library.from_patterns(entries, np.asarray(patterns), sticks, manifest)


def save_tiny_library(directory: str | Path, count: int = 12, *, seed: int = 3) -> Path:
    return tiny_library(count, seed=seed).save(directory)
