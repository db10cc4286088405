"""The measured scan as the fit sees it: its whole range, its own wavelength, a uniform step.

The network reads 5-50 deg on the Cu scale; the fit reads everything that was measured (a MOF's
strongest reflections may lie at 2-5 deg, an inorganic phase's at 60-120 deg), in the scan's
own 2-theta so K-alpha2 and the Lorentz-polarisation factor are those of the real radiation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, signal

from xrd_agent.preprocess import despike
from xrd_agent.scan import ANODE_LINES

#: The fit never works on a step finer than this (deg); finer scans are bin-averaged.
MIN_STEP = 0.025
#: ... nor on more points than this (long scans are binned more coarsely).
MAX_POINTS = 3000
#: Lines wider than this (deg) are not counted as the scan's lines: a hump of 5 deg and more is
#: amorphous or glass scattering (Scherrer: crystallites under ~2 nm), not a reflection.
MAX_LINE_FWHM = 5.0
#: A line counts when it stands this many noise sigmas above its surroundings.
LINE_PROMINENCE = 10.0
LINES_MEASURED = 5


@dataclass(frozen=True, eq=False)
class Observed:
    two_theta: np.ndarray  # deg at ``wavelength``, uniform step
    y: np.ndarray  # intensity, the scan's own units
    step: float
    wavelength: float  # K-alpha1 (Angstrom)
    alpha2: float | None  # K-alpha2 (Angstrom) when the radiation has one
    sigma: float  # white-noise level (same units as y), from second differences
    line_fwhm: float | None = None  # deg, the scan's own line width (:func:`line_fwhm`); None unknown

    @property
    def n(self) -> int:
        return int(self.y.size)


def alpha2_for(wavelength: float, alpha2: float | None = None) -> float | None:
    """K-alpha2 of a known anode whose K-alpha1 is ``wavelength`` (or the one given)."""
    if alpha2 is not None and alpha2 > 0 and abs(alpha2 - wavelength) > 1e-4:
        return float(alpha2)
    for a1, a2 in ANODE_LINES.values():
        if a2 and abs(a1 - wavelength) < 2e-4:
            return float(a2)
    return None


def noise_sigma(y: np.ndarray) -> float:
    """White-noise sigma from the MAD of second differences (robust to peaks)."""
    if y.size < 5:
        return float(np.std(y)) or 1.0
    d2 = y[:-2] - 2 * y[1:-1] + y[2:]
    s = 1.4826 * float(np.median(np.abs(d2 - np.median(d2)))) / np.sqrt(6.0)
    return s if np.isfinite(s) and s > 0 else (float(np.std(d2)) / np.sqrt(6.0) or 1.0)


def observe(two_theta: np.ndarray, intensity: np.ndarray, wavelength: float, alpha2: float | None = None,
            min_step: float = MIN_STEP, max_points: int = MAX_POINTS) -> Observed:
    """Sorted, finite, despiked and on a uniform step (bin means). Raises ValueError when
    fewer than 20 points remain."""
    tt = np.asarray(two_theta, float).ravel()
    y = np.asarray(intensity, float).ravel()
    keep = np.isfinite(tt) & np.isfinite(y) & (tt > 0) & (tt < 180)
    tt, y = tt[keep], y[keep]
    order = np.argsort(tt, kind="stable")
    tt, y = tt[order], y[order]
    if tt.size < 20 or tt[-1] - tt[0] <= 0:
        raise ValueError("too few points to fit")
    y, _ = despike(y)
    native = float(np.median(np.diff(tt)))
    span = float(tt[-1] - tt[0])
    step = max(native, min_step, span / max_points)
    edges = np.arange(tt[0], tt[-1] + step, step)
    idx = np.clip(((tt - tt[0]) / step).astype(np.int64), 0, edges.size - 2)
    counts = np.bincount(idx, minlength=edges.size - 1)
    sums = np.bincount(idx, weights=y, minlength=edges.size - 1)
    filled = counts > 0
    centres = edges[:-1] + step / 2
    grid = centres
    values = np.interp(grid, centres[filled], sums[filled] / counts[filled])
    sigma = noise_sigma(values)
    return Observed(grid, values, step, float(wavelength), alpha2_for(wavelength, alpha2), sigma,
                    line_fwhm(values, step, sigma))


def line_fwhm(y: np.ndarray, step: float, sigma: float) -> float | None:
    """Median full width at half height (deg) of the scan's most prominent lines, None when
    none stands ``LINE_PROMINENCE`` sigma clear.

    The fit's width bounds and the prefilter's background window are made for laboratory lines
    (tenths of a degree up to 1 deg); a nanocrystalline sample (a few nm, a severely cold-worked
    alloy) has lines several degrees wide, which the fit could not draw and the background window
    cut off. Each line's width is measured at half its prominence (scipy's ``peak_widths``), so
    a sloping background does not widen it; the median of the strongest few is robust to a
    capillary hump or two lines merged."""
    if y.size < 9 or not sigma > 0:
        return None
    smooth = ndimage.uniform_filter1d(y, 3, mode="nearest")
    peaks, props = signal.find_peaks(smooth, prominence=LINE_PROMINENCE * sigma)
    if peaks.size == 0:
        return None
    widths = signal.peak_widths(smooth, peaks, rel_height=0.5,
                                prominence_data=(props["prominences"], props["left_bases"], props["right_bases"]))[0]
    widths = widths[np.argsort(-props["prominences"], kind="stable")] * step
    widths = widths[widths <= MAX_LINE_FWHM][:LINES_MEASURED]
    return float(np.median(widths)) if widths.size else None


def coarsen(obs: Observed, factor: int) -> Observed:
    """Means of ``factor`` neighbouring points: the same scan for stages whose peaks are
    broad (a grid search with 1 deg peaks needs no 0.025 deg step). White noise averages
    down by sqrt(factor)."""
    if factor <= 1:
        return obs
    m = obs.n // factor
    if m < 20:
        return obs
    tt = obs.two_theta[: m * factor].reshape(m, factor).mean(axis=1)
    y = obs.y[: m * factor].reshape(m, factor).mean(axis=1)
    return Observed(tt, y, obs.step * factor, obs.wavelength, obs.alpha2, obs.sigma / np.sqrt(factor), obs.line_fwhm)


def rough_background(obs: Observed, window_deg: float = 2.0) -> np.ndarray:
    """Morphological background (opening, then smoothing) for the prefilter only; the fit
    models its background itself. The opening follows the noise's lower envelope, a few sigma
    under the background, and cuts the top off a hump as wide as a capillary's; the running
    median of what it leaves (over 1.5 windows: the peaks, fewer than half of its points, do not
    move a median) puts it back on the background's middle."""
    w = max(3, int(round(window_deg / obs.step)) | 1)
    opened = ndimage.grey_opening(obs.y, size=w, mode="nearest")
    bg = ndimage.uniform_filter1d(opened, size=w, mode="nearest")
    return bg + ndimage.median_filter(obs.y - bg, size=(3 * w // 2) | 1, mode="nearest")
