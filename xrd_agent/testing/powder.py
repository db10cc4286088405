"""Synthetic powder scans from first principles, for the physics check's tests and benchmark.

A phase p in a mixture diffracts with integrated intensities

    I_hkl,p = K v_p / (V_p^2 mu) m|F_hkl|^2 LP(theta)        (v_p volume fraction, V_p cell volume)

and v_p = (w_p / rho_p) / sum_i (w_i / rho_i) with rho_p = (ZM)_p / V_p, so a known weight
fraction w_p enters through the physics alone, not through the Hill-Howard formula the fit
uses to get it back. Strain is applied to the lattice itself (the reflections are recomputed),
texture as March-Dollase about a reciprocal axis, plus zero shift, Caglioti widths, K-alpha2,
a smooth background and Poisson noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from xrd_agent.library.fitdata import reflections
from xrd_agent.library.simulate import Crystal
from xrd_agent.scan import ANODE_LINES
from xrd_agent.verify.references import lorentz_polarisation


@dataclass(frozen=True)
class Component:
    crystal: Crystal
    cell_mass: float  # Z x M (amu)
    weight_fraction: float = 1.0
    strain: tuple[float, float, float] = (1.0, 1.0, 1.0)  # factors on a, b, c
    texture_axis: int = -1  # 0/1/2: a*, b*, c*; -1 none
    texture_r: float = 1.0


def strained(crystal: Crystal, strain: Sequence[float]) -> Crystal:
    return replace(crystal, lattice=np.asarray(crystal.lattice, float) * np.asarray(strain, float)[:, None])


def powder_scan(components: Sequence[Component], two_theta: np.ndarray, *, wavelength: str = "Cu",
                zero: float = 0.0, fwhm: tuple[float, float] = (0.01, 0.004), eta: float = 0.5,
                ka2_ratio: float = 0.5, counts: float = 20000.0, background: float = 200.0,
                seed: int = 0) -> np.ndarray:
    """Counts at ``two_theta`` (deg) for a mixture of ``components``. ``fwhm`` = (W, U) in
    FWHM^2 = W + U tan^2(theta); ``counts`` is the height of the strongest line."""
    lam1, lam2 = ANODE_LINES[wavelength]
    tt = np.asarray(two_theta, float)
    d_min = lam1 / (2 * np.sin(np.radians(min(tt.max() + 2, 179) / 2)))
    d_max = lam1 / (2 * np.sin(np.radians(max(tt.min() - 2, 0.5) / 2)))
    crystals = [strained(c.crystal, c.strain) for c in components]
    inv_rho = np.array([c.volume / comp.cell_mass for c, comp in zip(crystals, components)])
    w = np.array([comp.weight_fraction for comp in components], float)
    v = (w * inv_rho) / np.sum(w * inv_rho)
    y = np.zeros_like(tt)
    for crystal, comp, vp in zip(crystals, components, v):
        refl = reflections(crystal, d_min, d_max)
        inten = vp / crystal.volume**2 * refl.f2
        if comp.texture_axis >= 0:
            gstar = np.linalg.inv(crystal.lattice @ crystal.lattice.T)
            h = refl.hkl.astype(float)
            gh = h @ gstar[:, comp.texture_axis]
            cos2 = np.clip(gh**2 / (np.einsum("ij,jk,ik->i", h, gstar, h) * gstar[comp.texture_axis, comp.texture_axis]),
                           0, 1)
            r = comp.texture_r
            inten = inten * (r * r * cos2 + (1 - cos2) / r) ** -1.5
        for lam, ratio in ((lam1, 1.0), (lam2, ka2_ratio)):
            s = lam / (2 * refl.d)
            ok = s < 0.999
            theta = np.arcsin(s[ok])
            pos = np.degrees(2 * theta) + zero
            width = np.sqrt(fwhm[0] + fwhm[1] * np.tan(theta) ** 2)
            amp = ratio * inten[ok] * lorentz_polarisation(theta)
            hw = width[:, None] / 2
            z = (tt[None, :] - pos[:, None]) / hw
            prof = eta / (np.pi * hw * (1 + z * z)) + (1 - eta) * np.sqrt(np.log(2) / np.pi) / hw * np.exp(-np.log(2) * z * z)
            y += amp @ prof
    y = y / y.max() * counts
    bg = background * (1.0 + 0.5 * np.exp(-(tt - tt.min()) / 15.0))
    rng = np.random.default_rng(seed)
    return rng.poisson(np.maximum(y + bg, 0)).astype(float)
