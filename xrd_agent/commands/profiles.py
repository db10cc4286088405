"""``xrd-agent profiles``: list the firmware profiles, or say which one claims a file.

Loading validates every profile, so this is also the command to check a profile
you wrote for your own D8 (``--dir my-profiles``) before the service starts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xrd_agent.profiles import FirmwareProfile


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "profiles",
        help="list the D8 firmware/export profiles (patterns, completeness, settle time)",
        description=(
            "List the firmware profiles: which files each D8 software variant writes, which it "
            "ignores, and how a finished file is recognised. Every profile is validated on load."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print the profiles as one JSON array")
    parser.add_argument(
        "--dir",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="also load the *.toml profiles in DIR (repeatable; same name replaces a bundled profile)",
    )
    parser.add_argument(
        "--match",
        nargs="+",
        metavar="FILE",
        help="say, for each file (name, or existing file: then by its content), which profile claims it",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except BrokenPipeError:  # `xrd-agent profiles --json | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _run(args: argparse.Namespace) -> int:
    from xrd_agent.profiles import load_profiles, profile_for_file

    profiles = load_profiles(extra_dirs=args.dir)
    if args.match:
        return _match(args.match, list(profiles.values()), args.json, profile_for_file)
    if args.json:
        print(json.dumps([p.to_dict() for p in profiles.values()], indent=2, ensure_ascii=False))
        return 0
    rows = [("NAME", "FORMATS", "WATCH", "COMPLETE BY", "SETTLE", "POLL")]
    for p in profiles.values():
        rows.append(
            (
                p.name,
                ",".join(p.formats),
                " ".join(p.watch),
                p.completeness,
                f"{p.settle_s:g} s",
                "yes" if p.polling else "no",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def _match(files: list[str], profiles: list[FirmwareProfile], as_json: bool, profile_for_file) -> int:
    from xrd_agent.profiles import format_of

    unmatched = 0
    results = []
    for name in files:
        fmt = format_of(name)
        profile = profile_for_file(name, profiles, format=fmt)
        ignored_by = [p.name for p in profiles if p.ignores(name)]
        if profile is None:
            unmatched += 1
        sample = profile.sample_from_filename(name) if profile else None
        results.append(
            {
                "file": name,
                "format": fmt,
                "profile": profile.name if profile else None,
                "ignored_by": ignored_by,
                "sample_from_filename": sample,
            }
        )
        if as_json:
            continue
        if profile is not None:
            extra = f" (sample from file name: {sample})" if sample else ""
            print(f"{name}: {profile.name}{f' [{fmt}]' if fmt else ''}{extra}")
        elif ignored_by:
            print(f"{name}: ignored as a temporary or lock file (by {', '.join(ignored_by)})")
        else:
            print(f"{name}: no profile watches this {'name' if fmt is None else fmt + ' file'}")
    if as_json:
        json.dump(results, sys.stdout, indent=2, ensure_ascii=False)
        print()
    return 1 if unmatched else 0
