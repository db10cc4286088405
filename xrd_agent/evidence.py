"""Evidence that does not come from the network, gathered for the judge.

A softmax always names *some* class. :mod:`xrd_agent.decide` weighs it against
powder-diffraction evidence measured here: the peak match of the network's best
candidates (:func:`xrd_agent.model.flags.match_peaks`), the crystallinity of the raw
counts, the coverage, and for the cosine fallback its own cosine and peak counts.

:class:`Evidence` grows by optional fields with defaults: a physics fit of the
candidates (verify stage, issue 12) and phase fractions (compose stage, issue 13)
add theirs without touching the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xrd_agent.model import flags as _flags
from xrd_agent.model.flags import Crystallinity, FlagPolicy, Match, Peaks
from xrd_agent.pattern import Pattern
from xrd_agent.predict import Prediction

#: Cosine fallback: a crystalline scan has at least this many sharp peaks standing this
#: many noise sigmas above a 2-degree running-median background (see :func:`sharp_peaks`).
PEAK_SIGMAS = 8.0


@dataclass(frozen=True)
class CosineEvidence:
    """What the cosine search-match measured for its best reference."""

    best: float  # cosine of the best reference over the covered points
    sharp_peaks: int  # sharp peaks in the scan's own points (crystallinity, cosine's way)
    explained: float  # share of the scan's strong-peak height the best reference explains


@dataclass(frozen=True, eq=False)
class Evidence:
    """Everything the judge weighs besides the network's probabilities, for one scan."""

    pattern: Pattern  # the prepared scan: coverage, mask (for CAM regions) and gate decision
    matches: Mapping[int, Match] = field(default_factory=dict)  # library index -> peak match, best candidates
    crystallinity: Crystallinity | None = None  # None: no raw counts to judge (synthetic rows)
    cosine: CosineEvidence | None = None  # set by the cosine fallback, which judges by its own rules
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


def peak_evidence(pattern: Pattern, prediction: Prediction, references: ReferencePeaks, *,
                  depth: int, policy: FlagPolicy = FlagPolicy()) -> Evidence:
    """Peak match of the ``depth`` best candidates and crystallinity of the raw counts."""
    probs = prediction.probabilities
    order = prediction.order()[:max(1, min(depth, probs.size))]
    scan_peaks = _flags.find_peaks(pattern.intensity, pattern.mask, min_height=policy.weak_peak)
    cov = pattern.coverage
    first, last = (cov.first, cov.last) if cov.fraction > 0 else (0.0, 0.0)
    matches = {int(j): _flags.match_peaks(scan_peaks, references(int(j)), first, last, policy) for j in order}
    cryst = _flags.crystallinity(pattern.values, pattern.mask) if pattern.values is not None else None
    return Evidence(pattern=pattern, matches=matches, crystallinity=cryst)


def sharp_peaks(two_theta: np.ndarray, intensity: np.ndarray) -> int:
    """How many sharp peaks stand well above the local background and its noise."""
    from scipy import ndimage, signal

    if intensity.size < 20:
        return 0
    step = float(np.median(np.diff(two_theta))) or 0.01
    window = max(5, int(round(2.0 / step)) | 1)
    background = ndimage.median_filter(intensity, size=window, mode="nearest")
    residual = intensity - background
    mad = float(np.median(np.abs(residual - np.median(residual)))) * 1.4826
    noise = max(mad, float(np.sqrt(max(np.median(background), 1.0))) * 0.5, 1e-9)
    peaks, _ = signal.find_peaks(residual, height=PEAK_SIGMAS * noise, width=(1, max(2, 0.8 / step)))
    return int(peaks.size)


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
    """The cosine fallback's evidence: its best cosine, the scan's sharp peaks, the share explained."""
    best = int(prediction.order()[0])
    cosine = float(prediction.ranking[best]) if prediction.ranking is not None else float("nan")
    explained = explained_share(np.asarray(pattern.intensity), references[best], np.asarray(pattern.mask, bool))
    return Evidence(pattern=pattern, cosine=CosineEvidence(
        best=cosine, sharp_peaks=sharp_peaks(scan.two_theta, scan.intensity), explained=explained))
