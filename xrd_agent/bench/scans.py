"""Scan files for benchmarks and fault runs, written by the simulated D8's format writers.

``measurements`` draws distinct simulated measurements (library MOFs, amorphous and
foreign phases); ``write_files`` exports them in one format as fast as possible
(throughput); the service runs use :func:`drop` to put one file into an export folder
the way an instrument does (staged then renamed, or grown in place slowly).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from xrd_agent.testing.formats import WRITERS, Measurement

#: Benchmark format names -> file extension of the simulated D8's writers.
FORMATS = {"raw4": ".raw", "brml": ".brml", "xy": ".xy"}


def library_for_scans(library: Any = None) -> Any:
    """The library whose reflections the scans are drawn from (shipped, else a stand-in)."""
    if library is not None and not isinstance(library, (str, Path)):
        return library
    from xrd_agent.library.artifact import Library

    try:
        return Library.load(library or None)
    except Exception:  # noqa: BLE001 - the shipped library may not exist yet
        from xrd_agent.testing.library import tiny_library

        return tiny_library(60)


def measurements(n: int, library: Any, *, seed: int = 0, tag: str = "bench") -> list[Measurement]:
    """``n`` distinct measurements: mostly single library phases, some mixtures, amorphous
    and foreign phases, so every downstream path (flags included) is exercised."""
    from xrd_agent.testing.simulated_d8 import SimulatedD8

    d8 = SimulatedD8(Path("."), library, seed=seed)
    refs = list(library.refcodes)
    out = []
    for i in range(n):
        sample = f"{tag}-{seed}-{i:06d}"
        kind = ("amorphous", "unknown", "mixture")[i % 3] if i % 17 == 0 else "crystalline"
        if kind == "mixture":
            m = d8.measure(sample, [refs[i % len(refs)], refs[(i * 7 + 3) % len(refs)]], weights=[1.0, 0.5])
        elif kind == "crystalline":
            m = d8.measure(sample, [refs[i % len(refs)]])
        else:
            m = d8.measure(sample, kind=kind)
        out.append(m)
    return out


def encode(m: Measurement, fmt: str) -> bytes:
    return WRITERS[FORMATS[fmt]](m)


def write_files(folder: Path, fmt: str, items: Sequence[Measurement], *, distinct: int | None = None) -> list[Path]:
    """Write one file per measurement (``distinct``: encode only that many and cycle, with a
    unique sample id each, to save generation time on large runs)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    cache: dict[int, bytes] = {}
    for i, m in enumerate(items):
        if distinct:
            key = i % distinct
            data = cache.get(key)
            if data is None:
                data = cache[key] = encode(m, fmt)
        else:
            data = encode(m, fmt)
        path = folder / f"scan-{i:06d}{FORMATS[fmt]}"
        path.write_bytes(data)
        paths.append(path)
    return paths


def unique(m: Measurement, serial: int) -> Measurement:
    """The same measurement with a different sample id (so its bytes, and hash, differ)."""
    return replace(m, sample_id=f"{m.sample_id}-{serial}", counts=np.asarray(m.counts) + 0)


def drop(folder: Path, name: str, data: bytes, *, mode: str = "rename", chunks: int = 4,
         delay_s: float = 0.0) -> tuple[Path, float]:
    """Put ``data`` at ``folder/name`` like an instrument; return (path, monotonic time at
    which it became complete).

    ``rename``: written to a hidden ``.~name.part`` then renamed into place (atomic);
    ``slow``: grown in place in ``chunks`` with ``delay_s`` between them (a RAW export
    during a measurement), fsynced at each stage.
    """
    final = folder / name
    if mode == "rename":
        tmp = folder / f".~{name}.part"
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, final)
        return final, time.monotonic()
    step = max(1, -(-len(data) // chunks))
    with open(final, "wb") as fh:
        for i in range(0, len(data), step):
            fh.write(data[i: i + step])
            fh.flush()
            os.fsync(fh.fileno())
            if i + step < len(data):
                time.sleep(delay_s)
    return final, time.monotonic()
