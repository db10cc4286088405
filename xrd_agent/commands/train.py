"""``xrd-agent train``: train the identification network on a reference library.

Writes a model folder (``model.keras``, ``manifest.json``, ``history.json``,
``training.png``) that ``identify``, ``evaluate`` and the service load with ``--model``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    from xrd_agent.model.network import ARCHITECTURES
    from xrd_agent.model.train import TrainConfig

    d = TrainConfig()
    parser = subparsers.add_parser(
        "train",
        help="train the CNN on a reference library (seeded, reproducible)",
        description="Synthesise augmented spectra from every library pattern and train the 1-D CNN "
                    "(Wang et al. 2020 by default). GPU when Keras's backend sees one, CPU otherwise; "
                    "KERAS_BACKEND=jax trains where only JAX sees the GPU, and the model folder "
                    "loads in TensorFlow unchanged.",
    )
    parser.add_argument("--library", type=Path, default=None, metavar="DIR",
                        help="library folder (default: the library shipped with xrd-agent)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="model folder to write")
    parser.add_argument("--epochs", type=int, default=d.epochs, help=f"maximum epochs (default {d.epochs}; "
                        f"early stopping after {d.patience} without improvement)")
    parser.add_argument("--per-class", type=int, default=d.per_class,
                        help=f"synthetic spectra per class (default {d.per_class})")
    parser.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default=d.arch,
                        help="network: paper = Wang et al. 2020 (default), gap = global-average-pooling head")
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--learning-rate", type=float, default=d.learning_rate)
    parser.add_argument("--patience", type=int, default=d.patience)
    parser.add_argument("--classes", type=int, default=None, metavar="N",
                        help="train on the first N library classes only (sweeps, quick checks)")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    parser.add_argument("--workers", type=int, default=d.workers,
                        help="processes that synthesise the spectra (same result for any number)")
    parser.add_argument("--augment", choices=("default", "realistic", "instrument"), default=d.augment_preset,
                        help="augmentation preset: default, realistic (stronger: what another lab's scan "
                             "of the same MOF looks like) or instrument (realistic plus breathing cells, "
                             "pore solvent, capillary hump, beam-stop cut)")
    parser.add_argument("--regenerate", action="store_true",
                        help="draw new training spectra every epoch (--per-class of each class per epoch; "
                             "the validation set stays fixed) instead of one fixed set")
    parser.add_argument("--init-model", type=Path, default=None, metavar="DIR",
                        help="start from the weights of this model folder (same library classes): "
                             "fine-tuning")
    parser.add_argument("--no-bank-noise", action="store_true",
                        help="train without merging real baseline noise (no noise bank needed)")
    parser.add_argument("--max-minutes", type=float, default=0.0,
                        help="stop before an epoch would end past this many minutes of fitting (best "
                             "weights are kept); 0 = no limit")
    parser.add_argument("--monitor-heldout", action="store_true",
                        help="score the library's held-out determinations after each epoch (recorded in "
                             "the history for the accuracy-vs-epochs figure; never used to stop or select)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xrd_agent.library.artifact import Library
    from xrd_agent.model import artifact
    from xrd_agent.model.train import TrainConfig, train

    for name in ("epochs", "per_class", "batch_size"):
        if getattr(args, name) < 1:
            print(f"--{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    library = Library.load(args.library)
    if args.classes is not None:
        library = artifact.subset_library(library, args.classes)
    config = TrainConfig(arch=args.arch, epochs=args.epochs, per_class=args.per_class, seed=args.seed,
                         batch_size=args.batch_size, learning_rate=args.learning_rate,
                         patience=args.patience, device=args.device, workers=max(1, args.workers),
                         augment_preset=args.augment, max_minutes=args.max_minutes,
                         regenerate=args.regenerate, init_model=str(args.init_model or ""),
                         augment={"bank_noise": 0.0} if args.no_bank_noise else {})
    monitor = None
    if args.monitor_heldout:
        from xrd_agent.model.dataset import realistic_heldout

        heldout = Library.load(args.library).heldout()
        if heldout is None:
            print("--monitor-heldout: the library has no heldout/ folder", file=sys.stderr)
            return 2
        monitor = {"heldout": realistic_heldout(library, heldout, 1, seed=7)}
    command = shlex.join(["xrd-agent", *sys.argv[1:]]) if sys.argv and sys.argv[0] else "xrd-agent train"
    train(library, config, args.out, command=command, monitor=monitor,
          emit=lambda line: print(line, file=sys.stderr, flush=True))
    return 0

