"""Confidence evidence and flags (xrd_agent.model.flags): pure functions on arrays."""

from __future__ import annotations

import numpy as np
import pytest
from test_model_support import amorphous_scan, counts_scan, tiny_library

from xrd_agent.decide import network_flags
from xrd_agent.identification import Flag
from xrd_agent.model import cam, flags
from xrd_agent.pattern import MODEL_GRID
from xrd_agent.preprocess import prepare_arrays
from xrd_agent.profile import broaden

LIB = tiny_library()


def _peaks(index: int, shift: float = 0.0) -> flags.Peaks:
    s = LIB.sticks(index)
    return flags.find_peaks(broaden(s.two_theta + shift, s.intensity))


def test_a_pattern_matches_its_own_reference_even_with_a_zero_shift():
    ref = flags.find_peaks(LIB.patterns[3])
    m = flags.match_peaks(_peaks(3, shift=0.15), ref, 5.0, 50.0)
    assert m.explained == pytest.approx(1.0) and m.recovered == pytest.approx(1.0)
    assert m.shift == pytest.approx(0.14, abs=0.05)


def test_another_phase_does_not_match():
    ref = flags.find_peaks(LIB.patterns[3])
    scores = [flags.match_peaks(_peaks(i), ref, 5.0, 50.0).score for i in range(len(LIB)) if i != 3]
    assert max(scores) < 0.6


def test_reference_peaks_outside_the_measured_span_are_not_required():
    ref = flags.find_peaks(LIB.patterns[3])
    scan = _peaks(3).above(0.0)
    keep = scan.position >= 25.0
    partial = flags.Peaks(scan.position[keep], scan.height[keep] / scan.height[keep].max())
    m = flags.match_peaks(partial, ref, 25.0, 50.0)
    assert m.recovered > 0.9 and m.explained > 0.9


def test_decide_flags_a_second_phase_as_mixture():
    a, b = LIB.sticks(2), LIB.sticks(7)
    mixed = broaden(a.two_theta, a.intensity) + 0.8 * broaden(b.two_theta, b.intensity)
    m = flags.match_peaks(flags.find_peaks(mixed), flags.find_peaks(LIB.patterns[2]), 5.0, 50.0)
    confidence, fl = network_flags(0.95, m, None, 1.0)
    assert Flag.MIXTURE in fl and Flag.UNKNOWN_PHASE not in fl
    assert 0.0 < confidence <= 1.0
    assert m.unexplained  # it names the unexplained reflections


def test_decide_flags_a_poor_match_unknown_whatever_the_softmax():
    m = flags.match_peaks(_peaks(5), flags.find_peaks(LIB.patterns[3]), 5.0, 50.0)
    confidence, fl = network_flags(0.999, m, None, 1.0)
    assert Flag.UNKNOWN_PHASE in fl and confidence < 0.8


def test_low_coverage_is_flagged():
    m = flags.match_peaks(_peaks(3), flags.find_peaks(LIB.patterns[3]), 5.0, 50.0)
    assert Flag.LOW_COVERAGE in network_flags(0.9, m, None, 0.44)[1]
    assert Flag.LOW_COVERAGE not in network_flags(0.9, m, None, 0.9)[1]


@pytest.mark.parametrize("seed", range(3))
def test_crystallinity_separates_a_hump_from_reflections(seed):
    mask = np.ones(MODEL_GRID.size, bool)
    hump = flags.crystallinity(amorphous_scan(seed), mask)
    crystal = flags.crystallinity(counts_scan(LIB, seed, seed=seed), mask)
    policy = flags.FlagPolicy()
    assert hump.snr < policy.amorphous_snr
    assert crystal.snr > 3 * policy.amorphous_snr and crystal.relative > 5 * policy.amorphous_relative


def test_crystallinity_sees_a_weak_crystalline_phase_on_an_amorphous_hump():
    mask = np.ones(MODEL_GRID.size, bool)
    weak = amorphous_scan(1) + counts_scan(LIB, 4, peak_counts=600.0, background=0.0, seed=1)
    c = flags.crystallinity(weak, mask)
    assert c.snr > flags.FlagPolicy().amorphous_snr


def test_amorphous_decision_sets_confidence_to_zero():
    m = flags.Match(1.0, 1.0, 0.0, ())
    confidence, fl = network_flags(0.99, m, flags.Crystallinity(snr=3.0, relative=0.01), 1.0)
    assert fl == {Flag.AMORPHOUS} and confidence == 0.0


def test_cam_regions_are_ordered_weighted_and_inside_the_mask():
    grid_map = np.zeros(MODEL_GRID.size)
    grid_map[1000:1020] = 1.0  # 15.00-15.19 deg
    grid_map[3000:3005] = 0.5  # 35.00-35.04 deg
    mask = np.ones(MODEL_GRID.size, bool)
    regions = cam.regions(grid_map, mask)
    assert [round(r.start, 2) for r in regions] == [15.0, 35.0]
    assert regions[0].weight > regions[1].weight and sum(r.weight for r in regions) <= 1.0 + 1e-9
    mask[:2000] = False
    assert [round(r.start, 2) for r in cam.regions(grid_map, mask)] == [35.0]
    assert cam.regions(np.zeros(MODEL_GRID.size)) == ()


def test_peak_finder_reads_a_prepared_scan():
    pattern = prepare_arrays(MODEL_GRID, counts_scan(LIB, 6))
    found = flags.find_peaks(pattern.intensity, pattern.mask)
    strongest = found.position[np.argmax(found.height)]
    s = LIB.sticks(6)
    true = s.two_theta[np.argmax(s.intensity)] + 0.03
    assert abs(strongest - true) < 0.1


@pytest.mark.parametrize("step", [0.02, 0.03, 0.05])
def test_crystallinity_measures_noise_at_the_scans_own_step(step):
    """A scan coarser than the 0.01 deg grid is interpolated onto it; the noise estimate
    must not collapse there, or a failed (amorphous) synthesis is never flagged."""
    from xrd_agent.preprocess import prepare_arrays_raw

    coarse = np.arange(5.0, 50.0 + step / 2, step)
    fine_hump = amorphous_scan(2)
    fine_crystal = counts_scan(LIB, 2, seed=2)
    policy = flags.FlagPolicy()
    hump_pattern, hump_raw = prepare_arrays_raw(coarse, np.interp(coarse, MODEL_GRID, fine_hump))
    hump = flags.crystallinity(hump_raw, hump_pattern.mask)
    crystal_pattern, crystal_raw = prepare_arrays_raw(coarse, np.interp(coarse, MODEL_GRID, fine_crystal))
    crystal = flags.crystallinity(crystal_raw, crystal_pattern.mask)
    assert hump.snr < policy.amorphous_snr
    assert crystal.snr > policy.amorphous_snr
