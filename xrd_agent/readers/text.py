"""Plain-text two- or three-column scans: .xy .xye .xyd .csv .txt .dat.

Columns are 2-theta, counts and optionally the counts' standard uncertainty (kept
out of the Scan: nothing downstream uses it). Fields may be separated by white
space, commas or semicolons; with semicolons a decimal comma is accepted. Header
lines before the data and comment lines (``#``, ``;``, ``!``, ``%``, ``//``)
anywhere are skipped. A text file never says which radiation was used, so the
caller's wavelength applies.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from xrd_agent.errors import CorruptScan, ScanError
from xrd_agent.readers import _common as c
from xrd_agent.scan import Scan, ScanRange

FORMAT = "text"
EXTENSIONS = (".xy", ".xye", ".xyd", ".csv", ".txt", ".dat")
COMMENT_PREFIXES = ("#", ";", "!", "%", "//")
COLUMNS = (2, 3)
_BOM = "\ufeff"


def _fields(line: str) -> list[str]:
    if ";" in line:
        parts = [p.strip().replace(",", ".") for p in line.split(";")]
    elif "," in line:
        parts = [p.strip() for p in line.split(",")]
    else:
        parts = line.split()
    while parts and not parts[-1]:
        parts.pop()  # a trailing separator
    return parts


def _numbers(line: str) -> list[float] | None:
    """The line's fields as floats, or None if any field is not a number."""
    out = []
    for field in _fields(line):
        try:
            out.append(float(field))
        except ValueError:
            return None
    return out or None


def _decode(data: bytes) -> str:
    if b"\0" in data:
        raise CorruptScan("the file contains binary (NUL) bytes; it is not a text export")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise CorruptScan(
            f"byte {exc.start:,} (line {line}, value 0x{data[exc.start]:02x}) is not UTF-8 text; "
            "export the scan as UTF-8 or plain ASCII"
        ) from None
    return text.removeprefix(_BOM)


def sniff(head: bytes) -> bool:
    """At least two leading data lines of 2 or 3 numbers, the same count on each."""
    if b"\0" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not merely a character cut at the end of the head
            return False
        text = head[: exc.start].decode("utf-8")
    lines = text.removeprefix(_BOM).splitlines()[:-1]  # the last line may be cut short
    widths = []
    for line in lines:
        stripped = line.strip()
        if not stripped or stripped.startswith(COMMENT_PREFIXES):
            continue
        numbers = _numbers(stripped)
        if numbers is None:
            if widths:
                return False
            continue
        widths.append(len(numbers))
        if len(widths) >= 2:
            return widths[0] == widths[1] and widths[0] in COLUMNS
    return False


def parse(text: str) -> np.ndarray:
    """The numeric block of a text scan as an (n, 2|3) array; CorruptScan on anything odd.

    Lines before the first row of 2 or 3 numbers are a header, even numeric ones (some
    programs write a count or a start/step line first); after it, every line must match.
    """
    lines = text.splitlines()
    table = _parse_block(lines)
    return table if table is not None else _parse_lines(lines)


#: Characters a plain data block may hold for the one-call fast path (with the line's
#: separator added): digits, sign, point, exponent, spaces. Anything else (comments,
#: inf/nan, underscores, other white space) takes the line-by-line path.
_PLAIN = b"0123456789.eE+- \t\n"


def _parse_block(lines: list[str]) -> np.ndarray | None:
    """The data block parsed in one numpy call, or None where the line-by-line path must decide.

    Profiling showed the per-line Python loop was ~75% of a text read. Here the header is
    found exactly as :func:`_parse_lines` finds it; the rest is handed to numpy's C reader
    only when every character is plain (see ``_PLAIN``) and every row has the first data
    row's width, so anything irregular, and so every error message, goes to the slow path.
    numpy's reader converts with ``PyOS_string_to_double``, the routine ``float()`` uses, so
    the values are bit-identical.
    """
    start = -1
    for index, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith(COMMENT_PREFIXES):
            continue
        values = _numbers(stripped)
        if values is not None and len(values) in COLUMNS:
            start, width = index, len(values)
            break
    if start < 0:
        return None
    first = lines[start]
    block = "\n".join(lines[start:])
    if ";" in first:
        delimiter: str | None = ";"
        allowed = _PLAIN + b";,"
        block = block.replace(",", ".")  # the decimal comma, as _fields reads it
    elif "," in first:
        delimiter, allowed = ",", _PLAIN + b","
    else:
        delimiter, allowed = None, _PLAIN
    try:
        if block.encode("ascii").translate(None, allowed):
            return None
        if delimiter == ";" and re.search(r"(?m)^[ \t]*;", block):
            return None  # a ';' comment line inside the data
        rows = block.splitlines() if delimiter == ";" else lines[start:]
        table = np.loadtxt(rows, dtype=np.float64, delimiter=delimiter,
                           comments=None, ndmin=2)
    except (UnicodeEncodeError, ValueError):
        return None
    return table if table.shape[1] == width else None


def _parse_lines(lines: list[str]) -> np.ndarray:
    """The reference parser, line by line: every irregular file and every error comes here."""
    rows: list[list[float]] = []
    width = 0
    odd_widths: set[int] = set()
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith(COMMENT_PREFIXES):
            continue
        values = _numbers(stripped)
        if values is None:
            if rows:
                raise CorruptScan(f"line {number} is not a row of numbers: {stripped[:60]!r}")
            continue  # a header line before the data
        if not width:
            if len(values) not in COLUMNS:
                odd_widths.add(len(values))
                continue
            width = len(values)
        elif len(values) != width:
            raise CorruptScan(f"line {number} has {len(values)} columns where the data has {width}")
        rows.append(values)
    if not rows:
        if odd_widths:
            raise CorruptScan(
                f"the rows of numbers have {' or '.join(map(str, sorted(odd_widths)))} columns; "
                "expected 2 (2-theta, counts) or 3 (2-theta, counts, uncertainty)"
            )
        raise CorruptScan("the file holds no rows of numbers (2-theta, counts)")
    return np.asarray(rows, dtype=np.float64)


def is_complete(path: Path) -> bool:
    """The last line is finished and every row parses."""
    try:
        return read(path, c.read_bytes(path), "").complete
    except (ScanError, OSError):
        return False


def read(path: Path, data: bytes, sha256: str) -> Scan:
    table = parse(_decode(data))
    two_theta, counts = table[:, 0], table[:, 1]
    step = c.step_of(two_theta)  # a descending file is turned round by ScanRange
    return Scan(
        ranges=(ScanRange(two_theta=two_theta, intensity=counts, step=abs(step) if step else step),),
        source_path=path,
        format=FORMAT,
        format_version=f"{table.shape[1]} columns",
        sha256=sha256,
        metadata={"columns": "2-theta, counts" + (", uncertainty" if table.shape[1] == 3 else "")},
        complete=c.last_line_finished(data),
    )
