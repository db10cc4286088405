"""Small statistics for benchmark reports (numpy's percentiles, named once)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 95, 99)) -> dict[str, float]:
    """``{"p50": ..., "p95": ..., "p99": ..., "max": ..., "n": ...}`` (NaN when empty)."""
    arr = np.asarray(values, dtype=float)
    out: dict[str, float] = {"n": float(arr.size)}
    for q in qs:
        out[f"p{q:g}"] = float(np.percentile(arr, q)) if arr.size else float("nan")
    out["max"] = float(arr.max()) if arr.size else float("nan")
    out["mean"] = float(arr.mean()) if arr.size else float("nan")
    return out


def fmt_ms(stats: dict[str, float], keys: Sequence[str] = ("p50", "p95", "p99", "max")) -> str:
    return ", ".join(f"{k} {stats[k] * 1e3:.1f} ms" for k in keys) + f" (n={int(stats['n'])})"
