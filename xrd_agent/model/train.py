"""Training: synthetic spectra from a library -> a seeded Keras fit -> a model folder.

The training set is made by ``xrd_agent.model.dataset.synthesize`` (physics and
instrument augmentation of every library pattern, run through the same
preprocessing as real scans), so the network only ever sees what a scan looks like
after :func:`xrd_agent.preprocess.prepare`. With ``regenerate`` the training spectra are
drawn anew every epoch (:func:`xrd_agent.model.dataset.spectra_per_epoch`) and only the
validation set is fixed: the network never sees one spectrum twice, so it cannot learn
a fixed set's noise by heart.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from xrd_agent.errors import ModelError
from xrd_agent.model import artifact

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the weights (recorded in the manifest)."""

    arch: str = "paper"
    epochs: int = 40
    per_class: int = 50  # synthetic spectra per class (augmentation ratio)
    seed: int = 0
    batch_size: int = 256
    learning_rate: float = 1e-3
    validation_fraction: float = 0.1
    patience: int = 5  # EarlyStopping on validation loss, best weights restored
    device: str = "auto"  # auto | cpu | gpu
    augment_preset: str = "default"  # default | realistic | instrument: the AugmentOptions overridden
    augment: dict[str, Any] = field(default_factory=dict)  # overrides of single augmentation options
    workers: int = 1  # processes that synthesise spectra (the result is the same for any count)
    max_minutes: float = 0.0  # > 0: stop before an epoch would end past this budget (best weights kept)
    regenerate: bool = False  # new training spectra every epoch (a PyDataset); validation stays fixed
    init_model: str = ""  # a model folder whose weights start the fit (same classes); "" = random init


@dataclass(frozen=True, eq=False)
class TrainResult:
    model: Any  # keras.Model
    manifest: artifact.ModelManifest
    history: dict[str, list[float]]
    out: Path | None


Synthesizer = Callable[..., tuple[np.ndarray, np.ndarray]]


def _default_synthesizer() -> Synthesizer:
    from xrd_agent.model.dataset import synthesize

    return synthesize


def augment_options(config: TrainConfig) -> Any:
    """The AugmentOptions of ``config``: a preset with single options overridden."""
    from dataclasses import replace as _replace

    from xrd_agent.model.augment import AugmentOptions

    presets = {"default": AugmentOptions, "realistic": AugmentOptions.realistic,
               "instrument": AugmentOptions.instrument}
    if config.augment_preset not in presets:
        raise ValueError(f"unknown augmentation preset {config.augment_preset!r}; choose {', '.join(presets)}")
    base = presets[config.augment_preset]()
    overrides = AugmentOptions.coerce(dict(config.augment)) if config.augment else None
    if overrides is None:
        return base
    changed = {k: getattr(overrides, k) for k in config.augment}
    return _replace(base, **changed)


def split_validation(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class split of indices into (train, validation): every class in both parts."""
    rng = np.random.default_rng(seed)
    train_idx, val_idx = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_val = int(round(fraction * idx.size)) if idx.size > 1 else 0
        n_val = min(max(n_val, 1 if fraction > 0 and idx.size > 1 else 0), idx.size - 1)
        val_idx.append(idx[:n_val])
        train_idx.append(idx[n_val:])
    return rng.permutation(np.concatenate(train_idx)), np.concatenate(val_idx)


class _Monitor:
    """Top-1/Top-5 on extra sets after every epoch, recorded in the history only.

    Used to draw held-out accuracy against epochs; it never steers training (early
    stopping watches the synthetic validation loss), so the held-out set stays a test set.
    """

    def __new__(cls, sets: dict[str, tuple[np.ndarray, np.ndarray]], batch_size: int):
        import keras

        class Monitor(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if logs is None:
                    return
                for name, (X, y) in sets.items():
                    p = self.model.predict(X[..., None], batch_size=batch_size, verbose=0)
                    true = p[np.arange(len(y)), y][:, None]
                    rank = (p > true).sum(axis=1)
                    logs[f"{name}_top1"] = float(np.mean(rank < 1))
                    logs[f"{name}_top5"] = float(np.mean(rank < 5))

        return Monitor()


class _TimeBudget:
    """Stop before the next epoch would overrun ``minutes`` (a shared CPU is slow to predict)."""

    def __new__(cls, minutes: float, emit: Callable[[str], None]):
        import keras

        class TimeBudget(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self._start = time.perf_counter()
                self._last = self._start

            def on_epoch_end(self, epoch, logs=None):
                now = time.perf_counter()
                epoch_s, self._last = now - self._last, now
                if now - self._start + epoch_s > 60.0 * minutes:
                    emit(f"time budget of {minutes:g} min reached after epoch {epoch + 1}: stopping")
                    self.model.stop_training = True

        return TimeBudget()


class _EpochLog:
    """One log line per epoch when no progress bar can be drawn (services, pipes)."""

    def __new__(cls, emit: Callable[[str], None], epochs: int):
        import keras

        class EpochLog(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self._t = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                parts = " ".join(f"{k}={v:.4f}" for k, v in sorted(logs.items()) if isinstance(v, float))
                emit(f"epoch {epoch + 1}/{epochs} {time.perf_counter() - self._t:.1f}s {parts}")

        return EpochLog()


def train(
    library: Any,
    config: TrainConfig = TrainConfig(),
    out: str | Path | None = None,
    *,
    synthesize: Synthesizer | None = None,
    command: str | None = None,
    progress: bool | None = None,
    emit: Callable[[str], None] = print,
    monitor: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> TrainResult:
    """Train ``config.arch`` on ``library`` and (if ``out``) write the model folder.

    ``synthesize(library, per_class, seed=..., options=..., workers=...) -> (X, y)`` makes the
    training spectra; the default is :func:`xrd_agent.model.dataset.synthesize`.
    """
    # TensorFlow is imported first (quietly) only when it will be Keras's backend: the GPU
    # machine that trains may have JAX alone (KERAS_BACKEND=jax)
    if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
        from xrd_agent.tfimport import import_tensorflow

        import_tensorflow()
    import keras

    from xrd_agent.model.network import build

    device = training_device(config.device)
    emit(f"training on {device}")
    keras.utils.set_random_seed(config.seed)  # seeds python, numpy and the backend
    synthesize = synthesize or _default_synthesizer()

    t0 = time.perf_counter()
    options = augment_options(config)
    n_val = max(1, int(round(config.per_class * config.validation_fraction)))
    if config.regenerate:
        from xrd_agent.model.dataset import spectra_per_epoch

        # The fixed validation set draws from its own seed: never one of the epochs' spectra.
        Xv, yv = synthesize(library, n_val, seed=config.seed + 500_000, options=options,
                            workers=config.workers)
        x_tr: Any = spectra_per_epoch(library, config.per_class, seed=config.seed, options=options,
                                      batch_size=config.batch_size, workers=config.workers)
        y_tr = None
        val = None
        if config.validation_fraction > 0:
            val = (np.asarray(Xv, np.float32)[..., None], np.asarray(yv, np.int32))
        n_train, n_valid = len(library) * config.per_class, len(yv)
        emit(f"synthesised {n_valid} validation spectra for {len(library)} classes in "
             f"{time.perf_counter() - t0:.0f}s; {n_train} new training spectra every epoch")
    else:
        X, y = synthesize(library, config.per_class + n_val, seed=config.seed, options=options,
                          workers=config.workers)
        X = np.asarray(X, np.float32)
        y = np.asarray(y, np.int32)
        tr, va = split_validation(y, config.validation_fraction, config.seed)
        emit(f"synthesised {len(y)} spectra for {len(library)} classes in {time.perf_counter() - t0:.0f}s "
             f"({len(tr)} train / {len(va)} validation)")
        # One reordering copy (training rows first), then views: a 1,012-class set is GBs.
        order = np.concatenate([tr, va])
        X, y = X[order], y[order]
        x_tr, y_tr = X[: len(tr), :, None], y[: len(tr)]
        val = (X[len(tr):, :, None], y[len(tr):]) if len(va) else None
        n_train, n_valid = len(tr), len(va)
    synth_s = time.perf_counter() - t0

    model = build(config.arch, len(library), learning_rate=config.learning_rate)
    if config.init_model:
        parent = _start_from(model, Path(config.init_model), library)
        emit(f"weights initialised from {config.init_model} ({parent})")
    callbacks: list[Any] = [
        keras.callbacks.EarlyStopping(monitor="val_loss" if val is not None else "loss",
                                      patience=config.patience, restore_best_weights=True),
    ]
    if monitor:
        callbacks.insert(0, _Monitor(monitor, config.batch_size))
    if config.max_minutes > 0:
        callbacks.append(_TimeBudget(config.max_minutes, emit))
    bar = sys.stdout.isatty() if progress is None else progress
    if not bar:
        callbacks.append(_EpochLog(emit, config.epochs))
    t1 = time.perf_counter()
    if y_tr is None:
        fit = model.fit(x_tr, validation_data=val, epochs=config.epochs, callbacks=callbacks,
                        verbose=1 if bar else 0)
    else:
        fit = model.fit(x_tr, y_tr, validation_data=val, epochs=config.epochs, batch_size=config.batch_size,
                        shuffle=True, callbacks=callbacks, verbose=1 if bar else 0)
    fit_s = time.perf_counter() - t1
    history = {k: [float(v) for v in vals] for k, vals in fit.history.items()}

    metrics: dict[str, Any] = {
        "epochs_run": len(history.get("loss", [])),
        "synthesis_s": round(synth_s, 1),
        "fit_s": round(fit_s, 1),
        **({"init_model_version": parent} if config.init_model else {}),
        "train_samples": int(n_train),  # per epoch when regenerated
        "validation_samples": int(n_valid),
    }
    if val is not None:
        ev = model.evaluate(val[0], val[1], batch_size=config.batch_size, verbose=0, return_dict=True)
        metrics.update({f"val_{k}": round(float(v), 4) for k, v in ev.items()})
    emit("finished in {:.0f}s: {}".format(time.perf_counter() - t0, json.dumps(metrics)))

    manifest = artifact.ModelManifest(
        arch=config.arch,
        classes=tuple(library.refcodes),
        library_version=library.version,
        library_sha256=artifact.library_fingerprint(library),
        training={**asdict(config), "keras": keras.__version__, "python": platform.python_version()},
        metrics=metrics,
        command=command if command is not None else shlex.join(["xrd-agent", *sys.argv[1:]]),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        device=device,
    )
    path = None
    if out is not None:
        path = Path(out)
        path.mkdir(parents=True, exist_ok=True)
        # An uncompiled copy: no optimizer state (2x the weights) in a file that ships.
        # (clone_model would recompile; a new Model over the same layers has no optimizer.)
        inference = keras.Model(model.inputs, model.outputs, name=model.name)
        inference.save(path / artifact.MODEL_FILE)
        manifest = replace(manifest, library_path=artifact.keep_library(path, library))
        manifest = artifact.write_manifest(path, manifest)
        (path / artifact.HISTORY_FILE).write_text(json.dumps(history, indent=1) + "\n")
        plot_history(history, path / artifact.REPORT_FILE, title=f"{config.arch}, {len(library)} classes")
        emit(f"model written to {path} ({manifest.version})")
    return TrainResult(model=model, manifest=manifest, history=history, out=path)


def training_device(preference: str = "auto") -> str:
    """The device Keras trains on, by its backend.

    The service always runs TensorFlow, but a ``.keras`` file of these layers is the same
    whatever backend wrote it, so a model may be trained where only JAX or PyTorch sees
    the GPU (``KERAS_BACKEND=jax``) and shipped to TensorFlow unchanged.
    """
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        from xrd_agent.model.predictor import select_device

        return select_device(preference)
    if preference not in ("auto", "cpu", "gpu"):
        raise ModelError(f"device must be auto, cpu or gpu, not {preference!r}")
    if backend == "jax":
        import jax

        devices = jax.devices()  # the default backend's: GPUs first when there are any
        gpu = devices[0].platform == "gpu"
        kind = str(getattr(devices[0], "device_kind", devices[0].platform))
    elif backend == "torch":
        import torch

        gpu = torch.cuda.is_available()
        kind = torch.cuda.get_device_name(0) if gpu else "cpu"
    else:
        raise ModelError(f"training on the {backend} backend is not supported; use tensorflow, jax or torch")
    if preference == "gpu" and not gpu:
        raise ModelError(f"device 'gpu' was asked for but {backend} sees no GPU")
    if preference == "cpu" and gpu:
        raise ModelError(f"{backend} uses the GPU here; hide it (JAX_PLATFORMS=cpu or "
                         "CUDA_VISIBLE_DEVICES=) to train on the CPU")
    return f"{'gpu' if gpu else 'cpu'} ({backend}: {kind})"


def _start_from(model: Any, folder: Path, library: Any) -> str:
    """Copy the weights of the model in ``folder`` into ``model`` (fine-tuning): its
    classes must be the library's, in order, and its architecture the same."""
    import keras

    manifest = artifact.read_manifest(folder)
    if tuple(manifest.classes) != tuple(library.refcodes):
        raise ValueError(f"{folder}: its classes are not this library's; cannot start from its weights")
    model.set_weights(keras.models.load_model(folder / artifact.MODEL_FILE, compile=False).get_weights())
    return manifest.version


def plot_history(history: dict[str, list[float]], path: str | Path, title: str = "") -> None:
    """Loss and accuracy per epoch, training vs validation (matplotlib Agg, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    for key, ax in (("loss", ax_loss), ("top1", ax_acc), ("top5", ax_acc)):
        for prefix, style in (("", "-"), ("val_", "--"), ("heldout_", ":")):
            if prefix + key in history:
                ax.plot(epochs, history[prefix + key], style, label=prefix + key)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", yscale="log")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.01))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def with_overrides(config: TrainConfig, **changes: Any) -> TrainConfig:
    """``config`` with the non-None ``changes`` applied (CLI flags over defaults)."""
    return replace(config, **{k: v for k, v in changes.items() if v is not None})
