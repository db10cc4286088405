"""The result of identifying one scan: the value the model hands to the service."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from xrd_agent.pattern import Coverage, GateDecision


class Flag(str, Enum):
    """Warnings a chemist or robot should act on."""

    UNKNOWN_PHASE = "unknown_phase"  # nothing in the library explains the scan
    AMORPHOUS = "amorphous"  # no crystalline product: the failed-synthesis case
    MIXTURE = "mixture"  # a second phase is likely
    LOW_COVERAGE = "low_coverage"  # the scan measured too little of 5-50 deg


@dataclass(frozen=True)
class Candidate:
    rank: int
    refcode: str
    name: str
    probability: float
    fit: dict[str, object] | None = None  # the physics check's fit of this phase (xrd_agent/verify)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"rank": self.rank, "refcode": self.refcode, "name": self.name,
                                  "probability": round(float(self.probability), 6)}
        if self.fit is not None:
            out["fit"] = self.fit
        return out


@dataclass(frozen=True)
class CamRegion:
    """A 2-theta interval whose class activation drove the top decision."""

    start: float
    end: float
    weight: float  # share of the positive activation inside the interval, 0..1

    def to_dict(self) -> dict[str, float]:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "weight": round(self.weight, 4)}


@dataclass(frozen=True)
class Identification:
    top: tuple[Candidate, ...]
    confidence: float
    flags: frozenset[Flag]
    gate: GateDecision
    coverage: Coverage
    cam_regions: tuple[CamRegion, ...] = ()
    model_version: str = ""
    library_version: str = ""
    extra: dict[str, object] = field(default_factory=dict)
    composition: tuple[dict[str, object], ...] = ()  # phases with weight fractions (xrd_agent/verify)
    physics: dict[str, object] | None = None  # the physics check's summary

    def to_dict(self) -> dict[str, object]:
        out = self._base()
        if self.physics is not None:
            out["physics"] = self.physics
            out["composition"] = list(self.composition)
        return out

    def _base(self) -> dict[str, object]:
        return {
            "top": [c.to_dict() for c in self.top],
            "confidence": round(float(self.confidence), 6),
            "flags": sorted(f.value for f in self.flags),
            "gate": self.gate.to_dict(),
            "coverage": self.coverage.to_dict(),
            "cam_regions": [r.to_dict() for r in self.cam_regions],
            "model_version": self.model_version,
            "library_version": self.library_version,
        }
