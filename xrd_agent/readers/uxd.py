"""Bruker/Siemens Diffrac-AT UXD text exports, through xylib.

A header of ``_KEY=value`` lines, then per range a ``_DRIVE`` line, its parameters and
either ``_COUNTS``/``_CPS`` (counts at ``_START + i * _STEPSIZE``) or two-column
``_2THETACOUNTS``/``_2THETACPS``. ``;`` starts a comment.
"""

from __future__ import annotations

import re
from pathlib import Path

from xrd_agent.errors import CorruptScan, ScanError
from xrd_agent.readers import _common as c
from xrd_agent.readers import _xylib
from xrd_agent.scan import Scan, ScanRange

FORMAT = "uxd"
EXTENSIONS = (".uxd",)
LABEL = "UXD"

_OPENING_KEYS = (b"_FILEVERSION", b"_DRIVE", b"_SAMPLE")
_DATA_KEYWORD = re.compile(rb"^[ \t]*_(?:COUNT|CPS|2THETACOUNTS|2THETACPS)", re.MULTILINE)
_DRIVE = re.compile(rb"^[ \t]*_DRIVE[ \t]*=[ \t]*'?([^'\r\n]*)", re.MULTILINE)


def sniff(head: bytes) -> bool:
    """UXD files open with optional ``;`` comments, then ``_FILEVERSION`` (or ``_DRIVE``)."""
    if b"\0" in head:
        return False
    for line in head.removeprefix(b"\xef\xbb\xbf").splitlines():
        line = line.strip()
        if line and not line.startswith(b";"):
            return line.upper().startswith(_OPENING_KEYS)
    return False


def is_complete(path: Path) -> bool:
    """The last line is finished and the whole file parses into at least one range."""
    try:
        return read(path, c.read_bytes(path), "").complete
    except (ScanError, OSError):
        return False


def read(path: Path, data: bytes, sha256: str) -> Scan:
    if b"\0" in data:
        raise CorruptScan("the UXD file contains binary (NUL) bytes; it is not a text export")
    if not _DATA_KEYWORD.search(data):
        raise CorruptScan("the UXD file has no data section (_COUNTS, _CPS or _2THETACOUNTS)")
    parsed = _xylib.load(data, FORMAT, LABEL)
    if not parsed.blocks:
        raise CorruptScan("the UXD file has no data section (_COUNTS, _CPS or _2THETACOUNTS)")
    drives = [c.text_or_none(m.decode("latin-1")) for m in _DRIVE.findall(data)]
    if len(drives) != len(parsed.blocks):
        drives = [None] * len(parsed.blocks)
    meta = parsed.meta
    ranges = []
    for block, drive in zip(parsed.blocks, drives, strict=True):
        bm = block.meta
        ranges.append(
            ScanRange(
                two_theta=block.x,
                intensity=block.y,
                step=c.finite_or_none(block.x_step) if block.x_step is not None else c.step_of(block.x),
                time_per_step=c.positive_or_none(bm.get("STEPTIME")),
                scan_type=drive,
                kv=c.positive_or_none(bm.get("KV")),
                ma=c.positive_or_none(bm.get("MA")),
            )
        )
    first = parsed.blocks[0].meta
    wavelength = c.make_wavelength(
        alpha1=meta.get("WL1"),
        alpha2=meta.get("WL2"),
        ratio=meta.get("WLRATIO"),
        beta=meta.get("WL3"),
        anode=meta.get("ANODE"),
    ) or c.make_wavelength(alpha1=first.get("RANGE_WL"), anode=meta.get("ANODE"))
    metadata = c.clean_metadata(meta.items())
    metadata.update(c.clean_metadata((f"range1.{k}", v) for k, v in first.items()))
    return Scan(
        ranges=tuple(ranges),
        source_path=path,
        format=FORMAT,
        format_version=c.text_or_none(meta.get("FILEVERSION")) or "",
        sha256=sha256,
        wavelength=wavelength,
        sample_id=c.text_or_none(meta.get("SAMPLE")),
        operator=c.text_or_none(meta.get("USER")),
        measured_at=c.parse_datetime(meta.get("DATEMEASURED")),
        metadata=metadata,
        complete=c.last_line_finished(data),
    )
