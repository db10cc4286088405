"""Physics-informed augmentation: one reference's sticks -> many plausible measured spectra.

What changes between a CIF's simulated pattern and a lab scan of the same MOF, each
a switch or range in :class:`AugmentOptions` (0 or an empty range turns it off) so an
evaluation can measure what each buys:

* peak positions: isotropic and anisotropic lattice strain (MOFs breathe, solvate and
  swell), per-axis cell changes of up to several per cent through each reflection's hkl
  and the reciprocal metric tensor (1/d^2 = h^T G* h; axes of equal length move
  together so a cubic or tetragonal cell keeps its symmetry), sample displacement
  (dtt = -2 s cos(theta) / R) and zero offset;
* peak widths: crystallite-size broadening (Scherrer, grows as 1/cos(theta)) on top of
  the instrument profile, and a random Lorentzian share;
* intensities: per-reflection jitter, preferred orientation (March-Dollase along a
  random [hkl]), strong random scaling of low-angle reflections, and pore solvent:
  a factor smooth in 1/d (electron density in the pores weakens, sometimes strengthens,
  the low-angle reflections) with its own per-reflection jitter;
* the K-alpha2 doublet of an unmonochromated tube;
* amorphous humps, the glass hump of a capillary near 21-22 deg (Cu), air scatter and
  flat background;
* noise: Poisson counting statistics at a random count level, and/or the paper's merge
  of the strongest points with real baseline noise from a :class:`NoiseBank`;
* coverage: a scan that starts late or stops early, and the low-angle cut of a beam stop
  or knife edge (its mask travels with it: uncovered grid points are masked and become
  zero in preprocessing, as for a real scan).

All randomness comes from the caller's ``np.random.Generator``: same seed, same spectra.
The instrument effects added later (cell axes, solvent, capillary, beam stop) draw from a
child generator (``rng.spawn``), so the older presets' spectra are unchanged by them.
The output is raw (counts-like, background included); :mod:`xrd_agent.model.dataset`
passes it through :func:`xrd_agent.preprocess.prepare_grid_batch` like any real scan.
The approach follows XRD-AutoAnalyzer (Szymanski et al. 2021) in spirit; this is an
independent implementation on this project's grid and profile.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
from scipy import fft as _fft

from xrd_agent.errors import ConfigError
from xrd_agent.pattern import GRID_POINTS, GRID_STEP, MODEL_GRID
from xrd_agent.peakshape import PeakProfile
from xrd_agent.scan import ANODE_LINES

_CU_A1, _CU_A2 = ANODE_LINES["Cu"]


@dataclass(frozen=True)
class AugmentOptions:
    """Every perturbation of :func:`augment`. Probabilities are per spectrum; ranges are
    (low, high) drawn uniformly (log-uniformly for ``*_log`` ranges)."""

    # peak positions
    strain_iso: float = 0.01  # max |isotropic lattice strain| (d scales by 1 + e)
    strain_aniso: float = 0.005  # max |entry| of a random symmetric strain tensor (uses hkl)
    displacement_mm: float = 0.1  # max |sample displacement|
    goniometer_radius_mm: float = 280.0  # D8 ADVANCE default
    zero_shift_deg: float = 0.02  # max |zero offset| of the 2-theta scale
    # peak widths
    size_broadening: float = 0.7  # probability of crystallite-size broadening
    crystallite_nm_log: tuple[float, float] = (15.0, 300.0)
    instrument_fwhm_scale: tuple[float, float] = (0.85, 1.25)
    eta: tuple[float, float] = (0.3, 0.7)  # Lorentzian share of the pseudo-Voigt
    # intensities
    intensity_jitter: float = 0.15  # sigma of the log-normal factor per reflection
    preferred_orientation: float = 0.5  # probability of March-Dollase texture
    march_r: tuple[float, float] = (0.6, 1.0)  # r < 1 platelets; needles use 1/r
    low_angle_deg: float = 12.0  # reflections below this angle ...
    low_angle_scale_log: tuple[float, float] = (0.2, 2.0)  # ... are scaled by this much
    # doublet
    kalpha2: float = 0.5  # probability of an unmonochromated K-alpha2 doublet (ratio 0.5)
    # background (units of the strongest peak)
    amorphous: float = 0.4  # probability of an amorphous hump
    amorphous_height: tuple[float, float] = (0.02, 0.4)
    air_scatter: float = 0.5  # probability of low-angle air scatter
    air_height: tuple[float, float] = (0.02, 0.3)
    flat_background: tuple[float, float] = (0.0, 0.1)
    # noise
    poisson: float = 0.8  # probability of counting noise
    counts_log: tuple[float, float] = (100.0, 50_000.0)  # counts at the strongest peak
    bank_noise: float = 0.5  # probability of merging with real baseline noise (needs a bank)
    bank_noise_scale_log: tuple[float, float] = (0.5, 3.0)
    merge_top_points: int = 400  # the paper keeps the 400 strongest points; 0 keeps all
    # coverage
    crop: float = 0.1  # probability of a scan that starts late / stops early
    crop_start: tuple[float, float] = (5.0, 10.0)
    crop_stop: tuple[float, float] = (35.0, 50.0)
    # instrument and sample effects of measured as-made MOFs (off unless a preset turns them on)
    cell_axes: float = 0.0  # probability of a per-axis cell change (breathing, solvation)
    cell_axes_max: float = 0.08  # max |fractional change| of each independent axis
    solvent: float = 0.0  # probability of pore-solvent intensity changes
    solvent_scale_log: tuple[float, float] = (0.15, 2.5)  # factor as 1/d -> 0
    solvent_q0: tuple[float, float] = (0.05, 0.15)  # 1/angstrom: where the factor fades out
    solvent_jitter: float = 0.3  # sigma of extra log-normal jitter, weighted like the factor
    capillary: float = 0.0  # probability of a glass/capillary hump
    capillary_height: tuple[float, float] = (0.03, 0.6)
    capillary_centre: tuple[float, float] = (20.0, 23.0)  # Cu 2-theta
    capillary_fwhm: tuple[float, float] = (6.0, 12.0)
    beam_stop: float = 0.0  # probability of a low-angle cut (beam stop, knife edge)
    beam_stop_deg: tuple[float, float] = (5.0, 8.0)  # the scan starts here

    @classmethod
    def none(cls) -> AugmentOptions:
        """Every perturbation off: the clean reference, broadened with the library profile."""
        return cls(strain_iso=0.0, strain_aniso=0.0, displacement_mm=0.0, zero_shift_deg=0.0,
                   size_broadening=0.0, instrument_fwhm_scale=(1.0, 1.0), eta=(0.5, 0.5),
                   intensity_jitter=0.0, preferred_orientation=0.0, low_angle_scale_log=(1.0, 1.0),
                   kalpha2=0.0, amorphous=0.0, air_scatter=0.0, flat_background=(0.0, 0.0),
                   poisson=0.0, bank_noise=0.0, merge_top_points=0, crop=0.0)

    @classmethod
    def realistic(cls) -> AugmentOptions:
        """Stronger than training: what "another lab's scan of the same MOF" looks like,
        for evaluation on held-out determinations. Real noise is added to the whole
        pattern (a measured scan keeps its weak reflections; the paper's top-400 merge is
        a training device, not a property of scans)."""
        return cls(strain_iso=0.015, strain_aniso=0.008, displacement_mm=0.15, zero_shift_deg=0.03,
                   size_broadening=0.9, crystallite_nm_log=(12.0, 200.0), intensity_jitter=0.25,
                   preferred_orientation=0.7, march_r=(0.5, 1.0), low_angle_scale_log=(0.1, 2.0),
                   kalpha2=0.7, amorphous=0.5, air_scatter=0.7, poisson=1.0,
                   counts_log=(80.0, 20_000.0), bank_noise=0.8, merge_top_points=0, crop=0.2)

    @classmethod
    def instrument(cls) -> AugmentOptions:
        """:meth:`realistic` plus what measured as-synthesized MOFs show and simulations
        lack: cells several per cent off the activated structure, texture, pore solvent,
        a capillary hump, a beam-stop cut and larger sample displacement (training preset;
        the evaluation preset stays :meth:`realistic` so figures stay comparable)."""
        return replace(cls.realistic(), displacement_mm=0.3, march_r=(0.7, 1.0), cell_axes=0.6,
                       solvent=0.6, capillary=0.3, beam_stop=0.3)

    @classmethod
    def paper(cls) -> AugmentOptions:
        """Wang et al. 2020 alone: the 400 strongest points merged with real baseline noise."""
        return replace(cls.none(), bank_noise=1.0, merge_top_points=400,
                       bank_noise_scale_log=AugmentOptions.bank_noise_scale_log)

    @classmethod
    def physics(cls) -> AugmentOptions:
        """The physics-informed perturbations without the noise bank."""
        return replace(cls(), bank_noise=0.0)

    @classmethod
    def preset(cls, name: str) -> AugmentOptions:
        """One of :data:`PRESETS` by name: default, none, paper, physics, realistic, instrument."""
        try:
            return PRESETS[name]()
        except KeyError:
            raise ConfigError(f"unknown augmentation preset {name!r}; one of {', '.join(PRESETS)}") from None

    @classmethod
    def coerce(cls, value: AugmentOptions | Mapping[str, Any] | str | None) -> AugmentOptions:
        """Options from an instance, a preset name, a mapping of overrides (a TOML table, a
        manifest; ``{"preset": "paper", "kalpha2": 0.5}`` starts from a preset), or None."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            return cls.preset(value)
        if not isinstance(value, Mapping):
            raise ConfigError(f"augmentation options must be a table, got {type(value).__name__}")
        values = dict(value)
        base = cls.preset(str(values.pop("preset"))) if "preset" in values else cls()
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown augmentation option(s): {', '.join(unknown)}")
        try:
            changes = {k: tuple(v) if isinstance(getattr(base, k), tuple) else type(getattr(base, k))(v)
                       for k, v in values.items()}
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"bad augmentation option value: {exc}") from None
        return replace(base, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (what a model manifest records)."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}


PRESETS = {
    "default": AugmentOptions,
    "none": AugmentOptions.none,
    "paper": AugmentOptions.paper,
    "physics": AugmentOptions.physics,
    "realistic": AugmentOptions.realistic,
    "instrument": AugmentOptions.instrument,
}


# -- rendering: pseudo-Voigt peaks through the Fourier domain ---------------------------
# profile.broaden evaluates every peak in a window of +-12 FWHM: exact, but ~20 ms for a
# MOF's ~500 reflections once size broadening widens the window, and training needs
# 60,000 spectra. Here the same area-normalised pseudo-Voigt of the same PeakProfile is
# applied as a product in the Fourier domain (its transform is analytic: a Gaussian
# times, or an exponential for, the Lorentzian part). Sticks are split linearly between
# neighbouring grid points (the split's triangle is divided back out) and between
# neighbouring width nodes at 5, 27.5 and 50 deg (widths change slowly with angle), so a whole
# class renders with a handful of FFTs. tests/test_augment.py checks it against broaden.
_PAD_LEFT = 200  # grid points below 5 deg: shifted sticks just under 5 deg still count
_NFFT = 6144  # 61.4 deg period: what wraps round is a Lorentzian tail >= 11 deg away
_FREQ = np.fft.rfftfreq(_NFFT, d=GRID_STEP).astype(np.float32)  # cycles per degree
_INV_TRIANGLE = (1.0 / np.sinc(_FREQ * GRID_STEP) ** 2).astype(np.float32)
_NODES = np.linspace(MODEL_GRID[0], MODEL_GRID[-1], 3)


def render(
    two_theta: np.ndarray, intensity: np.ndarray, fwhm_nodes: np.ndarray, eta: np.ndarray
) -> np.ndarray:
    """Rows of sticks (n, M) -> (n, 4501) pseudo-Voigt patterns, float64.

    ``fwhm_nodes`` (n, 3): FWHM in degrees at 5, 27.5 and 50 deg;
    ``eta`` (n,): Lorentzian share. Zero-intensity sticks are free padding.
    """
    tt = np.atleast_2d(np.asarray(two_theta, float))
    inten = np.atleast_2d(np.asarray(intensity, float))
    n, m = tt.shape
    k = _NODES.size
    pos = (tt - MODEL_GRID[0]) / GRID_STEP + _PAD_LEFT
    ok = np.isfinite(pos) & (pos >= 0) & (pos < _NFFT - 1) & (inten > 0)
    pos = np.where(ok, pos, 0.0)
    amp = np.where(ok, inten, 0.0)
    i0 = np.floor(pos).astype(np.int64)
    fi = pos - i0
    u = np.clip((tt - _NODES[0]) / (_NODES[1] - _NODES[0]), 0.0, k - 1.0)
    u = np.where(ok, u, 0.0)
    b0 = np.minimum(u.astype(np.int64), k - 2)
    fb = u - b0
    row = np.arange(n)[:, None] * k
    index, weight = [], []
    for db, wb in ((0, 1.0 - fb), (1, fb)):
        for di, wi in ((0, 1.0 - fi), (1, fi)):
            index.append(((row + b0 + db) * _NFFT + i0 + di).ravel())
            weight.append((amp * wb * wi).ravel())
    hist = np.bincount(np.concatenate(index), np.concatenate(weight), minlength=n * k * _NFFT)
    spectrum = _fft.rfft(hist.reshape(n, k, _NFFT).astype(np.float32), axis=2)  # complex64
    gamma = np.asarray(fwhm_nodes, np.float32).reshape(n, k, 1)
    e = np.asarray(eta, np.float32).reshape(n, 1, 1)
    x = (np.float32(np.pi) * _FREQ) * gamma
    kernel = np.exp(-x)
    kernel *= e
    kernel += (1.0 - e) * np.exp(x * x * np.float32(-1.0 / (4.0 * np.log(2.0))))
    kernel *= _INV_TRIANGLE
    spectrum *= kernel
    out = _fft.irfft(spectrum.sum(axis=1), n=_NFFT, axis=1)
    return out[:, _PAD_LEFT:_PAD_LEFT + GRID_POINTS].astype(np.float64)


# -- the perturbations, vectorised over the n spectra of one reference --------------------
def _uniform(rng: np.random.Generator, bounds: tuple[float, float], size: Any) -> np.ndarray:
    lo, hi = (float(b) for b in bounds)
    draw = rng.random(size)  # always drawn: switching one effect off leaves the others' draws
    return lo + (hi - lo) * draw if hi > lo else np.full(size, lo)


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float], size: Any) -> np.ndarray:
    lo, hi = (float(b) for b in bounds)
    draw = rng.random(size)
    return np.exp(np.log(lo) + (np.log(hi) - np.log(lo)) * draw) if hi > lo else np.full(size, lo)


def _chance(rng: np.random.Generator, p: float, n: int) -> np.ndarray:
    return rng.random(n) < p


def _directions(hkl: np.ndarray, cell: np.ndarray | None) -> np.ndarray:
    """Unit vectors of the reflection normals (Cartesian). With ``cell`` (3x3 rows a, b, c
    in angstrom) through the reciprocal lattice; without it hkl is taken as Cartesian,
    exact for cubic cells and a fair stand-in for the rest in an augmentation."""
    h = np.asarray(hkl, float).reshape(-1, 3)
    if cell is not None:
        h = h @ np.linalg.inv(np.asarray(cell, float)).T
    norm = np.linalg.norm(h, axis=-1, keepdims=True)
    return np.divide(h, norm, out=np.zeros_like(h), where=norm > 0)


def reciprocal_metric(cell: np.ndarray) -> np.ndarray:
    """G* (3x3, 1/angstrom^2) of cell vectors ``cell`` (rows a, b, c): 1/d^2 = h^T G* h."""
    a = np.asarray(cell, float)
    return np.linalg.inv(a @ a.T)


def tied_axes(cell: np.ndarray, tol: float = 1e-3) -> np.ndarray:
    """Group label per axis (3,): axes of equal length (within ``tol``) share a label, so
    a per-axis change keeps a cubic, tetragonal, hexagonal or rhombohedral cell's
    equal axes equal (their symmetry-equivalent reflections stay together)."""
    lengths = np.linalg.norm(np.asarray(cell, float), axis=1)
    close = np.abs(lengths[:, None] - lengths[None, :]) <= tol * lengths.max()
    return np.argmax(close, axis=1)  # first equal axis names the group


def cell_axis_ratio(hkl: np.ndarray, cell: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """d_new / d_old (n, m) of reflections ``hkl`` (m, 3) when the cell's axes are
    multiplied by ``scales`` (n, 3), angles kept: with A' = S A the reciprocal metric is
    S^-1 G* S^-1, so 1/d'^2 = (h/s)^T G* (h/s)."""
    g = reciprocal_metric(cell)
    h = np.asarray(hkl, float)
    q2_old = np.einsum("mi,ij,mj->m", h, g, h)
    hs = h[None, :, :] / np.asarray(scales, float)[:, None, :]
    q2_new = np.einsum("nmi,ij,nmj->nm", hs, g, hs)
    return np.sqrt(np.divide(q2_old, q2_new, out=np.ones_like(q2_new), where=q2_new > 0))


def march_dollase(dirs: np.ndarray, axes: np.ndarray, r: np.ndarray) -> np.ndarray:
    """March-Dollase factor (n, m) of reflection normals ``dirs`` (m, 3) for texture axes
    ``axes`` (n, 3) and ratios ``r`` (n,): r < 1 platelets (reflections along the axis
    stronger), r > 1 needles (weaker); r = 1 no texture. Unit vectors expected."""
    cos2 = np.clip(np.asarray(axes, float) @ np.asarray(dirs, float).T, -1.0, 1.0) ** 2
    rr = np.asarray(r, float)[:, None]
    return (rr * rr * cos2 + (1.0 - cos2) / rr) ** -1.5


def solvent_factor(inv_d: np.ndarray, strength: np.ndarray, q0: np.ndarray) -> np.ndarray:
    """Pore-solvent intensity factor (n, m), smooth in 1/d: ``strength`` (n,) as 1/d -> 0,
    fading to 1 by ~``q0`` (n,) as exp(-(q/q0)^2) in the exponent. Guest molecules fill
    the pores and lower the framework's electron-density contrast, which affects the
    longest spacings most (a strength > 1 stands for heavier guests or partial order)."""
    return np.exp(np.log(np.asarray(strength, float))[:, None] * solvent_envelope(inv_d, q0))


def solvent_envelope(inv_d: np.ndarray, q0: np.ndarray) -> np.ndarray:
    """exp(-(q/q0)^2) (n, m): 1 for the longest spacings, 0 well beyond ``q0``."""
    return np.exp(-(np.asarray(inv_d, float)[None, :] / np.asarray(q0, float)[:, None]) ** 2)


def fwhm_at(two_theta: np.ndarray, instrument_scale: np.ndarray, size_nm: np.ndarray) -> np.ndarray:
    """FWHM (deg) of the library profile times ``instrument_scale``, with Scherrer size
    broadening (K = 0.9) added in quadrature; ``size_nm`` inf = no size broadening.
    Broadcasts: rows of spectra against angles."""
    tt = np.asarray(two_theta, float)
    instrument = PeakProfile().fwhm(tt) * instrument_scale
    cos_t = np.cos(np.radians(tt / 2.0))
    beta = np.degrees(0.9 * (_CU_A1 / 10.0) / (size_nm * cos_t))
    return np.sqrt(instrument**2 + beta**2)


def augment(
    two_theta: np.ndarray,
    intensity: np.ndarray,
    hkl: np.ndarray | None,
    n: int,
    options: AugmentOptions,
    rng: np.random.Generator,
    *,
    noise: np.ndarray | None = None,
    cell: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` raw spectra (float64, (n, 4501)) of one reference and their coverage masks.

    ``noise`` (n, 4501), when given, is real baseline noise (from
    :meth:`NoiseBank.sample`) merged into a random share ``options.bank_noise`` of rows.
    Every random number is drawn whatever the switches say, so turning one effect off
    changes that effect only.
    """
    o = options
    extra = rng.spawn(1)[0]  # the later effects' draws leave the older presets' stream as it was
    tt0 = np.asarray(two_theta, float)
    i0 = np.asarray(intensity, float)
    m = tt0.size
    have_hkl = hkl is not None and len(hkl) == m
    dirs = _directions(hkl, cell) if have_hkl else np.zeros((m, 3))

    # Positions: strain (isotropic + n.E.n), displacement, zero offset.
    strain = _uniform(rng, (-1.0, 1.0), (n, 1)) * o.strain_iso
    e = _uniform(rng, (-1.0, 1.0), (n, 3, 3)) * o.strain_aniso
    if o.strain_aniso > 0 and have_hkl:
        strain = strain + np.einsum("mi,nij,mj->nm", dirs, (e + e.transpose(0, 2, 1)) / 2.0, dirs)
    sin0 = np.sin(np.radians(tt0 / 2.0))
    inv_d = 2.0 * sin0 / _CU_A1
    # Per-axis cell change through G* (needs hkl and the cell): the d-ratio per reflection.
    changed = _chance(extra, o.cell_axes, n)
    axis_draw = _uniform(extra, (-1.0, 1.0), (n, 3)) * o.cell_axes_max
    if changed.any() and have_hkl and cell is not None and o.cell_axes_max > 0:
        scales = 1.0 + np.take_along_axis(axis_draw, np.broadcast_to(tied_axes(cell), (n, 3)), axis=1)
        scales[~changed] = 1.0
        strain = (1.0 + strain) * cell_axis_ratio(hkl, cell, scales) - 1.0
    theta = np.arcsin(np.clip(sin0 / (1.0 + strain), 0.0, 1.0))
    displacement = _uniform(rng, (-1.0, 1.0), (n, 1)) * o.displacement_mm
    zero = _uniform(rng, (-1.0, 1.0), (n, 1)) * o.zero_shift_deg
    shift = np.degrees(-2.0 * displacement * np.cos(theta) / o.goniometer_radius_mm)
    tt = 2.0 * np.degrees(theta) + shift + zero

    # Intensities: jitter, preferred orientation, low-angle (pore solvent) scaling.
    inten = np.broadcast_to(i0, (n, m)).copy()
    jitter = rng.standard_normal((n, m))
    if o.intensity_jitter > 0:
        inten *= np.exp(o.intensity_jitter * jitter)
    textured = _chance(rng, o.preferred_orientation, n)
    axes = _directions(rng.integers(-2, 3, (n, 3)), cell)
    axes[~axes.any(axis=1)] = _directions(np.array([[0, 0, 1]]), cell)[0]
    r = _uniform(rng, o.march_r, n)
    r = np.where(rng.random(n) < 0.5, r, 1.0 / np.maximum(r, 1e-3))
    if textured.any() and have_hkl:
        inten[textured] *= march_dollase(dirs, axes[textured], r[textured])
    low_scale = _log_uniform(rng, o.low_angle_scale_log, (n, m))
    inten = np.where(tt0 < o.low_angle_deg, inten * low_scale, inten)
    solvated = _chance(extra, o.solvent, n)
    strength = _log_uniform(extra, o.solvent_scale_log, n)
    q0 = _uniform(extra, o.solvent_q0, n)
    solvent_noise = extra.standard_normal((n, m))
    if solvated.any():
        k = np.flatnonzero(solvated)
        env = solvent_envelope(inv_d, q0[k])
        inten[k] *= np.exp((np.log(strength[k])[:, None] + o.solvent_jitter * solvent_noise[k]) * env)

    # Widths at the render nodes: instrument scale and crystallite size per spectrum.
    scale = _uniform(rng, o.instrument_fwhm_scale, (n, 1))
    size = np.where(_chance(rng, o.size_broadening, n), _log_uniform(rng, o.crystallite_nm_log, n), np.inf)
    fwhm_nodes = fwhm_at(_NODES[None, :], scale, size[:, None])
    eta = _uniform(rng, o.eta, n)

    # K-alpha2: the same d at the longer wavelength, half the intensity.
    doublet = _chance(rng, o.kalpha2, n)
    if doublet.any():
        sin2 = np.sin(np.radians(tt / 2.0)) * (_CU_A2 / _CU_A1)
        tt2 = 2.0 * np.degrees(np.arcsin(np.minimum(sin2, 1.0)))
        i2 = np.where(doublet[:, None] & (sin2 < 1.0), 0.5 * inten, 0.0)
        tt, inten = np.concatenate([tt, tt2], axis=1), np.concatenate([inten, i2], axis=1)

    y = render(tt, inten, fwhm_nodes, eta)
    top = y.max(axis=1, keepdims=True)
    y = np.divide(y, top, out=np.zeros_like(y), where=top > 0)

    # Real baseline noise (the paper's merge: only the strongest points survive).
    merge = _chance(rng, o.bank_noise, n) & (noise is not None)
    noise_scale = _log_uniform(rng, o.bank_noise_scale_log, (n, 1))
    if merge.any():
        rows = np.flatnonzero(merge)
        if 0 < o.merge_top_points < GRID_POINTS:
            keep = np.argpartition(y[rows], -o.merge_top_points, axis=1)[:, -o.merge_top_points:]
            merged = np.zeros((rows.size, GRID_POINTS))
            np.put_along_axis(merged, keep, np.take_along_axis(y[rows], keep, axis=1), axis=1)
            y[rows] = merged
        y[rows] += np.asarray(noise, float)[rows] * noise_scale[rows]

    y += _backgrounds(o, rng, n)
    y += _capillary(o, extra, n)

    # Counting statistics at a random count level.
    counted = _chance(rng, o.poisson, n)
    counts = _log_uniform(rng, o.counts_log, (n, 1))
    if counted.any():
        c = counts[counted]
        y[counted] = rng.poisson(np.maximum(y[counted], 0.0) * c) / c

    # Coverage: late start / early stop; edge values held as preprocess.to_grid does.
    mask = np.ones((n, GRID_POINTS), bool)
    cropped = _chance(rng, o.crop, n)
    lo = np.searchsorted(MODEL_GRID, _uniform(rng, o.crop_start, n))
    hi = np.maximum(np.searchsorted(MODEL_GRID, _uniform(rng, o.crop_stop, n), side="right"), lo + 1)
    lo = np.where(cropped, lo, 0)
    hi = np.where(cropped, hi, GRID_POINTS)
    # Beam stop / knife edge: nothing measured below a random start angle.
    stopped = _chance(extra, o.beam_stop, n)
    stop_at = np.searchsorted(MODEL_GRID, _uniform(extra, o.beam_stop_deg, n))
    lo = np.where(stopped, np.maximum(lo, stop_at), lo)
    hi = np.maximum(hi, lo + 1)
    for i in np.flatnonzero(cropped | stopped):
        a, b = int(lo[i]), int(min(hi[i], GRID_POINTS))
        mask[i, :a] = False
        mask[i, b:] = False
        y[i, :a] = y[i, a]
        y[i, b:] = y[i, b - 1]
    return y, mask


def _capillary(o: AugmentOptions, rng: np.random.Generator, n: int) -> np.ndarray:
    """The broad hump of a glass capillary or slide (amorphous SiO2, near 21-22 deg Cu),
    a Gaussian in units of the strongest peak."""
    x = MODEL_GRID[None, :]
    on = _chance(rng, o.capillary, n)[:, None]
    height = _uniform(rng, o.capillary_height, (n, 1))
    centre = _uniform(rng, o.capillary_centre, (n, 1))
    fwhm = _uniform(rng, o.capillary_fwhm, (n, 1))
    return on * height * np.exp(-4.0 * np.log(2.0) * ((x - centre) / fwhm) ** 2)


def _backgrounds(o: AugmentOptions, rng: np.random.Generator, n: int) -> np.ndarray:
    """Flat level, amorphous hump and low-angle air scatter, in units of the strongest peak."""
    x = MODEL_GRID[None, :]
    flat = _uniform(rng, o.flat_background, (n, 1))
    hump = _chance(rng, o.amorphous, n)[:, None] * _uniform(rng, o.amorphous_height, (n, 1))
    centre, width = _uniform(rng, (12.0, 32.0), (n, 1)), _uniform(rng, (4.0, 14.0), (n, 1))
    air = _chance(rng, o.air_scatter, n)[:, None] * _uniform(rng, o.air_height, (n, 1))
    decay = _uniform(rng, (1.5, 6.0), (n, 1))
    return (flat + hump * np.exp(-4.0 * np.log(2.0) * ((x - centre) / width) ** 2)
            + air * np.exp(-(x - x[0, 0]) / decay))
