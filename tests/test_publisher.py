"""The PUB socket: messages reach a subscriber in another process (``xrd-agent subscribe``),
invalid messages never leave, exposed binds without CURVE are warned about."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import zmq
from structlog.testing import capture_logs

from xrd_agent import messages
from xrd_agent.errors import MessageError
from xrd_agent.service.control import ControlServer, replay_handler
from xrd_agent.service.publisher import Publisher
from xrd_agent.service.security import is_loopback


class Ledger:
    def __init__(self) -> None:
        self.messages: list[dict] = []

    def replay(self, since_seq: int, limit: int) -> list[dict]:
        return [m for m in self.messages if m["seq"] > since_seq][:limit]

    def last_seq(self) -> int:
        return self.messages[-1]["seq"] if self.messages else 0


@pytest.fixture
def context():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def _heartbeat(seq: int) -> dict:
    return messages.build(messages.HEARTBEAT, seq, {"last_seq": seq, "uptime_s": 1.0, "queue_depth": 0},
                          agent_id="test", instrument_id="d8")


def test_subscriber_in_another_process_gets_every_message_once(context):
    """The real path: PUB, control ROUTER, and ``xrd-agent subscribe --json`` in a subprocess.
    Messages published before its subscription lands (the slow joiner) reach it by replay."""
    ledger = Ledger()
    publisher = Publisher(context, "tcp://127.0.0.1:*", high_water_mark=1000)
    control = ControlServer(context, "tcp://127.0.0.1:*",
                            {"replay": replay_handler(ledger.replay, ledger.last_seq),
                             "status": lambda r: {"state": "ready", "detail": "", "counters": {},
                                                  "last_seq": ledger.last_seq(), "uptime_s": 1.0,
                                                  "queue_depth": 0, "model_version": "",
                                                  "library_version": ""}})
    control.start()
    count = 12
    proc = subprocess.Popen(
        [sys.executable, "-m", "xrd_agent", "subscribe", "--json", "--count", str(count), "--timeout", "60",
         "--since", "0", "--pub", publisher.endpoint, "--control", control.endpoint],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        topics = [messages.IDENTIFICATION, messages.ALERT, messages.REJECTED, messages.STATUS]
        # One message per tick while the subscriber starts up: the early ones reach it by replay,
        # the later ones live; either way each must arrive once and in order.
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            seq = ledger.last_seq() + 1
            if seq <= count:
                message = messages.example(topics[seq % 4], seq)
                ledger.messages.append(message)  # the ledger first, then the wire: as the service does
                publisher.send(message)
            publisher.send(_heartbeat(ledger.last_seq()))  # lets a late joiner notice what it missed
            time.sleep(0.1)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        control.stop()
        publisher.close()
    assert proc.returncode == 0, err.decode()
    lines = [json.loads(line) for line in out.decode().splitlines()]
    assert [m["seq"] for m in lines] == list(range(1, count + 1))
    assert lines == ledger.messages


def test_invalid_message_never_leaves(context):
    publisher = Publisher(context, "tcp://127.0.0.1:*")
    sub = context.socket(zmq.SUB)
    sub.linger = 0
    sub.subscribe(b"")
    sub.connect(publisher.endpoint)
    try:
        broken = messages.example(messages.ALERT, 3)
        broken["severity"] = "apocalyptic"
        with pytest.raises(MessageError, match="severity"):
            publisher.send(broken)
        # Only the valid heartbeats arrive, never the broken alert.
        received = []
        deadline = time.monotonic() + 30
        while len(received) < 3 and time.monotonic() < deadline:
            publisher.send(_heartbeat(2))
            if sub.poll(100):
                received.append(sub.recv_multipart())
        assert len(received) == 3
        assert {frames[0] for frames in received} == {b"xrd.heartbeat"}
        assert publisher.sent >= 3
    finally:
        sub.close()
        publisher.close()


def test_send_never_blocks_without_subscribers(context):
    publisher = Publisher(context, "tcp://127.0.0.1:*", high_water_mark=10)
    message = messages.example(messages.STATUS, 1)
    for _ in range(2000):
        assert publisher.send(message) is True  # PUB drops at the HWM instead of blocking
    publisher.close()
    with pytest.raises(RuntimeError, match="closed"):
        publisher.send(message)


def test_exposed_bind_without_curve_warns(context):
    with capture_logs() as logs:
        Publisher(context, "tcp://127.0.0.1:*").close()
    assert not [e for e in logs if e["event"] == "socket_exposed_without_curve"]
    with capture_logs() as logs:
        Publisher(context, "tcp://0.0.0.0:*").close()
    warnings = [e for e in logs if e["event"] == "socket_exposed_without_curve"]
    assert warnings and warnings[0]["log_level"] == "warning"


@pytest.mark.parametrize(
    ("endpoint", "loopback"),
    [("tcp://127.0.0.1:5556", True), ("tcp://localhost:5556", True), ("tcp://[::1]:5556", True),
     ("tcp://127.0.0.2:1", True), ("ipc:///run/xrd-agent/pub", True), ("inproc://x", True),
     ("tcp://*:5556", False), ("tcp://0.0.0.0:5556", False), ("tcp://192.168.1.20:5556", False),
     ("tcp://eth0:5556", False), ("tcp://[::]:5556", False), ("pgm://eth0;239.192.1.1:5555", False)],
)
def test_is_loopback(endpoint, loopback):
    assert is_loopback(endpoint) is loopback


def test_busy_port_raises_and_leaks_no_socket(context):
    first = Publisher(context, "tcp://127.0.0.1:*")
    with pytest.raises(zmq.ZMQError):
        Publisher(context, first.endpoint)
    first.close()
