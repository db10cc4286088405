"""Whole-pattern fit of one or more reference phases to a measured scan (variable projection).

Model, per phase p with reflections j (reference m|F|^2 = F2_j, reflection spacing d_j from the
refined reciprocal metric):

    y(2theta) = sum_p [ a_p (1 - e_j) + b_p e_j ] F2_j LP(theta_j) MD_j(r_p) Phi(2theta - 2theta_j)
              + c_p F2_j LP MD Phi(2theta - 2theta_j(K-alpha2))             (when the tube has K-alpha2)
              + Chebyshev background (+ a 1/2theta term for air scatter at low angle)

* cell: each symmetry group g of reciprocal-metric terms (:mod:`.references`) is scaled by
  p_g, bounded so every axis stays within +-12 %, with a Gaussian prior on the principal
  log-stretches of the change (:func:`principal_stretches`; ln(axis change) when the angles stay;
  :func:`strain_sigma`: 4 % for frameworks, 1.5 % for dense solids) added to chi^2: large cell
  changes, shears included, must pay for themselves;
* zero shift (deg), pseudo-Voigt width FWHM^2 = W + U tan^2(theta) and Lorentz fraction eta;
* peak asymmetry (axial divergence): each line is a split pseudo-Voigt whose low-angle half is
  wider and high-angle half narrower by a fraction a_j = A cot(2theta_j) (clipped to +-SKEW_MAX):
  the low-angle tail of a laboratory scan's first lines, which a MOF's strongest reflections are,
  and which no symmetric profile, zero shift or cell change draws (the measured ZIF-67 scan's
  10 and 12.7 deg lines left a misfit of one sign below each line and the other above it:
  tests/test_verify.py). The mean half width is the symmetric one, so the area and the
  normalisation stay; A >= 0 is shared by the scan's phases;
* March-Dollase preferred orientation MD_j = (r^2 cos^2 alpha + sin^2 alpha / r)^(-3/2) about
  one of the reciprocal axes a*, b*, c* that the metric does not tie to another (the best is
  chosen; see ``Reference.texture_axes``), with a Gaussian prior on ln r (:func:`prior_residuals`);
* pore solvent: e_j = exp(-(d0/d_j)^2) splits each phase into a low-angle part (b_p, reflections
  with d >> d0) and the rest (a_p). Solvent in the pores changes low-angle intensities most; the
  split lets them scale on their own without freeing every reflection (a free Le Bail fit of a
  MOF with thousands of reflections fits anything and cannot discriminate);
* Debye-Waller: each phase's intensities carry a ramp in s^2 (two nonnegative columns whose
  coefficients sum to the scale at s = 0), the sample's overall displacement parameter being
  unknown;
* a_p, b_p, c_p >= 0 and the background are linear: for fixed nonlinear parameters they are
  solved exactly (background projected out, then NNLS), and ``scipy.optimize.least_squares``
  moves only the few nonlinear ones (variable projection). The weight-fraction scale of a
  phase is a_p (high angle, solvent-free).

Residuals are in units of the scan's white-noise sigma, scaled by sqrt(points per peak width):
neighbouring points within one peak width are not independent evidence, so chi^2 counts
resolution elements, and a prior term of 1 weighs as much as one resolution element. The points
per element are held while parameters move (else broader trial peaks would lower chi^2 by the
divisor alone) and, once the scan's profile is known, are the scan's for every candidate.

Speed: broad-peak stages run on the scan averaged down (``Fitter.coarse``), phases held fixed
are rendered once (``Fitter._phase``), each reflection is rendered over its own width's window
(lines of one width by a single convolution), and least squares gets an analytic Jacobian
(variable projection, Kaufman's approximation) instead of one render per parameter.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import linalg, optimize, signal, sparse

from xrd_agent.verify.observed import Observed, coarsen
from xrd_agent.verify.references import Reference, lorentz_polarisation

MAX_STRAIN = 0.12
STRAIN_PRIOR = 0.04  # sigma of a principal log-stretch: 4 % costs one resolution element of chi^2
#: Dense solids (oxides, metals, chalcogenides) do not breathe: their cells move by thermal
#: expansion and solid solution, tenths of a per cent to a few. Their prior is narrower, so a dense
#: phase's cell is not stretched by 5-10 % to borrow another phase's lines (alpha-Ti over Zr).
#: Dense means a crystal density of at least ``DENSE_FROM`` g/cm^3, which 97 % of the shipped MOF
#: references (porous frameworks, median 1.3) stay below and inorganic phases exceed.
DENSE_STRAIN_PRIOR = 0.015
DENSE_FROM = 2.5
AMU_G = 1.66054  # g/cm^3 of one amu per cubic Angstrom
#: sigma of ln r of the March-Dollase factor: r = 0.6 (or 1/0.6) costs one resolution element
TEXTURE_PRIOR = 0.5
SOLVENT_D0 = 6.0  # Angstrom
DW_RANGE = (-1.0, 3.0)  # Angstrom^2: overall B of the sample minus the reference's
SCALE_COLUMNS = 2  # a phase's first columns, whose coefficients sum to its scale
SOLVENT_MIN_SHARE = 0.05  # a phase gets the solvent column only with this share of intensity beyond d0
BACKGROUND_ORDER = 6
ZERO_LIMIT = 0.35  # deg
#: Widest peaks a phase may have: FWHM 1 deg at low angle (W) and a tan-theta term U that adds
#: ~0.6 deg at 2-theta 60 deg. Nanocrystalline products (a few nm: ZnS quantum dots, nano-MOFs)
#: have peaks this broad; at 0.4 deg the byo-cif ZnS scan fitted nothing. Broader features are
#: background or amorphous scattering (xrd_agent/crystallinity.py judges those).
MAX_W = 1.0
#: ... unless the scan's own lines are broader (:func:`broad_fwhm`): a severely cold-worked alloy
#: or a 2-nm crystallite has lines of 3-5 deg that no laboratory profile draws. Such a scan starts
#: its fit at its measured width and may widen to this many times it.
BROAD_MARGIN = 1.5
WINDOW_FWHM = 12.0  # a reflection is rendered over +-12 of its FWHM
MAX_SEARCH_GROUPS = 4  # cells with more free metric groups (triclinic) skip the per-axis grid search
MAX_U = 1.0
#: Points per FWHM a stage with broad trial peaks needs; the scan is averaged down to that.
POINTS_PER_FWHM = 4.0
#: Lines of one width, this many or more, are drawn by convolution (:func:`_render_convolved`)
#: on a grid this many times finer than the scan's.
CONVOLVE_FROM = 300
OVERSAMPLE = 8
#: Largest asymmetry A of the profile (fraction of the half width per unit cot 2theta): 0.1 makes
#: a 5-deg line's low-angle half 2.1 times as wide as its high-angle half. A line's fraction is
#: clipped to SKEW_MAX.
MAX_ASYM = 0.1
SKEW_MAX = 0.6
#: Below this |A| the profile is drawn symmetric (a line's halves differ by under 1e-8): the
#: bound at zero leaves least squares a few 1e-12 above it, not worth the split profile's cost.
SKEW_FROM = 1e-9


@dataclass(frozen=True)
class Shape:
    """Nonlinear parameters shared by all phases of a scan."""

    zero: float = 0.0
    w: float = 0.01  # deg^2
    u: float = 0.01  # deg^2
    eta: float = 0.5
    ka2: float = 0.5  # I(K-alpha2)/I(K-alpha1); refined (0 for stripped or monochromated data)
    asym: float = 0.0  # A: low-angle half wider by A cot(2theta) of the half width (axial divergence)


@dataclass(frozen=True, eq=False)
class PhaseState:
    """One phase's nonlinear parameters."""

    ref: Reference
    lnp: np.ndarray  # ln of the group scale factors of 1/d^2
    axis: int = -1  # March-Dollase axis (0 a*, 1 b*, 2 c*), -1 none
    ln_r: float = 0.0


@dataclass(frozen=True, eq=False)
class Located:
    """A candidate after the coarse stage: its phases, the coarse shape, its coarse misfit, and
    the other starts the coarse stage ranked lower but the strain prior favours (each refined at
    full resolution too: broad trial peaks on a scan averaged down do not always rank two nearby
    minima right)."""

    phases: tuple[PhaseState, ...]
    shape: Shape
    cost: float
    others: tuple[Located, ...] = ()


@dataclass(frozen=True, eq=False)
class Design:
    """Linear part: background basis, orthonormalised once per scan."""

    basis: np.ndarray  # (n, K)
    q: np.ndarray  # orthonormal columns spanning basis
    r: np.ndarray  # basis = q @ r


def background_design(obs: Observed, order: int = BACKGROUND_ORDER) -> Design:
    x = np.linspace(-1.0, 1.0, obs.n)
    cheb = np.polynomial.chebyshev.chebvander(x, order)
    inv = 1.0 / np.maximum(obs.two_theta, 0.5)
    basis = np.column_stack([cheb, inv / inv.max()])
    q, r = np.linalg.qr(basis)
    return Design(basis, q, r)


def broad_fwhm(obs: Observed) -> float | None:
    """The scan's measured line width (deg) when it is broader than ``MAX_W`` allows, else None:
    only then do the width bound, the starting width and the prefilter's background window follow
    the scan (every scan with laboratory lines is fitted as it always was)."""
    f = obs.line_fwhm
    return f if f is not None and f * f > MAX_W else None


def width_bound(obs: Observed) -> float:
    """The bound on W (deg^2): ``MAX_W``, or wide enough for the scan's own broad lines."""
    f = broad_fwhm(obs)
    return MAX_W if f is None else (BROAD_MARGIN * f) ** 2


def start_shape(obs: Observed) -> Shape:
    """Where a fit's profile starts: the laboratory default, or the scan's own broad lines."""
    f = broad_fwhm(obs)
    return Shape() if f is None else Shape(w=f * f)


def points_per_element(obs: Observed, shape: Shape) -> float:
    """Scan points per resolution element (one FWHM at mid range), at least 1."""
    mid = np.radians(float(obs.two_theta[obs.n // 2]) / 2.0)
    fwhm = np.sqrt(max(shape.w + shape.u * np.tan(mid) ** 2, 1e-6))
    return max(1.0, fwhm / obs.step)


@functools.lru_cache(maxsize=1024)
def _cos2(ref: Reference, axis: int) -> np.ndarray:
    """cos^2 of the angle between each reflection's normal and reciprocal axis ``axis``, in the
    reference metric: fixed per reference, so computed once (the cell's refinement moves
    positions, not the texture geometry)."""
    g = ref.gstar
    h = ref.hkl
    gh = h @ g[:, axis]  # h . G* . e_axis
    return np.clip(gh**2 / (np.einsum("ij,jk,ik->i", h, g, h) * g[axis, axis]), 0.0, 1.0)


def _march_dollase(ref: Reference, axis: int, ln_r: float) -> np.ndarray:
    if axis < 0 or ln_r == 0.0:
        return np.ones(ref.d.size)
    cos2 = _cos2(ref, axis)
    r = np.exp(ln_r)
    return (r * r * cos2 + (1.0 - cos2) / r) ** -1.5


@dataclass(frozen=True, eq=False)
class Lines:
    """A phase's reflections inside the scan, K-alpha2 lines after the K-alpha1 ones, with what
    the analytic Jacobian needs: each line's derivatives of position and width."""

    pos: np.ndarray  # deg
    fwhm: np.ndarray  # deg
    amps: np.ndarray  # (M, C) per unit of each linear column's coefficient, K-alpha2 at ratio 1
    alpha2: np.ndarray  # (M,) bool: a K-alpha2 line (its amplitude scales with ``Shape.ka2``)
    dpos_dlnp: np.ndarray  # (M, G) d(2theta)/d ln p_g
    dfwhm_dlnw: np.ndarray  # (M,)
    dfwhm_dlnu: np.ndarray  # (M,)
    dlnmd_dlnr: np.ndarray  # (M,) d ln(March-Dollase factor)/d ln r
    reflection: np.ndarray  # (M,) the K-alpha1 line (index) whose reflection each line draws

    def rendered(self, ka2: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Positions, widths and amplitudes of the lines as drawn at K-alpha2 ratio ``ka2``."""
        if ka2 <= 0:
            keep = ~self.alpha2
            return self.pos[keep], self.fwhm[keep], self.amps[keep]
        return self.pos, self.fwhm, np.where(self.alpha2[:, None], ka2 * self.amps, self.amps)

    def skew(self, shape: Shape, every: bool = False) -> np.ndarray | None:
        """Each line's asymmetry fraction at ``shape`` (the lines :meth:`rendered` draws, or
        ``every`` line, as the derivatives take them); None for a symmetric profile."""
        if abs(shape.asym) < SKEW_FROM:
            return None
        a = line_skew(self.pos, shape.asym)
        return a if every or shape.ka2 > 0 else a[~self.alpha2]


def _cot_2theta(pos: np.ndarray) -> np.ndarray:
    return 1.0 / np.tan(np.radians(np.clip(pos, 0.5, 179.5)))


def line_skew(pos: np.ndarray, asym: float) -> np.ndarray:
    """Asymmetry fraction of lines at ``pos`` (deg 2theta): A cot(2theta), clipped."""
    return np.clip(asym * _cot_2theta(pos), -SKEW_MAX, SKEW_MAX)


def _skew_slope(pos: np.ndarray, asym: float) -> np.ndarray:
    """d(line_skew)/dA: cot(2theta) where the fraction is not clipped."""
    g = _cot_2theta(pos)
    return np.where(np.abs(asym * g) < SKEW_MAX, g, 0.0)


def _march_dollase_dlnr(ref: Reference, axis: int, ln_r: float) -> np.ndarray:
    """d ln MD / d ln r of :func:`_march_dollase`."""
    if axis < 0:
        return np.zeros(ref.d.size)
    cos2 = _cos2(ref, axis)
    r = np.exp(ln_r)
    f = r * r * cos2 + (1.0 - cos2) / r
    return -1.5 * (2.0 * r * r * cos2 - (1.0 - cos2) / r) / f


def _positions(wavelength: float, d: np.ndarray, zero: float
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ok, theta and 2theta (deg) of the reachable reflections, d(2theta)/d(1/d^2) of them)."""
    s = wavelength / (2.0 * d)
    ok = s < 0.999
    theta = np.arcsin(s[ok])
    # 2theta(deg) = (360/pi) arcsin(lambda sqrt(q) / 2): its derivative in q = 1/d^2 is
    # (90/pi) lambda d / cos(theta)
    slope = (90.0 / np.pi) * wavelength * d[ok] / np.cos(theta)
    return ok, theta, np.degrees(2 * theta) + zero, slope


def phase_lines(obs: Observed, state: PhaseState, shape: Shape) -> Lines:
    """The phase's reflections inside the scan range as lines (see :func:`phase_columns` for
    the columns' physics)."""
    ref = state.ref
    p = np.exp(state.lnp)
    d_all = 1.0 / np.sqrt(np.maximum(ref.basis @ p, 1e-12))
    ok, theta, pos, slope = _positions(obs.wavelength, d_all, shape.zero)
    lo, hi = obs.two_theta[0] - 1.0, obs.two_theta[-1] + 1.0
    keep = (pos > lo) & (pos < hi)
    theta, pos, slope = theta[keep], pos[keep], slope[keep]
    sel = np.flatnonzero(ok)[keep]
    d = d_all[sel]
    md = _march_dollase(ref, state.axis, state.ln_r)[sel]
    inten = ref.f2[sel] * lorentz_polarisation(theta) * md
    tan2 = np.tan(theta) ** 2
    fwhm = np.sqrt(np.maximum(shape.w + shape.u * tan2, 1e-5))
    solvent = np.exp(-((SOLVENT_D0 / d) ** 2))
    low = float(np.sum(inten * solvent))
    main = inten * (1 - solvent)
    # Debye-Waller: the reference's displacement parameters are not the sample's; an overall
    # change dB scales intensities by exp(-dB s^2). Two nonnegative columns main x (1 + g t),
    # t = s^2 / s_max^2 over the scan, with g at the ends of dB in [DW_RANGE], span every
    # fall-off in that range (linearly in s^2) and no unphysical one; the sum of their two
    # coefficients is the scale at s = 0 (the Hill-Howard scale). Without it isostructural
    # phases (Ti and Zr, hcp) were told apart by their scattering factors' fall-off instead of
    # their cells.
    s_max2 = (np.sin(np.radians(obs.two_theta[-1] / 2.0)) / obs.wavelength) ** 2
    t = np.clip((1.0 / (2.0 * d)) ** 2 / s_max2, 0.0, 1.0)
    g_lo, g_hi = np.expm1(-DW_RANGE[1] * s_max2), np.expm1(-DW_RANGE[0] * s_max2)
    # pores hold solvent only in frameworks with large cells: a phase gets the low-angle column
    # when it has reflections beyond d0 (a layered hydroxide's strong 4.6 A line is not pore
    # solvent, and a free scale on it cost its weight fraction 10 points)
    with_solvent = (bool(pos.size) and float(d.max()) >= SOLVENT_D0
                    and low >= SOLVENT_MIN_SHARE * float(np.sum(inten)))
    base = main if with_solvent else inten
    parts = [base * (1 + g_lo * t), base * (1 + g_hi * t)]
    if with_solvent:
        parts.append(inten * solvent)
    amps = np.column_stack(parts) if pos.size else np.zeros((0, 2))
    half = np.where(fwhm * fwhm > 1e-5, 0.5 / fwhm, 0.0)
    dpos = slope[:, None] * ref.basis[sel] * p[None, :]
    dlnmd = _march_dollase_dlnr(ref, state.axis, state.ln_r)[sel]
    dw, du = shape.w * half, shape.u * tan2 * half
    alpha2 = np.zeros(pos.size, bool)
    reflection = np.arange(pos.size)
    if obs.alpha2 is not None and pos.size:
        ok2, _, pos2, slope2 = _positions(obs.alpha2, d, shape.zero)
        alpha2 = np.concatenate([alpha2, np.ones(int(ok2.sum()), bool)])
        reflection = np.concatenate([reflection, np.flatnonzero(ok2)])
        pos = np.concatenate([pos, pos2])
        fwhm = np.concatenate([fwhm, fwhm[ok2]])
        amps = np.concatenate([amps, amps[ok2]])
        dpos = np.concatenate([dpos, slope2[:, None] * ref.basis[sel][ok2] * p[None, :]])
        dlnmd = np.concatenate([dlnmd, dlnmd[ok2]])
        dw, du = np.concatenate([dw, dw[ok2]]), np.concatenate([du, du[ok2]])
    return Lines(pos, fwhm, amps, alpha2, dpos, dw, du, dlnmd, reflection)


def _scatter(start: np.ndarray, off: np.ndarray, windows: np.ndarray, weights: np.ndarray, size: int) -> np.ndarray:
    """(T, size): sum over lines j of weights[j, t] x windows[j] placed at start[j] + off. A
    sparse matrix whose columns are the lines' windows, times the weights: one compiled pass
    for every column instead of a weighted bincount (and its temporary) per column."""
    m, width = windows.shape
    a = sparse.csc_matrix((windows.ravel(), (start[:, None] + off[None, :]).ravel(),
                           np.arange(0, m * width + 1, width)), shape=(size, m))
    return np.asarray(a @ weights).T


C_GAUSS = np.sqrt(np.log(2) / np.pi)  # peak height of an area-normalised Gaussian in z = x / HWHM


def _windows(obs: Observed, pos: np.ndarray, fwhm: np.ndarray, skew: np.ndarray | None = None
             ) -> tuple[int, int, list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, slice, np.ndarray,
                                             Any]]]:
    """Where :func:`render` and :func:`render_derivatives` evaluate each reflection: over
    +-``WINDOW_FWHM`` of its own width, reflections bucketed by width (factors of two) so the
    sharp low-angle peaks of a wide scan do not pay for the window of its broadest high-angle
    ones, in a buffer with a margin wide enough that no window leaves it (no masking).
    Returns (buffer size, margin, per bucket: selection, window starts in the buffer, offsets,
    z = (2theta - pos) / HWHM over the window, the slice of the Gaussian core (3 FWHM), HWHM,
    and s, 1 for a symmetric profile). With ``skew`` (each line's asymmetry fraction a), z is the
    split profile's argument (2theta - pos) / (HWHM s), s = 1 + a below the line and 1 - a above
    it (:func:`split`, (K, T)), and the windows are wider by (1 + |a|)."""
    n = obs.n
    widen = 1.0 if skew is None else 1.0 + np.abs(skew)
    half_each = np.maximum(np.ceil(WINDOW_FWHM * fwhm * widen / obs.step), 1.0)
    centre = np.rint((pos - obs.two_theta[0]) / obs.step).astype(np.int64)
    margin = int(half_each.max()) + max(0, int(-centre.min()), int(centre.max() - n + 1)) + 1
    bucket = np.floor(np.log2(half_each)).astype(np.int64)
    out = []
    for b in np.unique(bucket):
        sel = bucket == b
        half = int(half_each[sel].max())
        off = np.arange(-half, half + 1)
        hw = fwhm[sel, None] / 2.0
        z = (obs.two_theta[0] - pos[sel, None]) / hw + (centre[sel, None] + off[None, :]) * (obs.step / hw)
        s: Any = 1.0
        if skew is not None:
            s = split(z, skew[sel])
            z = z / s
        core = int(min(half, np.ceil(3.0 * float(fwhm[sel].max()) / obs.step)))
        out.append((sel, centre[sel] + margin, off, z, slice(half - core, half + core + 1), hw, s))
    return n + 2 * margin, margin, out


def split(z: np.ndarray, skew: np.ndarray) -> np.ndarray:
    """(K, T) the factor s by which each half of a split profile is wider: 1 + a below the line
    (z < 0), 1 - a above it. The half widths average to the symmetric one, so the area under
    (step / HWHM) phi(z / s) stays one."""
    return 1.0 + np.where(z < 0, 1.0, -1.0) * skew[:, None]


def render(obs: Observed, pos: np.ndarray, fwhm: np.ndarray, eta: float, amps: np.ndarray,
           skew: np.ndarray | None = None) -> np.ndarray:
    """Columns (n, C) of area-normalised pseudo-Voigt peaks at ``pos`` with amplitudes ``amps`` (M, C),
    each over its own window (:func:`_windows`). (A Fourier-domain render as in
    :mod:`xrd_agent.model.augment` was tried: with the width nodes a 5-165 deg scan needs and
    the oversampling its sharpest peaks need, it was no faster at the fit's <= 3000 points.)"""
    n, ncol = obs.n, amps.shape[1]
    if pos.size == 0:
        return np.zeros((n, ncol))
    if skew is None and pos.size > CONVOLVE_FROM and np.all(fwhm == fwhm[0]):
        return _render_convolved(obs, pos, float(fwhm[0]), eta, amps)
    size, margin, buckets = _windows(obs, pos, fwhm, skew)
    out = np.zeros((ncol, size))
    for sel, start, off, z, mid, hw, _ in buckets:
        z2 = z * z
        prof = (eta / np.pi) / (1.0 + z2)
        # the Gaussian part is nothing beyond 3 FWHM (z = 6): exp only over the core
        prof[:, mid] += (1 - eta) * C_GAUSS * np.exp(-np.log(2) * z2[:, mid])
        prof *= obs.step / hw
        out += _scatter(start, off, prof, amps[sel], size)
    return out[:, margin:margin + n].T


def _render_convolved(obs: Observed, pos: np.ndarray, fwhm: float, eta: float, amps: np.ndarray) -> np.ndarray:
    """:func:`render` for lines of one width (the cell search's broad trial peaks): the lines
    dropped onto a grid ``OVERSAMPLE`` times finer than the scan's (linear weights: the centroid
    exact, the width changed by (step / OVERSAMPLE)^2 / 6 in variance, under 0.1 % at these
    widths) and convolved once with the profile. A MOF's thousands of reflections cost a
    bincount and one FFT convolution instead of a window each."""
    n, ncol = obs.n, amps.shape[1]
    half = int(max(np.ceil(WINDOW_FWHM * fwhm / obs.step), 1.0))
    core = int(min(half, np.ceil(3.0 * fwhm / obs.step)))
    m = OVERSAMPLE
    fine = obs.step / m
    hw = fwhm / 2.0
    k = np.arange(-half * m, half * m + 1)
    z2 = (k * (fine / hw)) ** 2
    kernel = (eta / np.pi) / (1.0 + z2)
    mid = np.abs(k) <= core * m
    kernel[mid] += (1 - eta) * C_GAUSS * np.exp(-np.log(2) * z2[mid])
    kernel *= obs.step / hw
    u = (pos - obs.two_theta[0]) / fine
    margin = half + 2 + int(max(0.0, -np.floor(u.min() / m), np.ceil(u.max() / m) - n + 1))
    u = u + margin * m
    i0 = np.floor(u).astype(np.int64)
    frac = u - i0
    size = (n + 2 * margin) * m + 1
    sticks = np.empty((ncol, size))
    for c in range(ncol):
        sticks[c] = (np.bincount(i0, weights=amps[:, c] * (1.0 - frac), minlength=size)
                     + np.bincount(i0 + 1, weights=amps[:, c] * frac, minlength=size)[:size])
    full = signal.fftconvolve(sticks, kernel[None, :], mode="full", axes=1)
    at = (np.arange(n) + margin) * m + half * m
    return full[:, at].T


def render_derivatives(obs: Observed, pos: np.ndarray, fwhm: np.ndarray, eta: float,
                       terms: list[tuple[str, np.ndarray]], skew: np.ndarray | None = None) -> np.ndarray:
    """Columns (n, T): for each term (kind, w), sum_j w_j x one derivative of reflection j's
    profile as :func:`render` draws it (same windows and Gaussian core): ``"pos"`` d/d(position),
    ``"fwhm"`` d/d(FWHM), ``"eta"`` d/d(Lorentz fraction), ``"skew"`` d/d(asymmetry fraction),
    ``"prof"`` the profile itself (with ``skew``, of the split profile).
    The analytic Jacobian of a fit is a handful of these instead of one render per parameter."""
    n = obs.n
    if pos.size == 0 or not terms:
        return np.zeros((n, len(terms)))
    size, margin, buckets = _windows(obs, pos, fwhm, skew)
    full = np.zeros((len(terms), size))
    kinds = {k for k, _ in terms}
    for sel, start, off, z, mid, hw, s in buckets:  # z the split profile's argument, s its widening
        lor = 1.0 / (1.0 + z * z)
        zc = z[:, mid]
        gauss = C_GAUSS * np.exp(-np.log(2) * zc * zc)  # over the core only, as render draws it
        scale = obs.step / hw
        phi = (eta / np.pi) * lor
        phi[:, mid] += (1 - eta) * gauss
        base: dict[str, np.ndarray] = {}
        if "prof" in kinds:
            base["prof"] = phi * scale
        if kinds & {"pos", "fwhm", "skew"}:
            # phi'(z): Lorentzian part everywhere, Gaussian part over the core
            dphi = (-2.0 * eta / np.pi) * z * lor * lor
            dphi[:, mid] -= (2.0 * np.log(2) * (1 - eta)) * zc * gauss
            if "pos" in kinds:  # z = (x - pos) / (hw s)
                base["pos"] = dphi * (-scale / (hw * s))
            if "skew" in kinds:  # dz/da = -z (+-1) / s: the half below the line widens
                base["skew"] = dphi * (-z * np.where(z < 0, 1.0, -1.0) / s) * scale
            if "fwhm" in kinds:  # d/dFWHM = d/dhw / 2 of (step / hw) phi((x - pos) / hw)
                base["fwhm"] = (phi + z * dphi) * (-scale / (2.0 * hw))
        if "eta" in kinds:
            d_eta = lor / np.pi
            d_eta[:, mid] -= gauss
            base["eta"] = d_eta * scale
        for kind, arr in base.items():
            which = [c for c, (k, _) in enumerate(terms) if k == kind]
            weights = np.column_stack([terms[c][1][sel] for c in which])
            full[which] += _scatter(start, off, arr, weights, size)
    return full[:, margin:margin + n].T


def phase_columns(obs: Observed, lines: Lines, shape: Shape) -> np.ndarray:
    """(n, 2 or 3) columns of a phase's :func:`phase_lines`: the phase (two Debye-Waller ramp
    columns), and its low-angle (pore solvent) part when the phase has reflections there (an
    inorganic phase with nothing beyond d0 gets no third column). K-alpha2 lines ride on each
    column at the shared ratio ``shape.ka2``."""
    pos, fwhm, amps = lines.rendered(shape.ka2)
    return render(obs, pos, fwhm, shape.eta, amps, lines.skew(shape))


@dataclass(frozen=True, eq=False)
class LinearSolution:
    coef: np.ndarray  # nonnegative phase coefficients
    background: np.ndarray  # background coefficients
    model: np.ndarray
    chi2: float  # sum of squared residuals / sigma^2 (raw points)


def solve_linear(obs: Observed, design: Design, cols: np.ndarray) -> LinearSolution:
    """Exact optimum of the linear parameters: background projected out, then NNLS."""
    y = obs.y
    q = design.q
    yc = y - q @ (q.T @ y)
    if cols.shape[1]:
        norms = np.sqrt(np.sum(cols * cols, axis=0))
        norms[norms <= 0] = 1.0
        pc = cols / norms
        pc = pc - q @ (q.T @ pc)
        coef, _ = optimize.nnls(pc, yc, maxiter=50 * cols.shape[1])
        coef = coef / norms
        phase = cols @ coef
    else:
        coef = np.zeros(0)
        phase = np.zeros_like(y)
    proj = q.T @ (y - phase)
    bg = np.linalg.solve(design.r, proj)
    model = phase + q @ proj
    chi2 = float(np.sum((y - model) ** 2)) / obs.sigma**2
    return LinearSolution(coef, bg, model, chi2)


@dataclass(frozen=True, eq=False)
class FitResult:
    phases: tuple[PhaseState, ...]
    shape: Shape
    linear: LinearSolution
    chi2: float  # in resolution elements (raw chi^2 / points per element)
    chi2_background: float  # same, background-only model
    prior: float  # strain prior cost (same units)
    rwp: float
    rwp_background: float
    n_elements: float  # resolution elements in the scan
    columns: tuple[int, ...]  # number of linear columns per phase
    covariance: np.ndarray | None = field(default=None)  # of the phase coefficients

    def cell(self, k: int = 0) -> np.ndarray:
        st = self.phases[k]
        return st.ref.cell_for(np.exp(st.lnp))

    def cell_change(self, k: int = 0) -> np.ndarray:
        """Per cent change of a, b, c (and degrees of alpha, beta, gamma) against the reference."""
        new, old = self.cell(k), self.phases[k].ref.cell
        return np.concatenate([(new[:3] / old[:3] - 1.0) * 100.0, new[3:] - old[3:]])

    def scale_matrix(self) -> np.ndarray:
        """(columns, phases): which coefficients sum to each phase's Hill-Howard scale (the
        solvent-free part at s = 0)."""
        e = np.zeros((int(sum(self.columns)), len(self.columns)))
        start = 0
        for k, width in enumerate(self.columns):
            e[start:start + min(SCALE_COLUMNS, width), k] = 1.0
            start += width
        return e

    @property
    def improvement(self) -> float:
        """Share of the background-only misfit the phases explain, 1 - chi2 / chi2_background."""
        return float(1.0 - self.chi2 / self.chi2_background) if self.chi2_background > 0 else 0.0


def rwp(y: np.ndarray, model: np.ndarray) -> float:
    """Weighted profile R with unit weights (the scan's noise is taken as uniform)."""
    den = float(np.sum(y * y))
    return float(np.sqrt(np.sum((y - model) ** 2) / den)) if den > 0 else 1.0


def dense(ref: Reference) -> bool:
    """A dense solid (crystal density at least ``DENSE_FROM``), not a framework; False for a
    reference without an absolute scale, whose density is unknown."""
    density = ref.cell_mass * AMU_G / ref.volume if ref.volume > 0 else float("nan")
    return bool(np.isfinite(density) and density >= DENSE_FROM)


def strain_sigma(ref: Reference) -> float:
    """The width of the prior on the principal log-stretches: narrow for dense solids, wide for frameworks."""
    return DENSE_STRAIN_PRIOR if dense(ref) else STRAIN_PRIOR


def principal_stretches(ref: Reference, lnp: np.ndarray) -> np.ndarray:
    """ln of the principal stretches (ascending) of the deformation from the reference lattice to
    the one ``lnp`` gives: half the log-eigenvalues of G0^-1 G1 (G the direct metrics; the same as
    G0* G1*^-1), the Hencky strain's principal values. They measure the change of the lattice, not
    of one setting's numbers: for a cell whose angles stay put they are ln(a'/a), ln(b'/b),
    ln(c'/c), and a change of angle is a shear that stretches one direction and shortens another.
    NaN when ``lnp`` leaves no lattice (a metric that is not positive definite)."""
    g1 = ref.gstar_for(np.exp(lnp))
    try:
        mu = linalg.eigh(ref.gstar, g1, eigvals_only=True)
    except (linalg.LinAlgError, ValueError):
        return np.full(3, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 0.5 * np.log(mu)


def lattice_allowed(state: PhaseState, tol: float = 1e-3) -> bool:
    """Whether the phase's lattice stayed within the allowed change, +-``MAX_STRAIN`` along every
    principal direction. The fit bounds each metric group, which keeps every axis of a cell whose
    angles are fixed by its metric within it; an oblique cell's groups scaled independently can
    still stretch a direction by 17-32 % (triclinic MOFs fitted to simulated scans of other
    materials), a lattice the check does not allow."""
    s = principal_stretches(state.ref, state.lnp)
    return bool(np.all(np.isfinite(s)) and s.min() >= np.log1p(-MAX_STRAIN) - tol
                and s.max() <= np.log1p(MAX_STRAIN) + tol)


def strain_cost(state: PhaseState, prior: float | None = None) -> np.ndarray:
    """Prior residuals: the principal log-stretches of the cell change / prior (prior:
    :func:`strain_sigma` of the phase). Per-axis length changes would let an oblique cell shear
    for free: a triclinic MOF fitted a simulated scan of another material with its angles moved
    6-8 degrees at the cost of its axis lengths alone, and the same lattice in another setting
    would have cost differently. Scaling an oblique cell's metric groups independently can leave
    no lattice at all: that costs as much as the widest allowed change on every axis, twice over."""
    if prior is None:
        prior = strain_sigma(state.ref)
    out = principal_stretches(state.ref, state.lnp) / prior
    if not np.all(np.isfinite(out)):
        return np.full(3, 2.0 * np.log1p(MAX_STRAIN) / prior)
    return out


def prior_residuals(state: PhaseState) -> np.ndarray:
    """The phase's prior residuals: its cell change (:func:`strain_cost`) and, when it has a
    March-Dollase axis, ln r / ``TEXTURE_PRIOR``. Texture scales every reflection by up to
    r^-3: a reference with thousands of reflections (a triclinic MOF) and free texture can put
    strong lines almost anywhere, and fitted a rock-salt MnS scan at r = 0.4 (explaining 73 %
    of it). Powders rarely go past r = 0.6; stronger texture must pay for itself, as a large
    cell change does."""
    cost = strain_cost(state)
    if state.axis < 0:
        return cost
    return np.append(cost, state.ln_r / TEXTURE_PRIOR)


def ln_p_range(max_strain: float | np.ndarray) -> tuple[Any, Any]:
    """Bounds on ln p for axes within +-``max_strain`` (a number or an array of them): 1/d^2
    scales as 1/a^2, so ln p lies within -2 ln(1 + s) .. -2 ln(1 - s)."""
    return -2.0 * np.log1p(max_strain), -2.0 * np.log1p(-np.asarray(max_strain))


def lnp_bounds(ref: Reference, max_strain: float = MAX_STRAIN) -> tuple[float, float]:
    """Bounds on ln p of ``ref``'s groups: every axis within +-``max_strain``."""
    lo, hi = ln_p_range(max_strain)
    return float(lo), float(hi)


class Fitter:
    """Fits phases to one scan; holds the scan's fixed design."""

    def __init__(self, obs: Observed, max_nfev: int = 16) -> None:
        self.obs = obs
        self.design = background_design(obs)
        self.max_nfev = max_nfev
        bg = solve_linear(obs, self.design, np.zeros((obs.n, 0)))
        self.background = bg
        self.rwp_background = rwp(obs.y, bg.model)
        self._coarse: dict[int, Fitter] = {}
        self._memo: dict[tuple[int, Shape], tuple[PhaseState, Lines, np.ndarray]] = {}
        self.ppe: float | None = None  # set from the leading candidate's profile (Checker)
        self.start = start_shape(obs)
        self.max_w = width_bound(obs)

    def coarse(self, fwhm: float) -> Fitter:
        """A fitter of this scan averaged down to ``POINTS_PER_FWHM`` points per ``fwhm``: the
        broad-peak stages (axis grid, position-only refinement) cost a fraction of the full
        scan and find the same cell."""
        factor = int(fwhm / (POINTS_PER_FWHM * self.obs.step))
        if factor <= 1:
            return self
        if factor not in self._coarse:
            self._coarse[factor] = Fitter(coarsen(self.obs, factor), self.max_nfev)
        return self._coarse[factor]

    def _pack(self, phases: list[PhaseState], shape: Shape, free_phases: list[int], texture: bool,
              hold_shape: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x, lo, hi = [], [], []
        for k in free_phases:
            st = phases[k]
            a, b = lnp_bounds(st.ref)
            x += list(np.clip(st.lnp, a + 1e-9, b - 1e-9))
            lo += [a] * st.lnp.size
            hi += [b] * st.lnp.size
            if texture and st.axis >= 0:
                x.append(st.ln_r)
                lo.append(np.log(0.4))
                hi.append(np.log(2.5))
        if not hold_shape:
            x += [shape.zero, np.log(shape.w), np.log(max(shape.u, 1e-5)), shape.eta, shape.ka2, shape.asym]
            lo += [-ZERO_LIMIT, np.log(1e-4), np.log(1e-5), 0.0, 0.0, 0.0]
            hi += [ZERO_LIMIT, np.log(self.max_w), np.log(MAX_U), 1.0, 0.6, MAX_ASYM]
        return np.array(x, float), np.array(lo), np.array(hi)

    def _unpack(self, x: np.ndarray, phases: list[PhaseState], free_phases: list[int], texture: bool,
                hold: Shape | None = None) -> tuple[list[PhaseState], Shape]:
        out = list(phases)
        i = 0
        for k in free_phases:
            st = phases[k]
            g = st.lnp.size
            ln_r = st.ln_r
            lnp = x[i:i + g]
            i += g
            if texture and st.axis >= 0:
                ln_r = float(x[i])
                i += 1
            out[k] = PhaseState(st.ref, np.array(lnp), st.axis, ln_r)
        if hold is not None:
            return out, hold
        shape = Shape(float(x[i]), float(np.exp(x[i + 1])), float(np.exp(x[i + 2])), float(x[i + 3]),
                      float(x[i + 4]), float(x[i + 5]))
        return out, shape

    def _phase(self, st: PhaseState, shape: Shape) -> tuple[Lines, np.ndarray]:
        """Lines and columns of one phase, remembered while neither it nor the shape changes:
        phases held fixed beside a new one are rendered once, not at every evaluation."""
        key = (id(st), shape)
        hit = self._memo.get(key)
        if hit is not None and hit[0] is st:
            return hit[1], hit[2]
        lines = phase_lines(self.obs, st, shape)
        cols = phase_columns(self.obs, lines, shape)
        if len(self._memo) >= 64:
            self._memo.clear()
        self._memo[key] = (st, lines, cols)
        return lines, cols

    def columns(self, phases: list[PhaseState], shape: Shape) -> tuple[np.ndarray, tuple[int, ...]]:
        cols = [self._phase(st, shape)[1] for st in phases]
        return np.column_stack(cols) if cols else np.zeros((self.obs.n, 0)), tuple(c.shape[1] for c in cols)

    def elements(self, shape: Shape) -> float:
        """Points per resolution element: the scan's own once :attr:`ppe` is set (so every
        candidate's chi^2 is counted in the same units), else from ``shape``."""
        return self.ppe if self.ppe is not None else points_per_element(self.obs, shape)

    def residuals(self, phases: list[PhaseState], shape: Shape, free: list[int], ppe: float) -> np.ndarray:
        """Residuals in resolution elements, ``ppe`` held during a refinement: were it taken
        from the trial widths, broader peaks would lower chi^2 by the divisor alone."""
        cols, _ = self.columns(phases, shape)
        lin = solve_linear(self.obs, self.design, cols)
        return self._residuals(phases, free, lin, ppe)

    def _residuals(self, phases: list[PhaseState], free: list[int], lin: LinearSolution, ppe: float) -> np.ndarray:
        r = (self.obs.y - lin.model) / (self.obs.sigma * np.sqrt(ppe))
        priors = [prior_residuals(phases[k]) for k in free]
        return np.concatenate([r, *priors]) if priors else r

    def derivatives(self, phases: list[PhaseState], shape: Shape, free: list[int], texture: bool,
                    hold_shape: bool, coef: np.ndarray, fixed_width: bool = False) -> np.ndarray:
        """(n, parameters in :meth:`_pack`'s order): d(phase columns @ ``coef``)/d parameter.
        Peak positions, widths, asymmetry, Lorentz fraction, texture and K-alpha2 ratio enter analytically;
        the slow dependence of intensities (Lorentz-polarisation, solvent split) and widths on
        the cell is left out (a few per cent of a cell derivative)."""
        n = self.obs.n
        cell_cols: list[np.ndarray] = []
        shape_cols = np.zeros((n, 6))
        start = 0
        for k, st in enumerate(phases):
            lines, cols = self._phase(st, shape)
            width = cols.shape[1]
            c = coef[start:start + width]
            start += width
            per_unit = lines.amps[:, :width] @ c if lines.pos.size else np.zeros(0)
            a = np.where(lines.alpha2, shape.ka2 * per_unit, per_unit)
            terms: list[tuple[str, np.ndarray]] = []
            mine = k in free
            if mine:
                terms += [("pos", a * lines.dpos_dlnp[:, g]) for g in range(st.lnp.size)]
                if texture and st.axis >= 0:
                    terms.append(("prof", a * lines.dlnmd_dlnr))
            n_own = len(terms)
            if not hold_shape:
                # zero shift, widths and asymmetry (not while held by their bounds, the coarse
                # stage: those columns stay zero), Lorentz fraction, K-alpha2 ratio
                widths = [] if fixed_width else [("fwhm", a * lines.dfwhm_dlnw), ("fwhm", a * lines.dfwhm_dlnu)]
                asym = [] if fixed_width else [("skew", a * _skew_slope(lines.pos, shape.asym))]
                ka2 = ("prof", np.where(lines.alpha2, per_unit, 0.0))
                terms += [("pos", a), *widths, ("eta", a), ka2, *asym]
            if not terms or not np.any(c > 0):
                if mine:
                    cell_cols.append(np.zeros((n, n_own)))
                continue
            d = render_derivatives(self.obs, lines.pos, lines.fwhm, shape.eta, terms,
                                   lines.skew(shape, every=True))
            if mine:
                cell_cols.append(d[:, :n_own])
            if not hold_shape:
                shape_cols[:, [0, 3, 4] if fixed_width else slice(None)] += d[:, n_own:]
        return np.column_stack([*cell_cols, *([] if hold_shape else [shape_cols])])

    def jacobian(self, phases: list[PhaseState], shape: Shape, free: list[int], texture: bool, hold_shape: bool,
                 lin: LinearSolution, ppe: float, fixed_width: bool = False) -> np.ndarray:
        """d residuals / d parameters by variable projection with Kaufman's approximation: the
        linear coefficients held at their optimum, :meth:`derivatives` projected off the
        background and the active columns. One pass over each phase's lines replaces a render
        per parameter of finite differences."""
        dmodel = self.derivatives(phases, shape, free, texture, hold_shape, lin.coef, fixed_width)
        q = self.design.q
        dmodel = dmodel - q @ (q.T @ dmodel)
        cols, _ = self.columns(phases, shape)
        active = cols[:, lin.coef > 0]
        if active.shape[1]:
            act = active - q @ (q.T @ active)
            u, sv, _ = np.linalg.svd(act, full_matrices=False)
            u = u[:, sv > sv[0] * 1e-10]
            dmodel = dmodel - u @ (u.T @ dmodel)
        jac = -dmodel / (self.obs.sigma * np.sqrt(ppe))
        rows = [jac]
        col = 0
        n_par = jac.shape[1]
        for k in free:  # the prior's rows: the cell's by differences (no render), texture's exact
            st = phases[k]
            block = np.zeros((3 + int(st.axis >= 0), n_par))
            base = strain_cost(st)
            for g in range(st.lnp.size):
                step = 1e-6
                moved = PhaseState(st.ref, st.lnp + step * (np.arange(st.lnp.size) == g), st.axis, st.ln_r)
                block[:3, col + g] = (strain_cost(moved) - base) / step
            col += st.lnp.size
            if texture and st.axis >= 0:
                block[3, col] = 1.0 / TEXTURE_PRIOR
                col += 1
            rows.append(block)
        return np.vstack(rows)

    def refine(self, phases: list[PhaseState], shape: Shape, free: list[int], texture: bool = False,
               fix_width: bool = False, max_nfev: int | None = None, hold_shape: bool = False
               ) -> tuple[list[PhaseState], Shape]:
        """Least squares over the free phases' cells (and texture), and the shared shape unless
        ``hold_shape`` (a phase added beside fitted ones keeps their instrument profile)."""
        x0, lo, hi = self._pack(phases, shape, free, texture, hold_shape)
        hold = shape if hold_shape else None
        ppe = self.elements(shape)
        if hold_shape:
            fix_width = False
        if fix_width:  # coarse stage: widths and asymmetry held (broad, symmetric), only positions move
            for k in (-5, -4, -1):
                lo[k], hi[k] = x0[k] - 1e-9, x0[k] + 1e-9
        x0 = np.clip(x0, lo + 1e-12, hi - 1e-12)
        last: list[tuple[np.ndarray, list[PhaseState], Shape, LinearSolution]] = []

        def at(x: np.ndarray) -> tuple[list[PhaseState], Shape, LinearSolution]:
            # the Jacobian is asked for at the point just evaluated: its phases, rendered columns
            # and linear solution are reused
            if last and np.array_equal(last[0][0], x):
                return last[0][1], last[0][2], last[0][3]
            ph, sh = self._unpack(x, phases, free, texture, hold)
            cols, _ = self.columns(ph, sh)
            lin = solve_linear(self.obs, self.design, cols)
            last[:] = [(x.copy(), ph, sh, lin)]
            return ph, sh, lin

        def fun(x: np.ndarray) -> np.ndarray:
            ph, _, lin = at(x)
            return self._residuals(ph, free, lin, ppe)

        def jac(x: np.ndarray) -> np.ndarray:
            ph, sh, lin = at(x)
            return self.jacobian(ph, sh, free, texture, hold_shape, lin, ppe, fix_width)

        sol = optimize.least_squares(fun, x0, jac=jac, bounds=(lo, hi), method="trf", x_scale="jac",
                                     max_nfev=max_nfev or self.max_nfev)
        return self._unpack(sol.x, phases, free, texture, hold)

    def result(self, phases: list[PhaseState], shape: Shape, with_covariance: bool = False) -> FitResult:
        cols, widths = self.columns(phases, shape)
        lin = solve_linear(self.obs, self.design, cols)
        ppe = self.elements(shape)
        prior = float(sum(np.sum(prior_residuals(st) ** 2) for st in phases))
        cov = None
        if with_covariance and cols.shape[1]:
            full = np.column_stack([cols, self.design.basis])
            dof = max(self.obs.n / ppe - full.shape[1], 1.0)
            s2 = max(lin.chi2 / ppe / dof, 1.0) * self.obs.sigma**2 * ppe
            try:
                cov = np.linalg.pinv(full.T @ full)[: cols.shape[1], : cols.shape[1]] * s2
            except np.linalg.LinAlgError:
                cov = None
        return FitResult(tuple(phases), shape, lin, lin.chi2 / ppe, self.background.chi2 / ppe, prior,
                         rwp(self.obs.y, lin.model), self.rwp_background, self.obs.n / ppe, widths, cov)

    def _axis_search(self, phases: list[PhaseState], k: int, start: Shape) -> list[PhaseState]:
        """Each symmetry group's scale on a grid, one group at a time, first with very broad
        peaks (1 deg) over the whole +-12 % range, then finer around the best: a local
        least-squares fit alone is trapped when one axis moved several per cent."""
        a, b = lnp_bounds(phases[k].ref)
        broad = Shape(start.zero, max(1.0, start.w), 0.0, 0.5, start.ka2)
        narrow = Shape(start.zero, max(0.1, start.w), 0.02, 0.5, start.ka2)
        wide, fine = self.coarse(float(np.sqrt(broad.w))), self.coarse(float(np.sqrt(narrow.w)))
        for g in range(phases[k].ref.n_groups):
            phases = _grid_best(wide, phases, k, g, np.linspace(a, b, 21), broad)
        for g in range(phases[k].ref.n_groups):  # again, nearer: each axis once the others moved
            c = phases[k].lnp[g]
            phases = _grid_best(wide, phases, k, g, np.clip(np.linspace(c - 0.08, c + 0.08, 9), a, b), broad)
        for g in range(phases[k].ref.n_groups):
            c = phases[k].lnp[g]
            phases = _grid_best(fine, phases, k, g, np.clip(np.linspace(c - 0.03, c + 0.03, 11), a, b), narrow)
        return phases

    def locate(self, ref: Reference, scale: float = 1.0, fixed: tuple[PhaseState, ...] = (),
               shape: Shape | None = None, lnp: np.ndarray | None = None) -> Located:
        """The cheap first stage of a fit: the cell found with broad peaks on the scan averaged
        down (per-axis grid, then positions refined), the shape held except for zero shift.
        Its misfit ranks candidates before any is refined at full resolution. ``lnp``, the
        prefilter's anisotropic cell (group scales), is refined as a further start. The starts
        ranked below the best whose cells ended elsewhere and nearer the CIF's travel with it
        (``others``) for :meth:`fit` to polish too (every start polished let wrong materials reach
        far minima as well); not beside phases already fitted, whose further-phase candidates
        are many and refined two at a time."""
        lnp0 = np.full(ref.n_groups, -2.0 * np.log(scale))
        a, b = lnp_bounds(ref)
        lnp0 = np.clip(lnp0, a + 1e-6, b - 1e-6)
        phases = [*fixed, PhaseState(ref, lnp0)]
        k = len(phases) - 1
        start = shape or self.start
        starts = [phases]
        if 1 < ref.n_groups <= MAX_SEARCH_GROUPS:
            # the grid's answer and the isotropic start both refined, the better kept: with broad
            # trial peaks a large cell's crowded reflections can pull the grid several per cent
            # off a cell that had barely moved (a held-out UMOYOM determination, 0.4 % from the
            # library's, was fitted at +7/+7/-10 % and lost to another material)
            starts.insert(0, self._axis_search(phases, k, start))
        if lnp is not None and ref.n_groups > 1:
            starts.append([*fixed, PhaseState(ref, np.clip(np.asarray(lnp, float)[: ref.n_groups], a + 1e-6, b - 1e-6))])
        # coarse to fine: broad peaks first so a several-per-cent axis change is still felt
        coarse = Shape(start.zero, max(start.w, 0.09), max(start.u, 0.05), start.eta, start.ka2)
        # beside phases already fitted, the instrument profile is theirs: only the new cell moves
        lowres = self.coarse(float(np.sqrt(coarse.w)))
        done: list[Located] = []
        for trial in starts:
            ph, sh = lowres.refine(trial, coarse, [k], fix_width=True, max_nfev=self.max_nfev // 2,
                                   hold_shape=bool(fixed))
            res = lowres.result(ph, sh)
            done.append(Located(tuple(ph), sh, res.chi2 + res.prior))
        done.sort(key=lambda loc: loc.cost)
        best = done[0]
        if fixed:
            return best

        def strain(loc: Located) -> float:
            return float(np.sum(prior_residuals(loc.phases[-1]) ** 2))

        # re-examined: the starts nearer the CIF's cell than the coarse best (a smaller strain
        # prior), which the prior favours and broad peaks can misrank
        others = tuple(loc for loc in done[1:]
                       if _distinct(loc.phases[-1], best.phases[-1]) and strain(loc) < strain(best))
        return Located(best.phases, best.shape, best.cost, others)

    def fit(self, ref: Reference, scale: float = 1.0, fixed: tuple[PhaseState, ...] = (),
            shape: Shape | None = None, texture: bool = True, hold_shape: bool = False,
            located: Located | None = None) -> FitResult:
        """Fit ``ref`` (started at isotropic cell scale ``scale``) alongside already fitted
        ``fixed`` phases (their cells held; their scales re-solved). ``hold_shape`` keeps
        ``shape`` (zero shift, widths) as it is: the instrument profile of the scan, found once
        with the leading candidate, is not refitted for every other one."""
        held = bool(fixed) or hold_shape
        start = shape or self.start
        if located is None:
            located = self.locate(ref, scale, fixed, start if held else shape)
        k = len(located.phases) - 1
        # the starts compared in the units their refinements minimised: chi^2 per resolution
        # element of the starting profile, whose widths every start shares (a fit's own refined
        # widths would set its divisor, and broader lines stretched over other phases'
        # reflections would win by it alone)
        ppe = self.elements(start)
        best: FitResult | None = None
        for loc in (located, *located.others):
            fine = start if held else Shape(loc.shape.zero, start.w, start.u, start.eta, loc.shape.ka2)
            # with the profile held, only the located cell is polished: half the evaluations do
            ph, shp = self.refine(list(loc.phases), fine, [k], hold_shape=held,
                                  max_nfev=self.max_nfev // 2 if held else None)
            res = self.result(ph, shp)
            if best is None or res.linear.chi2 / ppe + res.prior < best.linear.chi2 / ppe + best.prior:
                best, phases, sh = res, ph, shp
        assert best is not None
        if not texture:
            return best
        best_phases, best_sh = phases, sh
        for axis in ref.texture_axes:
            trial = list(phases)
            trial[k] = PhaseState(ref, phases[k].lnp, axis, 0.0)
            x = _best_r(self, trial, sh, k)
            trial[k] = PhaseState(ref, phases[k].lnp, axis, x)
            res = self.result(trial, sh)
            if res.chi2 + res.prior < best.chi2 + best.prior - 1.0:
                best, best_phases = res, trial
        if best_phases is not phases:
            phases, sh = self.refine(best_phases, best_sh, [k], texture=True, max_nfev=self.max_nfev // 2)
            polished = self.result(phases, sh)
            if polished.chi2 + polished.prior <= best.chi2 + best.prior:
                best = polished
        return best


def _distinct(a: PhaseState, b: PhaseState) -> bool:
    """Cells more than 0.5 % apart in d along some group: another minimum, worth refining."""
    return bool(np.max(np.abs(a.lnp - b.lnp)) > 0.01)


def _grid_best(fitter: Fitter, phases: list[PhaseState], k: int, g: int, values: np.ndarray, shape: Shape
               ) -> list[PhaseState]:
    st = phases[k]
    costs = []
    for v in values:
        lnp = st.lnp.copy()
        lnp[g] = v
        trial = list(phases)
        trial[k] = PhaseState(st.ref, lnp, st.axis, st.ln_r)
        with np.errstate(invalid="ignore"):
            lattice = bool(np.all(np.isfinite(st.ref.cell_for(np.exp(lnp)))))
        if not lattice:  # an oblique metric scaled past positive definiteness
            costs.append(np.inf)
            continue
        cols, _ = fitter.columns(trial, shape)
        costs.append(solve_linear(fitter.obs, fitter.design, cols).chi2)
    lnp = st.lnp.copy()
    lnp[g] = values[int(np.argmin(costs))]
    out = list(phases)
    out[k] = PhaseState(st.ref, lnp, st.axis, st.ln_r)
    return out


def _best_r(fitter: Fitter, phases: list[PhaseState], shape: Shape, k: int) -> float:
    """ln r of the March-Dollase factor about phases[k].axis, other parameters held."""
    st = phases[k]

    def cost(ln_r: float) -> float:
        trial = list(phases)
        trial[k] = PhaseState(st.ref, st.lnp, st.axis, float(ln_r))
        res = fitter.result(trial, shape)
        return res.chi2 + res.prior

    sol = optimize.minimize_scalar(cost, bounds=(np.log(0.4), np.log(2.5)), method="bounded",
                                   options={"xatol": 0.05, "maxiter": 8})
    return float(sol.x)
