"""The PUB socket that carries every message to subscribers.

PUB never blocks: with no subscriber, or a subscriber past the high-water mark, ZeroMQ
drops the message by design. That is safe here because every durable message is in the
ledger first, and subscribers fill gaps through the control socket's ``replay``.
One thread uses a Publisher (ZeroMQ sockets are not thread-safe).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
import zmq

from xrd_agent import messages
from xrd_agent.service import security
from xrd_agent.service.security import CurveServerKeys

log = structlog.get_logger(__name__)

#: libzmq's own keep-alive on every connection: a dead peer is noticed within
#: IVL + TIMEOUT and its queue freed, even when no message flows.
HEARTBEAT_IVL_MS = 5_000
HEARTBEAT_TIMEOUT_MS = 15_000


class Publisher:
    """Bind a PUB socket on ``endpoint`` and send validated messages on it."""

    def __init__(self, context: zmq.Context, endpoint: str, *, high_water_mark: int = 100_000,
                 curve: CurveServerKeys | None = None) -> None:
        security.warn_if_exposed(endpoint, curve, "pub")
        self._context = context
        self._curve = curve
        if curve is not None:
            security.acquire_authenticator(context, curve)
        self._socket: zmq.Socket | None = None
        try:
            sock = self._socket = context.socket(zmq.PUB)
            sock.linger = 1_000  # on close, give queued messages a second to leave, then drop them
            sock.sndhwm = high_water_mark
            sock.heartbeat_ivl = HEARTBEAT_IVL_MS
            sock.heartbeat_timeout = HEARTBEAT_TIMEOUT_MS
            if curve is not None:
                curve.apply(sock)
            sock.bind(endpoint)
        except zmq.ZMQError:
            if self._socket is not None:
                self._socket.close(linger=0)
                self._socket = None
            if curve is not None:
                security.release_authenticator(context)
            raise
        #: The bound address (with the real port when ``endpoint`` asked for ``*``).
        self.endpoint: str = sock.last_endpoint.decode()
        self.sent = 0
        self.dropped = 0
        log.info("publisher_bound", endpoint=self.endpoint, curve=curve is not None)

    def send(self, message: Mapping[str, Any]) -> bool:
        """Encode (validating) and send; False when ZeroMQ refused to queue it. Raises
        :class:`~xrd_agent.errors.MessageError` for an invalid message."""
        if self._socket is None:
            raise RuntimeError("publisher is closed")
        frames = messages.encode(message)
        try:
            self._socket.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.Again:  # PUB drops silently at HWM; this only fires for exotic socket states
            self.dropped += 1
            log.warning("publish_dropped", topic=message["topic"], seq=message["seq"])
            return False
        self.sent += 1
        return True

    __call__ = send

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
            if self._curve is not None:
                security.release_authenticator(self._context)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
