"""Every real instrument fixture reads exactly as expected.json says; the registry's
dispatch, the file-safety refusals and the wavelength rule."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

import xrd_agent.readers as readers
from conftest import FIXTURES, fixture_files
from xrd_agent.errors import (
    CorruptScan,
    NotAScanFile,
    ScanError,
    TruncatedScan,
    UnknownWavelength,
    UnsafeScan,
    UnsupportedFormat,
)
from xrd_agent.readers import detect_format, is_complete, parse_wavelength, read_scan
from xrd_agent.scan import Wavelength

EXPECTED_NAMES = sorted(p.name for p in fixture_files())
FORMAT_OF = {  # file name -> the format name our registry must report
    "BT86.raw": "bruker_raw",
    "Cu3Au-1.raw": "bruker_raw",
    "format1.raw": "bruker_raw",
    "TwoTheta_scan_scrambled.raw": "bruker_raw4",
    "BT86_.UXD": "uxd",
    "empyrean.xrdml": "xrdml",
}


def f32_close(actual: float, expected: float) -> bool:
    """Equal within float32 resolution (the expected values were read as float32)."""
    return bool(np.isclose(actual, expected, rtol=2e-7 * 4, atol=1e-6))


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_fixture_reads_as_expected(name: str, expected: dict) -> None:
    want = expected[name]
    scan = read_scan(FIXTURES / name)
    assert len(scan.ranges) == len(want["ranges"])
    for rng, exp in zip(scan.ranges, want["ranges"], strict=True):
        assert rng.points == exp["points"]
        assert f32_close(rng.two_theta[0], exp["two_theta_first"]), rng.two_theta[0]
        assert f32_close(rng.two_theta[-1], exp["two_theta_last"]), rng.two_theta[-1]
        assert f32_close(rng.intensity[0], exp["intensity_first"])
        assert f32_close(rng.intensity[-1], exp["intensity_last"])
        assert f32_close(rng.intensity.max(), exp["intensity_max"])
        summary = rng.summary()
        assert summary["points"] == exp["points"]
    assert scan.sha256 == hashlib.sha256((FIXTURES / name).read_bytes()).hexdigest()
    assert scan.source_path == FIXTURES / name
    assert scan.complete is True


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_fixture_radiation_matches_hints(name: str, expected: dict) -> None:
    hints = expected[name].get("wavelength_hint", {})
    scan = read_scan(FIXTURES / name)
    assert scan.wavelength is not None and scan.wavelength.primary is not None
    for key in ("ALPHA1", "USED_LAMBDA"):
        if key in hints:
            assert scan.wavelength.alpha1 == pytest.approx(float(hints[key]), abs=1e-5)
    for key in ("ALPHA2",):
        if key in hints:
            assert scan.wavelength.alpha2 == pytest.approx(float(hints[key]), abs=1e-5)
    anode = hints.get("ANODE_MATERIAL") or hints.get("ANODE")
    if anode:
        assert scan.anode == anode.strip("'")


@pytest.mark.parametrize("name", sorted(FORMAT_OF))
def test_detect_format_and_completeness(name: str) -> None:
    path = FIXTURES / name
    assert detect_format(path) == FORMAT_OF[name]
    assert read_scan(path).format == FORMAT_OF[name]
    assert is_complete(path) is True


def test_fixture_metadata() -> None:
    bt86 = read_scan(FIXTURES / "BT86.raw")
    assert (bt86.sample_id, bt86.format_version) == ("BT86", "3")
    assert bt86.measured_at is not None and bt86.measured_at.isoformat() == "2010-03-04T20:59:14"
    assert (bt86.kv, bt86.ma, bt86.time_per_step) == (45.0, 40.0, 0.5)
    raw4 = read_scan(FIXTURES / "TwoTheta_scan_scrambled.raw")
    assert raw4.sample_id == "HeOx-1001-nsp-sps-900C-10min-01-poliert"
    assert raw4.scan_type == "Locked Coupled"
    assert raw4.wavelength is not None and raw4.wavelength.alpha1 == 1.5406
    assert raw4.wavelength.alpha2 is None  # written as 0: K-alpha2 stripped or monochromated
    uxd = read_scan(FIXTURES / "BT86_.UXD")
    assert (uxd.sample_id, uxd.scan_type, uxd.anode) == ("BT86", "COUPLED", "Cu")
    xrdml = read_scan(FIXTURES / "empyrean.xrdml")
    assert xrdml.wavelength is not None and xrdml.wavelength.alpha1 == pytest.approx(1.540598)
    assert xrdml.format_version == "1.5" and xrdml.scan_type == "2Theta"


def test_raw_and_uxd_of_the_same_scan_agree() -> None:
    raw, uxd = read_scan(FIXTURES / "BT86.raw"), read_scan(FIXTURES / "BT86_.UXD")
    np.testing.assert_array_equal(raw.intensity, uxd.intensity)
    np.testing.assert_allclose(raw.two_theta, uxd.two_theta, atol=5e-3)  # UXD rounds its angles


def test_negative_counts_are_kept() -> None:
    scan = read_scan(FIXTURES / "TwoTheta_scan_scrambled.raw")
    assert scan.intensity.min() < 0
    assert not scan.intensity.flags.writeable


def test_multi_range_file_keeps_ranges_apart_and_merges_sorted() -> None:
    scan = read_scan(FIXTURES / "format1.raw")
    assert [r.points for r in scan.ranges] == [101, 26, 51]
    assert scan.two_theta.size == 178 and np.all(np.diff(scan.two_theta) > 0)


# --------------------------------------------------------------------------- registry


def test_registry_lists_every_format_with_extensions() -> None:
    formats = readers.formats()
    for name in ("bruker_raw4", "bruker_raw", "uxd", "xrdml", "text"):
        assert name in formats and formats[name]
    assert list(formats)[-1] == "text"  # text sniffs last


def test_content_wins_over_extension(tmp_path: Path) -> None:
    misnamed = tmp_path / "scan.xy"
    misnamed.write_bytes((FIXTURES / "BT86.raw").read_bytes())
    assert detect_format(misnamed) == "bruker_raw"
    assert read_scan(misnamed).ranges[0].points == 2374


def test_extension_fallback_gives_a_clear_reason(tmp_path: Path) -> None:
    fake = tmp_path / "scan.raw"
    fake.write_bytes(b"This is not a diffractometer file at all." * 4)
    with pytest.raises(CorruptScan, match="Bruker RAW"):
        read_scan(fake)
    assert is_complete(fake) is False


def test_unknown_content_and_extension_is_unsupported(tmp_path: Path) -> None:
    odd = tmp_path / "notes.docx"
    odd.write_bytes(b"PK\x05\x06" + bytes(18))
    with pytest.raises(UnsupportedFormat, match="not a scan format"):
        read_scan(odd)
    with pytest.raises(UnsupportedFormat):
        detect_format(odd)


# --------------------------------------------------------------------------- file safety


def test_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.raw"
    empty.touch()
    with pytest.raises(TruncatedScan, match="empty"):
        read_scan(empty)
    assert is_complete(empty) is False


def test_directory_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "looks_like.raw"
    folder.mkdir()
    with pytest.raises(NotAScanFile, match="folder"):
        read_scan(folder)
    assert is_complete(folder) is False


def test_symlink_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "link.raw"
    link.symlink_to(FIXTURES / "BT86.raw")
    with pytest.raises(NotAScanFile, match="symbolic link"):
        read_scan(link)
    assert is_complete(link) is False


def test_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.raw"
    os.mkfifo(fifo)
    with pytest.raises(NotAScanFile, match="not a regular file"):
        read_scan(fifo)
    assert is_complete(fifo) is False


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NotAScanFile, match="does not exist"):
        read_scan(tmp_path / "gone.raw")
    assert is_complete(tmp_path / "gone.raw") is False


def test_huge_file_is_refused_before_reading(tmp_path: Path) -> None:
    huge = tmp_path / "huge.xy"
    with huge.open("wb") as fh:  # sparse: costs no disk
        fh.truncate(300 * 2**20)
    with pytest.raises(UnsafeScan, match="limit"):
        read_scan(huge)
    small_limit = tmp_path / "small.raw"
    small_limit.write_bytes((FIXTURES / "BT86.raw").read_bytes())
    with pytest.raises(UnsafeScan):
        read_scan(small_limit, max_bytes=1000)


def test_errors_carry_the_path_and_a_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.raw"
    bad.write_bytes(b"RAW1.01\0" + bytes(100))
    with pytest.raises(ScanError) as info:
        read_scan(bad)
    assert info.value.path == bad
    assert "ends at byte 108" in info.value.reason


# --------------------------------------------------------------------------- wavelength rule


def test_file_wavelength_wins_over_the_default() -> None:
    scan = read_scan(FIXTURES / "BT86.raw", wavelength=Wavelength.for_anode("Mo"))
    assert scan.anode == "Cu"


def test_missing_wavelength_uses_default_or_raises(tmp_path: Path) -> None:
    xy = tmp_path / "scan.xy"
    xy.write_text("10.0 100\n10.1 120\n10.2 90\n")
    with pytest.raises(UnknownWavelength, match="wavelength"):
        read_scan(xy)
    scan = read_scan(xy, wavelength=Wavelength.for_anode("Co"))
    assert scan.anode == "Co" and scan.wavelength is not None


def test_parse_wavelength() -> None:
    assert parse_wavelength("cu").anode == "Cu"
    assert parse_wavelength(" 1.5406 ").alpha1 == 1.5406
    with pytest.raises(UnknownWavelength):
        parse_wavelength("Unobtainium")
    with pytest.raises(UnknownWavelength):
        parse_wavelength("154.06")
    with pytest.raises(UnknownWavelength):
        parse_wavelength("nan")
