"""The peak match of one scan against the network's best candidates at once (flags.match_many)
gives, candidate by candidate, the numbers of matching each reference alone."""

from __future__ import annotations

import numpy as np
from test_model_support import tiny_library

from xrd_agent.model import flags
from xrd_agent.peakshape import broaden

LIB = tiny_library()


def test_matching_all_candidates_at_once_equals_one_by_one():
    rng = np.random.default_rng(7)
    refs = [flags.find_peaks(LIB.patterns[j]) for j in range(len(LIB))]
    compared = 0
    for trial in range(40):
        s = LIB.sticks(trial % len(LIB))
        y = broaden(s.two_theta + rng.uniform(-0.3, 0.3), s.intensity * rng.uniform(0.3, 1.5, s.intensity.size))
        if trial % 4 == 1:  # a second phase: peaks the top reference leaves unexplained
            other = LIB.sticks((trial + 3) % len(LIB))
            y = y + 0.6 * broaden(other.two_theta, other.intensity)
        scan = flags.find_peaks(y)
        first, last = (5.0, 50.0) if trial % 3 else tuple(sorted(rng.uniform(5, 50, 2)))
        together = flags.match_many(scan, refs, first, last)
        for ref, got in zip(refs, together, strict=True):
            alone = flags.match_peaks(scan, ref, first, last)
            assert got == alone
            compared += 1
    assert compared == 40 * len(LIB)
    empty = flags.Peaks(np.empty(0), np.empty(0))
    assert flags.match_many(empty, refs[:2], 5.0, 50.0) == [flags.match_peaks(empty, r, 5.0, 50.0) for r in refs[:2]]
