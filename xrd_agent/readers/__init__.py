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
from dataclasses import dataclass
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
    "Reading",
    "detect_format",
    "formats",
    "is_complete",
    "parse_wavelength",
    "read_file",
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
def _modules() -> list[ModuleType]:
    """The reader modules, imported on first use, in sniffing priority."""
    return [importlib.import_module(f"{__name__}.{name}") for name in READERS]


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


@dataclass(frozen=True, eq=False)
class Reading:
    """One version of a file, opened and read once: the (size, mtime_ns) the bytes came from,
    their sha256, and what the reader made of them (a Scan, before any default wavelength,
    or the error). Completeness comes from the same parse; the service keeps a Reading per
    file version so that the watcher's completeness check, the worker's read and a
    rejection's hash are one read of the file."""

    path: Path
    size: int  # -1 with mtime_ns -1: the file changed while it was read (matches no version)
    mtime_ns: int
    sha256: str | None  # None when no bytes could be read
    scan: Scan | None = None
    error: Exception | None = None  # a ScanError, or a reader bug (re-raised by scan_with)

    @property
    def complete(self) -> bool:
        """The file holds everything its headers promise (end marker, declared points)."""
        return self.scan is not None and self.scan.complete

    def scan_with(self, wavelength: Wavelength | None = None) -> Scan:
        """The Scan, with ``wavelength`` applied when the file does not say; raises what the read raised."""
        if self.error is not None:
            raise self.error
        assert self.scan is not None
        return _with_default_wavelength(self.scan, wavelength, self.path)


def read_file(path: str | Path, *, max_bytes: int = _common.DEFAULT_MAX_BYTES) -> Reading:
    """Open, read, hash and parse one file version, once. Never raises: errors are in the Reading."""
    path = Path(path)
    try:
        data, (size, mtime_ns) = _common.read_version(path, max_bytes)
    except ScanError as exc:
        return Reading(path, -1, -1, None, error=exc)
    except OSError as exc:
        return Reading(path, -1, -1, None, error=ScanError(f"the file cannot be read ({exc})", path))
    digest = _common.sha256_hex(data)
    try:
        scan = _parse(data, path, digest)
    except Exception as exc:  # noqa: BLE001 - a ScanError, or a reader bug the caller reports
        return Reading(path, size, mtime_ns, digest, error=exc)
    return Reading(path, size, mtime_ns, digest, scan=scan)


def is_complete(path: str | Path) -> bool:
    """Whether the file holds everything its headers promise. Never raises."""
    return read_file(path).complete


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
    return _with_default_wavelength(_parse(data, path, _common.sha256_hex(data) if data else ""), wavelength, path)


def _parse(data: bytes, path: Path, sha256: str) -> Scan:
    if not data:
        raise TruncatedScan("the file is empty (0 bytes); the instrument may still be writing it", path)
    module = _choose(data[: _common.HEAD_BYTES], path)
    try:
        return _common.validate_scan(module.read(path, data, sha256))
    except ScanError as exc:
        if exc.path is None:
            raise type(exc)(exc.reason, path) from None
        raise


def _with_default_wavelength(scan: Scan, wavelength: Wavelength | None, path: Path) -> Scan:
    if scan.wavelength is None or scan.wavelength.primary is None:
        if wavelength is None or wavelength.primary is None:
            raise UnknownWavelength(
                "the file does not say which X-ray wavelength was used; give one "
                "(anode such as Cu, or a wavelength in angstrom) in the profile or configuration",
                path,
            )
        scan = scan.with_wavelength(wavelength)
    return scan
