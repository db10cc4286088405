"""Scan readers, one module per format family, behind one registry.

Every reader module offers the same five names::

    FORMAT: str                      # "bruker_raw", "bruker_raw4", "brml", ...
    EXTENSIONS: tuple[str, ...]      # lower-case, with dot
    sniff(head: bytes) -> bool       # the first <= 4096 bytes carry this format's magic
    read(path, data, sha256) -> Scan # raises ScanError subclasses only
    is_complete(path) -> bool        # the file holds everything its headers promise

The registry below is data: module names in sniffing priority (binary magics first,
text last), imported only when needed. A file is given to the first module whose
``sniff`` accepts its head; failing that, to the first whose extensions match.
"""

from __future__ import annotations

import importlib
from functools import cache
from pathlib import Path
from types import ModuleType

from xrd_agent.errors import ScanError, TruncatedScan, UnknownWavelength, UnsupportedFormat
from xrd_agent.readers import _common
from xrd_agent.scan import Scan, Wavelength

#: Reader modules under ``xrd_agent.readers``, in sniffing priority.
READERS: tuple[str, ...] = ("raw4", "raw", "brml", "xrdml", "uxd", "text")

__all__ = [
    "READERS",
    "detect_format",
    "formats",
    "is_complete",
    "parse_wavelength",
    "read_scan",
    "reader_for",
    "scan_from_bytes",
]


def parse_wavelength(text: str) -> Wavelength:
    """``"Cu"`` (an anode: its tabulated lines) or ``"1.5406"`` (K-alpha1 in angstrom).

    What ``--wavelength`` flags and ``default_anode`` settings accept.
    """
    value = text.strip()
    try:
        number = float(value)
    except ValueError:
        return Wavelength.for_anode(value)  # UnknownWavelength for an unknown anode
    if not 0.1 <= number <= 5.0:
        raise UnknownWavelength(f"{value} angstrom is not a laboratory X-ray wavelength (0.1 to 5)")
    return Wavelength(alpha1=number)


@cache
def _module(name: str) -> ModuleType | None:
    """Import one reader module; None if it is not part of this installation yet."""
    qualified = f"{__name__}.{name}"
    try:
        return importlib.import_module(qualified)
    except ModuleNotFoundError as exc:
        if exc.name == qualified:
            return None
        raise


def _modules() -> list[ModuleType]:
    return [m for m in (_module(name) for name in READERS) if m is not None]


def formats() -> dict[str, tuple[str, ...]]:
    """Every readable format and its file extensions, in sniffing priority."""
    return {m.FORMAT: tuple(m.EXTENSIONS) for m in _modules()}


def _choose(head: bytes, path: Path) -> ModuleType:
    modules = _modules()
    for module in modules:
        if module.sniff(head):
            return module
    suffix = path.suffix.lower()
    for module in modules:
        if suffix in module.EXTENSIONS:
            return module
    known = ", ".join(sorted({ext for m in modules for ext in m.EXTENSIONS}))
    raise UnsupportedFormat(
        f"not a scan format xrd-agent reads (no known file signature, and '{suffix or 'no extension'}' "
        f"is not one of {known})",
        path,
    )


def reader_for(path: str | Path) -> ModuleType:
    """The reader module that would read ``path`` (sniffs its first bytes)."""
    path = Path(path)
    return _choose(_common.read_head(path), path)


def detect_format(path: str | Path) -> str:
    """The format name of ``path`` (for example ``"bruker_raw4"``), by content, then extension."""
    return reader_for(path).FORMAT


def is_complete(path: str | Path) -> bool:
    """Whether the file holds everything its headers promise. Never raises."""
    try:
        return bool(reader_for(path).is_complete(Path(path)))
    except (ScanError, OSError, ValueError):
        return False


def read_scan(
    path: str | Path,
    *,
    wavelength: Wavelength | None = None,
    max_bytes: int = _common.DEFAULT_MAX_BYTES,
) -> Scan:
    """Read one scan file into a validated :class:`Scan`.

    Refuses folders, links, devices and files over ``max_bytes``; reads the bytes
    once (the sha256 is of exactly those bytes). If the file does not say which
    radiation was used, ``wavelength`` applies (the caller passes its profile's or
    configuration's default); with neither, :class:`UnknownWavelength` is raised.
    Every error is a :class:`ScanError` whose ``reason`` a chemist can act on.
    """
    path = Path(path)
    return scan_from_bytes(_common.read_bytes(path, max_bytes), path, wavelength=wavelength)


def scan_from_bytes(data: bytes, path: str | Path, *, wavelength: Wavelength | None = None) -> Scan:
    """What :func:`read_scan` does once it holds the file's bytes (``path`` names the file
    in the Scan and picks the reader when no signature matches)."""
    path = Path(path)
    if not data:
        raise TruncatedScan("the file is empty (0 bytes); the instrument may still be writing it", path)
    module = _choose(data[: _common.HEAD_BYTES], path)
    try:
        scan = _common.validate_scan(module.read(path, data, _common.sha256_hex(data)))
    except ScanError as exc:
        if exc.path is None:
            raise type(exc)(exc.reason, path) from None
        raise
    if scan.wavelength is None or scan.wavelength.primary is None:
        if wavelength is None or wavelength.primary is None:
            raise UnknownWavelength(
                "the file does not say which X-ray wavelength was used; give one "
                "(anode such as Cu, or a wavelength in angstrom) in the profile or configuration",
                path,
            )
        scan = scan.with_wavelength(wavelength)
    return scan
