"""``xrd-agent identify FILE...``: Top-5 library MOFs, confidence, flags and CAM per scan.

The model is loaded once for all files and the readable scans are identified in one
batch. A file that cannot be read or identified costs one line on stderr; the others
carry on, and the exit status is 1 at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from xrd_agent.commands._scanfiles import ScanFiles, add_wavelength_argument, wavelength_from_args
from xrd_agent.errors import LibraryMismatch, ScanError
from xrd_agent.profiles import load_profiles, sample_id_for


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "identify",
        help="name the MOF in scan files (Top-5, confidence, flags, CAM regions)",
        description="Read scan files, preprocess them onto the model grid and identify them with the "
                    "CNN. Exit status 1 if any file could not be identified.",
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parser.add_argument("--json", action="store_true", help="one JSON object per line per scan")
    parser.add_argument("--top", type=int, default=None, metavar="K", help="candidates to list (default 5)")
    parser.add_argument("--model", type=Path, default=None, metavar="DIR",
                        help="model folder (default: the model shipped with xrd-agent)")
    parser.add_argument("--library", type=Path, default=None, metavar="DIR",
                        help="library folder the model was trained on (default: the one its model folder "
                             "records: its copy, else its path, else the shipped library)")
    parser.add_argument("--png", type=Path, default=None, metavar="FILE",
                        help="plot scan, best reference and CAM regions (one file per scan when several)")
    parser.add_argument("--elements", default=None, metavar="EL,EL",
                        help="elements or metals in the pot, e.g. Zn,C,N,O: materials with other metals are "
                             "demoted (config model.elements_mode)")
    add_wavelength_argument(parser)
    parser.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                        help="physics check: fit the leading candidates to the whole measured scan (cell, zero, "
                             "texture; composition). Seconds per scan; --no-verify for the network and peak "
                             "match alone (default: on here, config model.verify in the service)")
    parser.add_argument("--config", type=Path, default=None, metavar="FILE", help="xrd-agent TOML configuration")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default=None)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xrd_agent.config import load_config
    try:
        wavelength = wavelength_from_args(args)
    except ScanError as exc:
        print(exc.reason, file=sys.stderr)
        return 2
    if args.top is not None and not 1 <= args.top <= 50:
        print("--top must be between 1 and 50", file=sys.stderr)
        return 2
    elements = None
    if args.elements:
        from xrd_agent.elements import clean_elements
        try:
            elements = clean_elements(args.elements)
        except ValueError as exc:
            print(f"--elements: {exc}", file=sys.stderr)
            return 2
    files = ScanFiles(args.files, wavelength, profiles=list(load_profiles().values()))
    read = list(files)
    paths, scans = [p for p, _ in read], [s for _, s in read]
    failed = files.failed
    if not scans:
        return 1

    from xrd_agent.model.engine import Engine

    config = load_config(args.config)
    overrides: dict[str, Any] = {}
    if args.model is not None:
        overrides["model_dir"] = args.model
    if args.top is not None:
        overrides["top_k"] = args.top
    if args.device is not None:
        overrides["device"] = args.device
    overrides["verify"] = args.verify
    # Batch sizes: one call for all files, padded to the next warmed size.
    try:
        engine: Any = Engine.from_config(config, library=args.library, **overrides).load()
    except LibraryMismatch as exc:
        if args.library is None or args.model is not None:
            raise
        # A lab's own CIFs (library build --cif-dir) with no network trained on them: the
        # search-match over the library and the physics check (whole-pattern fits of the
        # candidates the ln-d prefilter proposes, composition) answer without a network.
        print(f"xrd-agent identify: no model is trained on {args.library} ({exc.args[0].split(';')[0]}); "
              "identifying by search-match" + (" and the physics check" if args.verify else ""), file=sys.stderr)
        engine = _search_match(config, args)
    results = engine.identify_many(scans, elements=[elements] * len(scans) if elements else None)
    try:
        for n, (path, scan, result) in enumerate(zip(paths, scans, results)):
            if isinstance(result, ScanError):
                failed += 1
                print(f"{path}: {result.reason}", file=sys.stderr)
                continue
            profile = files.profile_of(path)
            sample_id = sample_id_for(scan, profile)
            if args.json:
                _print_json(path, sample_id, profile.name if profile else None, result, sys.stdout)
            else:
                _print_text(path, sample_id, result, sys.stdout)
            sys.stdout.flush()
            if args.png is not None:
                target = args.png if len(scans) == 1 else args.png.with_name(
                    f"{args.png.stem}-{n + 1}-{path.stem}{args.png.suffix or '.png'}")
                plot(engine, scan, result, target)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 1 if failed else 0


def _search_match(config: Any, args: argparse.Namespace) -> Any:
    """The cosine engine over ``args.library``, with the physics check unless ``--no-verify``."""
    from dataclasses import replace

    from xrd_agent.service import logs
    from xrd_agent.service.engines import CosineEngine

    logs.configure("warning")  # the engine's log lines go to stderr: stdout is the answer (--json)
    model = replace(config.model, library_dir=str(args.library), verify=bool(args.verify),
                    top_k=args.top if args.top is not None else config.model.top_k)
    return CosineEngine(replace(config, model=model)).load()


def _print_json(path: Path, sample_id: str, profile: str | None, result: Any, out: TextIO) -> None:
    doc = {"file": str(path), "sample_id": sample_id, "profile": profile, **result.to_dict()}
    out.write(json.dumps(_finite(doc), ensure_ascii=False, allow_nan=False) + "\n")


def _finite(value: Any) -> Any:
    """NaN/inf are not JSON: they become null."""
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _print_text(path: Path, sample_id: str, result: Any, out: TextIO) -> None:
    flags = ", ".join(sorted(f.value for f in result.flags)) or "none"
    cov = result.coverage
    out.write(f"{path}  (sample {sample_id or '-'})\n")
    out.write(f"  confidence {result.confidence:.2f}   flags: {flags}   "
              f"coverage {cov.first:.1f}-{cov.last:.1f} deg ({cov.fraction:.0%})   "
              f"noise gate {'applied' if result.gate.applied else 'not applied'}\n")
    if result.extra.get("elements"):
        out.write(f"  elements in the pot: {', '.join(result.extra['elements'])}\n")
    cryst = getattr(result, "crystallinity", None)
    if cryst is not None and cryst.fraction == cryst.fraction:
        out.write(f"  crystalline fraction {cryst.fraction:.2f} +- {cryst.uncertainty:.2f}\n")
    width = max([len(c.name) for c in result.top] + [8])
    fitted = any(c.fit for c in result.top)
    fit_head = f"  {'post':>5}  {'Rwp':>5} {'(bg)':>6}  {'cell change a/b/c %':>20}" if fitted else ""
    out.write(f"  {'#':>2}  {'material':<{width}}  {'p':>6}{fit_head}  determinations (refcode p)\n")
    for c in result.top:
        dets = [f"{d.refcode} {d.probability:.3f}" for d in c.determinations if d.probability >= 0.001] or [c.refcode]
        shown = ", ".join(dets[:4]) + (f", +{len(dets) - 4}" if len(dets) > 4 else "")
        fit = ""
        if fitted:
            if c.fit:
                ch = c.fit["cell_change"]
                fit = (f"  {c.fit['posterior']:>5.2f}  {c.fit['rwp']:>5.3f} ({c.fit['rwp_background']:>4.2f})"
                       f"  {ch[0]:>+6.2f} {ch[1]:>+6.2f} {ch[2]:>+6.2f}")
            else:
                fit = f"  {'-':>5}  {'-':>5} {'':>6}  {'-':>20}"
        out.write(f"  {c.rank:>2}  {c.name:<{width}}  {c.probability:>6.3f}{fit}  {shown}\n")
    if result.physics is not None:
        ph = result.physics
        verdict = "fits" if ph["fits"] else "nothing in the library fits"
        out.write(f"  physics check: best fit explains {ph['explained']:.0%} of the signal ({verdict}), "
                  f"{ph['seconds']:.2f} s\n")
        if result.composition:
            parts = []
            for p in result.composition:
                wf = p["weight_fraction"]
                share = (f"{wf:.0%}" + (f" +- {p['uncertainty']:.0%}" if p["uncertainty"] is not None else "")
                         if wf is not None else "weight fraction n/a")
                parts.append(f"{p['name']} ({p['refcode']}) {share}")
            out.write(f"  composition: {'; '.join(parts)}\n")
    if result.cam_regions:
        regions = ", ".join(f"{r.start:.2f}-{r.end:.2f} ({r.weight:.0%})" for r in result.cam_regions)
        out.write(f"  decided by 2-theta regions: {regions}\n")
    out.write("\n")


def plot(engine: Any, scan: Any, result: Any, target: Path) -> None:
    """The scan on the model grid, the top reference below it, CAM regions shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from xrd_agent import preprocess
    from xrd_agent.pattern import MODEL_GRID

    pattern = preprocess.prepare(scan, engine.gate)
    best = result.top[0]
    ref = engine.library_.patterns16[engine.library_.refcodes.index(best.refcode)].astype(np.float32)
    fig, ax = plt.subplots(figsize=(10, 4))
    y = np.where(pattern.mask, pattern.intensity, np.nan)
    ax.plot(MODEL_GRID, y, lw=0.8, color="black", label=f"scan {scan.source_path.name}")
    ax.plot(MODEL_GRID, -ref, lw=0.8, color="tab:blue", label=f"reference {best.refcode} (inverted)")
    for r in result.cam_regions:
        ax.axvspan(r.start - 0.05, r.end + 0.05, color="tab:red", alpha=0.15 + 0.6 * r.weight, lw=0)
    ax.axhline(0, color="grey", lw=0.5)
    flags = ", ".join(sorted(f.value for f in result.flags)) or "no flags"
    ax.set(xlabel="2θ (deg, Cu Kα1)", ylabel="normalised intensity", xlim=(MODEL_GRID[0], MODEL_GRID[-1]),
           title=f"{best.name}  p={best.probability:.2f}  confidence={result.confidence:.2f}  ({flags}); "
                 "red: CAM regions")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=110)
    plt.close(fig)
