"""`xrd-agent status / result / expect / subscribe` against a real agent subprocess, and the
control ops `by_sample` and `health` behind them (cosine engine on the tiny library)."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import wait_until as wait

from xrd_agent import messages
from xrd_agent.client import ControlClient
from xrd_agent.library.artifact import Library
from xrd_agent.testing.agent import AgentProcess, agent_config, write_config
from xrd_agent.testing.library import save_tiny_library
from xrd_agent.testing.simulated_d8 import SimulatedD8


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xrd_agent", *args], capture_output=True, text=True,
                          timeout=timeout)




def free_endpoint() -> str:
    """A loopback port nobody listens on (bound, read, released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


class Lab:
    def __init__(self, root: Path, library_dir: Path) -> None:
        self.root = root
        self.export = root / "export"
        self.export.mkdir()
        settings = agent_config(root, model={"engine": "cosine", "library_dir": str(library_dir)},
                                watch={"mode": "polling"})
        self.agent = AgentProcess(write_config(root / "agent.toml", settings), root / "state")
        self.d8 = SimulatedD8(self.export, Library.load(library_dir), seed=11)

    def by_sample(self, sample_id: str) -> list[dict]:
        client = ControlClient(self.agent.control)
        try:
            return client.by_sample(sample_id)["messages"]
        finally:
            client.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    library_dir = save_tiny_library(root / "tiny")
    site = Lab(root, library_dir)
    with site.agent:
        site.agent.start()
        yield site
        site.agent.stop()


def test_status_is_0_when_ready_and_prints_versions(lab):
    done = cli("status", "--control", lab.agent.control)
    assert done.returncode == 0, done.stderr
    assert "state          ready" in done.stdout and "library" in done.stdout
    health = json.loads(cli("status", "--control", lab.agent.control, "--json").stdout)
    messages.validate_reply(health)
    assert health["healthy"] is True and health["reasons"] == [] and health["library_version"]


def test_status_via_the_state_folder(lab):
    done = cli("status", "--state", str(lab.agent.state_dir))
    assert done.returncode == 0, done.stderr


def test_status_is_2_when_nothing_answers():
    done = cli("status", "--control", free_endpoint(), "--timeout", "0.5")
    assert done.returncode == 2
    assert "no xrd-agent answers" in done.stderr and done.stderr.count("\n") == 1


def test_subscribe_exits_non_zero_when_nothing_answers():
    endpoint = free_endpoint()
    done = cli("subscribe", "--pub", endpoint, "--control", endpoint, "--timeout", "5")
    assert done.returncode == 2
    assert "no xrd-agent answers" in done.stderr


def test_expect_result_and_by_sample_newest_first(lab):
    done = cli("expect", "S-77", "TSTMOF02", "--elements", "Zn", "C", "N", "--control", lab.agent.control)
    assert done.returncode == 0, done.stderr
    assert "S-77: expecting TSTMOF02" in done.stdout and "elements Zn C N" in done.stdout
    lab.d8.export("S-77.xy", lab.d8.measure("S-77", ["TSTMOF05"]))  # not what was expected
    found = wait(lambda: len(lab.by_sample("S-77")) >= 2 and lab.by_sample("S-77"), what="S-77 recorded")
    seqs = [m["seq"] for m in found]
    assert seqs == sorted(seqs, reverse=True)  # newest first
    topics = {m["topic"] for m in found}
    assert topics == {messages.IDENTIFICATION, messages.ALERT}
    assert any(m["topic"] == messages.ALERT and m["reason"] == "expected_phase_missing" for m in found)
    for m in found:
        messages.validate(m)

    done = cli("result", "S-77", "--control", lab.agent.control)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "ALERT" in lines[0] and "expected_phase_missing" in lines[0]  # the alert came after
    assert re.search(r"identification S-77: TESTMOF-05 [0-9.]+ \(TSTMOF05\)", lines[-1]), lines[-1]
    as_json = [json.loads(line) for line in cli("result", "S-77", "--json", "--control", lab.agent.control).stdout.splitlines()]
    assert [m["seq"] for m in as_json] == seqs


def test_result_of_an_unknown_sample_is_1(lab):
    done = cli("result", "NO-SUCH-SAMPLE", "--control", lab.agent.control)
    assert done.returncode == 1 and "no results for sample 'NO-SUCH-SAMPLE'" in done.stderr


def test_expect_refuses_what_is_not_an_element(lab):
    done = cli("expect", "S-78", "TSTMOF02", "--elements", "zinc", "--control", lab.agent.control)
    assert done.returncode == 2 and "not an element symbol" in done.stderr


def test_by_sample_refuses_a_bad_request(lab):
    client = ControlClient(lab.agent.control)
    try:
        with pytest.raises(Exception, match="sample_id"):
            client.request({"op": "by_sample", "sample_id": ""})
    finally:
        client.close()


def test_status_is_1_with_the_reason_when_the_export_folder_vanishes(lab):
    away = lab.root / "export-away"
    lab.export.rename(away)
    try:
        def degraded():
            done = cli("status", "--control", lab.agent.control)
            return done if done.returncode == 1 else None

        done = wait(degraded, what="status degraded")
        assert "state          degraded" in done.stdout
        assert "export folder" in done.stdout and "missing" in done.stdout
    finally:
        away.rename(lab.export)
    wait(lambda: cli("status", "--control", lab.agent.control).returncode == 0, what="ready again")
