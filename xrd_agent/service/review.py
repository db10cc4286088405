"""Which results need a person, and turning a chemist's decision into an ``xrd.review`` body.

Pure functions over stored messages (dicts as published): the HTTP review page lists what
:func:`pending` returns, and :func:`review_body` checks a decision against the result it is
about (an unknown seq or a candidate not in that result is refused with a reason).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from xrd_agent import messages
from xrd_agent.errors import XrdAgentError


class ReviewError(XrdAgentError, ValueError):
    """The decision does not fit the result (HTTP 400)."""


@dataclass(frozen=True)
class Pending:
    """An identification waiting for a person, with why."""

    message: Mapping[str, Any]
    alerts: tuple[Mapping[str, Any], ...]
    reasons: tuple[str, ...]


def reasons_for(identification: Mapping[str, Any], alerts: Sequence[Mapping[str, Any]], review_below: float) -> list[str]:
    """Why a person should look at this result (empty: the model's answer can stand)."""
    result = identification["result"]
    out = [f"flag {flag}" for flag in result["flags"]]
    if result["confidence"] < review_below:
        out.append(f"confidence {result['confidence']:.2f} below {review_below:.2f}")
    out += [f"alert {a['reason']} ({a['severity']})" for a in alerts if f"flag {a['reason']}" not in out]
    return out


def pending(stored: Iterable[Mapping[str, Any]], review_below: float, limit: int = 50) -> list[Pending]:
    """Identifications among ``stored`` (identification, alert and review messages in any
    order) that need a person and have no review yet, newest first."""
    ordered = sorted(stored, key=lambda m: m["seq"])
    reviewed = {m["of_seq"] for m in ordered if m["topic"] == messages.REVIEW}
    latest_by_scan: dict[str, int] = {}
    idents: dict[int, Mapping[str, Any]] = {}
    alerts: dict[int, list[Mapping[str, Any]]] = {}
    for m in ordered:
        if m["topic"] == messages.IDENTIFICATION and m["duplicate_of"] is None:
            idents[m["seq"]] = m
            latest_by_scan[m["scan_id"]] = m["seq"]
            alerts[m["seq"]] = []
        elif m["topic"] == messages.ALERT and m.get("result") is not None and m.get("scan_id") in latest_by_scan:
            alerts[latest_by_scan[m["scan_id"]]].append(m)  # recorded with its identification
    out = []
    for seq in sorted(idents, reverse=True):
        if seq in reviewed:
            continue
        why = reasons_for(idents[seq], alerts[seq], review_below)
        if why:
            out.append(Pending(idents[seq], tuple(alerts[seq]), tuple(why)))
            if len(out) >= limit:
                break
    return out


def review_body(target: Mapping[str, Any] | None, seq: int, request: Mapping[str, Any]) -> dict[str, Any]:
    """The ``xrd.review`` body for ``request`` (a validated ReviewRequest) about the stored
    message ``target`` (seq ``seq``); :class:`ReviewError` when they do not fit."""
    if target is None:
        raise ReviewError(f"there is no result with seq {seq}")
    if target["topic"] != messages.IDENTIFICATION:
        raise ReviewError(f"seq {seq} is an {target['topic']} message, not an identification")
    top = target["result"]["top"]
    by_refcode = {c["refcode"]: c for c in top}
    decision, refcode = request["decision"], request.get("refcode")
    first = top[0] if top else None
    if decision == "confirmed":
        if first is None:
            raise ReviewError(f"result {seq} has no candidate to confirm; decide failed or unknown")
        if refcode is not None and refcode != first["refcode"]:
            if refcode not in by_refcode:
                raise ReviewError(f"{refcode} is not a candidate of result {seq} "
                                  f"(candidates: {', '.join(by_refcode)})")
            raise ReviewError(f"{refcode} is not the first candidate of result {seq}; "
                              "to pick another candidate, decide corrected")
        chosen = first
    elif decision == "corrected":
        if refcode is None:
            raise ReviewError("corrected needs the refcode of the right candidate")
        if refcode not in by_refcode:
            raise ReviewError(f"{refcode} is not a candidate of result {seq} "
                              f"(candidates: {', '.join(by_refcode) or 'none'})")
        if first is not None and refcode == first["refcode"]:
            raise ReviewError(f"{refcode} is the model's first candidate: decide confirmed")
        chosen = by_refcode[refcode]
    else:
        if refcode is not None:
            raise ReviewError(f"{decision} takes no refcode (it says none of the candidates is right)")
        chosen = None
    return {
        "of_seq": int(seq),
        "scan_id": target["scan_id"],
        "path": target["path"],
        "sample_id": target["sample_id"],
        "decision": decision,
        "refcode": chosen["refcode"] if chosen else None,
        "name": chosen["name"] if chosen else None,
        "model_refcode": first["refcode"] if first else None,
        "reviewer": str(request.get("reviewer", "")).strip(),
        "comment": str(request.get("comment", "")).strip(),
    }
