import dataclasses

import numpy as np
import pytest

from xrd_agent.errors import CorruptScan, ScanError, UnknownWavelength
from xrd_agent.scan import ANODE_LINES, CU_KALPHA1, Scan, ScanRange, Wavelength, to_cu_two_theta


def make_scan(*ranges: ScanRange) -> Scan:
    return Scan(ranges=ranges, source_path="x.xy", format="text", format_version="1", sha256="0" * 64)


def test_range_is_read_only_and_ascending():
    r = ScanRange(two_theta=[10.0, 9.0, 8.0], intensity=[1.0, 2.0, 3.0])
    assert list(r.two_theta) == [8.0, 9.0, 10.0]
    assert list(r.intensity) == [3.0, 2.0, 1.0]
    with pytest.raises(ValueError):
        r.two_theta[0] = 1.0


def test_range_refuses_mismatched_arrays():
    with pytest.raises(ValueError):
        ScanRange(two_theta=[1.0, 2.0], intensity=[1.0])


def test_scan_merges_ranges_in_ascending_order():
    scan = make_scan(ScanRange([30.0, 31.0], [5.0, 6.0]), ScanRange([10.0, 11.0], [1.0, 2.0]))
    assert list(scan.two_theta) == [10.0, 11.0, 30.0, 31.0]
    assert list(scan.intensity) == [1.0, 2.0, 5.0, 6.0]
    assert [r["points"] for r in scan.summary()["ranges"]] == [2, 2]
    with pytest.raises(dataclasses.FrozenInstanceError):
        scan.sample_id = "other"  # type: ignore[misc]


@pytest.mark.parametrize("anode", sorted(ANODE_LINES))
def test_same_d_spacing_lands_on_same_cu_angle(anode):
    # A reflection with d = 4 angstrom measured with any anode appears at the Cu angle of d = 4.
    d = 4.0
    lam = ANODE_LINES[anode][0]
    measured = 2 * np.degrees(np.arcsin(lam / (2 * d)))
    expected = 2 * np.degrees(np.arcsin(CU_KALPHA1 / (2 * d)))
    assert to_cu_two_theta(np.array([measured]), lam)[0] == pytest.approx(expected, abs=1e-9)


def test_unreachable_d_spacing_is_nan():
    # Mo at 60 deg reaches d = 0.71 A, which Cu cannot reach (d_min(Cu) = 0.77 A).
    assert np.isnan(to_cu_two_theta(np.array([60.0]), ANODE_LINES["Mo"][0])[0])


def test_wavelength_for_anode():
    w = Wavelength.for_anode("'cu'")
    assert w.anode == "Cu" and w.primary == pytest.approx(1.540598)
    with pytest.raises(UnknownWavelength):
        Wavelength.for_anode("W")


def test_error_family_mixes_in_builtins():
    err = CorruptScan("header says 10 points, file holds 3", "a.raw")
    assert isinstance(err, ScanError) and isinstance(err, ValueError)
    assert err.reason in str(err) and err.code == "corrupt"
