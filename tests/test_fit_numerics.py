"""The whole-pattern fit's numerics (xrd_agent/verify/fit.py) on a small synthetic reference:
the analytic Jacobian against finite differences, the convolution render against the windowed
one, and a refinement that must find a cell, zero shift and widths it was not started at."""

from __future__ import annotations

import numpy as np
import pytest

from xrd_agent.verify import fit
from xrd_agent.verify.observed import Observed
from xrd_agent.verify.references import build_reference

CU = (1.540598, 1.544426)


def _tetragonal(n_refl_max: int = 6) -> fit.Reference:
    """A tetragonal cell (two metric groups, texture about c*) with every hkl up to 6."""
    r = np.arange(0, n_refl_max + 1)
    hkl = np.array([(h, k, l) for h in r for k in r for l in r if (h, k, l) != (0, 0, 0) and k <= h], float)
    f2 = 50.0 + 450.0 * np.random.default_rng(3).random(len(hkl))
    ref = build_reference(0, "tet", "tet", np.array([9.0, 9.0, 13.0, 90.0, 90.0, 90.0]), hkl, f2, 500.0, 1053.0, True)
    assert ref is not None and ref.n_groups == 2 and ref.texture_axes == (2,)
    return ref


def _observed(y: np.ndarray, tt: np.ndarray) -> Observed:
    return Observed(tt, y, float(tt[1] - tt[0]), CU[0], CU[1], 1.0)


TT = np.arange(8.0, 70.0, 0.02)


def _central(fitter: fit.Fitter, phases, shape, free, texture, hold, coef, k, h=1e-6):
    x, _, _ = fitter._pack(phases, shape, free, texture, hold)
    hold_shape = shape if hold else None
    out = []
    for sign in (1, -1):
        xx = x.copy()
        xx[k] += sign * h
        ph, sh = fitter._unpack(xx, phases, free, texture, hold_shape)
        out.append(fit.Fitter(fitter.obs).columns(ph, sh)[0] @ coef)
    return (out[0] - out[1]) / (2 * h)


@pytest.mark.parametrize("asym", [0.0, 0.04])
def test_analytic_derivatives_match_finite_differences(asym):
    """Shape (asymmetry included, from a symmetric profile and from a split one), texture and
    K-alpha2 derivatives are exact; a cell derivative leaves out only the slow change of
    intensities and widths with the cell (a few per cent), and a position derivative the slow
    change of a split line's asymmetry with its angle (under 0.2 %)."""
    ref = _tetragonal()
    fitter = fit.Fitter(_observed(np.zeros(TT.size), TT))
    phases = [fit.PhaseState(ref, np.array([0.02, -0.03]), 2, 0.25)]
    shape = fit.Shape(zero=0.04, w=0.01, u=0.02, eta=0.4, ka2=0.5, asym=asym)
    coef = np.array([1.0, 0.5, 0.3])[: fitter.columns(phases, shape)[1][0]]
    d = fitter.derivatives(phases, shape, [0], True, False, coef)
    assert d.shape == (TT.size, 2 + 1 + 6)
    for k in range(d.shape[1]):
        fd = _central(fitter, phases, shape, [0], True, False, coef, k)
        rel = np.linalg.norm(d[:, k] - fd) / np.linalg.norm(fd)
        assert rel < (0.08 if k < 2 else 2e-3 if k == 3 and asym else 1e-4), (k, rel)


def test_split_profile_keeps_its_area_and_leans_to_low_angle():
    """A split line has the symmetric line's area, its maximum where the reflection is, and more
    of its intensity below it: a low-angle tail, wider the lower the angle (A cot 2theta)."""
    obs = _observed(np.zeros(TT.size), TT)
    pos, fwhm, amps = np.array([10.0, 50.0]), np.array([0.12, 0.12]), np.eye(2)
    sym = fit.render(obs, pos, fwhm, 0.5, amps)
    skew = fit.line_skew(pos, 0.05)
    assert skew[0] == pytest.approx(0.05 / np.tan(np.radians(10.0))) and 0 < skew[1] < skew[0]
    lean = fit.render(obs, pos, fwhm, 0.5, amps, skew)
    # area one per line apart from the Lorentzian tail beyond the window (+-12 FWHM, wider when split)
    np.testing.assert_allclose(lean.sum(axis=0), sym.sum(axis=0), rtol=5e-3)
    np.testing.assert_allclose(lean.sum(axis=0), 1.0, atol=0.015)
    for k, p in enumerate(pos):
        assert TT[np.argmax(lean[:, k])] == pytest.approx(p, abs=0.011)
        below = lean[TT < p, k].sum() / lean[:, k].sum()
        assert below > 0.5 + 0.4 * skew[k] and (below > 0.7 if k == 0 else below < 0.6)


def test_lines_of_one_width_convolved_match_the_windowed_render():
    ref = _tetragonal(9)
    obs = _observed(np.zeros(TT.size), TT)
    lines = fit.phase_lines(obs, fit.PhaseState(ref, np.zeros(2)), fit.Shape(0.0, 0.25, 0.0, 0.5, 0.5))
    pos, fwhm, amps = lines.rendered(0.5)
    assert pos.size > fit.CONVOLVE_FROM and np.all(fwhm == fwhm[0])
    fast = fit.render(obs, pos, fwhm, 0.5, amps)
    direct = fit.render(obs, pos, fwhm + 1e-12 * np.arange(pos.size), 0.5, amps)  # not all one width
    assert np.abs(fast - direct).max() < 1e-3 * np.abs(direct).max()


@pytest.mark.parametrize("hold", [False, True])
def test_refinement_finds_the_cell_and_profile_it_was_not_started_at(hold):
    ref = _tetragonal()
    truth_shape = fit.Shape(zero=0.05, w=0.012, u=0.015, eta=0.35, ka2=0.5, asym=0.03)
    truth = fit.PhaseState(ref, np.array([-0.012, 0.018]))  # a +0.6 %, c -0.9 %
    clean = fit.Fitter(_observed(np.zeros(TT.size), TT))
    cols, _ = clean.columns([truth], truth_shape)
    y = cols @ np.array([2.0, 1.0, 0.5])[: cols.shape[1]] + 40.0 + 5.0 * np.cos(TT / 20.0)
    y = y / y.max() * 5000.0 + np.random.default_rng(0).normal(0.0, 10.0, TT.size)  # white noise, sigma 10
    obs = Observed(TT, y, 0.02, CU[0], CU[1], 10.0)
    fitter = fit.Fitter(obs)
    start_shape = truth_shape if hold else fit.Shape(zero=0.0, w=0.02, u=0.005, eta=0.5, ka2=0.5)
    phases, shape = fitter.refine([fit.PhaseState(ref, np.zeros(2))], start_shape, [0], hold_shape=hold,
                                  max_nfev=30)
    np.testing.assert_allclose(phases[0].lnp, truth.lnp, atol=2e-4)
    assert shape.zero == pytest.approx(0.05, abs=0.005)
    assert np.sqrt(shape.w) == pytest.approx(np.sqrt(0.012), rel=0.05)
    assert shape.asym == pytest.approx(0.03, abs=0.004)  # the low-angle tails, found from a symmetric start
    res = fitter.result(phases, shape)
    assert res.chi2 < 1.3 * res.n_elements  # down to counting noise


def test_texture_pays_for_itself_like_a_cell_change():
    """A March-Dollase r far from 1 enters the fit's prior (and so its ranking and confidence):
    r = 0.4 costs (ln 0.4 / TEXTURE_PRIOR)^2 resolution elements, r = 1 nothing."""
    ref = _tetragonal()
    fitter = fit.Fitter(_observed(np.random.default_rng(1).normal(0.0, 1.0, TT.size), TT))
    shape = fit.Shape(w=0.01, u=0.02)
    plain = fitter.result([fit.PhaseState(ref, np.zeros(2), 2, 0.0)], shape)
    strong = fitter.result([fit.PhaseState(ref, np.zeros(2), 2, np.log(0.4))], shape)
    assert plain.prior == pytest.approx(0.0, abs=1e-12)
    assert strong.prior == pytest.approx((np.log(0.4) / fit.TEXTURE_PRIOR) ** 2, rel=1e-9)
    assert strong.prior > 3.0  # more than a 6 % cell change on one axis of a framework


def test_candidates_are_the_networks_top_classes_then_the_prefilters_other_materials():
    """The network's most probable classes, at most three determinations of one material (which
    of them fits a sample best the network cannot tell), then the prefilter's best materials not
    already in: a further determination of a fitted material adds no alternative."""
    from xrd_agent.verify.check import Checker, VerifyPolicy
    from xrd_agent.verify.prefilter import PrefilterResult

    refs = [_tetragonal(2) for _ in range(12)]
    materials = [0, 0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7]  # classes 0-3 one material, 4-5 another
    checker = Checker(refs, VerifyPolicy(network_candidates=5, per_material=3, prefilter_candidates=3), materials)
    probs = np.array([0.30, 0.20, 0.15, 0.12, 0.10, 0.05, 0.04, 0.03, 0.01, 0, 0, 0])
    scores = np.array([0.9, 0.1, 0.1, 0.1, 0.1, 0.85, 0.1, 0.1, 0.2, 0.7, 0.6, 0.5])
    chosen = checker.candidates(probs, PrefilterResult(scores, np.ones(12)))
    assert chosen[:5] == [0, 1, 2, 4, 5]  # class 3, a fourth determination of material 0, skipped
    assert chosen[5:] == [9, 10, 11]  # the prefilter's best of materials not yet in (0 and 1 are)


def test_the_engines_own_answers_are_fitted_after_the_networks_classes():
    """What identify would answer without the check (the network's order after the peak match)
    is fitted too: a material the peak match lifted from a few per cent is not among the
    network's most probable classes, and unfitted it fell out of the Top-5 behind the check's
    unsupported candidates. Materials already in are not fitted twice."""
    from xrd_agent.verify.check import Checker, VerifyPolicy
    from xrd_agent.verify.prefilter import PrefilterResult

    refs = [_tetragonal(2) for _ in range(12)]
    materials = [0, 0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7]
    checker = Checker(refs, VerifyPolicy(network_candidates=5, per_material=3, prefilter_candidates=3), materials)
    probs = np.array([0.30, 0.20, 0.15, 0.12, 0.10, 0.05, 0.04, 0.03, 0.01, 0, 0, 0])
    scores = np.array([0.9, 0.1, 0.1, 0.1, 0.1, 0.85, 0.1, 0.1, 0.2, 0.7, 0.6, 0.5])
    chosen = checker.candidates(probs, PrefilterResult(scores, np.ones(12)), engine_order=[0, 8, 3, 7])
    assert chosen[:5] == [0, 1, 2, 4, 5]
    assert chosen[5:7] == [8, 7]  # the engine's materials 4 and 3; class 3 is material 0, already in
    assert chosen[7:] == [9, 10, 11]
