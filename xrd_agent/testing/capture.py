"""A capture subscriber: follows an agent in a background thread and keeps every event.

Built on :class:`xrd_agent.client.Subscriber` (gap filling by replay, de-duplication by
seq), so what it holds is what a robot would have seen::

    with Capture(pub, control, since_seq=0) as cap:
        cap.wait_for(lambda events: len(cap.of("xrd.identification")) >= 3, timeout=30)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from xrd_agent.client import Event, Subscriber


class Capture:
    def __init__(self, pub_endpoint: str, control_endpoint: str, *, since_seq: int | None = 0,
                 topics: tuple[str, ...] | None = None, **options: Any) -> None:
        kwargs: dict[str, Any] = {"since_seq": since_seq, **options}
        if topics is not None:
            kwargs["topics"] = topics
        self._subscriber = Subscriber(pub_endpoint, control_endpoint, **kwargs)
        self.events: list[Event] = []
        self._lock = threading.RLock()  # conditions may call of() while waiting
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="xrd-capture", daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> Capture:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        try:
            with self._subscriber as sub:
                while not self._stop.is_set():
                    event = sub.receive(timeout=0.2)
                    if event is not None:
                        with self._changed:
                            self.events.append(event)
                            self._changed.notify_all()
        except BaseException as exc:  # surfaced by wait_for
            self.error = exc

    def of(self, topic: str) -> list[Event]:
        with self._lock:
            return [e for e in self.events if e.topic == topic]

    def messages(self, topic: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e.message) for e in self.events if topic is None or e.topic == topic]

    def wait_for(self, condition: Callable[[list[Event]], bool], timeout: float = 30.0) -> list[Event]:
        """Block until ``condition(events)`` holds; TimeoutError (with what arrived) otherwise."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition(list(self.events)):
                if self.error is not None:
                    raise RuntimeError(f"capture subscriber failed: {self.error!r}")
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(e.seq, e.topic, getattr(e, "reason", "")) for e in self.events]
                    raise TimeoutError(f"condition not met within {timeout} s; events: {seen}")
                self._changed.wait(min(left, 0.5))
            return list(self.events)
