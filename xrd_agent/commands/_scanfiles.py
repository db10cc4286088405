"""What every command that reads scan files shares: the ``--wavelength`` option, and
reading each file so that a bad one costs one line on stderr, never the others."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from xrd_agent.errors import ScanError
from xrd_agent.scan import Scan, Wavelength

if TYPE_CHECKING:
    from xrd_agent.profiles import FirmwareProfile

HELP = "radiation for files that do not say (Cu, Co, Mo, ... or K-alpha1 in angstrom)"
WAVELENGTH_HINT = " (here: --wavelength Cu or --wavelength 1.5406)"


def add_wavelength_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wavelength", metavar="ANODE_OR_ANGSTROM", help=HELP)


def wavelength_from_args(args: argparse.Namespace) -> Wavelength | None:
    """The parsed ``--wavelength``; raises ``ScanError`` with a reason when it is not one."""
    from xrd_agent.readers import parse_wavelength

    if not args.wavelength:
        return None
    try:
        return parse_wavelength(args.wavelength)
    except ScanError as exc:
        raise ScanError(f"--wavelength {args.wavelength}: {exc.reason}") from None


class ScanFiles:
    """Iterate over the readable scans of ``paths``; ``failed`` counts the others.

    With ``profiles`` (firmware profiles), each file's profile is chosen the way the service
    chooses it (:func:`xrd_agent.profiles.profile_for_file`) and gives the radiation for
    files that do not record one, unless ``wavelength`` is given; :meth:`profile_of` says which.
    """

    def __init__(self, paths: Iterable[Path], wavelength: Wavelength | None, *, hint: bool = False,
                 profiles: Sequence[FirmwareProfile] = ()) -> None:
        self.paths = list(paths)
        self.wavelength = wavelength
        self.hint = hint
        self.profiles = tuple(profiles)
        self.failed = 0
        self._chosen: dict[Path, FirmwareProfile | None] = {}

    def profile_of(self, path: Path) -> FirmwareProfile | None:
        if path not in self._chosen:
            from xrd_agent.profiles import profile_for_file

            self._chosen[path] = profile_for_file(path, self.profiles) if self.profiles else None
        return self._chosen[path]

    def _wavelength_for(self, path: Path) -> Wavelength | None:
        if self.wavelength is not None:
            return self.wavelength
        profile = self.profile_of(path)
        try:
            return profile.wavelength() if profile is not None else None
        except ScanError:
            return None

    def __iter__(self) -> Iterator[tuple[Path, Scan]]:
        from xrd_agent.readers import read_scan

        for path in self.paths:
            try:
                yield path, read_scan(path, wavelength=self._wavelength_for(path))
            except ScanError as exc:
                self.failed += 1
                hint = WAVELENGTH_HINT if self.hint and exc.code == "unknown_wavelength" else ""
                print(f"{path}: {exc.reason}{hint}", file=sys.stderr)
            except Exception as exc:  # noqa: BLE001 - a reader bug must not hide the other files
                self.failed += 1
                print(f"{path}: unexpected {type(exc).__name__} while reading ({exc}); please report",
                      file=sys.stderr)
