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
amorphous                  critical  the product's crystalline fraction is below ``model.amorphous_below`` (failed synthesis)
expected_phase_missing     critical  an expectation exists and no expected material is in the result
                                     (its Top-k materials), or nothing crystalline was found
expected_phase_uncertain   warning   an expected material is in the Top-k but not a confident first answer
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

Answers are materials (:mod:`xrd_agent.materials`): the Top-k lists materials with their
probabilities summed over their determinations, an expectation names materials, and
every alert's ``detail`` names materials by their common names; refcodes appear only in
the evidence (``found``). What the chemist says is in the pot (``Evidence.elements``)
demotes or excludes materials whose metals contradict it (``Rules.elements_mode``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from itertools import zip_longest
from typing import Any

import numpy as np

from xrd_agent.evidence import Evidence
from xrd_agent.identification import Candidate, Flag, Identification
from xrd_agent.messages import Determination
from xrd_agent.messages import AlertReason, Severity
from xrd_agent.model import cam as _cam
from xrd_agent.model.flags import FlagPolicy, Match, crystallinity_verdict
from xrd_agent.predict import Prediction

# -- identification rules ------------------------------------------------------------

#: The peak match reorders the network's RERANK_DEPTH best by softmax x above_chance**RERANK_POWER
#: (the match beyond chance: a reference dense with reflections gets no credit for what any scan
#: would show it). Chosen on realistic spectra of the library's own entries (not the held-out test
#: set), depth 5/10/20 x power 1-4 (``evaluate --rerank-grid``, docs/model.md "Rerank choice").
RERANK_DEPTH = 10
RERANK_POWER = 4

#: With the physics check: a material the network gives at least this share of its belief (summed
#: over its determinations, after the elements' weights) keeps the first place when the check's
#: best fit is another material, which then comes second. The check's fits let library entries
#: with many reflections and cells moved by several per cent fit a scan better than the right
#: material's own determination; on simulated held-out scans of other determinations that cost
#: 12-20 points of Top-1 against the network (docs/model.md, "The physics check on held-out
#: realistic scans"). The check still sets the confidence and the flags: an answer it does not
#: vouch for is capped at its confidence.
NETWORK_LEADS = 0.5

#: With the physics check: the share of the check's posterior, or of the network's belief, at which
#: a material counts as one its source supports (:func:`merge_ranked`).
SUPPORTED = 0.05

#: Cosine fallback: best cosine below which no library entry explains the scan (simulated
#: scans of the tiny test library: its MOFs 0.74-0.98, a foreign dense phase 0.05).
COSINE_UNKNOWN = 0.6
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
    rerank: bool = True  # reorder the network's best by softmax x above_chance^RERANK_POWER
    rerank_depth: int = RERANK_DEPTH  # how many of the network's best the peak match may reorder
    policy: FlagPolicy = FlagPolicy()

    materials: Any = None  # the library's xrd_agent.materials.Materials; None: answers are classes
    elements_mode: str = "demote"  # demote | exclude: materials whose metals contradict Evidence.elements
    elements_factor: float = 0.001  # demote: their summed probability x this (and they rank after the rest)

    def element_weights(self, elements: Sequence[str]) -> np.ndarray | None:
        """Per-material multipliers for the elements in the pot (None: no elements, or no materials)."""
        if not elements or self.materials is None:
            return None
        return self.materials.element_weights(elements, mode=self.elements_mode, factor=self.elements_factor)

    @property
    def evidence_depth(self) -> int:
        """How many of the best candidates need a peak match."""
        return self.rerank_depth if self.rerank else 1


def network_flags(p_top: float, match: Match, verdict: Flag | None, coverage_fraction: float,
                  policy: FlagPolicy = FlagPolicy()) -> tuple[float, frozenset[Flag]]:
    """Combine the softmax and the evidence into (confidence, flags).

    confidence = softmax x match score: on realistic held-out scans it tracks the
    share of correct names far better than the softmax alone (docs/model.md). A match
    no better than chance (:attr:`Match.above_chance`) names nothing, whatever its score.
    ``verdict`` is :func:`~xrd_agent.model.flags.crystallinity_verdict`'s: an amorphous
    product names no phase; a low-crystallinity one is still identified.
    """
    flags: set[Flag] = set()
    confidence = float(max(p_top, 0.0) * match.score)
    if coverage_fraction < policy.min_coverage:
        flags.add(Flag.LOW_COVERAGE)
    if verdict is Flag.AMORPHOUS:
        flags.add(Flag.AMORPHOUS)
        return 0.0, frozenset(flags)
    if verdict is Flag.LOW_CRYSTALLINITY:
        flags.add(Flag.LOW_CRYSTALLINITY)
    if match.above_chance < policy.min_above_chance:
        # Agreement a reference this dense (or a scan this noisy) reaches at random is no
        # evidence: the match vouches only for its part beyond chance (Cu3Au's four fcc lines
        # against a MOF with a reflection every few tenths of a degree).
        confidence = float(max(p_top, 0.0) * match.above_chance)
        flags.add(Flag.UNKNOWN_PHASE)
    elif confidence < policy.unknown_threshold or match.score < policy.min_match:
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
    verdict = crystallinity_verdict(evidence.crystallinity, evidence.pattern.coverage, policy)
    if verdict is not None:
        flags.add(verdict)
    if verdict is Flag.AMORPHOUS:
        pass  # an amorphous product names no phase: neither unknown nor mixture
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
    if rules.materials is not None:
        return _decide_materials(prediction, evidence, rules)
    probs = prediction.probabilities
    pattern = evidence.pattern
    k = min(rules.top_k, probs.size)
    reorder = min(rules.rerank_depth if rules.rerank else 1, probs.size)
    order = prediction.order()[:max(k, reorder)]
    matches = {j: evidence.matches[j] for j in (int(i) for i in order[:reorder])}
    if rules.rerank:
        # Peak evidence reorders the network's few best (docs/model.md).
        head = sorted(matches, key=lambda j: -float(probs[j]) * matches[j].above_chance ** RERANK_POWER)
        order = np.array(head + [int(j) for j in order if int(j) not in matches])
    verified = evidence.verification
    fits: dict[int, Any] = {}
    if verified is not None and verified.candidates:
        # the physics check ranks first (network prior x fit, xrd_agent/verify/check.py); the network's rest follow
        fits = {c.index: c for c in verified.candidates}
        order = np.array([c.index for c in verified.candidates] + [int(j) for j in order if int(j) not in fits])
    order = order[:k]
    from xrd_agent.verify.stage import fit_dict

    top = tuple(Candidate(rank=r + 1, refcode=rules.refcodes[j], name=rules.names[j], probability=float(probs[j]),
                          fit=fit_dict(fits[int(j)]) if int(j) in fits else None) for r, j in enumerate(order))
    match = matches.get(int(order[0]))
    if match is None:  # a candidate only the physics check proposed: judged by its fit below
        match = next(iter(matches.values()))
    cryst = evidence.crystallinity
    cov = pattern.coverage
    verdict = crystallinity_verdict(cryst, cov, rules.policy)
    confidence, flags = network_flags(float(probs[order[0]]), match, verdict, cov.fraction, rules.policy)
    confidence, flags, composition, physics = _apply_verification(verified, confidence, flags, rules.policy)
    regions: tuple = ()
    if prediction.cam is not None:
        regions = _cam.regions(prediction.cam, pattern.mask)
    extra: dict[str, object] = {
        "softmax_top": round(float(probs[order[0]]), 6),
        "cam_refcode": rules.refcodes[int(np.argmax(probs))],  # the map explains the network's own top choice
        "match": _match_dict(match),
    }
    return Identification(top=top, confidence=confidence, flags=flags, gate=pattern.gate,
                          coverage=cov, cam_regions=regions, model_version=rules.model_version,
                          library_version=rules.library_version, extra=extra, crystallinity=cryst,
                          composition=composition, physics=physics)


def _apply_verification(verified: Any, confidence: float, flags: frozenset[Flag], policy: FlagPolicy,
                        top_is_best_fit: bool = True) -> tuple[float, frozenset[Flag], tuple, Any]:
    """The physics check's word on confidence and flags (None: it did not run).

    The fit replaces the peak match's verdict: unknown when nothing fits or the posterior x fit
    quality is low; mixture when a further phase is significant (F-test). An amorphous verdict
    stands: a failed synthesis names no phase whatever fits its few reflections.
    """
    if verified is None:
        return confidence, flags, (), None
    from xrd_agent.verify.stage import phase_dict, summary

    physics = summary(verified)
    if not verified.candidates or Flag.AMORPHOUS in flags:
        return confidence, flags, (), physics
    if top_is_best_fit:
        confidence = verified.confidence
    else:  # the elements (or the ranking) put another material first: the fit does not vouch for it
        confidence = min(confidence, verified.confidence)
    kept = set(flags) - {Flag.UNKNOWN_PHASE, Flag.MIXTURE}
    if not verified.fits or confidence < policy.unknown_threshold:
        kept.add(Flag.UNKNOWN_PHASE)
    if verified.mixture:
        kept.add(Flag.MIXTURE)
    return confidence, frozenset(kept), tuple(phase_dict(p) for p in verified.phases), physics


def evidence_classes(probs: np.ndarray, rules: Rules, elements: Sequence[str] = ()) -> list[int]:
    """The classes whose peak match the material judge needs: the network's ``evidence_depth``
    best classes and the most probable determination of each of the ``evidence_depth`` best
    materials (with the elements' weights), leaving out materials the elements exclude."""
    depth = rules.evidence_depth
    out = [int(j) for j in np.argsort(-probs)[:depth]]
    mats = rules.materials
    if mats is None:
        return out
    weights = rules.element_weights(elements)
    summed = mats.summed(probs) * (weights if weights is not None else 1.0)
    order = np.argsort(-summed, kind="stable")
    if weights is not None:  # allowed materials first, as the ranking puts them
        order = np.concatenate([order[weights[order] >= 1.0], order[weights[order] < 1.0]])
    for m in order[:depth]:
        members = list(mats[int(m)].indices)
        out.append(members[int(np.argmax(probs[members]))])
    if weights is not None:
        out = [j for j in out if weights[mats.of_class[j]] > 0]
    return list(dict.fromkeys(out))


def engine_classes(probs: np.ndarray, evidence: Evidence, rules: Rules) -> list[int]:
    """The best-supported determination of each of the engine's ``top_k`` materials before the
    physics check (the network's order with the peak match and the elements), for the check to
    fit: what identify would answer without it is always tried, also where the peak match lifted
    a material the network gives a few per cent (it is then not among the network's best classes)."""
    mats = rules.materials
    if mats is None:
        return []
    scores = {j: m.above_chance for j, m in evidence.matches.items()} if rules.rerank else None
    ranked = mats.rank(probs, min(rules.top_k, len(mats)), evidence=scores, power=RERANK_POWER,
                       weights=rules.element_weights(evidence.elements))
    return [int(r.best) for r in ranked]


def merge_ranked(verified: Any, ranked: list[Any], mats: Any) -> list[Any]:
    """The materials ``ranked`` (the network's order, with the peak match and the elements) in
    the order the physics check and the network support together.

    The check's answer, the phases of its composition and the materials holding at least
    ``SUPPORTED`` of its posterior lead, in its order. Its posterior is a likelihood of misfits
    that no candidate is free of (a held-out determination, an as-made sample), so it is sure of
    its best fit and ranks the rest by ever smaller misfits: on simulated held-out scans it put
    the network's sure and right answer third to eighth behind frameworks stretched by 5-10 %.
    Beyond its supported answers the remaining places therefore alternate between the network's
    answer, then its next material that holds at least ``SUPPORTED`` of its belief, and the check's
    next candidate material; the network's improbable materials follow, so on a scan the network
    does not know the check's order keeps the places after the network's own answer. Each fitted
    determination of one material (HKUST-1 x 4) is one answer, at its best fit."""
    by_material = {r.material.id: r for r in ranked}
    cands = verified.candidates
    mids = [mats[int(mats.of_class[c.index])].id for c in cands]
    share: dict[Any, float] = {}
    for mid, c in zip(mids, cands):
        share[mid] = share.get(mid, 0.0) + float(c.posterior)
    lead = {mats[int(mats.of_class[p.index])].id for p in verified.phases}
    out: list[Any] = []
    seen: set[Any] = set()

    def take(mid: Any, index: int | None = None) -> None:
        r = by_material.get(mid)
        if r is not None and mid not in seen:
            seen.add(mid)
            out.append(replace(r, best=index) if index is not None and index in r.material.indices else r)

    rest: dict[Any, int] = {}  # the check's other materials, each at its best-ranked determination
    for i, (mid, c) in enumerate(zip(mids, cands)):
        if i == 0 or mid in lead or share[mid] >= SUPPORTED:
            take(mid, c.index)
        elif mid not in seen:
            rest.setdefault(mid, c.index)
    probable = [r.material.id for i, r in enumerate(ranked) if i == 0 or r.probability >= SUPPORTED]
    for mid, other in zip_longest(probable, rest.items()):
        if mid is not None:
            take(mid)
        if other is not None:
            take(*other)
    for r in ranked:
        take(r.material.id)
    return out


def _decide_materials(prediction: Prediction, evidence: Evidence, rules: Rules) -> Identification:
    """Top-k materials: probabilities summed over each material's determinations; the peak match
    of its best-supported determination reorders the few best and sets the confidence."""
    probs = prediction.probabilities
    pattern = evidence.pattern
    mats = rules.materials
    weights = rules.element_weights(evidence.elements)
    k = min(rules.top_k, len(mats))
    matches = dict(evidence.matches)
    scores = {j: m.above_chance for j, m in matches.items()} if rules.rerank else None
    verified = evidence.verification
    fitted = {c.index: c for c in verified.candidates} if verified is not None else {}
    ranked = mats.rank(probs, len(mats) if fitted else k, evidence=scores, power=RERANK_POWER, weights=weights)
    if fitted:
        # The physics check's supported answers first, then its other candidates and the network's
        # probable materials in turn (:func:`merge_ranked`); the elements still rule as they did,
        # and a material the network is sure of keeps the first place (NETWORK_LEADS).
        order = merge_ranked(verified, ranked, mats)
        if weights is not None:
            order = ([r for r in order if weights[int(mats.of_class[r.best])] >= 1.0]
                     + [r for r in order if weights[int(mats.of_class[r.best])] < 1.0])
        sure = ranked[0].material.id  # the network's first (with the peak match and the elements)
        if ranked[0].probability >= NETWORK_LEADS and order[0].material.id != sure:
            order = ([r for r in order if r.material.id == sure] + [r for r in order if r.material.id != sure])
        ranked = order[:k]
    best = ranked[0].best
    match = matches.get(best)
    if match is None:  # no evidence gathered for it (a stand-in gather): nothing vouches for it
        match = Match(0.0, 0.0, 0.0, ())
    from xrd_agent.verify.stage import fit_dict

    top = tuple(Candidate(rank=r + 1, refcode=rules.refcodes[c.best], name=c.material.name,
                          probability=min(1.0, c.probability), material=c.material.id,
                          determinations=tuple(Determination(rules.refcodes[i], p) for i, p in c.determinations),
                          fit=fit_dict(fitted[c.best]) if c.best in fitted else None)
                for r, c in enumerate(ranked))
    cryst = evidence.crystallinity
    cov = pattern.coverage
    verdict = crystallinity_verdict(cryst, cov, rules.policy)
    confidence, flags = network_flags(min(1.0, ranked[0].probability), match, verdict, cov.fraction, rules.policy)
    top_is_best_fit = bool(fitted) and ranked[0].best == verified.candidates[0].index
    confidence, flags, composition, physics = _apply_verification(verified, confidence, flags, rules.policy,
                                                                   top_is_best_fit)
    regions: tuple = ()
    if prediction.cam is not None:
        regions = _cam.regions(prediction.cam, pattern.mask)
    extra: dict[str, object] = {
        "softmax_top": round(float(probs[best]), 6),
        "material_top": round(float(ranked[0].probability), 6),
        "cam_refcode": rules.refcodes[int(np.argmax(probs))],  # the map explains the network's own top choice
        "match": _match_dict(match),
    }
    if evidence.elements:
        extra["elements"] = sorted(set(evidence.elements))
    return Identification(top=top, confidence=confidence, flags=flags, gate=pattern.gate,
                          coverage=cov, cam_regions=regions, model_version=rules.model_version,
                          library_version=rules.library_version, extra=extra, crystallinity=cryst,
                          composition=composition, physics=physics)


def _match_dict(match: Match) -> dict[str, object]:
    """The peak match of the first answer as ``extra["match"]`` carries it."""
    return {"explained": round(match.explained, 4), "recovered": round(match.recovered, 4),
            "score": round(match.score, 4), "above_chance": round(match.above_chance, 4), "shift": match.shift,
            "unexplained_peaks": [round(p, 2) for p in match.unexplained]}


def _decide_cosine(prediction: Prediction, evidence: Evidence, rules: Rules) -> Identification:
    """The search-match fallback. With the physics check (a lab's own CIFs, no network trained on
    them) the fitted candidates lead, one row per material, and the fit sets confidence and flags."""
    prob = prediction.probabilities
    order = [int(j) for j in prediction.order()]
    verified = evidence.verification
    fitted = {c.index: c for c in verified.candidates} if verified is not None else {}
    if fitted:
        order = [c.index for c in verified.candidates] + [j for j in order if j not in fitted]
    mats = rules.materials

    def material(j: int) -> Any:
        return mats[int(mats.of_class[j])] if mats is not None else None

    rows: list[int] = []
    seen: set[Any] = set()
    for j in order:  # one row per material (the lab's two CIFs of one structure are one answer)
        key = material(j).id if mats is not None else j
        if key not in seen:
            seen.add(key)
            rows.append(j)
        if len(rows) == rules.top_k:
            break
    from xrd_agent.verify.stage import fit_dict

    def candidate(rank: int, j: int) -> Candidate:
        fit = fit_dict(fitted[j]) if j in fitted else None
        m = material(j)
        if m is None:
            return Candidate(rank=rank, refcode=rules.refcodes[j], name=rules.names[j], probability=float(prob[j]),
                             fit=fit)
        members = sorted(m.indices, key=lambda i: -float(prob[i]))
        return Candidate(rank=rank, refcode=rules.refcodes[j], name=m.name,
                         probability=float(min(1.0, sum(float(prob[i]) for i in members))), material=m.id,
                         determinations=tuple(Determination(rules.refcodes[i], float(prob[i])) for i in members),
                         fit=fit)

    top = tuple(candidate(i + 1, j) for i, j in enumerate(rows))
    confidence, flags = cosine_flags(evidence, rules.policy)
    confidence, flags, composition, physics = _apply_verification(verified, confidence, flags, rules.policy)
    pattern = evidence.pattern
    assert evidence.cosine is not None
    return Identification(top=top, confidence=confidence, flags=flags, gate=pattern.gate, coverage=pattern.coverage,
                          model_version=rules.model_version, library_version=rules.library_version,
                          extra={"cosine": round(evidence.cosine.best, 4)}, crystallinity=evidence.crystallinity,
                          composition=composition, physics=physics)


# -- alerts ----------------------------------------------------------------------------

# Reasons and severities are the contract's (messages.AlertReason, messages.Severity); a test
# checks that this table covers exactly those reasons with those severities.
AMORPHOUS: AlertReason = "amorphous"
EXPECTED_PHASE_MISSING: AlertReason = "expected_phase_missing"
EXPECTED_PHASE_UNCERTAIN: AlertReason = "expected_phase_uncertain"
UNKNOWN_PHASE: AlertReason = "unknown_phase"
MIXTURE: AlertReason = "mixture"
LOW_COVERAGE: AlertReason = "low_coverage"
LOW_CRYSTALLINITY: AlertReason = "low_crystallinity"
UNREADABLE: AlertReason = "unreadable"
FOLDER_MISSING: AlertReason = "folder_missing"
FOLDER_RESTORED: AlertReason = "folder_restored"

SEVERITY: dict[AlertReason, Severity] = {
    AMORPHOUS: "critical",
    EXPECTED_PHASE_MISSING: "critical",
    EXPECTED_PHASE_UNCERTAIN: "warning",
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
    """What a sample should contain: any one of ``phases`` (names, aliases or refcodes of library
    materials) in the Top-k; ``elements``: the elements or metals in the pot, when known."""

    sample_id: str
    phases: tuple[str, ...]
    top_k: int = 5
    source: str = "config"  # control | sidecar | config
    amorphous_below: float | None = None  # this sample's crystallinity thresholds (None: the configured)
    low_crystallinity_below: float | None = None
    elements: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = {"sample_id": self.sample_id, "phases": list(self.phases), "top_k": self.top_k, "source": self.source}
        if self.elements:
            out["elements"] = list(self.elements)
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
    thresholds when its expectation carries any (a threshold it leaves out: the default's)."""
    if (expectation is None or identification.crystallinity is None
            or (expectation.amorphous_below is None and expectation.low_crystallinity_below is None)):
        return identification.flags
    policy = FlagPolicy()
    amorphous = expectation.amorphous_below if expectation.amorphous_below is not None else policy.amorphous_below
    low = expectation.low_crystallinity_below
    low = max(low if low is not None else policy.low_crystallinity_below, amorphous)
    verdict = crystallinity_verdict(identification.crystallinity, identification.coverage, policy, amorphous, low)
    flags = set(identification.flags) - {Flag.AMORPHOUS, Flag.LOW_CRYSTALLINITY}
    if verdict is not None:
        flags.add(verdict)
    return frozenset(flags)


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


def alerts(
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
    found: list[Alert] = []
    flags = _sample_flags(identification, expectation)
    flag_names = sorted(f.value for f in flags)
    top = identification.top
    refcodes = [c.refcode for c in top]
    confidence = min(1.0, max(0.0, float(identification.confidence)))
    basic: dict[str, Any] = {"confidence": confidence, "flags": flag_names}
    cryst = identification.crystallinity
    shown = {"crystallinity": round(cryst.fraction, 4)} if cryst is not None and cryst.fraction == cryst.fraction else {}
    share = f" (crystalline fraction {cryst.fraction:.2f} +- {cryst.uncertainty:.2f})" if shown else ""
    if Flag.AMORPHOUS in flags:
        found.append(alert(AMORPHOUS, **basic, **shown,
                           detail="no crystalline product: broad amorphous scattering and no more than traces "
                                  f"of sharp reflections{share}"))
    elif Flag.UNKNOWN_PHASE in flags:
        extra = {"threshold": unknown_threshold} if unknown_threshold is not None else {}
        found.append(alert(UNKNOWN_PHASE, **basic, **extra, found=refcodes[:3],
                           found_names=[c.name for c in top[:3]],
                           detail=("crystalline, but no library material explains the pattern "
                                   f"(closest: {_names(top[:3])})")))
    if Flag.LOW_CRYSTALLINITY in flags:
        found.append(alert(LOW_CRYSTALLINITY, **basic, **shown,
                           detail=f"crystalline, but much of the product is amorphous{share}"))
    if Flag.MIXTURE in flags:
        found.append(alert(MIXTURE, **basic, found=refcodes[:3], found_names=[c.name for c in top[:3]],
                           detail=f"a second phase is likely besides {top[0].name if top else 'the first'}"))
    if Flag.LOW_COVERAGE in flags:
        cov = identification.coverage
        found.append(alert(LOW_COVERAGE, **basic, detail=(
            f"the scan covers {cov.fraction:.0%} of 2-theta 5-50 deg (Cu); the ranking is less reliable")))
    if expectation is not None and expectation.phases:
        found.extend(_expected(identification, flags, expectation, basic, aliases, materials))
    return found


def _expected(identification: Identification, flags: frozenset[Flag], expectation: Expectation,
              basic: dict[str, Any], aliases: dict[str, set[str]] | None, materials: Any) -> list[Alert]:
    """expected_phase_missing when no expected material is in the result (Top-k materials), or
    nothing crystalline is there; expected_phase_uncertain when one is there but it is not the
    confident first answer (rank > 1, or unknown_phase)."""
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
