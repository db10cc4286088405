"""What robot software imports to follow an xrd-agent: subscribe, fill gaps, reconnect.

::

    from xrd_agent.client import Subscriber, IdentificationEvent, AlertEvent

    with Subscriber("tcp://d8-pc:5556", "tcp://d8-pc:5557", since_seq=last_seen) as sub:
        for event in sub:
            ...  # events arrive once each, in seq order; remember event.seq

The Clone pattern of the ZeroMQ Guide (ch. 5): every durable message carries a ledger
``seq``; the subscriber notices a jump (a dropped message, a restart, the slow-joiner
start) and fills it from the control socket's ``replay``; heartbeats carry the newest seq,
so a lost tail is noticed too, and their silence triggers a reconnect. Replayed and live
copies are de-duplicated by seq. Imports only :mod:`xrd_agent.messages` and pyzmq.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import zmq

from xrd_agent import messages
from xrd_agent.errors import ControlError, MessageError

log = logging.getLogger(__name__)  # stdlib logging: robot software rarely uses structlog

#: What a Subscriber yields unless told otherwise: the durable topics.
DEFAULT_TOPICS: tuple[str, ...] = messages.DURABLE_TOPICS
#: Reconnect when nothing (not even a heartbeat, sent every 5 s by default) arrived this long.
SILENCE_TIMEOUT_S = 15.0
CONTROL_TIMEOUT_S = 5.0
REPLAY_PAGE = 500


# --------------------------------------------------------------------------- typed events


@dataclass(frozen=True)
class Phase:
    """One answer of the Top-k: a material (its common name, its best determination's refcode,
    the probability summed over its determinations)."""

    rank: int
    refcode: str
    name: str
    probability: float
    material: str = ""  # material id; empty from an agent that predates materials
    determinations: tuple[tuple[str, float], ...] = ()  # (refcode, probability), most probable first

    @classmethod
    def from_dict(cls, c: Mapping[str, Any]) -> Phase:
        return cls(int(c["rank"]), str(c["refcode"]), str(c["name"]), float(c["probability"]),
                   str(c.get("material", "")),
                   tuple((str(d["refcode"]), float(d["probability"])) for d in c.get("determinations", ())))


@dataclass(frozen=True)
class Event:
    """Common to every event; ``message`` is the raw dict as published."""

    seq: int
    topic: str
    message: Mapping[str, Any] = field(compare=False, repr=False)


@dataclass(frozen=True)
class IdentificationEvent(Event):
    sample_id: str | None
    scan_id: str
    path: str
    top: tuple[Phase, ...]
    confidence: float
    flags: tuple[str, ...]
    duplicate_of: int | None
    crystallinity: float | None = None  # crystalline fraction of the product, when estimated


@dataclass(frozen=True)
class AlertEvent(Event):
    reason: str
    severity: str
    sample_id: str | None
    scan_id: str | None
    path: str | None
    evidence: Mapping[str, Any] = field(compare=False)


@dataclass(frozen=True)
class RejectedEvent(Event):
    reason: str
    error: str
    sample_id: str | None
    path: str


@dataclass(frozen=True)
class StatusEvent(Event):
    state: str
    detail: str
    counters: Mapping[str, int] = field(compare=False)


@dataclass(frozen=True)
class HeartbeatEvent(Event):
    last_seq: int
    uptime_s: float
    queue_depth: int


@dataclass(frozen=True)
class ReviewEvent(Event):
    """A chemist's decision on the identification ``of_seq`` (review page)."""

    of_seq: int
    sample_id: str | None
    scan_id: str
    decision: str  # confirmed | corrected | failed | unknown
    refcode: str | None
    name: str | None
    reviewer: str


def to_event(message: Mapping[str, Any]) -> Event:
    """The typed event for a validated message."""
    topic, seq = message["topic"], message["seq"]
    if topic == messages.IDENTIFICATION:
        result = message["result"]
        return IdentificationEvent(
            seq, topic, message, sample_id=message["sample_id"], scan_id=message["scan_id"],
            path=message["path"], top=tuple(Phase.from_dict(c) for c in result["top"]),
            confidence=result["confidence"], flags=tuple(result["flags"]),
            duplicate_of=message["duplicate_of"],
            crystallinity=result["crystallinity"]["fraction"] if "crystallinity" in result else None)
    if topic == messages.ALERT:
        return AlertEvent(seq, topic, message, reason=message["reason"], severity=message["severity"],
                          sample_id=message["sample_id"], scan_id=message["scan_id"], path=message["path"],
                          evidence=message["evidence"])
    if topic == messages.REJECTED:
        return RejectedEvent(seq, topic, message, reason=message["reason"], error=message["error"],
                             sample_id=message["sample_id"], path=message["path"])
    if topic == messages.STATUS:
        return StatusEvent(seq, topic, message, state=message["state"], detail=message["detail"],
                           counters=message["counters"])
    if topic == messages.REVIEW:
        return ReviewEvent(seq, topic, message, of_seq=message["of_seq"], sample_id=message["sample_id"],
                           scan_id=message["scan_id"], decision=message["decision"], refcode=message["refcode"],
                           name=message["name"], reviewer=message["reviewer"])
    return HeartbeatEvent(seq, topic, message, last_seq=message["last_seq"], uptime_s=message["uptime_s"],
                          queue_depth=message["queue_depth"])


# --------------------------------------------------------------------------- control client


def _apply_curve(socket: zmq.Socket, keys: Any) -> None:
    """``keys``: anything with ``public``, ``secret``, ``server_public`` (z85 bytes), e.g.
    ``xrd_agent.service.security.CurveClientKeys``; kept duck-typed so this module does
    not import the service package."""
    socket.curve_secretkey = keys.secret
    socket.curve_publickey = keys.public
    socket.curve_serverkey = keys.server_public


class ControlClient:
    """Requests to the agent's control socket (DEALER, one request in flight, with timeouts)."""

    def __init__(self, endpoint: str, *, curve_client_keys: Any = None, context: zmq.Context | None = None,
                 timeout_s: float = CONTROL_TIMEOUT_S) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._keys = curve_client_keys
        self._context = context or zmq.Context.instance()
        self._ids = itertools.count(1)
        self._socket: zmq.Socket | None = None

    def _open(self) -> zmq.Socket:
        if self._socket is None:
            sock = self._context.socket(zmq.DEALER)
            sock.linger = 0
            sock.maxmsgsize = 64 * messages.MAX_MESSAGE_BYTES  # a full replay page
            if self._keys is not None:
                _apply_curve(sock, self._keys)
            sock.connect(self.endpoint)
            self._socket = sock
        return self._socket

    def _reset(self) -> None:
        """Forget the socket: a late reply to a timed-out request must not answer the next one."""
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def request(self, request: Mapping[str, Any], timeout_s: float | None = None) -> dict[str, Any]:
        """Send one request, return the validated ``ok`` reply; :class:`ControlError` on a
        refusal or when no reply came in time."""
        request_id = str(next(self._ids))
        body = {**request, "id": request_id}
        messages.validate_request(body)
        sock = self._open()
        try:
            sock.send_multipart([b"", messages.dumps(body).encode("utf-8")], zmq.NOBLOCK)
        except zmq.Again:
            self._reset()
            raise ControlError(f"control endpoint {self.endpoint} is not accepting requests") from None
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        while (remaining := deadline - time.monotonic()) > 0:
            if not sock.poll(int(remaining * 1000) + 1, zmq.POLLIN):
                continue
            frames = sock.recv_multipart()
            try:
                reply = messages.validate_reply(messages.loads(frames[-1].decode("utf-8")))
            except (MessageError, UnicodeDecodeError, ValueError) as exc:
                self._reset()
                raise ControlError(f"control endpoint {self.endpoint} sent an invalid reply: {exc}") from None
            if reply.get("id") != request_id:
                continue  # a reply to an older request; ours is still coming
            if not reply["ok"]:
                raise ControlError(f"{request['op']} refused: {reply['error']}")
            return reply
        self._reset()
        raise ControlError(f"no reply from control endpoint {self.endpoint} within "
                           f"{self.timeout_s if timeout_s is None else timeout_s:g} s")

    def ping(self) -> dict[str, Any]:
        return self.request({"op": "ping"})

    def status(self) -> dict[str, Any]:
        return self.request({"op": "status"})

    def expect(self, sample_id: str, phases: Iterable[str], top_k: int = 5,
               elements: Iterable[str] | None = None) -> dict[str, Any]:
        """Tell the agent which phases ``sample_id`` should contain (an alert fires when not),
        and optionally which elements it was made from."""
        request: dict[str, Any] = {"op": "expect", "sample_id": sample_id, "phases": list(phases), "top_k": top_k}
        if elements is not None:
            request["elements"] = list(elements)
        return self.request(request)

    def by_sample(self, sample_id: str, limit: int = 100) -> dict[str, Any]:
        """Every stored message of ``sample_id`` (identifications, alerts, rejections, reviews), newest first."""
        return self.request({"op": "by_sample", "sample_id": sample_id, "limit": limit})

    def health(self) -> dict[str, Any]:
        """State, ``healthy`` and, when not, the ``reasons``."""
        return self.request({"op": "health"})

    def replay_page(self, since_seq: int, limit: int = REPLAY_PAGE) -> dict[str, Any]:
        return self.request({"op": "replay", "since_seq": since_seq, "limit": limit})

    def close(self) -> None:
        self._reset()


# --------------------------------------------------------------------------- sequencing

class ReplayPage(NamedTuple):
    messages: Sequence[Mapping[str, Any]]  # stored messages after since_seq, in seq order
    more: bool  # more follow this page
    last_seq: int  # the agent's newest seq when it answered


Replay = Callable[[int], ReplayPage]


class Sequencer:
    """Each durable message once, in seq order, from live messages, heartbeats and replays.

    No sockets: ``replay(since_seq)`` returns a :class:`ReplayPage` (the Subscriber passes
    the control socket's replay); every method returns the messages that are now ready, in
    order. ``strict`` raises :class:`MessageError` on an invalid replayed
    message and :class:`ControlError` on a gap that cannot be filled; otherwise they are
    logged and counted (``invalid``, ``lost``).
    """

    def __init__(self, replay: Replay, last_seq: int | None = None, *, strict: bool = False) -> None:
        self._replay = replay
        self._last = last_seq  # newest durable seq delivered or given up on
        self.strict = strict
        self.lost = 0
        self.duplicates = 0
        self.invalid = 0
        self._out: list[Mapping[str, Any]] = []

    @property
    def last_seq(self) -> int | None:
        return self._last

    def start_at(self, last_seq: int) -> None:
        """Follow from ``last_seq`` on (the agent's newest seq when starting from now)."""
        self._last = last_seq

    def live(self, message: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        """A validated durable message as it arrived from the PUB socket."""
        seq = message["seq"]
        if self._last is None:
            self._last = seq - 1  # nothing known yet: this is where we start
        if seq > self._last + 1:
            self._fill(seq - 1)
        self._accept(message)
        return self._flush()

    def heartbeat(self, last_seq: int) -> list[Mapping[str, Any]]:
        """The agent's newest seq: anything after ours was missed (the lost-tail case)."""
        if self._last is None:
            self._last = last_seq
        elif last_seq > self._last:
            self._fill(last_seq)
        elif last_seq < self._last:
            self._check_reset()
        return self._flush()

    def _check_reset(self) -> None:
        """A heartbeat behind us is usually stale (sent before the messages a replay already
        gave us); only the agent's own answer proves that its ledger was replaced."""
        assert self._last is not None
        try:
            newest = self._replay(self._last).last_seq
        except ControlError:
            return
        if newest < self._last:
            log.warning("the agent's sequence went back from %d to %d (ledger replaced?); following it",
                        self._last, newest)
            self._last = newest

    def catch_up(self) -> list[Mapping[str, Any]]:
        """Everything the agent's ledger holds after our last seq (start, reconnect)."""
        if self._last is not None:
            self._fill(None)
        return self._flush()

    def _flush(self) -> list[Mapping[str, Any]]:
        out, self._out = self._out, []
        return out

    def _accept(self, message: Mapping[str, Any]) -> None:
        assert self._last is not None
        if message["seq"] <= self._last:
            self.duplicates += 1
            return
        self._last = message["seq"]
        self._out.append(message)

    def _fill(self, target: int | None) -> None:
        """Replay up to ``target`` (None: as far as the ledger goes)."""
        assert self._last is not None
        while target is None or self._last < target:
            try:
                page, more, _ = self._replay(self._last)
            except ControlError as exc:
                self._gap(target, str(exc))
                return
            before = self._last
            for raw in page:
                try:
                    messages.validate(raw)
                except MessageError as exc:
                    self._skip(exc)
                    if isinstance(raw, Mapping) and isinstance(raw.get("seq"), int):
                        self._last = max(self._last, raw["seq"])
                    continue
                if raw["topic"] == messages.HEARTBEAT:
                    continue
                if raw["seq"] > self._last + 1:  # a hole in the ledger itself
                    self._gap(raw["seq"] - 1, "the agent's ledger no longer holds them")
                self._accept(raw)
            if not more or self._last == before:
                if target is not None and self._last < target:
                    self._gap(target, "the agent's ledger no longer holds them")
                return

    def _skip(self, error: MessageError) -> None:
        self.invalid += 1
        if self.strict:
            raise error
        log.warning("skipping an invalid replayed message: %s", error.reason)

    def _gap(self, target: int | None, why: str) -> None:
        assert self._last is not None
        if target is None:
            log.warning("could not replay after seq %d: %s", self._last, why)
            return
        first = self._last + 1
        if self.strict:
            raise ControlError(f"seq {first}-{target} missed and not replayed: {why}")
        log.error("seq %d-%d missed and not replayed: %s", first, target, why)
        self.lost += target - self._last
        self._last = target


# --------------------------------------------------------------------------- subscriber


class Subscriber:
    """Follow an agent: typed events, each durable one exactly once and in seq order.

    ``since_seq``: deliver everything after this seq first (the last seq your program
    processed, persisted on your side); None starts from now. ``topics``: which events
    to yield (the socket always receives all durable topics and heartbeats, because gap
    detection needs every seq). ``strict``: raise :class:`MessageError` on an invalid
    message and :class:`ControlError` on a gap that cannot be filled, instead of logging
    and going on. ``lost`` counts seqs that could not be recovered.
    """

    def __init__(self, pub_endpoint: str, control_endpoint: str, *, topics: Iterable[str] = DEFAULT_TOPICS,
                 curve_client_keys: Any = None, since_seq: int | None = None, strict: bool = False,
                 context: zmq.Context | None = None, silence_timeout_s: float = SILENCE_TIMEOUT_S,
                 control_timeout_s: float = CONTROL_TIMEOUT_S, replay_page: int = REPLAY_PAGE) -> None:
        self.topics = frozenset(topics)
        unknown = self.topics - set(messages.TOPICS)
        if unknown:
            raise ValueError(f"unknown topic(s) {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(messages.TOPICS)}")
        if since_seq is not None and since_seq < 0:
            raise ValueError("since_seq must be >= 0")
        self.pub_endpoint = pub_endpoint
        self.strict = strict
        self.silence_timeout_s = silence_timeout_s
        self._own_context = context is None
        self._context = context or zmq.Context()
        self._keys = curve_client_keys
        self._from_now = since_seq is None
        self.control = ControlClient(control_endpoint, curve_client_keys=curve_client_keys,
                                     context=self._context, timeout_s=control_timeout_s)

        def replay(since: int) -> ReplayPage:
            reply = self.control.replay_page(since, replay_page)
            return ReplayPage(reply["messages"], reply["more"], reply["last_seq"])

        self.sequencer = Sequencer(replay, since_seq, strict=strict)
        self._pending: deque[Event] = deque()
        self._sub: zmq.Socket | None = None
        self._last_heard = time.monotonic()
        self._started = False
        self._invalid_live = 0
        self.reconnects = 0
        self.agent_stopped = False  # its last status said ``stopped``: silence is expected, not a fault

    @property
    def last_seq(self) -> int | None:
        """The newest durable seq delivered or accounted for (persist it; pass it as since_seq)."""
        return self.sequencer.last_seq

    @property
    def lost(self) -> int:
        return self.sequencer.lost

    @property
    def duplicates(self) -> int:
        return self.sequencer.duplicates

    @property
    def invalid(self) -> int:
        """Invalid messages skipped, live or replayed."""
        return self._invalid_live + self.sequencer.invalid

    # ---- life cycle

    def _connect(self) -> None:
        sock = self._context.socket(zmq.SUB)
        sock.linger = 0
        sock.rcvhwm = 100_000
        sock.maxmsgsize = messages.MAX_MESSAGE_BYTES + 1024
        sock.heartbeat_ivl = 5_000
        sock.heartbeat_timeout = 15_000
        if self._keys is not None:
            _apply_curve(sock, self._keys)
        sock.setsockopt(zmq.SUBSCRIBE, b"xrd.")
        sock.connect(self.pub_endpoint)
        self._sub = sock
        self._last_heard = time.monotonic()

    def _start(self) -> None:
        self._started = True
        self._connect()  # subscribe first, then ask: nothing published in between is missed
        if self._from_now:
            try:
                self.sequencer.start_at(int(self.control.status()["last_seq"]))
            except ControlError as exc:  # start from the first message that arrives
                log.warning("xrd-agent control unreachable at start (%s); starting from the next message",
                            exc)
        else:
            self._deliver(self.sequencer.catch_up())

    def _reconnect(self) -> None:
        if self.agent_stopped:  # a clean stop (systemctl stop, a restart): wait for it to come back
            log.info("the agent at %s said it stopped; reconnecting every %.0f s until it is back",
                     self.pub_endpoint, self.silence_timeout_s)
        else:
            log.warning("no message or heartbeat from %s for %.0f s: reconnecting", self.pub_endpoint,
                        self.silence_timeout_s)
        self.reconnects += 1
        if self._sub is not None:
            self._sub.close(linger=0)
        self._connect()
        if not self.agent_stopped:  # a stopped agent published nothing since; its first message back fills any gap
            self._deliver(self.sequencer.catch_up())

    def close(self) -> None:
        if self._sub is not None:
            self._sub.close(linger=0)
            self._sub = None
        self.control.close()
        if self._own_context:
            self._context.term()

    def __enter__(self) -> Subscriber:
        if not self._started:
            self._start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- receiving

    def receive(self, timeout: float | None = None) -> Event | None:
        """The next event, or None when none arrived within ``timeout`` seconds (None: wait
        for ever). Filling a gap may take up to the control timeout on top."""
        if not self._started:
            self._start()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._pending:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return None
            silence_left = self._last_heard + self.silence_timeout_s - now
            if silence_left <= 0:
                self._reconnect()
                continue
            wait = silence_left if deadline is None else min(silence_left, deadline - now)
            sock = self._sub
            if sock is not None and sock.poll(max(1, int(wait * 1000)), zmq.POLLIN):
                self._last_heard = time.monotonic()
                self._on_frames(sock.recv_multipart(zmq.NOBLOCK))
        return self._pending.popleft()

    def __iter__(self) -> Iterator[Event]:
        while True:
            event = self.receive()
            if event is not None:
                yield event

    def _on_frames(self, frames: list[bytes]) -> None:
        try:
            message = messages.decode(frames)
        except MessageError as exc:
            self._invalid_live += 1
            if self.strict:
                raise
            log.warning("skipping an invalid message: %s", exc.reason)
            return
        if message["topic"] == messages.HEARTBEAT:
            self._deliver(self.sequencer.heartbeat(message["last_seq"]))
            if messages.HEARTBEAT in self.topics:
                self._pending.append(to_event(message))
        else:
            self._deliver(self.sequencer.live(message))

    def _deliver(self, ready: Iterable[Mapping[str, Any]]) -> None:
        for m in ready:
            if m["topic"] == messages.STATUS:
                self.agent_stopped = m["state"] == "stopped"
            elif m["topic"] != messages.HEARTBEAT:
                self.agent_stopped = False
            if m["topic"] in self.topics:
                self._pending.append(to_event(m))
