"""Judge an identification: which alerts a chemist or the robot must see.

Pure functions from values to values (no sockets, no ledger): the pipeline turns each
:class:`Alert` into an ``xrd.alert`` message.

Rules (``docs/service.md`` explains them for users):

=========================  ========  ===================================================
reason                     severity  when
=========================  ========  ===================================================
amorphous                  critical  the product's crystalline fraction is below ``model.amorphous_below`` (failed synthesis)
expected_phase_missing     critical  an expectation exists and none of its phases is in the Top-k
unknown_phase              warning   the scan is crystalline but nothing in the library explains it
mixture                    warning   a second phase is likely
low_crystallinity          warning   crystalline, but the crystalline fraction is below ``model.low_crystallinity_below``
low_coverage               info      the scan measured too little of 2-theta 5-50 deg
unreadable                 warning   the file cannot be read (also published on ``xrd.rejected``)
folder_missing             critical  the export folder vanished (unmounted share)
folder_restored            info      the export folder is back
=========================  ========  ===================================================

An amorphous scan with an expectation raises both ``amorphous`` and
``expected_phase_missing``: the robot's rule may key on either. An expectation may carry its
own crystallinity thresholds (``amorphous_below``, ``low_crystallinity_below``); they replace
the configured ones for that sample's verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from xrd_agent.identification import Flag, Identification

AMORPHOUS = "amorphous"
EXPECTED_PHASE_MISSING = "expected_phase_missing"
UNKNOWN_PHASE = "unknown_phase"
MIXTURE = "mixture"
LOW_COVERAGE = "low_coverage"
LOW_CRYSTALLINITY = "low_crystallinity"
UNREADABLE = "unreadable"
FOLDER_MISSING = "folder_missing"
FOLDER_RESTORED = "folder_restored"

SEVERITY = {
    AMORPHOUS: "critical",
    EXPECTED_PHASE_MISSING: "critical",
    UNKNOWN_PHASE: "warning",
    MIXTURE: "warning",
    LOW_COVERAGE: "info",
    LOW_CRYSTALLINITY: "warning",
    UNREADABLE: "warning",
    FOLDER_MISSING: "critical",
    FOLDER_RESTORED: "info",
}


@dataclass(frozen=True)
class Expectation:
    """What a sample should contain: any one of ``phases`` (names, aliases or refcodes) in the Top-k."""

    sample_id: str
    phases: tuple[str, ...]
    top_k: int = 5
    source: str = "config"  # control | sidecar | config
    amorphous_below: float | None = None  # this sample's crystallinity thresholds (None: the configured)
    low_crystallinity_below: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"sample_id": self.sample_id, "phases": list(self.phases), "top_k": self.top_k, "source": self.source}
        for key in ("amorphous_below", "low_crystallinity_below"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
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


def _sample_flags(identification: Identification, expectation: Expectation | None) -> frozenset[Flag]:
    """The identification's flags, with the crystallinity verdict redone on the sample's own
    thresholds when its expectation carries any."""
    if expectation is None or (expectation.amorphous_below is None and expectation.low_crystallinity_below is None):
        return identification.flags
    from xrd_agent.model.flags import FlagPolicy, crystallinity_verdict

    policy = FlagPolicy()
    amorphous = expectation.amorphous_below if expectation.amorphous_below is not None else policy.amorphous_below
    low = expectation.low_crystallinity_below
    low = max(low if low is not None else policy.low_crystallinity_below, amorphous)
    verdict = crystallinity_verdict(identification.crystallinity, identification.coverage, policy, amorphous, low)
    if identification.crystallinity is None:
        return identification.flags
    flags = set(identification.flags) - {Flag.AMORPHOUS, Flag.LOW_CRYSTALLINITY}
    if verdict is not None:
        flags.add(verdict)
    return frozenset(flags)


def judge(
    identification: Identification,
    expectation: Expectation | None = None,
    *,
    aliases: dict[str, set[str]] | None = None,
    unknown_threshold: float | None = None,
) -> list[Alert]:
    """Alerts for one identification. ``aliases`` maps a refcode to every lower-case name it
    answers to (name, aliases, refcode), from the library; without it only the candidate's
    own name and refcode count. Evidence uses the contract's keys (``messages.Evidence``)."""
    alerts: list[Alert] = []
    flags = _sample_flags(identification, expectation)
    flag_names = sorted(f.value for f in flags)
    refcodes = [c.refcode for c in identification.top]
    confidence = min(1.0, max(0.0, float(identification.confidence)))
    basic: dict[str, Any] = {"confidence": confidence, "flags": flag_names}
    cryst = identification.crystallinity
    shown = {"crystallinity": round(cryst.fraction, 4)} if cryst is not None and cryst.fraction == cryst.fraction else {}
    share = f" (crystalline fraction {cryst.fraction:.2f} +- {cryst.uncertainty:.2f})" if shown else ""
    if Flag.AMORPHOUS in flags:
        alerts.append(alert(AMORPHOUS, **basic, **shown,
                            detail="no crystalline product: broad amorphous scattering and no more than traces "
                                   f"of sharp reflections{share}"))
    elif Flag.UNKNOWN_PHASE in flags:
        extra = {"threshold": unknown_threshold} if unknown_threshold is not None else {}
        alerts.append(alert(UNKNOWN_PHASE, **basic, **extra, found=refcodes[:3],
                            detail="crystalline, but no library phase explains the pattern"))
    if Flag.LOW_CRYSTALLINITY in flags:
        alerts.append(alert(LOW_CRYSTALLINITY, **basic, **shown,
                            detail=f"crystalline, but much of the product is amorphous{share}"))
    if Flag.MIXTURE in flags:
        alerts.append(alert(MIXTURE, **basic, found=refcodes[:3], detail="a second phase is likely"))
    if Flag.LOW_COVERAGE in flags:
        cov = identification.coverage
        alerts.append(alert(LOW_COVERAGE, **basic, detail=(
            f"the scan covers {cov.fraction:.0%} of 2-theta 5-50 deg (Cu); the ranking is less reliable")))
    if expectation is not None and expectation.phases:
        k = max(1, expectation.top_k)
        wanted = _expected_names(expectation.phases, aliases or {})
        hits = []
        for cand in identification.top[:k]:
            names = {cand.refcode.lower(), cand.name.lower()}
            if aliases and cand.refcode in aliases:
                names |= aliases[cand.refcode]
            if names & wanted:
                hits.append(cand.refcode)
        # An amorphous or unknown scan names no phase with any trust: the expectation is missed.
        untrusted = bool(flags & {Flag.AMORPHOUS, Flag.UNKNOWN_PHASE})
        if not hits or untrusted:
            alerts.append(alert(
                EXPECTED_PHASE_MISSING,
                **basic,
                expected_phases=list(expectation.phases),
                top_k=k,
                found=refcodes[:k],
                detail=(("the scan shows no phase that can be trusted" if untrusted
                         else f"no expected phase in the Top-{k}") + f" (expectation from {expectation.source})"),
            ))
    return alerts
