"""The ``--wavelength`` option that every command reading scan files shares."""

from __future__ import annotations

import argparse

from xrd_agent.errors import ScanError
from xrd_agent.scan import Wavelength

HELP = "radiation for files that do not say (Cu, Co, Mo, ... or K-alpha1 in angstrom)"


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wavelength", metavar="ANODE_OR_ANGSTROM", help=HELP)


def from_args(args: argparse.Namespace) -> Wavelength | None:
    """The parsed ``--wavelength``; raises ``ScanError`` with a reason when it is not one."""
    from xrd_agent.readers import parse_wavelength

    if not args.wavelength:
        return None
    try:
        return parse_wavelength(args.wavelength)
    except ScanError as exc:
        raise ScanError(f"--wavelength {args.wavelength}: {exc.reason}") from None
