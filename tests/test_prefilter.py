"""The whole-library prefilter (xrd_agent/verify/prefilter.py) on synthetic orthorhombic cells:
an isotropic scale is found by the FFT stage, a cell whose axes moved apart (a breathing
framework) by the anisotropic stage, and the check's candidates take both orders in turn."""

from __future__ import annotations

import numpy as np
import pytest

from xrd_agent.verify import fit
from xrd_agent.verify.observed import Observed
from xrd_agent.verify.prefilter import LnDIndex, PrefilterResult
from xrd_agent.verify.references import build_reference

CU = (1.540598, 1.544426)
TT = np.arange(4.0, 60.0, 0.02)


def _library(n: int = 8) -> list[fit.Reference]:
    rng = np.random.default_rng(5)
    r = np.arange(0, 7)
    hkl = np.array([(h, k, l) for h in r for k in r for l in r if (h, k, l) != (0, 0, 0)], float)
    refs = []
    for i in range(n):
        cell = np.array([*rng.uniform(9.0, 16.0, 3), 90.0, 90.0, 90.0])
        f2 = rng.lognormal(0.0, 1.5, len(hkl)) * 100.0
        ref = build_reference(i, f"R{i}", f"R{i}", cell, hkl, f2, 500.0, float(np.prod(cell[:3])), True)
        assert ref is not None and ref.n_groups == 3
        refs.append(ref)
    return refs


def _scan(ref: fit.Reference, axes: tuple[float, float, float]) -> Observed:
    """``ref`` with its a, b, c changed by ``axes`` (fractions), counting noise on a background."""
    lnp = -2.0 * np.log1p(np.array(axes))
    clean = fit.Fitter(Observed(TT, np.zeros(TT.size), 0.02, CU[0], CU[1], 1.0))
    cols, _ = clean.columns([fit.PhaseState(ref, lnp)], fit.Shape(zero=0.0, w=0.01, u=0.01, eta=0.5, ka2=0.5))
    y = cols[:, 0] / cols[:, 0].max() * 3000.0 + 200.0
    y = np.random.default_rng(1).poisson(y).astype(float)
    return Observed(TT, y, 0.02, CU[0], CU[1], float(np.sqrt(200.0)))


def test_an_isotropic_change_is_found_by_the_fft_stage():
    refs = _library()
    index = LnDIndex(refs)
    res = index.search(_scan(refs[3], (0.05, 0.05, 0.05)), anisotropic=4)
    assert res.best(1)[0].index == 3
    assert res.best(1)[0].scale == pytest.approx(1.05, abs=0.004)
    assert next(res.interleaved()).index == 3


def test_axes_that_moved_apart_are_found_by_the_anisotropic_stage():
    """+7 % / -5 % / +2 %: no single scale lines the reflections up, the group scan does, and the
    re-scored cosine (every reflection, as the isotropic stage scores) is far above the
    isotropic one."""
    refs = _library()
    index = LnDIndex(refs)
    axes = (0.07, -0.05, 0.02)
    res = index.search(_scan(refs[3], axes), anisotropic=len(refs))
    k = int(np.flatnonzero(res.aniso_index == 3)[0])
    assert res.aniso_scores[k] == res.aniso_scores.max()
    assert res.aniso_scores[k] > res.scores[3] + 0.15
    np.testing.assert_allclose(res.aniso_lnp[k, :3], -2.0 * np.log1p(np.array(axes)), atol=0.01)
    assert res.cell(3) is not None and res.cell(3)[0] == res.aniso_lnp[k, 0]
    # the hit the check fits carries the found cell as the fit's start
    hit = next(h for h in res.interleaved() if h.index == 3)
    assert hit.lnp is not None
    assert [h.index for h in res.interleaved()][:2].count(3) == 1


def test_interleaving_takes_both_orders_in_turn_and_each_class_once():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    res = PrefilterResult(scores, np.ones(5), np.array([0, 1, 2, 3, 4]), np.array([0.1, 0.2, 0.3, 0.95, 0.94]),
                          np.zeros((5, 6)))
    assert [h.index for h in res.interleaved()] == [0, 3, 1, 4, 2]
    assert [h.index for h in res.interleaved(exclude={0, 3})] == [1, 4, 2]
    assert [h.index for h in res.ranked()] == [0, 1, 2, 3, 4]


def test_the_rough_background_sits_in_the_middle_of_the_noise_under_a_hump():
    """The prefilter compares what stands above the background. A morphological opening alone
    follows the noise's lower envelope (about two sigma under the background) and cuts the top
    off a capillary-wide hump, so the scan's noise and the hump's top were compared as if they were
    reflections; the running median of what the opening leaves puts the estimate back in the
    middle: away from the peak, the net counts average to within half a sigma of zero everywhere
    along a hump of 100 to 10,000 counts, and the peak stands whole."""
    from xrd_agent.verify.observed import rough_background

    rng = np.random.default_rng(3)
    hump = 100.0 + 9900.0 * np.exp(-0.5 * ((TT - 22.0) / 4.0) ** 2)
    peak = 3000.0 * np.exp(-0.5 * ((TT - 40.0) / 0.05) ** 2)
    y = rng.poisson(hump + peak).astype(float)
    net = y - rough_background(Observed(TT, y, 0.02, CU[0], CU[1], 1.0))
    sigma = np.sqrt(hump)
    for lo, hi in ((5.0, 12.0), (16.0, 20.0), (20.0, 24.0), (24.0, 28.0), (45.0, 58.0)):
        part = (TT >= lo) & (TT < hi)
        assert abs(np.mean(net[part] / sigma[part])) < 0.5, (lo, hi)
    assert net[np.argmin(np.abs(TT - 40.0))] == pytest.approx(3000.0, abs=5 * np.sqrt(3100.0))


def test_a_scan_of_broad_lines_is_matched_with_references_as_broad():
    """A nanocrystalline cubic metal (lines 3.5 deg wide) among large cells with many reflections:
    narrow references correlate best where many reflections sit under a broad line; broadened to
    the scan's own line width (a matched filter) the metal's two strong lines find it first."""
    from xrd_agent.verify.observed import observe

    hkl = np.array([(h, k, l) for h in range(6) for k in range(6) for l in range(6)
                    if (h, k, l) != (0, 0, 0) and (h + k + l) % 2 == 0], float)  # body-centred
    metal = build_reference(8, "bcc", "bcc", np.array([3.3, 3.3, 3.3, 90.0, 90.0, 90.0]), hkl,
                            np.full(len(hkl), 100.0), 48.0, 3.3**3, True)
    refs = [*_library(), metal]
    tt = np.arange(30.0, 90.0, 0.025)
    blank = fit.Fitter(Observed(tt, np.zeros(tt.size), 0.025, CU[0], CU[1], 1.0))
    cols, _ = blank.columns([fit.PhaseState(metal, np.zeros(1))], fit.Shape(w=3.5**2, u=0.2, eta=0.5, ka2=0.5))
    y = np.random.default_rng(2).poisson(cols[:, 0] / cols[:, 0].max() * 3000.0 + 500.0).astype(float)
    obs = observe(tt, y, *CU)
    assert fit.broad_fwhm(obs) == pytest.approx(3.5, rel=0.15)
    assert LnDIndex(refs).search(obs).best(1)[0].index == 8
