"""The resident inference engine: load once, warm up, identify scans for months.

A thin front over the stages of the data path (:mod:`xrd_agent.stages`): prepare
(batched) -> predict (:class:`~xrd_agent.model.predictor.NetworkPredictor`, the
network and nothing else) -> evidence (peak match, crystallinity) -> decide (the one
judge, :mod:`xrd_agent.decide`). ``xrd-agent identify``, ``evaluate``, the benchmarks
and the service all use it.

scikit-learn habits: options in ``__init__``, :meth:`Engine.load` sets the learned
state (attributes ending in ``_``), and asking for a prediction before that raises
:class:`~xrd_agent.errors.NotFittedError`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xrd_agent import decide as _decide
from xrd_agent import evidence as _evidence
from xrd_agent.config import Config, GateConfig
from xrd_agent.errors import ModelError, ScanError
from xrd_agent.identification import Identification
from xrd_agent.model import cam as _cam
from xrd_agent.model import flags as _flags
from xrd_agent.model.predictor import NetworkPredictor, select_device
from xrd_agent.pattern import Pattern
from xrd_agent.stages import Stages

log = logging.getLogger(__name__)

RERANK_DEPTH = _decide.RERANK_DEPTH
RERANK_POWER = _decide.RERANK_POWER

__all__ = ["RERANK_DEPTH", "RERANK_POWER", "Engine", "select_device"]


class Engine:
    """Top-5, confidence, flags and CAM regions for scans, from one model and its library.

    Parameters mirror :class:`~xrd_agent.config.ModelConfig`; ``library`` may be a
    loaded :class:`~xrd_agent.library.artifact.Library` (tests, evaluation) or a folder.
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        library: Any = None,
        *,
        device: str = "auto",
        batch_sizes: Sequence[int] = (1, 8, 64),
        top_k: int = 5,
        cam: bool = True,
        rerank: bool = True,
        rerank_depth: int = RERANK_DEPTH,
        gate: GateConfig = GateConfig(),
        policy: _flags.FlagPolicy = _flags.FlagPolicy(),
        elements_mode: str = "demote",
        elements_factor: float = 0.001,
        verify: bool = False,
    ) -> None:
        if elements_mode not in ("demote", "exclude"):
            raise ModelError(f"elements_mode must be demote or exclude, not {elements_mode!r}")
        if not 0.0 <= float(elements_factor) <= 1.0:
            raise ModelError(f"elements_factor must be between 0 and 1, not {elements_factor!r}")
        self.model_dir = model_dir
        self.library = library
        self.device = device
        self.predictor = NetworkPredictor(model_dir, library, device=device, batch_sizes=batch_sizes, cam=cam)
        self.batch_sizes = self.predictor.batch_sizes
        self.top_k = top_k
        self.rerank = rerank  # reorder the network's best by softmax x peak-match score^RERANK_POWER
        self.rerank_depth = rerank_depth  # how many of the network's best the peak match may reorder
        self.gate = gate
        self.policy = policy
        self.elements_mode = elements_mode  # demote | exclude: materials whose metals contradict the elements
        self.elements_factor = elements_factor  # demote: their summed probability x this
        self.verify = verify  # physics check of the candidates on scans (xrd_agent/verify); arrays are not checked

    @classmethod
    def from_config(cls, config: Config, *, library: Any = None, **overrides: Any) -> Engine:
        m = config.model
        policy = _flags.policy_from(m)
        options = dict(model_dir=m.model_dir or None, library=library, device=m.device,
                       batch_sizes=m.batch_sizes, top_k=m.top_k, gate=config.gate, policy=policy,
                       elements_mode=m.elements_mode, elements_factor=m.elements_factor, verify=m.verify)
        options.update(overrides)
        return cls(**options)

    @property
    def cam(self) -> bool:
        """Compute CAM regions (one backward pass to the last conv per batch)."""
        return self.predictor.cam

    @cam.setter
    def cam(self, value: bool) -> None:
        self.predictor.cam = value

    @property
    def traces_(self) -> int:
        return self.predictor.traces_

    # -- learned state -----------------------------------------------------------
    def load(self) -> Engine:
        """Read the model and its library, check they belong together, warm every batch size."""
        predictor = self.predictor.load()
        self.device_ = predictor.device_
        self.manifest_ = predictor.manifest_
        self.library_ = predictor.library_
        self.model_ = predictor.model_
        self.centres_ = predictor.centres_
        self._labels = (tuple(self.library_.refcodes), tuple(self.library_.names))
        self.references_ = _evidence.ReferencePeaks(self.library_).warm()
        if self.verify:  # references and their ln-d FFTs once, so no identification pays for them
            from xrd_agent.verify.stage import checker_for

            self.checker_ = checker_for(self.library_)
        self.stages = Stages(predictor, self._gather, self._rules, lambda: self.gate)
        log.info("engine ready: model %s, library %s (%d classes), %s, batch sizes %s",
                 self.manifest_.version, self.library_.version, len(self.library_), self.device_, self.batch_sizes)
        return self

    @property
    def is_loaded(self) -> bool:
        return self.predictor.is_loaded and hasattr(self, "stages")

    def _require(self) -> None:
        self.predictor._require()

    def _rules(self) -> _decide.Rules:
        return _decide.Rules(refcodes=self._labels[0], names=self._labels[1],
                             model_version=str(self.manifest_.version), library_version=str(self.library_.version),
                             top_k=self.top_k, rerank=self.rerank, rerank_depth=self.rerank_depth, policy=self.policy,
                             materials=self.library_.materials, elements_mode=self.elements_mode,
                             elements_factor=self.elements_factor)

    def _gather(self, scan: Any, pattern: Pattern, prediction: Any, elements: Sequence[str] = ()) -> _evidence.Evidence:
        rules = self._rules()
        classes = _decide.evidence_classes(prediction.probabilities, rules, elements)
        evidence = _evidence.peak_evidence(pattern, prediction, self.references_, depth=rules.evidence_depth,
                                           policy=self.policy, scan=scan, classes=classes, elements=elements)
        if scan is None or not hasattr(self, "checker_"):
            return evidence
        from dataclasses import replace

        from xrd_agent.verify.stage import check_scan

        engine_order = _decide.engine_classes(prediction.probabilities, evidence, rules)
        verification = check_scan(self.checker_, scan, prediction.probabilities,
                                  getattr(self, "wavelength_", None), engine_order)
        return evidence if verification is None else replace(evidence, verification=verification)

    # -- arrays in, arrays out (benchmarks, evaluation) ------------------------------
    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Softmax (n, classes) for preprocessed patterns (n, 4501)."""
        return self.predictor.run(X, explain=False)[0]

    def explain(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Softmax (n, classes) and the top class's activation map on MODEL_GRID (n, 4501)."""
        probs, cams = self.predictor.run(X, explain=True)
        return probs, _cam.to_grid(cams, self.centres_)

    def features(self, X: np.ndarray) -> np.ndarray:
        """Penultimate-layer activations (n, d): what the NCA map is drawn from."""
        return self.predictor.features(X)

    # -- patterns in, Identifications out --------------------------------------------
    def reference_peaks(self, index: int) -> _flags.Peaks:
        return self.references_(index)

    def identify_patterns(self, patterns: Sequence[Pattern],
                          elements: Sequence[Sequence[str] | None] | None = None) -> list[Identification]:
        """Identify prepared patterns (predict -> evidence -> decide); patterns that carry their
        raw grid values (``Pattern.values``) also get the amorphous test; ``elements`` per
        pattern: the elements or metals in the pot (None: not known)."""
        self._require()
        return self.stages.identify_patterns(patterns, None, elements)

    def identify_arrays(self, two_theta_cu: np.ndarray, intensity: np.ndarray) -> Identification:
        """Measured points on the Cu K-alpha1 scale -> Identification (raises ScanError)."""
        from xrd_agent import preprocess

        self._require()
        pattern, _ = preprocess.prepare_arrays_raw(two_theta_cu, intensity, self.gate)
        return self.identify_patterns([pattern])[0]

    def identify_many(self, scans: Sequence[Any], wavelength: float | None = None,
                      elements: Sequence[Sequence[str] | None] | None = None) -> list[Identification | ScanError]:
        """One result per scan, in order: an Identification, or the ScanError that stopped it.
        ``elements``: per scan, the elements or metals in the pot (None: not known)."""
        self._require()
        self.wavelength_ = wavelength  # the verify stage reads the scans on their own range at this wavelength
        return self.stages.identify_many(scans, wavelength, elements)

    def identify(self, scan: Any, wavelength: float | None = None,
                 elements: Sequence[str] | None = None) -> Identification:
        result = self.identify_many([scan], wavelength, [elements] if elements else None)[0]
        if isinstance(result, ScanError):
            raise result
        return result
