"""``xrd-agent library``: build a reference library, list it, show one entry."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from xrd_agent.errors import LibraryError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("library", help="build, list and inspect reference libraries",
                                   description="Build, list and inspect reference libraries of simulated patterns.")
    sub = parser.add_subparsers(dest="library_command", metavar="ACTION")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])

    build = sub.add_parser("build", help="simulate patterns from CoRE MOF 2019 or a folder of CIFs")
    src = build.add_mutually_exclusive_group(required=True)
    src.add_argument("--source", choices=["core-mof"], help="build from the core-mof package (CoRE MOF 2019)")
    src.add_argument("--cif-dir", metavar="DIR", help="build from every *.cif in DIR (any symmetry)")
    build.add_argument("--select", choices=["default", "full"], default="default",
                       help="default: the 1,012-class selection; full: every CoRE 2019 stem (~10,500)")
    build.add_argument("--out", required=True, metavar="DIR", help="library folder to write")
    build.add_argument("--workers", type=int, default=None, metavar="N", help="worker processes (default: CPUs)")
    build.add_argument("--limit", type=int, default=None, metavar="N", help="at most N classes (trial builds)")
    build.add_argument("--quiet", action="store_true", help="no progress bar")
    build.add_argument("--two-theta", nargs=2, type=float, metavar=("MIN", "MAX"), default=None,
                       help="--cif-dir: the 2-theta range of the lab's scans (deg; default 1.5 80): the sticks "
                            "and the fit table cover its d-spacings")
    build.add_argument("--wavelength", default="Cu", metavar="ANODE_OR_ANGSTROM",
                       help="--cif-dir: radiation of that range, an anode (Cu, Co, Mo ...) or K-alpha1 in angstrom")
    build.set_defaults(func=_build)

    table = sub.add_parser("fit-table", help="write fit.npz (reflections for the physics check) for a built library",
                           description="Reflections as d-spacings with absolute |F|^2 and the cell mass, for "
                                       "the physics check and weight fractions; classes and their order do "
                                       "not change. CIFs from --cif-dir, else from the core-mof package.")
    table.add_argument("--library", metavar="DIR", required=True, help="library folder to extend")
    table.add_argument("--cif-dir", metavar="DIR", default=None, help="folder of the library's CIFs")
    table.add_argument("--two-theta", nargs=2, type=float, metavar=("MIN", "MAX"), default=(1.5, 50.0),
                       help="2-theta range to cover (deg; default 1.5 50)")
    table.add_argument("--wavelength", default="Cu", metavar="ANODE_OR_ANGSTROM", help="radiation of that range")
    table.add_argument("--workers", type=int, default=None, metavar="N", help="worker processes (default: CPUs)")
    table.set_defaults(func=_fit_table)

    relabel = sub.add_parser("relabel", help="apply the names table (names.toml) to a built library",
                             description="Rename classes from the curated names table without simulating "
                                         "again; the classes and their order do not change.")
    relabel.add_argument("--library", metavar="DIR", required=True, help="library folder to update")
    relabel.set_defaults(func=_relabel)

    niggli = sub.add_parser("niggli", help="store the Niggli cells that group classes into materials",
                            description="Read each class's CIF from core-mof again (no simulation) and write "
                                        "niggli.json beside the library: the reduced cells of the held-out "
                                        "rule, from which xrd-agent groups classes into materials.")
    niggli.add_argument("--library", metavar="DIR", required=True, help="library folder to update")
    niggli.add_argument("--workers", type=int, default=None, metavar="N", help="parallel processes")
    niggli.add_argument("--quiet", action="store_true", help="no progress bar")
    niggli.set_defaults(func=_niggli)

    info = sub.add_parser("info", help="list the classes of a library")
    info.add_argument("--library", metavar="DIR", default=None, help="library folder (default: the shipped one)")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(func=_info)

    show = sub.add_parser("show", help="metadata and strongest peaks of one entry")
    show.add_argument("name", metavar="NAME_OR_REFCODE")
    show.add_argument("--library", metavar="DIR", default=None, help="library folder (default: the shipped one)")
    show.add_argument("--peaks", type=int, default=10, metavar="N", help="how many strongest peaks to list")
    show.add_argument("--png", metavar="FILE", default=None, help="also plot pattern and sticks to FILE")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=_show)


def _build(args: argparse.Namespace) -> int:
    from xrd_agent.library.build import build_from_cif_dir, build_from_coremof, default_workers

    workers = args.workers or default_workers()
    command = " ".join(["xrd-agent", *sys.argv[1:]]) if sys.argv and sys.argv[0] else None
    if args.cif_dir:
        report = build_from_cif_dir(args.cif_dir, args.out, workers=workers, progress=not args.quiet,
                                    command=command, two_theta=tuple(args.two_theta) if args.two_theta else None,
                                    wavelength=_wavelength(args.wavelength))
    else:
        report = build_from_coremof(args.out, select=args.select, workers=workers, limit=args.limit,
                                    progress=not args.quiet, command=command)
    for item in report.skipped:
        print(f"skipped {item['source']}: {item['reason']}", file=sys.stderr)
    held = f", held-out {len(report.heldout)}" if report.heldout is not None else ""
    print(f"wrote {args.out}: {len(report.library)} classes{held}, {len(report.skipped)} CIFs skipped, "
          f"{report.seconds:.0f} s")
    return 0


def _fit_table(args: argparse.Namespace) -> int:
    from xrd_agent.library.build import default_workers
    from xrd_agent.library.fitdata import build_fit_table

    table = build_fit_table(args.library, cif_dir=args.cif_dir, two_theta=tuple(args.two_theta),
                            wavelength=_wavelength(args.wavelength), workers=args.workers or default_workers())
    print(f"wrote {args.library}/fit.npz: {len(table)} classes, {table.d.size} reflections, "
          f"d {table.d_min:.3f}-{table.d_max:.2f} angstrom")
    return 0


def _wavelength(text: str) -> float:
    from xrd_agent.scan import ANODE_LINES

    key = text.strip().capitalize()
    if key in ANODE_LINES:
        return ANODE_LINES[key][0]
    try:
        value = float(text)
    except ValueError:
        raise LibraryError(f"--wavelength {text!r} is neither an anode ({', '.join(ANODE_LINES)}) "
                           "nor a wavelength in angstrom") from None
    if not 0.3 <= value <= 3.0:
        raise LibraryError(f"--wavelength {value:g} is not a laboratory X-ray line in angstrom")
    return value


def _relabel(args: argparse.Namespace) -> int:
    from xrd_agent.library.build import relabel

    named, changed = relabel(args.library)
    print(f"{args.library}: {named} classes carry a common name, {changed} names changed")
    return 0


def _niggli(args: argparse.Namespace) -> int:
    from xrd_agent.library.build import default_workers, store_niggli

    stored, failed = store_niggli(args.library, workers=args.workers or default_workers(), progress=not args.quiet)
    print(f"{args.library}: {stored} Niggli cells stored, {len(failed)} CIFs failed")
    for reason in failed:
        print(f"  {reason}", file=sys.stderr)
    return 0 if not failed else 1


def _load(path: str | None):
    from xrd_agent.library.artifact import Library

    return Library.load(path)


def _info(args: argparse.Namespace) -> int:
    lib = _load(args.library)
    held = lib.heldout()
    if args.json:
        doc = {
            "path": str(lib.path), "version": lib.version, "count": len(lib),
            "heldout_count": len(held) if held is not None else 0,
            "heldout": _heldout_summary(held),
            "entries": [{"index": i, "refcode": e["refcode"], "name": e.get("name") or e["refcode"],
                         "aliases": e.get("aliases", []), "formula": e.get("formula"), "metals": e.get("metals", [])}
                        for i, e in enumerate(lib.entries)],
        }
        _emit(json.dumps(doc, indent=1))
        return 0
    summary = _heldout_summary(held)
    lines = [f"{lib.path}  version {lib.version}  {len(lib)} classes"
             + (f", {summary['count']} held-out determinations of {summary['stems']} stems "
                f"({summary['same_phase']} same phase, {summary['different_phase']} different phase)"
                if summary else "")]
    for i, e in enumerate(lib.entries):
        name = e.get("name") or e["refcode"]
        label = f"{name} ({e['refcode']})" if name != e["refcode"] else name
        lines.append(f"{i:5d}  {label:40s} {e.get('formula', '')}")
    _emit("\n".join(lines))
    return 0


def _emit(text: str) -> None:
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:  # `xrd-agent library info | head`: the reader left, nothing is lost
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps interpreter shutdown quiet


def _heldout_summary(held: Any) -> dict[str, int] | None:
    if held is None:
        return None
    same = sum(1 for e in held.entries if e.get("same_phase"))
    return {"count": len(held), "stems": len({e.get("class_refcode") for e in held.entries}),
            "same_phase": same, "different_phase": len(held) - same}


def _show(args: argparse.Namespace) -> int:
    import numpy as np

    lib = _load(args.library)
    i = lib.index_of(args.name)
    e = lib.entries[i]
    st = lib.sticks(i)
    order = np.argsort(st.intensity)[::-1][: max(0, args.peaks)]
    order = order[np.argsort(st.two_theta[order])]
    lam = float(lib.manifest.get("wavelength", {}).get("angstrom", 1.5406))
    peaks = [{"two_theta": round(float(st.two_theta[j]), 3),
              "d": round(lam / (2 * np.sin(np.radians(float(st.two_theta[j]) / 2))), 3),
              "intensity": round(float(st.intensity[j]) * 100, 1), "hkl": [int(v) for v in st.hkl[j]]}
             for j in order]
    if args.png:
        _plot(lib, i, args.png)
    if args.json:
        print(json.dumps({"index": i, **e, "peaks": peaks}, indent=1))
        return 0
    print(f"[{i}] {e.get('name') or e['refcode']}  refcode {e['refcode']}")
    for key in ("aliases", "formula", "metals", "cell", "volume", "atoms", "space_group", "variants", "doi", "source"):
        if e.get(key) not in (None, [], ""):
            value = ", ".join(map(str, e[key])) if isinstance(e[key], list) else e[key]
            print(f"  {key:12s} {value}")
    print(f"  strongest {len(peaks)} peaks (Cu K-alpha1):")
    print("    2theta/deg    d/A    I/%   hkl")
    for p in peaks:
        print(f"    {p['two_theta']:9.3f} {p['d']:7.3f} {p['intensity']:6.1f}   {' '.join(map(str, p['hkl']))}")
    if args.png:
        print(f"  plot written to {args.png}")
    return 0


def _plot(lib: Any, i: int, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xrd_agent.pattern import MODEL_GRID

    e, st = lib.entries[i], lib.sticks(i)
    fig, ax = plt.subplots(figsize=(9, 3.6), dpi=120)
    ax.plot(MODEL_GRID, lib.patterns[i], lw=0.9, color="tab:blue", label="simulated pattern")
    ax.vlines(st.two_theta, 0, st.intensity, color="tab:red", lw=0.7, alpha=0.7, label="reflections")
    ax.set_xlim(MODEL_GRID[0], MODEL_GRID[-1])
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("2θ / ° (Cu Kα1)")
    ax.set_ylabel("relative intensity")
    ax.set_title(f"{e.get('name') or e['refcode']} ({e['refcode']}, {e.get('formula', '')})")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(path)
    except OSError as exc:
        raise LibraryError(f"cannot write the plot to {path}: {exc.strerror}") from None
    finally:
        plt.close(fig)
