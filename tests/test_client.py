"""The client on real loopback sockets: gaps filled by replay, duplicates dropped, tail loss
noticed through heartbeats, a silent publisher reconnected, invalid messages skipped or raised."""

from __future__ import annotations

import time

import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from xrd_agent import messages
from xrd_agent.client import (AlertEvent, HeartbeatEvent, IdentificationEvent, RejectedEvent, ReplayPage,
                              Sequencer, StatusEvent, Subscriber, to_event)
from xrd_agent.errors import ControlError, MessageError
from xrd_agent.service.control import ControlServer, replay_handler
from xrd_agent.service.publisher import Publisher

TOPIC_CYCLE = (messages.IDENTIFICATION, messages.ALERT, messages.REJECTED, messages.STATUS)


class Ledger:
    """A fake ledger: what the service would have stored, in seq order."""

    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.replays: list[int] = []

    def add(self, seq: int, topic: str | None = None) -> dict:
        message = messages.example(topic or TOPIC_CYCLE[seq % 4], seq)
        self.messages.append(message)
        return message

    def replay(self, since_seq: int, limit: int) -> tuple[list[dict], bool]:
        self.replays.append(since_seq)
        after = [m for m in self.messages if m["seq"] > since_seq]
        return after[:limit], len(after) > limit

    def last_seq(self) -> int:
        return self.messages[-1]["seq"] if self.messages else 0

    def status(self, request: dict) -> dict:
        return {"state": "ready", "detail": "", "counters": {}, "last_seq": self.last_seq(), "uptime_s": 1.0,
                "queue_depth": 0, "model_version": "", "library_version": ""}


class Agent:
    """Publisher + control server over a fake ledger, on random loopback ports."""

    def __init__(self, context: zmq.Context, pub_endpoint: str = "tcp://127.0.0.1:*") -> None:
        self.context = context
        self.ledger = Ledger()
        self.publisher = Publisher(context, pub_endpoint)
        self.control = ControlServer(context, "tcp://127.0.0.1:*", {
            "replay": replay_handler(self.ledger.replay, self.ledger.last_seq), "status": self.ledger.status})
        self.control.start()

    def heartbeat(self) -> None:
        seq = self.ledger.last_seq()
        self.publisher.send(messages.build(messages.HEARTBEAT, seq, {"last_seq": seq, "uptime_s": 1.0,
                                                                     "queue_depth": 0},
                                           agent_id="t", instrument_id="d8"))

    def close(self) -> None:
        self.control.stop()
        self.publisher.close()


@pytest.fixture
def context():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
def agent(context):
    a = Agent(context)
    yield a
    a.close()


def subscriber(agent: Agent, **kwargs) -> Subscriber:
    kwargs.setdefault("context", agent.context)
    return Subscriber(agent.publisher.endpoint, agent.control.endpoint, **kwargs)


def sync(agent: Agent, sub: Subscriber) -> None:
    """Wait until the subscription has landed: heartbeats until one is received."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        agent.heartbeat()
        event = sub.receive(0.05)
        if isinstance(event, HeartbeatEvent):
            return
    raise AssertionError("subscription never landed")


def collect(sub: Subscriber, n: int, agent: Agent | None = None, timeout: float = 30) -> list:
    events = []
    deadline = time.monotonic() + timeout
    while len(events) < n and time.monotonic() < deadline:
        if agent is not None:
            agent.heartbeat()
        event = sub.receive(0.1)
        if event is not None and not isinstance(event, HeartbeatEvent):
            events.append(event)
    return events


def test_gap_is_filled_by_replay_and_each_seq_arrives_once(agent):
    sub = subscriber(agent, topics=(*messages.DURABLE_TOPICS, messages.HEARTBEAT))
    with sub:
        sync(agent, sub)
        for seq in range(1, 11):
            message = agent.ledger.add(seq)
            if seq not in (4, 5, 6):  # dropped on purpose, as PUB does at the high-water mark
                agent.publisher.send(message)
        events = collect(sub, 10)
        assert [e.seq for e in events] == list(range(1, 11))
        assert [e.message for e in events] == agent.ledger.messages
        assert 3 in agent.ledger.replays  # the gap was asked for from seq 3
        assert sub.lost == 0
        # Nothing more: the live copies of 7-10 (already replayed) were dropped as duplicates.
        assert collect(sub, 1, timeout=0.3) == []


def test_duplicates_are_dropped(agent):
    sub = subscriber(agent, topics=(*messages.DURABLE_TOPICS, messages.HEARTBEAT))
    with sub:
        sync(agent, sub)
        for seq in (1, 2):
            agent.publisher.send(agent.ledger.add(seq))
        agent.publisher.send(agent.ledger.messages[0])  # the service re-sends unsent messages after a crash
        agent.publisher.send(agent.ledger.add(3))
        assert [e.seq for e in collect(sub, 3)] == [1, 2, 3]
        assert sub.duplicates == 1


def test_lost_tail_is_noticed_through_the_heartbeat(agent):
    sub = subscriber(agent, topics=(*messages.DURABLE_TOPICS, messages.HEARTBEAT))
    with sub:
        sync(agent, sub)
        agent.publisher.send(agent.ledger.add(1))
        agent.ledger.add(2)  # stored, never published: only the heartbeat tells
        assert [e.seq for e in collect(sub, 2, agent)] == [1, 2]


def test_since_seq_delivers_the_stored_backlog_first(agent):
    for seq in range(1, 8):
        agent.ledger.add(seq)
    with subscriber(agent, since_seq=4, replay_page=2) as sub:
        assert [e.seq for e in collect(sub, 3)] == [5, 6, 7]
        assert sub.last_seq == 7


def test_started_from_now_skips_the_backlog(agent):
    for seq in range(1, 6):
        agent.ledger.add(seq)
    with subscriber(agent) as sub:
        assert sub.last_seq == 5
        agent.ledger.add(6)  # arrives by heartbeat + replay even if the subscription is late
        assert [e.seq for e in collect(sub, 1, agent)] == [6]


def test_topics_filter_what_is_yielded_not_what_is_tracked(agent):
    for seq in range(1, 9):
        agent.ledger.add(seq)
    with subscriber(agent, since_seq=0, topics=[messages.ALERT]) as sub:
        events = collect(sub, 2)
        assert [e.seq for e in events] == [1, 5]
        assert all(isinstance(e, AlertEvent) for e in events)
        assert sub.last_seq == 8


def test_unrecoverable_gap_is_counted_or_raised(agent):
    with subscriber(agent, topics=(*messages.DURABLE_TOPICS, messages.HEARTBEAT)) as sub:
        sync(agent, sub)
        agent.publisher.send(agent.ledger.add(1))
        for seq in (2, 3, 4):
            messages.example(messages.STATUS, seq)  # made but never stored: the ledger lost them
        fifth = messages.example(messages.STATUS, 5)
        agent.ledger.messages.append(fifth)
        agent.publisher.send(fifth)
        assert [e.seq for e in collect(sub, 2)] == [1, 5]
        assert sub.lost == 3

    with subscriber(agent, strict=True, topics=(*messages.DURABLE_TOPICS, messages.HEARTBEAT)) as sub:
        sync(agent, sub)
        seventh = messages.example(messages.STATUS, 7)
        agent.ledger.messages.append(seventh)
        agent.publisher.send(seventh)
        with pytest.raises(ControlError, match="seq 6-6 missed"):
            collect(sub, 1)


def test_invalid_messages_are_skipped_or_raised(context, agent):
    rogue = context.socket(zmq.PUB)  # a broken or hostile peer on the same endpoint family
    rogue.linger = 0
    port = rogue.bind_to_random_port("tcp://127.0.0.1")
    good = messages.encode(messages.example(messages.STATUS, 1))
    bad = [b"xrd.status", good[1].replace(b'"ready"', b'"napping"')]
    try:
        for strict in (False, True):
            sub = Subscriber(f"tcp://127.0.0.1:{port}", agent.control.endpoint, since_seq=0, strict=strict,
                             context=context)
            with sub:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    rogue.send_multipart(bad)
                    rogue.send_multipart([b"xrd.status", b"\x00\x01 not json"])
                    try:
                        sub.receive(0.05)
                    except MessageError as exc:
                        assert strict
                        assert "napping" in str(exc) or "JSON" in str(exc)
                        break
                    if sub.invalid >= 2:
                        assert not strict
                        break
                else:
                    raise AssertionError("no invalid message seen")
    finally:
        rogue.close()


def test_silent_publisher_triggers_a_reconnect(context, agent):
    endpoint = agent.publisher.endpoint
    sub = subscriber(agent, topics=(*messages.DURABLE_TOPICS, messages.HEARTBEAT), silence_timeout_s=0.3)
    with sub:
        sync(agent, sub)
        agent.publisher.close()  # the agent's PUB goes away (restart, network cut)
        deadline = time.monotonic() + 30
        while sub.reconnects == 0 and time.monotonic() < deadline:
            sub.receive(0.1)
        assert sub.reconnects >= 1
        agent.publisher = Publisher(context, endpoint)  # back on the same endpoint
        agent.ledger.add(1)
        agent.publisher.send(agent.ledger.messages[-1])
        assert [e.seq for e in collect(sub, 1, agent)] == [1]


def test_silence_after_a_clean_stop_is_not_reported_as_a_fault(context, agent, caplog):
    """An agent that said ``stopped`` (systemctl stop, a restart) is expected to go quiet: the
    client still reconnects, but says why at info level instead of warning of a silent
    publisher (the demo's subscriber printed that warning on a busy machine while the agent
    exited). A message after the stop means the agent is back."""
    endpoint = agent.publisher.endpoint
    sub = subscriber(agent, topics=(*messages.DURABLE_TOPICS, messages.HEARTBEAT), silence_timeout_s=0.3)
    with sub:
        sync(agent, sub)
        stopped = messages.build(messages.STATUS, 1, {"state": "stopped", "detail": "the agent stopped cleanly",
                                                      "counters": {}}, agent_id="t", instrument_id="d8")
        agent.ledger.messages.append(stopped)
        agent.publisher.send(stopped)
        assert [e.message["state"] for e in collect(sub, 1)] == ["stopped"]
        assert sub.agent_stopped
        agent.publisher.close()
        caplog.clear()
        replays = len(agent.ledger.replays)
        with caplog.at_level("INFO", logger="xrd_agent.client"):
            deadline = time.monotonic() + 30
            while sub.reconnects == 0 and time.monotonic() < deadline:
                sub.receive(0.1)
        assert sub.reconnects >= 1
        said = [(r.levelname, r.getMessage()) for r in caplog.records if "reconnect" in r.getMessage()]
        assert said and all(level == "INFO" and "said it stopped" in text for level, text in said)
        assert len(agent.ledger.replays) == replays  # nothing to replay from a stopped agent (its control is gone)
        assert not [r for r in caplog.records if r.levelname == "WARNING"]
        agent.publisher = Publisher(context, endpoint)
        agent.ledger.add(2, messages.IDENTIFICATION)
        agent.publisher.send(agent.ledger.messages[-1])
        assert [e.seq for e in collect(sub, 1, agent)] == [2]
        assert not sub.agent_stopped


def test_control_unreachable_at_start_starts_from_the_first_message(context, agent):
    sub = Subscriber(agent.publisher.endpoint, "tcp://127.0.0.1:1", context=context, control_timeout_s=0.2,
                     topics=(*messages.DURABLE_TOPICS, messages.HEARTBEAT))
    with sub:
        assert sub.last_seq is None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            agent.publisher.send(messages.example(messages.STATUS, 41))
            event = sub.receive(0.05)
            if event is not None:
                break
        assert event.seq == 41 and sub.last_seq == 41


def test_typed_events():
    ident = to_event(messages.example(messages.IDENTIFICATION, 3))
    assert isinstance(ident, IdentificationEvent)
    assert ident.top[0].name == "HKUST-1" and ident.top[0].probability == pytest.approx(0.953)
    assert ident.top[0].material == "FIQCEN" and ident.top[0].determinations[1] == ("DIHVIB", pytest.approx(0.041))
    assert ident.top[1].determinations == ()  # an agent that predates materials still decodes
    assert ident.sample_id == "S-042" and ident.duplicate_of is None
    assert isinstance(to_event(messages.example(messages.REJECTED, 4)), RejectedEvent)
    assert isinstance(to_event(messages.example(messages.STATUS, 5)), StatusEvent)
    with pytest.raises(AttributeError):
        ident.seq = 4  # frozen


def test_unknown_topics_are_refused():
    with pytest.raises(ValueError, match="xrd.weather"):
        Subscriber("tcp://127.0.0.1:1", "tcp://127.0.0.1:2", topics=["xrd.weather"])


# ---- the sequencing logic alone, against any pattern of loss and repetition

STORED = [messages.example(messages.STATUS, seq) for seq in range(1, 41)]


def _replay_from(ledger, page):
    """A replay over ``ledger`` (a list the test may grow, as the agent's ledger grows)."""

    def replay(since):
        after = [m for m in ledger if m["seq"] > since]
        newest = ledger[-1]["seq"] if ledger else 0
        return ReplayPage(after[:page], len(after) > page, newest)

    return replay


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_sequencer_delivers_every_seq_once_in_order_whatever_is_dropped(data):
    n = data.draw(st.integers(1, len(STORED)), label="published")
    ledger: list[dict] = []
    seq = Sequencer(_replay_from(ledger, data.draw(st.integers(1, 7), label="page")),
                    data.draw(st.sampled_from([None, 0]), label="since"))
    delivered = []
    for message in STORED[:n]:  # the agent stores, then publishes; the wire drops and repeats
        ledger.append(message)
        for _ in range(data.draw(st.integers(0, 2), label=f"copies of {message['seq']}")):
            delivered += seq.live(message)
        if data.draw(st.booleans(), label="heartbeat"):
            delivered += seq.heartbeat(message["seq"])
        if data.draw(st.integers(0, 5), label="stale") == 0:  # a heartbeat or message sent earlier
            old = ledger[data.draw(st.integers(0, len(ledger) - 1), label="old")]
            delivered += seq.heartbeat(old["seq"]) if data.draw(st.booleans()) else seq.live(old)
    delivered += seq.heartbeat(n)
    first = delivered[0]["seq"] if delivered else n + 1
    assert [m["seq"] for m in delivered] == list(range(first, n + 1))
    assert seq.lost == 0
    assert seq.last_seq == n


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_sequencer_counts_what_the_ledger_lost(data):
    n = data.draw(st.integers(1, len(STORED)))
    kept = [m for m in STORED[:n] if data.draw(st.booleans(), label=f"kept {m['seq']}")]
    seq = Sequencer(_replay_from(kept, data.draw(st.integers(1, 7))), 0)
    delivered = []
    for message in kept:
        if data.draw(st.booleans(), label="arrives live"):
            delivered += seq.live(message)
    delivered += seq.heartbeat(n)
    assert delivered == kept
    assert seq.lost == n - len(kept)
    assert seq.last_seq == n


def test_sequencer_strict_gap_and_unreachable_control():
    def down(since):
        raise ControlError("no reply from control endpoint")

    lenient = Sequencer(down, 3)
    assert lenient.live(STORED[5]) == [STORED[5]]  # seq 6: 4-5 could not be replayed
    assert lenient.lost == 2 and lenient.last_seq == 6
    strict = Sequencer(down, 3, strict=True)
    with pytest.raises(ControlError, match="seq 4-5 missed"):
        strict.live(STORED[5])


def test_sequencer_skips_an_invalid_replayed_message():
    broken = dict(STORED[1], state="napping")
    replay = _replay_from([STORED[0], broken, STORED[2]], 10)
    seq = Sequencer(replay, 0)
    assert [m["seq"] for m in seq.catch_up()] == [1, 3]
    assert seq.invalid == 1 and seq.lost == 0
    with pytest.raises(MessageError, match="napping"):
        Sequencer(replay, 0, strict=True).catch_up()


def test_sequencer_follows_a_replaced_ledger():
    replaced: list[dict] = [STORED[0], STORED[1], STORED[2]]  # a fresh ledger at seq 3
    seq = Sequencer(_replay_from(replaced, 10), 50)
    assert seq.heartbeat(3) == [] and seq.last_seq == 3  # the agent confirms: newest is 3
    replaced.append(STORED[3])
    assert seq.live(STORED[3]) == [STORED[3]]


def test_sequencer_ignores_a_stale_heartbeat():
    ledger = STORED[:10]
    seq = Sequencer(_replay_from(ledger, 10), 0)
    assert len(seq.live(STORED[7])) == 10  # seq 8 live: 1-7 replayed, and 9-10 already stored
    assert seq.heartbeat(8) == [] and seq.last_seq == 10  # sent before 9 and 10: not a reset
    assert seq.live(STORED[9]) == [] and seq.duplicates == 2
