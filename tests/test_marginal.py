"""The physics check's ranking misfit with every reflection's intensity uncertain
(xrd_agent/verify/marginal.py): its algebra against the dense definition, and what it is for."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from xrd_agent.verify.check import rank
from xrd_agent.verify.fit import Fitter, PhaseState, Shape, phase_columns, phase_lines, points_per_element
from xrd_agent.verify.marginal import INTENSITY_SPREAD, Marginal, reflection_profiles
from xrd_agent.verify.observed import Observed, noise_sigma, observe
from xrd_agent.verify.references import build_reference

CU = (1.540598, 1.544426)
TT = np.arange(8.0, 70.0, 0.02)
CELL = np.array([9.0, 11.0, 13.0, 90.0, 90.0, 90.0])
SHAPE = Shape(0.0, 0.012, 0.004, 0.5, 0.5)


def _hkl(lmax: int) -> np.ndarray:
    r = range(0, 4)
    hkl = [(h, k, l) for h in r for k in r for l in range(lmax) if (h, k, l) != (0, 0, 0)]
    return np.array(hkl, float)


def _scan(ref, seed: int = 0, counts: float = 4000.0) -> Observed:
    """``ref`` at its own cell as a scan: the fit's own line model, a flat background, Poisson noise."""
    rng = np.random.default_rng(seed)
    grid = observe(TT, np.ones(TT.size), *CU)
    cols = phase_columns(grid, phase_lines(grid, PhaseState(ref, np.zeros(ref.n_groups)), SHAPE), SHAPE)
    peak = cols[:, 0]
    y = rng.poisson(200.0 + counts * peak / peak.max()).astype(float)
    return replace(grid, y=y, sigma=noise_sigma(y))


def test_the_banded_woodbury_misfit_is_the_dense_gaussian_one():
    """r^T C^-1 r and ln det(I + s^2 U^T U / v) from the banded Cholesky equal the dense
    computation with C = v I + s^2 U U^T, at the scan's noise and at an inflated one."""
    rng = np.random.default_rng(3)
    hkl = _hkl(4)
    ref = build_reference(0, "a", "a", CELL, hkl, rng.uniform(0.2, 1.0, len(hkl)), 100.0, 1287.0, True)
    obs = _scan(ref)
    fitter = Fitter(obs)
    fit = fitter.result([PhaseState(ref, np.full(ref.n_groups, 0.004))], SHAPE)  # a cell slightly off
    ppe = points_per_element(obs, SHAPE)
    marginal = Marginal(obs, ppe)
    u, spread = reflection_profiles(obs, fit)
    u = u.toarray()
    assert np.all(spread == INTENSITY_SPREAD)  # a framework's density
    assert u.shape[1] > 20
    r = obs.y - fit.linear.model
    s2 = INTENSITY_SPREAD**2
    for scale in (1.0, 7.5):
        v = obs.sigma**2 * ppe * scale
        c = v * np.eye(obs.n) + s2 * u @ u.T
        chi2, logdet = marginal.misfit(fit, scale)
        np.testing.assert_allclose(chi2, r @ np.linalg.solve(c, r), rtol=1e-6)
        dense = np.linalg.slogdet(np.eye(u.shape[1]) + s2 * u.T @ u / v)[1]
        np.testing.assert_allclose(logdet, dense, rtol=1e-6)
        assert chi2 < float(r @ r) / v  # the reflections' freedom only lowers the misfit


def test_the_reflections_sum_to_the_fitted_phase():
    """Each column is one reflection as fitted (its K-alpha2 line with it): together they are the
    fit's phase model, but for the Lorentzian tails beyond three widths."""
    rng = np.random.default_rng(4)
    hkl = _hkl(4)
    ref = build_reference(0, "a", "a", CELL, hkl, rng.uniform(0.2, 1.0, len(hkl)), 100.0, 1287.0, True)
    obs = _scan(ref)
    fitter = Fitter(obs)
    state = PhaseState(ref, np.zeros(ref.n_groups))
    fit = fitter.result([state], SHAPE)
    u, _ = reflection_profiles(obs, fit)
    lines = phase_lines(obs, state, SHAPE)
    assert lines.alpha2.sum() > 20  # K-alpha2 lines drawn, each in its K-alpha1's column
    assert u.shape[1] == int(np.sum(~lines.alpha2))
    cols, _ = fitter.columns([state], SHAPE)
    drawn = cols @ fit.linear.coef
    summed = np.asarray(u.sum(axis=1)).ravel()
    assert np.linalg.norm(summed - drawn) < 0.12 * np.linalg.norm(drawn)


def test_a_structure_with_its_intensities_off_outranks_one_that_draws_lines_the_scan_lacks():
    """The sample's intensities differ from its CIF's by 30 % per reflection (log-normal), as pore
    solvent and disorder make them. A decoy draws the sample's intensities exactly, in a doubled
    cell whose extra reflections (a superstructure) fall where the scan has nothing, at a tenth of
    the mean strength: by plain chi^2 it fits better and wins; with each reflection's intensity
    uncertain the right structure pays little for its intensities, the decoy pays for every line
    it draws that is not there, and the right structure wins."""
    rng = np.random.default_rng(5)
    hkl = _hkl(4)
    cif = rng.uniform(0.2, 1.0, len(hkl))
    sample_f2 = cif * np.exp(rng.normal(0.0, 0.3, len(hkl)))
    right = build_reference(0, "right", "right", CELL, hkl, cif, 100.0, 1287.0, True)
    sample = build_reference(0, "sample", "sample", CELL, hkl, sample_f2, 100.0, 1287.0, True)
    # the decoy's cell doubles c: (h, k, 2l) are the sample's reflections, (h, k, odd) new ones
    doubled = CELL * np.array([1, 1, 2, 1, 1, 1])
    odd = _hkl(8)[_hkl(8)[:, 2] % 2 == 1]
    decoy_hkl = np.vstack([hkl * np.array([1, 1, 2]), odd])
    decoy_f2 = np.concatenate([sample_f2, np.full(len(odd), 0.1 * sample_f2.mean())])
    decoy = build_reference(1, "decoy", "decoy", doubled, decoy_hkl, decoy_f2, 200.0, 2574.0, True)
    obs = _scan(sample, seed=6)
    fitter = Fitter(obs)
    fits = [fitter.result([PhaseState(ref, np.zeros(ref.n_groups))], SHAPE) for ref in (right, decoy)]
    assert fits[1].chi2 < fits[0].chi2  # the decoy fits better by plain chi^2 ...
    plain = rank(fits, [0.5, 0.5])
    assert plain[1] > 0.99  # ... and the plain rule names it
    post = rank(fits, [0.5, 0.5], Marginal(obs, points_per_element(obs, SHAPE)))
    assert post[0] > 0.99
