"""Simulated synthesis products with a known crystalline mass fraction (test and evaluation tool).

A product of one framework is ``x`` crystal + ``1 - x`` amorphous, by mass, where both
parts are computed from the same atoms, per atom, on one absolute scale:

* **crystal** -- kinematic Bragg reflections of the CIF's cell (``library.simulate.structure_factors``)
  with a Debye-Waller factor; each reflection's area on the 2-theta axis is the powder
  ring's share of the per-atom cross-section, |F|^2 m 2 pi^2 / (N V Q^2) in Q, times the
  polarisation and dQ -> d(2 theta): the usual Lorentz-polarisation factor, with the
  absolute scale kept. What the Debye-Waller factor removes returns as thermal diffuse
  scattering <f^2> (1 - exp(-2 B s^2)).
* **amorphous** -- the Debye equation over pairs of the same framework, sum f_i f_j
  sin(Q r)/(Q r), damped by a Gaussian coherence envelope exp(-r^2/xi^2) (xi 4-8 A: a
  disordered fragment a few linkers across) and static disorder exp(-sigma^2 Q^2), minus
  the mean-density term rho <f>^2 pi^1.5 xi^3 exp(-Q^2 xi^2/4) (a dense glass has no
  small-angle scattering from the fragments' outline). Its integral over Q^2 dQ equals the
  crystal's, as it must for the same atoms.
* both parts: incoherent (Compton) scattering ~ Z - f^2/Z per atom.
* instrument, never part of the product: air scatter (exponential rise at low angle), a
  silica-glass hump from holder or capillary (first sharp diffraction peak at Q = 1.53 1/A,
  21.6 deg Cu, and the second at Q ~ 3.0 1/A), a flat floor; then Poisson counts on the
  instrument's step (0.008-0.05 deg) and range.

Frameworks: a few named CoRE MOF 2019 structures and the repository's test CIFs, shipped as
P1 cells in ``xrd_agent/data/crystallinity_frameworks.npz`` so evaluation needs neither
pymatgen nor core-mof; ``python -m xrd_agent.testing.products frameworks`` rebuilds it
(``pip install 'xrd-agent[library]'``). ``python -m xrd_agent.testing.products calibrate``
rebuilds ``xrd_agent/data/crystallinity_calibration.json`` (seeded, reproducible).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from xrd_agent.library.simulate import CU_KA1, Crystal, form_factor, structure_factors
from xrd_agent.peakshape import PeakProfile, broaden

FRAMEWORKS_FILE = "crystallinity_frameworks.npz"
CALIBRATION_FILE = "crystallinity_calibration.json"
#: CoRE MOF refcodes used (names.toml order; cells small enough for the Debye sums here).
REFCODES = ("FIQCEN", "EDUSIF", "OFERUN", "GITTOT", "VELVIS", "VEJZEQ", "WOBHEB", "ORIWAP", "VOGTIV",
            "ORIVUI", "COKMEW", "RUBTAK02", "WIZMAV02", "SABVUN")
#: Frameworks held out of the calibration: evaluation is scored on these (and fresh seeds).
HELD_OUT = ("ORIWAP", "COKMEW", "SALLAT", "VOGTIV")
MAX_ATOMS = 2500
_R_MAX = 30.0  # A: pair histogram range (3.75 xi at the largest xi)
_R_BIN = 0.02


@dataclass(frozen=True, eq=False)
class Framework:
    name: str
    crystal: Crystal

    @property
    def density(self) -> float:
        """Atoms per cubic angstrom (occupancy-weighted)."""
        return float(np.sum(self.crystal.occupancy)) / self.crystal.volume


# -- frameworks ---------------------------------------------------------------------------
def build_frameworks(out: Path, cif_dir: Path | None = None) -> list[str]:
    """Parse the CoRE CIFs of ``REFCODES`` (+ MOF CIFs in ``cif_dir``) into one npz."""
    from xrd_agent.library import coremof
    from xrd_agent.library.cif import parse_cif

    dets = coremof.load_determinations()
    wanted: dict[str, set[str]] = {}
    by_file: dict[str, str] = {}
    for ref in REFCODES:
        det = dets.get(ref) or next((d for r, d in dets.items() if r.startswith(ref)), None)
        if det is None:
            continue
        dataset, stem = det.source
        wanted.setdefault(dataset, set()).add(stem)
        by_file[stem] = ref
    texts = {by_file[stem]: text for _, stem, text in coremof.iter_cifs(wanted)}
    if cif_dir is not None:
        for path in sorted(Path(cif_dir).glob("*_clean.cif")):
            texts[path.stem.split("_")[0]] = path.read_text(encoding="utf-8", errors="replace")
    arrays: dict[str, np.ndarray] = {}
    names = []
    for name, text in texts.items():
        c = parse_cif(text, name).crystal
        if len(c) > MAX_ATOMS:
            continue
        names.append(name)
        arrays[f"{name}/lattice"] = c.lattice
        arrays[f"{name}/frac"] = c.frac
        arrays[f"{name}/elements"] = np.array(c.elements)
        arrays[f"{name}/occupancy"] = c.occupancy
    np.savez_compressed(out, names=np.array(names), **arrays)
    return names


@lru_cache(maxsize=1)
def frameworks() -> tuple[Framework, ...]:
    with resources.as_file(resources.files("xrd_agent") / "data" / FRAMEWORKS_FILE) as path, np.load(path) as z:
        return tuple(Framework(str(n), Crystal(z[f"{n}/lattice"], z[f"{n}/frac"], tuple(str(e) for e in z[f"{n}/elements"]),
                                                z[f"{n}/occupancy"])) for n in z["names"])


# -- scattering of one framework, per atom ------------------------------------------------
def _mean_f(fw: Framework, s2: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """<f>, <f^2> and incoherent Z - f^2/Z per atom, at s^2 (occupancy-weighted)."""
    occ = np.asarray(fw.crystal.occupancy, float)
    els = np.array(fw.crystal.elements)
    f1 = np.zeros_like(s2)
    f2 = np.zeros_like(s2)
    inc = np.zeros_like(s2)
    from xrd_agent.library.simulate import _scattering_table

    for e in np.unique(els):
        w = float(occ[els == e].sum()) / float(occ.sum())
        f = form_factor(str(e), s2)
        z = _scattering_table()[str(e)][0]
        f1 += w * f
        f2 += w * f * f
        inc += w * np.maximum(z - f * f / z, 0.0)
    return f1, f2, inc


@lru_cache(maxsize=32)
def pair_histogram(fw: Framework, centres: int = 160, seed: int = 0) -> tuple[tuple[str, ...], np.ndarray]:
    """Element list and n[a, b, r]: neighbours of element b at distance r from an average atom
    of element a (weighted by a's share), over ``centres`` sampled atoms, r < _R_MAX."""
    c = fw.crystal
    els = np.array(c.elements)
    kinds = tuple(sorted(set(c.elements)))
    code = np.searchsorted(np.array(kinds), els)
    occ = np.asarray(c.occupancy, float)
    lat = np.asarray(c.lattice, float)
    spacing = c.volume / np.linalg.norm(np.cross(lat[[1, 2, 0]], lat[[2, 0, 1]]), axis=1)
    reach = np.ceil(_R_MAX / spacing).astype(int)
    shifts = np.stack(np.meshgrid(*[np.arange(-n, n + 1) for n in reach], indexing="ij"), -1).reshape(-1, 3)
    frac = np.mod(c.frac, 1.0)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(c), size=min(centres, len(c)), replace=False, p=occ / occ.sum())
    centre_xyz = frac[pick] @ lat
    nbins = int(_R_MAX / _R_BIN)
    hist = np.zeros((len(kinds), len(kinds), nbins))
    for block in np.array_split(shifts, max(1, shifts.shape[0] // 8)):
        xyz = (frac[None, :, :] + block[:, None, :]).reshape(-1, 3) @ lat  # (images*atoms, 3)
        img_code = np.tile(code, block.shape[0])
        img_occ = np.tile(occ, block.shape[0])
        d = np.sqrt(((centre_xyz[:, None, :] - xyz[None, :, :]) ** 2).sum(-1))  # (centres, images*atoms)
        ok = (d > 0.5) & (d < _R_MAX)
        ci, ji = np.nonzero(ok)
        b = (d[ci, ji] / _R_BIN).astype(int)
        w = occ[pick][ci] * img_occ[ji]
        np.add.at(hist, (code[pick][ci], img_code[ji], b), w)
    return kinds, hist / occ[pick].sum()


def amorphous_per_atom(fw: Framework, q: np.ndarray, xi: float, sigma: float) -> np.ndarray:
    """Debye scattering of disordered fragments of ``fw`` per atom (coherent), on Q (1/A)."""
    s2 = (q / (4 * np.pi)) ** 2
    kinds, hist = pair_histogram(fw)
    r = (np.arange(hist.shape[-1]) + 0.5) * _R_BIN
    near = r < 3.5 * xi  # the envelope is < 5e-6 beyond
    r, hist = r[near], hist[..., near]
    env = np.exp(-(r / xi) ** 2)
    sinc = np.sinc(np.outer(q, r) / np.pi) * env[None, :]  # np.sinc(x) = sin(pi x)/(pi x)
    f = np.stack([form_factor(k, s2) for k in kinds])  # (kinds, q)
    pairs = np.einsum("abr,qr->abq", hist, sinc)
    cross = np.einsum("aq,bq,abq->q", f, f, pairs)
    f1, f2, _ = _mean_f(fw, s2)
    mean_density = fw.density * f1 * f1 * np.pi ** 1.5 * xi ** 3 * np.exp(-(q * xi) ** 2 / 4.0)
    return f2 + (cross - mean_density) * np.exp(-(sigma * q) ** 2)


def bragg_per_atom(fw: Framework, lam: float, tt_min: float, tt_max: float, b_iso: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Reflection positions (deg) and areas on the 2-theta (deg) axis, per atom, with P."""
    g_min = 2 * np.sin(np.radians(max(tt_min, 0.5) / 2)) / lam
    g_max = 2 * np.sin(np.radians(min(tt_max, 170.0) / 2)) / lam
    els = sorted(set(fw.crystal.elements))
    _, g, f2 = structure_factors(fw.crystal, g_min, g_max, {e: b_iso for e in els})
    q = 2 * np.pi * g
    th = np.arcsin(np.clip(lam * g / 2, 0, 1))
    n_atoms = float(np.sum(fw.crystal.occupancy))
    area_q = 2.0 * f2 * 2 * np.pi ** 2 / (n_atoms * fw.crystal.volume * q * q)  # x2: Friedel mates
    pol = (1 + np.cos(2 * th) ** 2) / 2
    d2theta_dq = lam / (2 * np.pi * np.cos(th)) * 180 / np.pi
    return np.degrees(2 * th), area_q * pol * d2theta_dq


# -- one product -------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Product:
    framework: str
    fraction: float  # crystalline mass fraction (truth)
    two_theta: np.ndarray
    counts: np.ndarray
    wavelength: float = CU_KA1


def product(fw: Framework, fraction: float, rng: np.random.Generator, *, lam: float = CU_KA1,
            noise: bool = True) -> Product:
    """One simulated scan of ``fraction`` crystalline ``fw`` on a randomly drawn instrument."""
    step = float(rng.choice([0.008, 0.01, 0.0105, 0.02, 0.02, 0.03, 0.05]))
    start = float(rng.uniform(2.0, 6.0))
    stop = float(rng.uniform(35.0, 70.0))
    tt = start + step * np.arange(int((stop - start) / step) + 1)
    th = np.radians(tt / 2)
    q = 4 * np.pi * np.sin(th) / lam
    s2 = (q / (4 * np.pi)) ** 2
    pol = (1 + np.cos(2 * th) ** 2) / 2
    b_iso = float(rng.uniform(1.0, 4.0))
    f1, f2, inc = _mean_f(fw, s2)
    # crystal
    pos, area = bragg_per_atom(fw, lam, start - 1, stop + 1, b_iso)
    area = area * rng.lognormal(0.0, 0.2, area.size)  # texture
    w = rng.uniform(0.002, 0.05)
    profile = PeakProfile(u=rng.uniform(0.0, 0.02), v=0.0, w=w, eta=rng.uniform(0.2, 0.8))
    grid = tt if step <= 0.02 else np.arange(start - 1, stop + 1, 0.005)
    bragg = broaden(pos, area, grid, profile)
    if grid is not tt:
        bragg = np.interp(tt, grid, bragg)
    tds = f2 * (1 - np.exp(-2 * b_iso * s2))
    crystal = bragg + pol * tds
    q_coarse = np.linspace(q[0], q[-1], 400)  # the Debye curve is smooth on the 0.1 1/A scale
    am = amorphous_per_atom(fw, q_coarse, xi=float(rng.uniform(4.0, 8.0)), sigma=float(rng.uniform(0.05, 0.25)))
    amorph = pol * np.interp(q, q_coarse, am)
    sample = fraction * crystal + (1 - fraction) * amorph + pol * inc
    sample = np.maximum(sample, 0.0)
    level = float(np.median(sample))
    air = rng.uniform(0.0, 1.5) * level * np.exp(-(tt - start) / rng.uniform(2.0, 8.0))
    glass_q = np.exp(-0.5 * ((q - 1.53) / 0.22) ** 2) + 0.35 * np.exp(-0.5 * ((q - 3.0) / 0.4) ** 2)
    glass = rng.uniform(0.0, 0.35) * level * glass_q * pol
    floor = rng.uniform(0.0, 0.3) * level
    mean = sample + air + glass + floor
    per_count = rng.uniform(20.0, 2000.0) / level  # counts at the sample's median level
    counts = rng.poisson(mean * per_count).astype(float) if noise else mean * per_count * 1e4
    return Product(fw.name, float(fraction), tt, counts, lam)


def products(n: int, seed: int, names: tuple[str, ...] | None = None, exclude: tuple[str, ...] = ()) -> list[Product]:
    """``n`` products, crystalline fractions uniform on [0, 1] (a quarter at 0-0.15), seeded."""
    rng = np.random.default_rng(seed)
    pool = [f for f in frameworks() if (names is None or f.name in names) and f.name not in exclude]
    out = []
    for i in range(n):
        x = float(rng.uniform(0.0, 0.15)) if i % 4 == 0 else float(rng.uniform(0.0, 1.0))
        out.append(product(pool[int(rng.integers(len(pool)))], x, rng))
    return out


# -- calibration and scoring --------------------------------------------------------------
def raw_indices(items: list[Product]) -> np.ndarray:
    from xrd_agent import crystallinity as C

    return np.array([float(np.median(C.raw_index(p.two_theta, p.counts)[0])) for p in items])


def fit_calibration(index: np.ndarray, truth: np.ndarray, knots: int = 40) -> dict[str, list[float]]:
    """Monotone (isotonic) map raw index -> fraction, tabulated at ``knots`` quantiles of the
    index (the index crowds near 0, where failed products sit: quantile knots resolve it), and
    the RMS scatter of the truth around the map near each knot."""
    from scipy.optimize import isotonic_regression

    order = np.argsort(index)
    x, fitted = index[order], isotonic_regression(truth[order]).x
    edges = np.unique(np.quantile(x, np.linspace(0.0, 1.0, knots + 1)))
    centre, frac, scatter = [], [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (x >= lo) & (x <= hi)
        centre.append(float(np.mean(x[inside])))
        frac.append(float(np.mean(fitted[inside])))
    centre_a, frac_a = np.array(centre), np.maximum.accumulate(np.clip(frac, 0.0, 1.0))
    resid = truth[order] - np.interp(x, centre_a, frac_a)
    for i in range(len(centre)):
        lo, hi = edges[max(i - 1, 0)], edges[min(i + 2, len(edges) - 1)]
        inside = (x >= lo) & (x <= hi)
        scatter.append(float(np.sqrt(np.mean(resid[inside] ** 2))))
    return {"index": [round(float(v), 6) for v in centre_a], "fraction": [round(float(v), 4) for v in frac_a],
            "scatter": [round(float(v), 4) for v in scatter]}


def calibrate(out: Path, n: int = 360, seed: int = 2026) -> dict[str, object]:
    items = products(n, seed, exclude=HELD_OUT)
    index = raw_indices(items)
    truth = np.array([p.fraction for p in items])
    table = fit_calibration(index, truth)
    table["_source"] = (f"python -m xrd_agent.testing.products calibrate --n {n} --seed {seed} "
                        f"(frameworks except {', '.join(HELD_OUT)})")
    out.write_text(json.dumps(table, indent=1) + "\n")
    return table


def threshold_table(n: int = 360, seed: int = 2026) -> list[dict[str, float]]:
    """On the calibration products, with the shipped calibration: per amorphous threshold, the
    share of failed (<= 10 %) products flagged and of crystalline (>= 50 %) ones flagged."""
    from xrd_agent import crystallinity as C

    items = products(n, seed, exclude=HELD_OUT)
    fraction = np.array([C.estimate(p.two_theta, p.counts).fraction for p in items])
    truth = np.array([p.fraction for p in items])
    failed, crystalline = truth <= 0.10, truth >= 0.50
    return [{"below": t, "failed_flagged": float(np.mean(fraction[failed] < t)),
             "crystalline_flagged": float(np.mean(fraction[crystalline] < t))}
            for t in (0.15, 0.2, 0.25, 0.3, 0.35, 0.4)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xrd_agent.testing.products")
    sub = parser.add_subparsers(dest="cmd", required=True)
    fw = sub.add_parser("frameworks", help="rebuild the framework npz from core-mof and tests/data/cif")
    fw.add_argument("--cif-dir", default="tests/data/cif")
    cal = sub.add_parser("calibrate", help="rebuild the crystallinity calibration table")
    cal.add_argument("--n", type=int, default=360)
    cal.add_argument("--seed", type=int, default=2026)
    th = sub.add_parser("thresholds", help="flag rates per amorphous threshold on the calibration products")
    th.add_argument("--n", type=int, default=360)
    th.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args(argv)
    data = Path(__file__).resolve().parent.parent / "data"
    if args.cmd == "frameworks":
        print(build_frameworks(data / FRAMEWORKS_FILE, Path(args.cif_dir)))
    elif args.cmd == "thresholds":
        for row in threshold_table(args.n, args.seed):
            print(f"amorphous below {row['below']:.2f}: failed flagged {100 * row['failed_flagged']:.1f} %, "
                  f"crystalline flagged {100 * row['crystalline_flagged']:.1f} %")
    else:
        table = calibrate(data / CALIBRATION_FILE, args.n, args.seed)
        print(json.dumps({k: table[k] for k in ("index", "fraction")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
