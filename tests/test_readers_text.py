"""Plain-text, UXD and XRDML readers: the layouts labs really write, and the ways they break."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import FIXTURES
from xrd_agent.errors import CorruptScan, ScanError, UnsafeScan, UnsupportedFormat
from xrd_agent.readers import detect_format, is_complete, read_scan, text
from xrd_agent.scan import Wavelength

CU = Wavelength.for_anode("Cu")


def _scan(tmp_path: Path, content: str | bytes, name: str = "scan.xy"):
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return read_scan(path, wavelength=CU)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("plain.xy", "10.00 100\n10.02 120\n10.04 90\n"),
        ("tabs.xye", "# 2theta\tcounts\tesd\n10.00\t100\t10\n10.02\t120\t10.9\n10.04\t90\t9.5\n"),
        ("excel.csv", "2Theta,Counts\n10.00,100\n10.02,120\n10.04,90\n"),
        ("german.csv", "Winkel;Intensität\n10,00;100\n10,02;120\n10,04;90\n"),
        ("crlf.txt", "Sample: MOF-5\r\n; scan 1\r\n10.00  100\r\n10.02  120\r\n\r\n10.04  90\r\n"),
        ("bom.dat", "\ufeff10.00 100\n10.02 120\n10.04 90"),
        ("descending.xy", "10.04 90\n10.02 120\n10.00 100\n"),
        ("sci.xy", "1.000E+01 1.00E+02\n1.002e1 1.2e2\n1.004E+01 9.0E+01\n"),
        ("count_line.xy", "3\n10.00 100\n10.02 120\n10.04 90\n"),
    ],
)
def test_text_layouts(tmp_path: Path, name: str, content: str) -> None:
    scan = _scan(tmp_path, content, name)
    assert scan.format == "text"
    np.testing.assert_allclose(scan.two_theta, [10.0, 10.02, 10.04])
    np.testing.assert_allclose(scan.intensity, [100, 120, 90])
    assert scan.step == pytest.approx(0.02)
    assert scan.anode == "Cu"  # the caller's wavelength: text never says


def test_three_columns_are_recorded(tmp_path: Path) -> None:
    scan = _scan(tmp_path, "10 1 0.1\n11 2 0.2\n", "scan.xye")
    assert scan.format_version == "3 columns" and "uncertainty" in scan.metadata["columns"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("10 1 2 3\n11 2 3 4\n", "have 4 columns; expected 2"),
        ("10 1\n11 2 3\n", "3 columns where the data has 2"),
        ("10 1\n11 2\nERROR detector\n12 3\n", "line 3 is not a row of numbers"),
        ("just a header\n", "no rows of numbers"),
        ("10 1\n", "1 point"),
        ("10 1\n11 nan\n12 3\n", "not finite"),
        ("10 1\n11 inf\n12 3\n", "not finite"),
        ("10 1\n9 2\n12 3\n", "goes backwards"),
        ("10 1\n10 2\n", "does not advance"),
        ("1e300 1\n2e300 2\n", "not a real angle"),
    ],
)
def test_bad_text_is_corrupt_with_a_reason(tmp_path: Path, content: str, reason: str) -> None:
    with pytest.raises(CorruptScan, match=reason):
        _scan(tmp_path, content)


def test_non_utf8_text(tmp_path: Path) -> None:
    with pytest.raises(CorruptScan, match=r"line 2, value 0xb0\) is not UTF-8"):
        _scan(tmp_path, b"# 2theta counts\n# angle in \xb0\n10 1\n11 2\n")


def test_binary_junk_named_like_text(tmp_path: Path) -> None:
    with pytest.raises(CorruptScan, match="binary"):
        _scan(tmp_path, bytes(range(256)) * 4, "junk.dat")


def test_text_sniff() -> None:
    assert text.sniff(b"# header\n10 1\n11 2\n12 3\n")
    assert text.sniff(b"10,1\n11,2\n12,3")
    assert not text.sniff(b"10 1\n11 2 3\n12 3\n")
    assert not text.sniff(b"\x00\x01binary\n1 2\n3 4\n5 6\n")
    head = "10 1\n11 2\n12 3\n13 4\n" + "14 5\n" * 800 + "é"  # a character cut at the end
    assert text.sniff(head.encode()[:-1])


def test_unfinished_text_is_not_complete(tmp_path: Path) -> None:
    path = tmp_path / "growing.xy"
    path.write_text("10 1\n11 2\n12 3")
    assert is_complete(path) is False
    path.write_text("10 1\n11 2\n12 3\n")
    assert is_complete(path) is True


def test_text_found_by_content_without_extension(tmp_path: Path) -> None:
    path = tmp_path / "export_0001"
    path.write_text("10 1\n11 2\n12 3\n")
    assert detect_format(path) == "text"


# --------------------------------------------------------------------------- UXD


UXD_COUNTS = """; hand-written, as XCH writes it
_FILEVERSION=1
_SAMPLE='ZIF-8'
_WL1=1.788970
_ANODE='Co'
; (Data for Range number 1)
_DRIVE='COUPLED'
_STEPTIME=1.0
_STEPSIZE=0.05
_START=5.0
_COUNTS
  10 20 30 40
  50 60
; (Data for Range number 2)
_DRIVE='COUPLED'
_STEPSIZE=0.1
_START=20.0
_COUNTS
  7 8 9
"""


def test_uxd_counts_blocks(tmp_path: Path) -> None:
    scan = _scan(tmp_path, UXD_COUNTS, "zif8.uxd")
    assert (scan.format, scan.sample_id, scan.anode) == ("uxd", "ZIF-8", "Co")
    assert scan.wavelength is not None and scan.wavelength.alpha1 == pytest.approx(1.78897)
    assert [r.points for r in scan.ranges] == [6, 3]
    np.testing.assert_allclose(scan.ranges[0].two_theta, 5.0 + 0.05 * np.arange(6))
    np.testing.assert_allclose(scan.ranges[1].intensity, [7, 8, 9])
    assert scan.ranges[1].scan_type == "COUPLED"


def test_uxd_latin1_sample_name_is_kept(tmp_path: Path) -> None:
    scan = _scan(tmp_path, UXD_COUNTS.replace("ZIF-8", "Probe M\xfcller").encode("latin-1"), "m.uxd")
    assert scan.sample_id == "Probe Müller"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("_FILEVERSION=1\n_DRIVE='C'\n_2THETACOUNTS\n10 1\n11\n", "2 angles but 1 intensities"),
        ("_FILEVERSION=1\n_DRIVE='C'\n_START=1\n_STEPSIZE=1\n_COUNTS\n1 2\n_COUNTS\n3 4\n", "data columns"),
        ("_FILEVERSION=1\n_SAMPLE='x'\n", "no data section"),
        ("_FILEVERSION=1\n_DRIVE='C'\n_2THETACOUNTS\n10 1\n11 z\n", "malformed"),
        ("_FILEVERSION=1\n_DRIVE='C'\n_2THETACOUNTS\n10 1\n11 \xff\xfe\n", "malformed"),
    ],
)
def test_bad_uxd(tmp_path: Path, content: str, reason: str) -> None:
    with pytest.raises(CorruptScan, match=reason):
        _scan(tmp_path, content.encode("latin-1"), "bad.uxd")


# --------------------------------------------------------------------------- XRDML


def test_xrdml_with_a_dtd_is_refused(tmp_path: Path) -> None:
    original = (FIXTURES / "empyrean.xrdml").read_text()
    bomb = original.replace(
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>',
    )
    with pytest.raises(UnsafeScan, match="DOCTYPE"):
        _scan(tmp_path, bomb, "bomb.xrdml")


def test_xrdml_cut_short(tmp_path: Path) -> None:
    data = (FIXTURES / "empyrean.xrdml").read_bytes()
    path = tmp_path / "cut.xrdml"
    for end in (100, len(data) // 2, len(data) - 30):
        path.write_bytes(data[:end])
        with pytest.raises(CorruptScan):
            read_scan(path)
        assert is_complete(path) is False


def test_xrdml_unfinished_and_non_2theta_scans(tmp_path: Path) -> None:
    original = (FIXTURES / "empyrean.xrdml").read_text()
    running = original.replace('scanAxis="2Theta" status="Completed"', 'scanAxis="2Theta" status="Aborted"')
    path = tmp_path / "aborted.xrdml"
    path.write_text(running)
    assert read_scan(path).complete is False and is_complete(path) is False
    gap = "\n\t\t\t\t\t"
    omega = original.replace(  # swap the axis names: the stepped axis becomes Omega
        f'<positions axis="2Theta" unit="deg">{gap}<startPosition>',
        f'<positions axis="Omega" unit="deg">{gap}<startPosition>',
        1,
    ).replace(
        f'<positions axis="Omega" unit="deg">{gap}<commonPosition>',
        f'<positions axis="2Theta" unit="deg">{gap}<commonPosition>',
        1,
    )
    with pytest.raises(UnsupportedFormat, match="Omega axis, not 2Theta"):
        _scan(tmp_path, omega, "omega.xrdml")


def test_every_text_failure_is_a_scan_error(tmp_path: Path) -> None:
    """Each fixture's text, cut at many points: a Scan or a ScanError, nothing else."""
    for name in ("BT86_.UXD", "empyrean.xrdml"):
        data = (FIXTURES / name).read_bytes()
        for end in range(1, len(data), max(1, len(data) // 60)):
            try:
                _scan(tmp_path, data[:end], name)
            except ScanError:
                pass


# --------------------------------------------------------------------------- the one-call fast path
# parse() hands a regular data block to numpy in one call and everything else to the
# line-by-line reference parser; these tests pin that the two never disagree.

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_NUMBER = st.one_of(
    st.integers(-10**6, 10**6).map(str),
    st.floats(-1e6, 1e6, allow_nan=False).map(repr),
    st.floats(1e-3, 1e3).map(lambda v: f"{v:.4E}"),
    st.sampled_from(["-0", ".5", "5.", "+1", "1e400", "007", "1_0", "inf", "nan", "1e", "--1", ""]),
)
_SEPARATOR = st.sampled_from([" ", "\t", "  ", " \t", ",", ", ", ";", " ; "])


@st.composite
def _row(draw) -> str:
    numbers = draw(st.lists(_NUMBER, min_size=1, max_size=4))
    sep = draw(_SEPARATOR)
    if sep.strip() == ";" and draw(st.booleans()):
        numbers = [n.replace(".", ",") for n in numbers]  # decimal comma
    pad = draw(st.sampled_from(["", " ", "\t"]))
    return pad + sep.join(numbers) + draw(st.sampled_from(["", " ", ",", ";"]))


_LINE = st.one_of(
    _row(),
    st.sampled_from(["", "   ", "\t", "# comment", "; note", "! x", "% y", "// z", "2Theta,Counts",
                     "Winkel;Intensität", "ERROR detector", "3", "5 0.01 50", ";", ",", "e", "1e5e"]),
)


@st.composite
def _text(draw) -> str:
    header = draw(st.lists(_LINE, max_size=3))
    rows = [draw(_row())] * draw(st.integers(1, 3))  # a regular block, as instruments write...
    rows += draw(st.lists(st.one_of(_LINE, st.just(rows[0])), max_size=6))  # ...then anything
    ending = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    return ending.join(header + rows) + draw(st.sampled_from(["", ending]))


def _outcome(fn, arg):
    try:
        table = fn(arg)
    except CorruptScan as exc:
        return ("error", str(exc))
    return ("table", table.shape, table.tobytes())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_text())
def test_fast_path_agrees_with_line_by_line(content: str) -> None:
    """Same array, bit for bit, or the same CorruptScan message, whichever path runs."""
    assert _outcome(text.parse, content) == _outcome(text._parse_lines, content.splitlines())


def test_fast_path_takes_regular_files_and_gives_the_same_bits(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    angles = np.linspace(5.0, 50.0, 4501)
    counts = rng.poisson(300, angles.size) + rng.random(angles.size)
    layouts = {
        "scan.xy": ("# 2theta counts\n", "{:.4f} {!r}\n"),
        "scan.xye": ("", "{:.4f}\t{!r}\t1.5e1\r\n"),
        "scan.csv": ("2Theta,Counts\n", "{:.4f},{!r}\n"),
        "german.csv": ("Winkel;Intensität\n", "{:.4f};{!r}\n"),
    }
    for name, (header, row) in layouts.items():
        body = header + "".join(row.format(a, float(c)) for a, c in zip(angles, counts))
        if name == "german.csv":
            body = header + body[len(header):].replace(".", ",")
        lines = body.splitlines()
        fast = text._parse_block(lines)
        assert fast is not None, name  # the fast path really runs on instrument-like files
        assert fast.tobytes() == text._parse_lines(lines).tobytes(), name
        scan = _scan(tmp_path, body, name)
        np.testing.assert_array_equal(scan.intensity, counts)


def test_irregular_blocks_leave_the_fast_path() -> None:
    for content in ("10 1\n# a comment\n11 2\n", "10 1\n11 2 3\n", "10 1\n11 inf\n", "10;1\n;5;6\n",
                    "10,1\n  \n11,2\n", "10 1\nEND\n", "10 1\n11\u00a02\n"):
        assert text._parse_block(content.splitlines()) is None, content
