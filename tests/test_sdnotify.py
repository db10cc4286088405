"""sd_notify against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from xrd_agent.service.sdnotify import Notifier
from xrd_agent.testing.agent import AgentProcess, agent_config, write_config
from xrd_agent.testing.library import save_tiny_library


@pytest.fixture
def systemd_socket(tmp_path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(10)
    yield path, sock
    sock.close()


def _receive(sock: socket.socket, until: str, timeout: float = 60.0) -> list[str]:
    """Datagrams until one contains ``until`` (each datagram is one string)."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = sock.recv(4096).decode()
        except TimeoutError:
            continue
        got.append(data)
        if until in data.split("\n"):
            return got
    raise AssertionError(f"{until!r} not received; got {got}")


def test_notify_sends_one_datagram_of_key_value_lines(systemd_socket):
    path, sock = systemd_socket
    n = Notifier({"NOTIFY_SOCKET": str(path)})
    assert n.enabled
    assert n.ready("ready: watching /data")
    assert sock.recv(4096).decode().split("\n") == ["READY=1", "STATUS=ready: watching /data"]
    assert n.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"


def test_abstract_namespace_socket():
    name = f"xrd-agent-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(5)
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).status("starting")
        assert sock.recv(4096) == b"STATUS=starting"
    finally:
        sock.close()


def test_without_systemd_every_call_is_a_no_op(tmp_path):
    n = Notifier({})
    assert not n.enabled and not n.ready() and not n.watchdog()
    assert Notifier({"NOTIFY_SOCKET": "relative/path"}).enabled is False
    gone = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens.sock")})
    assert gone.enabled and gone.ready() is False  # systemd gone: never an exception


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_pid():
    assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_interval_s == 15.0
    assert Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}).watchdog_interval_s == 15.0
    assert Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}).watchdog_interval_s is None
    assert Notifier({"WATCHDOG_USEC": "0"}).watchdog_interval_s is None
    assert Notifier({}).watchdog_interval_s is None


def test_the_service_reports_ready_then_pings_the_watchdog(tmp_path: Path, systemd_socket):
    path, sock = systemd_socket
    save_tiny_library(tmp_path / "lib")
    (tmp_path / "export").mkdir()
    cfg = write_config(tmp_path / "agent.toml",
                       agent_config(tmp_path, model={"engine": "cosine", "library_dir": str(tmp_path / "lib")}))
    agent = AgentProcess(cfg, tmp_path / "state", env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"})
    with agent:
        agent.start()
        before_ready = _receive(sock, "READY=1")
        assert any(line.startswith("STATUS=starting") for d in before_ready for line in d.split("\n"))
        _receive(sock, "WATCHDOG=1", timeout=10)
        _receive(sock, "WATCHDOG=1", timeout=10)  # and again: it keeps pinging while healthy
        assert agent.stop() == 0
        assert "STOPPING=1" in "\n".join(_receive(sock, "STOPPING=1", timeout=10))
