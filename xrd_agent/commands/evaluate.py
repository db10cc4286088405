"""``xrd-agent evaluate``: Top-k tables and figures on the library's held-out determinations.

Compares the CNN with a cosine search-match and scikit-learn baselines, measures the
confidence and flags (held-out MOFs, non-MOF fixtures, amorphous scans), retrains
small models for the library-size and augmentation sweeps, and prints the crystallinity
and mixture tables (``--crystallinity-only`` / ``--mixtures-only``: those tables alone, no
model needed).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    from xrd_agent.model.evaluate import SWEEPS, EvalConfig

    d = EvalConfig()
    parser = subparsers.add_parser(
        "evaluate",
        help="accuracy tables and figures on held-out determinations (CNN vs baselines)",
        description="Writes results.json, results.md, nca.png, cam.png and sweeps.png into --out.",
    )
    parser.add_argument("--library", type=Path, default=None, metavar="DIR",
                        help="library with a heldout/ folder (default: the shipped library)")
    parser.add_argument("--model", type=Path, default=None, metavar="DIR",
                        help="model folder (default: the shipped model)")
    parser.add_argument("--out", type=Path, default=Path("evaluation"), metavar="DIR")
    parser.add_argument("--repeats", type=int, default=d.repeats,
                        help=f"realistic spectra per held-out entry (default {d.repeats})")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--baseline-per-class", type=int, default=d.baseline_per_class)
    parser.add_argument("--baselines", default=",".join(d.baselines),
                        help="comma-separated scikit-learn baselines, or 'none'")
    parser.add_argument("--sweep", choices=("none", *SWEEPS), default=d.sweep,
                        help="retraining sweeps over library size and spectra per class")
    parser.add_argument("--ablation", action="store_true",
                        help="also retrain with each augmentation switch off (7 small trainings)")
    parser.add_argument("--rerank-grid", action="store_true",
                        help="also tabulate rerank depth x power on realistic spectra of the library's own "
                             "entries (how the engine's RERANK_DEPTH/RERANK_POWER were chosen)")
    parser.add_argument("--crystallinity", type=int, default=240, metavar="N",
                        help="simulated products (held-out frameworks) for the crystallinity table (default 240)")
    parser.add_argument("--crystallinity-only", action="store_true",
                        help="print only the crystallinity table (simulated products and the measured scans "
                             "in tests/data); needs no model")
    parser.add_argument("--mixtures", type=int, default=20, metavar="N",
                        help="simulated two-phase mixtures (and as many single phases) from the byo-cif "
                             "structures for the mixture table; the physics check costs seconds per scan "
                             "(default 20; 0 leaves the table out)")
    parser.add_argument("--multiphase", type=int, default=12, metavar="N",
                        help="simulated products of three and of four phases (N of each) for the mixture "
                             "table (default 12; 0 leaves them out)")
    parser.add_argument("--mixtures-only", action="store_true",
                        help="print only the mixture table (simulated mixtures and the measured two-phase "
                             "scans in tests/data/real-scans/byo-cif); needs no model")
    parser.add_argument("--mixture-structures", default=None, metavar="STEMS",
                        help="comma-separated byo-cif CIF stems the simulated mixtures are drawn from and "
                             "checked against (default: all; a few small cells make a fast run)")
    parser.add_argument("--fixtures", type=Path, nargs="*", default=None, metavar="FILE",
                        help="non-MOF scans for the open-set table (default: the silicon and corundum "
                             "standards of the test fixtures, if present)")
    parser.add_argument("--real", type=Path, default=None, metavar="DIR",
                        help="score measured scans under DIR instead (needs --labels): material Top-1/Top-5, "
                             "flags and confident wrong names, without and with the labelled elements")
    parser.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                        help="with --real: the physics check of the candidates, as identify does (default on; "
                             "--no-verify scores the network and peak match alone)")
    parser.add_argument("--labels", type=Path, default=None, metavar="FILE",
                        help="TOML labels of the --real scans (see xrd_agent/model/evaluate_real.py)")
    parser.add_argument("--verify-sample", type=int, default=0, metavar="N",
                        help="with --materials: also N realistic held-out rows (drawn at random) through the "
                             "physics check, and the engine alone on the same rows (seconds per scan)")
    parser.add_argument("--verify-preset", choices=("realistic", "instrument"), default="realistic",
                        help="with --verify-sample: draw the checked rows from the realistic held-out "
                             "spectra (default) or from the held-out entries simulated as as-synthesized "
                             "scans (the training generator's instrument preset: cells several per cent off, "
                             "pore solvent, capillary hump, beam stop)")
    parser.add_argument("--materials", action="store_true",
                        help="only the material-level Top-1/Top-5 of the engine on the held-out set "
                             "(clean and realistic; no baselines, sweeps or figures)")
    parser.set_defaults(func=run)


def crystallinity_table(n: int, command: str) -> tuple[dict, str]:
    """The crystallinity table: simulated products with known fractions, and what the measured
    scans in tests/data get (xrd_agent.testing.crystallinity_eval)."""
    from xrd_agent.config import Config
    from xrd_agent.model.flags import policy_from
    from xrd_agent.testing import crystallinity_eval

    policy = policy_from(Config().model)
    sim = crystallinity_eval.simulated(n, policy=policy)
    root = Path(__file__).resolve().parents[2]
    real = crystallinity_eval.real_scans(crystallinity_eval.default_real_paths(root), policy)
    return {"simulated": sim, "real": real}, crystallinity_eval.markdown(sim, real, command)


def _stems(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(x.strip() for x in text.split(",") if x.strip())


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def mixture_table(n: int, command: str, structures: str | None = None, multiphase: int = 0) -> tuple[dict, str]:
    """The mixture table: simulated two-phase mixtures and single phases, products of three and
    four phases, and the measured two-phase scans of tests/data/real-scans/byo-cif
    (xrd_agent.testing.mixture_eval)."""
    from xrd_agent.testing import mixture_eval

    names = _stems(structures)
    checker = mixture_eval.checker_for_structures(mixture_eval.structures(names))
    sim = mixture_eval.simulated(n, names=names, checker=checker, emit=_progress) if n > 0 else None
    multi = []
    for k in (3, 4) if multiphase > 0 else ():
        try:
            multi.append(mixture_eval.multiphase(multiphase, k, names=names, checker=checker, emit=_progress))
        except ValueError as exc:  # fewer different structures than phases (--mixture-structures)
            _progress(f"  no {k}-phase mixtures: {exc}")
    real = mixture_eval.real()
    text = mixture_eval.markdown(sim, real, command)
    if multi:
        text += "\n" + mixture_eval.multiphase_markdown(multi)
    return {"simulated": sim, "multiphase": multi, "real": real}, text


def run(args: argparse.Namespace) -> int:
    command = shlex.join(["xrd-agent", *sys.argv[1:]])
    if args.mixture_structures is not None:
        from xrd_agent.testing.mixture_eval import structures

        try:  # a wrong name is said before any work, not after an evaluation's hours
            if len(structures(_stems(args.mixture_structures))) < 2:
                raise ValueError("a mixture needs at least two structures")
        except ValueError as exc:
            print(f"--mixture-structures: {exc}", file=sys.stderr)
            return 2
    if args.crystallinity_only or args.mixtures_only:
        if args.crystallinity_only:
            print(crystallinity_table(args.crystallinity, command)[1])
        if args.mixtures_only:
            print(mixture_table(args.mixtures, command, args.mixture_structures, args.multiphase)[1])
        return 0
    from xrd_agent.library.artifact import Library
    from xrd_agent.model.engine import Engine
    from xrd_agent.model.evaluate import EvalConfig, evaluate

    baselines = () if args.baselines.strip() in ("", "none") else tuple(
        b.strip() for b in args.baselines.split(",") if b.strip())
    config = EvalConfig(repeats=args.repeats, seed=args.seed, baseline_per_class=args.baseline_per_class,
                        baselines=baselines, sweep=args.sweep,
                        ablation=args.ablation, rerank_grid=args.rerank_grid)
    library = Library.load(args.library)
    # measured scans are scored as identify answers them: physics check on unless --no-verify
    engine = Engine(args.model, library, verify=bool(args.verify and args.real is not None)).load()
    fixtures = args.fixtures
    if fixtures is None:
        here = Path(__file__).resolve().parents[2] / "tests" / "data" / "fixtures" / "scans"
        fixtures = sorted(p for p in here.glob("*") if p.suffix.lower() in {".brml", ".raw", ".uxd", ".xrdml"})
    if args.real is not None or args.labels is not None:
        return _real(args, engine, command)
    if args.materials:
        from xrd_agent.model.evaluate import material_heldout

        table = material_heldout(engine, library, config, emit=lambda line: print(line, file=sys.stderr, flush=True),
                                 verify_sample=args.verify_sample, verify_preset=args.verify_preset)
        _write(args.out, "materials", table, command)
        return 0
    results = evaluate(engine, library, args.out, config, fixtures=fixtures, command=command,
                       emit=lambda line: print(line, file=sys.stderr, flush=True))
    cryst, table = crystallinity_table(args.crystallinity, command)
    results["crystallinity"] = cryst
    mtable = ""
    if args.mixtures > 0 or args.multiphase > 0:
        results["mixtures"], mtable = mixture_table(args.mixtures, command, args.mixture_structures, args.multiphase)
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=float) + "\n")
    with open(args.out / "results.md", "a", encoding="utf-8") as f:
        f.write("\n## Crystallinity\n\n" + table)
        if mtable:
            f.write("\n## Mixtures\n\n" + mtable)
    print(table)
    if mtable:
        print(mtable)
    return 0


def _write(out: Path, stem: str, results: dict, command: str) -> None:
    import json

    from xrd_agent.model.evaluate import markdown_materials
    from xrd_agent.model.evaluate_real import markdown_real

    text = (markdown_real if stem == "real" else markdown_materials)(results, command)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps({**results, "command": command}, indent=1, default=float) + "\n")
    (out / f"{stem}.md").write_text(text)
    print(text, end="")


def _real(args: argparse.Namespace, engine, command: str) -> int:
    from xrd_agent.errors import XrdAgentError
    from xrd_agent.model.evaluate_real import evaluate_real, load_labels

    if args.real is None or args.labels is None:
        print("--real DIR and --labels FILE go together", file=sys.stderr)
        return 2
    try:
        results = evaluate_real(engine, args.real, load_labels(args.labels))
    except XrdAgentError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    _write(args.out, "real", results, command)
    return 1 if results["summary"]["errors"] else 0
