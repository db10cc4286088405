"""The resident inference engine: load once, warm up, identify scans for months.

scikit-learn habits: options in ``__init__``, :meth:`Engine.load` sets the learned
state (attributes ending in ``_``), and asking for a prediction before that raises
:class:`~xrd_agent.errors.NotFittedError`.

Speed: the network is called through ONE ``tf.function`` with a fixed input
signature (``model(x, training=False)``, never ``Model.predict``, which rebuilds its
data pipeline per call), and inputs are padded to the few batch sizes of
``ModelConfig.batch_sizes``, each warmed up in :meth:`load`, so no call ever traces
or re-plans the graph. GPU or CPU is decided once, before TensorFlow touches a GPU.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xrd_agent.config import Config, GateConfig
from xrd_agent.errors import CorruptScan, ModelError, NotFittedError, ScanError
from xrd_agent.identification import Candidate, Identification
from xrd_agent.model import cam as _cam
from xrd_agent.model import flags as _flags
from xrd_agent.pattern import GRID_POINTS, Pattern

log = logging.getLogger(__name__)

#: The peak match reorders the network's RERANK_DEPTH best by softmax x score**RERANK_POWER.
#: Chosen on realistic spectra of the library's own entries (not the held-out test set):
#: depth 5/10/20 x power 1-4; 10 and 4 gave Top-1 67.6 -> 70.8 %, Top-5 85.3 -> 86.7 % (docs/model.md).
RERANK_DEPTH = 10
RERANK_POWER = 4


def select_device(preference: str = "auto") -> str:
    """Decide GPU or CPU once per process; returns a description for logs and manifests.

    Memory growth must be set before TensorFlow initialises the GPU, so this runs
    before any model is built or loaded.
    """
    import tensorflow as tf

    if preference not in ("auto", "cpu", "gpu"):
        raise ModelError(f"device must be auto, cpu or gpu, not {preference!r}")
    gpus = tf.config.list_physical_devices("GPU")
    if preference == "gpu" and not gpus:
        raise ModelError("device 'gpu' was asked for but TensorFlow sees no GPU")
    if gpus and preference != "cpu":
        for gpu in gpus:
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError:  # already initialised by an earlier call: keep its setting
                pass
        return f"gpu ({len(gpus)} visible: {gpus[0].name})"
    if gpus:
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:
            log.warning("GPU already initialised; cannot hide it any more")
    return "cpu"


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
        verify: bool = True,
    ) -> None:
        self.model_dir = model_dir
        self.library = library
        self.device = device
        self.batch_sizes = tuple(sorted({int(b) for b in batch_sizes if int(b) > 0})) or (1,)
        self.top_k = top_k
        self.cam = cam  # compute CAM regions (one backward pass to the last conv per batch)
        self.rerank = rerank  # reorder the network's best by softmax x peak-match score^RERANK_POWER
        self.rerank_depth = rerank_depth  # how many of the network's best the peak match may reorder
        self.gate = gate
        self.policy = policy
        self.verify = verify  # physics check of candidates on scans (xrd_agent/verify); arrays are not checked
        self.traces_ = 0

    @classmethod
    def from_config(cls, config: Config, *, library: Any = None, **overrides: Any) -> Engine:
        m = config.model
        policy = _flags.FlagPolicy(unknown_threshold=m.unknown_threshold, min_coverage=m.min_coverage)
        options = dict(model_dir=m.model_dir or None, library=library, device=m.device,
                       batch_sizes=m.batch_sizes, top_k=m.top_k, gate=config.gate, policy=policy,
                       verify=m.verify)
        options.update(overrides)
        return cls(**options)

    # -- learned state -----------------------------------------------------------
    def load(self) -> Engine:
        """Read the model and its library, check they belong together, warm every batch size."""
        import tensorflow as tf

        from xrd_agent.library.artifact import Library
        from xrd_agent.model import artifact

        manifest = artifact.read_manifest(self.model_dir)
        library = self.library
        if library is None or isinstance(library, (str, Path)):
            library = Library.load(library or None)
        library = artifact.check_library(manifest, library)
        self.device_ = select_device(self.device)
        model = artifact.load_network(self.model_dir)

        @tf.function(input_signature=[tf.TensorSpec([None, GRID_POINTS, 1], tf.float32)])
        def probabilities(x):
            self.traces_ += 1  # Python side effect: runs only while tracing
            return model(x, training=False)

        self.manifest_ = manifest
        self.library_ = library
        self.model_ = model
        self._probabilities = probabilities
        self._explained = _cam.make_cam_function(model)
        self.centres_ = _cam.receptive_centres(model)
        # Reference peaks once per class now, so no identify pays for them later (~0.3 s).
        self._reference_peaks: dict[int, _flags.Peaks] = {}
        for index in range(len(library)):
            self.reference_peaks(index)
        if self.verify:  # references and their ln-d FFTs once, so no identify pays for them
            from xrd_agent.verify.stage import checker_for

            self.checker_ = checker_for(library)
        for b in self.batch_sizes:  # warm-up: trace once, plan every padded shape
            zeros = tf.zeros((b, GRID_POINTS, 1), tf.float32)
            self._probabilities(zeros)
            if self.cam:
                self._explained(zeros)
        log.info("engine ready: model %s, library %s (%d classes), %s, batch sizes %s",
                 manifest.version, library.version, len(library), self.device_, self.batch_sizes)
        return self

    @property
    def is_loaded(self) -> bool:
        return hasattr(self, "model_")

    def _require(self) -> None:
        if not self.is_loaded:
            raise NotFittedError("the engine has no model yet: call Engine.load() first")

    # -- arrays in, arrays out (benchmarks, evaluation) ------------------------------
    def _batches(self, n: int) -> Iterable[tuple[int, int, int]]:
        """(start, stop, padded size) chunks covering n rows with the fixed batch sizes."""
        biggest = self.batch_sizes[-1]
        start = 0
        while start < n:
            stop = min(start + biggest, n)
            size = next(b for b in self.batch_sizes if b >= stop - start)
            yield start, stop, size
            start = stop

    def _run(self, X: np.ndarray, explain: bool) -> tuple[np.ndarray, np.ndarray | None]:
        self._require()
        X = np.asarray(X, np.float32).reshape(-1, GRID_POINTS)
        n = X.shape[0]
        probs = np.empty((n, len(self.library_)), np.float32)
        cams = None
        for start, stop, size in self._batches(n):
            chunk = X[start:stop]
            if size > chunk.shape[0]:
                chunk = np.concatenate([chunk, np.zeros((size - chunk.shape[0], GRID_POINTS), np.float32)])
            x = chunk[..., None]
            if explain:
                p, c = self._explained(x)
                if cams is None:
                    cams = np.empty((n, c.shape[1]), np.float32)
                cams[start:stop] = c.numpy()[: stop - start]
            else:
                p = self._probabilities(x)
            probs[start:stop] = p.numpy()[: stop - start]
        return probs, cams

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Softmax (n, classes) for preprocessed patterns (n, 4501)."""
        return self._run(X, explain=False)[0]

    def explain(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Softmax (n, classes) and the top class's activation map on MODEL_GRID (n, 4501)."""
        probs, cams = self._run(X, explain=True)
        return probs, _cam.to_grid(cams, self.centres_)

    def features(self, X: np.ndarray) -> np.ndarray:
        """Penultimate-layer activations (n, d): what the NCA map is drawn from."""
        import keras

        from xrd_agent.model.network import FEATURES

        self._require()
        sub = keras.Model(self.model_.inputs, self.model_.get_layer(FEATURES).output)
        return np.asarray(sub.predict(np.asarray(X, np.float32)[..., None], batch_size=256, verbose=0))

    # -- patterns in, Identifications out --------------------------------------------
    def reference_peaks(self, index: int) -> _flags.Peaks:
        peaks = self._reference_peaks.get(index)
        if peaks is None:
            peaks = _flags.find_peaks(self.library_.patterns16[index].astype(np.float32), min_height=0.02)
            self._reference_peaks[index] = peaks
        return peaks

    def identify_patterns(self, patterns: Sequence[Pattern],
                          raw: Sequence[np.ndarray | None] | None = None,
                          observed: Sequence[Any] | None = None) -> list[Identification]:
        """Identify preprocessed patterns; ``raw`` (grid values before scaling) enables the amorphous test."""
        self._require()
        if not patterns:
            return []
        X = np.stack([p.intensity for p in patterns])
        probs, cams = self._run(X, explain=self.cam)
        results = []
        for i, pattern in enumerate(patterns):
            values = raw[i] if raw is not None else None
            cam_row = cams[i] if cams is not None else None
            obs = observed[i] if observed is not None else None
            results.append(self._judge(pattern, probs[i], cam_row, values, obs))
        return results

    def _judge(self, pattern: Pattern, probs: np.ndarray, cam_row: np.ndarray | None,
               values: np.ndarray | None, obs: Any = None) -> Identification:
        lib = self.library_
        k = min(self.top_k, probs.size)
        reorder = min(self.rerank_depth if self.rerank else 1, probs.size)
        order = np.argsort(-probs)[:max(k, reorder)]
        scan_peaks = _flags.find_peaks(pattern.intensity, pattern.mask, min_height=self.policy.weak_peak)
        cov = pattern.coverage
        first, last = (cov.first, cov.last) if cov.fraction > 0 else (0.0, 0.0)
        matches = {int(j): _flags.match_peaks(scan_peaks, self.reference_peaks(int(j)), first, last, self.policy)
                   for j in order[:reorder]}
        if self.rerank:
            # Peak evidence reorders the network's few best (docs/model.md).
            head = sorted(matches, key=lambda j: -float(probs[j]) * matches[j].score ** RERANK_POWER)
            order = np.array(head + [int(j) for j in order if int(j) not in matches])
        verified = self.checker_.check(obs, probs) if obs is not None and hasattr(self, "checker_") else None
        fits: dict[int, Any] = {}
        if verified is not None and verified.candidates:
            # the physics check ranks first (network x fit, xrd_agent/verify/check.py); the network's rest follow
            fits = {c.index: c for c in verified.candidates}
            head = [c.index for c in verified.candidates]
            order = np.array(head + [int(j) for j in order if int(j) not in fits])
        order = order[:k]
        from xrd_agent.verify.stage import fit_dict, phase_dict, summary

        top = tuple(Candidate(rank=r + 1, refcode=lib.refcodes[j], name=lib.names[j], probability=float(probs[j]),
                              fit=fit_dict(fits[int(j)]) if int(j) in fits else None)
                    for r, j in enumerate(order))
        j0 = int(order[0])
        match = matches.get(j0) or _flags.match_peaks(scan_peaks, self.reference_peaks(j0), first, last, self.policy)
        cryst = _flags.crystallinity(values, pattern.mask) if values is not None else None
        confidence, flags = _flags.decide(float(probs[order[0]]), match, cryst, cov.fraction, self.policy)
        composition: tuple = ()
        physics = None
        if verified is not None and verified.candidates and _flags.Flag.AMORPHOUS not in flags:
            # the fit replaces the peak-match judgement: unknown when nothing fits or confidence is low,
            # mixture when a second phase is significant
            confidence = verified.confidence
            flags = set(flags) - {_flags.Flag.UNKNOWN_PHASE, _flags.Flag.MIXTURE}
            if not verified.fits or confidence < self.policy.unknown_threshold:
                flags.add(_flags.Flag.UNKNOWN_PHASE)
            if verified.mixture:
                flags.add(_flags.Flag.MIXTURE)
            flags = frozenset(flags)
            composition = tuple(phase_dict(p) for p in verified.phases)
        if verified is not None:
            physics = summary(verified)
        regions: tuple = ()
        if cam_row is not None:
            regions = _cam.regions(_cam.to_grid(cam_row, self.centres_)[0], pattern.mask)
        extra: dict[str, object] = {
            "softmax_top": round(float(probs[order[0]]), 6),
            "cam_refcode": lib.refcodes[int(np.argmax(probs))],  # the map explains the network's own top choice
            "match": {"explained": round(match.explained, 4), "recovered": round(match.recovered, 4),
                      "score": round(match.score, 4), "shift": match.shift,
                      "unexplained_peaks": [round(p, 2) for p in match.unexplained]},
        }
        if cryst is not None:
            extra["crystallinity"] = {"snr": round(min(cryst.snr, 1e9), 2), "relative": round(cryst.relative, 4)}
        return Identification(top=top, confidence=confidence, flags=flags, gate=pattern.gate,
                              coverage=cov, cam_regions=regions, model_version=self.manifest_.version,
                              library_version=lib.version, extra=extra, composition=composition,
                              physics=physics)

    def identify_arrays(self, two_theta_cu: np.ndarray, intensity: np.ndarray) -> Identification:
        """Measured points on the Cu K-alpha1 scale -> Identification (raises ScanError)."""
        from xrd_agent import preprocess

        self._require()
        pattern, raw = preprocess.prepare_arrays_raw(two_theta_cu, intensity, self.gate)
        return self.identify_patterns([pattern], [raw])[0]

    def identify_many(self, scans: Sequence[Any], wavelength: float | None = None) -> list[Identification | ScanError]:
        """One result per scan, in order: an Identification, or the ScanError that stopped it."""
        from xrd_agent import preprocess

        self._require()
        out: list[Identification | ScanError | None] = [None] * len(scans)
        ready: list[int] = []
        patterns: list[Pattern] = []
        raws: list[np.ndarray] = []
        observed: list[Any] = []
        for i, scan in enumerate(scans):
            try:
                pattern, raw = preprocess.prepare_raw(scan, self.gate, wavelength=wavelength)
                patterns.append(pattern)
                raws.append(raw)
                ready.append(i)
                if self.verify:
                    from xrd_agent.verify.stage import observe_scan

                    observed.append(observe_scan(scan, wavelength))
                else:
                    observed.append(None)
            except ScanError as exc:
                out[i] = exc
            except (ValueError, FloatingPointError, IndexError) as exc:  # one odd scan must not sink the batch
                out[i] = CorruptScan(f"the scan could not be put on the model grid ({exc})",
                                     getattr(scan, "source_path", None))
        for i, result in zip(ready, self.identify_patterns(patterns, raws, observed)):
            out[i] = result
        return out  # type: ignore[return-value]

    def identify(self, scan: Any, wavelength: float | None = None) -> Identification:
        result = self.identify_many([scan], wavelength)[0]
        if isinstance(result, ScanError):
            raise result
        return result

