"""Is the agent fit to identify scans now? One pure judgement shared by the control op
``health``, ``xrd-agent status`` and the HTTP ``/health`` endpoint (200 / 503)."""

from __future__ import annotations

from dataclasses import dataclass

#: A queue this full means scans arrive faster than they are identified.
QUEUE_NEARLY_FULL = 0.9


@dataclass(frozen=True)
class Observed:
    """What the daemon sees of itself at one moment."""

    state: str
    folder: str
    folder_present: bool
    worker_alive: bool
    worker_error: str | None
    worker_silent_s: float
    max_silence_s: float
    queue_depth: int
    queue_size: int
    model_loaded: bool


def reasons(seen: Observed) -> list[str]:
    """Why the agent is not healthy, one actionable sentence each (empty: healthy)."""
    out: list[str] = []
    if seen.state in ("starting", "reloading"):
        out.append(f"the agent is {seen.state}; ask again in a few seconds")
    elif seen.state in ("draining", "stopped"):
        out.append(f"the agent is {seen.state} (shutting down); start it again: systemctl start xrd-agent")
    if not seen.model_loaded and seen.state != "starting":
        out.append("the identification model is not loaded; see the agent's log")
    if seen.state not in ("starting", "stopped") and not seen.folder_present:
        out.append(f"the export folder {seen.folder} is missing (unmounted share?); mount it again")
    if seen.worker_error is not None:
        out.append(f"the worker stopped ({seen.worker_error}); the agent exits so that systemd restarts it")
    elif seen.state not in ("starting", "stopped") and not seen.worker_alive:
        out.append("the worker thread is not running; restart the agent")
    elif seen.worker_alive and seen.worker_silent_s > seen.max_silence_s:
        out.append(f"the worker has been silent for {seen.worker_silent_s:.0f} s (a hung identification?); "
                   "see the agent's log")
    if seen.queue_size and seen.queue_depth >= QUEUE_NEARLY_FULL * seen.queue_size:
        out.append(f"the queue holds {seen.queue_depth} of {seen.queue_size} scans: scans arrive faster than "
                   "they are identified")
    return out


def healthy(seen: Observed) -> bool:
    return seen.state == "ready" and not reasons(seen)
