"""The physics check as a stage: a Scan (or arrays) and the network's probabilities in, a
:class:`~xrd_agent.verify.check.Verification` and message-ready dicts out.

Kept apart from the engine so the stage refactor (issue 11) can plug it in as ``verify``
(candidates) and ``compose`` (phases) without touching the numerics.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from xrd_agent.verify.check import CandidateFit, Checker, Phase, Verification, VerifyPolicy
from xrd_agent.verify.observed import Observed, observe
from xrd_agent.verify.references import load_references

log = logging.getLogger(__name__)


def checker_for(library: Any, policy: VerifyPolicy = VerifyPolicy()) -> Checker:
    """References (``fit.npz`` when the library has one) and their ln-d FFTs, once per library,
    with the library's materials (the prefilter's candidates are materials not already fitted)."""
    return Checker(load_references(library), policy, library.materials.of_class)


def observe_scan(scan: Any, wavelength: float | None = None) -> Observed | None:
    """The scan on its whole range at its own wavelength; None when it cannot be fitted."""
    wl = getattr(scan, "wavelength", None)
    lam = wavelength if wavelength is not None else (wl.primary if wl is not None else None)
    if lam is None or not np.isfinite(lam) or lam <= 0:
        return None
    alpha2 = wl.alpha2 if (wl is not None and wavelength is None) else None
    try:
        return observe(scan.two_theta, scan.intensity, float(lam), alpha2)
    except ValueError:
        return None


def check_scan(checker: Checker, scan: Any, probs: np.ndarray | None, wavelength: float | None = None,
               engine_order: Sequence[int] = ()) -> Verification | None:
    """The check of one scan as evidence, or None when the scan cannot be fitted or the check
    fails: the check is evidence, not the answer, and a failure of it costs only itself.
    ``engine_order``: the classes the engine answers without the check (also fitted)."""
    obs = observe_scan(scan, wavelength)
    if obs is None:
        return None
    try:
        return checker.check(obs, probs, engine_order)
    except Exception:
        log.exception("physics check failed; the identification goes on without it")
        return None


def fit_dict(c: CandidateFit) -> dict[str, object]:
    return {"rwp": round(c.rwp, 4), "rwp_background": round(c.rwp_background, 4),
            "explained": round(float(np.clip(c.explained, 0.0, 1.0)), 4),
            "posterior": round(float(np.clip(c.posterior, 0.0, 1.0)), 4),
            "cell": [round(x, 4) for x in c.cell], "cell_change": [round(x, 3) for x in c.cell_change],
            "zero_shift": round(c.zero_shift, 4)}


def phase_dict(p: Phase) -> dict[str, object]:
    return {"refcode": p.refcode, "name": p.name,
            "weight_fraction": None if p.weight_fraction is None else round(float(p.weight_fraction), 4),
            "uncertainty": None if p.uncertainty is None else round(float(p.uncertainty), 4)}


def summary(v: Verification) -> dict[str, object]:
    return {"explained": round(float(np.clip(v.explained, 0.0, 1.0)), 4), "fits": bool(v.fits),
            "confidence": round(float(v.confidence), 4), "seconds": round(v.seconds, 3)}
