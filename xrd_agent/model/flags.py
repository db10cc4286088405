"""Evidence for honest confidence and the warning flags: pure functions on arrays, no Keras.

A softmax always names *some* class, even for a silicon standard or an amorphous
failed synthesis. So the engine checks the network's answer with powder-diffraction
evidence that does not come from the network:

* **peak match** -- do the scan's strong reflections sit where the top reference has
  reflections, and are the reference's strong reflections (inside the measured range)
  present in the scan? A common zero shift of up to +-0.3 deg is allowed, and the
  position tolerance grows with tan(theta) like the shift of a lattice that is ~1 %
  larger or smaller than the reference's. Both shares are also measured for lines at
  random positions (their chance levels): a reference with a reflection every few tenths
  of a degree explains any line, and only the agreement beyond chance is evidence.
* **crystallinity** -- what share of the product is crystalline
  (:mod:`xrd_agent.crystallinity`, on the scan's raw points); :func:`crystallinity_verdict`
  turns it into ``amorphous`` / ``low_crystallinity`` when the scan covers enough to judge.

The judge (:mod:`xrd_agent.decide`) turns these measurements into confidence and flags
with the thresholds of :class:`FlagPolicy` (calibrated in docs/model.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import signal

from xrd_agent.crystallinity import Crystallinity
from xrd_agent.identification import Flag
from xrd_agent.pattern import GRID_START, GRID_STEP, Coverage


@dataclass(frozen=True)
class FlagPolicy:
    unknown_threshold: float = 0.35  # confidence (softmax x match score) below: unknown_phase
    min_match: float = 0.6  # peak-match score below: unknown_phase, whatever the softmax says
    min_coverage: float = 0.5  # covered share of 5-50 deg below: low_coverage
    amorphous_below: float = 0.25  # crystalline fraction below: amorphous (docs/preprocessing.md)
    low_crystallinity_below: float = 0.35  # ... below this (and not amorphous): low_crystallinity
    mixture_unexplained: float = 0.25  # share of strong-peak intensity the top phase leaves unexplained
    mixture_min_peaks: int = 2  # ... in at least this many reflections ...
    mixture_peak: float = 0.15  # ... each at least this strong (relative to the scan's max)
    mixture_min_recovered: float = 0.8  # the top phase itself must be clearly present
    strong_peak: float = 0.08  # relative height of a scan peak that must be explained
    weak_peak: float = 0.02  # relative height that counts as "present" in the scan
    reference_peak: float = 0.1  # relative height of a reference peak that must be found
    max_zero_shift: float = 0.3  # deg, common offset tried when matching
    intensity_ratio: float = 0.2  # a matching peak must be at least this share as strong
    min_above_chance: float = 0.3  # match score beyond chance below: unknown_phase (Match.above_chance)


def policy_from(model: Any) -> FlagPolicy:
    """The policy with the thresholds of a :class:`~xrd_agent.config.ModelConfig` (one place)."""
    return FlagPolicy(unknown_threshold=model.unknown_threshold, min_coverage=model.min_coverage,
                      amorphous_below=model.amorphous_below, low_crystallinity_below=model.low_crystallinity_below)


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
    unexplained_heights: tuple[float, ...] = ()  # their relative heights, same order
    chance_explained: float = 0.0  # ``explained`` a reference with these peaks reaches at random positions
    chance_recovered: float = 0.0  # ``recovered`` the scan's own peaks give any reference by chance

    @property
    def score(self) -> float:
        return float(np.sqrt(max(self.explained, 0.0) * max(self.recovered, 0.0)))

    @property
    def above_chance(self) -> float:
        """The score of the agreement beyond chance (Cohen's kappa of each share): a reference
        with a reflection every few tenths of a degree "explains" any line, and a noisy scan
        with a peak everywhere "recovers" any reference; neither is evidence."""
        def beyond(observed: float, chance: float) -> float:
            return max(0.0, (observed - chance) / max(1.0 - chance, 1e-9))

        return float(np.sqrt(beyond(self.explained, self.chance_explained)
                             * beyond(self.recovered, self.chance_recovered)))


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


def _strongest(peaks: Peaks, n: int) -> Peaks:
    order = np.argsort(-peaks.height)[:n]
    return Peaks(peaks.position[order], peaks.height[order])


def match_peaks(scan: Peaks, reference: Peaks, first: float, last: float,
                policy: FlagPolicy = FlagPolicy()) -> Match:
    """How well ``reference`` explains ``scan`` inside the measured span [first, last].

    A scan peak is explained by a reference peak within the position tolerance that is
    at least ``policy.intensity_ratio`` as strong (texture may change intensities a
    few-fold, not make a trace reflection the strongest line); a reference peak is
    recovered by a scan peak on the same terms. The reference is rescaled to its own
    maximum inside the measured span, so a partial scan is judged on what it measured.
    All zero shifts are tried at once (one array per shift), the best product wins.
    """
    return match_many(scan, [reference], first, last, policy)[0]


#: Grid step (deg) of the chance levels: well below the narrowest tolerance (0.12 deg).
CHANCE_STEP = 0.02


def _sorted_cover(pos: np.ndarray, height: np.ndarray, ok: np.ndarray, first: float, last: float) -> np.ndarray:
    """(rows, points): at every point of [first, last], the height of the row's strongest peak
    within tolerance of it, sorted along the row. The share of points at or above a height is
    the chance that a line at a random position finds a partner that strong."""
    x = first + CHANCE_STEP * np.arange(max(1, int(np.floor((last - first) / CHANCE_STEP)) + 1))
    tol = tolerance(pos)
    lo = np.searchsorted(x, pos - tol, "left")
    width = np.where(ok, np.searchsorted(x, pos + tol, "right") - lo, 0).ravel()
    lo = lo.ravel()
    rows = np.repeat(np.repeat(np.arange(pos.shape[0]), pos.shape[1]), width)
    cols = np.repeat(lo, width) + np.arange(width.sum()) - np.repeat(np.cumsum(width) - width, width)
    cover = np.zeros((pos.shape[0], x.size))
    np.maximum.at(cover, (rows, cols), np.repeat(height.ravel(), width))
    return np.sort(cover, axis=1)


def _share_at_least(cover: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Per row, the share of ``cover``'s (sorted) points at or above each of the row's ``levels``;
    one searchsorted for all rows (covers lie in [0, 1], so an offset of 2 per row keeps them apart)."""
    n, points = cover.shape
    offset = 2.0 * np.arange(n)[:, None]
    at = np.searchsorted((cover + offset).ravel(), (levels + offset).ravel(), "left").reshape(levels.shape)
    return 1.0 - (at - points * np.arange(n)[:, None]) / points


def match_many(scan: Peaks, references: list[Peaks], first: float, last: float,
               policy: FlagPolicy = FlagPolicy()) -> list[Match]:
    """:func:`match_peaks` of one scan against several references (the network's best
    candidates) at once. Only peak pairs within reach of each other (tolerance plus the
    largest zero shift) are compared at every shift, for all candidates in one array; the
    full (shift x scan peak x reference peak) cube per candidate was the cost. Same numbers,
    bit for bit, as comparing everything (tests/test_match_many.py)."""
    found = _strongest(scan, 60)
    strong = found.above(policy.strong_peak)
    out: list[Match | None] = [None] * len(references)
    usable: list[tuple[int, Peaks, Peaks]] = []
    for i, reference in enumerate(references):
        inside = (reference.position >= first) & (reference.position <= last)
        if not inside.any() or scan.position.size == 0:
            out[i] = Match(0.0, 0.0, 0.0, tuple(float(p) for p in scan.above(policy.strong_peak).position[:10]))
            continue
        ref = Peaks(reference.position[inside], reference.height[inside] / reference.height[inside].max())
        ref = _strongest(ref.above(policy.weak_peak), 80)
        ref_strong = ref.above(policy.reference_peak)
        if strong.position.size == 0 or ref_strong.position.size == 0:
            out[i] = Match(0.0, 0.0, 0.0, tuple(float(p) for p in strong.position[:10]))
            continue
        usable.append((i, ref, ref_strong))
    if not usable:
        return out  # type: ignore[return-value]
    n, width, strong_width = len(usable), max(r.position.size for _, r, _ in usable), \
        max(rs.position.size for _, _, rs in usable)
    ref_pos, ref_h = np.zeros((n, width)), np.zeros((n, width))
    ref_ok = np.zeros((n, width), bool)
    rs_pos, rs_h = np.zeros((n, strong_width)), np.zeros((n, strong_width))
    rs_ok = np.zeros((n, strong_width), bool)
    for c, (_, ref, ref_strong) in enumerate(usable):
        m, q = ref.position.size, ref_strong.position.size
        ref_pos[c, :m], ref_h[c, :m], ref_ok[c, :m] = ref.position, ref.height, True
        rs_pos[c, :q], rs_h[c, :q], rs_ok[c, :q] = ref_strong.position, ref_strong.height, True
    ratio = policy.intensity_ratio
    shifts = np.arange(-policy.max_zero_shift, policy.max_zero_shift + 1e-9, 0.02)
    nk = shifts.size
    reach = policy.max_zero_shift + 1e-6  # no shift moves a peak further than this
    # scan -> reference, (candidate, shift, strong scan peak): only the (peak, reference peak)
    # pairs close enough to match at some shift are compared, shift by shift, with the very
    # arithmetic of the full comparison; all other pairs could never be within tolerance.
    tol_s = tolerance(strong.position)
    near = (np.abs(strong.position[None, :, None] - ref_pos[:, None, :]) <= (tol_s + reach)[None, :, None]) & ref_ok[:, None, :]
    near &= ref_h[:, None, :] >= ratio * strong.height[None, :, None]
    pc, ps, pr = np.nonzero(near)
    d_s = np.abs(strong.position[ps][:, None] - shifts[None, :] - ref_pos[pc, pr][:, None])  # (pairs, shifts)
    ok_s = d_s <= tol_s[ps][:, None]
    at_s = (pc[:, None], np.arange(nk)[None, :], ps[:, None])
    hit_s = np.zeros((n, nk, strong.position.size), bool)
    np.logical_or.at(hit_s, at_s, ok_s)
    nearest = np.full(hit_s.shape, np.inf)
    np.minimum.at(nearest, at_s, np.where(ok_s, d_s, np.inf))
    explained = (hit_s * strong.height).sum(axis=2) / strong.height.sum()
    # reference -> scan, (candidate, shift, strong reference peak)
    tol_r = tolerance(rs_pos)
    near_r = (np.abs(rs_pos[:, :, None] - found.position[None, None, :]) <= (tol_r + reach)[:, :, None]) & rs_ok[:, :, None]
    near_r &= found.height[None, None, :] >= ratio * rs_h[:, :, None]
    qc, qq, qf = np.nonzero(near_r)
    d_r = np.abs(rs_pos[qc, qq][:, None] + shifts[None, :] - found.position[qf][:, None])
    hit_r = np.zeros((n, nk, strong_width), bool)
    np.logical_or.at(hit_r, (qc[:, None], np.arange(nk)[None, :], qq[:, None]), d_r <= tol_r[qc, qq][:, None])
    # Among equally good shifts, the one that puts the matched peaks closest wins.
    residual = (np.where(hit_s, nearest * strong.height, 0.0).sum(axis=2)
                / np.maximum((hit_s * strong.height).sum(axis=2), 1e-12))
    # What chance alone gives: lines at random positions in the span, against the same peaks
    # with the same tolerances and intensity rule (the common zero shift is left out).
    levels_s = np.broadcast_to(ratio * strong.height, (n, strong.position.size))
    chance_s = (_share_at_least(_sorted_cover(ref_pos, ref_h, ref_ok, first, last), levels_s)
                * strong.height).sum(axis=1) / strong.height.sum()
    found_cover = _sorted_cover(found.position[None, :], found.height[None, :],
                                np.ones((1, found.position.size), bool), first, last)
    chance_r = _share_at_least(np.broadcast_to(found_cover, (n, found_cover.shape[1])), ratio * rs_h)
    for c, (i, _, ref_strong) in enumerate(usable):
        q = ref_strong.position.size  # per-candidate sums over its own peaks: the same numbers as alone
        recovered = (hit_r[c, :, :q] * ref_strong.height).sum(axis=1) / ref_strong.height.sum()
        best = int(np.lexsort((residual[c], -np.round(explained[c] * recovered, 9)))[0])
        miss = ~hit_s[c, best]
        missing = np.argsort(-strong.height[miss])[:10]  # the strongest few are what a chemist checks
        out[i] = Match(float(explained[c, best]), float(recovered[best]), round(float(shifts[best]), 3),
                       tuple(float(p) for p in strong.position[miss][missing]),
                       tuple(float(h) for h in strong.height[miss][missing]),
                       float(chance_s[c]), float((chance_r[c, :q] * ref_strong.height).sum() / ref_strong.height.sum()))
    return out  # type: ignore[return-value]


#: A crystallinity verdict needs the low angles, where a MOF's strongest reflections are
#: (a 20-50 deg scan of a large-cell MOF shows only its weak quasi-continuum: it would
#: look amorphous), and at least ``min_coverage`` of 5-50 deg. 10 deg, plus half a degree
#: for scans that start "at 10" one step late.
VERDICT_FIRST_MAX_DEG = 10.5


def crystallinity_verdict(cryst: Crystallinity | None, coverage: Coverage, policy: FlagPolicy = FlagPolicy(),
                          amorphous_below: float | None = None, low_below: float | None = None) -> Flag | None:
    """``AMORPHOUS``, ``LOW_CRYSTALLINITY`` or None, from the estimate and what the scan covered.

    The calibrated fraction is compared with the thresholds (its uncertainty is reported,
    not subtracted: the calibration scatter near 0.2 is ~0.1, and a rule on the upper end of
    the interval would never call a failed synthesis failed). ``amorphous_below`` and
    ``low_below`` override the policy (per-sample thresholds from ``expect``).
    """
    if cryst is None or not np.isfinite(cryst.fraction):
        return None
    if coverage.fraction < policy.min_coverage or not coverage.first <= VERDICT_FIRST_MAX_DEG:
        return None
    amorphous = policy.amorphous_below if amorphous_below is None else amorphous_below
    low = policy.low_crystallinity_below if low_below is None else low_below
    if cryst.fraction < amorphous:
        return Flag.AMORPHOUS
    if cryst.fraction < low:
        return Flag.LOW_CRYSTALLINITY
    return None

