"""Crystallinity estimate (xrd_agent.crystallinity) on simulated products with known crystalline
fractions and on the measured scans in tests/data; the simulator's physics (sum rule)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_model_support import amorphous_scan

from xrd_agent import crystallinity as C
from xrd_agent.identification import Flag
from xrd_agent.model.flags import FlagPolicy, crystallinity_verdict
from xrd_agent.pattern import MODEL_GRID, Coverage
from xrd_agent.testing import crystallinity_eval
from xrd_agent.testing import products as P

ROOT = Path(__file__).resolve().parents[1]
FULL = Coverage(5.0, 50.0, 1.0)


def _framework(name: str) -> P.Framework:
    return next(f for f in P.frameworks() if f.name == name)


def test_debye_fragments_and_the_crystal_scatter_the_same_total():
    """Same atoms, same total coherent scattering: the integral of I(Q) Q^2 dQ of the disordered
    fragments equals that of the Bragg reflections (and of <f^2>), to a few per cent."""
    fw = _framework("OFERUN")
    q = np.linspace(0.3, 6.0, 2000)
    amorphous = np.trapezoid(P.amorphous_per_atom(fw, q, 6.0, 0.1) * q * q, q)
    lam = 1.5406
    pos, area = P.bragg_per_atom(fw, lam, 3.0, 2 * np.degrees(np.arcsin(6.0 * lam / (4 * np.pi))), 0.0)
    th = np.radians(pos / 2)
    qp = 4 * np.pi * np.sin(th) / lam
    per_q = area / ((1 + np.cos(2 * th) ** 2) / 2) / (lam / (2 * np.pi * np.cos(th)) * 180 / np.pi)
    bragg = np.sum((per_q * qp * qp)[qp >= 0.3])
    assert amorphous == pytest.approx(bragg, rel=0.05)


@pytest.mark.parametrize("name, seed", [("FIQCEN", 1), ("RUBTAK02", 2), ("SALLAT", 3)])
def test_failed_and_crystalline_products_are_told_apart(name, seed):
    fw = _framework(name)
    failed = P.product(fw, 0.03, np.random.default_rng(seed))
    good = P.product(fw, 0.9, np.random.default_rng(seed))
    low, high = C.estimate(failed.two_theta, failed.counts), C.estimate(good.two_theta, good.counts)
    assert low.fraction < 0.2 < 0.5 < high.fraction
    assert 0.0 < low.uncertainty < 0.3 and 0.0 < high.uncertainty < 0.3


def test_air_scatter_is_background_not_amorphous():
    """A steep air-scatter rise at low angle is convex: the baseline takes it, the index barely moves."""
    p = P.product(_framework("FIQCEN"), 0.7, np.random.default_rng(4))
    rng = np.random.default_rng(5)
    air = rng.poisson(3.0 * np.median(p.counts) * np.exp(-(p.two_theta - p.two_theta[0]) / 3.0))
    plain = C.raw_index(p.two_theta, p.counts)[0]
    with_air = C.raw_index(p.two_theta, p.counts + air)[0]
    assert np.median(with_air) == pytest.approx(np.median(plain), abs=0.05)


def test_counts_per_second_give_the_same_fraction():
    """The count unit is found from the noise, so a file in cps is judged like one in counts."""
    p = P.product(_framework("EDUSIF"), 0.5, np.random.default_rng(6))
    counts = C.estimate(p.two_theta, p.counts)
    cps = C.estimate(p.two_theta, p.counts / 7.3)
    assert cps.fraction == pytest.approx(counts.fraction, abs=0.01)
    assert C.count_unit(p.counts / 7.3) == pytest.approx(1 / 7.3, rel=0.25)


def test_the_demo_failed_synthesis_is_amorphous():
    """The demo's and the tests' amorphous scan (a broad hump on background) is flagged amorphous."""
    for seed in range(3):
        c = C.estimate(MODEL_GRID, amorphous_scan(seed))
        assert crystallinity_verdict(c, FULL) is Flag.AMORPHOUS, c


def test_too_little_to_judge_gives_no_estimate():
    tt = np.linspace(30.0, 32.0, 50)
    c = C.estimate(tt, np.full(tt.size, 100.0))
    assert np.isnan(c.fraction) and crystallinity_verdict(c, FULL) is None


def test_no_measured_crystalline_scan_is_called_amorphous_or_low():
    """The measured scans in tests/data are all crystalline products: none gets a crystallinity
    verdict (fragments are rejected as no_coverage before any judgement)."""
    rows = crystallinity_eval.real_scans(crystallinity_eval.default_real_paths(ROOT), FlagPolicy())
    judged = [r for r in rows if "rejected" not in r]
    assert len(judged) >= 25
    assert {r["file"].rsplit("/", 1)[-1] for r in rows if "rejected" in r} == {
        "23-012-AG_2thomegascan_long.brml", "empyrean.xrdml"}
    wrong = [(r["file"], r["fraction"], r["verdict"]) for r in judged if r["verdict"] in ("amorphous", "low_crystallinity")]
    assert not wrong


def test_evaluate_prints_the_crystallinity_table():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "xrd_agent", "evaluate", "--crystallinity-only", "--crystallinity", "8"],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "Crystallinity on 8 simulated products" in out and "mean absolute error" in out
    assert "| crystalline fraction | n | mean estimate |" in out
    assert "fixtures/scans/empyrean.xrdml | | | | rejected: no_coverage |" in out
