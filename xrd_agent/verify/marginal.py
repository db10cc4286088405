"""The misfit that ranks the physics check's candidates: every reflection's intensity uncertain.

A CIF's intensities are not the sample's: pore solvent, disorder, hydrogen atoms, texture beyond
one March-Dollase axis and absorption move single reflections by tens of per cent, while the cell
puts every reflection where it is. Each reflection j of a fit therefore draws I_j (1 + e_j), I_j
as fitted, e_j ~ N(0, s_j^2) independent between reflections (a K-alpha2 line shares its K-alpha1's
e_j), s = ``INTENSITY_SPREAD`` for a framework, ``DENSE_INTENSITY_SPREAD`` for a dense solid
(:func:`intensity_spread`). Marginalising the e_j (Gaussian, exact) makes the scan's
covariance C = v I + U S U^T, U the reflections' fitted profiles and v the noise variance, and

    -2 ln p(y) = r^T C^-1 r + ln det C + const        (r the fit's residual)

with, by Woodbury, r^T C^-1 r = r.r / v - b^T (S^-1 + M)^-1 b and ln det C = n ln v +
ln det(I + S M), S = diag(s_j^2), M = U^T U / v and b = U^T r / v. A right structure whose
intensities are off pays little for them; a wrong one pays in full for every observed line it has
none under, and ln det charges every line a model draws strongly enough to be measured: a cell
dense with reflections and stretched by several per cent no longer fits a scan better than its own
material by drawing a line under every peak (Smith & Snyder's F_N divides by the number of possible
lines for the same reason). Reflections sorted by position overlap only their neighbours, so M is
banded and one banded Cholesky gives both terms.

v is the scan's noise in resolution elements (sigma^2 x points per element), inflated by the
factor that makes the best fit statistically adequate under this model (:meth:`Marginal.noise_scale`):
a real scan's misfit is mostly the model's, not counting noise, and at counting noise alone any
intensity within tens of per cent would be as good as free (a Le Bail fit, which fits anything).
"""

from __future__ import annotations

import numpy as np
from scipy import linalg, sparse

from xrd_agent.verify.fit import C_GAUSS, FitResult, _windows, dense, phase_lines
from xrd_agent.verify.observed import Observed
from xrd_agent.verify.references import Reference

#: sigma of a reflection's intensity relative to its fitted one: an unrefined framework CIF against
#: an as-made sample is good to some tens of per cent per reflection (solvent, disorder, guests) ...
INTENSITY_SPREAD = 0.3
#: ... a dense solid's (no pores to fill, well-determined structures) to about a tenth, as the
#: strain prior is narrower for them (xrd_agent/verify/fit.py, ``DENSE_FROM``)
DENSE_INTENSITY_SPREAD = 0.1
#: A reflection's profile counts over +-this many FWHM (its Lorentzian tail beyond is the fit's).
PROFILE_CORE = 3.0


def intensity_spread(ref: Reference) -> float:
    """sigma of the reference's reflections' relative intensity errors: frameworks wide, dense
    solids narrow."""
    return DENSE_INTENSITY_SPREAD if dense(ref) else INTENSITY_SPREAD


def reflection_profiles(obs: Observed, fit: FitResult) -> tuple[sparse.csc_matrix, np.ndarray]:
    """(n, m): the fitted contribution of each of ``fit``'s reflections (its K-alpha2 line with
    it) over +-``PROFILE_CORE`` FWHM, the reflections of every phase ordered by position; and
    (m,) the intensity spread of each (its phase's :func:`intensity_spread`)."""
    rows, cols, vals, centres, spreads = [], [], [], [], []
    at, m = 0, 0
    eta = fit.shape.eta
    for k, st in enumerate(fit.phases):
        width = fit.columns[k]
        coef = fit.linear.coef[at:at + width]
        at += width
        lines = phase_lines(obs, st, fit.shape)
        pos, fwhm, amps = lines.rendered(fit.shape.ka2)
        if pos.size == 0:
            continue
        reflection = lines.reflection if fit.shape.ka2 > 0 else lines.reflection[~lines.alpha2]
        amplitude = amps @ coef
        _, margin, buckets = _windows(obs, pos, fwhm, lines.skew(fit.shape))
        for sel, start, off, z, _, hw, _ in buckets:
            inside = np.abs(off) <= np.ceil(PROFILE_CORE * float(fwhm[sel].max()) / obs.step)
            zc = z[:, inside]
            z2 = zc * zc
            prof = (eta / np.pi) / (1.0 + z2) + (1.0 - eta) * C_GAUSS * np.exp(-np.log(2) * z2)
            prof *= (obs.step / hw) * amplitude[sel, None]
            r = start[:, None] + off[None, inside] - margin
            c = np.broadcast_to((m + reflection[sel])[:, None], r.shape)
            keep = (r >= 0) & (r < obs.n) & (np.abs(zc) <= 2.0 * PROFILE_CORE)
            rows.append(r[keep])
            cols.append(c[keep])
            vals.append(prof[keep])
        centres.append(pos[~lines.alpha2])
        spreads.append(np.full(int(np.sum(~lines.alpha2)), intensity_spread(st.ref)))
        m += int(np.sum(~lines.alpha2))
    if m == 0:
        return sparse.csc_matrix((obs.n, 0)), np.zeros(0)
    at_rows_cols = (np.concatenate(rows), np.concatenate(cols))
    u = sparse.csc_matrix((np.concatenate(vals), at_rows_cols), shape=(obs.n, m))
    order = np.argsort(np.concatenate(centres), kind="stable")
    return u[:, order], np.concatenate(spreads)[order]


class Marginal:
    """The marginal misfit of fits of one scan (module docstring). What does not depend on the noise
    variance (each fit's reflection profiles, their Gram matrix in banded form, U^T r and r.r) is
    built once per fit: the check ranks most of its fits twice, and :meth:`noise_scale` evaluates
    the best one several times."""

    def __init__(self, obs: Observed, points_per_element: float) -> None:
        self.obs = obs
        self.variance = obs.sigma**2 * points_per_element
        self._parts: dict[int, tuple[FitResult, float, np.ndarray, np.ndarray, np.ndarray]] = {}

    def _of(self, fit: FitResult) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
        """(r.r, U^T r, U^T U in upper banded storage, the reflections' spreads) of ``fit``."""
        hit = self._parts.get(id(fit))
        if hit is None or hit[0] is not fit:
            r = self.obs.y - fit.linear.model
            u, spread = reflection_profiles(self.obs, fit)
            drawn = np.asarray(u.multiply(u).sum(axis=0)).ravel() > 0
            u, spread = u[:, drawn], spread[drawn]
            gram = (u.T @ u).tocoo()
            band = int(np.max(np.abs(gram.row - gram.col))) if gram.nnz else 0
            upper = gram.col >= gram.row
            ab = np.zeros((band + 1, u.shape[1]))
            ab[band + gram.row[upper] - gram.col[upper], gram.col[upper]] = gram.data[upper]
            hit = (fit, float(r @ r), u.T @ r, ab, spread)
            self._parts[id(fit)] = hit
        return hit[1], hit[2], hit[3], hit[4]

    def misfit(self, fit: FitResult, scale: float = 1.0) -> tuple[float, float]:
        """(r^T C^-1 r, ln det(I + S M)) at noise variance ``scale`` x the scan's (resolution
        elements), S the diagonal of the reflections' squared spreads."""
        v = self.variance * scale
        rr, utr, gram, spread = self._of(fit)
        chi2 = rr / v
        if spread.size == 0:
            return chi2, 0.0
        ab = gram / v  # upper banded storage of S^-1 + M
        band = ab.shape[0] - 1
        ab[band] += 1.0 / spread**2
        chol = linalg.cholesky_banded(ab)
        b = utr / v
        chi2 -= float(b @ linalg.cho_solve_banded((chol, False), b))
        logdet = 2.0 * float(np.sum(np.log(chol[band]))) + float(np.sum(np.log(spread**2)))
        return chi2, logdet

    def noise_scale(self, fit: FitResult, dof: float, start: float) -> float:
        """The factor (at least 1) on the scan's noise variance at which ``fit`` is adequate under
        this model, r^T C^-1 r = dof; from ``start`` (its plain reduced chi^2, an upper bound:
        the reflections' freedom only lowers the misfit), a few fixed-point steps."""
        scale = max(1.0, start)
        for _ in range(8):
            new = max(1.0, scale * self.misfit(fit, scale)[0] / dof)
            done = abs(new - scale) <= 0.01 * scale
            scale = new
            if done:
                break
        return scale
