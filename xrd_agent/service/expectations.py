"""Where the expected phases of a sample come from, in order of precedence:

1. a sidecar file next to the scan, ``<scan file name>.expect.json``
   (e.g. ``S042.raw.expect.json``), written by the robot before the scan::

       {"phases": ["HKUST-1", "Cu-BTC"], "top_k": 5}

2. the control socket, ``{"op": "expect", "sample_id": "S042", "phases": [...], "top_k": 5}``
   (kept in the ledger, so it survives a restart),
3. the configuration, ``[service.expectations]`` ``S042 = ["HKUST-1"]``.

A broken sidecar is logged and ignored; it never stops a scan from being identified.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import structlog

from xrd_agent.decide import Expectation
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


def _clean_top_k(value: object, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
        raise ValueError("top_k must be an integer from 1 to 100")
    return value


def read_sidecar(scan_path: Path, sample_id: str, default_top_k: int) -> Expectation | None:
    path = sidecar_path(scan_path)
    try:
        if path.is_symlink() or not path.is_file():
            return None
        if path.stat().st_size > SIDECAR_MAX_BYTES:
            raise ValueError(f"larger than {SIDECAR_MAX_BYTES} bytes")
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        phases = _clean_phases(data.get("phases", []))
        top_k = _clean_top_k(data.get("top_k"), default_top_k)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        log.warning("ignoring expectation sidecar", sidecar=str(path), reason=str(exc))
        return None
    return Expectation(str(data.get("sample_id") or sample_id), phases, top_k, "sidecar") if phases else None


class ExpectationBook:
    """Thread-safe: the control thread sets, the worker thread looks up."""

    def __init__(self, configured: Mapping[str, Sequence[str]], default_top_k: int, ledger: Ledger | None = None):
        self._lock = threading.Lock()
        self._ledger = ledger
        self._control: dict[str, Expectation] = {}
        if ledger is not None:
            for sample_id, (phases, top_k) in ledger.expectations().items():
                self._control[sample_id] = Expectation(sample_id, tuple(phases), top_k, "control")
        self.reload(configured, default_top_k)

    def reload(self, configured: Mapping[str, Sequence[str]], default_top_k: int) -> None:
        book = {sid: Expectation(sid, _clean_phases(ph), default_top_k, "config") for sid, ph in configured.items()}
        with self._lock:
            self._configured, self.default_top_k = book, default_top_k

    def expect(self, sample_id: str, phases: object, top_k: object = None) -> Expectation:
        """Set (or, with no phases, clear) the expectation for a sample id (control socket)."""
        if not isinstance(sample_id, str) or not sample_id.strip():
            raise ValueError("sample_id must be a non-empty string")
        exp = Expectation(sample_id.strip(), _clean_phases(phases), _clean_top_k(top_k, self.default_top_k), "control")
        with self._lock:
            self._control[exp.sample_id] = exp
        if self._ledger is not None:
            self._ledger.set_expectation(exp.sample_id, exp.phases, exp.top_k)
        return exp

    def for_scan(self, scan_path: Path, sample_id: str | None) -> Expectation | None:
        sid = sample_id or scan_path.stem
        side = read_sidecar(scan_path, sid, self.default_top_k)
        if side is not None:
            return side
        with self._lock:
            found = self._control.get(sid) or self._configured.get(sid)
        return found if found is not None and found.phases else None

    def snapshot(self) -> list[dict[str, object]]:
        with self._lock:
            merged = {**self._configured, **self._control}
        return [e.to_dict() for e in merged.values()]
