"""The control socket on real loopback sockets: replay paging, status, expect, ping, and
requests that are malformed, oversized or hostile (none of which stops the server)."""

from __future__ import annotations

import json
import threading
import time

import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from xrd_agent import messages
from xrd_agent.client import ControlClient
from xrd_agent.errors import ControlError, XrdAgentError
from xrd_agent.service.control import ControlServer, replay_handler


class Ledger:
    """The smallest ledger the control socket needs: stored messages in seq order."""

    def __init__(self, count: int = 0) -> None:
        self.messages = [messages.example(messages.STATUS, seq) for seq in range(1, count + 1)]
        self.calls: list[tuple[int, int]] = []

    def replay(self, since_seq: int, limit: int) -> tuple[list[dict], bool]:
        self.calls.append((since_seq, limit))
        after = [m for m in self.messages if m["seq"] > since_seq]
        return after[:limit], len(after) > limit

    def last_seq(self) -> int:
        return self.messages[-1]["seq"] if self.messages else 0


def status_handler(request: dict) -> dict:
    return {"state": "ready", "detail": "", "counters": {"scans_seen": 3}, "last_seq": 25, "uptime_s": 12.5,
            "queue_depth": 0, "model_version": "m", "library_version": "l"}


@pytest.fixture
def context():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
def ledger():
    return Ledger(25)


@pytest.fixture
def expectations():
    return {}


@pytest.fixture
def server(context, ledger, expectations):
    def expect(request):
        expectations[request["sample_id"]] = list(request["phases"])

    handlers = {"replay": replay_handler(ledger.replay, ledger.last_seq), "status": status_handler,
                "expect": expect}
    srv = ControlServer(context, "tcp://127.0.0.1:*", handlers)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def client(context, server):
    c = ControlClient(server.endpoint, context=context, timeout_s=5)
    yield c
    c.close()


def raw_request(context, endpoint, frames, timeout_ms=5000):
    """Send raw frames from a DEALER and return the parsed reply (None if none came)."""
    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(endpoint)
    try:
        sock.send_multipart(frames)
        if not sock.poll(timeout_ms):
            return None
        reply = json.loads(sock.recv_multipart()[-1])
        messages.validate_reply(reply)
        return reply
    finally:
        sock.close()


def test_replay_pages_through_the_ledger(client, ledger):
    first = client.replay_page(0, 10)
    assert [m["seq"] for m in first["messages"]] == list(range(1, 11))
    assert first["more"] is True and first["last_seq"] == 25
    last = client.replay_page(20, 10)
    assert [m["seq"] for m in last["messages"]] == [21, 22, 23, 24, 25]
    assert last["more"] is False
    assert client.replay_page(25)["messages"] == []
    assert ledger.calls[0][0] == 0
    for message in first["messages"]:
        messages.validate(message)


def test_replay_handler_over_a_list_returning_replay():
    stored = [messages.example(messages.STATUS, seq) for seq in range(1, 8)]

    def replay(since_seq, limit):
        return [m for m in stored if m["seq"] > since_seq][:limit]

    handle = replay_handler(replay, lambda: 7)
    page = handle({"op": "replay", "since_seq": 0, "limit": 3})
    assert [m["seq"] for m in page["messages"]] == [1, 2, 3] and page["more"] is True
    page = handle({"op": "replay", "since_seq": 4, "limit": 3})
    assert [m["seq"] for m in page["messages"]] == [5, 6, 7] and page["more"] is False


def test_status_expect_ping(client, expectations):
    status = client.status()
    assert status["state"] == "ready" and status["last_seq"] == 25
    reply = client.expect("S-042", ["OFERUN"], top_k=3)
    assert reply["phases"] == ["OFERUN"] and reply["top_k"] == 3
    assert expectations == {"S-042": ["OFERUN"]}
    assert client.expect("S-043", ["FIQCEN"])  # top_k defaults to 5 in the reply
    assert client.ping()["schema_version"] == "1"


@pytest.mark.parametrize(
    ("frames", "error"),
    [
        ([b"", b"not json"], "not UTF-8 JSON"),
        ([b"", b"\xff\xfe\x00"], "not UTF-8 JSON"),
        ([b"", b"[1, 2, 3]"], "must be a JSON object"),
        ([b"", b'{"op": "shutdown"}'], "unknown op 'shutdown'"),
        ([b"", b'{"op": "status", "path": "/etc/passwd"}'], "'path' was unexpected"),
        ([b"", b'{"op": "replay", "since_seq": "0; DROP TABLE messages"}'], "is not of type 'integer'"),
        ([b"", b'{"op": "replay", "since_seq": 0, "limit": 1e9}'], "limit"),
        ([b"", b'{"op": "expect", "sample_id": "../../etc", "phases": "ZIF-8"}'], "is not of type 'array'"),
        ([b"", b'{"op": "replay", "since_seq": NaN}'], "not UTF-8 JSON"),
        ([b'{"op": "ping"}'], None),  # a bare DEALER without the empty delimiter is answered too
    ],
)
def test_malformed_requests_get_a_reason_and_the_server_survives(context, server, client, frames, error):
    reply = raw_request(context, server.endpoint, frames)
    assert reply is not None
    if error is None:
        assert reply["ok"] is True
    else:
        assert reply["ok"] is False and error in reply["error"]
    assert client.ping()["ok"] is True


def test_oversized_and_multipart_garbage_do_not_stop_the_server(context, server, client):
    assert raw_request(context, server.endpoint, [b"", b"x" * (200 * 1024)], timeout_ms=300) is None
    reply = raw_request(context, server.endpoint, [b"a", b"b", b"", b"c", b'{"op":"ping"}'])
    assert reply["ok"] is True  # the last frame is the request; the rest is routing
    assert client.ping()["ok"] is True


def test_request_id_is_echoed(context, server):
    reply = raw_request(context, server.endpoint, [b"", b'{"op": "ping", "id": "robot-7"}'])
    assert reply["id"] == "robot-7"
    reply = raw_request(context, server.endpoint, [b"", b'{"op": "nope", "id": "robot-8"}'])
    assert reply["id"] == "robot-8" and reply["ok"] is False


def test_handler_failures_become_error_replies(context):
    def explode(request):
        raise RuntimeError("disk on fire")

    def refuse(request):
        raise XrdAgentError("sample S-1 is locked")

    def garbage(request):
        return {"state": "partying"}

    handlers = {"replay": explode, "expect": refuse, "status": garbage}
    srv = ControlServer(context, "tcp://127.0.0.1:*", handlers)
    with srv:
        c = ControlClient(srv.endpoint, context=context)
        with pytest.raises(ControlError, match=r"internal error \(RuntimeError\)"):
            c.replay_page(0)
        with pytest.raises(ControlError, match="sample S-1 is locked"):
            c.expect("S-1", [])
        with pytest.raises(ControlError, match="invalid reply"):
            c.status()
        assert c.ping()["ok"] is True
        c.close()
    assert srv.refused == 3


def test_op_without_a_handler_is_refused(context):
    with ControlServer(context, "tcp://127.0.0.1:*", {}) as srv:
        c = ControlClient(srv.endpoint, context=context)
        with pytest.raises(ControlError, match="'status' is not available"):
            c.status()
        c.close()


def test_handlers_for_unknown_ops_are_a_programming_error(context):
    with pytest.raises(ValueError, match="shutdown"):
        ControlServer(context, "tcp://127.0.0.1:*", {"shutdown": lambda r: {}})


def test_start_reports_a_busy_address_and_stop_joins(context, server):
    other = ControlServer(context, server.endpoint, {})
    with pytest.raises(zmq.ZMQError):
        other.start()
    threads = {t.name for t in threading.enumerate()}
    assert "xrd-control" in threads
    server.stop()
    assert "xrd-control" not in {t.name for t in threading.enumerate()}


def test_no_reply_in_time_is_a_control_error(context):
    silent = context.socket(zmq.ROUTER)  # accepts the connection, never answers
    port = silent.bind_to_random_port("tcp://127.0.0.1")
    try:
        c = ControlClient(f"tcp://127.0.0.1:{port}", context=context, timeout_s=0.2)
        with pytest.raises(ControlError, match="no reply"):
            c.ping()
        c.close()
    finally:
        silent.close(linger=0)


_HANDLE_ONLY = ControlServer(zmq.Context.instance(), "inproc://unused", {"expect": lambda r: None})


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=300),
                 st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                              lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                                  st.sampled_from(["op", "id", "since_seq", "limit", "sample_id", "phases",
                                                   "top_k", "x"]), inner, max_size=5),
                              max_leaves=10).map(lambda v: json.dumps(v).encode())))
def test_any_payload_gets_a_valid_reply(payload):
    reply = _HANDLE_ONLY.handle(payload)
    messages.validate_reply(reply)


def test_server_keeps_serving_while_a_client_floods(context, server, client):
    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(server.endpoint)
    for i in range(500):
        sock.send_multipart([b"", b'{"op": "ping"}' if i % 2 else b"\x00garbage"])
    replies = 0
    deadline = time.monotonic() + 30
    while replies < 500 and time.monotonic() < deadline:
        if sock.poll(1000):
            sock.recv_multipart()
            replies += 1
    sock.close()
    assert replies == 500
    assert client.status()["ok"] is True
