"""Start-up errors are one line that says what to do: a port in use (naming the process that
holds it), an unusable endpoint. (The unwritable state folder needs a non-root user: see
tests/test_install.py.)"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from xrd_agent.service import startup


def run_agent(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "export").mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-m", "xrd_agent", "run", "--watch", str(tmp_path / "export"),
                           "--state", str(tmp_path / "state"), "--engine", "cosine", *args],
                          capture_output=True, text=True, timeout=120)


def test_port_holder_finds_this_process_listening():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert startup.port_holder(port)[0] == os.getpid()
    assert startup.port_holder(port) is None


def test_port_in_use_names_the_process_in_one_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        done = run_agent(tmp_path, "--pub", f"tcp://127.0.0.1:{port}", "--control", "tcp://127.0.0.1:*")
    assert done.returncode == 2
    line = done.stderr.strip()
    assert "\n" not in line and "Traceback" not in done.stderr
    assert f"cannot listen on tcp://127.0.0.1:{port}: process {os.getpid()} (" in line
    assert "publish.pub_endpoint or --pub" in line


def test_control_port_in_use_too(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        done = run_agent(tmp_path, "--pub", "tcp://127.0.0.1:*", "--control", f"tcp://127.0.0.1:{port}")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"process {os.getpid()}" in done.stderr and "--control" in done.stderr


def test_an_address_the_machine_does_not_have(tmp_path):
    done = run_agent(tmp_path, "--pub", "tcp://192.0.2.1:5556", "--control", "tcp://127.0.0.1:*")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "no such address" in done.stderr


def test_state_folder_that_is_a_file(tmp_path):
    (tmp_path / "state").write_text("not a folder")
    done = run_agent(tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "state" in done.stderr and "service.state_dir" in done.stderr
