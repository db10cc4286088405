"""Synthetic training and evaluation sets from a reference library.

Every spectrum is made by :func:`xrd_agent.model.augment.augment` from the library's
sticks and then passed through :func:`xrd_agent.preprocess.prepare_grid_batch`, the same
background removal, scaling and FFT gate a real scan gets: the model never sees a
spectrum that skipped the path real scans take.

Reproducible: class ``c`` always draws from ``np.random.default_rng([seed, c])``, so the
spectra of a class do not depend on which other classes are asked for, on their order,
or on how many worker processes share the work.

:func:`epoch_batch` and :func:`spectra_per_epoch` (a ``keras.utils.PyDataset``) make
new spectra every epoch instead: batch ``b`` of epoch ``e`` is a pure function of
``(seed, e, b)``, so a run is reproducible whatever the worker threads do.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from xrd_agent.config import GateConfig
from xrd_agent.errors import LibraryError
from xrd_agent.library.artifact import Library
from xrd_agent.model.augment import AugmentOptions, augment
from xrd_agent.model.noise import NoiseBank
from xrd_agent.pattern import GRID_POINTS
from xrd_agent.preprocess import prepare_grid_batch

__all__ = ["epoch_batch", "epoch_plan", "realistic_heldout", "spectra_per_epoch", "synthesize",
           "synthesize_class"]

#: Below this many spectra a process pool costs more than it saves.
_POOL_MIN_SPECTRA = 2_000


def _cell(entry: Mapping[str, Any]) -> np.ndarray | None:
    """Cell vectors (3x3, angstrom) from an entry's ``cell`` (a, b, c, alpha, beta, gamma)."""
    cell = entry.get("cell")
    if isinstance(cell, Mapping):
        cell = [cell.get(k) for k in ("a", "b", "c", "alpha", "beta", "gamma")]
    try:
        a, b, c, al, be, ga = (float(v) for v in cell)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    al, be, ga = np.radians([al, be, ga])
    cx = np.cos(be)
    cy = (np.cos(al) - np.cos(be) * np.cos(ga)) / np.sin(ga)
    cz2 = 1.0 - cx * cx - cy * cy
    if min(a, b, c) <= 0 or cz2 <= 0:
        return None
    return np.array([[a, 0, 0], [b * np.cos(ga), b * np.sin(ga), 0], [c * cx, c * cy, c * np.sqrt(cz2)]])


def synthesize_class(
    library: Library,
    index: int,
    n: int,
    *,
    seed: int | Sequence[int],
    options: AugmentOptions,
    bank: NoiseBank | None,
    gate: GateConfig,
) -> np.ndarray:
    """``n`` preprocessed spectra (float32 (n, 4501)) of library class ``index``, drawn
    from ``default_rng([*seed, index])`` (``seed`` an int or a sequence of ints)."""
    rng = np.random.default_rng([*np.atleast_1d(np.asarray(seed, np.int64)).tolist(), index])
    sticks = library.sticks(index)
    if sticks.two_theta.size == 0:
        raise LibraryError(f"library entry {library.refcodes[index]} has no reflections to augment")
    noise = bank.sample(n, rng) if bank is not None and len(bank) and options.bank_noise > 0 else None
    raw, mask = augment(sticks.two_theta, sticks.intensity, sticks.hkl, n, options, rng,
                        noise=noise, cell=_cell(library.entries[index]))
    X, _ = prepare_grid_batch(raw, None if mask.all() else mask, gate)
    return X


# -- process pool: the library travels once per worker, not once per task ------------
_WORKER: dict[str, Any] = {}


def _init_worker(library: Library, bank: NoiseBank | None, options: AugmentOptions, gate: GateConfig) -> None:
    _WORKER.update(library=library, bank=bank, options=options, gate=gate)


def _work(task: tuple[int, int, int]) -> tuple[int, np.ndarray]:
    index, n, seed = task
    w = _WORKER
    return index, synthesize_class(w["library"], index, n, seed=seed, options=w["options"],
                                   bank=w["bank"], gate=w["gate"])


def synthesize(
    library: Library,
    per_class: int,
    *,
    seed: int,
    options: AugmentOptions | Mapping[str, Any] | str | None = None,
    bank: NoiseBank | None = None,
    classes: Sequence[int] | None = None,
    gate: GateConfig = GateConfig(),
    workers: int | None = 1,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` augmented, preprocessed spectra of each class.

    Returns ``X`` float32 (n, 4501) and ``y`` int32 class indices (into ``library``),
    grouped by class in the order of ``classes`` (default: all). ``options`` may be an
    :class:`AugmentOptions`, a preset name or a mapping of overrides. ``bank`` None with
    ``options.bank_noise > 0`` loads the shipped noise bank. ``workers`` > 1 (or None:
    one per CPU) spreads classes over processes; the result is identical either way.
    ``progress(done, total)`` is called as classes finish (for a progress line).
    """
    opts = AugmentOptions.coerce(options)
    if bank is None and opts.bank_noise > 0:
        bank = NoiseBank.load()
    idx = list(range(len(library))) if classes is None else [int(c) for c in classes]
    if any(c < 0 or c >= len(library) for c in idx):
        raise LibraryError(f"class indices must lie in 0..{len(library) - 1}")
    if per_class < 1 or not idx:
        return np.empty((0, GRID_POINTS), np.float32), np.empty(0, np.int32)
    X = np.empty((len(idx) * per_class, GRID_POINTS), np.float32)
    y = np.repeat(np.asarray(idx, np.int32), per_class)
    workers = (os.cpu_count() or 1) if workers is None else max(int(workers), 1)
    if workers > 1 and X.shape[0] >= _POOL_MIN_SPECTRA:
        import multiprocessing
        import sys

        # fork is cheapest and needs no __main__ guard in the caller's script, but forking
        # a process with TensorFlow's or JAX's threads running can deadlock: then
        # forkserver, whose children start clean (and which needs the usual
        # `if __name__ == "__main__"`).
        methods = multiprocessing.get_all_start_methods()
        threaded = any(name in sys.modules for name in ("tensorflow", "jax", "torch"))
        method = "fork" if "fork" in methods and not threaded else "forkserver"
        if method not in methods:
            method = "spawn"
        context = multiprocessing.get_context(method)
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                 initargs=(library, bank, opts, gate)) as pool:
            slots = {c: k for k, c in enumerate(idx)}
            tasks = [(c, per_class, seed) for c in idx]
            chunk = max(1, len(tasks) // (8 * workers))
            for done, (c, block) in enumerate(pool.map(_work, tasks, chunksize=chunk), 1):
                k = slots[c]
                X[k * per_class:(k + 1) * per_class] = block
                if progress is not None:
                    progress(done, len(idx))
    else:
        for k, c in enumerate(idx):
            X[k * per_class:(k + 1) * per_class] = synthesize_class(
                library, c, per_class, seed=seed, options=opts, bank=bank, gate=gate)
            if progress is not None:
                progress(k + 1, len(idx))
    return X, y


def realistic_heldout(
    library: Library,
    heldout: Library,
    per_entry: int,
    *,
    seed: int,
    options: AugmentOptions | Mapping[str, Any] | None = None,
    bank: NoiseBank | None = None,
    gate: GateConfig = GateConfig(),
) -> tuple[np.ndarray, np.ndarray]:
    """"Realistic experimental" test spectra from held-out determinations.

    Each held-out entry (another determination of a library material, named by its
    ``class_refcode``) is perturbed with :meth:`AugmentOptions.realistic` (stronger than
    training) and merged with real noise; ``y`` is the class index in ``library``.
    Entries whose class is not in ``library`` are left out.
    """
    opts = AugmentOptions.realistic() if options is None else AugmentOptions.coerce(options)
    if bank is None and opts.bank_noise > 0:
        bank = NoiseBank.load()
    lookup = {r: i for i, r in enumerate(library.refcodes)}
    blocks, labels = [], []
    for j, entry in enumerate(heldout.entries):
        cls = lookup.get(str(entry.get("class_refcode", "")))
        if cls is None or heldout.sticks(j).two_theta.size == 0:
            continue
        # Seeds offset by 1e6 so held-out spectra never repeat a training class's stream.
        blocks.append(synthesize_class(heldout, j, per_entry, seed=seed + 1_000_000, options=opts,
                                       bank=bank, gate=gate))
        labels.append(np.full(per_entry, cls, np.int32))
    if not blocks:
        return np.empty((0, GRID_POINTS), np.float32), np.empty(0, np.int32)
    return np.concatenate(blocks), np.concatenate(labels)


# -- new spectra every epoch -----------------------------------------------------------
def epoch_plan(n_classes: int, per_class: int, group: int, batch_size: int, seed: int,
               epoch: int) -> list[np.ndarray]:
    """The classes of each batch of one epoch: every class ``ceil(per_class / group)``
    times, shuffled by ``(seed, epoch)``, ``batch_size // group`` draws a batch (each draw
    is ``group`` spectra of one class: a handful per call keeps synthesis cheap)."""
    draws = max(1, -(-per_class // max(group, 1)))
    order = np.random.default_rng([seed, epoch, 1]).permutation(np.tile(np.arange(n_classes), draws))
    per_batch = max(1, batch_size // max(group, 1))
    return [order[a:a + per_batch] for a in range(0, order.size, per_batch)]


def epoch_batch(
    library: Library,
    classes: np.ndarray,
    group: int,
    *,
    seed: int,
    epoch: int,
    batch: int,
    options: AugmentOptions,
    bank: NoiseBank | None,
    gate: GateConfig = GateConfig(),
) -> tuple[np.ndarray, np.ndarray]:
    """One batch: ``group`` fresh spectra of each class in ``classes``, drawn from
    ``(seed, epoch, batch, slot)``; returns X float32 (len(classes) * group, 4501), y int32."""
    X = np.empty((len(classes) * group, GRID_POINTS), np.float32)
    for k, c in enumerate(classes):
        X[k * group:(k + 1) * group] = synthesize_class(library, int(c), group, seed=(seed, epoch, batch, k),
                                                        options=options, bank=bank, gate=gate)
    return X, np.repeat(np.asarray(classes, np.int32), group)


def spectra_per_epoch(
    library: Library,
    per_class: int,
    *,
    seed: int,
    options: AugmentOptions | Mapping[str, Any] | str | None = None,
    bank: NoiseBank | None = None,
    batch_size: int = 256,
    group: int = 4,
    gate: GateConfig = GateConfig(),
    workers: int = 1,
    classes: Sequence[int] | None = None,
) -> Any:
    """A ``keras.utils.PyDataset`` of ``per_class`` new spectra of every class each epoch.

    Batches come from :func:`epoch_batch`; ``on_epoch_end`` moves to the next epoch's
    draws. ``workers`` > 1 synthesises batches in threads (numpy and the FFTs release the
    GIL for most of the work; processes would copy the library into every worker).
    ``classes`` restricts the draws to those library indices (labels stay library indices).
    """
    import keras

    opts = AugmentOptions.coerce(options)
    if bank is None and opts.bank_noise > 0:
        bank = NoiseBank.load()
    idx = np.arange(len(library)) if classes is None else np.asarray(classes, np.int64)

    class EpochSpectra(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__(workers=max(int(workers), 1), use_multiprocessing=False, max_queue_size=8)
            self.epoch = 0
            self._plan = epoch_plan(idx.size, per_class, group, batch_size, seed, 0)

        def __len__(self) -> int:
            return len(self._plan)

        def __getitem__(self, b: int) -> tuple[np.ndarray, np.ndarray]:
            X, y = epoch_batch(library, idx[self._plan[b]], group, seed=seed, epoch=self.epoch, batch=b,
                               options=opts, bank=bank, gate=gate)
            return X[..., None], y

        def on_epoch_end(self) -> None:
            self.epoch += 1
            self._plan = epoch_plan(idx.size, per_class, group, batch_size, seed, self.epoch)

    return EpochSpectra()
