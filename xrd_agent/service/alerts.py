"""Judge an identification: which alerts a chemist or the robot must see.

Pure functions from values to values (no sockets, no ledger): the pipeline turns each
:class:`Alert` into an ``xrd.alert`` message.

Rules (``docs/service.md`` explains them for users):

=========================  ========  ===================================================
reason                     severity  when
=========================  ========  ===================================================
amorphous                  critical  the model flags no crystalline product (failed synthesis)
expected_phase_missing     critical  an expectation exists and no expected material is in the result
                                     (its Top-k materials), or nothing crystalline was found
expected_phase_uncertain   warning   an expected material is in the Top-k but not a confident first answer
unknown_phase              warning   the scan is crystalline but nothing in the library explains it
mixture                    warning   a second phase is likely
low_coverage               info      the scan measured too little of 2-theta 5-50 deg
unreadable                 warning   the file cannot be read (also published on ``xrd.rejected``)
folder_missing             critical  the export folder vanished (unmounted share)
folder_restored            info      the export folder is back
=========================  ========  ===================================================

An amorphous scan with an expectation raises both ``amorphous`` and
``expected_phase_missing``: the robot's rule may key on either.

Answers are materials (:mod:`xrd_agent.materials`): an expectation names materials, a
candidate is a material, and every alert's ``detail`` names materials by their common
names; refcodes appear only in the evidence (``found``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from xrd_agent.identification import Flag, Identification

AMORPHOUS = "amorphous"
EXPECTED_PHASE_MISSING = "expected_phase_missing"
EXPECTED_PHASE_UNCERTAIN = "expected_phase_uncertain"
UNKNOWN_PHASE = "unknown_phase"
MIXTURE = "mixture"
LOW_COVERAGE = "low_coverage"
UNREADABLE = "unreadable"
FOLDER_MISSING = "folder_missing"
FOLDER_RESTORED = "folder_restored"

SEVERITY = {
    AMORPHOUS: "critical",
    EXPECTED_PHASE_MISSING: "critical",
    EXPECTED_PHASE_UNCERTAIN: "warning",
    UNKNOWN_PHASE: "warning",
    MIXTURE: "warning",
    LOW_COVERAGE: "info",
    UNREADABLE: "warning",
    FOLDER_MISSING: "critical",
    FOLDER_RESTORED: "info",
}


@dataclass(frozen=True)
class Expectation:
    """What a sample should contain: any one of ``phases`` (names, aliases or refcodes of library
    materials) in the Top-k; ``elements``: the elements or metals in the pot, when known."""

    sample_id: str
    phases: tuple[str, ...]
    top_k: int = 5
    source: str = "config"  # control | sidecar | config
    elements: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = {"sample_id": self.sample_id, "phases": list(self.phases), "top_k": self.top_k, "source": self.source}
        if self.elements:
            out["elements"] = list(self.elements)
        return out


@dataclass(frozen=True)
class Alert:
    reason: str
    severity: str
    evidence: dict[str, Any] = field(default_factory=dict)


def alert(reason: str, **evidence: Any) -> Alert:
    return Alert(reason, SEVERITY[reason], dict(evidence))


def aliases_of(library: Any) -> dict[str, set[str]]:
    """refcode -> every lower-case name it answers to (refcode, name, aliases) in ``library``."""
    out: dict[str, set[str]] = {}
    for e in getattr(library, "entries", None) or []:
        names = {str(e.get("refcode", "")), str(e.get("name") or ""), *(str(a) for a in e.get("aliases", []))}
        out[str(e.get("refcode"))] = {n.lower() for n in names if n}
    return out


def _expected_names(phases: tuple[str, ...], aliases: dict[str, set[str]]) -> set[str]:
    """Every name an expected phase goes by: an expected refcode (FIQCEN) or alias (Cu-BTC)
    also accepts the other determinations of the same material (DOTSOV, also HKUST-1)."""
    wanted = {p.strip().lower() for p in phases}
    for names in aliases.values():  # a material's names, refcode included, stand together
        if names & wanted:
            wanted = wanted | names
    return wanted


def _names(cands: Any) -> str:
    return ", ".join(dict.fromkeys(c.name for c in cands)) or "nothing"


def _material_of(cand: Any, materials: Any) -> str:
    """A candidate's material id (its own field, else looked up from its refcode)."""
    if getattr(cand, "material", ""):
        return str(cand.material)
    if materials is not None:
        for m in materials.resolve(cand.refcode).matches:
            return m.id
    return cand.refcode


def judge(
    identification: Identification,
    expectation: Expectation | None = None,
    *,
    aliases: dict[str, set[str]] | None = None,
    materials: Any = None,
    unknown_threshold: float | None = None,
) -> list[Alert]:
    """Alerts for one identification. ``materials`` (:class:`xrd_agent.materials.Materials` of the
    library) lets an expectation name a material by any of its names and compares materials;
    without it, ``aliases`` (refcode -> lower-case names) or the candidate's own name and refcode
    count. Evidence uses the contract's keys (``messages.Evidence``)."""
    alerts: list[Alert] = []
    flags = identification.flags
    flag_names = sorted(f.value for f in flags)
    top = identification.top
    refcodes = [c.refcode for c in top]
    confidence = min(1.0, max(0.0, float(identification.confidence)))
    basic: dict[str, Any] = {"confidence": confidence, "flags": flag_names}
    if Flag.AMORPHOUS in flags:
        alerts.append(alert(AMORPHOUS, **basic, detail="no crystalline product: only a broad hump and noise"))
    elif Flag.UNKNOWN_PHASE in flags:
        extra = {"threshold": unknown_threshold} if unknown_threshold is not None else {}
        alerts.append(alert(UNKNOWN_PHASE, **basic, **extra, found=refcodes[:3],
                            found_names=[c.name for c in top[:3]],
                            detail=("crystalline, but no library material explains the pattern "
                                    f"(closest: {_names(top[:3])})")))
    if Flag.MIXTURE in flags:
        alerts.append(alert(MIXTURE, **basic, found=refcodes[:3], found_names=[c.name for c in top[:3]],
                            detail=f"a second phase is likely besides {top[0].name if top else 'the first'}"))
    if Flag.LOW_COVERAGE in flags:
        cov = identification.coverage
        alerts.append(alert(LOW_COVERAGE, **basic, detail=(
            f"the scan covers {cov.fraction:.0%} of 2-theta 5-50 deg (Cu); the ranking is less reliable")))
    if expectation is not None and expectation.phases:
        alerts.extend(_expected(identification, expectation, basic, aliases, materials))
    return alerts


def _expected(identification: Identification, expectation: Expectation, basic: dict[str, Any],
              aliases: dict[str, set[str]] | None, materials: Any) -> list[Alert]:
    """expected_phase_missing when no expected material is in the result (Top-k materials), or
    nothing crystalline is there; expected_phase_uncertain when one is there but it is not the
    confident first answer (rank > 1, or unknown_phase)."""
    flags = identification.flags
    k = max(1, expectation.top_k)
    cands = identification.top[:k]
    if materials is not None:
        wanted = {m.id: m.name for p in expectation.phases for m in materials.resolve(p).matches}
        hits = [r for r, c in enumerate(cands) if _material_of(c, materials) in wanted]
        expected_names = list(dict.fromkeys(wanted.values())) or list(expectation.phases)
    else:
        names = _expected_names(expectation.phases, aliases or {})
        hits = []
        for r, cand in enumerate(cands):
            own = {cand.refcode.lower(), cand.name.lower()}
            if aliases and cand.refcode in aliases:
                own |= aliases[cand.refcode]
            if own & names:
                hits.append(r)
        expected_names = list(expectation.phases)
    facts = {**basic, "expected_phases": list(expectation.phases), "expected_materials": expected_names,
             "top_k": k, "found": [c.refcode for c in cands], "found_names": [c.name for c in cands]}
    wanted_text = " or ".join(expected_names)
    source = f" (expectation from {expectation.source})"
    if Flag.AMORPHOUS in flags:
        return [alert(EXPECTED_PHASE_MISSING, **facts,
                      detail=f"expected {wanted_text}, but nothing crystallised{source}")]
    if not hits:
        return [alert(EXPECTED_PHASE_MISSING, **facts,
                      detail=f"expected {wanted_text}, found {_names(cands)}{source}")]
    if hits[0] > 0 or Flag.UNKNOWN_PHASE in flags:
        where = (f"ranked {hits[0] + 1} behind {_names(cands[:hits[0]])}" if hits[0] > 0
                 else "first, but the pattern is not explained well enough to be sure")
        return [alert(EXPECTED_PHASE_UNCERTAIN, **facts,
                      detail=f"expected {wanted_text}: {cands[hits[0]].name} is {where}{source}")]
    return []
