"""Honest confidence and the warning flags: pure functions on arrays, no Keras.

A softmax always names *some* class, even for a silicon standard or an amorphous
failed synthesis. So the engine checks the network's answer with powder-diffraction
evidence that does not come from the network:

* **peak match** -- do the scan's strong reflections sit where the top reference has
  reflections, and are the reference's strong reflections (inside the measured range)
  present in the scan? A common zero shift of up to +-0.3 deg is allowed, and the
  position tolerance grows with tan(theta) like the shift of a lattice that is ~1 %
  larger or smaller than the reference's.
* **crystallinity** -- is there any sharp reflection standing clear of both the
  noise and the broad background? Measured on the raw counts on the grid (before the
  max-1 scaling, which would blow noise up into "peaks").

confidence = sqrt(softmax_top x match_score), and the flags follow from thresholds in
:class:`FlagPolicy` (calibrated in docs/model.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, signal

from xrd_agent.identification import Flag
from xrd_agent.pattern import GRID_START, GRID_STEP


@dataclass(frozen=True)
class FlagPolicy:
    unknown_threshold: float = 0.35  # confidence below: unknown_phase
    min_match: float = 0.45  # peak-match score below: unknown_phase, whatever the softmax says
    min_coverage: float = 0.5  # covered share of 5-50 deg below: low_coverage
    amorphous_snr: float = 12.0  # strongest sharp peak / noise sigma below: amorphous ...
    amorphous_relative: float = 0.04  # ... or / signal range below: amorphous
    mixture_unexplained: float = 0.2  # share of strong-peak intensity the top phase leaves unexplained
    mixture_min_recovered: float = 0.6  # the top phase itself must be clearly present
    strong_peak: float = 0.08  # relative height of a scan peak that must be explained
    weak_peak: float = 0.02  # relative height that counts as "present" in the scan
    reference_peak: float = 0.1  # relative height of a reference peak that must be found
    max_zero_shift: float = 0.3  # deg, common offset tried when matching


@dataclass(frozen=True, eq=False)
class Peaks:
    """Peak positions (deg 2-theta) and heights (relative to the pattern's max)."""

    position: np.ndarray
    height: np.ndarray

    def above(self, height: float) -> Peaks:
        keep = self.height >= height
        return Peaks(self.position[keep], self.height[keep])


@dataclass(frozen=True)
class Match:
    explained: float  # share of the scan's strong-peak intensity the reference accounts for
    recovered: float  # share of the reference's strong-peak intensity found in the scan
    shift: float  # zero shift (deg) that matched best
    unexplained: tuple[float, ...]  # strongest scan peaks the reference lacks (up to 10, deg)

    @property
    def score(self) -> float:
        return float(np.sqrt(max(self.explained, 0.0) * max(self.recovered, 0.0)))


def tolerance(two_theta: np.ndarray) -> np.ndarray:
    """Position tolerance (deg): instrument/zero error plus ~1 % lattice change (0.5 %)."""
    return 0.12 + 0.6 * np.tan(np.radians(np.asarray(two_theta) / 2.0))


def find_peaks(pattern: np.ndarray, mask: np.ndarray | None = None, min_height: float = 0.02) -> Peaks:
    """Local maxima of a background-free, max-1 pattern on MODEL_GRID."""
    y = np.asarray(pattern, np.float64)
    if mask is not None:
        y = np.where(mask, y, 0.0)
    top = float(y.max()) if y.size else 0.0
    if top <= 0:
        return Peaks(np.empty(0), np.empty(0))
    y = y / top
    idx, props = signal.find_peaks(y, height=min_height, prominence=min_height / 2, distance=4)
    return Peaks(GRID_START + idx * GRID_STEP, props["peak_heights"])


def _nearest_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each position in ``a`` the distance to the nearest in sorted ``b``."""
    if b.size == 0:
        return np.full(a.shape, np.inf)
    j = np.clip(np.searchsorted(b, a), 1, max(b.size - 1, 1))
    left = np.abs(a - b[j - 1])
    right = np.abs(b[np.minimum(j, b.size - 1)] - a)
    return np.minimum(left, right)


def match_peaks(scan: Peaks, reference: Peaks, first: float, last: float,
                policy: FlagPolicy = FlagPolicy()) -> Match:
    """How well ``reference`` explains ``scan`` inside the measured span [first, last]."""
    strong = scan.above(policy.strong_peak)
    inside = (reference.position >= first) & (reference.position <= last)
    ref = Peaks(reference.position[inside], reference.height[inside])
    ref_strong = ref.above(policy.reference_peak)
    if strong.position.size == 0 or ref_strong.position.size == 0:
        return Match(0.0, 0.0, 0.0, tuple(float(p) for p in strong.position))
    ref_sorted = np.sort(ref.position)
    scan_sorted = np.sort(scan.position)
    tol_s, tol_r = tolerance(strong.position), tolerance(ref_strong.position)
    best: tuple[float, float, float, float, np.ndarray] | None = None
    for shift in np.arange(-policy.max_zero_shift, policy.max_zero_shift + 1e-9, 0.02):
        dist_s = _nearest_distance(strong.position - shift, ref_sorted)
        hit_s = dist_s <= tol_s
        explained = float(strong.height[hit_s].sum() / strong.height.sum())
        hit_r = _nearest_distance(ref_strong.position + shift, scan_sorted) <= tol_r
        recovered = float(ref_strong.height[hit_r].sum() / ref_strong.height.sum())
        # Among equally good shifts, the one that puts the matched peaks closest wins.
        residual = float((dist_s * strong.height)[hit_s].sum() / max(strong.height[hit_s].sum(), 1e-12))
        key = (round(explained * recovered, 9), -residual)
        if best is None or key > (round(best[0] * best[1], 9), -best[3]):
            best = (explained, recovered, float(shift), residual, hit_s)
    assert best is not None
    explained, recovered, shift, _, hit_s = best
    missing = np.argsort(-strong.height[~hit_s])[:10]  # the strongest few are what a chemist checks
    return Match(explained, recovered, round(shift, 3), tuple(float(p) for p in strong.position[~hit_s][missing]))


@dataclass(frozen=True)
class Crystallinity:
    snr: float  # strongest sharp peak over the noise sigma
    relative: float  # strongest sharp peak over the signal's range (max - min)


#: Background window for the crystallinity test: wider than a reflection, narrower
#: than an amorphous hump (same reasoning as preprocess.BACKGROUND_WINDOW_DEG).
_BG_POINTS = 201
_SHARP_MAX_WIDTH = 100  # points (1 deg): anything wider is hump, not reflection


def crystallinity(values: np.ndarray, mask: np.ndarray) -> Crystallinity:
    """How clearly sharp reflections stand out of noise and background in raw counts.

    ``values`` are the scan's intensities on MODEL_GRID before any scaling; only the
    covered points are read. Noise sigma comes from the MAD of second differences,
    which a smooth background or hump does not inflate.
    """
    v = np.asarray(values, np.float64)[np.asarray(mask, bool)]
    if v.size < 2 * _BG_POINTS:
        return Crystallinity(snr=float("inf"), relative=1.0)  # too little to judge: don't cry wolf
    d2 = np.diff(v, 2)
    sigma = 1.4826 * float(np.median(np.abs(d2 - np.median(d2)))) / np.sqrt(6.0)
    smooth = ndimage.uniform_filter1d(v, 3, mode="nearest")
    bg = ndimage.grey_opening(smooth, size=_BG_POINTS, mode="nearest")
    bg = ndimage.uniform_filter1d(bg, _BG_POINTS, mode="nearest")
    resid = smooth - bg
    span = float(v.max() - v.min())
    if span <= 0:
        return Crystallinity(0.0, 0.0)
    _, props = signal.find_peaks(resid, prominence=0.0, width=(None, _SHARP_MAX_WIDTH), wlen=_BG_POINTS)
    prom = float(props["prominences"].max()) if props["prominences"].size else 0.0
    snr = prom / sigma if sigma > 0 else float("inf")
    return Crystallinity(snr=float(snr), relative=prom / span)


def decide(p_top: float, match: Match, cryst: Crystallinity | None, coverage_fraction: float,
           policy: FlagPolicy = FlagPolicy()) -> tuple[float, frozenset[Flag]]:
    """Combine the softmax and the evidence into (confidence, flags)."""
    flags: set[Flag] = set()
    confidence = float(np.sqrt(max(p_top, 0.0) * match.score))
    if coverage_fraction < policy.min_coverage:
        flags.add(Flag.LOW_COVERAGE)
    if cryst is not None and (cryst.snr < policy.amorphous_snr or cryst.relative < policy.amorphous_relative):
        flags.add(Flag.AMORPHOUS)
        return 0.0, frozenset(flags)
    if confidence < policy.unknown_threshold or match.score < policy.min_match:
        flags.add(Flag.UNKNOWN_PHASE)
    elif (1.0 - match.explained >= policy.mixture_unexplained
          and match.recovered >= policy.mixture_min_recovered):
        flags.add(Flag.MIXTURE)
    return confidence, frozenset(flags)
