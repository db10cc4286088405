"""Evidence that does not come from the network, gathered for the judge.

A softmax always names *some* class. :mod:`xrd_agent.decide` weighs it against
powder-diffraction evidence measured here: the peak match of the network's best
candidates (:func:`xrd_agent.model.flags.match_peaks`), the crystalline fraction of the
product (:mod:`xrd_agent.crystallinity`, on the scan's own points), the coverage, and for
the cosine fallback its own cosine.

:class:`Evidence` grows by optional fields with defaults: a physics fit of the
candidates (verify stage, issue 12) and phase fractions (compose stage, issue 13)
add theirs without touching the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xrd_agent import crystallinity as _crystallinity
from xrd_agent.crystallinity import Crystallinity
from xrd_agent.model import flags as _flags
from xrd_agent.model.flags import FlagPolicy, Match, Peaks
from xrd_agent.pattern import MODEL_GRID
from xrd_agent.pattern import Pattern
from xrd_agent.predict import Prediction

@dataclass(frozen=True)
class CosineEvidence:
    """What the cosine search-match measured for its best reference."""

    best: float  # cosine of the best reference over the covered points
    explained: float  # share of the scan's strong-peak height the best reference explains


@dataclass(frozen=True, eq=False)
class Evidence:
    """Everything the judge weighs besides the network's probabilities, for one scan."""

    pattern: Pattern  # the prepared scan: coverage, mask (for CAM regions) and gate decision
    matches: Mapping[int, Match] = field(default_factory=dict)  # library index -> peak match, best candidates
    crystallinity: Crystallinity | None = None  # None: no raw counts to judge (synthetic rows)
    cosine: CosineEvidence | None = None  # set by the cosine fallback, which judges by its own rules
    elements: tuple[str, ...] = ()  # what the chemist says is in the pot (expect --elements); () unknown
    # verify (issue 12) and compose (issue 13) add their fields here, with defaults.
    verification: Any = None  # xrd_agent.verify.check.Verification: fitted candidates and composition


class ReferencePeaks:
    """Peak lists of the library's references, found once per class and kept."""

    def __init__(self, library: Any) -> None:
        self.library = library
        self._peaks: dict[int, Peaks] = {}

    def __call__(self, index: int) -> Peaks:
        peaks = self._peaks.get(index)
        if peaks is None:
            peaks = _flags.find_peaks(self.library.patterns16[index].astype(np.float32), min_height=0.02)
            self._peaks[index] = peaks
        return peaks

    def warm(self) -> ReferencePeaks:
        """All of them now, so no identification pays for them later (~0.3 s)."""
        for index in range(len(self.library)):
            self(index)
        return self


def crystallinity_of(scan: Any, pattern: Pattern) -> Crystallinity | None:
    """The crystalline fraction from the scan's own points (its range and step, raw units),
    or, for a grid row without its scan, from the covered raw grid values; None without either."""
    from xrd_agent import preprocess
    from xrd_agent.errors import ScanError

    if scan is not None:
        try:
            tt = preprocess.cu_two_theta(scan)
        except ScanError:  # a wavelength given apart from the scan is not kept: use the grid values
            tt = None
        if tt is not None:
            return _safe_estimate(*preprocess.measured_points(tt, scan.intensity))
    if pattern.values is not None:
        mask = np.asarray(pattern.mask, bool)
        return _safe_estimate(MODEL_GRID[mask], np.asarray(pattern.values)[mask])
    return None


def _safe_estimate(two_theta: np.ndarray, intensity: np.ndarray) -> Crystallinity | None:
    """The estimate, or None when the points defeat it (a damaged file must not sink the batch)."""
    try:
        with np.errstate(all="ignore"):
            return _crystallinity.estimate(two_theta, intensity)
    except (ValueError, FloatingPointError, IndexError, ZeroDivisionError):
        return None


def peak_evidence(pattern: Pattern, prediction: Prediction, references: ReferencePeaks, *,
                  depth: int, policy: FlagPolicy = FlagPolicy(), scan: Any = None,
                  classes: Sequence[int] | None = None, elements: Sequence[str] = ()) -> Evidence:
    """Peak match of the ``depth`` best candidates (or of ``classes``, when the judge names them:
    materials need their best determinations) and the crystalline fraction of the product."""
    probs = prediction.probabilities
    order = list(classes) if classes is not None else prediction.order()[:max(1, min(depth, probs.size))]
    scan_peaks = _flags.find_peaks(pattern.intensity, pattern.mask, min_height=policy.weak_peak)
    cov = pattern.coverage
    first, last = (cov.first, cov.last) if cov.fraction > 0 else (0.0, 0.0)
    candidates = [int(j) for j in order]
    found = _flags.match_many(scan_peaks, [references(j) for j in candidates], first, last, policy)
    matches = dict(zip(candidates, found))
    return Evidence(pattern=pattern, matches=matches, crystallinity=crystallinity_of(scan, pattern),
                    elements=tuple(elements))


def explained_share(y: np.ndarray, ref: np.ndarray, mask: np.ndarray, tolerance_deg: float = 0.3) -> float:
    """Share of the scan's strong-peak height that has a reference peak within ``tolerance_deg``."""
    from scipy import ndimage, signal

    peaks, props = signal.find_peaks(np.where(mask, y, 0.0), height=0.2, prominence=0.1)
    if peaks.size == 0:
        return 1.0
    half = int(round(tolerance_deg / 0.01))
    nearby = ndimage.maximum_filter1d(ref, size=2 * half + 1, mode="constant")
    heights = props["peak_heights"]
    hit = nearby[peaks] >= 0.05 * max(float(ref.max()), 1e-9)
    return float(heights[hit].sum() / heights.sum())


def cosine_evidence(scan: Any, pattern: Pattern, prediction: Prediction, references: np.ndarray) -> Evidence:
    """The cosine fallback's evidence: its best cosine, the share explained, the crystalline fraction."""
    best = int(prediction.order()[0])
    cosine = float(prediction.ranking[best]) if prediction.ranking is not None else float("nan")
    explained = explained_share(np.asarray(pattern.intensity), references[best], np.asarray(pattern.mask, bool))
    return Evidence(pattern=pattern, cosine=CosineEvidence(best=cosine, explained=explained),
                    crystallinity=crystallinity_of(scan, pattern))
