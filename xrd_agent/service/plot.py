"""The result plot of the HTTP API: the scan on the model grid, the reference pattern of the
first candidate, and the 2-theta regions that drove the decision (CAM), as a PNG.

Matplotlib's object API with the Agg canvas (no pyplot: no global state, safe off the main
thread); a lock keeps two HTTP requests from rendering at once (font caches are shared).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

_LOCK = threading.Lock()


def render_png(*, two_theta: np.ndarray, intensity: np.ndarray | None, mask: np.ndarray | None,
               reference: np.ndarray | None, reference_label: str, cam_regions: Sequence[Mapping[str, Any]],
               title: str, note: str = "", width_in: float = 9.0, height_in: float = 3.6) -> bytes:
    """PNG bytes. ``intensity``/``mask``: the prepared scan (None when it could not be read
    again, e.g. the file was moved: ``note`` then says so)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with _LOCK:
        fig = Figure(figsize=(width_in, height_in), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        for region in cam_regions:
            ax.axvspan(region["start"], region["end"], color="#f4a259", alpha=0.15 + 0.6 * float(region["weight"]),
                       lw=0)
        if intensity is not None:
            y = np.where(mask, intensity, np.nan) if mask is not None else intensity
            ax.plot(two_theta, y, color="#1f3b73", lw=0.8, label="scan (prepared)")
        if reference is not None:
            ax.plot(two_theta, -np.asarray(reference, float), color="#bc4b51", lw=0.8, label=reference_label)
        ax.axhline(0, color="0.6", lw=0.5)
        ax.set_xlim(float(two_theta[0]), float(two_theta[-1]))
        ax.set_xlabel("2θ (deg, Cu Kα1)")
        ax.set_yticks([])
        ax.set_title(title, fontsize=10, loc="left")
        if cam_regions:
            ax.plot([], [], color="#f4a259", lw=6, alpha=0.5, label="regions that drove the decision")
        ax.legend(loc="upper right", fontsize=8, frameon=False)
        if note:
            ax.text(0.01, 0.04, note, transform=ax.transAxes, fontsize=8, color="#bc4b51")
        fig.tight_layout()
        out = io.BytesIO()
        fig.savefig(out, format="png")
        return out.getvalue()
