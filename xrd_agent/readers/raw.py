"""Bruker/Siemens RAW versions 1, 2 and 3 ('RAW ', 'RAW2', 'RAW1.01') through xylib.

xylib is C++ and trusts the header: a flipped bit in a step count or a header length
can make it read far past the data. So the structure is walked natively first, with
every length checked against the file size (layouts after xylib's bruker_raw.cpp and
DIFFRAC plus XCH V.5.0 manual, appendix A). Only a sound file goes to xylib, and its
answer must agree with the walk. The same walk is :func:`is_complete`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from xrd_agent.errors import CorruptScan, ScanError, UnsupportedFormat
from xrd_agent.readers import _common as c
from xrd_agent.readers import _xylib
from xrd_agent.scan import Scan, ScanRange

FORMAT = "bruker_raw"
EXTENSIONS = (".raw",)

MAGIC_V1, MAGIC_V2, MAGIC_V3 = b"RAW ", b"RAW2", b"RAW1.01"
COUNT_BYTES = 4  # every v1-v3 data record xylib reads is one float32 count

#: v1: one header per range; the first range's step count sits right after the magic.
V1_RANGE = c.Layout(
    "RAW v1 range header",
    152,
    {
        "steps": (0, "I"),
        "time_per_step": (4, "f"),
        "step": (8, "f"),
        "scan_mode": (12, "I"),
        "start_2theta": (20, "f"),
        "sample": (36, "32s"),
        "alpha1": (68, "f"),
        "alpha2": (72, "f"),
        "following_range": (148, "I"),
    },
)

V2_FILE = c.Layout(
    "RAW v2 file header",
    256,
    {
        "ranges": (4, "H"),
        "measured": (168, "20s"),
        "anode": (188, "2s"),
        "alpha1": (190, "f"),
        "alpha2": (194, "f"),
        "ratio": (198, "f"),
    },
)
V2_RANGE = c.Layout(
    "RAW v2 range header",
    48,
    {
        "header_length": (0, "H"),
        "steps": (2, "H"),
        "time_per_step": (8, "f"),
        "step": (12, "f"),
        "start_2theta": (16, "f"),
    },
)

V3_FILE = c.Layout(
    "RAW1.01 file header",
    712,
    {
        "status": (8, "I"),
        "ranges": (12, "I"),
        "date": (16, "10s"),
        "time": (26, "10s"),
        "user": (36, "72s"),
        "site": (108, "218s"),
        "sample": (326, "60s"),
        "comment": (386, "160s"),
        "anode": (608, "4s"),
        "alpha_average": (616, "d"),
        "alpha1": (624, "d"),
        "alpha2": (632, "d"),
        "beta": (640, "d"),
        "ratio": (648, "d"),
    },
)
V3_RANGE_LENGTH = 304
V3_RANGE = c.Layout(
    "RAW1.01 range header",
    V3_RANGE_LENGTH,
    {
        "header_length": (0, "I"),
        "steps": (4, "I"),
        "start_theta": (8, "d"),
        "start_2theta": (16, "d"),
        "step": (176, "d"),
        "time_per_step": (192, "f"),
        "kv": (224, "I"),
        "ma": (228, "I"),
        "used_lambda": (240, "d"),
        "varying_parameters": (248, "I"),
        "record_size": (252, "I"),
        "supplementary_size": (256, "I"),
    },
)
V3_STATUS = {1: "done", 2: "active", 3: "aborted", 4: "interrupted"}


@dataclass(frozen=True)
class RangeLayout:
    """Where one range's counts lie, as the native walk found them."""

    steps: int
    data_offset: int
    start_2theta: float
    step: float
    time_per_step: float | None = None
    kv: float | None = None
    ma: float | None = None


@dataclass(frozen=True)
class Structure:
    version: str  # "1", "2" or "3" (xylib's numbering)
    ranges: tuple[RangeLayout, ...]
    end: int  # first byte after the last range's data
    header: dict[str, object]
    status: int | None = None


def sniff(head: bytes) -> bool:
    return head[:4] in (MAGIC_V1, MAGIC_V2) or head[:7] == MAGIC_V3


def _ranges_fit(count: int, minimum: int, data: bytes, start: int, what: str) -> int:
    if count > c.MAX_RANGES or start + count * minimum > len(data):
        raise CorruptScan(f"the {what} declares {count:,} ranges, more than the file can hold")
    return count


def _data(data: bytes, offset: int, steps: int, what: str) -> int:
    c.check_count(steps, what)
    c.need(data, offset, steps * COUNT_BYTES, what + " data")
    return offset + steps * COUNT_BYTES


def _walk_v1(data: bytes) -> Structure:
    ranges: list[RangeLayout] = []
    header: dict[str, object] = {}
    base = len(MAGIC_V1)  # the first range header starts right after the magic
    while True:
        what = f"RAW v1 range {len(ranges) + 1}"
        if ranges and data[base : base + 4] == MAGIC_V1:
            base += 4  # later DIFFRAC-AT versions repeat the magic before each range
        h = V1_RANGE.read(data, base)
        header = header or h
        start = base + V1_RANGE.size
        end = _data(data, start, h["steps"], what)
        ranges.append(RangeLayout(h["steps"], start, h["start_2theta"], h["step"], h["time_per_step"]))
        if h["following_range"] == 0:
            return Structure("1", tuple(ranges), end, header)
        base = end


def _walk_v2(data: bytes) -> Structure:
    head = V2_FILE.read(data)
    count = _ranges_fit(head["ranges"], V2_RANGE.size, data, V2_FILE.size, "RAW v2 header")
    pos, ranges = V2_FILE.size, []
    for number in range(1, count + 1):
        h = V2_RANGE.read(data, pos)
        if h["header_length"] <= V2_RANGE.size:
            raise CorruptScan(f"RAW v2 range {number} has a {h['header_length']}-byte header, too short")
        start = pos + h["header_length"]
        pos = _data(data, start, h["steps"], f"RAW v2 range {number}")
        ranges.append(RangeLayout(h["steps"], start, h["start_2theta"], h["step"], h["time_per_step"]))
    return Structure("2", tuple(ranges), pos, head)


def _walk_v3(data: bytes) -> Structure:
    head = V3_FILE.read(data)
    count = _ranges_fit(head["ranges"], V3_RANGE_LENGTH, data, V3_FILE.size, "RAW1.01 header")
    pos, ranges = V3_FILE.size, []
    for number in range(1, count + 1):
        what = f"RAW1.01 range {number}"
        h = V3_RANGE.read(data, pos)
        if h["header_length"] != V3_RANGE_LENGTH:
            raise CorruptScan(f"{what} header says it is {h['header_length']} bytes long, not 304")
        if h["record_size"] not in (0, COUNT_BYTES) or h["varying_parameters"]:
            raise UnsupportedFormat(
                f"{what} stores {h['record_size']}-byte records with varying parameters; "
                "only plain count records are supported"
            )
        start = pos + V3_RANGE_LENGTH + h["supplementary_size"]
        c.need(data, pos + V3_RANGE_LENGTH, h["supplementary_size"], what + " supplementary header")
        pos = _data(data, start, h["steps"], what)
        ranges.append(
            RangeLayout(
                h["steps"], start, h["start_2theta"], h["step"], h["time_per_step"], h["kv"], h["ma"]
            )
        )
    return Structure("3", tuple(ranges), pos, head, status=head["status"])


def walk(data: bytes) -> Structure:
    """Check the file's structure natively; raise a :class:`ScanError` if anything is off."""
    if data[:7] == MAGIC_V3:
        return _walk_v3(data)
    if data[:4] == MAGIC_V2:
        return _walk_v2(data)
    if data[:4] == MAGIC_V1:
        return _walk_v1(data)
    if data[:4] == b"RAW4":
        raise UnsupportedFormat("this is a RAW4 file; the RAW v1-v3 reader cannot read it")
    raise c.not_bruker_raw(data)


def is_complete(path: Path) -> bool:
    """All ranges' data present, and for RAW1.01 the instrument marked the scan done."""
    try:
        data = c.read_bytes(path)
        structure = walk(data)
    except (ScanError, OSError):
        return False
    return structure.status in (None, 1)


def read(path: Path, data: bytes, sha256: str) -> Scan:
    structure = walk(data)
    label = f"RAW v{structure.version}"
    parsed = _xylib.load(data, FORMAT, label)
    if len(parsed.blocks) != len(structure.ranges):
        raise CorruptScan(
            f"the {label} file declares {len(structure.ranges)} ranges but {len(parsed.blocks)} were read"
        )
    ranges = []
    for number, (layout, block) in enumerate(zip(structure.ranges, parsed.blocks, strict=True), 1):
        if block.y.size != layout.steps or not _agrees(block, layout):
            first = f"{block.x[0]:g} deg" if block.x.size else "nowhere"
            raise CorruptScan(
                f"{label} range {number}: the header ({layout.steps} points from "
                f"{layout.start_2theta:g} deg) and the data read ({block.y.size} points from {first}) disagree"
            )
        meta = block.meta
        ranges.append(
            ScanRange(
                two_theta=block.x,
                intensity=block.y,
                step=c.finite_or_none(block.x_step),
                time_per_step=c.positive_or_none(c.f32(layout.time_per_step)),
                scan_type=c.text_or_none(meta.get("SCAN_MODE")),
                kv=c.positive_or_none(meta.get("GENERATOR_VOLTAGE", layout.kv)),
                ma=c.positive_or_none(meta.get("GENERATOR_CURRENT", layout.ma)),
            )
        )
    return Scan(
        ranges=tuple(ranges),
        source_path=path,
        format=FORMAT,
        format_version=structure.version,
        sha256=sha256,
        complete=structure.status in (None, 1),
        **_file_facts(structure, parsed),
    )


def _agrees(block: _xylib.XyBlock, layout: RangeLayout) -> bool:
    """xylib's axis starts and steps where the native walk says (both read the same bytes)."""
    if block.x.size == 0:
        return layout.steps == 0
    if not (math.isfinite(layout.start_2theta) and math.isfinite(layout.step)):
        return True  # NaN/inf angles: validation refuses them with the clearer reason
    return math.isclose(block.x[0], layout.start_2theta, rel_tol=1e-9, abs_tol=1e-9) and (
        block.x_step is None or math.isclose(block.x_step, layout.step, rel_tol=1e-6, abs_tol=1e-12)
    )


def _file_facts(structure: Structure, parsed: _xylib.XyData) -> dict[str, object]:
    meta = parsed.meta
    first = parsed.blocks[0].meta if parsed.blocks else {}
    if structure.version == "3":
        wavelength = c.make_wavelength(
            alpha1=meta.get("ALPHA1"),
            alpha2=meta.get("ALPHA2"),
            ratio=meta.get("ALPHA_RATIO"),
            average=meta.get("ALPHA_AVERAGE"),
            beta=meta.get("BETA"),
            anode=meta.get("ANODE_MATERIAL"),
        ) or c.make_wavelength(alpha1=first.get("USED_LAMBDA"))
        when = f"{meta.get('MEASURE_DATE', '')} {meta.get('MEASURE_TIME', '')}"
        sample, operator = meta.get("SAMPLE_ID"), meta.get("USER")
    elif structure.version == "2":
        wavelength = c.make_wavelength(
            alpha1=meta.get("LAMDA1"),
            alpha2=meta.get("LAMDA2"),
            ratio=meta.get("INTENSITY_RATIO"),
            anode=meta.get("CEMICAL SYMBOL FOR TUBE ANODE"),
        )
        when, sample, operator = meta.get("DATE_TIME_MEASURE"), None, None
    else:
        wavelength = c.make_wavelength(alpha1=first.get("K_ALPHA1"), alpha2=first.get("K_ALPHA2"))
        when, sample, operator = None, first.get("SAMPLE_NAME"), None
    metadata = c.clean_metadata(meta.items())
    metadata.update(c.clean_metadata((f"range1.{k}", v) for k, v in first.items()))
    if structure.status is not None:
        metadata["file status"] = V3_STATUS.get(structure.status, f"unknown ({structure.status})")
    return {
        "wavelength": wavelength,
        "sample_id": c.text_or_none(sample),
        "operator": c.text_or_none(operator),
        "measured_at": c.parse_datetime(when),
        "metadata": metadata,
    }


__all__ = ["EXTENSIONS", "FORMAT", "is_complete", "read", "sniff", "walk"]
