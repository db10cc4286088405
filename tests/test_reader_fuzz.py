"""Damaged copies of every real fixture: truncated, bit-flipped. Each must read as a
valid Scan or raise a ScanError: never another exception, never a crash, never a hang.

A crash here would be xylib (C++) reading past a buffer: the native structure
checks in front of it exist to make that impossible.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import fixture_files
from xrd_agent.errors import ScanError
from xrd_agent.readers import is_complete, scan_from_bytes
from xrd_agent.scan import Scan, Wavelength

CU = Wavelength.for_anode("Cu")
FILES = fixture_files()
#: Raise for a deeper soak: XRD_AGENT_FUZZ_EXAMPLES=500 pytest tests/test_reader_fuzz.py
EXAMPLES = int(os.environ.get("XRD_AGENT_FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=_dt.timedelta(seconds=10),  # one read takes < 0.1 s; this only catches hangs
    database=None,  # keep the shared working tree clean
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _original(path: Path) -> bytes:
    return path.read_bytes()


def _check(data: bytes, name: str) -> None:
    try:
        scan = scan_from_bytes(data, name, wavelength=CU)
    except ScanError as exc:
        assert exc.reason and "\n" not in exc.reason[:200]
        return
    assert isinstance(scan, Scan) and scan.ranges
    for rng in scan.ranges:
        assert rng.points >= 2
        assert np.all(np.isfinite(rng.two_theta)) and np.all(np.isfinite(rng.intensity))
        assert np.all(np.diff(rng.two_theta) >= 0)


def _position(size: int) -> st.SearchStrategy[int]:
    """Headers are where damage matters most: half the flips land in the first kilobyte."""
    return st.one_of(st.integers(0, min(size, 1024) - 1), st.integers(0, size - 1))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
@FUZZ
@given(fraction=st.floats(0.0, 1.0, exclude_max=True))
def test_truncated_fixture(path: Path, fraction: float) -> None:
    data = _original(path)
    _check(data[: int(len(data) * fraction)], path.name)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
@FUZZ
@given(draw=st.data())
def test_bit_flipped_fixture(path: Path, draw: st.DataObject) -> None:
    data = bytearray(_original(path))
    flips = draw.draw(st.lists(st.tuples(_position(len(data)), st.integers(0, 7)), min_size=1, max_size=8))
    for position, bit in flips:
        data[position] ^= 1 << bit
    _check(bytes(data), path.name)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
@settings(FUZZ, max_examples=max(8, EXAMPLES // 5))
@given(draw=st.data())
def test_is_complete_never_raises(path: Path, draw: st.DataObject, tmp_path: Path) -> None:
    data = bytearray(_original(path))
    cut = draw.draw(st.integers(0, len(data)))
    flips = draw.draw(st.lists(st.tuples(_position(len(data)), st.integers(0, 7)), max_size=4))
    for position, bit in flips:
        data[position] ^= 1 << bit
    target = tmp_path / path.name
    target.write_bytes(bytes(data[:cut]))
    assert is_complete(target) in (True, False)
    # an XML document cut only in the whitespace after its root element is still whole
    text_tail = path.suffix.lower() == ".xrdml" and not bytes(data[cut:]).strip()
    cut_scan = not flips and cut < len(data) and not text_tail
    if cut_scan and path.suffix.lower() in (".raw", ".brml", ".xrdml"):
        assert is_complete(target) is False  # a cut scan never looks finished
