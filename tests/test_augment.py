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


# -- instrument effects of measured as-made MOFs ----------------------------------------
from xrd_agent.model.augment import (  # noqa: E402
    cell_axis_ratio,
    march_dollase,
    solvent_factor,
    tied_axes,
)
from xrd_agent.model.dataset import _cell  # noqa: E402

INSTRUMENT_OFF = dataclasses.replace(NONE, kalpha2=0.0)


def _two_theta(d: np.ndarray) -> np.ndarray:
    from xrd_agent.scan import ANODE_LINES

    return 2.0 * np.degrees(np.arcsin(ANODE_LINES["Cu"][0] / (2.0 * np.asarray(d, float))))


def _peak(y: np.ndarray, near: float, window: float = 1.5) -> float:
    sel = np.abs(MODEL_GRID - near) < window
    return float(MODEL_GRID[sel][np.argmax(y[sel])])


def test_axis_change_moves_h00_and_not_0k0():
    cell = _cell({"cell": [10.0, 12.0, 15.0, 90.0, 90.0, 90.0]})
    hkl = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]])
    ratio = cell_axis_ratio(hkl, cell, np.array([[1.05, 1.0, 1.0]]))[0]
    np.testing.assert_allclose(ratio[:3], [1.05, 1.0, 1.0], rtol=1e-12)
    d110_new = 1.0 / np.sqrt(1 / 10.5**2 + 1 / 12.0**2)
    d110_old = 1.0 / np.sqrt(1 / 10.0**2 + 1 / 12.0**2)
    assert ratio[3] == pytest.approx(d110_new / d110_old, rel=1e-12)
    # monoclinic: the reciprocal metric tensor, not 1/d = |h|/a per axis
    mono = _cell({"cell": [10.0, 12.0, 15.0, 90.0, 105.0, 90.0]})
    g = np.linalg.inv(mono @ mono.T)
    h = np.array([1.0, 0.0, 1.0])
    s = np.array([0.95, 1.0, 1.08])
    expected = np.sqrt((h @ g @ h) / ((h / s) @ g @ (h / s)))
    assert cell_axis_ratio(h[None], mono, s[None])[0, 0] == pytest.approx(expected, rel=1e-12)


def test_equal_axes_move_together():
    assert list(tied_axes(_cell({"cell": [20.0, 20.0, 20.0, 90, 90, 90]}))) == [0, 0, 0]
    assert list(tied_axes(_cell({"cell": [20.0, 20.0, 9.0, 90, 90, 120]}))) == [0, 0, 2]
    assert list(tied_axes(_cell({"cell": [10.0, 12.0, 15.0, 90, 90, 90]}))) == [0, 1, 2]


def test_augmented_cell_change_shifts_peaks_through_hkl():
    """A tetragonal cell (a = b != c): (100) and (010) stay together, (001) moves on its own,
    and each peak lands where the changed cell's d says."""
    cell = _cell({"cell": [14.0, 14.0, 9.0, 90.0, 90.0, 90.0]})
    hkl = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    tt = _two_theta([14.0, 14.0, 9.0])
    opts = dataclasses.replace(INSTRUMENT_OFF, cell_axes=1.0, cell_axes_max=0.08)
    y, _ = augment(tt, np.array([1.0, 0.5, 0.8]), hkl, 6, opts, np.random.default_rng(2), cell=cell)
    moved_a = np.array([_peak(row, tt[0], 1.2) - tt[0] for row in y])
    moved_c = np.array([_peak(row, tt[2], 2.0) - tt[2] for row in y])
    # (100) and (010) stay one peak: against the same draws without (010), the peak is 1.5x
    single, _ = augment(tt[[0, 2]], np.array([1.0, 0.8]), hkl[[0, 2]], 6, opts, np.random.default_rng(2),
                        cell=cell)
    for row, one in zip(y, single):
        i_a = np.argmin(np.abs(MODEL_GRID - (tt[0] + _peak(row, tt[0], 1.2) - tt[0])))
        i_c = np.argmin(np.abs(MODEL_GRID - _peak(row, tt[2], 2.0)))
        assert (row[i_a] / row[i_c]) / (one[i_a] / one[i_c]) == pytest.approx(1.5, rel=0.02)
    assert np.abs(moved_a).max() > 0.03 and np.abs(moved_c).max() > 0.05  # up to 8 %: tenths of a degree
    assert not np.allclose(moved_a / tt[0], moved_c / tt[2], atol=2e-3)  # anisotropic
    # without the cell nothing moves (the change needs the metric tensor)
    y0, _ = augment(tt, np.array([1.0, 0.5, 0.8]), hkl, 2, opts, np.random.default_rng(2))
    assert _peak(y0[0], tt[0]) == pytest.approx(tt[0], abs=0.011)


def test_march_dollase_boosts_the_chosen_direction():
    dirs = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [np.sqrt(0.5), 0.0, np.sqrt(0.5)]])
    axis = np.array([[0.0, 0.0, 1.0]])
    platelet = march_dollase(dirs, axis, np.array([0.7]))[0]
    assert platelet[0] > platelet[2] > platelet[1]
    assert platelet[0] == pytest.approx(0.7**-3)  # the textbook P(alpha=0) = r^-3
    needle = march_dollase(dirs, axis, np.array([1.3]))[0]
    assert needle[0] < needle[2] < needle[1]
    np.testing.assert_allclose(march_dollase(dirs, axis, np.array([1.0])), 1.0)


def test_pore_solvent_is_smooth_in_inverse_d_and_fades_at_high_angle():
    inv_d = np.linspace(0.02, 0.6, 50)
    weak = solvent_factor(inv_d, np.array([0.2]), np.array([0.1]))[0]
    assert weak[0] < 0.25 and weak[-1] == pytest.approx(1.0, abs=1e-6)
    assert np.all(np.diff(weak) > 0)  # monotone: no reflection singled out
    strong = solvent_factor(inv_d, np.array([2.0]), np.array([0.1]))[0]
    assert strong[0] > 1.8 and np.all(np.diff(strong) < 0)
    # through augment: the low-angle peak changes against the high-angle one
    tt = np.array([6.0, 40.0])
    opts = dataclasses.replace(INSTRUMENT_OFF, solvent=1.0, solvent_jitter=0.0)
    hkl = np.array([[1, 0, 0], [3, 3, 3]])
    y, _ = augment(tt, np.array([1.0, 1.0]), hkl, 8, opts, np.random.default_rng(4))
    ratio = y[:, np.argmin(np.abs(MODEL_GRID - 6.0))] / y[:, np.argmin(np.abs(MODEL_GRID - 40.0))]
    clean = augment(tt, np.array([1.0, 1.0]), None, 1, INSTRUMENT_OFF, np.random.default_rng(4))[0][0]
    base = clean[np.argmin(np.abs(MODEL_GRID - 6.0))] / clean[np.argmin(np.abs(MODEL_GRID - 40.0))]
    assert np.ptp(ratio / base) > 0.5


def test_beam_stop_masks_and_zeroes_the_low_angle_range(library):
    opts = dataclasses.replace(NONE, beam_stop=1.0)
    s = library.sticks(0)
    raw, mask = augment(s.two_theta, s.intensity, s.hkl, 5, opts, np.random.default_rng(0))
    starts = MODEL_GRID[np.argmax(mask, axis=1)]
    assert np.all((starts >= 5.0) & (starts <= 8.0 + 1e-9)) and np.ptp(starts) > 0.3
    assert np.all(mask[:, -1])  # only the low-angle side is cut
    X, _ = prepare_grid_batch(raw, mask)
    assert np.all(X[~mask] == 0.0)  # as preprocessing treats an uncovered range of a real scan


def test_capillary_hump_sits_near_21_degrees():
    s = _sticks(np.random.default_rng(6))
    base, _ = _one(NONE, s, n=4)
    hump, _ = _one(dataclasses.replace(NONE, capillary=1.0), s, n=4)
    diff = hump - base
    assert np.all(diff >= -1e-9)
    centres = MODEL_GRID[np.argmax(diff, axis=1)]
    assert np.all((centres >= 20.0) & (centres <= 23.0))
    assert np.all(diff.max(axis=1) >= 0.03)


def test_instrument_effects_leave_the_older_presets_draws_alone(bank):
    """The new effects draw from a spawned generator: with them off, the realistic preset's
    spectra are what they were, so held-out figures stay comparable across versions."""
    s = _sticks(np.random.default_rng(8))
    noise = bank.sample(3, np.random.default_rng(0))
    real, _ = _one(AugmentOptions.realistic(), s, seed=3, noise=noise)
    off = dataclasses.replace(AugmentOptions.instrument(), cell_axes=0.0, solvent=0.0, capillary=0.0,
                              beam_stop=0.0, displacement_mm=AugmentOptions.realistic().displacement_mm,
                              march_r=AugmentOptions.realistic().march_r)
    np.testing.assert_array_equal(real, _one(off, s, seed=3, noise=noise)[0])
    assert not np.allclose(real, _one(AugmentOptions.instrument(), s, seed=3, noise=noise)[0])


# -- new spectra every epoch -----------------------------------------------------------
def test_epoch_plan_draws_every_class_and_reshuffles_each_epoch():
    plan0 = dataset.epoch_plan(10, 8, 4, 8, seed=1, epoch=0)
    flat = np.concatenate(plan0)
    assert np.array_equal(np.bincount(flat, minlength=10), np.full(10, 2))  # 8 per class / 4 per draw
    assert all(len(b) == 2 for b in plan0)
    again = dataset.epoch_plan(10, 8, 4, 8, seed=1, epoch=0)
    assert all(np.array_equal(a, b) for a, b in zip(plan0, again))
    assert not np.array_equal(flat, np.concatenate(dataset.epoch_plan(10, 8, 4, 8, seed=1, epoch=1)))


def test_epochs_see_new_spectra_of_a_class_and_a_seed_repeats_them(library):
    opts = AugmentOptions.instrument()
    kw = dict(group=2, seed=5, batch=0, options=opts, bank=None)
    classes = np.array([1, 3])
    X0, y0 = dataset.epoch_batch(library, classes, epoch=0, **kw)
    X1, y1 = dataset.epoch_batch(library, classes, epoch=1, **kw)
    assert list(y0) == [1, 1, 3, 3] and list(y1) == list(y0)
    assert not np.allclose(X0[0], X1[0])  # same class, another epoch: another spectrum
    np.testing.assert_array_equal(X0, dataset.epoch_batch(library, classes, epoch=0, **kw)[0])


def test_keras_dataset_regenerates_every_epoch_deterministically(library):
    pytest.importorskip("keras")

    def make():
        return dataset.spectra_per_epoch(library, 4, seed=2, options="instrument", batch_size=8, group=2,
                                         workers=1)

    ds = make()
    assert len(ds) == 2  # 4 classes x 4 spectra / 8 per batch
    first = [ds[b] for b in range(len(ds))]
    x, y = first[0]
    assert x.shape == (8, GRID_POINTS, 1) and x.dtype == np.float32 and y.dtype == np.int32
    ds.on_epoch_end()
    second = [ds[b] for b in range(len(ds))]

    def by_class(batches):
        xs = np.concatenate([b[0][..., 0] for b in batches])
        ys = np.concatenate([b[1] for b in batches])
        return {int(c): xs[ys == c] for c in np.unique(ys)}

    e0, e1 = by_class(first), by_class(second)
    assert sorted(e0) == sorted(e1) == [0, 1, 2, 3]
    for c in e0:
        assert len(e0[c]) == len(e1[c]) == 4
        assert not np.any(np.all(np.isclose(e0[c][:, None], e1[c][None]), axis=-1))  # none repeated
    again = make()
    for b, (xa, ya) in enumerate(first):
        xb, yb = again[b]
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
