"""Confidence evidence and flags (xrd_agent.model.flags): pure functions on arrays."""

from __future__ import annotations

import numpy as np
import pytest
from test_model_support import counts_scan, tiny_library

from xrd_agent.crystallinity import Crystallinity
from xrd_agent.decide import network_flags
from xrd_agent.identification import Flag
from xrd_agent.model import cam, flags
from xrd_agent.pattern import MODEL_GRID, Coverage
from xrd_agent.preprocess import prepare_arrays
from xrd_agent.peakshape import broaden

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


def _cryst(fraction: float, uncertainty: float = 0.02) -> Crystallinity:
    return Crystallinity(fraction, uncertainty, fraction, 0.0, 0.0, (5.0, 50.0), 4501)


FULL = Coverage(5.0, 50.0, 1.0)


def test_crystallinity_verdict_follows_the_thresholds():
    policy = flags.FlagPolicy(amorphous_below=0.2, low_crystallinity_below=0.4)
    assert flags.crystallinity_verdict(_cryst(0.05), FULL, policy) is Flag.AMORPHOUS
    assert flags.crystallinity_verdict(_cryst(0.3), FULL, policy) is Flag.LOW_CRYSTALLINITY
    assert flags.crystallinity_verdict(_cryst(0.8), FULL, policy) is None
    assert flags.crystallinity_verdict(_cryst(0.41, 0.1), FULL, policy) is None
    # per-sample thresholds replace the policy's
    assert flags.crystallinity_verdict(_cryst(0.3), FULL, policy, amorphous_below=0.35) is Flag.AMORPHOUS


def test_crystallinity_verdict_needs_coverage_from_low_angles():
    """A fragment or a scan without the low angles (where a MOF's strong reflections are) is never judged."""
    low = _cryst(0.01)
    assert flags.crystallinity_verdict(low, Coverage(30.0, 42.0, 0.26)) is None
    assert flags.crystallinity_verdict(low, Coverage(20.0, 50.0, 0.67)) is None
    assert flags.crystallinity_verdict(low, Coverage(8.0, 40.0, 0.71)) is Flag.AMORPHOUS
    assert flags.crystallinity_verdict(_cryst(float("nan"), float("nan")), FULL) is None
    assert flags.crystallinity_verdict(None, FULL) is None


def test_a_reference_with_lines_everywhere_explains_a_few_lines_only_by_chance():
    """Four fcc-like lines against a reference with a reflection every 0.5 deg: the raw shares
    are high, but so is what random positions reach; the pattern's own reference is far above."""
    fcc = flags.Peaks(np.array([24.0, 34.2, 41.7, 48.5]), np.array([0.3, 0.5, 1.0, 0.5]))
    dense = flags.Peaks(np.arange(5.3, 50.0, 0.5), np.resize([1.0, 0.6, 0.8, 0.4], 90))
    m = flags.match_peaks(fcc, dense, 20.0, 50.0)
    assert m.explained == pytest.approx(1.0) and m.chance_explained > 0.6
    assert m.above_chance < 0.3 < m.score
    own = flags.match_peaks(_peaks(3), flags.find_peaks(LIB.patterns[3]), 5.0, 50.0)
    assert own.chance_explained < 0.3 and own.above_chance > 0.9


def test_a_match_no_better_than_chance_names_nothing():
    chance_level = flags.Match(0.8, 0.8, 0.0, (), chance_explained=0.75, chance_recovered=0.7)
    confidence, fl = network_flags(0.97, chance_level, None, 1.0)
    assert Flag.UNKNOWN_PHASE in fl and confidence < 0.35
    confidence, fl = network_flags(0.97, flags.Match(0.8, 0.8, 0.0, ()), None, 1.0)
    assert fl == frozenset() and confidence == pytest.approx(0.97 * 0.8)


def test_amorphous_decision_sets_confidence_to_zero():
    m = flags.Match(1.0, 1.0, 0.0, ())
    confidence, fl = network_flags(0.99, m, Flag.AMORPHOUS, 1.0)
    assert fl == {Flag.AMORPHOUS} and confidence == 0.0


def test_low_crystallinity_keeps_the_identification():
    m = flags.Match(1.0, 1.0, 0.0, ())
    confidence, fl = network_flags(0.99, m, Flag.LOW_CRYSTALLINITY, 1.0)
    assert fl == {Flag.LOW_CRYSTALLINITY} and confidence > 0.9


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


def _blank_pattern():
    """A covered 5-50 deg pattern for the judge (decide reads its coverage and mask, not its values)."""
    from xrd_agent.pattern import GateDecision, Pattern

    return Pattern(intensity=np.zeros(MODEL_GRID.size, np.float32), mask=np.ones(MODEL_GRID.size, bool),
                   gate=GateDecision(False, 0.0, 1.0, 200), coverage=FULL)


def test_the_rerank_gives_no_credit_for_a_match_chance_gives():
    """The network's first class matches only as well as a reference that dense matches anything;
    its second matches beyond chance and is named first."""
    from xrd_agent.decide import Rules, decide
    from xrd_agent.evidence import Evidence
    from xrd_agent.predict import Prediction

    pattern = _blank_pattern()
    matches = {0: flags.Match(0.9, 0.9, 0.0, (), chance_explained=0.8, chance_recovered=0.8),
               1: flags.Match(0.85, 0.85, 0.0, ()), 2: flags.Match(0.0, 0.0, 0.0, ())}
    prediction = Prediction(probabilities=np.array([0.5, 0.45, 0.05]))
    result = decide(prediction, Evidence(pattern=pattern, matches=matches), Rules(refcodes=("A", "B", "C"),
                                                                                  names=("A", "B", "C")))
    assert [c.refcode for c in result.top[:2]] == ["B", "A"]
    assert not result.flags and result.confidence == pytest.approx(0.45 * 0.85)


@pytest.mark.parametrize("network_belief, first", [(0.8, "A"), (0.3, "B")])
def test_the_networks_sure_answer_leads_the_checks_other_best_fit(network_belief, first):
    """With the physics check, the material the network gives most of its belief keeps the first
    place when the check's best fit is another material (which comes second); below that belief
    the check's order stands. Either way the check caps the confidence."""
    from xrd_agent.decide import Rules, decide
    from xrd_agent.evidence import Evidence
    from xrd_agent.predict import Prediction
    from xrd_agent.verify.check import CandidateFit, Verification

    def fit(index: int, posterior: float) -> CandidateFit:
        return CandidateFit(index, LIB.refcodes[index], "", 0.0, 0.0, 0.1, 0.5, 0.9, posterior, (10.0,) * 3 + (90.0,) * 3,
                            (0.0,) * 6, 0.0, 0.1, (-1, 1.0))

    n = len(LIB)
    probs = np.full(n, (1.0 - network_belief) / (n - 1))
    probs[0] = network_belief
    pattern = _blank_pattern()
    matches = {j: flags.Match(0.9, 0.9, 0.0, ()) for j in range(n)}
    verification = Verification((fit(1, 0.9), fit(0, 0.1)), (), 0.9, True, 0.6, 1.0)
    rules = Rules(refcodes=tuple(LIB.refcodes), names=tuple(LIB.refcodes), materials=LIB.materials)
    result = decide(Prediction(probabilities=probs), Evidence(pattern=pattern, matches=matches,
                                                              verification=verification), rules)
    a, b = LIB.refcodes[0], LIB.refcodes[1]
    assert [c.refcode for c in result.top[:2]] == ([a, b] if first == "A" else [b, a])
    assert result.confidence <= 0.6


def test_the_checks_unsupported_candidates_alternate_with_the_networks_probable_materials():
    """Beyond the answers the check supports (its best fit), its further candidates alternate with
    the materials the network holds probable, instead of pushing them out of the Top-5; a material
    the network holds improbable does not displace the check's candidates."""
    from xrd_agent.decide import SUPPORTED, Rules, decide
    from xrd_agent.evidence import Evidence
    from xrd_agent.predict import Prediction
    from xrd_agent.verify.check import CandidateFit, Verification

    def fit(index: int, posterior: float) -> CandidateFit:
        return CandidateFit(index, LIB.refcodes[index], "", 0.0, 0.0, 0.1, 0.5, 0.9, posterior, (10.0,) * 3 + (90.0,) * 3,
                            (0.0,) * 6, 0.0, 0.1, (-1, 1.0))

    n = len(LIB)
    probs = np.full(n, 0.25 / (n - 2))
    probs[0], probs[4] = 0.40, 0.35  # probable, but not sure enough to lead (NETWORK_LEADS)
    assert probs[5] < SUPPORTED
    matches = {j: flags.Match(0.9, 0.9, 0.0, ()) for j in range(n)}
    verification = Verification((fit(1, 0.96), fit(2, 0.03), fit(3, 0.01)), (), 0.9, True, 0.6, 1.0)
    rules = Rules(refcodes=tuple(LIB.refcodes), names=tuple(LIB.refcodes), materials=LIB.materials)
    result = decide(Prediction(probabilities=probs), Evidence(pattern=_blank_pattern(), matches=matches,
                                                              verification=verification), rules)
    assert [c.refcode for c in result.top] == [LIB.refcodes[i] for i in (1, 0, 2, 4, 3)]
