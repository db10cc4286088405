"""A lab PC for the service-level runs: export folder, state dir, config, a real
``xrd-agent run`` process, and a subscriber that stamps when each message arrived.

The agent runs in its own process (``xrd_agent.testing.agent.AgentProcess``); the
subscriber (``xrd_agent.client.Subscriber``, gap filling by replay) runs in a thread of
the harness, so every latency crosses a process boundary and a real ZeroMQ socket.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xrd_agent import messages
from xrd_agent.testing.agent import AgentProcess, agent_config, free_ports, write_config

DURABLE = (messages.IDENTIFICATION, messages.ALERT, messages.REJECTED)
OUTCOME_TOPICS = (messages.IDENTIFICATION, messages.REJECTED)


@dataclass(frozen=True)
class Received:
    seq: int
    topic: str
    message: dict[str, Any]
    at: float  # time.monotonic() when the harness's subscriber got it

    @property
    def name(self) -> str | None:
        path = self.message.get("path")
        return os.path.basename(path) if path else None


class Receiver:
    """Follows an agent from ``since_seq`` in a thread; keeps every durable message with its
    arrival time. Reopen it after a restart with :meth:`follow` (the robot's way: resume from
    the last seq it holds)."""

    def __init__(self) -> None:
        self.items: list[Received] = []
        self.by_seq: dict[int, Received] = {}
        self.repeats = 0  # the same seq delivered twice (the client should prevent it)
        self.lost = 0  # seqs the client could not recover by replay
        self.invalid = 0
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.error: BaseException | None = None

    def follow(self, pub: str, control: str, since_seq: int | None = None) -> Receiver:
        self.close()
        if since_seq is None:
            since_seq = max(self.by_seq, default=0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(pub, control, since_seq), daemon=True,
                                        name="bench-receiver")
        self._thread.start()
        return self

    def _run(self, pub: str, control: str, since_seq: int) -> None:
        from xrd_agent.client import Subscriber

        try:
            with Subscriber(pub, control, since_seq=since_seq, topics=DURABLE,
                            silence_timeout_s=3.0, control_timeout_s=3.0) as sub:
                while not self._stop.is_set():
                    event = sub.receive(timeout=0.1)
                    now = time.monotonic()
                    self.lost, self.invalid = sub.lost, sub.invalid
                    if event is None:
                        continue
                    item = Received(event.seq, event.topic, dict(event.message), now)
                    with self._lock:
                        if item.seq in self.by_seq:
                            self.repeats += 1
                        else:
                            self.by_seq[item.seq] = item
                            self.items.append(item)
                        self._lock.notify_all()
        except BaseException as exc:  # noqa: BLE001 - reported by wait_for
            self.error = exc

    def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(10)
            self._thread = None

    def outcomes(self) -> dict[str, list[Received]]:
        """Identification/rejection messages by file name."""
        out: dict[str, list[Received]] = {}
        with self._lock:
            for item in self.items:
                if item.topic in OUTCOME_TOPICS and item.name:
                    out.setdefault(item.name, []).append(item)
        return out

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str = "condition") -> bool:
        deadline = time.monotonic() + timeout
        with self._lock:
            while not condition():
                if self.error is not None:
                    raise RuntimeError(f"subscriber failed: {self.error!r}")
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(min(left, 0.5))
        return True


class Site:
    """Export folder + state + one agent process, configured for a run."""

    def __init__(self, root: Path, *, engine: str = "cosine", model_dir: Path | None = None,
                 library_dir: Path | None = None, fixed_ports: bool = True, **sections: dict[str, Any]) -> None:
        self.root = Path(root)
        self.export = self.root / "export"
        self.export.mkdir(parents=True, exist_ok=True)
        # The service benchmarks measure delivery (nothing lost, nothing doubled, latency of the
        # path), not identification: the physics check's seconds per scan are benchmarked apart
        # (benchmarks/bench_verify.py), so it is off here unless a run asks for it.
        model: dict[str, Any] = {"engine": engine, "device": "cpu", "verify": False}
        if model_dir:
            model["model_dir"] = str(model_dir)
        if library_dir:
            model["library_dir"] = str(library_dir)
        model.update(sections.pop("model", {}))
        publish = {}
        if fixed_ports:  # the same endpoints across restarts, as in a lab
            pub, control = free_ports(2)
            publish = {"pub_endpoint": f"tcp://127.0.0.1:{pub}",
                       "control_endpoint": f"tcp://127.0.0.1:{control}"}
        publish.update(sections.pop("publish", {}))
        self.settings = agent_config(self.root, model=model, publish=publish, **sections)
        self.config = write_config(self.root / "agent.toml", self.settings)
        self.agent = AgentProcess(self.config, self.root / "state")
        self.receiver = Receiver()

    @property
    def pid(self) -> int | None:
        return self.agent.proc.pid if self.agent.proc else None

    def start(self, timeout: float = 180.0) -> Site:
        self.agent.start(timeout)
        self.receiver.follow(self.agent.pub, self.agent.control)
        return self

    def stop_or_kill(self, timeout: float = 60.0) -> bool:
        """SIGTERM; True if the agent drained and exited in time, else kill -9 and False."""
        import subprocess

        self.receiver.close()
        try:
            self.agent.stop(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def kill(self) -> None:
        self.receiver.close()
        self.agent.kill()

    def stop(self) -> int:
        self.receiver.close()
        return self.agent.stop()

    def ledger(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(scans, messages) as recorded in the agent's SQLite ledger."""
        from xrd_agent.service.ledger import Ledger

        ledger = Ledger(self.root / "state")
        try:
            msgs: list[dict[str, Any]] = []
            since = 0
            while True:
                page, more = ledger.replay(since, 5000)
                msgs += page
                if not more or not page:
                    break
                since = int(page[-1]["seq"])
            return ledger.scans(), msgs
        finally:
            ledger.close()

    def rss_bytes(self) -> int | None:
        """Resident memory of the agent process (Linux /proc)."""
        pid = self.pid
        if pid is None:
            return None
        try:
            with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None
