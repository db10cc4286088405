"""Run a real ``xrd-agent run`` subprocess on a temporary export folder and state dir.

Used by the tests and by ``xrd-agent demo``. Sockets bind to ``tcp://127.0.0.1:*`` (free
ports chosen by the kernel, no races); the agent writes the real addresses to
``<state>/endpoints.json``, which :meth:`AgentProcess.start` waits for.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from xrd_agent.config import _toml_value

ENDPOINTS_FILE = "endpoints.json"


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports. The sockets are bound together before any closes: two
    one-at-a-time probes may be handed the same port by the kernel, and an agent given it for
    both its PUB and control sockets cannot start (a burst test failed so, once)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    """A TOML configuration file from nested dicts (tables inside a section become sub-tables)."""
    lines: list[str] = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        tables = {k: v for k, v in values.items() if isinstance(v, dict)}
        for key, value in values.items():
            if key not in tables:
                lines.append(f"{key} = {_toml_value(value)}")
        for key, table in tables.items():
            lines.append(f"[{section}.{key}]")
            lines.extend(f'"{k}" = {_toml_value(v)}' for k, v in table.items())
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def agent_config(root: Path, **sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Settings for a test or demo agent under ``root``: quick timings, free loopback ports."""
    base: dict[str, dict[str, Any]] = {
        "service": {"state_dir": str(root / "state"), "agent_id": "xrd-agent-test", "instrument_id": "simulated-d8"},
        "watch": {"directory": str(root / "export"), "settle_s": 0.5, "max_settle_s": 0.5, "rescan_interval_s": 2.0,
                  "poll_interval_s": 0.2, "incomplete_timeout_s": 5.0},
        "publish": {"pub_endpoint": "tcp://127.0.0.1:*", "control_endpoint": "tcp://127.0.0.1:*",
                    "heartbeat_s": 1.0},
        "model": {},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return base


class AgentProcess:
    """One ``xrd-agent run`` child process."""

    def __init__(self, config_file: Path, state_dir: Path, *, log_file: Path | None = None,
                 env: dict[str, str] | None = None, extra_args: tuple[str, ...] = ()) -> None:
        self.config_file = Path(config_file)
        self.state_dir = Path(state_dir)
        self.log_file = log_file or self.state_dir.parent / "agent.log"
        self.env = env
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None
        self.endpoints: dict[str, Any] = {}

    @property
    def pub(self) -> str:
        return str(self.endpoints["pub"])

    @property
    def control(self) -> str:
        return str(self.endpoints["control"])

    def start(self, timeout: float = 60.0) -> AgentProcess:
        (self.state_dir / ENDPOINTS_FILE).unlink(missing_ok=True)
        env = {**os.environ, **(self.env or {})}
        env.pop("JOURNAL_STREAM", None)
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "xrd_agent", "run", "--config", str(self.config_file), *self.extra_args],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        """Until the agent has bound its sockets and reports ``ready`` (or ``degraded``)."""
        from xrd_agent.client import ControlClient
        from xrd_agent.errors import ControlError

        deadline = time.monotonic() + timeout
        path = self.state_dir / ENDPOINTS_FILE
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"xrd-agent run exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                time.sleep(0.05)
                continue
            if self.proc is not None and data.get("pid") != self.proc.pid:
                time.sleep(0.05)
                continue
            self.endpoints = data
            client = ControlClient(self.control, timeout_s=2.0)
            try:
                state = client.status()["state"]
            except ControlError:
                state = None
            finally:
                client.close()
            if state in ("ready", "degraded"):
                return
            time.sleep(0.1)
        raise TimeoutError(f"xrd-agent run not ready after {timeout} s:\n{self.log_tail()}")

    def signal(self, signum: int) -> None:
        if self.proc is not None:
            self.proc.send_signal(signum)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait: the agent drains its queue and exits 0."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill(self) -> None:
        """kill -9: no chance to clean up (a crash, a power cut of the process)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def __enter__(self) -> AgentProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
