"""Physics augmentation and synthetic datasets: reproducible, every switch live, same path as scans."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from xrd_agent.config import GateConfig
from xrd_agent.errors import ConfigError
from xrd_agent.library.artifact import Library, Sticks
from xrd_agent.model import dataset
from xrd_agent.model.augment import AugmentOptions, augment, render
from xrd_agent.model.dataset import realistic_heldout, synthesize
from xrd_agent.model.noise import NoiseBank
from xrd_agent.pattern import GRID_POINTS, MODEL_GRID
from xrd_agent.preprocess import prepare_grid_batch
from xrd_agent.peakshape import PeakProfile, broaden

NONE = AugmentOptions.none()


def _sticks(rng: np.random.Generator, n: int = 120) -> Sticks:
    tt = np.sort(rng.uniform(5.5, 49.5, n))
    inten = rng.exponential(1.0, n)
    inten /= inten.max()
    hkl = rng.integers(-5, 6, (n, 3))
    hkl[~hkl.any(axis=1)] = (1, 0, 0)
    return Sticks(tt, inten, hkl)


def _library(n: int = 4, seed: int = 0, heldout_of: Library | None = None) -> Library:
    rng = np.random.default_rng(seed)
    sticks = [_sticks(rng) for _ in range(n)]
    patterns = np.array([broaden(s.two_theta, s.intensity) for s in sticks])
    patterns /= patterns.max(axis=1, keepdims=True)
    entries = [{"refcode": f"REF{i:02d}", "name": f"MOF-{i}"} for i in range(n)]
    if heldout_of is not None:
        entries = [{**e, "refcode": f"ALT{i:02d}", "class_refcode": heldout_of.refcodes[i]}
                   for i, e in enumerate(entries)]
    return Library.from_patterns(entries, patterns, sticks)


@pytest.fixture(scope="module")
def library() -> Library:
    return _library()


@pytest.fixture(scope="module")
def bank() -> NoiseBank:
    return NoiseBank.load()


def _one(options: AugmentOptions, sticks: Sticks, seed: int = 5, n: int = 3, noise=None):
    return augment(sticks.two_theta, sticks.intensity, sticks.hkl, n, options, np.random.default_rng(seed),
                   noise=noise)


# -- rendering -----------------------------------------------------------------------
@pytest.mark.parametrize("eta", [0.2, 0.5, 0.8])
def test_fourier_rendering_matches_the_library_profile(eta):
    s = _sticks(np.random.default_rng(1), 300)
    reference = broaden(s.two_theta, s.intensity, profile=PeakProfile(eta=eta))
    nodes = PeakProfile().fwhm(np.array([5.0, 27.5, 50.0]))
    fast = render(s.two_theta[None], s.intensity[None], nodes[None], np.array([eta]))[0]
    # broaden truncates tails at +-12 FWHM; the Fourier path does not: < 1 % of the maximum apart.
    assert np.abs(fast - reference).max() < 0.01 * reference.max()


def test_no_augmentation_is_the_clean_reference():
    s = _sticks(np.random.default_rng(2))
    raw, mask = _one(NONE, s, n=2)
    clean = broaden(s.two_theta, s.intensity)
    assert mask.all()
    np.testing.assert_allclose(raw[0], clean / clean.max(), atol=0.01)
    np.testing.assert_array_equal(raw[0], raw[1])


# -- reproducibility and switches ------------------------------------------------------
def test_same_seed_same_spectra_other_seed_others(bank):
    s = _sticks(np.random.default_rng(3))
    noise = bank.sample(3, np.random.default_rng(0))
    a, ma = _one(AugmentOptions(), s, seed=11, noise=noise)
    b, mb = _one(AugmentOptions(), s, seed=11, noise=noise)
    c, _ = _one(AugmentOptions(), s, seed=12, noise=noise)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ma, mb)
    assert not np.allclose(a, c)


SWITCHES = {
    "strain_iso": {"strain_iso": 0.02},
    "strain_aniso": {"strain_aniso": 0.02},
    "displacement": {"displacement_mm": 0.3},
    "zero_shift": {"zero_shift_deg": 0.05},
    "size_broadening": {"size_broadening": 1.0},
    "instrument_width": {"instrument_fwhm_scale": (0.7, 1.5)},
    "eta": {"eta": (0.0, 1.0)},
    "intensity_jitter": {"intensity_jitter": 0.3},
    "preferred_orientation": {"preferred_orientation": 1.0},
    "low_angle": {"low_angle_scale_log": (0.1, 3.0)},
    "kalpha2": {"kalpha2": 1.0},
    "amorphous": {"amorphous": 1.0},
    "air_scatter": {"air_scatter": 1.0},
    "flat_background": {"flat_background": (0.05, 0.2)},
    "poisson": {"poisson": 1.0},
    "bank_noise": {"bank_noise": 1.0},
    "merge_top_points": {"bank_noise": 1.0, "merge_top_points": 400},
    "crop": {"crop": 1.0},
}


@pytest.mark.parametrize("name", sorted(SWITCHES))
def test_each_switch_changes_the_output(name, bank):
    s = _sticks(np.random.default_rng(4))
    noise = bank.sample(3, np.random.default_rng(1))
    base_options = NONE
    if name == "merge_top_points":  # compare against bank noise without the merge
        base_options = dataclasses.replace(NONE, bank_noise=1.0)
    base, base_mask = _one(base_options, s, noise=noise)
    changed, mask = _one(dataclasses.replace(NONE, **SWITCHES[name]), s, noise=noise)
    if name == "crop":
        assert not mask.all() and base_mask.all()
    assert np.abs(changed - base).max() > 1e-3, name


def test_kalpha2_doublet_lands_at_the_alpha2_angle():
    s = Sticks(np.array([40.0]), np.array([1.0]), np.array([[1, 1, 1]]))
    raw, _ = _one(dataclasses.replace(NONE, kalpha2=1.0), s, n=1)
    y = raw[0]
    expected = 2 * np.degrees(np.arcsin(np.sin(np.radians(20.0)) * 1.544426 / 1.540598))  # 40.10 deg
    near = np.abs(MODEL_GRID - expected) < 0.03
    assert y[near].max() > 0.45  # half the K-alpha1 peak plus its own shoulder
    assert MODEL_GRID[np.argmax(y)] == pytest.approx(40.0, abs=0.011)


def test_size_broadening_widens_peaks_as_scherrer_says():
    s = Sticks(np.array([30.0]), np.array([1.0]), np.array([[1, 0, 0]]))
    sharp, _ = _one(NONE, s, n=1)
    small = dataclasses.replace(NONE, size_broadening=1.0, crystallite_nm_log=(20.0, 20.0))
    broad, _ = _one(small, s, n=1)
    width = lambda y: np.count_nonzero(y >= 0.5 * y.max()) * 0.01  # noqa: E731
    scherrer = np.degrees(0.9 * 0.1540598 / (20.0 * np.cos(np.radians(15.0))))
    expected = np.hypot(PeakProfile().fwhm(np.array([30.0]))[0], scherrer)
    assert width(broad[0]) == pytest.approx(expected, abs=0.03)
    assert width(broad[0]) > 2 * width(sharp[0])


def test_options_from_a_mapping_and_typos_refused():
    assert AugmentOptions.coerce(None) == AugmentOptions()
    opts = AugmentOptions.coerce({"kalpha2": 0.0, "counts_log": [10, 100]})
    assert opts.kalpha2 == 0.0 and opts.counts_log == (10, 100)
    with pytest.raises(ConfigError):
        AugmentOptions.coerce({"kalpha_2": 1.0})
    with pytest.raises(ConfigError):
        AugmentOptions.coerce({"kalpha2": "often"})
    with pytest.raises(ConfigError):
        AugmentOptions.coerce("paperish")
    assert AugmentOptions.coerce("physics").bank_noise == 0.0
    from_table = AugmentOptions.coerce({"preset": "paper", "poisson": 0.5})
    assert from_table == dataclasses.replace(AugmentOptions.paper(), poisson=0.5)
    assert AugmentOptions.coerce(AugmentOptions().to_dict()) == AugmentOptions()


def test_paper_preset_keeps_the_400_strongest_points_plus_real_noise(bank):
    s = _sticks(np.random.default_rng(6))
    noise = bank.sample(2, np.random.default_rng(2))
    raw, _ = _one(AugmentOptions.paper(), s, n=2, noise=noise)
    clean, _ = _one(NONE, s, n=1)
    top = np.argsort(clean[0])[-400:]
    rest = np.setdiff1d(np.arange(GRID_POINTS), top)
    # Off the 400 strongest points only real noise is left, times one random factor ...
    factor = raw[0][rest] / noise[0][rest]
    assert np.ptp(factor[np.abs(noise[0][rest]) > 1e-6]) < 1e-6
    scale = float(np.median(factor))
    # ... and on them the clean pattern plus the same noise.
    np.testing.assert_allclose(raw[0][top] - scale * noise[0][top], clean[0][top], atol=1e-9)


# -- datasets -------------------------------------------------------------------------
def test_synthesize_shapes_labels_and_reproducibility(library, bank):
    X, y = synthesize(library, 5, seed=3, bank=bank)
    assert X.dtype == np.float32 and X.shape == (20, GRID_POINTS)
    assert y.dtype == np.int32 and list(y) == [0] * 5 + [1] * 5 + [2] * 5 + [3] * 5
    assert np.isfinite(X).all() and X.min() >= 0 and np.allclose(X.max(axis=1), 1.0)
    calls = []
    X2, _ = synthesize(library, 5, seed=3, bank=bank, progress=lambda done, total: calls.append((done, total)))
    np.testing.assert_array_equal(X, X2)
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    # A class's spectra do not depend on which other classes were asked for.
    X3, y3 = synthesize(library, 5, seed=3, bank=bank, classes=[2])
    np.testing.assert_array_equal(X3, X[10:15])
    assert set(y3) == {2}


def test_synthesize_goes_through_the_scan_path(library):
    X, _ = synthesize(library, 1, seed=0, options=NONE)
    expected, _ = prepare_grid_batch(library.patterns, None, GateConfig())
    np.testing.assert_allclose(X, expected, atol=0.01)


def test_process_pool_gives_the_same_result(library, bank, monkeypatch):
    serial, _ = synthesize(library, 3, seed=9, bank=bank, workers=1)
    monkeypatch.setattr(dataset, "_POOL_MIN_SPECTRA", 0)
    pooled, _ = synthesize(library, 3, seed=9, bank=bank, workers=2)
    np.testing.assert_array_equal(serial, pooled)


def test_realistic_heldout_labels_by_class_refcode(library, bank):
    heldout = _library(3, seed=1, heldout_of=library)
    X, y = realistic_heldout(library, heldout, 2, seed=0, bank=bank)
    assert X.shape == (6, GRID_POINTS) and list(y) == [0, 0, 1, 1, 2, 2]
    assert np.isfinite(X).all()


def test_shipped_library_clean_spectra_are_its_own_patterns():
    # Real sticks (with their cells) through the Fourier renderer and the scan path give
    # the library's stored references (float16) back: training and search-match agree.
    library = Library.load()
    classes = [library.index_of("HKUST-1"), 1, len(library) // 2, len(library) - 1]
    X, y = synthesize(library, 1, seed=0, options="none", classes=classes)
    expected, _ = prepare_grid_batch(library.patterns[classes], None, GateConfig())
    assert list(y) == classes
    assert np.abs(X - expected).max() < 0.01
    augmented, _ = synthesize(library, 2, seed=0, classes=classes[:1])
    assert np.isfinite(augmented).all() and not np.allclose(augmented[0], X[0], atol=0.05)
