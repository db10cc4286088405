"""The noise bank: baseline noise cut out of real scans, for training augmentation.

Wang et al. 2020 trained on simulated patterns merged with the baseline noise of real
experimental scans. The bank holds that noise: each scan is put on a 0.01 deg grid
over its own range (binned or interpolated exactly as :mod:`xrd_agent.preprocess`
does), its background is removed, its peaks are masked, and what is left in the
peak-free stretches is kept as zero-mean segments in the scale the model sees (the
scan's strongest background-free point = 1). :meth:`NoiseBank.sample` shuffles and
concatenates segments into grid-length rows.

Storage: one ``.npz`` with ``values`` (float32, all segments end to end), ``offsets``
(segment i is values[offsets[i]:offsets[i+1]]), ``source`` (int32: which source scan
each segment came from) and ``manifest`` (JSON text:
format, version, sources with file name, sha256, licence and segment count). No
pickles; the shipped bank is ``xrd_agent/data/noise_bank.npz``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from xrd_agent.errors import LibraryError, ScanError
from xrd_agent.pattern import GRID_POINTS, GRID_STEP
from xrd_agent.preprocess import background, despike, to_grid
from xrd_agent.scan import CU_KALPHA1, Scan, to_cu_two_theta

FORMAT = "xrd-agent-noise-bank"
FORMAT_VERSION = 1

#: Points further than this many robust sigmas above the background belong to a peak.
PEAK_SIGMAS = 4.0
#: Peak masks are widened by this much on each side (deg): a reflection's tails reach
#: well beyond the points that pass the sigma test.
PEAK_MARGIN_DEG = 0.3
#: Shortest peak-free stretch worth keeping (deg).
MIN_SEGMENT_DEG = 0.5


def default_bank_path() -> Path:
    return Path(str(resources.files("xrd_agent") / "data" / "noise_bank.npz"))


@dataclass(frozen=True)
class NoiseSource:
    """Where a set of segments came from (kept in the bank's manifest)."""

    file: str
    sha256: str
    licence: str
    segments: int
    points: int
    scale: float  # robust sigma of the noise, in the scan's normalised units

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "sha256": self.sha256, "licence": self.licence,
                "segments": self.segments, "points": self.points, "sigma": round(self.scale, 6)}


def extract_segments(two_theta_cu: np.ndarray, intensity: np.ndarray) -> list[np.ndarray]:
    """Peak-free baseline noise of one scan, normalised as the model sees the scan.

    Returns zero-mean float32 segments on a GRID_STEP grid (possibly none: a scan that
    is all peaks, or too short, gives no noise).
    """
    tt = np.asarray(two_theta_cu, float)
    y = np.asarray(intensity, float)
    keep = np.isfinite(tt) & np.isfinite(y)
    tt, y = tt[keep], y[keep]
    if tt.size < 10:
        return []
    order = np.argsort(tt, kind="stable")
    tt, y = tt[order], y[order]
    y, _ = despike(y)
    grid = np.round(np.arange(tt[0], tt[-1] + GRID_STEP / 2, GRID_STEP), 6)
    values, covered = to_grid(tt, y, grid)
    residual = values - background(values[None, :])[0]
    peak = residual[covered].max() if covered.any() else 0.0
    if not np.isfinite(peak) or peak <= 0:
        return []
    residual /= peak
    # The opening hugs the noise minima, so the residual's median (not 0) is the baseline.
    level = float(np.median(residual[covered]))
    sigma = 1.4826 * float(np.median(np.abs(residual[covered] - level)))
    if sigma <= 0:
        return []
    margin = int(round(PEAK_MARGIN_DEG / GRID_STEP))
    above = residual - level > PEAK_SIGMAS * sigma
    peaks = ndimage.binary_dilation(above, iterations=margin) if margin else above
    quiet = covered & ~peaks
    labels, count = ndimage.label(quiet)
    min_len = int(round(MIN_SEGMENT_DEG / GRID_STEP))
    segments: list[np.ndarray] = []
    for piece in ndimage.find_objects(labels):
        seg = residual[piece[0]]
        if seg.size >= min_len:
            segments.append((seg - seg.mean()).astype(np.float32))
    del count
    return segments


def _scan_cu(scan: Scan) -> tuple[np.ndarray, np.ndarray]:
    lam = scan.wavelength.primary if scan.wavelength else None
    tt = scan.two_theta
    if lam is not None and abs(lam - CU_KALPHA1) > 1e-5:
        tt = to_cu_two_theta(tt, lam)  # same step in d: the noise lands where the model sees it
    return tt, scan.intensity


@dataclass(eq=False)
class NoiseBank:
    """Segments of real baseline noise and where they came from.

    Build with :meth:`from_scans`, extend with :meth:`add`, keep with :meth:`save`,
    read with :meth:`load` (None = the bank shipped in the package).
    """

    segments: list[np.ndarray] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)
    segment_source: list[int] = field(default_factory=list)  # index into sources, per segment
    manifest: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    # -- building -------------------------------------------------------------------
    @classmethod
    def from_scans(cls, scans: Iterable[Scan], licences: dict[str, str] | None = None) -> NoiseBank:
        bank = cls()
        for scan in scans:
            bank.add(scan, licence=(licences or {}).get(scan.source_path.name))
        return bank

    def add(self, scan: Scan, licence: str | None = None) -> NoiseSource:
        """Add the baseline noise of ``scan``; a scan with no peak-free stretch is a ScanError."""
        if any(s.get("sha256") == scan.sha256 for s in self.sources):
            raise ScanError("this scan is already in the noise bank", scan.source_path)
        segments = extract_segments(*_scan_cu(scan))
        if not segments:
            raise ScanError("no peak-free baseline stretch of 0.5 deg or more to take noise from",
                            scan.source_path)
        points = int(sum(s.size for s in segments))
        sigma = 1.4826 * float(np.median(np.abs(np.concatenate(segments))))
        source = NoiseSource(file=scan.source_path.name, sha256=scan.sha256,
                             licence=licence or "unspecified", segments=len(segments),
                             points=points, scale=sigma)
        self.segments.extend(segments)
        self.segment_source.extend([len(self.sources)] * len(segments))
        self.sources.append(source.to_dict())
        return source

    # -- using ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.segments)

    @property
    def points(self) -> int:
        return int(sum(s.size for s in self.segments))

    def sample(self, n: int, rng: np.random.Generator, points: int = GRID_POINTS) -> np.ndarray:
        """``n`` rows of ``points`` noise values (float32).

        Each row takes the noise of ONE source scan (so its level and texture are those
        of one real measurement): that scan's segments in random order, each maybe
        reversed, cycled until the row is full, from a random offset, random sign.
        """
        if not self.segments:
            raise LibraryError("the noise bank is empty: build or load one first")
        by_source: dict[int, list[np.ndarray]] = {}
        for seg, src in zip(self.segments, self.segment_source):
            by_source.setdefault(src, []).append(seg)
        keys = sorted(by_source)
        out = np.empty((n, points), np.float32)
        for r in range(n):
            segs = by_source[keys[int(rng.integers(len(keys)))]]
            pieces: list[np.ndarray] = []
            total = 0
            while total < points:
                for i in rng.permutation(len(segs)):
                    seg = segs[i][::-1] if rng.random() < 0.5 else segs[i]
                    pieces.append(seg)
                    total += seg.size
            row = np.concatenate(pieces)
            offset = int(rng.integers(0, row.size - points + 1))
            out[r] = row[offset:offset + points] * (1.0 if rng.random() < 0.5 else -1.0)
        return out

    # -- storage ------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        lengths = np.array([s.size for s in self.segments], np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        values = (np.concatenate(self.segments).astype(np.float32) if self.segments
                  else np.empty(0, np.float32))
        manifest = {**self.manifest, "format": FORMAT, "format_version": FORMAT_VERSION,
                    "grid_step": GRID_STEP, "segments": len(self.segments), "points": int(values.size),
                    "sources": self.sources}
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, values=values, offsets=offsets,
                            source=np.asarray(self.segment_source, np.int32),
                            manifest=np.array(json.dumps(manifest)))
        tmp.replace(path)  # atomic: a reader never sees half a bank
        self.manifest, self.path = manifest, path
        return path

    @classmethod
    def load(cls, path: str | Path | None = None) -> NoiseBank:
        path = Path(path) if path is not None else default_bank_path()
        try:
            with np.load(path, allow_pickle=False) as z:
                values, offsets, source = z["values"], z["offsets"], z["source"]
                manifest = json.loads(str(z["manifest"]))
        except (OSError, ValueError, KeyError) as exc:
            raise LibraryError(f"no readable noise bank at {path}: {exc}") from None
        if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
            raise LibraryError(f"{path} is not an xrd-agent noise bank of format version {FORMAT_VERSION}")
        n_sources = max(len(manifest.get("sources", [])), 1)
        if (offsets.ndim != 1 or offsets.size != source.size + 1 or offsets[-1] != values.size
                or np.any(np.diff(offsets) <= 0) or np.any((source < 0) | (source >= n_sources))):
            raise LibraryError(f"noise bank {path} is damaged: offsets do not match the values")
        segments = [values[a:b].astype(np.float32) for a, b in zip(offsets[:-1], offsets[1:])]
        return cls(segments=segments, sources=list(manifest.get("sources", [])),
                   segment_source=[int(i) for i in source], manifest=manifest, path=path)


def licences_from_readme(files: Sequence[Path]) -> dict[str, str]:
    """Source and licence per file name from a markdown table in a README.md beside the files.

    The fixtures folder documents each file as ``| name | ... | source, licence |``, and
    later rows abbreviate ("same, Apache-2.0", "xylib samples"): an abbreviation takes
    the full text of the row it refers to. A lab's own folder usually has no README and
    gets "unspecified" (or ``--licence``).
    """
    found: dict[str, str] = {}
    for readme in sorted({Path(f).parent / "README.md" for f in files}):
        if not readme.is_file():
            continue
        previous: list[str] = []
        for line in readme.read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.lstrip().startswith("|"):
                continue
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) < 2 or not cells[0] or set(cells[0]) <= {"-", " ", ":"}:
                continue
            text = cells[-1]
            if text.lower().startswith("same") and previous:
                text = previous[-1].rsplit(",", 1)[0] + text[4:]
            elif "," not in text:  # a bare source name: the licence is on its first row
                text = next((p for p in previous if p.startswith(text) and p != text), text)
            previous.append(text)
            found.setdefault(cells[0], text)
    return found
