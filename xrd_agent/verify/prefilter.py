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

A framework that breathes moves its axes apart (one by +6 %, another by -4 %): no single scale
lines its reflections up, and the isotropic cosine ranks the right material tens or hundreds of
places down. So the anisotropic stage scans each symmetry group of 1/d^2 on its own (the fit's
groups, :mod:`xrd_agent.verify.references`), by coordinate ascent, coarse to fine: the strongest
reflections' positions for a trial cell are looked up in the scan profile, smoothed wider while
the cell is still far off (a sampled correlation that ignores overlaps between reflections: cheap
enough for every reference). Every reference is screened with its 24 strongest reflections and
two coarse passes; the best screened ones and the best isotropic ones are searched with 80
reflections and all passes, and the 30 best found cells are scored as the isotropic stage scores
(every reflection, overlaps included), so the two orders are comparable. The check takes its
prefilter candidates from both orders in turn, so a clean scan's isotropic answer keeps its place,
and starts its fit of a candidate from the cell found here too. How far an axis may move follows
the fit's strain prior (three sigma: 12 % for a framework, 4.5 % for a dense solid).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from scipy import fft as _fft
from scipy import ndimage

from xrd_agent.library.simulate import CU_KA1
from xrd_agent.verify.fit import MAX_STRAIN, broad_fwhm, ln_p_range, strain_sigma
from xrd_agent.verify.observed import Observed, rough_background
from xrd_agent.verify.references import Reference, lorentz_polarisation

LN_STEP = 2e-3  # grid step in ln d (0.2 % in d)
TOLERANCE = 3e-3  # extra Gaussian sigma in ln d on both sides
INSTRUMENT_FWHM = 0.10  # deg 2-theta (Cu) assumed for the references' widths
STRONGEST = 80  # reflections per reference the anisotropic stage looks up
SCREEN_STRONGEST = 24  # reflections per reference in the whole-library screen ...
SCREEN_PASSES = ((0.04, 0, 0.025), (0.03, 0, 0.015))  # ... and its passes (as ANISO_PASSES)
ISO_KEPT = 30  # the isotropic stage's best, searched beside the screen's best
RESCORED = 30  # found cells scored with every reflection
#: (step in ln p, steps either side or 0 for the whole range, smoothing sigma in ln d) of the
#: anisotropic stage's passes, coarse to fine: while the other axes are still several per cent
#: off, a group's reflections only line up with a profile smoothed that wide, and a step must be
#: felt between grid points; each pass scans every group again once the others moved (a cell
#: with two near-equal axes otherwise settles with their changes swapped)
ANISO_PASSES = ((0.04, 0, 0.025), (0.03, 0, 0.015), (0.02, 0, 0.01), (0.01, 4, 6e-3), (0.004, 4, 4e-3))


@dataclass(frozen=True, eq=False)
class Hit:
    index: int  # class index
    score: float  # best cosine over the scales
    scale: float  # cell scale k (d_scan = k d_ref) at the best cosine
    lnp: np.ndarray | None = None  # ln of each symmetry group's 1/d^2 scale (anisotropic stage)


@dataclass(frozen=True, eq=False)
class PrefilterResult:
    scores: np.ndarray  # (classes,) best cosine, -1 where no reference
    scales: np.ndarray  # (classes,) best k
    # the anisotropic stage: classes re-scored, their scores (own scale) and group scales (K, 6)
    aniso_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    aniso_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    aniso_lnp: np.ndarray = field(default_factory=lambda: np.zeros((0, 6)))

    def cell(self, j: int) -> np.ndarray | None:
        """Class ``j``'s group scales (ln p, six) from the anisotropic stage, if it was re-scored."""
        where = np.flatnonzero(self.aniso_index == j)
        return self.aniso_lnp[where[0]] if where.size else None

    def _hit(self, j: int) -> Hit:
        return Hit(j, float(self.scores[j]), float(self.scales[j]), self.cell(j))

    def ranked(self, exclude: set[int] = frozenset()) -> Iterator[Hit]:  # type: ignore[assignment]
        """Hits with a positive score, best first, made as they are asked for."""
        for j in np.argsort(-self.scores, kind="stable"):
            if int(j) not in exclude and not self.scores[j] <= 0:
                yield self._hit(int(j))

    def best(self, n: int, exclude: set[int] = frozenset()) -> list[Hit]:  # type: ignore[assignment]
        return list(itertools.islice(self.ranked(exclude), n))

    def interleaved(self, exclude: set[int] = frozenset()) -> Iterator[Hit]:  # type: ignore[assignment]
        """The isotropic and the anisotropic order in turn, each class once."""
        iso = self.ranked(exclude)
        aniso = (self._hit(int(self.aniso_index[k])) for k in np.argsort(-self.aniso_scores, kind="stable")
                 if int(self.aniso_index[k]) not in exclude and self.aniso_scores[k] > 0)
        seen: set[int] = set()
        for pair in itertools.zip_longest(iso, aniso):
            for hit in pair:
                if hit is not None and hit.index not in seen:
                    seen.add(hit.index)
                    yield hit


def _heights(r: Reference) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reflections Cu K-alpha1 reaches (indices), their theta and their sqrt-compressed
    heights (m|F|^2 LP, strongest 1): what both stages of the prefilter compare with a scan.
    Empty when none has intensity."""
    s = CU_KA1 / (2.0 * r.d)
    ok = np.flatnonzero(s < 1.0)
    theta = np.arcsin(s[ok])
    inten = r.f2[ok] * lorentz_polarisation(theta)
    if inten.size == 0 or inten.max() <= 0:
        return ok[:0], theta[:0], inten[:0]
    return ok, theta, np.sqrt(inten / inten.max())


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
        self._strongest(refs)
        self.refs = refs
        self.ref_fft = _fft.rfft(profiles, n=self.nfft, axis=1).astype(np.complex64)
        self.ref2_fft = _fft.rfft(profiles * profiles, n=self.nfft, axis=1).astype(np.complex64)
        # (sigma, the references' transforms broadened by it): :meth:`_matched`
        self._broadened: tuple[float, np.ndarray, np.ndarray] | None = None
        lags = np.arange(-self.max_lag, self.max_lag + 1)
        scales = np.exp(lags * LN_STEP)
        self.lags = lags[(scales >= min_scale * 0.999) & (scales <= max_scale * 1.001)]
        self.lnp_bounds = ln_p_range(MAX_STRAIN)  # the full-range grid

    def _render(self, refs: list[Reference | None], lnp: np.ndarray | None = None) -> np.ndarray:
        """sqrt-compressed Gaussian profiles (heights) of ``refs`` on the ln-d grid, at the
        reference cells or with each symmetry group's 1/d^2 scaled by exp(``lnp``) (len(refs), 6).
        A moved cell keeps its reflections' heights and widths from the reference angle: within
        +-12 % they change slowly next to the positions."""
        rows, centres, amps, sigmas = [], [], [], []
        for i, r in enumerate(refs):
            if r is None or r.d.size == 0:
                continue
            ok, theta, height = _heights(r)
            if ok.size == 0:
                continue
            u = np.log(r.d[ok])
            if lnp is not None:
                with np.errstate(divide="ignore", invalid="ignore"):
                    u = -0.5 * np.log(r.basis[ok] @ np.exp(lnp[i, : r.n_groups]))
            instr = np.radians(INSTRUMENT_FWHM) / 2.0 / np.tan(theta) / 2.3548
            rows.append(np.full(ok.size, i))
            centres.append((u - self.u0) / LN_STEP)
            amps.append(height)
            sigmas.append(np.sqrt(instr**2 + TOLERANCE**2) / LN_STEP)
        out = np.zeros((len(refs), self.length))
        if not rows:
            return out
        row, c, a, sg = (np.concatenate(x) for x in (rows, centres, amps, sigmas))
        keep = np.isfinite(c)  # an oblique metric scaled past positive definiteness loses reflections
        row, c, a, sg = row[keep], c[keep], a[keep], sg[keep]
        sg = np.minimum(sg, 40.0)  # a grazing reflection's width is capped at 8 % in d
        half = int(np.ceil(4 * sg.max()))
        off = np.arange(-half, half + 1)
        idx = np.rint(c).astype(np.int64)[:, None] + off[None, :]
        val = a[:, None] * np.exp(-0.5 * ((idx - c[:, None]) / sg[:, None]) ** 2)
        ok = (idx >= 0) & (idx < self.length)
        flat = row[:, None] * self.length + idx
        out += np.bincount(flat[ok], weights=val[ok], minlength=len(refs) * self.length).reshape(len(refs), -1)
        return out

    def _strongest(self, refs: list[Reference | None]) -> None:
        """Each reference's STRONGEST reflections (sqrt heights, as rendered) and their share of
        1/d^2 per symmetry group, padded to six groups: one array for every reference."""
        n = len(refs)
        self.top_amp = np.zeros((n, STRONGEST))
        self.top_basis = np.zeros((n, STRONGEST, 6))
        self.n_groups = np.array([0 if r is None else r.n_groups for r in refs])
        # how far an axis may move from the reference cell: three sigma of the fit's strain prior
        # (12 % for a framework, 4.5 % for a dense solid, whose stretched lattice would otherwise
        # soak up a second phase's lines: alpha-Ti at +6 % beside beta-Ti)
        max_change = np.array([MAX_STRAIN if r is None else min(MAX_STRAIN, 3.0 * strain_sigma(r)) for r in refs])
        self.lnp_lo, self.lnp_hi = ln_p_range(max_change)
        for i, r in enumerate(refs):
            if r is None or r.d.size == 0:
                continue
            ok, _, height = _heights(r)
            order = np.argsort(-height, kind="stable")[:STRONGEST]
            self.top_amp[i, : order.size] = height[order]
            self.top_basis[i, : order.size, : r.n_groups] = r.basis[ok[order]]

    def scan_profile(self, obs: Observed) -> tuple[np.ndarray, np.ndarray]:
        """The scan on the ln-d grid (background removed, sqrt-compressed, smoothed) and its mask."""
        # the background window must be wider than the lines, or it cuts a broad line off
        broad = broad_fwhm(obs)
        net = np.maximum(obs.y - rough_background(obs, 2.0 if broad is None else 3.0 * broad), 0.0)
        d_scan = obs.wavelength / (2.0 * np.sin(np.radians(obs.two_theta / 2.0)))
        u_scan = np.log(d_scan)[::-1]
        vals = np.sqrt(net)[::-1]
        mask = (self.u >= u_scan[0]) & (self.u <= u_scan[-1])
        prof = np.where(mask, np.interp(self.u, u_scan, vals), 0.0)
        prof = ndimage.gaussian_filter1d(prof, TOLERANCE / LN_STEP, mode="constant")
        return prof * mask, mask.astype(float)

    def search(self, obs: Observed, anisotropic: int = 0) -> PrefilterResult:
        """Best cosine and cell scale of every reference against ``obs``; with ``anisotropic``
        > 0, that many of the screen's best (and the ISO_KEPT best isotropic hits) searched with
        each symmetry group free."""
        prof, mask = self.scan_profile(obs)
        norm = float(np.sqrt(np.sum(prof * prof)))
        n = self.valid.size
        if norm <= 0:
            return PrefilterResult(np.full(n, -1.0), np.ones(n))
        fs = _fft.rfft(prof / norm, n=self.nfft)
        fm = _fft.rfft(mask, n=self.nfft)
        ref_fft, ref2_fft = self._matched(obs)
        # c(s) = sum_u scan(u) ref(u - s): the shifted reference sits at larger d for s > 0
        corr = _fft.irfft(ref_fft * np.conj(fs)[None, :].astype(np.complex64), n=self.nfft, axis=1)
        energy = _fft.irfft(ref2_fft * np.conj(fm)[None, :].astype(np.complex64), n=self.nfft, axis=1)
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
        result = PrefilterResult(scores.astype(float), scales)
        if anisotropic <= 0:
            return result
        lnp_iso = -2.0 * np.log(scales)
        valid = np.flatnonzero(self.valid)
        screen, _ = self.axis_scan(prof, mask, valid, lnp_iso[valid], SCREEN_PASSES, SCREEN_STRONGEST)
        idx = np.array([h.index for h in result.best(ISO_KEPT)], np.int64)
        idx = np.concatenate([idx, np.setdiff1d(valid[np.argsort(-screen, kind="stable")[:anisotropic]], idx)])
        sampled, lnp = self.axis_scan(prof, mask, idx, lnp_iso[idx])
        # the best found cells judged as the isotropic stage judges: the cosine of every
        # reflection's profile (overlaps included) with the scan, comparable with the isotropic
        # scores; the rest keep their cells (a fit started there) but no anisotropic place
        judged = np.argsort(-sampled, kind="stable")[:RESCORED]
        moved = self._render([self.refs[int(i)] for i in idx[judged]], lnp[judged])
        num = moved @ (prof / norm)
        energy = (moved * moved) @ mask
        a_scores = np.zeros(idx.size)
        a_scores[judged] = np.where(energy > 1e-6, num / np.sqrt(np.maximum(energy, 1e-12)), 0.0)
        return PrefilterResult(result.scores, result.scales, idx, a_scores, lnp)

    def _matched(self, obs: Observed) -> tuple[np.ndarray, np.ndarray]:
        """The references' transforms (profile, squared profile) as the scan's lines are wide.

        A matched filter: against lines several degrees wide (:func:`~xrd_agent.verify.fit.broad_fwhm`),
        laboratory-width references correlate best where they have many reflections under a broad
        line, not where their reflections are the scan's; broadened to the scan's width (one Gaussian
        in ln d, its width at the middle of the measured range), the right one correlates again.
        Scans with laboratory lines use the cached transforms."""
        f = broad_fwhm(obs)
        if f is None:
            return self.ref_fft, self.ref2_fft
        theta = np.radians(float(np.mean(obs.two_theta[[0, -1]])) / 2.0)
        sigma = float(np.radians(f) / 2.0 / np.tan(theta) / 2.3548 / LN_STEP)  # grid points
        # the composition searches the same scan's residuals again: broadened once per scan
        cached = self._broadened
        if cached is None or cached[0] != sigma:
            freq = np.fft.rfftfreq(self.nfft)
            gauss = np.exp(-2.0 * (np.pi * sigma * freq) ** 2).astype(np.float32)
            wide = _fft.irfft(self.ref_fft * gauss[None, :], n=self.nfft, axis=1)
            cached = (sigma, self.ref_fft * gauss[None, :],
                      _fft.rfft(wide * wide, n=self.nfft, axis=1).astype(np.complex64))
            self._broadened = cached
        return cached[1], cached[2]

    def axis_scan(self, prof: np.ndarray, mask: np.ndarray, idx: np.ndarray, lnp0: np.ndarray,
                    passes: tuple[tuple[float, int, float], ...] = ANISO_PASSES, strongest: int = STRONGEST
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Sampled scores and group scales (ln p, (K, 6)) of classes ``idx`` started at ``lnp0``
        (isotropic, (K,)), from their ``strongest`` reflections.

        Coordinate ascent, every class at once: each pass scans one group at a time over a grid
        (the class's whole range, or a few steps either side) with the others held; a class
        takes part in the scans of the groups it has."""
        a = self.top_amp[idx, :strongest].astype(np.float32)  # (K, M)
        basis = self.top_basis[idx, :strongest].astype(np.float32)  # (K, M, 6)
        groups = self.n_groups[idx]
        glo, ghi = self.lnp_bounds
        lo, hi = self.lnp_lo[idx, None], self.lnp_hi[idx, None]  # (K, 1)
        lnp = np.repeat(np.clip(lnp0[:, None], lo, hi), 6, axis=1)
        covered = np.flatnonzero(mask)
        span_m = (int(covered[0]), int(covered[-1])) if covered.size else (1, 0)
        best = np.full(idx.size, -np.inf)
        cache: dict[float, np.ndarray] = {}
        for step, span, sigma in passes:
            if sigma not in cache:
                extra = np.sqrt(max(sigma**2 - TOLERANCE**2, 0.0)) / LN_STEP
                sm = ndimage.gaussian_filter1d(prof, extra, mode="constant") if extra > 0 else prof
                cache[sigma] = (sm / (float(np.sqrt(np.sum(sm * sm))) or 1.0)).astype(np.float32)
            profile = cache[sigma]
            inv_d2 = np.einsum("kmg,kg->km", basis, np.exp(lnp).astype(np.float32))
            best = self._score(profile, span_m, a, inv_d2[:, :, None])[:, 0]
            for g in range(int(groups.max(initial=0))):
                rows = np.flatnonzero(groups > g)
                if span:
                    grid = lnp[rows, g, None] + step * np.arange(-span, span + 1)[None, :]
                else:
                    grid = np.broadcast_to(np.arange(glo, ghi + 1e-9, step), (rows.size, int((ghi - glo) / step) + 1))
                grid = np.clip(grid, lo[rows], hi[rows])
                # only group g moves: 1/d^2 = the others' share + g's share scaled
                b_g = basis[rows, :, g]
                rest = inv_d2[rows] - b_g * np.exp(lnp[rows, g, None]).astype(np.float32)
                trial = rest[:, :, None] + b_g[:, :, None] * np.exp(grid).astype(np.float32)[:, None, :]
                sc = self._score(profile, span_m, a[rows], trial)
                j = np.argmax(sc, axis=1)
                top = sc[np.arange(rows.size), j]
                better = top > best[rows]
                moved = rows[better]
                lnp[moved, g] = grid[better, j[better]]
                best[moved] = top[better]
                inv_d2[moved] = trial[better, :, j[better]]
        return best, lnp

    def _score(self, profile: np.ndarray, span: tuple[int, int], a: np.ndarray, inv_d2: np.ndarray) -> np.ndarray:
        """(K, T) sampled correlation of each class's strongest reflections (heights ``a`` (K, M),
        1/d^2 of trial cells ``inv_d2`` (K, M, T)) with ``profile``, over the height-weighted
        reflections inside the measured ``span`` of grid points. Nearest grid point: the step
        is half the narrowest smoothing."""
        with np.errstate(divide="ignore", invalid="ignore"):
            x = (np.float32(-0.5) * np.log(inv_d2) - np.float32(self.u0)) * np.float32(1.0 / LN_STEP)
        inside = (x >= span[0]) & (x <= span[1])  # False for nan (no reflection, lost metric)
        j = np.where(inside, x, 0.0).astype(np.int32)
        val = np.where(inside, profile[j], np.float32(0.0))
        num = np.einsum("km,kmt->kt", a, val)
        den = np.sqrt(np.einsum("km,kmt->kt", a * a, inside.astype(np.float32)))
        return num / np.maximum(den, 1e-9)
