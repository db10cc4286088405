"""The predict stage: a batch of Patterns in, one :class:`Prediction` per pattern out.

A predictor ranks the library's classes and, where it can, says which 2-theta points
drove its choice. It judges nothing: confidence, flags and alerts are
:mod:`xrd_agent.decide`'s job. Two predictors exist: the trained CNN
(:class:`xrd_agent.model.predictor.NetworkPredictor`) and the cosine search-match
fallback (:class:`xrd_agent.service.engines.CosinePredictor`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from xrd_agent.pattern import Pattern


@dataclass(frozen=True, eq=False)
class Prediction:
    """What a predictor says about one pattern, before any judging."""

    probabilities: np.ndarray  # (classes,) distribution over the library's classes
    cam: np.ndarray | None = None  # activation map of the argmax class on MODEL_GRID (4501,), if computed
    #: Scores that order the classes where they differ from ``probabilities`` (the cosine
    #: engine ranks by cosine; its softmax can tie at 0 far down the list). None: rank by probability.
    ranking: np.ndarray | None = None

    def order(self) -> np.ndarray:
        """Class indices, best first."""
        return np.argsort(-(self.ranking if self.ranking is not None else self.probabilities))


class Predictor(Protocol):
    """The resident predict stage (loaded once, called for months)."""

    def predict(self, patterns: Sequence[Pattern]) -> list[Prediction]: ...
