"""Preprocessing on real instrument exports and on arrays with known answers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from xrd_agent.config import GateConfig
from xrd_agent.errors import NoCoverage, ScanError, UnknownWavelength
from xrd_agent.pattern import GRID_POINTS, MODEL_GRID
from xrd_agent.preprocess import (
    despike,
    prepare,
    prepare_arrays,
    prepare_grid_batch,
    prepare_many,
    prepare_raw,
    to_grid,
)
from xrd_agent.peakshape import broaden
from xrd_agent.readers import read_scan
from xrd_agent.scan import ANODE_LINES, Scan, ScanRange, Wavelength, to_cu_two_theta


def _scan(two_theta, intensity, anode: str | None = "Cu") -> Scan:
    return Scan(
        ranges=(ScanRange(np.asarray(two_theta, float), np.asarray(intensity, float)),),
        source_path=Path("synthetic.xy"),
        format="xy",
        format_version="1",
        sha256="0" * 64,
        wavelength=Wavelength.for_anode(anode) if anode else None,
    )


def _sticks_pattern(two_theta: np.ndarray, positions, heights, fwhm_scale=1.0) -> np.ndarray:
    """Peaks broadened on an arbitrary even grid (the instrument's, not the model's)."""
    return broaden(np.asarray(positions), np.asarray(heights), grid=two_theta, fwhm_scale=fwhm_scale)


@pytest.fixture(scope="module")
def bt86(fixtures_dir):
    return read_scan(fixtures_dir / "BT86.raw")


# -- the real fixtures -----------------------------------------------------------------
#: Fixtures that measured too little of 5-50 deg to be judged (44-48 and 30-42 deg).
FRAGMENTS = {"23-012-AG_2thomegascan_long.brml", "empyrean.xrdml"}


def test_every_fixture_prepares_or_says_why(fixtures_dir):
    for path in sorted(fixtures_dir.iterdir()):
        if path.suffix in {".md", ".json"}:
            continue
        if path.name in FRAGMENTS:
            with pytest.raises(NoCoverage):
                prepare(read_scan(path))
            continue
        pattern = prepare(read_scan(path))
        covered = pattern.intensity[pattern.mask]
        assert pattern.intensity.dtype == np.float32 and pattern.intensity.shape == (GRID_POINTS,)
        assert np.isfinite(pattern.intensity).all(), path.name
        assert covered.max() == pytest.approx(1.0), path.name
        assert covered.min() >= 0.0, path.name
        assert not pattern.intensity[~pattern.mask].any(), path.name


def test_coverage_of_a_3_to_40_degree_scan(bt86):
    pattern = prepare(bt86)
    assert pattern.coverage.first == pytest.approx(5.0)
    assert pattern.coverage.last == pytest.approx(40.0)
    assert pattern.coverage.fraction == pytest.approx(3501 / GRID_POINTS)
    assert pattern.mask[MODEL_GRID <= 40.0].all() and not pattern.mask[MODEL_GRID > 40.005].any()


def test_multi_range_file_leaves_its_gaps_uncovered(fixtures_dir):
    # format1.raw: three ranges, 10-20, 30-35 and 40-45 deg.
    pattern = prepare(read_scan(fixtures_dir / "format1.raw"))
    for lo, hi in ((10, 20), (30, 35), (40, 45)):
        assert pattern.mask[(MODEL_GRID >= lo) & (MODEL_GRID <= hi)].all()
    for lo, hi in ((5, 9.99), (20.1, 29.9), (35.1, 39.9), (45.1, 50)):
        assert not pattern.mask[(MODEL_GRID >= lo) & (MODEL_GRID <= hi)].any()
    assert pattern.coverage.first == pytest.approx(10.0) and pytest.approx(45.0) == pattern.coverage.last


def test_negative_counts_of_the_raw4_fixture_survive(fixtures_dir):
    scan = read_scan(fixtures_dir / "TwoTheta_scan_scrambled.raw")
    assert scan.intensity.min() < 0
    pattern = prepare(scan)
    assert pattern.coverage.first == pytest.approx(10.0)
    assert np.isfinite(pattern.intensity).all() and pattern.intensity.min() >= 0


def test_out_of_range_scan_is_a_scan_error_not_a_crash(fixtures_dir):
    # A 44-48 deg thin-film scan is covered a little; a scan beyond 50 deg not at all.
    tt = np.linspace(60, 100, 400)
    with pytest.raises(NoCoverage) as info:
        prepare(_scan(tt, np.ones_like(tt)))
    assert isinstance(info.value, ScanError) and "5 and 50" in info.value.reason
    # 44-48 deg is inside the range but too little to judge: rejected too (issue 12.7)
    with pytest.raises(NoCoverage, match="a judgement needs at least 15 deg"):
        prepare(read_scan(fixtures_dir / "23-012-AG_2thomegascan_long.brml"))


@pytest.mark.parametrize("first, last, step, rejected", [
    (30.0, 42.0, 0.02, True),   # the empyrean fragment's span
    (5.0, 5.04, 0.02, True),    # a 3-point file
    (5.0, 50.0, 0.5, True),     # 91 points over the whole range: peaks are not sampled
    (5.0, 21.0, 0.02, False),   # a moderately partial scan: judged, with low_coverage
    (10.0, 45.0, 0.2, False),   # 176 points over 35 deg
])
def test_no_coverage_threshold(first, last, step, rejected):
    tt = np.arange(first, last + step / 2, step)
    y = 100.0 + 50.0 * np.exp(-0.5 * ((tt - 20.0) / 5.0) ** 2)
    if rejected:
        with pytest.raises(NoCoverage):
            prepare(_scan(tt, y))
    else:
        assert prepare(_scan(tt, y)).coverage.fraction < 0.8


def test_unknown_wavelength_is_refused_and_can_be_supplied(bt86):
    bare = dataclasses.replace(bt86, wavelength=None)
    with pytest.raises(UnknownWavelength):
        prepare(bare)
    assert np.array_equal(prepare(bare, wavelength=ANODE_LINES["Cu"][0]).intensity, prepare(bt86).intensity)
    with pytest.raises(UnknownWavelength, match="nm"):
        prepare(bare, wavelength=0.15406)  # nanometres by mistake


# -- wavelength and grid ---------------------------------------------------------------
@pytest.mark.parametrize("anode", ["Co", "Mo"])
def test_other_anodes_land_at_the_copper_angle_of_the_same_d(anode):
    cu_peaks = np.array([8.0, 14.3, 22.7, 31.1, 44.6])
    lam = ANODE_LINES[anode][0]
    own_peaks = to_cu_two_theta(cu_peaks, ANODE_LINES["Cu"][0], target=lam)  # same d at lam
    step = 0.01 if anode == "Co" else 0.005
    tt = np.arange(own_peaks[0] - 3, own_peaks[-1] + 3, step)
    y = 1000 * _sticks_pattern(tt, own_peaks, np.ones(5), fwhm_scale=0.8 if anode == "Mo" else 1.0) + 50
    pattern = prepare(_scan(tt, y, anode))
    found = np.array([MODEL_GRID[np.argmax(np.where(np.abs(MODEL_GRID - p) < 0.5, pattern.intensity, 0))]
                      for p in cu_peaks])
    assert np.abs(found - cu_peaks).max() <= 0.011


def test_finer_scans_are_bin_averaged_not_sampled():
    tt = np.round(np.arange(4.998, 50.002, 0.002), 6)  # 5 points per grid bin
    y = np.random.default_rng(3).normal(100, 10, tt.size)
    values, mask = to_grid(tt, y)
    i = 1000  # grid point 15.00 deg: the samples 14.996 ... 15.004
    near = np.abs(tt - MODEL_GRID[i]) < 0.005
    assert near.sum() == 5
    assert values[i] == pytest.approx(y[near].mean())
    assert mask.all()
    assert values.std() < 10 / np.sqrt(5) * 1.2  # averaging, not picking one sample


def test_coarser_scans_are_interpolated():
    tt = np.arange(5, 50.0001, 0.05)
    y = 3.0 * tt + 7.0
    values, mask = to_grid(tt, y)
    assert np.allclose(values, 3.0 * MODEL_GRID + 7.0) and mask.all()


# -- normalisation -----------------------------------------------------------------
def test_count_time_does_not_change_the_pattern(bt86):
    once = prepare(bt86)
    y10 = bt86.intensity * 10.0
    ten = prepare(dataclasses.replace(bt86, ranges=(ScanRange(bt86.two_theta, y10),)))
    assert np.allclose(once.intensity, ten.intensity, atol=1e-6)
    assert once.gate.applied == ten.gate.applied
    assert once.gate.high_band_mean == pytest.approx(ten.gate.high_band_mean, rel=1e-5)  # float32 grid


def test_background_and_offset_are_removed():
    tt = np.arange(5, 50.0001, 0.02)
    peaks = _sticks_pattern(tt, [9.0, 17.0, 26.0], [1.0, 0.6, 0.3])
    hump = 0.5 * peaks.max() * np.exp(-(((tt - 22.0) / 6.0) ** 2))  # amorphous hump, 6 deg wide
    a = prepare_arrays(tt, peaks)
    b = prepare_arrays(tt, peaks + hump + 123.0)
    assert np.abs(a.intensity - b.intensity).max() < 0.05
    assert b.intensity[np.abs(MODEL_GRID - 22.0) < 0.5].max() < 0.05  # the hump itself is gone


def test_steep_air_scatter_at_the_low_angle_edge_is_removed():
    tt = np.arange(5, 50.0001, 0.02)
    peaks = _sticks_pattern(tt, [8.0, 12.0, 20.0], [1.0, 0.5, 0.3])
    air = peaks.max() * np.exp(-(tt - 5.0) / 1.5)  # as strong as the main peak at 5 deg
    pattern = prepare_arrays(tt, peaks + air)
    assert MODEL_GRID[np.argmax(pattern.intensity)] == pytest.approx(8.0, abs=0.011)
    assert pattern.intensity[MODEL_GRID < 6.0].max() < 0.05


# -- spikes --------------------------------------------------------------------------
def test_single_point_spikes_are_removed_peaks_are_kept(bt86):
    clean, count = despike(bt86.intensity)
    assert count == 0 and np.array_equal(clean, bt86.intensity)  # real peaks untouched
    y = bt86.intensity.copy()
    quiet = np.flatnonzero((bt86.two_theta > 36) & (bt86.two_theta < 38))[::40][:3]
    y[quiet] += 20 * bt86.intensity.max()  # zingers much larger than the strongest reflection
    fixed, count = despike(y)
    assert count == 3
    # Replaced by the local median: back to the scale of its neighbours, far below the zinger.
    assert np.abs(fixed[quiet] - bt86.intensity[quiet]).max() < 0.05 * bt86.intensity.max()
    spiked = prepare(dataclasses.replace(bt86, ranges=(ScanRange(bt86.two_theta, y),)))
    assert np.abs(spiked.intensity - prepare(bt86).intensity).max() < 0.02


# -- FFT gate --------------------------------------------------------------------------
def _moflike(rng: np.random.Generator, n_peaks: int = 60) -> np.ndarray:
    pos = rng.uniform(5.5, 49.5, n_peaks)
    return broaden(pos, rng.exponential(1.0, n_peaks) * np.exp(-pos / 20.0))


def test_gate_keeps_a_smooth_pattern_and_filters_a_noisy_one():
    rng = np.random.default_rng(7)
    clean = _moflike(rng)
    clean /= clean.max()
    noisy = rng.poisson(100 * clean + 10).astype(float)  # ~100 counts at the strongest peak
    smooth = prepare_arrays(MODEL_GRID, clean)
    rough = prepare_arrays(MODEL_GRID, noisy)
    assert not smooth.gate.applied and smooth.gate.high_band_mean < smooth.gate.threshold
    assert rough.gate.applied and rough.gate.high_band_mean > rough.gate.threshold
    assert rough.gate.cutoff_bins == 200
    # The filtered pattern lost its high frequencies: far smoother than the raw noisy one.
    raw = prepare_arrays(MODEL_GRID, noisy, GateConfig(threshold=np.inf))
    assert not raw.gate.applied
    assert np.abs(np.diff(rough.intensity)).mean() < 0.5 * np.abs(np.diff(raw.intensity)).mean()


def test_gate_on_real_scans(fixtures_dir):
    # A 138-count Cu3Au scan is gated; a 178k-count silicon standard is not.
    assert prepare(read_scan(fixtures_dir / "Cu3Au-1.raw")).gate.applied
    assert not prepare(read_scan(fixtures_dir / "Si-Std_SRM640d_D8D_20-97_7_16hm.brml")).gate.applied


# -- the batch path is the same path -----------------------------------------------------
def test_batch_equals_single_path():
    rng = np.random.default_rng(11)
    rows = np.stack([_moflike(rng) * 500 + 20 for _ in range(3)])
    rows[1] = rng.poisson(rows[1] / rows[1].max() * 80 + 5)  # one that trips the gate
    batch, decisions = prepare_grid_batch(rows, None, GateConfig())
    assert batch.dtype == np.float32 and batch.shape == (3, GRID_POINTS)
    assert [d.applied for d in decisions] == [False, True, False]
    for row, out, decision in zip(rows, batch, decisions):
        single = prepare_arrays(MODEL_GRID, row)
        assert single.gate.applied == decision.applied
        assert single.gate.high_band_mean == pytest.approx(decision.high_band_mean, rel=1e-5)
        np.testing.assert_allclose(out, single.intensity, atol=1e-6)


def test_raw_grid_values_come_with_the_pattern(bt86):
    pattern, raw = prepare_raw(bt86)
    assert np.array_equal(pattern.intensity, prepare(bt86).intensity)
    expected, _ = to_grid(bt86.two_theta, despike(bt86.intensity)[0])
    np.testing.assert_allclose(raw, expected, rtol=1e-12)
    assert raw.max() == pytest.approx(bt86.intensity[bt86.two_theta >= 5].max(), rel=0.05)


def test_many_scans_at_once_equal_one_by_one(fixtures_dir):
    scans = [read_scan(p) for p in sorted(fixtures_dir.iterdir()) if p.suffix not in {".md", ".json"}]
    beyond = _scan(np.linspace(60, 100, 400), np.ones(400))
    unknown = dataclasses.replace(scans[0], wavelength=None)
    results = prepare_many([beyond, *scans, unknown])
    assert isinstance(results[0], NoCoverage) and results[0].path == Path("synthetic.xy")
    assert isinstance(results[-1], UnknownWavelength)
    for scan, result in zip(scans, results[1:-1]):
        if isinstance(result, NoCoverage):
            assert scan.source_path.name in FRAGMENTS
            with pytest.raises(NoCoverage):
                prepare_raw(scan)
            continue
        pattern, raw = result
        alone, alone_raw = prepare_raw(scan)
        np.testing.assert_allclose(pattern.intensity, alone.intensity, atol=1e-6)
        np.testing.assert_array_equal(pattern.mask, alone.mask)
        np.testing.assert_allclose(raw, alone_raw)
        assert pattern.gate.applied == alone.gate.applied and pattern.coverage == alone.coverage


def test_bad_arrays_do_not_crash():
    tt = np.linspace(5, 50, 2000)
    y = np.full_like(tt, 7.0)
    y[1::97] = np.nan
    flat = prepare_arrays(tt, y)  # flat: nothing above background, all zeros, no crash
    assert not flat.intensity.any() and flat.mask.all()
    reversed_ = prepare_arrays(tt[::-1], (tt * 0 + np.exp(-((tt - 20) ** 2)))[::-1])
    assert MODEL_GRID[np.argmax(reversed_.intensity)] == pytest.approx(20.0)
    with pytest.raises(NoCoverage):
        prepare_arrays(np.array([np.nan, np.nan]), np.array([1.0, 2.0]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    start=st.floats(0.0, 60.0),
    step=st.floats(0.001, 0.5),
    values=arrays(np.float64, st.integers(1, 3000),
                  elements=st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                                     st.floats(-1e6, 1e6))),
)
def test_any_array_gives_a_pattern_or_a_scan_error(start, step, values):
    tt = start + step * np.arange(values.size)
    try:
        pattern = prepare_arrays(tt, values)
    except NoCoverage:
        return
    assert np.isfinite(pattern.intensity).all()
    assert pattern.intensity.min() >= 0 and pattern.intensity.max() <= 1.0 + 1e-6
    assert not pattern.intensity[~pattern.mask].any()
    assert 0 < pattern.coverage.fraction <= 1


def test_absurd_magnitudes_stay_finite():
    tt = np.arange(5, 50, 0.02)
    y = 1e39 * (1 + np.exp(-((tt - 20) / 0.1) ** 2))  # beyond float32
    pattern = prepare_arrays(tt, y)
    assert np.isfinite(pattern.intensity).all()
    assert MODEL_GRID[np.argmax(pattern.intensity)] == pytest.approx(20.0, abs=0.011)
    rows, _ = prepare_grid_batch(np.full((2, GRID_POINTS), np.nan), None, GateConfig())
    assert np.isfinite(rows).all()
