"""The identification engine the service runs, chosen by ``[model] engine``.

* ``cnn``: the trained 1-D CNN (:mod:`xrd_agent.model.engine`), the product.
* ``cosine``: a cosine search-match against the library patterns. It needs no
  TensorFlow and no trained model, starts in well under a second, and is the floor any
  model must clear (field notes). The service falls back to it under ``auto`` when no
  trained model is installed, and says so in every message's ``model_version``.

Both answer ``identify_many(scans) -> list[Identification | ScanError]`` through the
same stages (:mod:`xrd_agent.stages`) and the same judge (:mod:`xrd_agent.decide`); they
differ only in the predict stage and the evidence it is checked with.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import structlog

from xrd_agent.config import Config
from xrd_agent.decide import Rules
from xrd_agent.errors import ConfigError, NotFittedError, ScanError
from xrd_agent.evidence import Evidence, cosine_evidence
from xrd_agent.identification import Identification
from xrd_agent.model import flags
from xrd_agent.pattern import Pattern
from xrd_agent.predict import Prediction
from xrd_agent.scan import Scan
from xrd_agent.stages import Stages

log = structlog.get_logger("xrd_agent.engines")

COSINE_VERSION = "cosine-search-match-1"
#: Softmax temperature turning cosines into a ranking distribution.
COSINE_TEMPERATURE = 0.02


class ServiceEngine(Protocol):
    """What the service's worker needs of an engine (the CNN or the cosine fallback)."""

    model_version: str
    library_version: str

    def load(self) -> Any: ...

    def identify_many(self, scans: Sequence[Scan]) -> list[Identification | ScanError]: ...


def default_model_dir() -> Path:
    return Path(str(importlib.resources.files("xrd_agent") / "data" / "model"))


def model_dir_of(config: Config) -> Path:
    return Path(config.model.model_dir) if config.model.model_dir else default_model_dir()


def choose(config: Config) -> str:
    return _choice(config)[0]


def _choice(config: Config) -> tuple[str, str]:
    """(engine, why cosine under auto). Under ``auto`` the network answers only over the library
    it was trained on: a lab's own library (``library build --cif-dir``) with no network trained
    on it gets the search-match engine (with the physics check, as ``identify --library`` does)
    instead of a service that refuses to start."""
    kind = config.model.engine
    if kind not in ("auto", "cnn", "cosine"):
        raise ConfigError(f"model.engine must be auto, cnn or cosine, not {kind!r}")
    if kind != "auto":
        return kind, ""
    manifest = model_dir_of(config) / "manifest.json"
    if not manifest.is_file():
        return "cosine", "no trained model installed"
    if config.model.library_dir:
        return _model_for_library(manifest, Path(config.model.library_dir))
    return "cnn", ""


def _model_for_library(manifest: Path, library_dir: Path) -> tuple[str, str]:
    """``cnn`` when the model answers over the library (:func:`~xrd_agent.model.artifact.trained_on`,
    the rule its load applies), else ``cosine`` and why. Read from the two JSON files: the choice
    needs neither TensorFlow nor the library's patterns. A file that cannot be read leaves the
    choice to ``cnn``, whose load says what is wrong."""
    import json

    from xrd_agent.model.artifact import trained_on

    try:
        classes = [str(c) for c in json.loads(manifest.read_text())["classes"]]
        refcodes = [str(e["refcode"]) for e in json.loads((library_dir / "entries.json").read_text())]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return "cnn", ""
    if trained_on(classes, refcodes):
        return "cnn", ""
    return "cosine", f"the installed model was not trained on the library in {library_dir}"


def make_engine(config: Config) -> ServiceEngine:
    """Build (not load) the configured engine."""
    kind, why = _choice(config)
    if kind == "cosine":
        if config.model.engine == "auto":
            log.warning(f"{why}: using the cosine search-match engine", model_dir=str(model_dir_of(config)),
                        verify=config.model.verify)
        return CosineEngine(config)
    return _cnn_engine(config)


def _cnn_engine(config: Config) -> ServiceEngine:
    return CnnEngine(config)


class CnnEngine:
    """The trained CNN (:class:`xrd_agent.model.engine.Engine`) with the versions and the
    threshold reload the service needs."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.model_version = ""
        self.library_version = ""
        self.library_: Any = None
        self._engine: Any = None

    def load(self) -> CnnEngine:
        from xrd_agent.model.engine import Engine as ModelEngine  # TensorFlow: only when asked for

        library = self.config.model.library_dir or None
        self._engine = ModelEngine.from_config(self.config, library=library,
                                               model_dir=str(model_dir_of(self.config))).load()
        self.library_ = self._engine.library_
        self.model_version = str(self._engine.manifest_.version)
        self.library_version = str(self.library_.version)
        return self

    def reconfigure(self, config: Config) -> None:
        """New thresholds (SIGHUP): flag policy, Top-k and noise gate; the network stays loaded."""
        m = config.model
        self._engine.policy = flags.policy_from(m)
        self._engine.top_k = m.top_k
        self._engine.elements_mode, self._engine.elements_factor = m.elements_mode, m.elements_factor
        self._engine.gate = config.gate
        self.config = config

    def identify_many(self, scans: Sequence[Scan],
                      elements: Sequence[Sequence[str] | None] | None = None) -> list[Identification | ScanError]:
        if self._engine is None:
            raise NotFittedError("CnnEngine.load() must run before identify")
        return list(self._engine.identify_many(scans, elements=elements))


class CosinePredictor:
    """The predict stage of the fallback: cosine of the scan with every library pattern over
    the covered points, and a softmax of them (temperature COSINE_TEMPERATURE) as the ranking's
    probabilities."""

    def __init__(self, patterns: np.ndarray) -> None:
        self._patterns = patterns  # float32 (n, 4501)
        # Running sums of the squared patterns (float64, so differences of them lose
        # nothing), once: a scan's reference norms over its mask are then a few column
        # differences per run of covered points, not a copy of the whole library per scan.
        squares = np.square(self._patterns, dtype=np.float64)
        self._square_sums = np.zeros((squares.shape[0], squares.shape[1] + 1))
        np.cumsum(squares, axis=1, out=self._square_sums[:, 1:])

    def cosines(self, intensity: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Cosine of the scan with every reference over the covered points ``mask``.

        One matrix-vector product over the whole library, never a masked copy of it:
        zeroing the scan outside the mask restricts the dot products, and the references'
        squared norms over the mask are sums over its runs of the precomputed running sums.
        """
        x = np.where(mask, intensity, np.float32(0))
        edges = np.flatnonzero(np.diff(mask, prepend=False, append=False))
        starts, ends = edges[0::2], edges[1::2]  # each run of covered points is [start, end)
        squared = (self._square_sums[:, ends] - self._square_sums[:, starts]).sum(axis=1)
        ref_norms = np.sqrt(squared).astype(np.float32)
        norms = ref_norms * (np.linalg.norm(x) or 1.0)
        return (self._patterns @ x) / np.where(norms > 0, norms, 1.0)

    def predict(self, patterns: Sequence[Pattern]) -> list[Prediction]:
        out = []
        for pattern in patterns:
            cos = self.cosines(np.asarray(pattern.intensity, np.float32), np.asarray(pattern.mask, bool))
            logits = (cos - cos.max()) / COSINE_TEMPERATURE
            prob = np.exp(logits) / np.exp(logits).sum()
            out.append(Prediction(probabilities=prob, ranking=cos))
        return out


class CosineEngine:
    """Cosine search-match over the library on the covered part of the model grid, through
    the same stages as the CNN: prepare -> predict (cosines) -> evidence -> decide."""

    def __init__(self, config: Config | None = None) -> None:
        self.config = config or Config()
        self.model_version = COSINE_VERSION
        self.library_version = ""
        self.library_: Any = None
        self.stages: Stages | None = None

    def load(self) -> CosineEngine:
        from xrd_agent.library.artifact import Library

        lib_dir = self.config.model.library_dir or None
        self.library_ = Library.load(lib_dir)
        self._patterns = self.library_.patterns  # float32 (n, 4501)
        self.predictor = CosinePredictor(self._patterns)
        self.library_version = self.library_.version
        labels = (tuple(self.library_.refcodes), tuple(self.library_.names))
        self._labels = labels
        self.checker_: Any = None
        if self.config.model.verify:  # a lab's own CIFs with no network trained on them: the fit decides
            from xrd_agent.verify.stage import checker_for

            self.checker_ = checker_for(self.library_)
        self.stages = Stages(self.predictor, self._gather, self._rules, lambda: self.config.gate)
        log.info("library loaded", classes=len(self.library_), version=self.library_version,
                 physics_check=self.checker_ is not None)
        return self

    @property
    def gate(self) -> Any:
        """The noise gate in force (``identify --png`` prepares the scan with it)."""
        return self.config.gate

    def _rules(self) -> Rules:
        m = self.config.model
        return Rules(refcodes=self._labels[0], names=self._labels[1], model_version=self.model_version,
                     library_version=self.library_version, top_k=m.top_k,
                     policy=flags.policy_from(m), materials=self.library_.materials)

    def _gather(self, scan: Any, pattern: Pattern, prediction: Prediction, elements: Sequence[str] = ()) -> Evidence:
        evidence = cosine_evidence(scan, pattern, prediction, self._patterns)
        if scan is None or self.checker_ is None:
            return evidence
        from dataclasses import replace

        from xrd_agent.verify.stage import check_scan

        # no network: the search-match's ranking is no prior worth mixing in; the check's own
        # ln-d prefilter of the whole library proposes the candidates
        verification = check_scan(self.checker_, scan, None)
        return evidence if verification is None else replace(evidence, verification=verification)

    def _cosines(self, intensity: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self.predictor.cosines(intensity, mask)

    def identify(self, scan: Scan) -> Identification | ScanError:
        return self.identify_many([scan])[0]

    def reconfigure(self, config: Config) -> None:
        """New thresholds (SIGHUP); the library stays loaded."""
        self.config = config

    def identify_many(self, scans: Sequence[Scan],
                      elements: Sequence[Sequence[str] | None] | None = None) -> list[Identification | ScanError]:
        """``elements`` are accepted and not used: the cosine fallback ranks library classes."""
        if self.stages is None:
            raise NotFittedError("CosineEngine.load() must run before identify")
        return self.stages.identify_many(scans)
