"""Where the expected phases of a sample come from, in order of precedence:

1. a sidecar file next to the scan, ``<scan file name>.expect.json``
   (e.g. ``S042.raw.expect.json``), written by the robot before the scan::

       {"phases": ["HKUST-1", "Cu-BTC"], "top_k": 5, "elements": ["Cu", "C", "H", "O"],
        "amorphous_below": 0.3}

   (``amorphous_below`` and ``low_crystallinity_below``, optional: this sample's
   crystallinity thresholds in place of the configured ones),

2. the control socket, ``{"op": "expect", "sample_id": "S042", "phases": [...], "top_k": 5,
   "elements": [...]}`` (phases and top_k are kept in the ledger, so they survive a restart;
   the elements are kept in memory until the next restart),
3. the configuration, ``[service.expectations]`` ``S042 = ["HKUST-1"]`` and
   ``[service.expected_elements]`` ``S042 = ["Cu", "C", "H", "O"]``.

Phases are names of library materials (:mod:`xrd_agent.materials`): a name the library does
not hold (ZIF-90) or one that means several materials (MOF-74: Zn, Co, Mg, ...) is refused
with the closest library names, so a typo never turns into a false "expected phase missing".
``elements`` are the elements or metals in the pot; the engine demotes candidates whose
metals contradict them (config ``model.elements_mode``).

A broken sidecar is logged and ignored; it never stops a scan from being identified. A bad
configured expectation is logged and left out.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog

from xrd_agent.decide import Expectation
from xrd_agent.elements import clean_elements
from xrd_agent.service.ledger import Ledger

log = structlog.get_logger("xrd_agent.expectations")

SIDECAR_SUFFIX = ".expect.json"
SIDECAR_MAX_BYTES = 64 * 1024
MAX_PHASES = 64


def sidecar_path(scan_path: Path) -> Path:
    return scan_path.with_name(scan_path.name + SIDECAR_SUFFIX)


def _clean_phases(phases: object) -> tuple[str, ...]:
    if isinstance(phases, str):
        phases = [phases]
    if not isinstance(phases, Sequence) or not all(isinstance(p, str) for p in phases):
        raise ValueError("phases must be a list of phase names")
    out = tuple(p.strip() for p in phases if p.strip())
    if len(out) > MAX_PHASES:
        raise ValueError(f"at most {MAX_PHASES} phases")
    return out


def check_phases(phases: tuple[str, ...], materials: Any) -> tuple[str, ...]:
    """Refuse (ValueError) a phase that names no library material or several; ``materials`` is
    the library's :class:`~xrd_agent.materials.Materials` (None: names are not checked)."""
    if materials is None:
        return phases
    problems = [p for p in (materials.resolve(ph).problem() for ph in phases) if p]
    if problems:
        raise ValueError("; ".join(problems))
    return phases


def _clean_top_k(value: object, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
        raise ValueError("top_k must be an integer from 1 to 100")
    return value


def _clean_thresholds(data: Mapping[str, object]) -> dict[str, float]:
    """The optional per-sample crystallinity thresholds, each a number from 0 to 1."""
    out: dict[str, float] = {}
    for key in ("amorphous_below", "low_crystallinity_below"):
        value = data.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"{key} must be a number from 0 to 1")
        out[key] = float(value)
    if out.get("amorphous_below", 0.0) > out.get("low_crystallinity_below", 1.0):
        raise ValueError("amorphous_below must not exceed low_crystallinity_below")
    return out


def read_sidecar(scan_path: Path, sample_id: str, default_top_k: int, materials: Any = None) -> Expectation | None:
    path = sidecar_path(scan_path)
    try:
        if path.is_symlink() or not path.is_file():
            return None
        if path.stat().st_size > SIDECAR_MAX_BYTES:
            raise ValueError(f"larger than {SIDECAR_MAX_BYTES} bytes")
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        phases = check_phases(_clean_phases(data.get("phases", [])), materials)
        top_k = _clean_top_k(data.get("top_k"), default_top_k)
        elements = clean_elements(data.get("elements"))
        thresholds = _clean_thresholds(data)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        log.warning("ignoring expectation sidecar", sidecar=str(path), reason=str(exc))
        return None
    if not phases and not elements:
        return None
    return Expectation(str(data.get("sample_id") or sample_id), phases, top_k, "sidecar", elements=elements,
                       **thresholds)


class ExpectationBook:
    """Thread-safe: the control thread sets, the worker thread looks up."""

    def __init__(self, configured: Mapping[str, Sequence[str]], default_top_k: int, ledger: Ledger | None = None,
                 materials: Any = None, configured_elements: Mapping[str, Sequence[str]] | None = None):
        self._lock = threading.Lock()
        self._ledger = ledger
        self.materials = materials  # the library's Materials: phases are checked against it
        self._control: dict[str, Expectation] = {}
        if ledger is not None:
            for sample_id, (phases, top_k, extra) in ledger.expectations().items():
                try:
                    kept = _clean_thresholds(extra)
                    elements = clean_elements(extra.get("elements"))
                except ValueError as exc:  # a hand-edited ledger: the phases still count
                    log.error("stored expectation extras left out", sample_id=sample_id, reason=str(exc))
                    kept, elements = {}, ()
                self._control[sample_id] = Expectation(sample_id, tuple(phases), top_k, "control",
                                                       elements=elements, **kept)
        self.reload(configured, default_top_k, configured_elements)

    def reload(self, configured: Mapping[str, Sequence[str]], default_top_k: int,
               configured_elements: Mapping[str, Sequence[str]] | None = None) -> None:
        """Take the configured expectations; a bad one is logged and left out (never a crash)."""
        book = {}
        elements = dict(configured_elements or {})
        for sid in dict.fromkeys([*configured, *elements]):
            try:
                phases = check_phases(_clean_phases(configured.get(sid, [])), self.materials)
                book[sid] = Expectation(sid, phases, default_top_k, "config",
                                        elements=clean_elements(elements.get(sid)))
            except ValueError as exc:
                log.error("configured expectation left out", sample_id=sid, reason=str(exc))
        with self._lock:
            self._configured, self.default_top_k = book, default_top_k

    def expect(self, sample_id: str, phases: object, top_k: object = None,
               thresholds: Mapping[str, object] | None = None, elements: object = None) -> Expectation:
        """Set (or, with no phases and no elements, clear) the expectation for a sample id (control
        socket). Raises ValueError for a name that means no library material or several.
        ``thresholds`` (amorphous_below, low_crystallinity_below) and ``elements`` are kept in the
        ledger with the phases, so a restarted agent judges the sample as it was asked to."""
        if not isinstance(sample_id, str) or not sample_id.strip():
            raise ValueError("sample_id must be a non-empty string")
        exp = Expectation(sample_id.strip(), check_phases(_clean_phases(phases), self.materials),
                          _clean_top_k(top_k, self.default_top_k), "control", elements=clean_elements(elements),
                          **_clean_thresholds(thresholds or {}))
        with self._lock:
            self._control[exp.sample_id] = exp
        if self._ledger is not None:
            extra: dict[str, object] = {k: v for k, v in (("amorphous_below", exp.amorphous_below),
                                                          ("low_crystallinity_below", exp.low_crystallinity_below))
                                        if v is not None}
            if exp.elements:
                extra["elements"] = list(exp.elements)
            self._ledger.set_expectation(exp.sample_id, exp.phases, exp.top_k, extra)
        return exp

    def for_scan(self, scan_path: Path, sample_id: str | None) -> Expectation | None:
        sid = sample_id or scan_path.stem
        side = read_sidecar(scan_path, sid, self.default_top_k, self.materials)
        if side is not None:
            return side
        with self._lock:
            found = self._control.get(sid) or self._configured.get(sid)
        return found if found is not None and (found.phases or found.elements) else None

    def snapshot(self) -> list[dict[str, object]]:
        with self._lock:
            merged = {**self._configured, **self._control}
        return [e.to_dict() for e in merged.values()]
