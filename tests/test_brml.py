"""The BRML reader on the real DIFFRAC.SUITE exports, and on hostile or damaged variants of them.

Damaged files are made from the real fixtures (unzip, edit one XML member, zip again),
so every test exercises the same archive layout an instrument writes.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xrd_agent.errors import CorruptScan, ScanError, TruncatedScan, UnsafeScan, UnsupportedFormat
from xrd_agent.readers import brml

from conftest import FIXTURES

BRML_FILES = sorted(p.name for p in FIXTURES.glob("*.brml"))
SMALL = "Si-Std_SRM640d_D8D_20-97_7_16hm.brml"  # 4-field rows, folder prefix
ROOT = "23-012-AG_2thomegascan_long.brml"  # 8-field rows, entries at the zip root


def _read(name: str | Path, data: bytes | None = None):
    path = FIXTURES / name if isinstance(name, str) else name
    data = path.read_bytes() if data is None else data
    return brml.read(path, data, hashlib.sha256(data).hexdigest())


def _members(name: str) -> dict[str, bytes]:
    with zipfile.ZipFile(FIXTURES / name) as z:
        return {info.filename: z.read(info) for info in z.infolist() if not info.is_dir()}


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for name, payload in members.items():
            z.writestr(name, payload)
    return buffer.getvalue()


def _raw_name(members: dict[str, bytes]) -> str:
    return next(n for n in members if n.endswith("RawData0.xml"))


def _edited(name: str, edit: Callable[[str], str]) -> bytes:
    """The fixture with its RawData0.xml text passed through ``edit``."""
    members = _members(name)
    raw = _raw_name(members)
    members[raw] = edit(members[raw].decode("utf-8")).encode("utf-8")
    return _zip(members)


# ------------------------------------------------------------------ the real exports


@pytest.mark.parametrize("name", BRML_FILES)
def test_matches_the_independent_reader(name: str, expected: dict) -> None:
    scan = _read(name)
    want = expected[name]["ranges"]
    assert len(scan.ranges) == len(want)
    for rng, exp in zip(scan.ranges, want, strict=True):
        assert rng.points == exp["points"]
        got = [rng.two_theta[0], rng.two_theta[-1], rng.intensity[0], rng.intensity[-1], rng.intensity.max()]
        ref = [exp[k] for k in ("two_theta_first", "two_theta_last", "intensity_first", "intensity_last",
                                "intensity_max")]
        np.testing.assert_allclose(np.float32(got), np.float32(ref), rtol=1e-6)
    assert scan.format == "brml" and scan.complete
    assert scan.metadata["measurement_status"] == "Measured"


def test_every_brml_fixture_is_covered(expected: dict) -> None:
    listed = {name for name, entry in expected.items() if entry["format"].startswith("brml")}
    assert listed == set(BRML_FILES) and len(BRML_FILES) >= 4


def test_metadata_of_a_d8_advance_export() -> None:
    scan = _read("SRM1976b_260105_D8A_20-155_0.008_4s_19hm.brml")
    assert scan.sample_id == "SRM1976b_260105"
    assert scan.format_version == "8.6.4.0" and scan.software == "DIFFRAC.SUITE 8.6.4.0"
    assert scan.instrument == "BAM Berlin D8 Advance"
    assert scan.operator == "Lab Manager"
    assert scan.wavelength is not None and scan.anode == "Cu"
    assert scan.wavelength.alpha1 == pytest.approx(1.5406)
    assert scan.wavelength.alpha2 == pytest.approx(1.54439)
    assert scan.wavelength.ratio == pytest.approx(0.5)
    assert (scan.kv, scan.ma) == (40.0, 40.0)
    assert scan.time_per_step == 4.0 and scan.scan_type == "LockedCoupled"
    assert scan.step == pytest.approx(0.008177642824)
    assert scan.measured_at is not None and scan.measured_at.isoformat().startswith("2026-01-05T14:36:36")
    assert scan.measured_at.utcoffset() is not None
    assert scan.metadata["scan_mode"] == "PsdFastScan"
    assert scan.metadata["instrument_serial"] == "210481"
    assert scan.metadata["archive_folder"] == "SRM1976b_260105_D8A_20-155_0.008_4s_19hm"


def test_d6_phaser_current_and_two_drive_views() -> None:
    # Two varying views both declare TwoTheta (drive positions at field 3, scan axes at
    # field 5); the generator ran at 15 mA.
    scan = _read("A52-B128-S_20-140_0.008_4s_17h_D6Pm.brml")
    assert scan.ma == 15.0 and scan.sample_id == "A52-B128-S"


def test_entries_at_the_zip_root_are_found() -> None:
    scan = _read(ROOT)
    assert scan.sample_id == "Commander Sample ID"  # the reader reports, the profile judges
    assert "archive_folder" not in scan.metadata


@pytest.mark.parametrize("name", BRML_FILES)
def test_sniff_and_is_complete(name: str) -> None:
    path = FIXTURES / name
    assert brml.sniff(path.read_bytes()[:4096])
    assert brml.is_complete(path)


def test_sniff_refuses_other_files(tmp_path: Path) -> None:
    for other in ("BT86.raw", "TwoTheta_scan_scrambled.raw", "empyrean.xrdml"):
        assert not brml.sniff((FIXTURES / other).read_bytes()[:4096])
    office = _zip({"[Content_Types].xml": b"<Types/>", "word/document.xml": b"<w/>"})
    assert not brml.sniff(office[:4096])
    with pytest.raises(CorruptScan, match="no Experiment"):
        brml.read(tmp_path / "x.brml", office, "")


def test_read_through_the_registry() -> None:
    from xrd_agent.readers import read_scan

    scan = read_scan(FIXTURES / SMALL)
    assert scan.format == "brml" and scan.ranges[0].points == 9227


# ------------------------------------------------------------------ variants of the format


def test_several_ranges_and_raw_data_members() -> None:
    members = _members(SMALL)
    raw = _raw_name(members)
    text = members[raw].decode()
    route = re.search(r"<DataRoute .*?</DataRoute>", text, re.S).group(0)
    # A second route in the same RawData, and a RawData1 listed in DataContainer.
    members[raw] = text.replace("</DataRoutes>", route + "</DataRoutes>").encode()
    members[raw.replace("RawData0", "RawData1")] = text.encode()
    container = next(n for n in members if n.endswith("DataContainer.xml"))
    members[container] = members[container].replace(
        b"<string>Experiment0/RawData0.xml</string>",
        b"<string>Experiment0/RawData0.xml</string><string>Experiment0/RawData1.xml</string>",
    )
    scan = _read(Path("multi.brml"), _zip(members))
    assert len(scan.ranges) == 3
    assert all(r.points == 9227 for r in scan.ranges)
    assert scan.two_theta.size == 3 * 9227 and np.all(np.diff(scan.two_theta) >= 0)
    assert scan.metadata["raw_data_members"].count("RawData") == 2


def test_unfinished_measurement_is_returned_with_complete_false(tmp_path: Path) -> None:
    def abort(text: str) -> str:
        text = text.replace("<MeasurementStatus>Measured</MeasurementStatus>",
                            "<MeasurementStatus>Aborted</MeasurementStatus>")
        text = text.replace('MeasuredSteps="9227"', 'MeasuredSteps="5000"')
        rows = text.split("<Datum>")
        return "<Datum>".join(rows[:5001]) + "<Datum>" + rows[-1].split("</Datum>", 1)[0] + "</Datum>" + \
            rows[-1].split("</Datum>", 1)[1]

    data = _edited(SMALL, abort)
    scan = _read(tmp_path / "aborted.brml", data)
    assert not scan.complete
    assert "Aborted" in scan.metadata["incomplete_reason"]
    assert "of 9227 planned steps" in scan.metadata["incomplete_reason"]
    (tmp_path / "aborted.brml").write_bytes(data)
    assert not brml.is_complete(tmp_path / "aborted.brml")


def test_rows_without_positions_take_two_theta_from_the_scan_axis() -> None:
    def strip_positions(text: str) -> str:
        text = re.sub(r"<DataViews>.*?</DataViews>", "", text, flags=re.S)
        return re.sub(r"<Datum>(\d+),(\d+),[^,<]+,([^<]+)</Datum>", r"<Datum>\1,\2,\3</Datum>", text)

    scan = _read(Path("old.brml"), _edited(SMALL, strip_positions))
    reference = _read(SMALL)
    np.testing.assert_array_equal(scan.intensity, reference.intensity)
    np.testing.assert_allclose(scan.two_theta, reference.two_theta, atol=1e-3)
    assert "scan axis" in scan.metadata["two_theta_source"]


def test_blanked_points_are_dropped() -> None:
    scan = _read(Path("blank.brml"), _edited(SMALL, lambda t: t.replace(",17284</Datum>", ",-9999</Datum>", 1)))
    assert scan.ranges[0].points == 9226 and scan.metadata["blanked_points"] == "1"
    assert -9999 not in scan.intensity


def test_rocking_curve_is_not_a_powder_pattern() -> None:
    def omega_only(text: str) -> str:
        text = text.replace('AxisId="TwoTheta"', 'AxisId="Omega"').replace("FieldName=\"TwoTheta\"",
                                                                           "FieldName=\"Omega\"")
        return text

    with pytest.raises(UnsupportedFormat, match="2-theta does not vary"):
        _read(Path("rc.brml"), _edited(SMALL, omega_only))


# ------------------------------------------------------------------ damaged files


def test_ragged_and_non_numeric_rows_name_the_row() -> None:
    with pytest.raises(CorruptScan, match="row 3 has 5 fields"):
        _read(Path("r.brml"), _edited(SMALL, lambda t: t.replace("10.0189,17366", "10.0189,1,17366")))
    with pytest.raises(CorruptScan, match="row 2 holds 'x17284'"):
        _read(Path("n.brml"), _edited(SMALL, lambda t: t.replace(",17284<", ",x17284<")))
    with pytest.raises(CorruptScan, match="NaN or infinity"):
        _read(Path("i.brml"), _edited(SMALL, lambda t: t.replace(",17284<", ",inf<")))


def test_broken_xml_and_bad_encoding() -> None:
    with pytest.raises(CorruptScan, match="not well-formed XML"):
        _read(Path("b.brml"), _edited(SMALL, lambda t: t[: len(t) // 2]))
    members = _members(SMALL)
    raw = _raw_name(members)
    members[raw] = members[raw].replace(b"Lab Manager", "Lab Manager \xe9".encode("latin-1"))
    with pytest.raises(CorruptScan, match="not valid UTF-8"):
        _read(Path("e.brml"), _zip(members))


def test_missing_listed_member() -> None:
    members = _members(SMALL)
    del members[_raw_name(members)]
    with pytest.raises(CorruptScan, match="does not contain it"):
        _read(Path("m.brml"), _zip(members))


def test_not_a_zip_and_empty_zip(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedFormat):
        brml.read(tmp_path / "a.brml", b"<?xml version='1.0'?><RawData/>", "")
    with pytest.raises(CorruptScan, match="empty"):
        brml.read(tmp_path / "a.brml", _zip({}), "")
    with pytest.raises(TruncatedScan):
        brml.read(tmp_path / "a.brml", b"PK", "")


def test_truncation_at_any_byte_is_a_clean_error(tmp_path: Path) -> None:
    data = (FIXTURES / SMALL).read_bytes()
    cuts = sorted({*range(0, 64), *np.linspace(64, len(data) - 1, 40).astype(int).tolist(),
                   *range(len(data) - 40, len(data))})
    target = tmp_path / "partial.brml"
    for cut in cuts:
        with pytest.raises(ScanError) as info:
            brml.read(target, data[:cut], "")
        assert isinstance(info.value, (TruncatedScan, UnsupportedFormat)), (cut, info.value)
    target.write_bytes(data[: len(data) // 2])
    assert not brml.is_complete(target)


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(position=st.integers(min_value=0), value=st.integers(min_value=0, max_value=255))
def test_a_damaged_byte_never_escapes_as_a_traceback(position: int, value: int) -> None:
    data = bytearray((FIXTURES / SMALL).read_bytes())
    position %= len(data)
    data[position] = value
    try:
        scan = brml.read(Path("damaged.brml"), bytes(data), "")
    except ScanError:
        return
    assert scan.ranges[0].points > 0


def test_is_complete_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    assert not brml.is_complete(tmp_path)
    assert not brml.is_complete(tmp_path / "missing.brml")
    link = tmp_path / "link.brml"
    link.symlink_to(FIXTURES / SMALL)
    assert not brml.is_complete(link)


# ------------------------------------------------------------------ attacks


@pytest.mark.parametrize(
    "prolog",
    [
        '<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;">]>',
        '<!DOCTYPE RawData [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
        '<!DOCTYPE RawData SYSTEM "http://example.invalid/evil.dtd">',
    ],
)
def test_dtd_and_entities_are_refused(prolog: str) -> None:
    data = _edited(SMALL, lambda t: t.replace('<?xml version="1.0"?>', '<?xml version="1.0"?>' + prolog, 1))
    with pytest.raises(UnsafeScan, match="DOCTYPE"):
        _read(Path("evil.brml"), data)


def test_highly_compressed_member_is_refused() -> None:
    members = _members(SMALL)
    members[_raw_name(members)] = b"<RawData>" + b" " * (16 * 2**20) + b"</RawData>"
    with pytest.raises(UnsafeScan, match="zip bomb"):
        _read(Path("bomb.brml"), _zip(members))


def test_total_size_and_member_count_caps(monkeypatch: pytest.MonkeyPatch) -> None:
    data = (FIXTURES / SMALL).read_bytes()
    monkeypatch.setattr(brml, "MAX_TOTAL_UNCOMPRESSED", 2**20)
    with pytest.raises(UnsafeScan, match="would unpack"):
        _read(SMALL, data)
    monkeypatch.undo()
    many = {f"Experiment0/junk{i}.xml": b"" for i in range(brml.MAX_MEMBERS + 1)}
    with pytest.raises(UnsafeScan, match="entries"):
        brml.read(Path("many.brml"), _zip(many), "")


def test_declared_size_lie_is_caught() -> None:
    # Forge the central directory so RawData0 claims a smaller size than it unpacks to.
    data = bytearray(_zip(_members(SMALL)))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
        info = next(i for i in z.infolist() if i.filename.endswith("RawData0.xml"))
    name = info.filename.encode()
    central = next(m.start() for m in re.finditer(re.escape(b"PK\x01\x02"), bytes(data))
                   if data[m.start() + 46 : m.start() + 46 + len(name)] == name)
    data[central + 24 : central + 28] = (1000).to_bytes(4, "little")
    with pytest.raises(CorruptScan, match="checksum mismatch"):
        _read(Path("liar.brml"), bytes(data))


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA, 99])
def test_wrong_compression_method_is_a_clean_error(method: int) -> None:
    # Deflated bytes relabelled as bzip2 / LZMA / an unknown method, in both headers.
    members = _members(SMALL)
    raw = _raw_name(members)
    data = bytearray(_zip(members))
    name = raw.encode()
    for signature, method_at, name_at in ((b"PK\x03\x04", 8, 30), (b"PK\x01\x02", 10, 46)):
        for m in re.finditer(re.escape(signature), bytes(data)):
            if data[m.start() + name_at : m.start() + name_at + len(name)] == name:
                data[m.start() + method_at : m.start() + method_at + 2] = method.to_bytes(2, "little")
    with pytest.raises(CorruptScan, match="RawData0.xml"):
        _read(Path("method.brml"), bytes(data))
