"""The identification engine the service runs, chosen by ``[model] engine``.

* ``cnn``: the trained 1-D CNN (:mod:`xrd_agent.model.engine`), the product.
* ``cosine``: a cosine search-match against the library patterns. It needs no
  TensorFlow and no trained model, starts in well under a second, and is the floor any
  model must clear (field notes). The service falls back to it under ``auto`` when no
  trained model is installed, and says so in every message's ``model_version``.

Both answer ``identify_many(scans) -> list[Identification | ScanError]``.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import structlog

from xrd_agent.config import Config
from xrd_agent.errors import ConfigError, NotFittedError, ScanError
from xrd_agent.identification import Candidate, Flag, Identification
from xrd_agent.scan import Scan

log = structlog.get_logger("xrd_agent.engines")

COSINE_VERSION = "cosine-search-match-1"
#: Best cosine below which no library entry explains the scan (simulated scans of the
#: tiny test library: its MOFs 0.74-0.98, a foreign dense phase 0.05).
COSINE_UNKNOWN = 0.6
#: Softmax temperature turning cosines into a ranking distribution.
COSINE_TEMPERATURE = 0.02
#: A crystalline scan has at least this many sharp peaks standing this many noise sigmas
#: above a 2-degree running-median background; fewer means nothing crystallised.
AMORPHOUS_MIN_PEAKS = 3
PEAK_SIGMAS = 8.0
#: Share of the scan's strong-peak height the top reference must explain (pure simulated
#: scans 1.0, 60:40 mixtures 0.68-0.87 on the tiny test library), below which
#: a second phase is likely.
MIXTURE_EXPLAINED = 0.9


class Engine(Protocol):
    model_version: str
    library_version: str

    def load(self) -> Any: ...

    def identify_many(self, scans: Sequence[Scan]) -> list[Identification | ScanError]: ...


def default_model_dir() -> Path:
    return Path(str(importlib.resources.files("xrd_agent") / "data" / "model"))


def model_dir_of(config: Config) -> Path:
    return Path(config.model.model_dir) if config.model.model_dir else default_model_dir()


def choose(config: Config) -> str:
    kind = config.model.engine
    if kind not in ("auto", "cnn", "cosine"):
        raise ConfigError(f"model.engine must be auto, cnn or cosine, not {kind!r}")
    if kind != "auto":
        return kind
    return "cnn" if (model_dir_of(config) / "manifest.json").is_file() else "cosine"


def make_engine(config: Config) -> Engine:
    """Build (not load) the configured engine."""
    kind = choose(config)
    if kind == "cosine":
        if config.model.engine == "auto":
            log.warning("no trained model installed: using the cosine search-match engine",
                        model_dir=str(model_dir_of(config)))
        return CosineEngine(config)
    return _cnn_engine(config)


def _cnn_engine(config: Config) -> Engine:
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
        from xrd_agent.model import flags

        m = config.model
        self._engine.policy = flags.FlagPolicy(unknown_threshold=m.unknown_threshold, min_coverage=m.min_coverage)
        self._engine.top_k = m.top_k
        self._engine.elements_mode, self._engine.elements_factor = m.elements_mode, m.elements_factor
        self._engine.gate = config.gate
        self.config = config

    def identify_many(self, scans: Sequence[Scan],
                      elements: Sequence[Sequence[str] | None] | None = None) -> list[Identification | ScanError]:
        if self._engine is None:
            raise NotFittedError("CnnEngine.load() must run before identify")
        return list(self._engine.identify_many(scans, elements=elements))


def _sharp_peaks(two_theta: np.ndarray, intensity: np.ndarray) -> int:
    """How many sharp peaks stand well above the local background and its noise."""
    from scipy import ndimage, signal

    if intensity.size < 20:
        return 0
    step = float(np.median(np.diff(two_theta))) or 0.01
    window = max(5, int(round(2.0 / step)) | 1)
    background = ndimage.median_filter(intensity, size=window, mode="nearest")
    residual = intensity - background
    mad = float(np.median(np.abs(residual - np.median(residual)))) * 1.4826
    noise = max(mad, float(np.sqrt(max(np.median(background), 1.0))) * 0.5, 1e-9)
    peaks, _ = signal.find_peaks(residual, height=PEAK_SIGMAS * noise, width=(1, max(2, 0.8 / step)))
    return int(peaks.size)


def _explained_share(y: np.ndarray, ref: np.ndarray, mask: np.ndarray, tolerance_deg: float = 0.3) -> float:
    """Share of the scan's strong-peak height that has a reference peak within ``tolerance_deg``."""
    from scipy import ndimage, signal

    peaks, props = signal.find_peaks(np.where(mask, y, 0.0), height=0.2, prominence=0.1)
    if peaks.size == 0:
        return 1.0
    half = int(round(tolerance_deg / 0.01))
    nearby = ndimage.maximum_filter1d(ref, size=2 * half + 1, mode="constant")
    heights = props["peak_heights"]
    hit = nearby[peaks] >= 0.05 * max(float(ref.max()), 1e-9)
    return float(heights[hit].sum() / heights.sum())


class CosineEngine:
    """Cosine search-match over the library on the covered part of the model grid."""

    def __init__(self, config: Config | None = None) -> None:
        self.config = config or Config()
        self.model_version = COSINE_VERSION
        self.library_version = ""
        self.library_: Any = None

    def load(self) -> CosineEngine:
        from xrd_agent.library.artifact import Library

        lib_dir = self.config.model.library_dir or None
        self.library_ = Library.load(lib_dir)
        self._patterns = self.library_.patterns  # float32 (n, 4501)
        # Running sums of the squared patterns (float64, so differences of them lose
        # nothing), once: a scan's reference norms over its mask are then a few column
        # differences per run of covered points, not a copy of the whole library per scan.
        squares = np.square(self._patterns, dtype=np.float64)
        self._square_sums = np.zeros((squares.shape[0], squares.shape[1] + 1))
        np.cumsum(squares, axis=1, out=self._square_sums[:, 1:])
        self.library_version = self.library_.version
        log.info("library loaded", classes=len(self.library_), version=self.library_version)
        return self

    def identify(self, scan: Scan) -> Identification | ScanError:
        return self.identify_many([scan])[0]

    def reconfigure(self, config: Config) -> None:
        """New thresholds (SIGHUP); the library stays loaded."""
        self.config = config

    def identify_many(self, scans: Sequence[Scan],
                      elements: Sequence[Sequence[str] | None] | None = None) -> list[Identification | ScanError]:
        """``elements`` are accepted and not used: the cosine fallback ranks library classes."""
        if self.library_ is None:
            raise NotFittedError("CosineEngine.load() must run before identify")
        from xrd_agent.preprocess import prepare

        out: list[Identification | ScanError] = []
        for scan in scans:
            try:
                pattern = prepare(scan, self.config.gate)
            except ScanError as exc:
                out.append(exc)
                continue
            out.append(self._identify(scan, pattern))
        return out

    def _cosines(self, intensity: np.ndarray, mask: np.ndarray) -> np.ndarray:
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

    def _identify(self, scan: Scan, pattern: Any) -> Identification:
        mask = np.asarray(pattern.mask, bool)
        cos = self._cosines(np.asarray(pattern.intensity, np.float32), mask)
        order = np.argsort(-cos)[: self.config.model.top_k]
        logits = (cos - cos.max()) / COSINE_TEMPERATURE
        prob = np.exp(logits) / np.exp(logits).sum()
        top = tuple(
            Candidate(rank=i + 1, refcode=self.library_.refcodes[j], name=self.library_.names[j], probability=float(prob[j]))
            for i, j in enumerate(order)
        )
        best = float(cos[order[0]])
        flags: set[Flag] = set()
        if pattern.coverage.fraction < self.config.model.min_coverage:
            flags.add(Flag.LOW_COVERAGE)
        if _sharp_peaks(scan.two_theta, scan.intensity) < AMORPHOUS_MIN_PEAKS:
            flags.add(Flag.AMORPHOUS)
        elif best < COSINE_UNKNOWN:
            flags.add(Flag.UNKNOWN_PHASE)
        else:
            explained = _explained_share(np.asarray(pattern.intensity), self._patterns[order[0]], mask)
            if explained < MIXTURE_EXPLAINED:
                flags.add(Flag.MIXTURE)
        return Identification(
            top=top,
            confidence=best if not flags & {Flag.AMORPHOUS, Flag.UNKNOWN_PHASE} else min(best, COSINE_UNKNOWN) / 2,
            flags=frozenset(flags),
            gate=pattern.gate,
            coverage=pattern.coverage,
            model_version=self.model_version,
            library_version=self.library_version,
            extra={"cosine": round(best, 4)},
        )
