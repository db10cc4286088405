import numpy as np
import pytest

from xrd_agent.pattern import MODEL_GRID
from xrd_agent.peakshape import PeakProfile, broaden


def test_broadened_peak_keeps_area_and_position():
    y = broaden(np.array([20.0]), np.array([3.0]))
    assert MODEL_GRID[np.argmax(y)] == pytest.approx(20.0, abs=0.01)
    # area (sum x step / step) ~ intensity; the pseudo-Voigt tails beyond the window are small
    assert y.sum() == pytest.approx(3.0, rel=0.05)


def test_width_grows_with_angle_and_scale():
    p = PeakProfile()
    assert p.fwhm(np.array([45.0]))[0] > p.fwhm(np.array([10.0]))[0]
    narrow = broaden(np.array([20.0]), np.array([1.0]))
    wide = broaden(np.array([20.0]), np.array([1.0]), fwhm_scale=3.0)
    assert wide.max() < narrow.max()


def test_peaks_outside_grid_and_bad_values_are_ignored():
    y = broaden(np.array([2.0, 70.0, np.nan, 25.0]), np.array([1.0, 1.0, 1.0, -1.0]))
    assert not y.any()
