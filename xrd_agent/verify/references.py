"""What the physics check needs of each library class, computed once at load.

Per class: reflections as d-spacings with m|F|^2 (no Lorentz-polarisation factor, so any
wavelength can use them), hkl, the reference cell's reciprocal metric tensor split into the six
terms of 1/d^2 = A h^2 + B k^2 + C l^2 + D kl + E hl + F hk, and which terms the cell's metric
symmetry ties together.

CoRE clean CIFs are mostly written in P1, so the space group says nothing: the metric
symmetry is read from the cell itself. Terms of equal value are one free parameter and zero
terms stay zero: cubic 1 group, tetragonal/hexagonal/rhombohedral 2 (hexagonal: A = B = F), orthorhombic 3,
monoclinic 4, triclinic 6; a rhombohedral cell at 60 or 109.47 deg, the primitive cell of a centred
cubic lattice, is cubic. Scaling each group's terms by p moves the lattice while keeping
its symmetry.

Two sources: the library's optional ``fit.npz`` (absolute |F|^2, any d range, cell mass for
weight fractions: :mod:`xrd_agent.library.fitdata`), else the 5-50 deg Cu sticks of
``sticks.npz`` with their Lorentz-polarisation factor divided out (relative |F|^2: ranking
works, weight fractions are not reported).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xrd_agent.library.artifact import Library
from xrd_agent.library.fitdata import FIT_FILE, FitTable
from xrd_agent.library.simulate import CU_KA1

#: Terms equal within this relative tolerance are tied by symmetry.
SYMMETRY_RTOL = 2e-3
#: An off-diagonal term is zero when |cos| of its reciprocal angle is below this.
ZERO_COS = 2e-3


def lorentz_polarisation(theta: np.ndarray) -> np.ndarray:
    """Unpolarised Bragg-Brentano LP factor, as the simulator (pymatgen) uses."""
    return (1.0 + np.cos(2 * theta) ** 2) / (np.sin(theta) ** 2 * np.cos(theta))


def metric_tensor(cell: np.ndarray) -> np.ndarray:
    a, b, c = cell[:3]
    al, be, ga = np.radians(cell[3:6])
    return np.array([[a * a, a * b * np.cos(ga), a * c * np.cos(be)],
                     [a * b * np.cos(ga), b * b, b * c * np.cos(al)],
                     [a * c * np.cos(be), b * c * np.cos(al), c * c]])


def cell_from_reciprocal(gstar: np.ndarray) -> np.ndarray:
    """(a, b, c, alpha, beta, gamma) of the cell whose reciprocal metric is ``gstar``."""
    g = np.linalg.inv(gstar)
    a, b, c = np.sqrt(np.diag(g))
    al = np.degrees(np.arccos(np.clip(g[1, 2] / (b * c), -1, 1)))
    be = np.degrees(np.arccos(np.clip(g[0, 2] / (a * c), -1, 1)))
    ga = np.degrees(np.arccos(np.clip(g[0, 1] / (a * b), -1, 1)))
    return np.array([a, b, c, al, be, ga])


def term_values(gstar: np.ndarray) -> np.ndarray:
    """The six coefficients (A, B, C, D, E, F) of 1/d^2 in h^2, k^2, l^2, kl, hl, hk."""
    return np.array([gstar[0, 0], gstar[1, 1], gstar[2, 2], 2 * gstar[1, 2], 2 * gstar[0, 2], 2 * gstar[0, 1]])


def monomials(hkl: np.ndarray) -> np.ndarray:
    h, k, l = (hkl[:, i].astype(float) for i in range(3))
    return np.stack([h * h, k * k, l * l, k * l, h * l, h * k], axis=1)


def symmetry_groups(gstar: np.ndarray) -> np.ndarray:
    """Group index (0..g-1) per term, -1 for terms fixed at zero."""
    v = term_values(gstar)
    diag = np.sqrt(np.diag(gstar))
    pair = np.array([diag[0] ** 2, diag[1] ** 2, diag[2] ** 2, 2 * diag[1] * diag[2], 2 * diag[0] * diag[2],
                     2 * diag[0] * diag[1]])
    groups = np.full(6, -1)
    values: list[float] = []
    for j in range(6):
        if j >= 3 and abs(v[j]) < ZERO_COS * pair[j]:
            continue
        for gi, val in enumerate(values):
            if abs(v[j] - val) <= SYMMETRY_RTOL * max(abs(v[j]), abs(val)):
                groups[j] = gi
                break
        else:
            groups[j] = len(values)
            values.append(float(v[j]))
    if groups.max() == 1 and len(set(groups[:3])) == 1 and len(set(groups[3:])) == 1 and groups[3] >= 0:
        # A rhombohedral metric at 60 or 109.47 deg is the primitive cell of a face- or
        # body-centred cubic lattice (CoRE writes UiO-66, MOF-5, HKUST-1 and MIL-101 that way):
        # its symmetry is cubic, one parameter. Left rhombohedral, the angle was free, and
        # MIL-101(Cr) sheared by 2 deg and stretched by 8 % passed as a second phase of a UiO-66 scan.
        cos = gstar[0, 1] / np.sqrt(gstar[0, 0] * gstar[1, 1])
        if min(abs(cos + 1.0 / 3.0), abs(cos - 0.5)) < ZERO_COS:
            groups[3:] = groups[0]
    return groups


#: The two axes each cross term of 1/d^2 couples: kl, hl, hk.
CROSS_AXES = ((1, 2), (0, 2), (0, 1))


def axis_moves(groups: np.ndarray) -> np.ndarray:
    """(G, G): how each group's ln p moves when one group moves by 1 with the cell's angles held.

    Stretching axes i and j by e_i and e_j scales the reciprocal metric's term ij by
    1 / ((1 + e_i)(1 + e_j)): in ln p a cross term follows the mean of its two axes' diagonal
    terms. Searched one group at a time with the cross terms held, an oblique cell whose axes
    moved apart (a breathing monoclinic framework) is reached only by also shearing it, and a
    coordinate search stopped at a wrong cell. Row g: a move of group g, with the cross-only
    groups following; a cross-only group's own row moves the angle alone."""
    n = int(groups.max()) + 1 if groups.size and groups.max() >= 0 else 0
    out = np.eye(n)
    for g in range(n):
        axes = {i for i in range(3) if groups[i] == g}
        if not axes:
            continue
        for h in range(n):
            terms = [j for j in range(3, 6) if groups[j] == h]
            if h == g or not terms or any(groups[i] == h for i in range(3)):
                continue
            out[g, h] = float(np.mean([len(axes & set(CROSS_AXES[j - 3])) / 2.0 for j in terms]))
    return out


@dataclass(frozen=True, eq=False)
class Reference:
    """One class, ready to fit."""

    index: int
    refcode: str
    name: str
    d: np.ndarray  # Angstrom, from the reference cell (consistent with ``basis``)
    f2: np.ndarray  # m|F|^2 (absolute when ``absolute``)
    hkl: np.ndarray  # float (M, 3)
    basis: np.ndarray  # (M, G): contribution of each symmetry group to 1/d^2 at the reference cell
    groups: np.ndarray  # (6,) term -> group
    gstar: np.ndarray  # reference reciprocal metric
    cell: np.ndarray  # reference (a, b, c, alpha, beta, gamma)
    cell_mass: float  # Z x M (amu), nan when unknown
    volume: float  # Angstrom^3
    absolute: bool

    @property
    def n_groups(self) -> int:
        return int(self.basis.shape[1])

    @property
    def texture_axes(self) -> tuple[int, ...]:
        """Reciprocal axes a March-Dollase direction may take: those not tied to another by the
        metric. Reflections are stored merged, one representative hkl per family; the angle to
        a unique axis (c* of a tetragonal or hexagonal cell) is the same for every member, the
        angle to a* of a hexagonal or cubic cell is not, so texture about it would be fitted
        to an arbitrary member (an expanded Ti cell out-fitted the Zr CIF on a Zr scan that way)."""
        diag = self.groups[:3]
        return tuple(i for i in range(3) if int(np.sum(diag == diag[i])) == 1)

    def gstar_for(self, p: np.ndarray) -> np.ndarray:
        """The reciprocal metric after scaling each group's terms of 1/d^2 by ``p``."""
        v = term_values(self.gstar).copy()
        for j in range(6):
            if self.groups[j] >= 0:
                v[j] *= p[self.groups[j]]
        return np.array([[v[0], v[5] / 2, v[4] / 2], [v[5] / 2, v[1], v[3] / 2], [v[4] / 2, v[3] / 2, v[2]]])

    def cell_for(self, p: np.ndarray) -> np.ndarray:
        """The cell after scaling each group's terms of 1/d^2 by ``p``."""
        return cell_from_reciprocal(self.gstar_for(p))


def build_reference(index: int, refcode: str, name: str, cell: np.ndarray, hkl: np.ndarray, f2: np.ndarray,
                    cell_mass: float, volume: float, absolute: bool) -> Reference | None:
    cell = np.asarray(cell, float)
    try:
        gstar = np.linalg.inv(metric_tensor(cell))
    except np.linalg.LinAlgError:
        return None
    groups = symmetry_groups(gstar)
    mono = monomials(hkl) * term_values(gstar)[None, :]
    basis = np.zeros((hkl.shape[0], groups.max() + 1))
    for j in range(6):
        if groups[j] >= 0:
            basis[:, groups[j]] += mono[:, j]
    inv_d2 = basis.sum(axis=1)
    ok = inv_d2 > 0
    if not ok.any():
        return None
    return Reference(index, refcode, name, 1.0 / np.sqrt(inv_d2[ok]), np.asarray(f2, float)[ok],
                     hkl[ok].astype(float), basis[ok], groups, gstar, cell, float(cell_mass), float(volume), absolute)


def load_references(library: Library, table: FitTable | None = None) -> list[Reference | None]:
    """Every class of ``library`` as a :class:`Reference` (``None`` where the cell is unusable).

    ``table`` defaults to the library folder's ``fit.npz`` when there is one."""
    if table is None and library.path is not None and (Path(library.path) / FIT_FILE).is_file():
        table = FitTable.load(Path(library.path) / FIT_FILE)
    if table is not None and len(table) != len(library):
        table = None  # a stale table from another build: fall back to the sticks
    refs: list[Reference | None] = []
    for i, entry in enumerate(library.entries):
        cell = np.asarray(entry.get("cell", [np.nan] * 6), float)
        if cell.size != 6 or not np.all(np.isfinite(cell)):
            refs.append(None)
            continue
        if table is not None:
            rows = table.rows(i)
            refs.append(build_reference(i, library.refcodes[i], library.names[i], cell, rows.hkl, rows.f2,
                                        float(table.cell_mass[i]), float(table.volume[i]), True))
            continue
        sticks = library.sticks(i)
        theta = np.radians(np.asarray(sticks.two_theta, float) / 2.0)
        f2 = np.asarray(sticks.intensity, float) / lorentz_polarisation(theta)
        refs.append(build_reference(i, library.refcodes[i], library.names[i], cell, sticks.hkl, f2, np.nan,
                                    float(entry.get("volume", np.nan)), False))
    return refs


def two_theta_of(d: np.ndarray, wavelength: float = CU_KA1) -> np.ndarray:
    """2-theta (deg) of spacing ``d``; nan where the reflection is beyond the wavelength's reach."""
    s = wavelength / (2.0 * np.asarray(d, float))
    with np.errstate(invalid="ignore"):
        return np.where(s < 1.0, 2.0 * np.degrees(np.arcsin(np.minimum(s, 1.0))), np.nan)
