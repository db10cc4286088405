"""The :class:`Scan` value: what a diffractometer measured, read from one file.

A scan is immutable and self-describing: readers build it, everything downstream
only reads it. Arrays are made read-only so no stage can edit what another sees.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xrd_agent.errors import UnknownWavelength

#: Characteristic lines in ångström (K-alpha1, K-alpha2), International Tables for
#: Crystallography Vol. C, Table 4.2.2.1 (as used by Bruker DIFFRAC and pymatgen).
ANODE_LINES: Mapping[str, tuple[float, float]] = {
    "Cu": (1.540598, 1.544426),
    "Co": (1.788965, 1.792850),
    "Mo": (0.709300, 0.713590),
    "Cr": (2.289760, 2.293663),
    "Fe": (1.936042, 1.939980),
    "Ag": (0.559421, 0.563813),
}
CU_KALPHA1 = ANODE_LINES["Cu"][0]


@dataclass(frozen=True)
class Wavelength:
    """Radiation of a scan. ``ratio`` is I(K-alpha2)/I(K-alpha1)."""

    alpha1: float | None = None
    alpha2: float | None = None
    ratio: float | None = None
    average: float | None = None
    beta: float | None = None
    anode: str | None = None

    @classmethod
    def for_anode(cls, anode: str) -> Wavelength:
        key = anode.strip().strip("'\"").capitalize()
        if key not in ANODE_LINES:
            raise UnknownWavelength(f"unknown anode material {anode!r}")
        a1, a2 = ANODE_LINES[key]
        return cls(alpha1=a1, alpha2=a2, ratio=0.5, average=(2 * a1 + a2) / 3, anode=key)

    @property
    def primary(self) -> float | None:
        """The wavelength that defines the 2-theta scale: K-alpha1, else the average."""
        for value in (self.alpha1, self.average, self.alpha2):
            if value is not None and value > 0:
                return value
        return None

    def to_dict(self) -> dict[str, float | str | None]:
        return dataclasses.asdict(self)


def _frozen(array: np.ndarray) -> np.ndarray:
    out = np.ascontiguousarray(array, dtype=np.float64)
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class ScanRange:
    """One measured range (RAW files and BRML DataRoutes may hold several)."""

    two_theta: np.ndarray
    intensity: np.ndarray
    step: float | None = None
    time_per_step: float | None = None
    scan_type: str | None = None
    kv: float | None = None
    ma: float | None = None

    def __post_init__(self) -> None:
        tt, inten = np.asarray(self.two_theta, float), np.asarray(self.intensity, float)
        if tt.shape != inten.shape or tt.ndim != 1:
            raise ValueError("two_theta and intensity must be 1-D arrays of equal length")
        if tt.size > 1 and tt[0] > tt[-1]:
            tt, inten = tt[::-1], inten[::-1]
        object.__setattr__(self, "two_theta", _frozen(tt))
        object.__setattr__(self, "intensity", _frozen(inten))

    @property
    def points(self) -> int:
        return int(self.two_theta.size)

    def summary(self) -> dict[str, object]:
        tt = self.two_theta
        return {
            "points": self.points,
            "two_theta_first": float(tt[0]) if tt.size else None,
            "two_theta_last": float(tt[-1]) if tt.size else None,
            "step": self.step,
            "time_per_step": self.time_per_step,
            "scan_type": self.scan_type,
        }


@dataclass(frozen=True, eq=False)
class Scan:
    """A diffraction scan as read from one file, with its provenance.

    ``two_theta``/``intensity`` are all ranges merged in ascending 2-theta; ``ranges``
    keeps them apart for who needs that.
    """

    ranges: tuple[ScanRange, ...]
    source_path: Path
    format: str
    format_version: str
    sha256: str
    wavelength: Wavelength | None = None
    sample_id: str | None = None
    measured_at: _dt.datetime | None = None
    operator: str | None = None
    instrument: str | None = None
    software: str | None = None
    complete: bool = True
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ranges", tuple(self.ranges))
        object.__setattr__(self, "source_path", Path(self.source_path))
        object.__setattr__(self, "metadata", dict(self.metadata))

    @property
    def two_theta(self) -> np.ndarray:
        return self._merged[0]

    @property
    def intensity(self) -> np.ndarray:
        return self._merged[1]

    @property
    def _merged(self) -> tuple[np.ndarray, np.ndarray]:
        cached = self.__dict__.get("_merged_cache")
        if cached is None:
            if not self.ranges:
                cached = (_frozen(np.empty(0)), _frozen(np.empty(0)))
            else:
                tt = np.concatenate([r.two_theta for r in self.ranges])
                inten = np.concatenate([r.intensity for r in self.ranges])
                order = np.argsort(tt, kind="stable")
                cached = (_frozen(tt[order]), _frozen(inten[order]))
            object.__setattr__(self, "_merged_cache", cached)
        return cached

    # Convenience views of the first range, the one most instruments write.
    @property
    def anode(self) -> str | None:
        return self.wavelength.anode if self.wavelength else None

    @property
    def step(self) -> float | None:
        return self.ranges[0].step if self.ranges else None

    @property
    def scan_type(self) -> str | None:
        return self.ranges[0].scan_type if self.ranges else None

    @property
    def time_per_step(self) -> float | None:
        return self.ranges[0].time_per_step if self.ranges else None

    @property
    def kv(self) -> float | None:
        return self.ranges[0].kv if self.ranges else None

    @property
    def ma(self) -> float | None:
        return self.ranges[0].ma if self.ranges else None

    def with_wavelength(self, wavelength: Wavelength) -> Scan:
        return dataclasses.replace(self, wavelength=wavelength)

    def summary(self) -> dict[str, object]:
        """A JSON-ready description (what ``xrd-agent inspect --json`` prints)."""
        return {
            "file": str(self.source_path),
            "format": self.format,
            "version": self.format_version,
            "sha256": self.sha256,
            "complete": self.complete,
            "sample_id": self.sample_id,
            "measured_at": self.measured_at.isoformat() if self.measured_at else None,
            "operator": self.operator,
            "instrument": self.instrument,
            "software": self.software,
            "anode": self.anode,
            "wavelength": self.wavelength.to_dict() if self.wavelength else None,
            "ranges": [r.summary() for r in self.ranges],
        }


def to_cu_two_theta(two_theta: np.ndarray, wavelength: float, target: float = CU_KALPHA1) -> np.ndarray:
    """Map 2-theta measured at ``wavelength`` onto the scale of ``target`` through d-spacing.

    Angles whose d-spacing cannot be reached at the target wavelength become NaN.
    """
    theta = np.radians(np.asarray(two_theta, float) / 2.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        sin_target = np.sin(theta) * (target / wavelength)
        out = 2.0 * np.degrees(np.arcsin(sin_target))
    out[(sin_target > 1) | (sin_target <= 0)] = np.nan
    return out
