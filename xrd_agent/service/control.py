"""The control socket: a ROUTER that answers JSON requests (replay, status, expect, ping,
by_sample, health).

It runs in a thread of its own, and its socket lives and dies in that thread. Every
request is checked against ``schemas/control_request.json`` before a handler sees it;
every reply against ``control_reply.json`` before it leaves. A malformed, oversized or
hostile request gets ``{"ok": false, "error": ...}`` (or, past the size limit, a dropped
connection from libzmq); nothing a request says is ever used as a file-system path, and
no handler exception ends the thread.

Handlers are plain callables ``handler(request) -> dict`` supplied by the daemon, called
in the control thread (so they must be thread-safe: e.g. a ledger connection of their own).
What each returns is the op's reply fields (see ``messages.ReplayReply``, ``StatusReply``,
``ExpectReply``); ``ok``, ``op`` and ``id`` are added here. :func:`replay_handler` turns the
ledger's ``replay(since_seq, limit)`` into the replay handler, paging included.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog
import zmq

from xrd_agent import messages
from xrd_agent.errors import MessageError, XrdAgentError
from xrd_agent.service import security
from xrd_agent.service.security import CurveServerKeys

log = structlog.get_logger(__name__)

Handler = Callable[[dict[str, Any]], Mapping[str, Any] | None]

#: Requests are small (the largest, ``expect``, is a few kB); libzmq drops the connection of
#: a peer that sends more, before Python sees a byte of it.
MAX_REQUEST_BYTES = 64 * 1024
DEFAULT_REPLAY_LIMIT = 100
MAX_REPLAY_LIMIT = 1000
DEFAULT_TOP_K = 5
_POLL_MS = 100  # how quickly stop() is noticed


def replay_handler(replay: Callable[[int, int], Any], last_seq: Callable[[], int], *,
                   default_limit: int = DEFAULT_REPLAY_LIMIT) -> Handler:
    """The ``replay`` op over the ledger. ``replay(since_seq, limit)`` returns the stored
    messages with seq > since_seq in seq order, as a list or as ``(messages, more)``; it is
    asked for one more than the page so that either form tells whether more follow."""

    def handle(request: dict[str, Any]) -> dict[str, Any]:
        limit = min(int(request.get("limit", default_limit)), MAX_REPLAY_LIMIT)
        result = replay(int(request["since_seq"]), limit + 1)
        more = False
        if isinstance(result, tuple):
            result, more = result
        found = list(result)
        return {"messages": found[:limit], "more": bool(more) or len(found) > limit,
                "last_seq": int(last_seq())}

    return handle


class ControlServer:
    """Serve control requests on ``endpoint`` from a thread of its own (``start`` / ``stop``)."""

    def __init__(self, context: zmq.Context, endpoint: str, handlers: Mapping[str, Handler], *,
                 curve: CurveServerKeys | None = None, max_request_bytes: int = MAX_REQUEST_BYTES) -> None:
        unknown = set(handlers) - set(messages.OPS)
        if unknown:
            raise ValueError(f"handlers for unknown ops: {', '.join(sorted(unknown))}")
        self._context = context
        self._requested_endpoint = endpoint
        self._handlers = dict(handlers)
        self._curve = curve
        self._max_request_bytes = max_request_bytes
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._bind_error: BaseException | None = None
        #: The bound address (real port when the endpoint asked for ``*``); set by ``start``.
        self.endpoint: str | None = None
        self.served = 0
        self.refused = 0

    # ---- the part without sockets

    def handle(self, payload: bytes) -> dict[str, Any]:
        """The reply to one request payload. Never raises."""
        op: str | None = None
        request_id: str | None = None
        try:
            try:
                request = messages.loads(payload.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                raise MessageError(f"the request is not UTF-8 JSON: {exc}") from None
            if isinstance(request, dict):
                op = request.get("op") if isinstance(request.get("op"), str) else None
                raw_id = request.get("id")
                request_id = raw_id if isinstance(raw_id, str) and len(raw_id) <= 64 else None
                op = op if op is None or len(op) <= 64 else op[:64]
            messages.validate_request(request)
            op = request["op"]
            fields = self._dispatch(op, request)
            reply = {"ok": True, "op": op, **({"id": request_id} if request_id is not None else {}), **fields}
            try:
                messages.validate_reply(reply)
            except MessageError as exc:
                log.error("control_handler_invalid_reply", op=op, reason=exc.reason)
                raise MessageError(
                    "internal error: the agent produced an invalid reply (see its log)") from None
            self.served += 1
            return reply
        except XrdAgentError as exc:
            self.refused += 1
            return self._error(op, request_id, str(exc))
        except Exception as exc:  # a handler bug must not end the control thread
            self.refused += 1
            log.exception("control_handler_failed", op=op)
            return self._error(op, request_id, f"internal error ({type(exc).__name__}); see the agent's log")

    def _dispatch(self, op: str, request: dict[str, Any]) -> dict[str, Any]:
        handler = self._handlers.get(op)
        if handler is None:
            if op == "ping":
                return {"schema_version": messages.SCHEMA_VERSION, "time": messages.rfc3339()}
            raise MessageError(f"op {op!r} is not available on this agent")
        defaults: dict[str, Any] = {}
        if op == "expect":  # the reply echoes what is now in force; a handler may return nothing
            defaults = {"sample_id": request["sample_id"], "phases": request["phases"],
                        "top_k": request.get("top_k", DEFAULT_TOP_K)}
        elif op == "ping":
            defaults = {"schema_version": messages.SCHEMA_VERSION, "time": messages.rfc3339()}
        result = handler(request)
        return {**defaults, **(dict(result) if result else {})}

    @staticmethod
    def _error(op: str | None, request_id: str | None, error: str) -> dict[str, Any]:
        reply: dict[str, Any] = {"ok": False, "op": op}
        if request_id is not None:
            reply["id"] = request_id
        reply["error"] = error[:2000] or "error"
        return reply

    # ---- the thread and its socket

    def start(self, timeout: float = 10.0) -> None:
        """Start serving; returns once bound, or raises what binding raised (address in use...)."""
        if self._thread is not None:
            raise RuntimeError("control server already started")
        security.warn_if_exposed(self._requested_endpoint, self._curve, "control")
        if self._curve is not None:
            security.acquire_authenticator(self._context, self._curve)
        self._thread = threading.Thread(target=self._run, name="xrd-control", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._bind_error is not None:
            self.stop()
            raise self._bind_error or RuntimeError("control socket did not start")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and join the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
            if self._curve is not None:
                security.release_authenticator(self._context)

    def __enter__(self) -> ControlServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _open(self) -> zmq.Socket:
        sock = self._context.socket(zmq.ROUTER)
        try:
            sock.linger = 0
            sock.maxmsgsize = self._max_request_bytes
            sock.heartbeat_ivl = 5_000
            sock.heartbeat_timeout = 15_000
            if self._curve is not None:
                self._curve.apply(sock)
            sock.bind(self._requested_endpoint)
        except BaseException:
            sock.close(linger=0)
            raise
        return sock

    def _run(self) -> None:
        try:
            sock = self._open()
        except BaseException as exc:
            self._bind_error = exc
            self._ready.set()
            return
        self.endpoint = sock.last_endpoint.decode()
        log.info("control_bound", endpoint=self.endpoint, curve=self._curve is not None)
        self._ready.set()
        try:
            while not self._stop.is_set():
                if not sock.poll(_POLL_MS, zmq.POLLIN):
                    continue
                frames = sock.recv_multipart(zmq.NOBLOCK)
                reply = self._reply_frames(frames)
                if reply is not None:
                    try:
                        sock.send_multipart(reply, zmq.NOBLOCK)
                    except zmq.ContextTerminated:
                        raise
                    except zmq.ZMQError:  # the peer went away or is not reading: drop the reply
                        pass
        except zmq.ContextTerminated:  # the context was torn down under us: nothing left to serve
            log.warning("control_context_terminated")
        finally:
            sock.close(linger=0)

    def _reply_frames(self, frames: Sequence[bytes]) -> list[bytes] | None:
        """ROUTER envelope: [identity, (b"" from REQ/DEALER), payload]; reply along the same route."""
        if len(frames) < 2:
            return None
        routing, payload = list(frames[:-1]), frames[-1]
        return [*routing, messages.dumps(self.handle(payload)).encode("utf-8")]
