"""The predict stage for the trained CNN: the network, resident, and nothing else.

Speed: the network is called through ONE ``tf.function`` with a fixed input
signature (``model(x, training=False)``, never ``Model.predict``, which rebuilds its
data pipeline per call), and inputs are padded to the few batch sizes of
``ModelConfig.batch_sizes``, each warmed up in :meth:`NetworkPredictor.load`, so no
call ever traces or re-plans the graph. GPU or CPU is decided once, before
TensorFlow touches a GPU.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xrd_agent.errors import ModelError, NotFittedError
from xrd_agent.model import cam as _cam
from xrd_agent.pattern import GRID_POINTS, Pattern
from xrd_agent.predict import Prediction

log = logging.getLogger(__name__)


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


class NetworkPredictor:
    """Softmax and CAM for batches of patterns from one model folder and its library."""

    def __init__(self, model_dir: str | Path | None = None, library: Any = None, *, device: str = "auto",
                 batch_sizes: Sequence[int] = (1, 8, 64), cam: bool = True) -> None:
        self.model_dir = model_dir
        self.library = library
        self.device = device
        self.batch_sizes = tuple(sorted({int(b) for b in batch_sizes if int(b) > 0})) or (1,)
        self.cam = cam  # compute CAM (one backward pass to the last conv per batch)
        self.traces_ = 0

    def load(self) -> NetworkPredictor:
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
        for b in self.batch_sizes:  # warm-up: trace once, plan every padded shape
            zeros = tf.zeros((b, GRID_POINTS, 1), tf.float32)
            self._probabilities(zeros)
            if self.cam:
                self._explained(zeros)
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

    def run(self, X: np.ndarray, explain: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Softmax (n, classes) and, with ``explain``, CAM at the conv positions (n, L)."""
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

    def predict(self, patterns: Sequence[Pattern]) -> list[Prediction]:
        """The predict stage: one batch through the network, one Prediction per pattern."""
        self._require()
        if not patterns:
            return []
        probs, cams = self.run(np.stack([p.intensity for p in patterns]), explain=self.cam)
        grid = _cam.to_grid(cams, self.centres_) if cams is not None else None
        return [Prediction(probabilities=probs[i], cam=grid[i] if grid is not None else None)
                for i in range(len(patterns))]

    def features(self, X: np.ndarray) -> np.ndarray:
        """Penultimate-layer activations (n, d): what the NCA map is drawn from."""
        import keras

        from xrd_agent.model.network import FEATURES

        self._require()
        sub = keras.Model(self.model_.inputs, self.model_.get_layer(FEATURES).output)
        return np.asarray(sub.predict(np.asarray(X, np.float32)[..., None], batch_size=256, verbose=0))
