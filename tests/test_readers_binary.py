"""Bruker RAW v1-v4 structure: synthetic v1/v2 files, multi-range and re-packed RAW4,
truncation at every byte, absurd counts, NaN counts, unfinished measurements.

Offsets here are written out independently of the readers' layout tables (from the
DIFFRAC plus file-format appendix as xylib implements it), so a wrong table fails.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from conftest import FIXTURES
from xrd_agent.errors import CorruptScan, ScanError, TruncatedScan, UnsupportedFormat
from xrd_agent.readers import is_complete, raw, raw4, read_scan, scan_from_bytes

RAW4_FIXTURE = FIXTURES / "TwoTheta_scan_scrambled.raw"
RAW4_RANGE_AT = 447  # the fixture's first (only) range segment
V3_FIXTURE = FIXTURES / "format1.raw"


def _write(tmp_path: Path, data: bytes, name: str = "scan.raw") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------- synthetic v1 / v2


def _v1_range(counts: list[float], start: float, step: float, following: int) -> bytes:
    head = bytearray(152)
    struct.pack_into("<IffI", head, 0, len(counts), 1.5, step, 0)
    struct.pack_into("<f", head, 20, start)
    head[36:68] = b"MIL-53 wet".ljust(32, b"\0")
    struct.pack_into("<ff", head, 68, 1.78897, 1.79285)  # Co
    struct.pack_into("<I", head, 148, following)
    return bytes(head) + struct.pack(f"<{len(counts)}f", *counts)


def test_raw_v1_two_ranges(tmp_path: Path) -> None:
    data = (
        b"RAW "
        + _v1_range([5, 6, 7], 5.0, 0.5, following=1)
        + b"RAW "  # later DIFFRAC-AT versions repeat the tag
        + _v1_range([1, 2, 3, 4], 20.0, 0.25, following=0)
    )
    scan = read_scan(_write(tmp_path, data))
    assert (scan.format, scan.format_version) == ("bruker_raw", "1")
    assert [r.points for r in scan.ranges] == [3, 4]
    np.testing.assert_allclose(scan.ranges[0].two_theta, [5.0, 5.5, 6.0])
    np.testing.assert_allclose(scan.ranges[1].intensity, [1, 2, 3, 4])
    assert scan.sample_id == "MIL-53 wet"
    assert scan.wavelength is not None and scan.wavelength.alpha1 == pytest.approx(1.78897, abs=1e-5)
    assert is_complete(tmp_path / "scan.raw")
    with pytest.raises(TruncatedScan):
        read_scan(_write(tmp_path, data[:-2], "cut.raw"))


def test_raw_v2(tmp_path: Path) -> None:
    head = bytearray(256)
    head[:4] = b"RAW2"
    struct.pack_into("<H", head, 4, 1)
    head[168:188] = b"11/26/26 01:00:00".ljust(20, b"\0")
    head[188:190] = b"Cu"
    struct.pack_into("<fff", head, 190, 1.5406, 1.54439, 0.5)
    rng = bytearray(64)  # header length 64 (> 48: 16 bytes of extra header)
    struct.pack_into("<HH", rng, 0, 64, 5)
    struct.pack_into("<fff", rng, 8, 2.0, 0.02, 7.5)
    counts = struct.pack("<5f", 10, 20, 30, 20, 10)
    path = _write(tmp_path, bytes(head) + bytes(rng) + counts)
    scan = read_scan(path)
    assert (scan.format, scan.format_version) == ("bruker_raw", "2")
    np.testing.assert_allclose(scan.two_theta, [7.5, 7.52, 7.54, 7.56, 7.58], atol=1e-5)
    np.testing.assert_allclose(scan.intensity, [10, 20, 30, 20, 10])
    assert scan.anode == "Cu" and scan.time_per_step == 2.0
    bad = bytearray(path.read_bytes())
    struct.pack_into("<H", bad, 256, 40)  # a range header shorter than its fixed part
    with pytest.raises(CorruptScan, match="too short"):
        read_scan(_write(tmp_path, bytes(bad), "bad.raw"))


# --------------------------------------------------------------------------- RAW1.01 (v3)


def test_v3_truncated_at_every_byte(tmp_path: Path) -> None:
    data = V3_FIXTURE.read_bytes()
    for end in range(0, len(data)):
        with pytest.raises(ScanError):
            scan_from_bytes(data[:end], "cut.raw")
    path = tmp_path / "cut.raw"
    for end in (0, 4, 711, 712, 1015, 1016, len(data) - 1):
        path.write_bytes(data[:end])
        with pytest.raises(ScanError):
            read_scan(path)
        assert is_complete(path) is False
    with pytest.raises(TruncatedScan, match="range 3 data"):
        raw.walk(data[:-1])


def test_v3_absurd_counts_are_refused_before_allocating(tmp_path: Path) -> None:
    data = bytearray(V3_FIXTURE.read_bytes())
    struct.pack_into("<I", data, 712 + 4, 0xFFFFFFFF)  # steps of range 1
    with pytest.raises(CorruptScan, match="4,294,967,295 points"):
        read_scan(_write(tmp_path, bytes(data)))
    data = bytearray(V3_FIXTURE.read_bytes())
    struct.pack_into("<I", data, 12, 2**31)  # range count
    with pytest.raises(CorruptScan, match="ranges"):
        read_scan(_write(tmp_path, bytes(data)))
    data = bytearray(V3_FIXTURE.read_bytes())
    struct.pack_into("<I", data, 712 + 4, 5_000_000)  # plausible count, file far too short
    with pytest.raises(TruncatedScan):
        read_scan(_write(tmp_path, bytes(data)))


def test_v3_nan_and_inf_counts_are_corrupt(tmp_path: Path) -> None:
    for bad in (float("nan"), float("inf")):
        data = bytearray(V3_FIXTURE.read_bytes())
        struct.pack_into("<f", data, 712 + 304 + 4 * 7, bad)
        with pytest.raises(CorruptScan, match="not finite"):
            read_scan(_write(tmp_path, bytes(data)))


def test_v3_header_length_and_record_size_are_checked(tmp_path: Path) -> None:
    data = bytearray(V3_FIXTURE.read_bytes())
    struct.pack_into("<I", data, 712, 305)
    with pytest.raises(CorruptScan, match="305 bytes long"):
        read_scan(_write(tmp_path, bytes(data)))
    data = bytearray(V3_FIXTURE.read_bytes())
    struct.pack_into("<I", data, 712 + 252, 8)
    with pytest.raises(UnsupportedFormat, match="8-byte records"):
        read_scan(_write(tmp_path, bytes(data)))


@pytest.mark.parametrize(("status", "word"), [(2, "active"), (3, "aborted"), (4, "interrupted")])
def test_v3_unfinished_measurement(tmp_path: Path, status: int, word: str) -> None:
    data = bytearray(V3_FIXTURE.read_bytes())
    struct.pack_into("<I", data, 8, status)
    path = _write(tmp_path, bytes(data))
    scan = read_scan(path)
    assert scan.complete is False and scan.metadata["file status"] == word
    assert is_complete(path) is False


# --------------------------------------------------------------------------- RAW4.00


def _raw4_parts() -> tuple[bytes, bytes, int, int, int]:
    data = RAW4_FIXTURE.read_bytes()
    steps, = struct.unpack_from("<I", data, RAW4_RANGE_AT + 88)
    record, extra = struct.unpack_from("<II", data, RAW4_RANGE_AT + 136)
    return data[:RAW4_RANGE_AT], data[RAW4_RANGE_AT:], steps, record, extra


def test_raw4_record_size_is_honoured(tmp_path: Path) -> None:
    """Re-pack the fixture's 8-byte records as 4-byte ones: the counts must not change."""
    head, segment, steps, record, extra = _raw4_parts()
    assert record == 8
    data_at = 160 + extra
    records = np.frombuffer(segment, np.uint8, steps * record, data_at).reshape(steps, record)
    narrow = bytearray(segment[:data_at]) + records[:, :4].tobytes()
    struct.pack_into("<I", narrow, 136, 4)
    repacked = read_scan(_write(tmp_path, head + bytes(narrow)))
    original = read_scan(RAW4_FIXTURE)
    np.testing.assert_array_equal(repacked.intensity, original.intensity)
    np.testing.assert_array_equal(repacked.two_theta, original.two_theta)


def test_raw4_two_ranges_and_trailing_segment(tmp_path: Path) -> None:
    head, segment, steps, _, _ = _raw4_parts()
    second = bytearray(segment)
    struct.pack_into("<d", second, 72, 90.0)  # second range starts at 90 deg
    trailer = struct.pack("<II", 60, 16) + bytes(8)  # a non-range segment after the data
    path = _write(tmp_path, head + segment + bytes(second) + trailer)
    scan = read_scan(path)
    assert [r.points for r in scan.ranges] == [steps, steps]
    assert scan.ranges[1].two_theta[0] == 90.0
    assert is_complete(path)


def test_raw4_truncation(tmp_path: Path) -> None:
    data = RAW4_FIXTURE.read_bytes()
    for end in [*range(0, 700, 3), *range(len(data) - 64, len(data))]:
        with pytest.raises(ScanError):
            raw4.read(Path("cut.raw"), data[:end], "")
    path = _write(tmp_path, data[:-1])
    with pytest.raises(TruncatedScan, match="RAW4 range 1 data"):
        read_scan(path)
    assert is_complete(path) is False


def test_raw4_absurd_values(tmp_path: Path) -> None:
    data = bytearray(RAW4_FIXTURE.read_bytes())
    struct.pack_into("<I", data, RAW4_RANGE_AT + 88, 2**31)
    with pytest.raises(CorruptScan, match="points"):
        read_scan(_write(tmp_path, bytes(data)))
    data = bytearray(RAW4_FIXTURE.read_bytes())
    struct.pack_into("<I", data, RAW4_RANGE_AT + 136, 0)
    with pytest.raises(CorruptScan, match="0-byte data records"):
        read_scan(_write(tmp_path, bytes(data)))
    data = bytearray(RAW4_FIXTURE.read_bytes())
    struct.pack_into("<I", data, 61 + 4, 3)  # first segment claims 3 bytes
    with pytest.raises(CorruptScan, match="length of 3 bytes"):
        read_scan(_write(tmp_path, bytes(data)))
    data = bytearray(RAW4_FIXTURE.read_bytes())
    struct.pack_into("<d", data, RAW4_RANGE_AT + 80, 0.0)  # zero step: every point one angle
    with pytest.raises(CorruptScan, match="does not advance"):
        read_scan(_write(tmp_path, bytes(data)))
    data = bytearray(RAW4_FIXTURE.read_bytes())
    struct.pack_into("<f", data, RAW4_RANGE_AT + 160 + 704 + 8 * 3, float("nan"))
    with pytest.raises(CorruptScan, match="not finite"):
        read_scan(_write(tmp_path, bytes(data)))


def test_raw4_headers_without_a_range_are_not_complete(tmp_path: Path) -> None:
    head, *_ = _raw4_parts()
    path = _write(tmp_path, head)
    assert is_complete(path) is False
    with pytest.raises(TruncatedScan, match="no measured range"):
        read_scan(path)
