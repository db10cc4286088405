"""The pattern simulator: physics on simple cases, agreement with pymatgen on CoRE MOFs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from xrd_agent.errors import StructureError
from xrd_agent.library.cif import parse_cif, same_phase
from xrd_agent.library.simulate import Crystal, SimulationSettings, StructureTooLarge, simulate
from xrd_agent.pattern import GRID_POINTS, MODEL_GRID
from xrd_agent.peakshape import broaden

CIF_DIR = Path(__file__).parent / "data" / "cif"

#: 20 small-cell CoRE MOF 2019-ASR structures (30-120 atoms, distinct stems, taken in
#: sha256 order of the file name): the pymatgen agreement set.
AGREEMENT_SET = (
    "SUHHOT_clean", "POHLOP_clean", "VEFLUP_clean", "PECMOB_clean", "KINDOC_clean",
    "CDLGLU10_clean", "CEZMUR_charged", "FUTCAZ_clean", "ICORAV_ion_b", "GAXDIS10_clean",
    "SALLAT_clean", "VAZMIU_clean", "LACJAC_clean", "CELZEA_clean", "POKVUI_clean",
    "JOSNAG_clean", "DACXOV_clean", "PESTUD_clean", "ODIXEG_clean", "PEDGUA_clean",
)


def _cubic(a: float, frac, elements) -> Crystal:
    return Crystal(np.eye(3) * a, np.asarray(frac, float), tuple(elements), np.ones(len(elements)))


def test_nacl_peaks_fall_where_bragg_puts_them():
    parsed = parse_cif((CIF_DIR / "NaCl.cif").read_text(), "NaCl.cif")
    assert len(parsed.crystal) == 8  # Fm-3m expanded from two sites
    sim = simulate(parsed.crystal)
    lam, a = 1.5406, 5.6402
    expected = {(1, 1, 1), (2, 0, 0), (2, 2, 0)}  # allowed (all odd or all even) below 50 deg
    got = {tuple(sorted(map(abs, h), reverse=True)) for h in sim.hkl.tolist()}
    assert got == expected
    for tt, hkl in zip(sim.two_theta, sim.hkl):
        d = a / np.sqrt(np.sum(np.asarray(hkl) ** 2))
        assert tt == pytest.approx(np.degrees(2 * np.arcsin(lam / (2 * d))), abs=1e-6)
    assert sim.intensity.max() == 1.0 and sim.hkl[np.argmax(sim.intensity)].tolist() == [2, 0, 0]
    # (111) is weak for NaCl: f(Cl) - f(Na) against f(Cl) + f(Na) for (200)
    assert 0.02 < sim.intensity[0] < 0.2
    assert sim.pattern.shape == (GRID_POINTS,) and sim.pattern.dtype == np.float32
    assert sim.pattern.max() == pytest.approx(1.0)
    assert MODEL_GRID[np.argmax(sim.pattern)] == pytest.approx(31.70, abs=0.02)


def test_body_centred_extinctions_and_occupancy():
    # two identical atoms at 0,0,0 and 1/2,1/2,1/2: h+k+l odd is extinct
    full = simulate(_cubic(4.0, [[0, 0, 0], [0.5, 0.5, 0.5]], ["Fe", "Fe"]))
    assert all(sum(h) % 2 == 0 for h in full.hkl.tolist())
    # half occupancy on the body centre: h+k+l odd reappears (CsCl-like contrast)
    half = Crystal(np.eye(3) * 4.0, np.array([[0, 0, 0], [0.5, 0.5, 0.5]]), ("Fe", "Fe"), np.array([1.0, 0.5]))
    assert any(sum(h) % 2 == 1 for h in simulate(half).hkl.tolist())


def test_debye_waller_weakens_high_angles():
    crystal = _cubic(5.0, [[0, 0, 0], [0.25, 0.25, 0.25]], ["Zn", "S"])
    cold = simulate(crystal)
    warm = simulate(crystal, SimulationSettings(b_iso=(("Zn", 3.0), ("S", 3.0))))
    assert np.allclose(cold.two_theta, warm.two_theta)
    ratio = warm.intensity / cold.intensity
    assert ratio[-1] < ratio[0]


def test_bad_structures_raise_structure_error():
    with pytest.raises(StructureError):
        simulate(Crystal(np.eye(3) * 5, np.zeros((0, 3)), (), np.zeros(0)))
    with pytest.raises(StructureError):
        simulate(_cubic(5.0, [[0, 0, 0]], ["Xx"]))
    with pytest.raises(StructureTooLarge):
        simulate(_cubic(60.0, np.random.default_rng(0).random((50, 3)), ["C"] * 50),
                 SimulationSettings(max_cost=1e5))
    with pytest.raises(StructureError, match="cannot be read"):
        parse_cif((CIF_DIR / "bad_truncated.cif").read_text(), "bad_truncated.cif")


def test_same_phase_rule_uses_cells_not_patterns():
    a = (10.0, 12.0, 14.0, 90.0, 90.0, 90.0)
    assert same_phase(a, (12.2, 10.1, 14.1, 90.0, 90.0, 90.0))
    assert not same_phase(a, (10.0, 12.0, 16.0, 90.0, 90.0, 90.0))  # c off by 14 %
    assert not same_phase(a, (10.0, 12.0, 14.0, 60.0, 90.0, 90.0))  # same lengths, volume off


@pytest.fixture(scope="module")
def agreement_cifs() -> dict[str, str]:
    pytest.importorskip("CoRE_MOF")
    from xrd_agent.library.coremof import iter_cifs

    texts = {name: text for _, name, text in iter_cifs({"2019-ASR": set(AGREEMENT_SET)})}
    assert set(texts) == set(AGREEMENT_SET)
    return texts


def test_agrees_with_pymatgen_on_20_coremof_structures(agreement_cifs):
    """Same wavelength, range and broadening applied to pymatgen's sticks: cosine >= 0.99."""
    from pymatgen.analysis.diffraction.xrd import XRDCalculator
    from pymatgen.core import Structure

    calc = XRDCalculator(wavelength=1.5406)
    cosines = {}
    for name in AGREEMENT_SET:
        text = agreement_cifs[name]
        ours = simulate(parse_cif(text, name).crystal).pattern.astype(float)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = calc.get_pattern(Structure.from_str(text, fmt="cif"), two_theta_range=(5, 50))
        theirs = broaden(np.asarray(ref.x), np.asarray(ref.y))
        cosines[name] = float(ours @ theirs / np.linalg.norm(ours) / np.linalg.norm(theirs))
    assert len(cosines) == 20
    assert min(cosines.values()) >= 0.99, cosines
