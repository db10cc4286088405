"""``xrd-agent inspect FILE...``: what each scan file holds, without identifying anything.

One bad file never stops the others: its reason goes to stderr as ``FILE: reason``
and the exit status is 1 at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from xrd_agent.commands._scanfiles import ScanFiles, add_wavelength_argument, wavelength_from_args
from xrd_agent.errors import ScanError

if TYPE_CHECKING:
    from xrd_agent.scan import Scan


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="show format, ranges, radiation and completeness of scan files",
        description=(
            "Read scan files (Bruker RAW v1-v4, BRML, UXD, XRDML, .xy/.csv text) and print "
            "what each holds. Exit status 1 if any file could not be read."
        ),
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parser.add_argument("--json", action="store_true", help="one JSON object per line per file")
    add_wavelength_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        wavelength = wavelength_from_args(args)
    except ScanError as exc:
        print(exc.reason, file=sys.stderr)
        return 2
    render: Callable[[Scan, TextIO], None] = _print_json if args.json else _print_text
    files = ScanFiles(args.files, wavelength, hint=True)
    try:
        for _, scan in files:
            render(scan, sys.stdout)
            sys.stdout.flush()
    except BrokenPipeError:  # `xrd-agent inspect ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 1 if files.failed else 0


def _print_json(scan: Scan, out: TextIO) -> None:
    out.write(json.dumps(scan.summary(), ensure_ascii=False) + "\n")


def _angstrom(value: float | None) -> str:
    return f"{value:.5f} Å" if value is not None else "-"


def _print_text(scan: Scan, out: TextIO) -> None:
    w = scan.wavelength
    lines = [
        f"{scan.source_path}",
        f"  format      {scan.format} {scan.format_version}".rstrip(),
        f"  sample      {scan.sample_id or '-'}",
    ]
    if scan.measured_at or scan.operator:
        when = scan.measured_at.isoformat(sep=" ") if scan.measured_at else "-"
        lines.append(f"  measured    {when}" + (f" by {scan.operator}" if scan.operator else ""))
    if scan.instrument:
        lines.append(f"  instrument  {scan.instrument}")
    if scan.software:
        lines.append(f"  software    {scan.software}")
    if w is not None:
        parts = [f"anode {w.anode or '-'}", f"K-alpha1 {_angstrom(w.alpha1)}"]
        if w.alpha2:
            parts.append(f"K-alpha2 {_angstrom(w.alpha2)}" + (f" (ratio {w.ratio:g})" if w.ratio else ""))
        if w.alpha1 is None and w.average:
            parts.append(f"K-alpha average {_angstrom(w.average)}")
        lines.append("  radiation   " + ", ".join(parts))
    done = "yes" if scan.complete else "no (the instrument did not finish this scan)"
    lines.append(f"  complete    {done}")
    lines.append(f"  ranges      {len(scan.ranges)}")
    for number, rng in enumerate(scan.ranges, start=1):
        tt = rng.two_theta
        details = [f"{rng.points} points", f"2-theta {tt[0]:.4f} to {tt[-1]:.4f} deg"]
        if rng.step:
            details.append(f"step {rng.step:.5g} deg")
        if rng.time_per_step:
            details.append(f"{rng.time_per_step:g} s/step")
        if rng.scan_type:
            details.append(rng.scan_type)
        if rng.kv and rng.ma:
            details.append(f"{rng.kv:g} kV {rng.ma:g} mA")
        lines.append(f"    {number}: " + ", ".join(details))
    out.write("\n".join(lines) + "\n")
