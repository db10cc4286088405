"""Values that flow between preprocessing and the model: the model grid, the
noise-gate decision, the coverage of a scan, and the preprocessed :class:`Pattern`."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

#: The one grid every reference and every scan is put on: Cu K-alpha1, 2-theta 5-50 deg,
#: 0.01 deg steps (4,501 points), as in Wang et al. 2020. Finer than any MOF peak width
#: at laboratory resolution (FWHM >= 0.05 deg), coarse enough for a small CNN.
GRID_START = 5.0
GRID_STOP = 50.0
GRID_STEP = 0.01
GRID_POINTS = 4501
MODEL_GRID = np.round(np.linspace(GRID_START, GRID_STOP, GRID_POINTS), 6)
MODEL_GRID.setflags(write=False)


@dataclass(frozen=True)
class GateDecision:
    """What the FFT noise gate measured and did (part of every result)."""

    applied: bool
    high_band_mean: float
    threshold: float
    cutoff_bins: int

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Coverage:
    """How much of the model grid the scan actually measured."""

    first: float  # first covered 2-theta on the grid (deg, Cu K-alpha1 scale)
    last: float
    fraction: float  # covered share of the grid, 0..1

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class Pattern:
    """A scan on the model grid, gated and normalised: exactly what the model reads."""

    intensity: np.ndarray  # float32, shape (GRID_POINTS,), max 1 where covered, 0 elsewhere
    mask: np.ndarray  # bool, True where the scan measured this grid point
    gate: GateDecision
    coverage: Coverage
    #: The despiked grid values before background and scaling, in the scan's own units
    #: (read-only); None for synthetic rows. The crystallinity test reads these.
    values: np.ndarray | None = None
