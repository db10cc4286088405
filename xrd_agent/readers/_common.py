"""Helpers every reader shares: safe file access, hashing, binary layouts, value checks.

Readers are pure functions of the file bytes; everything that touches the file system
or decides whether a :class:`~xrd_agent.scan.Scan` is trustworthy lives here, once.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import os
import stat
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xrd_agent.errors import CorruptScan, NotAScanFile, TruncatedScan, UnsafeScan
from xrd_agent.scan import Scan, Wavelength

#: Bytes a reader's ``sniff`` sees.
HEAD_BYTES = 4096
#: Default refusal size: no diffractometer export comes near this.
DEFAULT_MAX_BYTES = 256 * 2**20
#: Refused before allocating: 10 million points is 0.00001 deg steps over 100 deg.
MAX_POINTS_PER_RANGE = 10_000_000
#: Refused before allocating: a D8 method with more ranges than this is not a powder scan.
MAX_RANGES = 10_000
#: A 2-theta outside this interval (deg) is not an angle a goniometer reached.
TWO_THETA_LIMITS = (-360.0, 360.0)


# --------------------------------------------------------------------------- files


def _check_regular(path: Path) -> os.stat_result:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise NotAScanFile("the file does not exist", path) from None
    except OSError as exc:
        raise NotAScanFile(f"the file cannot be examined ({exc.strerror or exc})", path) from None
    if stat.S_ISLNK(st.st_mode):
        raise NotAScanFile("this is a symbolic link; point to the scan file itself", path)
    if stat.S_ISDIR(st.st_mode):
        raise NotAScanFile("this is a folder, not a scan file", path)
    if not stat.S_ISREG(st.st_mode):
        raise NotAScanFile("this is not a regular file (device, pipe or socket)", path)
    return st


def read_bytes(path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Read a regular file whole, refusing links, folders, devices and oversized files.

    The file is checked again after opening, so a file swapped for a link or a pipe
    between the check and the read is refused too.
    """
    return read_version(path, max_bytes)[0]


def _open(path: Path) -> int:
    """A read-only descriptor of a regular file; links are not followed, even if swapped in
    between the check and the open."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise NotAScanFile(f"the file cannot be opened ({exc.strerror or exc})", path) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotAScanFile("this is not a regular file", path)
    return fd


def read_head(path: str | Path, size: int = HEAD_BYTES) -> bytes:
    """The first ``size`` bytes of a regular file (for sniffing), with the same refusals."""
    path = Path(path)
    _check_regular(path)
    fd = _open(path)
    try:
        return os.read(fd, size)
    except OSError as exc:
        raise NotAScanFile(f"the file cannot be read ({exc.strerror or exc})", path) from None
    finally:
        os.close(fd)


def last_line_finished(data: bytes) -> bool:
    """A text export is finished when its last line is: the writer's final newline is there."""
    return data.rstrip(b" \t").endswith(b"\n")


def read_version(path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[bytes, tuple[int, int]]:
    """:func:`read_bytes`, plus the (size, mtime_ns) of the file version the bytes came from
    (``fstat`` of the same descriptor, before and after the read); (-1, -1) when the file
    changed while it was read, so that the bytes match no version."""
    path = Path(path)
    st = _check_regular(path)
    if st.st_size > max_bytes:
        raise UnsafeScan(
            f"the file is {st.st_size:,} bytes, more than the {max_bytes:,}-byte limit for a scan", path
        )
    fd = _open(path)
    try:
        before = os.fstat(fd)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(max_bytes + 1)
        after = os.fstat(fd)
    except OSError as exc:
        raise NotAScanFile(f"the file cannot be read ({exc.strerror or exc})", path) from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise UnsafeScan(f"the file grew beyond the {max_bytes:,}-byte limit while being read", path)
    version = (int(before.st_size), int(before.st_mtime_ns))
    if (int(after.st_size), int(after.st_mtime_ns)) != version or len(data) != before.st_size:
        return data, (-1, -1)
    return data, version


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- binary layouts


@dataclass(frozen=True)
class Layout:
    """A named table of little-endian fields at fixed offsets inside one binary header.

    Keeps byte offsets declarative (one table per header) and checks every read
    against the buffer, so a short file raises :class:`TruncatedScan`, never IndexError.
    """

    name: str
    size: int
    fields: Mapping[str, tuple[int, str]]

    def __post_init__(self) -> None:
        for key, (offset, fmt) in self.fields.items():
            if offset + struct.calcsize("<" + fmt) > self.size:
                raise ValueError(f"{self.name}.{key} lies outside the {self.size}-byte header")

    def read(self, data: bytes, base: int = 0) -> dict[str, Any]:
        need(data, base, self.size, self.name)
        out: dict[str, Any] = {}
        for key, (offset, fmt) in self.fields.items():
            value = struct.unpack_from("<" + fmt, data, base + offset)[0]
            out[key] = c_string(value) if isinstance(value, bytes) else value
        return out


def need(data: bytes, offset: int, length: int, what: str) -> None:
    """Raise :class:`TruncatedScan` unless ``data[offset:offset+length]`` exists."""
    if offset < 0 or length < 0 or offset + length > len(data):
        raise TruncatedScan(
            f"the file ends at byte {len(data):,} but its {what} needs bytes "
            f"{offset:,} to {offset + length:,}"
        )


def c_string(raw: bytes) -> str:
    """A fixed-width, NUL-padded text field as a stripped string ('' when empty)."""
    text = raw.split(b"\0", 1)[0]
    # Bruker writes these fields in the Windows code page; cp1252 would fail on five
    # undefined bytes, latin-1 never fails and agrees on every printable character.
    return text.decode("latin-1").strip()


def not_bruker_raw(data: bytes) -> CorruptScan:
    """The error for a file named .raw that carries no Bruker RAW tag."""
    return CorruptScan(
        "the file does not start with a Bruker RAW tag ('RAW ', 'RAW2', 'RAW1.01' or 'RAW4.00'); "
        f"it starts with {data[:8]!r}"
    )


def check_count(count: int, what: str) -> int:
    """Refuse an absurd declared point count before anything is allocated."""
    if count < 0 or count > MAX_POINTS_PER_RANGE:
        raise CorruptScan(f"{what} declares {count:,} points, which no real scan has")
    return count


# --------------------------------------------------------------------------- values


def finite_or_none(value: Any) -> float | None:
    """A float if ``value`` is a finite number (or numeric text), else None."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    try:
        out = float(value.strip().strip("'\"")) if isinstance(value, str) else float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return out if math.isfinite(out) else None


def f32(value: Any) -> float | None:
    """A number stored as float32, shown with the 7 significant digits it really has
    (0.1 s, not 0.10000000149011612 s). None if not finite."""
    out = finite_or_none(value)
    return float(f"{out:.7g}") if out is not None else None


def positive_or_none(value: Any) -> float | None:
    out = finite_or_none(value)
    return out if out is not None and out > 0 else None


def text_or_none(value: Any) -> str | None:
    if value is None:
        return None
    out = str(value).strip().strip("'\"").strip()
    return out or None


def make_wavelength(
    *,
    alpha1: Any = None,
    alpha2: Any = None,
    ratio: Any = None,
    average: Any = None,
    beta: Any = None,
    anode: Any = None,
) -> Wavelength | None:
    """A :class:`Wavelength` from whatever a file offers, or None if it offers nothing.

    Zero, negative or non-finite values mean "not given" (Bruker writes 0 for an unused
    K-alpha2 behind a monochromator). An anode alone yields its tabulated lines.
    """
    a1, a2, avg = positive_or_none(alpha1), positive_or_none(alpha2), positive_or_none(average)
    anode_name = text_or_none(anode)
    if anode_name:
        anode_name = anode_name.capitalize()
    if a1 is None and a2 is None and avg is None:
        if anode_name:
            try:
                return Wavelength.for_anode(anode_name)
            except ValueError:
                return None
        return None
    ratio_value = finite_or_none(ratio)
    if ratio_value is not None and not 0 <= ratio_value <= 1:
        ratio_value = None
    return Wavelength(
        alpha1=a1,
        alpha2=a2,
        ratio=ratio_value if a2 is not None else None,
        average=avg,
        beta=positive_or_none(beta),
        anode=anode_name,
    )


_DATE_FORMATS = (
    "%m/%d/%y %H:%M:%S",
    "%m/%d/%Y %H:%M:%S",
    "%d-%b-%Y %H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
    "%m/%d/%y",
    "%m/%d/%Y",
    "%d-%b-%Y",
)


def parse_datetime(text: str | None) -> _dt.datetime | None:
    """Bruker's US-style dates ('03/04/10 20:59:14'), UXD's '04-Mar-2010 ...', or ISO 8601."""
    text = text_or_none(text)
    if not text:
        return None
    try:
        return _dt.datetime.fromisoformat(text)
    except ValueError:
        pass
    for fmt in _DATE_FORMATS:
        try:
            return _dt.datetime.strptime(text, fmt)
        except ValueError:
            continue
    return None


def clean_metadata(items: Iterable[tuple[str, Any]]) -> dict[str, str]:
    """Metadata as a plain str -> str mapping, skipping empty values."""
    out: dict[str, str] = {}
    for key, value in items:
        text = text_or_none(value)
        if key and text is not None:
            out[str(key)] = text
    return out


def step_of(two_theta: np.ndarray) -> float | None:
    """The mean step of a 2-theta axis (None below two points)."""
    if two_theta.size < 2:
        return None
    step = float(two_theta[-1] - two_theta[0]) / (two_theta.size - 1)
    return step if math.isfinite(step) else None


# --------------------------------------------------------------------------- validation


def validate_scan(scan: Scan) -> Scan:
    """The one check every scan passes, whatever its reader: refuse what no one can trust.

    Negative intensities are legal (background-subtracted or scrambled data) and kept.
    """
    if not scan.ranges:
        raise CorruptScan("the file holds no measured range")
    for number, rng in enumerate(scan.ranges, start=1):
        where = f"range {number}" if len(scan.ranges) > 1 else "the scan"
        tt, inten = rng.two_theta, rng.intensity
        if rng.points < 2:
            raise CorruptScan(f"{where} has {rng.points} point(s); at least 2 are needed")
        if not np.all(np.isfinite(tt)):
            raise CorruptScan(f"{where} has 2-theta values that are not finite numbers")
        bad = ~np.isfinite(inten)
        if bad.any():
            first = int(np.argmax(bad))
            raise CorruptScan(
                f"{where} has {int(bad.sum())} intensity value(s) that are not finite numbers "
                f"(first at 2-theta {tt[first]:.4f} deg)"
            )
        low, high = TWO_THETA_LIMITS
        if tt[0] < low or tt[-1] > high:
            raise CorruptScan(f"{where} runs from {tt[0]:.6g} to {tt[-1]:.6g} deg 2-theta, not a real angle")
        backwards = np.diff(tt) < 0
        if backwards.any():
            at = int(np.argmax(backwards)) + 1
            raise CorruptScan(f"{where}: 2-theta goes backwards at point {at + 1} ({tt[at]:.4f} deg)")
        if not tt[-1] > tt[0]:
            raise CorruptScan(f"{where}: 2-theta does not advance (every point at {tt[0]:.4f} deg)")
    return scan
