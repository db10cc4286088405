"""Bruker RAW4.00 (DIFFRAC.SUITE / EVA), read natively.

xylib 1.6 assumes 4-byte data records and GSAS-II reads consecutive floats; both are
wrong for files whose records carry more than the count (the fixture has 8-byte
records: float32 count + int32). The record size comes from the range header.

Layout (little-endian): a 61-byte preamble, then a chain of segments ``u32 type,
u32 length`` (length includes the 8-byte head). Type 0 or 160 is a range: a fixed
160-byte header, ``extra`` bytes of drive sub-segments, then ``steps x record``
bytes. After a range the chain resumes until the end of the file.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xrd_agent.errors import CorruptScan, ScanError, TruncatedScan
from xrd_agent.readers import _common as c
from xrd_agent.scan import Scan, ScanRange

FORMAT = "bruker_raw4"
EXTENSIONS = (".raw",)
MAGIC = b"RAW4.00"

PREAMBLE = c.Layout("RAW4 preamble", 61, {"magic": (0, "7s"), "date": (12, "10s"), "time": (24, "10s")})
SEGMENT_HEAD = c.Layout("RAW4 segment head", 8, {"type": (0, "I"), "length": (4, "I")})
TEXT_VAR = c.Layout("RAW4 text variable", 36, {"name": (12, "24s")})
TEXT_VALUE_OFFSET = 36
HARDWARE = c.Layout(
    "RAW4 hardware segment",
    120,
    {
        "alpha_average": (72, "d"),
        "alpha1": (80, "d"),
        "alpha2": (88, "d"),
        "beta": (96, "d"),
        "ratio": (104, "d"),
        "anode": (116, "4s"),
    },
)
RANGE = c.Layout(
    "RAW4 range header",
    160,
    {
        "scan_type": (32, "24s"),
        "start": (72, "d"),
        "step": (80, "d"),
        "steps": (88, "I"),
        "time_per_step": (92, "f"),
        "kv": (100, "f"),
        "ma": (104, "f"),
        "wavelength": (112, "d"),
        "record_size": (136, "I"),
        "extra_size": (140, "I"),
    },
)
SEGMENT_TEXT, SEGMENT_HARDWARE = 10, 30
RANGE_TYPES = (0, 160)
COUNT = struct.Struct("<f")  # every data record starts with the float32 count
#: Wider records than this are not count records: refuse rather than guess.
MAX_RECORD = 1024


@dataclass(frozen=True)
class RangeLayout:
    header: dict[str, object]
    data_offset: int
    steps: int
    record_size: int


@dataclass(frozen=True)
class Structure:
    preamble: dict[str, object]
    variables: dict[str, str]
    hardware: dict[str, object] | None
    ranges: tuple[RangeLayout, ...]


def sniff(head: bytes) -> bool:
    return head[:7] == MAGIC


def walk(data: bytes) -> Structure:
    """Follow the segment chain to the end of the file, checking every length first."""
    if data[:7] != MAGIC:
        raise c.not_bruker_raw(data)
    preamble = PREAMBLE.read(data)
    variables: dict[str, str] = {}
    hardware: dict[str, object] | None = None
    ranges: list[RangeLayout] = []
    pos = PREAMBLE.size
    while pos < len(data):
        if len(ranges) > c.MAX_RANGES:
            raise CorruptScan("the RAW4 file chains more ranges than any real scan has")
        head = SEGMENT_HEAD.read(data, pos)
        if head["type"] in RANGE_TYPES:
            rng = _range(data, pos, len(ranges) + 1)
            ranges.append(rng)
            pos = rng.data_offset + rng.steps * rng.record_size
            continue
        length = head["length"]
        if length < SEGMENT_HEAD.size:
            raise CorruptScan(f"a RAW4 segment at byte {pos:,} claims a length of {length} bytes")
        c.need(data, pos, length, f"segment of type {head['type']} at byte {pos:,}")
        if head["type"] == SEGMENT_TEXT and length >= TEXT_VAR.size:
            name = TEXT_VAR.read(data, pos)["name"]
            if name:
                variables[name] = c.c_string(data[pos + TEXT_VALUE_OFFSET : pos + length])
        elif head["type"] == SEGMENT_HARDWARE and length >= HARDWARE.size:
            hardware = HARDWARE.read(data, pos)
        pos += length
    if not ranges:
        raise TruncatedScan("the RAW4 file has its headers but no measured range yet")
    return Structure(preamble, variables, hardware, tuple(ranges))


def _range(data: bytes, pos: int, number: int) -> RangeLayout:
    what = f"RAW4 range {number}"
    header = RANGE.read(data, pos)
    steps = c.check_count(header["steps"], what)
    record = header["record_size"]
    if not COUNT.size <= record <= MAX_RECORD:
        raise CorruptScan(f"{what} declares {record}-byte data records; a count needs 4 to {MAX_RECORD}")
    c.need(data, pos + RANGE.size, header["extra_size"], what + " drive sub-segments")
    start = pos + RANGE.size + header["extra_size"]
    c.need(data, start, steps * record, f"{what} data ({steps:,} points of {record} bytes)")
    return RangeLayout(header, start, steps, record)


def is_complete(path: Path) -> bool:
    """Every range's data records are present and the segment chain ends cleanly."""
    try:
        walk(c.read_bytes(path))
    except (ScanError, OSError):
        return False
    return True


def _counts(data: bytes, layout: RangeLayout) -> np.ndarray:
    """The float32 count at the start of each record, wherever the record is wider."""
    size = layout.steps * layout.record_size
    raw = np.frombuffer(data, dtype=np.uint8, count=size, offset=layout.data_offset)
    records = raw.reshape(layout.steps, layout.record_size)[:, : COUNT.size]
    return np.ascontiguousarray(records).view("<f4").ravel().astype(np.float64)


def read(path: Path, data: bytes, sha256: str) -> Scan:
    structure = walk(data)
    ranges = []
    for layout in structure.ranges:
        h = layout.header
        start, step = float(h["start"]), float(h["step"])  # type: ignore[arg-type]
        two_theta = start + step * np.arange(layout.steps, dtype=np.float64)
        ranges.append(
            ScanRange(
                two_theta=two_theta,
                intensity=_counts(data, layout),
                step=c.finite_or_none(step),
                time_per_step=c.positive_or_none(c.f32(h["time_per_step"])),
                scan_type=c.text_or_none(h["scan_type"]),
                kv=c.positive_or_none(c.f32(h["kv"])),
                ma=c.positive_or_none(c.f32(h["ma"])),
            )
        )
    variables, hw = structure.variables, structure.hardware or {}
    # The f64 wavelength fields hold float32-rounded values (1.5405999422...): 7 digits.
    wavelength = c.make_wavelength(
        alpha1=c.f32(hw.get("alpha1")),
        alpha2=c.f32(hw.get("alpha2")),
        ratio=c.f32(hw.get("ratio")),
        average=c.f32(hw.get("alpha_average")),
        beta=c.f32(hw.get("beta")),
        anode=hw.get("anode"),
    ) or c.make_wavelength(alpha1=c.f32(structure.ranges[0].header["wavelength"]))
    metadata = c.clean_metadata(variables.items())
    metadata.update(c.clean_metadata((f"range1.{k}", v) for k, v in structure.ranges[0].header.items()))
    if hw.get("anode"):
        metadata["ANODE_MATERIAL"] = str(hw["anode"])
    pre = structure.preamble
    return Scan(
        ranges=tuple(ranges),
        source_path=path,
        format=FORMAT,
        format_version="4.00",
        sha256=sha256,
        wavelength=wavelength,
        sample_id=c.text_or_none(variables.get("SAMPLEID")),
        operator=c.text_or_none(variables.get("USER")),
        software=c.text_or_none(variables.get("CREATOR")),
        measured_at=c.parse_datetime(f"{pre['date']} {pre['time']}"),
        complete=True,
        metadata=metadata,
    )
