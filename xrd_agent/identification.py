"""The result of identifying one scan: the value the model hands to the service."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

from xrd_agent.messages import CamRegion, Candidate, Coverage
from xrd_agent.pattern import GateDecision

if TYPE_CHECKING:  # scipy lives behind it; the contract and the CLI's parser must not need it
    from xrd_agent.crystallinity import Crystallinity

__all__ = ["CamRegion", "Candidate", "Flag", "Identification"]


class Flag(str, Enum):
    """Warnings a chemist or robot should act on: exactly ``messages.PhaseFlag`` (a test checks)."""

    UNKNOWN_PHASE = "unknown_phase"  # nothing in the library explains the scan
    AMORPHOUS = "amorphous"  # no crystalline product: the failed-synthesis case
    MIXTURE = "mixture"  # a second phase is likely
    LOW_COVERAGE = "low_coverage"  # the scan measured too little of 5-50 deg
    LOW_CRYSTALLINITY = "low_crystallinity"  # crystalline, but much of the product is amorphous


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
    crystallinity: Crystallinity | None = None  # crystalline mass fraction of the product, with uncertainty
    composition: tuple[dict[str, object], ...] = ()  # phases with weight fractions (xrd_agent/verify)
    physics: dict[str, object] | None = None  # the physics check's summary (None: it did not run)

    def to_dict(self) -> dict[str, object]:
        out = {
            "top": [c.to_dict() for c in self.top],
            "confidence": round(float(self.confidence), 6),
            "flags": sorted(f.value for f in self.flags),
            "gate": self.gate.to_dict(),
            "coverage": self.coverage.to_dict(),
            "cam_regions": [r.to_dict() for r in self.cam_regions],
            "model_version": self.model_version,
            "library_version": self.library_version,
        }
        if self.crystallinity is not None and self.crystallinity.fraction == self.crystallinity.fraction:  # not NaN
            out["crystallinity"] = self.crystallinity.to_dict()
        if self.physics is not None:
            out["physics"] = self.physics
            out["composition"] = list(self.composition)
        return out
