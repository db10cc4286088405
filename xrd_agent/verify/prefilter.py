"""Whole-library prefilter: every reference at every isotropic cell scale in one FFT product.

Scaling a cell by k multiplies every d by k, a shift of ln k in ln d. On a uniform ln-d grid the
cross-correlation of the scan with a reference at all shifts is one FFT product, so the cosine
of the scan with each reference at every scale between ``min_scale`` and ``max_scale`` costs
two inverse FFTs of the whole library (references' transforms cached at load).

Both sides are square-root compressed (texture and pore solvent change intensities by factors,
not positions) and carry an extra Gaussian tolerance in ln d, so a few tenths of a per cent of
anisotropic strain still correlate. The cosine is normalised over the part of each shifted
reference that falls inside the measured range (a correlation of the reference's squared
profile with the scan's coverage mask).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy import fft as _fft
from scipy import ndimage

from xrd_agent.library.simulate import CU_KA1
from xrd_agent.verify.observed import Observed, rough_background
from xrd_agent.verify.references import Reference, lorentz_polarisation

LN_STEP = 2e-3  # grid step in ln d (0.2 % in d)
TOLERANCE = 3e-3  # extra Gaussian sigma in ln d on both sides
INSTRUMENT_FWHM = 0.10  # deg 2-theta (Cu) assumed for the references' widths


@dataclass(frozen=True, eq=False)
class Hit:
    index: int  # class index
    score: float  # best cosine over the scales
    scale: float  # cell scale k (d_scan = k d_ref) at the best cosine


@dataclass(frozen=True, eq=False)
class PrefilterResult:
    scores: np.ndarray  # (classes,) best cosine, -1 where no reference
    scales: np.ndarray  # (classes,) best k

    def ranked(self, exclude: set[int] = frozenset()) -> Iterator[Hit]:  # type: ignore[assignment]
        """Hits with a positive score, best first, made as they are asked for."""
        for j in np.argsort(-self.scores, kind="stable"):
            if int(j) not in exclude and not self.scores[j] <= 0:
                yield Hit(int(j), float(self.scores[j]), float(self.scales[j]))

    def best(self, n: int, exclude: set[int] = frozenset()) -> list[Hit]:  # type: ignore[assignment]
        return list(itertools.islice(self.ranked(exclude), n))


class LnDIndex:
    """Reference profiles on one ln-d grid, their FFTs cached."""

    def __init__(self, refs: list[Reference | None], min_scale: float = 0.88, max_scale: float = 1.12) -> None:
        self.min_scale, self.max_scale = min_scale, max_scale
        ds = [r.d for r in refs if r is not None and r.d.size]
        d_lo = min(float(d.min()) for d in ds) if ds else 1.0
        d_hi = max(float(d.max()) for d in ds) if ds else 10.0
        self.u0 = np.log(d_lo * min_scale) - 10 * LN_STEP
        u1 = np.log(d_hi * max_scale) + 10 * LN_STEP
        self.length = int(np.ceil((u1 - self.u0) / LN_STEP)) + 1
        self.max_lag = int(np.ceil(max(abs(np.log(min_scale)), abs(np.log(max_scale))) / LN_STEP)) + 1
        self.nfft = _fft.next_fast_len(self.length + 2 * self.max_lag, real=True)
        self.u = self.u0 + LN_STEP * np.arange(self.length)
        self.valid = np.array([r is not None and r.d.size > 0 for r in refs])
        profiles = self._render(refs)
        self.ref_fft = _fft.rfft(profiles, n=self.nfft, axis=1).astype(np.complex64)
        self.ref2_fft = _fft.rfft(profiles * profiles, n=self.nfft, axis=1).astype(np.complex64)
        lags = np.arange(-self.max_lag, self.max_lag + 1)
        scales = np.exp(lags * LN_STEP)
        self.lags = lags[(scales >= min_scale * 0.999) & (scales <= max_scale * 1.001)]

    def _render(self, refs: list[Reference | None]) -> np.ndarray:
        """sqrt-compressed Gaussian profiles (heights) of every reference on the ln-d grid."""
        rows, centres, amps, sigmas = [], [], [], []
        for i, r in enumerate(refs):
            if r is None or r.d.size == 0:
                continue
            s = CU_KA1 / (2.0 * r.d)
            ok = s < 1.0
            theta = np.arcsin(s[ok])
            inten = r.f2[ok] * lorentz_polarisation(theta)
            if inten.size == 0 or inten.max() <= 0:
                continue
            inten = inten / inten.max()
            instr = np.radians(INSTRUMENT_FWHM) / 2.0 / np.tan(theta) / 2.3548
            rows.append(np.full(inten.size, i))
            centres.append((np.log(r.d[ok]) - self.u0) / LN_STEP)
            amps.append(np.sqrt(inten))
            sigmas.append(np.sqrt(instr**2 + TOLERANCE**2) / LN_STEP)
        out = np.zeros((len(refs), self.length))
        if not rows:
            return out
        row, c, a, sg = (np.concatenate(x) for x in (rows, centres, amps, sigmas))
        sg = np.minimum(sg, 40.0)  # a grazing reflection's width is capped at 8 % in d
        half = int(np.ceil(4 * sg.max()))
        off = np.arange(-half, half + 1)
        idx = np.rint(c).astype(np.int64)[:, None] + off[None, :]
        val = a[:, None] * np.exp(-0.5 * ((idx - c[:, None]) / sg[:, None]) ** 2)
        ok = (idx >= 0) & (idx < self.length)
        flat = row[:, None] * self.length + idx
        out += np.bincount(flat[ok], weights=val[ok], minlength=len(refs) * self.length).reshape(len(refs), -1)
        return out

    def scan_profile(self, obs: Observed) -> tuple[np.ndarray, np.ndarray]:
        """The scan on the ln-d grid (background removed, sqrt-compressed, smoothed) and its mask."""
        net = np.maximum(obs.y - rough_background(obs), 0.0)
        d_scan = obs.wavelength / (2.0 * np.sin(np.radians(obs.two_theta / 2.0)))
        u_scan = np.log(d_scan)[::-1]
        vals = np.sqrt(net)[::-1]
        mask = (self.u >= u_scan[0]) & (self.u <= u_scan[-1])
        prof = np.where(mask, np.interp(self.u, u_scan, vals), 0.0)
        prof = ndimage.gaussian_filter1d(prof, TOLERANCE / LN_STEP, mode="constant")
        return prof * mask, mask.astype(float)

    def search(self, obs: Observed) -> PrefilterResult:
        """Best cosine and cell scale of every reference against ``obs``."""
        prof, mask = self.scan_profile(obs)
        norm = float(np.sqrt(np.sum(prof * prof)))
        n = self.valid.size
        if norm <= 0:
            return PrefilterResult(np.full(n, -1.0), np.ones(n))
        fs = _fft.rfft(prof / norm, n=self.nfft)
        fm = _fft.rfft(mask, n=self.nfft)
        # c(s) = sum_u scan(u) ref(u - s): the shifted reference sits at larger d for s > 0
        corr = _fft.irfft(self.ref_fft * np.conj(fs)[None, :].astype(np.complex64), n=self.nfft, axis=1)
        energy = _fft.irfft(self.ref2_fft * np.conj(fm)[None, :].astype(np.complex64), n=self.nfft, axis=1)
        # irfft(R conj(S))[t] = sum_u ref(u + t) scan(u): t = -s
        cols = (-self.lags) % self.nfft
        c = corr[:, cols]
        e = energy[:, cols]
        cos = c / np.sqrt(np.maximum(e, 1e-12))
        cos[e < 1e-6] = 0.0
        best = np.argmax(cos, axis=1)
        scores = cos[np.arange(n), best]
        scores[~self.valid] = -1.0
        scales = np.exp(self.lags[best] * LN_STEP)
        return PrefilterResult(scores.astype(float), scales)
