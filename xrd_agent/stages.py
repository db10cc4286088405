"""The data path as code: the stages a scan passes, in order, each one typed value in and out.

    read(path) -> Scan                               xrd_agent.readers (the caller's edge)
    prepare   Scans -> Patterns (batched)            xrd_agent.preprocess.prepare_many
    predict   Patterns -> Predictions (batched)      a Predictor: the network, or the cosine fallback
    evidence  (Scan, Pattern, Prediction) -> Evidence   peak match, crystallinity (xrd_agent.evidence)
    decide    (Prediction, Evidence) -> Identification  the one judge (xrd_agent.decide)
    alerts    Identification -> Alerts               xrd_agent.decide.alerts (the service, with expectations)
    record, publish                                  xrd_agent.service (ledger, ZeroMQ)

:class:`Stages` runs prepare -> predict -> evidence -> decide for a batch; the service
pipeline, ``xrd-agent identify`` and ``xrd-agent evaluate`` all go through it. A new stage
(verify: a physics fit of the candidates; compose: crystallinity and phase fractions)
is one more step in :meth:`Stages.judge` that adds its fields to the Evidence.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from xrd_agent import decide as _decide
from xrd_agent import preprocess
from xrd_agent.config import GateConfig
from xrd_agent.errors import ScanError
from xrd_agent.evidence import Evidence
from xrd_agent.identification import Identification
from xrd_agent.pattern import Pattern
from xrd_agent.predict import Prediction, Predictor
from xrd_agent.scan import Scan

#: (scan or None, pattern, prediction) -> Evidence: how a predictor's answer is checked.
Gather = Callable[[Scan | None, Pattern, Prediction], Evidence]


class Stages:
    """prepare -> predict -> evidence -> decide, over batches; the state each stage needs is resident."""

    def __init__(self, predictor: Predictor, gather: Gather, rules: Callable[[], _decide.Rules],
                 gate: Callable[[], GateConfig]) -> None:
        self.predictor = predictor
        self.gather = gather
        self.rules = rules  # read at every batch: thresholds may be reloaded (SIGHUP)
        self.gate = gate

    # -- the stages --------------------------------------------------------------------
    def prepare(self, scans: Sequence[Scan], wavelength: float | None = None) -> list[Pattern | ScanError]:
        """The prepare stage, batched; a scan that cannot be prepared gives its ScanError in its place."""
        return [r if isinstance(r, ScanError) else r[0]
                for r in preprocess.prepare_many(scans, self.gate(), wavelength=wavelength)]

    def predict(self, patterns: Sequence[Pattern]) -> list[Prediction]:
        return self.predictor.predict(patterns)

    def judge(self, patterns: Sequence[Pattern], predictions: Sequence[Prediction],
              scans: Sequence[Scan | None]) -> list[Identification]:
        """evidence -> decide for each scan (verify and compose slot in here)."""
        rules = self.rules()
        return [_decide.decide(prediction, self.gather(scan, pattern, prediction), rules)
                for scan, pattern, prediction in zip(scans, patterns, predictions)]

    # -- the path ----------------------------------------------------------------------
    def identify_patterns(self, patterns: Sequence[Pattern],
                          scans: Sequence[Scan | None] | None = None) -> list[Identification]:
        """predict -> evidence -> decide for prepared patterns."""
        if not patterns:
            return []
        return self.judge(patterns, self.predict(patterns), scans if scans is not None else [None] * len(patterns))

    def identify_many(self, scans: Sequence[Scan], wavelength: float | None = None) -> list[Identification | ScanError]:
        """One result per scan, in order: an Identification, or the ScanError that stopped it."""
        prepared = self.prepare(scans, wavelength)
        ready = [i for i, p in enumerate(prepared) if not isinstance(p, ScanError)]
        out: list[Any] = list(prepared)
        done = self.identify_patterns([prepared[i] for i in ready], [scans[i] for i in ready])  # type: ignore[misc]
        for i, result in zip(ready, done):
            out[i] = result
        return out
