"""The one adaptor to xylib-py: bytes in, plain numpy blocks and metadata out.

xylib (C++, LGPL) parses RAW v1-v3, UXD and XRDML; callers hand it only bytes that
passed their own structural check. Its results are checked again here (two columns
of equal length per block), because its text parsers accept odd input silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from xrd_agent.errors import CorruptScan, TruncatedScan, UnsupportedFormat


@dataclass(frozen=True, eq=False)
class XyBlock:
    """One xylib block: x (2-theta) and y (counts), their names, xylib's metadata."""

    x: np.ndarray
    y: np.ndarray
    x_name: str = ""
    x_step: float | None = None  # set when xylib stores x as start + i * step
    meta: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class XyData:
    blocks: tuple[XyBlock, ...]
    meta: dict[str, str]


def _text(value: str) -> str:
    """xylib's strings reach Python with undecodable bytes as surrogates; instrument
    software writes its Windows code page, so decode those as cp1252."""
    raw = value.encode("utf-8", "surrogateescape")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", "replace")


def _meta(meta: object) -> dict[str, str]:
    out = {}
    for i in range(meta.size()):  # type: ignore[attr-defined]
        key = meta.get_key(i)  # type: ignore[attr-defined]
        if _text(key) != key:
            continue  # a key with non-text bytes cannot be passed back to xylib; it is junk anyway
        out[key] = _text(meta.get(key))  # type: ignore[attr-defined]
    return out


def _values(column: object, count: int) -> np.ndarray:
    get = column.get_value  # type: ignore[attr-defined]
    return np.fromiter((get(i) for i in range(count)), dtype=np.float64, count=count)


_TAG = re.compile(r"\s*\[filetype: [^\]]*\]\s*$")


def load(data: bytes, format_name: str, label: str) -> XyData:
    """Parse ``data`` with xylib's ``format_name`` reader; ``label`` names the format for people."""
    try:
        import xylib
    except ImportError:  # pragma: no cover - xylib-py is a hard dependency
        raise UnsupportedFormat(
            f"reading {label} files needs the xylib-py package (pip install xylib-py)"
        ) from None
    try:
        dataset = xylib.load_string(data, format_name)
    except RuntimeError as exc:  # xylib's FormatError and RunTimeError both arrive as this
        message = _TAG.sub("", str(exc)).strip()
        if "unexpected eof" in message.lower():
            raise TruncatedScan(f"the {label} file ends before its data does") from None
        message = message.replace("\n", " ")[:200]
        raise CorruptScan(f"the {label} file is malformed ({message})") from None
    except UnicodeDecodeError:  # SWIG fails to decode xylib's message quoting a non-UTF-8 line
        raise CorruptScan(f"the {label} file is malformed (a line with non-text bytes)") from None
    blocks = []
    for index in range(dataset.get_block_count()):
        block = dataset.get_block(index)
        where = f"{label} range {index + 1}"
        if block.get_column_count() != 2:
            raise CorruptScan(
                f"{where} has {block.get_column_count()} data columns where 2 (angle, counts) belong"
            )
        xcol, ycol = block.get_column(1), block.get_column(2)
        n = ycol.get_point_count()
        nx = xcol.get_point_count()
        if nx not in (-1, n):  # -1: a step column, defined for every index
            raise CorruptScan(f"{where} has {nx} angles but {n} intensities")
        step = xcol.get_step() if nx == -1 else None
        blocks.append(
            XyBlock(
                x=_values(xcol, n),
                y=_values(ycol, n),
                x_name=_text(xcol.get_name() or ""),
                x_step=float(step) if step is not None else None,
                meta=_meta(block.meta),
            )
        )
    return XyData(blocks=tuple(blocks), meta=_meta(dataset.meta))
