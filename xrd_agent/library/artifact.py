"""The stored reference library: what the model is trained on and names its classes by.

Layout of a library folder (the default one ships in ``xrd_agent/data/library``)::

    manifest.json   format, version, source, count, grid, wavelength, profile,
                    build command, sha256 of every file
    entries.json    one object per class: refcode, name, aliases, formula, metals,
                    cell, space_group, variants, doi ... (order = class index)
    patterns.npz    ``patterns``: float16 (count, GRID_POINTS), each max 1
    sticks.npz      ``offsets`` (count+1), ``two_theta``, ``intensity``, ``hkl`` (M, 3):
                    the reflections of class i are rows offsets[i]:offsets[i+1]
    niggli.json     optional: refcode -> Niggli cell of the primitive lattice, from which
                    :mod:`xrd_agent.materials` groups classes into materials
    heldout/        optional, same layout: other determinations of the same materials;
                    each entry's ``class_refcode`` names its class in the parent library

Only numpy and json are needed to read it: the daemon never imports pymatgen.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from xrd_agent.errors import LibraryError
from xrd_agent.pattern import GRID_POINTS, GRID_START, GRID_STEP, GRID_STOP

FORMAT = "xrd-agent-library"
FORMAT_VERSION = 1
FILES = ("entries.json", "patterns.npz", "sticks.npz")


def default_library_path() -> Path:
    return Path(str(resources.files("xrd_agent") / "data" / "library"))


@dataclass(frozen=True, eq=False)
class Sticks:
    two_theta: np.ndarray
    intensity: np.ndarray
    hkl: np.ndarray


@dataclass(eq=False)
class Library:
    entries: list[dict[str, Any]]
    patterns16: np.ndarray  # float16 (count, GRID_POINTS)
    stick_offsets: np.ndarray
    stick_two_theta: np.ndarray
    stick_intensity: np.ndarray
    stick_hkl: np.ndarray
    manifest: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def __post_init__(self) -> None:
        n = len(self.entries)
        if self.patterns16.shape != (n, GRID_POINTS):
            raise LibraryError(f"patterns have shape {self.patterns16.shape}, expected ({n}, {GRID_POINTS})")
        if self.stick_offsets.shape != (n + 1,):
            raise LibraryError("stick offsets do not match the number of entries")

    # -- views ------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.entries)

    @property
    def version(self) -> str:
        return str(self.manifest.get("version", "unversioned"))

    @cached_property
    def refcodes(self) -> tuple[str, ...]:
        return tuple(e["refcode"] for e in self.entries)

    @cached_property
    def names(self) -> tuple[str, ...]:
        return tuple(e.get("name") or e["refcode"] for e in self.entries)

    @cached_property
    def patterns(self) -> np.ndarray:
        """float32 copy of the patterns (what training and search-match use)."""
        return self.patterns16.astype(np.float32)

    @cached_property
    def niggli(self) -> dict[str, tuple[float, ...]]:
        """refcode -> Niggli cell (``niggli.json``); empty when the library has none."""
        if self.path is None or not (self.path / "niggli.json").is_file():
            return {}
        try:
            cells = json.loads((self.path / "niggli.json").read_text())["cells"]
            return {str(k): tuple(float(x) for x in v) for k, v in cells.items()}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LibraryError(f"{self.path / 'niggli.json'} is damaged: {exc}") from None

    @cached_property
    def materials(self) -> Any:
        """The classes grouped by material (:func:`xrd_agent.materials.group`), computed once."""
        from xrd_agent.materials import group

        return group(self)

    def sticks(self, index: int) -> Sticks:
        a, b = int(self.stick_offsets[index]), int(self.stick_offsets[index + 1])
        return Sticks(self.stick_two_theta[a:b], self.stick_intensity[a:b], self.stick_hkl[a:b])

    def index_of(self, name_or_refcode: str) -> int:
        key = name_or_refcode.strip().lower()
        for i, e in enumerate(self.entries):
            names = [e["refcode"], e.get("name") or "", *e.get("aliases", [])]
            if key in (n.lower() for n in names if n):
                return i
        raise LibraryError(f"no library entry named {name_or_refcode!r}")

    def heldout(self) -> Library | None:
        if self.path is None or not (self.path / "heldout" / "manifest.json").is_file():
            return None
        return Library.load(self.path / "heldout")

    # -- construction and storage ----------------------------------------------
    @classmethod
    def from_patterns(
        cls,
        entries: list[dict[str, Any]],
        patterns: np.ndarray,
        sticks: list[Sticks],
        manifest: dict[str, Any] | None = None,
    ) -> Library:
        lengths = np.array([s.two_theta.size for s in sticks], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        cat = (lambda attr, dt, shape: np.concatenate([getattr(s, attr) for s in sticks]).astype(dt)
               if sticks and offsets[-1] else np.empty(shape, dt))
        return cls(
            entries=list(entries),
            patterns16=np.asarray(patterns, dtype=np.float16),
            stick_offsets=offsets,
            stick_two_theta=cat("two_theta", np.float32, (0,)),
            stick_intensity=cat("intensity", np.float32, (0,)),
            stick_hkl=cat("hkl", np.int16, (0, 3)).reshape(-1, 3),
            manifest=dict(manifest or {}),
        )

    def save(self, directory: str | Path) -> Path:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / "entries.json").write_text(json.dumps(self.entries, indent=1, ensure_ascii=False) + "\n")
        np.savez_compressed(out / "patterns.npz", patterns=self.patterns16)
        np.savez_compressed(
            out / "sticks.npz",
            offsets=self.stick_offsets,
            two_theta=self.stick_two_theta,
            intensity=self.stick_intensity,
            hkl=self.stick_hkl,
        )
        manifest = {
            **self.manifest,
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "count": len(self),
            "grid": {"start": GRID_START, "stop": GRID_STOP, "step": GRID_STEP, "points": GRID_POINTS},
            "sha256": {name: _sha256(out / name) for name in FILES},
        }
        manifest.setdefault("version", "unversioned")
        (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        self.manifest, self.path = manifest, out
        return out

    @classmethod
    def load(cls, directory: str | Path | None = None, *, verify: bool = False) -> Library:
        path = Path(directory) if directory else default_library_path()
        try:
            manifest = json.loads((path / "manifest.json").read_text())
        except (OSError, ValueError) as exc:
            raise LibraryError(f"no readable library at {path}: {exc}") from None
        if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
            raise LibraryError(f"{path} is not an xrd-agent library of format version {FORMAT_VERSION}")
        if verify:
            for name, digest in manifest.get("sha256", {}).items():
                if _sha256(path / name) != digest:
                    raise LibraryError(f"{path / name} does not match its manifest checksum")
        try:
            entries = json.loads((path / "entries.json").read_text())
            with np.load(path / "patterns.npz") as z:
                patterns = z["patterns"]
            with np.load(path / "sticks.npz") as z:
                sticks = {k: z[k] for k in ("offsets", "two_theta", "intensity", "hkl")}
        except (OSError, ValueError, KeyError) as exc:
            raise LibraryError(f"library at {path} is damaged: {exc}") from None
        return cls(
            entries=entries,
            patterns16=patterns,
            stick_offsets=sticks["offsets"],
            stick_two_theta=sticks["two_theta"],
            stick_intensity=sticks["intensity"],
            stick_hkl=sticks["hkl"],
            manifest=manifest,
            path=path,
        )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
