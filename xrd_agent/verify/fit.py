"""Whole-pattern fit of one or more reference phases to a measured scan (variable projection).

Model, per phase p with reflections j (reference m|F|^2 = F2_j, reflection spacing d_j from the
refined reciprocal metric):

    y(2theta) = sum_p [ a_p (1 - e_j) + b_p e_j ] F2_j LP(theta_j) MD_j(r_p) Phi(2theta - 2theta_j)
              + c_p F2_j LP MD Phi(2theta - 2theta_j(K-alpha2))             (when the tube has K-alpha2)
              + Chebyshev background (+ a 1/2theta term for air scatter at low angle)

* cell: each symmetry group g of reciprocal-metric terms (:mod:`.references`) is scaled by
  p_g, bounded so every axis stays within +-12 %, with a Gaussian prior on ln(axis change)
  (``strain_prior``) added to chi^2: large cell changes must pay for themselves;
* zero shift (deg), pseudo-Voigt width FWHM^2 = W + U tan^2(theta) and Lorentz fraction eta;
* March-Dollase preferred orientation MD_j = (r^2 cos^2 alpha + sin^2 alpha / r)^(-3/2) about
  one of the reciprocal axes a*, b*, c* (the best is chosen);
* pore solvent: e_j = exp(-(d0/d_j)^2) splits each phase into a low-angle part (b_p, reflections
  with d >> d0) and the rest (a_p). Solvent in the pores changes low-angle intensities most; the
  split lets them scale on their own without freeing every reflection (a free Le Bail fit of a
  MOF with thousands of reflections fits anything and cannot discriminate);
* a_p, b_p, c_p >= 0 and the background are linear: for fixed nonlinear parameters they are
  solved exactly (background projected out, then NNLS), and ``scipy.optimize.least_squares``
  moves only the few nonlinear ones (variable projection). The weight-fraction scale of a
  phase is a_p (high angle, solvent-free).

Residuals are in units of the scan's white-noise sigma, scaled by sqrt(points per peak width):
neighbouring points within one peak width are not independent evidence, so chi^2 counts
resolution elements, and a prior term of 1 weighs as much as one resolution element.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import optimize

from xrd_agent.verify.observed import Observed
from xrd_agent.verify.references import Reference, lorentz_polarisation

MAX_STRAIN = 0.12
STRAIN_PRIOR = 0.04  # sigma of ln(axis change): 4 % costs one resolution element of chi^2
SOLVENT_D0 = 6.0  # Angstrom
SOLVENT_MIN_SHARE = 0.05  # a phase gets the solvent column only with this share of intensity beyond d0
BACKGROUND_ORDER = 6
WINDOW_FWHM = 5.0
ZERO_LIMIT = 0.35  # deg
#: Widest peaks a phase may have: FWHM 0.4 deg at low angle (W) and a tan-theta term U that
#: gives ~0.55 deg at 2-theta 60 deg; broader features are background or amorphous scattering.
MAX_W = 0.16
MAX_SEARCH_GROUPS = 4  # cells with more free metric groups (triclinic) skip the per-axis grid search
MAX_U = 0.3


@dataclass(frozen=True)
class Shape:
    """Nonlinear parameters shared by all phases of a scan."""

    zero: float = 0.0
    w: float = 0.01  # deg^2
    u: float = 0.01  # deg^2
    eta: float = 0.5
    ka2: float = 0.5  # I(K-alpha2)/I(K-alpha1); refined (0 for stripped or monochromated data)


@dataclass(frozen=True, eq=False)
class PhaseState:
    """One phase's nonlinear parameters."""

    ref: Reference
    lnp: np.ndarray  # ln of the group scale factors of 1/d^2
    axis: int = -1  # March-Dollase axis (0 a*, 1 b*, 2 c*), -1 none
    ln_r: float = 0.0


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


def points_per_element(obs: Observed, shape: Shape) -> float:
    """Scan points per resolution element (one FWHM at mid range), at least 1."""
    mid = np.radians(float(obs.two_theta[obs.n // 2]) / 2.0)
    fwhm = np.sqrt(max(shape.w + shape.u * np.tan(mid) ** 2, 1e-6))
    return max(1.0, fwhm / obs.step)


def _march_dollase(ref: Reference, axis: int, ln_r: float) -> np.ndarray:
    if axis < 0 or ln_r == 0.0:
        return np.ones(ref.d.size)
    g = ref.gstar
    h = ref.hkl
    gh = h @ g[:, axis]  # h . G* . e_axis
    cos2 = gh**2 / (np.einsum("ij,jk,ik->i", h, g, h) * g[axis, axis])
    cos2 = np.clip(cos2, 0.0, 1.0)
    r = np.exp(ln_r)
    return (r * r * cos2 + (1.0 - cos2) / r) ** -1.5


def _lines(obs: Observed, state: PhaseState, shape: Shape) -> tuple[np.ndarray, ...]:
    """Positions (deg, K-alpha1), widths, intensities and solvent weights of the phase's
    reflections inside the scan range."""
    ref = state.ref
    inv_d2 = ref.basis @ np.exp(state.lnp)
    d = 1.0 / np.sqrt(np.maximum(inv_d2, 1e-12))
    s = obs.wavelength / (2.0 * d)
    ok = s < 0.999
    theta = np.arcsin(s[ok])
    pos = np.degrees(2 * theta) + shape.zero
    lo, hi = obs.two_theta[0] - 1.0, obs.two_theta[-1] + 1.0
    keep = (pos > lo) & (pos < hi)
    theta, pos, d_ok = theta[keep], pos[keep], d[ok][keep]
    inten = ref.f2[ok][keep] * lorentz_polarisation(theta) * _march_dollase(ref, state.axis, state.ln_r)[ok][keep]
    fwhm = np.sqrt(np.maximum(shape.w + shape.u * np.tan(theta) ** 2, 1e-5))
    solvent = np.exp(-((SOLVENT_D0 / d_ok) ** 2))
    return pos, fwhm, inten, solvent, d_ok


def render(obs: Observed, pos: np.ndarray, fwhm: np.ndarray, eta: float, amps: np.ndarray) -> np.ndarray:
    """Columns (n, C) of area-normalised pseudo-Voigt peaks at ``pos`` with amplitudes ``amps`` (M, C)."""
    n = obs.n
    out = np.zeros((amps.shape[1], n))
    if pos.size == 0:
        return out.T
    half = int(np.ceil(WINDOW_FWHM * float(fwhm.max()) / obs.step))
    off = np.arange(-half, half + 1)
    centre = np.rint((pos - obs.two_theta[0]) / obs.step).astype(np.int64)
    idx = centre[:, None] + off[None, :]
    x = obs.two_theta[0] + idx * obs.step - pos[:, None]
    hw = fwhm[:, None] / 2.0
    z = x / hw
    gauss = np.sqrt(np.log(2) / np.pi) / hw * np.exp(-np.log(2) * z * z)
    lorentz = 1.0 / (np.pi * hw * (1.0 + z * z))
    prof = (eta * lorentz + (1 - eta) * gauss) * obs.step
    ok = (idx >= 0) & (idx < n)
    flat_idx = idx[ok]
    for c in range(amps.shape[1]):
        w = (prof * amps[:, c, None])[ok]
        out[c] = np.bincount(flat_idx, weights=w, minlength=n)
    return out.T


def phase_columns(obs: Observed, state: PhaseState, shape: Shape) -> np.ndarray:
    """(n, 1 or 2) columns: the phase, and its low-angle (pore solvent) part when the phase has
    reflections there (an inorganic phase with nothing beyond d0 gets no second column).
    K-alpha2 lines ride on each column at the shared ratio ``shape.ka2``."""
    pos, fwhm, inten, solvent, d = _lines(obs, state, shape)
    low = float(np.sum(inten * solvent))
    amps = np.column_stack([inten * (1 - solvent), inten * solvent])
    if pos.size == 0 or low < SOLVENT_MIN_SHARE * float(np.sum(inten)):
        amps = inten[:, None]
    if obs.alpha2 is not None and pos.size and shape.ka2 > 0:
        s2 = obs.alpha2 / (2.0 * d)
        ok = s2 < 0.999
        pos2 = np.degrees(2 * np.arcsin(s2[ok])) + shape.zero
        pos = np.concatenate([pos, pos2])
        fwhm = np.concatenate([fwhm, fwhm[ok]])
        amps = np.concatenate([amps, shape.ka2 * amps[ok]])
    return render(obs, pos, fwhm, shape.eta, amps)


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

    def scale(self, k: int) -> float:
        """The phase's Hill-Howard scale (main, solvent-free coefficient)."""
        start = sum(self.columns[:k])
        return float(self.linear.coef[start])

    @property
    def improvement(self) -> float:
        """Share of the background-only misfit the phases explain, 1 - chi2 / chi2_background."""
        return float(1.0 - self.chi2 / self.chi2_background) if self.chi2_background > 0 else 0.0


def rwp(y: np.ndarray, model: np.ndarray) -> float:
    """Weighted profile R with unit weights (the scan's noise is taken as uniform)."""
    den = float(np.sum(y * y))
    return float(np.sqrt(np.sum((y - model) ** 2) / den)) if den > 0 else 1.0


def strain_cost(state: PhaseState, prior: float = STRAIN_PRIOR) -> np.ndarray:
    """Prior residuals: ln(axis change) / prior for a, b, c."""
    ch = state.ref.cell_for(np.exp(state.lnp))[:3] / state.ref.cell[:3]
    return np.log(ch) / prior


def lnp_bounds(ref: Reference, max_strain: float = MAX_STRAIN) -> tuple[float, float]:
    """Bounds on ln p: 1/d^2 scales as 1/a^2, so an axis within +-max_strain means ln p within
    -2 ln(1 + s) .. -2 ln(1 - s)."""
    return -2.0 * np.log1p(max_strain), -2.0 * np.log1p(-max_strain)


class Fitter:
    """Fits phases to one scan; holds the scan's fixed design."""

    def __init__(self, obs: Observed, max_nfev: int = 16) -> None:
        self.obs = obs
        self.design = background_design(obs)
        self.max_nfev = max_nfev
        bg = solve_linear(obs, self.design, np.zeros((obs.n, 0)))
        self.background = bg
        self.rwp_background = rwp(obs.y, bg.model)

    def _pack(self, phases: list[PhaseState], shape: Shape, free_phases: list[int], texture: bool
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
        x += [shape.zero, np.log(shape.w), np.log(max(shape.u, 1e-5)), shape.eta, shape.ka2]
        lo += [-ZERO_LIMIT, np.log(1e-4), np.log(1e-5), 0.0, 0.0]
        hi += [ZERO_LIMIT, np.log(MAX_W), np.log(MAX_U), 1.0, 0.6]
        return np.array(x, float), np.array(lo), np.array(hi)

    def _unpack(self, x: np.ndarray, phases: list[PhaseState], free_phases: list[int], texture: bool
                ) -> tuple[list[PhaseState], Shape]:
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
        shape = Shape(float(x[i]), float(np.exp(x[i + 1])), float(np.exp(x[i + 2])), float(x[i + 3]), float(x[i + 4]))
        return out, shape

    def columns(self, phases: list[PhaseState], shape: Shape) -> tuple[np.ndarray, tuple[int, ...]]:
        cols = [phase_columns(self.obs, st, shape) for st in phases]
        return np.column_stack(cols) if cols else np.zeros((self.obs.n, 0)), tuple(c.shape[1] for c in cols)

    def residuals(self, phases: list[PhaseState], shape: Shape, free: list[int]) -> np.ndarray:
        cols, _ = self.columns(phases, shape)
        lin = solve_linear(self.obs, self.design, cols)
        ppe = points_per_element(self.obs, shape)
        r = (self.obs.y - lin.model) / (self.obs.sigma * np.sqrt(ppe))
        priors = [strain_cost(phases[k]) for k in free]
        return np.concatenate([r, *priors]) if priors else r

    def refine(self, phases: list[PhaseState], shape: Shape, free: list[int], texture: bool = False,
               fix_width: bool = False, max_nfev: int | None = None) -> tuple[list[PhaseState], Shape]:
        x0, lo, hi = self._pack(phases, shape, free, texture)
        if fix_width:  # coarse stage: widths held (broad), only positions move
            lo[-4:-2], hi[-4:-2] = x0[-4:-2] - 1e-9, x0[-4:-2] + 1e-9
        x0 = np.clip(x0, lo + 1e-12, hi - 1e-12)

        def fun(x: np.ndarray) -> np.ndarray:
            ph, sh = self._unpack(x, phases, free, texture)
            return self.residuals(ph, sh, free)

        sol = optimize.least_squares(fun, x0, bounds=(lo, hi), method="trf", x_scale="jac",
                                     diff_step=1e-4, max_nfev=max_nfev or self.max_nfev)
        return self._unpack(sol.x, phases, free, texture)

    def result(self, phases: list[PhaseState], shape: Shape, with_covariance: bool = False) -> FitResult:
        cols, widths = self.columns(phases, shape)
        lin = solve_linear(self.obs, self.design, cols)
        ppe = points_per_element(self.obs, shape)
        prior = float(sum(np.sum(strain_cost(st) ** 2) for st in phases))
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
        broad = Shape(start.zero, 1.0, 0.0, 0.5, start.ka2)
        narrow = Shape(start.zero, 0.1, 0.02, 0.5, start.ka2)
        for _ in range(2):  # two sweeps: the first axis is chosen again once the others moved
            for g in range(phases[k].ref.n_groups):
                phases = _grid_best(self, phases, k, g, np.linspace(a, b, 21), broad)
        for g in range(phases[k].ref.n_groups):
            c = phases[k].lnp[g]
            phases = _grid_best(self, phases, k, g, np.clip(np.linspace(c - 0.03, c + 0.03, 11), a, b), narrow)
        return phases

    def fit(self, ref: Reference, scale: float = 1.0, fixed: tuple[PhaseState, ...] = (),
            shape: Shape | None = None, texture: bool = True) -> FitResult:
        """Fit ``ref`` (started at isotropic cell scale ``scale``) alongside already fitted
        ``fixed`` phases (their cells held; their scales re-solved)."""
        lnp0 = np.full(ref.n_groups, -2.0 * np.log(scale))
        a, b = lnp_bounds(ref)
        lnp0 = np.clip(lnp0, a + 1e-6, b - 1e-6)
        phases = [*fixed, PhaseState(ref, lnp0)]
        k = len(phases) - 1
        start = shape or Shape()
        if 1 < ref.n_groups <= MAX_SEARCH_GROUPS:
            phases = self._axis_search(phases, k, start)
        # coarse to fine: broad peaks first so a several-per-cent axis change is still felt
        coarse = Shape(start.zero, max(start.w, 0.09), max(start.u, 0.05), start.eta, start.ka2)
        phases, sh = self.refine(phases, coarse, [k], fix_width=True, max_nfev=self.max_nfev // 2)
        phases, sh = self.refine(phases, Shape(sh.zero, start.w, start.u, start.eta, sh.ka2), [k])
        if not texture:
            return self.result(phases, sh)
        best = self.result(phases, sh)
        if texture:
            best_phases, best_sh = phases, sh
            for axis in range(3):
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


def _grid_best(fitter: Fitter, phases: list[PhaseState], k: int, g: int, values: np.ndarray, shape: Shape
               ) -> list[PhaseState]:
    st = phases[k]
    costs = []
    for v in values:
        lnp = st.lnp.copy()
        lnp[g] = v
        trial = list(phases)
        trial[k] = PhaseState(st.ref, lnp, st.axis, st.ln_r)
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
        return fitter.result(trial, shape).chi2

    sol = optimize.minimize_scalar(cost, bounds=(np.log(0.4), np.log(2.5)), method="bounded",
                                   options={"xatol": 0.05, "maxiter": 8})
    return float(sol.x)
