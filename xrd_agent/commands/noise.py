"""``xrd-agent noise build|add|show``: the bank of real baseline noise used in training.

``build`` makes a new bank from scan files (the shipped one was built from the real
fixtures, see docs/preprocessing.md). ``add`` puts a lab's own scans into a bank: by
default the file ``noise_bank.npz`` in the state directory, started from a copy of the
shipped bank; it never writes into the installed package unless ``--bank`` names it.
One unreadable or peak-only file never stops the others: its reason goes to stderr
and the exit status is 1 at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "noise",
        help="build, extend or show a noise bank (real baseline noise for training)",
        description="Cut the peak-free baseline noise out of real scans for training augmentation.",
    )
    sub = parser.add_subparsers(dest="noise_command", metavar="ACTION", required=True)

    build = sub.add_parser("build", help="make a new bank from scan files")
    build.add_argument("files", nargs="+", type=Path, metavar="FILE")
    build.add_argument("--out", type=Path, required=True, metavar="PATH", help="bank file to write (.npz)")
    _common(build)
    build.set_defaults(func=run_build)

    add = sub.add_parser("add", help="add scans to a bank (default: STATE_DIR/noise_bank.npz)")
    add.add_argument("files", nargs="+", type=Path, metavar="FILE")
    add.add_argument("--bank", type=Path, metavar="PATH",
                     help="bank file to extend; created from the shipped bank if missing")
    add.add_argument("--config", metavar="FILE", help="TOML configuration (for service.state_dir)")
    add.add_argument("--state", metavar="DIR", help="state directory [service.state_dir]")
    _common(add)
    add.set_defaults(func=run_add)

    show = sub.add_parser("show", help="print a bank's provenance")
    show.add_argument("--bank", type=Path, metavar="PATH", help="bank file (default: the shipped one)")
    show.add_argument("--json", action="store_true", help="the manifest as JSON")
    show.set_defaults(func=run_show)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--licence", metavar="TEXT",
                        help="licence of the scans (default: from a README.md table beside them, "
                             "else 'unspecified')")
    parser.add_argument("--wavelength", metavar="ANODE_OR_ANGSTROM",
                        help="radiation for files that do not say (Cu, Co, ... or K-alpha1 in angstrom)")


def _add_files(bank, files: list[Path], args: argparse.Namespace) -> int:
    """Add each file; print one line per file. Returns the number of failures."""
    from xrd_agent.errors import ScanError
    from xrd_agent.model.noise import licences_from_readme
    from xrd_agent.readers import parse_wavelength, read_scan

    wavelength = parse_wavelength(args.wavelength) if args.wavelength else None
    licences = licences_from_readme(files)
    failed = 0
    for path in files:
        try:
            scan = read_scan(path, wavelength=wavelength)
            source = bank.add(scan, licence=args.licence or licences.get(path.name))
        except ScanError as exc:
            failed += 1
            print(f"{path}: {exc.reason}", file=sys.stderr)
            continue
        print(f"{path.name}: {source.segments} segments, {source.points} points, "
              f"noise sigma {source.scale:.2e} of the strongest peak")
    return failed


def run_build(args: argparse.Namespace) -> int:
    from xrd_agent.model.noise import NoiseBank

    bank = NoiseBank(manifest={"build_command": "xrd-agent noise build --out "
                                                  f"{args.out.name} " + " ".join(p.name for p in args.files)})
    failed = _add_files(bank, args.files, args)
    if not len(bank):
        print("no noise taken from any file: nothing written", file=sys.stderr)
        return 1
    bank.save(args.out)
    print(f"wrote {args.out}: {len(bank)} segments, {bank.points} points from {len(bank.sources)} scans")
    return 1 if failed else 0


def run_add(args: argparse.Namespace) -> int:
    from xrd_agent.config import load_config
    from xrd_agent.model.noise import NoiseBank

    path = args.bank
    if path is None:
        state = args.state or load_config(args.config).service.state_dir
        path = Path(state) / "noise_bank.npz"
    bank = NoiseBank.load(path) if path.exists() else NoiseBank.load()  # start from the shipped bank
    failed = _add_files(bank, args.files, args)
    bank.save(path)
    print(f"wrote {path}: {len(bank)} segments, {bank.points} points from {len(bank.sources)} scans")
    return 1 if failed else 0


def run_show(args: argparse.Namespace) -> int:
    from xrd_agent.model.noise import NoiseBank

    bank = NoiseBank.load(args.bank)
    if args.json:
        print(json.dumps(bank.manifest, indent=1))
        return 0
    print(f"{bank.path}: {len(bank)} segments, {bank.points} points")
    for s in bank.sources:
        print(f"  {s['file']}  sha256 {s['sha256'][:12]}  {s['segments']} segments  "
              f"sigma {s['sigma']:.2e}  licence: {s['licence']}")
    return 0
