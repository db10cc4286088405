"""The one judge: network output + evidence -> confidence, flags, Top-k, and the alerts.

Every judgement of the data path is made here and nowhere else:

* :func:`decide` turns a :class:`~xrd_agent.predict.Prediction` and its
  :class:`~xrd_agent.evidence.Evidence` into an :class:`~xrd_agent.identification.Identification`:
  the peak match reorders the network's few best (rerank), confidence =
  softmax x match score, and the flags follow from the thresholds of
  :class:`~xrd_agent.model.flags.FlagPolicy` (calibrated in docs/model.md). The cosine
  fallback's evidence is judged by its own calibrated thresholds (:func:`cosine_flags`).
* :func:`alerts` turns an identification (and what the sample should contain) into
  the alerts a chemist or the robot must see; the pipeline publishes each as ``xrd.alert``.

Pure functions from values to values: no sockets, no ledger, no TensorFlow.

Alert rules (``docs/service.md`` explains them for users):


=========================  ========  ===================================================
reason                     severity  when
=========================  ========  ===================================================
amorphous                  critical  the model flags no crystalline product (failed synthesis)
expected_phase_missing     critical  an expectation exists and none of its phases is in the Top-k
unknown_phase              warning   the scan is crystalline but nothing in the library explains it
mixture                    warning   a second phase is likely
low_coverage               info      the scan measured too little of 2-theta 5-50 deg
unreadable                 warning   the file cannot be read (also published on ``xrd.rejected``)
folder_missing             critical  the export folder vanished (unmounted share)
folder_restored            info      the export folder is back
=========================  ========  ===================================================

An amorphous scan with an expectation raises both ``amorphous`` and
``expected_phase_missing``: the robot's rule may key on either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xrd_agent.evidence import Evidence
from xrd_agent.identification import Candidate, Flag, Identification
from xrd_agent.model import cam as _cam
from xrd_agent.model.flags import Crystallinity, FlagPolicy, Match
from xrd_agent.predict import Prediction

# -- identification rules ------------------------------------------------------------

#: The peak match reorders the network's RERANK_DEPTH best by softmax x score**RERANK_POWER.
#: Chosen on realistic spectra of the library's own entries (not the held-out test set):
#: depth 5/10/20 x power 1-4; 10 and 4 gave Top-1 67.6 -> 70.8 %, Top-5 85.3 -> 86.7 % (docs/model.md).
RERANK_DEPTH = 10
RERANK_POWER = 4

#: Cosine fallback: best cosine below which no library entry explains the scan (simulated
#: scans of the tiny test library: its MOFs 0.74-0.98, a foreign dense phase 0.05).
COSINE_UNKNOWN = 0.6
#: Cosine fallback: fewer sharp peaks than this (evidence.sharp_peaks) means nothing crystallised.
AMORPHOUS_MIN_PEAKS = 3
#: Cosine fallback: share of the scan's strong-peak height the top reference must explain
#: (pure simulated scans 1.0, 60:40 mixtures 0.68-0.87 on the tiny test library), below
#: which a second phase is likely.
MIXTURE_EXPLAINED = 0.9


@dataclass(frozen=True)
class Rules:
    """What the judge needs besides the evidence: the class labels, versions and thresholds."""

    refcodes: tuple[str, ...]
    names: tuple[str, ...]
    model_version: str = ""
    library_version: str = ""
    top_k: int = 5
    rerank: bool = True  # reorder the network's best by softmax x peak-match score^RERANK_POWER
    rerank_depth: int = RERANK_DEPTH  # how many of the network's best the peak match may reorder
    policy: FlagPolicy = FlagPolicy()

    @property
    def evidence_depth(self) -> int:
        """How many of the best candidates need a peak match."""
        return self.rerank_depth if self.rerank else 1


def network_flags(p_top: float, match: Match, cryst: Crystallinity | None, coverage_fraction: float,
                  policy: FlagPolicy = FlagPolicy()) -> tuple[float, frozenset[Flag]]:
    """Combine the softmax and the evidence into (confidence, flags).

    confidence = softmax x match score: on realistic held-out scans it tracks the
    share of correct names far better than the softmax alone (docs/model.md).
    """
    flags: set[Flag] = set()
    confidence = float(max(p_top, 0.0) * match.score)
    if coverage_fraction < policy.min_coverage:
        flags.add(Flag.LOW_COVERAGE)
    if cryst is not None and (cryst.snr < policy.amorphous_snr or cryst.relative < policy.amorphous_relative):
        flags.add(Flag.AMORPHOUS)
        return 0.0, frozenset(flags)
    if confidence < policy.unknown_threshold or match.score < policy.min_match:
        flags.add(Flag.UNKNOWN_PHASE)
    elif (1.0 - match.explained >= policy.mixture_unexplained
          and sum(h >= policy.mixture_peak for h in match.unexplained_heights) >= policy.mixture_min_peaks
          and match.recovered >= policy.mixture_min_recovered):
        flags.add(Flag.MIXTURE)
    return confidence, frozenset(flags)


def cosine_flags(evidence: Evidence, policy: FlagPolicy = FlagPolicy()) -> tuple[float, frozenset[Flag]]:
    """The cosine fallback's (confidence, flags): its best cosine, unless nothing crystallised
    or nothing in the library explains the scan."""
    cosine = evidence.cosine
    assert cosine is not None
    best = cosine.best
    flags: set[Flag] = set()
    if evidence.pattern.coverage.fraction < policy.min_coverage:
        flags.add(Flag.LOW_COVERAGE)
    if cosine.sharp_peaks < AMORPHOUS_MIN_PEAKS:
        flags.add(Flag.AMORPHOUS)
    elif best < COSINE_UNKNOWN:
        flags.add(Flag.UNKNOWN_PHASE)
    elif cosine.explained < MIXTURE_EXPLAINED:
        flags.add(Flag.MIXTURE)
    confidence = best if not flags & {Flag.AMORPHOUS, Flag.UNKNOWN_PHASE} else min(best, COSINE_UNKNOWN) / 2
    return confidence, frozenset(flags)


def decide(prediction: Prediction, evidence: Evidence, rules: Rules) -> Identification:
    """The decide stage: one scan's prediction and evidence -> its Identification."""
    if evidence.cosine is not None:
        return _decide_cosine(prediction, evidence, rules)
    probs = prediction.probabilities
    pattern = evidence.pattern
    k = min(rules.top_k, probs.size)
    reorder = min(rules.rerank_depth if rules.rerank else 1, probs.size)
    order = prediction.order()[:max(k, reorder)]
    matches = {j: evidence.matches[j] for j in (int(i) for i in order[:reorder])}
    if rules.rerank:
        # Peak evidence reorders the network's few best (docs/model.md).
        head = sorted(matches, key=lambda j: -float(probs[j]) * matches[j].score ** RERANK_POWER)
        order = np.array(head + [int(j) for j in order if int(j) not in matches])
    verified = evidence.verification
    fits: dict[int, Any] = {}
    if verified is not None and verified.candidates:
        # the physics check ranks first (network prior x fit, xrd_agent/verify/check.py); the network's rest follow
        fits = {c.index: c for c in verified.candidates}
        order = np.array([c.index for c in verified.candidates] + [int(j) for j in order if int(j) not in fits])
    order = order[:k]
    from xrd_agent.verify.stage import fit_dict, phase_dict, summary

    top = tuple(Candidate(rank=r + 1, refcode=rules.refcodes[j], name=rules.names[j], probability=float(probs[j]),
                          fit=fit_dict(fits[int(j)]) if int(j) in fits else None) for r, j in enumerate(order))
    match = matches.get(int(order[0]))
    if match is None:  # a candidate only the physics check proposed: judged by its fit below
        match = next(iter(matches.values()))
    cryst = evidence.crystallinity
    cov = pattern.coverage
    confidence, flags = network_flags(float(probs[order[0]]), match, cryst, cov.fraction, rules.policy)
    composition: tuple = ()
    physics = None
    if verified is not None:
        physics = summary(verified)
        if verified.candidates and Flag.AMORPHOUS not in flags:
            # the fit replaces the peak match's verdict: unknown when nothing fits or the posterior
            # x fit quality is low; mixture when a further phase is significant (F-test)
            confidence = verified.confidence
            kept = set(flags) - {Flag.UNKNOWN_PHASE, Flag.MIXTURE}
            if not verified.fits or confidence < rules.policy.unknown_threshold:
                kept.add(Flag.UNKNOWN_PHASE)
            if verified.mixture:
                kept.add(Flag.MIXTURE)
            flags = frozenset(kept)
            composition = tuple(phase_dict(p) for p in verified.phases)
    regions: tuple = ()
    if prediction.cam is not None:
        regions = _cam.regions(prediction.cam, pattern.mask)
    extra: dict[str, object] = {
        "softmax_top": round(float(probs[order[0]]), 6),
        "cam_refcode": rules.refcodes[int(np.argmax(probs))],  # the map explains the network's own top choice
        "match": {"explained": round(match.explained, 4), "recovered": round(match.recovered, 4),
                  "score": round(match.score, 4), "shift": match.shift,
                  "unexplained_peaks": [round(p, 2) for p in match.unexplained]},
    }
    if cryst is not None:
        extra["crystallinity"] = {"snr": round(min(cryst.snr, 1e9), 2), "relative": round(cryst.relative, 4)}
    return Identification(top=top, confidence=confidence, flags=flags, gate=pattern.gate,
                          coverage=cov, cam_regions=regions, model_version=rules.model_version,
                          library_version=rules.library_version, extra=extra, composition=composition,
                          physics=physics)


def _decide_cosine(prediction: Prediction, evidence: Evidence, rules: Rules) -> Identification:
    prob = prediction.probabilities
    order = prediction.order()[: rules.top_k]
    top = tuple(Candidate(rank=i + 1, refcode=rules.refcodes[j], name=rules.names[j], probability=float(prob[j]))
                for i, j in enumerate(order))
    confidence, flags = cosine_flags(evidence, rules.policy)
    pattern = evidence.pattern
    assert evidence.cosine is not None
    return Identification(top=top, confidence=confidence, flags=flags, gate=pattern.gate, coverage=pattern.coverage,
                          model_version=rules.model_version, library_version=rules.library_version,
                          extra={"cosine": round(evidence.cosine.best, 4)})


# -- alerts ----------------------------------------------------------------------------

AMORPHOUS = "amorphous"
EXPECTED_PHASE_MISSING = "expected_phase_missing"
UNKNOWN_PHASE = "unknown_phase"
MIXTURE = "mixture"
LOW_COVERAGE = "low_coverage"
UNREADABLE = "unreadable"
FOLDER_MISSING = "folder_missing"
FOLDER_RESTORED = "folder_restored"

SEVERITY = {
    AMORPHOUS: "critical",
    EXPECTED_PHASE_MISSING: "critical",
    UNKNOWN_PHASE: "warning",
    MIXTURE: "warning",
    LOW_COVERAGE: "info",
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

    def to_dict(self) -> dict[str, Any]:
        return {"sample_id": self.sample_id, "phases": list(self.phases), "top_k": self.top_k, "source": self.source}


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


def alerts(
    identification: Identification,
    expectation: Expectation | None = None,
    *,
    aliases: dict[str, set[str]] | None = None,
    unknown_threshold: float | None = None,
) -> list[Alert]:
    """Alerts for one identification. ``aliases`` maps a refcode to every lower-case name it
    answers to (name, aliases, refcode), from the library; without it only the candidate's
    own name and refcode count. Evidence uses the contract's keys (``messages.Evidence``)."""
    found: list[Alert] = []
    flags = identification.flags
    flag_names = sorted(f.value for f in flags)
    refcodes = [c.refcode for c in identification.top]
    confidence = min(1.0, max(0.0, float(identification.confidence)))
    basic: dict[str, Any] = {"confidence": confidence, "flags": flag_names}
    if Flag.AMORPHOUS in flags:
        found.append(alert(AMORPHOUS, **basic, detail="no crystalline product: only a broad hump and noise"))
    elif Flag.UNKNOWN_PHASE in flags:
        extra = {"threshold": unknown_threshold} if unknown_threshold is not None else {}
        found.append(alert(UNKNOWN_PHASE, **basic, **extra, found=refcodes[:3],
                            detail="crystalline, but no library phase explains the pattern"))
    if Flag.MIXTURE in flags:
        found.append(alert(MIXTURE, **basic, found=refcodes[:3], detail="a second phase is likely"))
    if Flag.LOW_COVERAGE in flags:
        cov = identification.coverage
        found.append(alert(LOW_COVERAGE, **basic, detail=(
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
            found.append(alert(
                EXPECTED_PHASE_MISSING,
                **basic,
                expected_phases=list(expectation.phases),
                top_k=k,
                found=refcodes[:k],
                detail=(("the scan shows no phase that can be trusted" if untrusted
                         else f"no expected phase in the Top-{k}") + f" (expectation from {expectation.source})"),
            ))
    return found
