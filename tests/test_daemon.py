"""The real service: ``xrd-agent run`` subprocesses, real observers, real ZeroMQ subscribers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import wait_until as _wait

from xrd_agent import messages
from xrd_agent.client import ControlClient
from xrd_agent.errors import ControlError
from xrd_agent.library.artifact import Library
from xrd_agent.service.ledger import Ledger
from xrd_agent.testing.agent import AgentProcess, agent_config, free_ports, write_config
from xrd_agent.testing.capture import Capture
from xrd_agent.testing.library import save_tiny_library
from xrd_agent.testing.simulated_d8 import SimulatedD8


@pytest.fixture(scope="module")
def library_dir(tmp_path_factory) -> Path:
    return save_tiny_library(tmp_path_factory.mktemp("lib") / "tiny")


class Site:
    """A lab PC: export folder, state dir, config, the agent process and the instrument."""

    def __init__(self, root: Path, library_dir: Path, **sections) -> None:
        self.root = root
        self.export = root / "export"
        self.export.mkdir(exist_ok=True)
        model = {"engine": "cosine", "library_dir": str(library_dir), **sections.pop("model", {})}
        self.settings = agent_config(root, model=model, **sections)
        self.config = write_config(root / "agent.toml", self.settings)
        self.agent = AgentProcess(self.config, root / "state")
        self.d8 = SimulatedD8(self.export, Library.load(library_dir), seed=5)

    def rewrite_config(self, **sections) -> None:
        for name, values in sections.items():
            self.settings.setdefault(name, {}).update(values)
        write_config(self.config, self.settings)

    def ledger_scans(self) -> list[dict]:
        ledger = Ledger(self.root / "state")
        try:
            return ledger.scans()
        finally:
            ledger.close()

    def ledger_messages(self) -> list[dict]:
        ledger = Ledger(self.root / "state")
        try:
            return ledger.replay(0, 10_000)[0]
        finally:
            ledger.close()




def test_staged_exports_are_identified_once_and_reach_a_subscriber_process(tmp_path, library_dir):
    site = Site(tmp_path, library_dir)
    with site.agent:
        site.agent.start()
        sub = subprocess.Popen(
            [sys.executable, "-m", "xrd_agent", "subscribe", "--pub", site.agent.pub, "--control", site.agent.control,
             "--json", "--since", "0", "--topics", "xrd.identification", "--count", "3", "--timeout", "90"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        site.d8.export("S-1.raw", site.d8.measure("S-1", ["TSTMOF01"]))
        site.d8.export("S-2.brml", site.d8.measure("S-2", ["TSTMOF02"]))
        site.d8.export("S-3.xy", site.d8.measure("S-3", ["TSTMOF03"]))
        out, err = sub.communicate(timeout=120)
        assert sub.returncode == 0, err
        received = [json.loads(line) for line in out.splitlines() if line.strip()]
        assert sorted(m["sample_id"] for m in received) == ["S-1", "S-2", "S-3"]
        assert [m["result"]["top"][0]["refcode"] for m in sorted(received, key=lambda m: m["sample_id"])] == [
            "TSTMOF01", "TSTMOF02", "TSTMOF03"]
        time.sleep(2.5)  # two reconciliation scans later: still one outcome per file
        assert site.agent.stop() == 0
    scans = site.ledger_scans()
    assert sorted(Path(s["path"]).name for s in scans) == ["S-1.raw", "S-2.brml", "S-3.xy"]
    states = [m["state"] for m in site.ledger_messages() if m["topic"] == messages.STATUS]
    assert states[0] == "starting" and "ready" in states and states[-2:] == ["draining", "stopped"]


def test_kill_9_and_restart_loses_nothing_and_duplicates_nothing(tmp_path, library_dir):
    site = Site(tmp_path, library_dir)
    names = []
    with site.agent:
        site.agent.start()
        for i in range(3):
            names.append(site.d8.export(f"A-{i}.raw", site.d8.measure(f"A-{i}", ["TSTMOF04"])).path.name)
        _wait(lambda: len(site.ledger_scans()) >= 1, what="first scan recorded")
        site.agent.kill()  # in the middle of things: some scans done, maybe one half-way
        seq_before = max(m["seq"] for m in site.ledger_messages())
        for i in range(3):  # scans keep arriving while the agent is down
            names.append(site.d8.export(f"B-{i}.brml", site.d8.measure(f"B-{i}", ["TSTMOF05"])).path.name)
        site.agent.start()
        _wait(lambda: len(site.ledger_scans()) == 6, what="all six scans recorded")
        with Capture(site.agent.pub, site.agent.control, since_seq=0) as cap:
            events = cap.wait_for(lambda ev: len([e for e in ev if e.topic == messages.IDENTIFICATION]) >= 6)
        assert site.agent.stop() == 0
    scans = site.ledger_scans()
    assert Counter(Path(s["path"]).name for s in scans) == Counter({n: 1 for n in names})
    seqs = [e.seq for e in events]
    assert seqs == sorted(set(seqs))  # each once, in order
    assert min(s["seq"] for s in scans if Path(s["path"]).name.startswith("B-")) > seq_before
    idents = [e for e in events if e.topic == messages.IDENTIFICATION]
    assert sorted(Path(e.path).name for e in idents) == sorted(names)


def test_a_late_subscriber_gets_the_gap_by_replay(tmp_path, library_dir):
    site = Site(tmp_path, library_dir)
    with site.agent:
        site.agent.start()
        for i in range(3):
            site.d8.export(f"G-{i}.raw", site.d8.measure(f"G-{i}", ["TSTMOF06"]))
        _wait(lambda: len(site.ledger_scans()) == 3, what="three scans recorded")
        # published long before this subscriber existed: only replay can deliver them
        with Capture(site.agent.pub, site.agent.control, since_seq=0) as cap:
            site.d8.export("G-3.raw", site.d8.measure("G-3", ["TSTMOF07"]))
            cap.wait_for(lambda ev: len([e for e in ev if e.topic == messages.IDENTIFICATION]) == 4)
            seqs = [e.seq for e in cap.events]
            assert seqs == list(range(1, len(seqs) + 1))  # gap-free from 1
        site.agent.stop()


def test_alerts_from_the_service_and_expect_over_the_control_socket(tmp_path, library_dir):
    site = Site(tmp_path, library_dir)
    with site.agent:
        site.agent.start()
        client = ControlClient(site.agent.control, timeout_s=5)
        reply = client.expect("E-1", ["TSTMOF09"], top_k=1)
        assert reply["ok"] and reply["phases"] == ["TSTMOF09"]
        # a name the library does not hold is refused with the closest library names
        with pytest.raises(ControlError, match="not a material of the library; closest library names: TESTMOF-"):
            client.expect("E-2", ["TESTMOF-99"])
        client.close()
        with Capture(site.agent.pub, site.agent.control, since_seq=0) as cap:
            site.d8.export("E-1.raw", site.d8.measure("E-1", ["TSTMOF02"]))
            site.d8.export("F-1.brml", site.d8.measure("F-1", kind="amorphous"))
            site.d8.export_unreadable("U-1.raw", "U-1")
            site.d8.export("X-1.raw", site.d8.measure("X-1", kind="unknown"))
            wanted = {"expected_phase_missing", "amorphous", "unreadable", "unknown_phase"}
            events = cap.wait_for(lambda ev: wanted <= {getattr(e, "reason", None) for e in ev})
        assert any(e.topic == messages.REJECTED for e in events)
        assert site.agent.stop() == 0


def test_sigterm_drains_and_a_restart_finishes_the_rest(tmp_path, library_dir):
    site = Site(tmp_path, library_dir)
    paths = []
    with site.agent:
        site.agent.start()
        for i in range(8):
            paths.append(site.d8.export(f"T-{i}.raw", site.d8.measure(f"T-{i}", ["TSTMOF08"])).path)
        _wait(lambda: site.ledger_scans(), what="processing started")
        assert site.agent.stop() == 0  # SIGTERM
        done_at_stop = {s["path"] for s in site.ledger_scans()}
        states = [m["state"] for m in site.ledger_messages() if m["topic"] == messages.STATUS]
        assert states[-2:] == ["draining", "stopped"]
        assert "stopped cleanly" in site.agent.log_tail(20_000) or states[-1] == "stopped"
        site.agent.start()
        _wait(lambda: len(site.ledger_scans()) == 8, what="the rest processed after restart")
        site.agent.stop()
    scans = site.ledger_scans()
    assert Counter(s["path"] for s in scans) == Counter({str(p): 1 for p in paths})
    assert done_at_stop <= {s["path"] for s in scans}


def test_sighup_reloads_expectations_and_the_watch_folder(tmp_path, library_dir):
    site = Site(tmp_path, library_dir)
    with site.agent:
        site.agent.start()
        second = tmp_path / "export-2"
        second.mkdir()
        site.rewrite_config(service={"expectations": {"H-1": ["TESTMOF-10"]}}, watch={"directory": str(second)},
                            model={"top_k": 1})
        site.agent.signal(signal.SIGHUP)
        _wait(lambda: any(m.get("state") == "reloading" for m in site.ledger_messages()), what="reloading status")
        _wait(lambda: [m for m in site.ledger_messages() if m.get("state") == "ready"
                       and "reloaded" in m.get("detail", "")], what="ready after reload")
        d8 = SimulatedD8(second, site.d8.library, seed=9)
        d8.export("H-1.raw", d8.measure("H-1", ["TSTMOF01"]), top_k=1)
        alerts = _wait(lambda: [m for m in site.ledger_messages() if m.get("reason") == "expected_phase_missing"],
                       what="alert from the reloaded expectation")
        assert alerts[0]["path"] == str(second / "H-1.raw")
        assert len(alerts[0]["result"]["top"]) == 1  # the new Top-k applies without a restart
        # a broken configuration is refused and the running one kept
        site.config.write_text("[watch]\nno_such_setting = 1\n")
        site.agent.signal(signal.SIGHUP)
        _wait(lambda: "configuration not reloaded" in site.agent.log_tail(20_000), what="refusal logged")
        assert site.agent.proc.poll() is None
        assert site.agent.stop() == 0


def test_the_export_folder_vanishing_and_returning(tmp_path, library_dir):
    site = Site(tmp_path, library_dir)
    with site.agent:
        site.agent.start()
        away = tmp_path / "unmounted"
        site.export.rename(away)
        _wait(lambda: [m for m in site.ledger_messages() if m.get("reason") == "folder_missing"], what="folder_missing")
        client = ControlClient(site.agent.control, timeout_s=5)
        assert client.status()["state"] == "degraded"
        d8 = SimulatedD8(away, site.d8.library, seed=3)
        d8.export("M-1.raw", d8.measure("M-1", ["TSTMOF02"]))
        away.rename(site.export)
        _wait(lambda: [m for m in site.ledger_messages() if m.get("reason") == "folder_restored"], what="restored")
        _wait(lambda: site.ledger_scans(), what="the scan written while away")
        assert client.status()["state"] == "ready"
        client.close()
        assert site.agent.stop() == 0
    (scan,) = site.ledger_scans()
    assert scan["path"] == str(site.export / "M-1.raw")


def test_config_command_prints_defaults_and_checks_files(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "xrd_agent", "config", *a],  # noqa: E731
                                    capture_output=True, text=True, timeout=60)
    out = run("--defaults")
    assert out.returncode == 0 and "[watch]" in out.stdout and "incomplete_timeout_s" in out.stdout
    good = tmp_path / "good.toml"
    good.write_text(out.stdout)
    assert run("--check", str(good)).returncode == 0
    bad = tmp_path / "bad.toml"
    bad.write_text('[watch]\nsettle = "two seconds"\n')
    res = run("--check", str(bad))
    assert res.returncode == 2 and "settle" in res.stderr and "Traceback" not in res.stderr


def test_a_second_agent_on_the_same_state_dir_is_refused(tmp_path, library_dir):
    site = Site(tmp_path, library_dir)
    with site.agent:
        site.agent.start()
        res = subprocess.run([sys.executable, "-m", "xrd_agent", "run", "--config", str(site.config)],
                             capture_output=True, text=True, timeout=60, env={**os.environ})
        assert res.returncode == 2 and "already running" in res.stderr
        site.agent.stop()


REPO = Path(__file__).resolve().parents[1]


def test_the_example_configuration_is_valid():
    from xrd_agent.config import load_config

    config = load_config(REPO / "systemd" / "xrd-agent.toml")
    assert config.service.state_dir == "/var/lib/xrd-agent"
    assert config.service.expectations == {"S-042": ["FIQCEN"]}


def test_the_unit_file_is_hardened_and_matches_the_example_configuration():
    import configparser
    import re
    import shutil

    text = (REPO / "systemd" / "xrd-agent.service").read_text()
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(text)
    svc = unit["Service"]
    assert svc["Type"] == "notify" and svc["StateDirectory"] == "xrd-agent" and svc["User"] == "xrd-agent"
    assert svc["ReadOnlyPaths"] == "/srv/d8-export" == unit["Unit"]["RequiresMountsFor"]
    for key in ("WatchdogSec", "TimeoutStartSec", "ProtectSystem", "ProtectHome", "PrivateTmp", "NoNewPrivileges",
                "SystemCallFilter", "CapabilityBoundingSet"):
        assert key in svc
    assert svc["Restart"] == "on-failure"
    assert svc["RestrictAddressFamilies"] == "AF_UNIX AF_INET AF_INET6"
    assert not re.search(r"^\s*(MemoryDenyWriteExecute|PrivateDevices)\s*=", text, re.M)
    if shutil.which("systemd-analyze"):
        res = subprocess.run(["systemd-analyze", "security", "--offline=true", str(REPO / "systemd" / "xrd-agent.service")],
                             capture_output=True, text=True, timeout=60)
        level = re.search(r"Overall exposure level for \S+: ([0-9.]+)", res.stdout + res.stderr)
        assert level and float(level.group(1)) <= 2.0, res.stdout[-2000:]


def _one_identification(site: Site, name: str, refcode: str) -> dict:
    """Start the agent, export one scan of ``refcode``, stop once it is identified: its message."""
    with site.agent:
        site.agent.start(timeout=180)
        site.d8.export(name, site.d8.measure(Path(name).stem, [refcode]))
        _wait(lambda: site.ledger_scans(), what=f"{name} identified")
        assert site.agent.stop() == 0
    return next(m for m in site.ledger_messages() if m["topic"] == messages.IDENTIFICATION)


def test_the_trained_cnn_engine_runs_in_the_service(tmp_path, library_dir):
    """The product path: a (tiny) CNN trained with the project's own training code, loaded by
    the service, identifies a scan; its model version is in every message."""
    pytest.importorskip("tensorflow")
    from xrd_agent.model.train import TrainConfig, train

    library = Library.load(library_dir)
    model_dir = tmp_path / "model"
    result = train(library, TrainConfig(epochs=3, per_class=16, batch_size=32, augment={"bank_noise": 0.0}),
                   model_dir, command="pytest", progress=False, emit=lambda s: None)
    site = Site(tmp_path, library_dir, model={"engine": "cnn", "model_dir": str(model_dir), "batch_sizes": [1, 8]})
    ident = _one_identification(site, "C-1.brml", "TSTMOF03")
    assert ident["model_version"] == result.manifest.version != ""
    assert ident["library_version"] == library.version
    assert len(ident["result"]["top"]) == 5


def test_auto_takes_the_network_only_over_the_library_it_was_trained_on(tmp_path, library_dir):
    from xrd_agent.config import load_config
    from xrd_agent.service.engines import choose

    shipped = Path(__file__).resolve().parents[1] / "xrd_agent" / "data" / "library"

    def engine(**model) -> str:
        return choose(load_config(write_config(tmp_path / "c.toml", agent_config(tmp_path, model=model))))

    assert engine(engine="auto") == "cnn"
    assert engine(engine="auto", library_dir=str(shipped)) == "cnn"
    assert engine(engine="auto", library_dir=str(library_dir)) == "cosine"
    assert engine(engine="cnn", library_dir=str(library_dir)) == "cnn"  # asked for: its load says why not


def test_a_lab_library_under_auto_starts_the_service_on_search_match(tmp_path, library_dir):
    """``engine = "auto"`` with the lab's own library, on which the installed network was not
    trained: the service starts and answers by search-match (it refused to start)."""
    ident = _one_identification(Site(tmp_path, library_dir, model={"engine": "auto"}), "L-1.xy", "TSTMOF02")
    assert ident["model_version"].startswith("cosine")
    assert ident["result"]["top"][0]["refcode"] == "TSTMOF02"


def test_an_engine_that_cannot_load_fails_the_start_cleanly(tmp_path):
    empty = tmp_path / "no-library"
    empty.mkdir()
    (tmp_path / "export").mkdir()
    config = write_config(tmp_path / "agent.toml",
                          agent_config(tmp_path, model={"engine": "cosine", "library_dir": str(empty)}))
    res = subprocess.run([sys.executable, "-m", "xrd_agent", "run", "--config", str(config)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "no readable library" in res.stderr
    ledger = Ledger(tmp_path / "state")
    states = [(m["state"], m["detail"]) for m in ledger.replay(0, 100)[0] if m["topic"] == messages.STATUS]
    assert states[-1][0] == "stopped" and "could not be loaded" in states[-1][1]


def test_free_ports_are_distinct_and_free():
    """The harness's PUB and control ports: probed one at a time, the kernel may hand out one
    port twice, and the agent then cannot bind its second socket."""
    import socket

    ports = free_ports(16)
    assert len(set(ports)) == 16
    socks = [socket.socket() for _ in ports]
    try:
        for s, p in zip(socks, ports):
            s.bind(("127.0.0.1", p))
    finally:
        for s in socks:
            s.close()


def test_sighup_moves_the_sockets_to_new_addresses(tmp_path, library_dir):
    site = Site(tmp_path, library_dir)
    with site.agent:
        site.agent.start()
        old_pub = site.agent.pub
        pub, control = (f"tcp://127.0.0.1:{p}" for p in free_ports(2))
        site.rewrite_config(publish={"pub_endpoint": pub, "control_endpoint": control})
        site.agent.signal(signal.SIGHUP)
        endpoints = site.root / "state" / "endpoints.json"
        _wait(lambda: json.loads(endpoints.read_text())["pub"] == pub, what="new endpoints written")
        assert pub != old_pub
        with Capture(pub, control, since_seq=0, topics=messages.TOPICS) as cap:
            site.d8.export("R-1.raw", site.d8.measure("R-1", ["TSTMOF11"]))
            cap.wait_for(lambda ev: any(e.topic == messages.IDENTIFICATION for e in ev))
            # heartbeats are never replayed: one arriving proves the new PUB socket is live
            cap.wait_for(lambda ev: any(e.topic == messages.HEARTBEAT for e in ev), timeout=10)
        # the same PUB address again, only the control socket moves: close, re-bind, carry on
        control2 = f"tcp://127.0.0.1:{free_ports(1)[0]}"
        site.rewrite_config(publish={"pub_endpoint": pub, "control_endpoint": control2})
        site.agent.signal(signal.SIGHUP)
        _wait(lambda: json.loads(endpoints.read_text())["control"] == control2, what="control moved")
        with Capture(pub, control2, since_seq=0, topics=messages.TOPICS) as cap:
            cap.wait_for(lambda ev: any(e.topic == messages.IDENTIFICATION for e in ev))
            cap.wait_for(lambda ev: any(e.topic == messages.HEARTBEAT for e in ev), timeout=10)
        assert site.agent.stop() == 0


def test_sighup_turns_on_curve_on_the_same_addresses(tmp_path, library_dir):
    from xrd_agent.service.security import CurveClientKeys, generate_keys

    pub, control = (f"tcp://127.0.0.1:{p}" for p in free_ports(2))
    site = Site(tmp_path, library_dir, publish={"pub_endpoint": pub, "control_endpoint": control})
    keys = generate_keys(tmp_path / "keys", "robot")
    with site.agent:
        site.agent.start()
        site.rewrite_config(publish={"curve_secret_key": str(keys.server_secret),
                                     "curve_allowed_dir": str(keys.allowed_public.parent)})
        site.agent.signal(signal.SIGHUP)
        _wait(lambda: "sockets re-bound" in site.agent.log_tail(50_000), what="sockets re-bound")
        robot = CurveClientKeys.from_files(keys.client_secret, keys.server_public)
        with Capture(pub, control, since_seq=0, topics=messages.TOPICS, curve_client_keys=robot) as cap:
            site.d8.export("K-1.raw", site.d8.measure("K-1", ["TSTMOF12"]))
            cap.wait_for(lambda ev: any(e.topic == messages.IDENTIFICATION for e in ev))
            cap.wait_for(lambda ev: any(e.topic == messages.HEARTBEAT for e in ev), timeout=10)
        stranger = ControlClient(control, timeout_s=2)
        with pytest.raises(ControlError):
            stranger.status()  # no key, no answer: the same address now demands CURVE
        stranger.close()
        assert site.agent.stop() == 0


def test_polling_mode_from_the_command_line(tmp_path, library_dir):
    site = Site(tmp_path, library_dir)
    site.agent.extra_args = ("--polling",)
    with site.agent:
        site.agent.start()
        client = ControlClient(site.agent.control, timeout_s=5)
        assert "(polling)" in client.status()["detail"]
        client.close()
        site.d8.export("P-1.brml", site.d8.measure("P-1", ["TSTMOF04"]))
        _wait(lambda: site.ledger_scans(), what="the scan found by polling")
        assert site.agent.stop() == 0


def test_a_named_pipe_in_the_folder_is_rejected_without_hanging_anything(tmp_path, library_dir):
    site = Site(tmp_path, library_dir)
    with site.agent:
        site.agent.start()
        os.mkfifo(site.export / "S-1.raw")  # opening it to read would block for ever
        site.d8.export("S-2.raw", site.d8.measure("S-2", ["TSTMOF05"]))
        _wait(lambda: len(site.ledger_scans()) == 2, what="both files have an outcome")
        assert site.agent.stop() == 0
    outcomes = {Path(s["path"]).name: s["outcome"] for s in site.ledger_scans()}
    assert outcomes == {"S-1.raw": "rejected", "S-2.raw": "identified"}
    (rejected,) = [m for m in site.ledger_messages() if m["topic"] == messages.REJECTED]
    assert rejected["error"] == "not_a_file" and "named pipe" in rejected["reason"]


def test_every_real_instrument_export_gets_exactly_one_outcome(tmp_path, library_dir, fixtures_dir):
    import shutil

    site = Site(tmp_path, library_dir, service={"default_anode": "Cu"})
    files = sorted(p for p in fixtures_dir.iterdir() if p.name not in {"README.md", "expected.json"})
    with site.agent:
        site.agent.start()
        for f in files:
            shutil.copyfile(f, site.export / f.name)
        _wait(lambda: len(site.ledger_scans()) == len(files), timeout=120, what="an outcome for every fixture")
        assert site.agent.stop() == 0
    outcomes = Counter(Path(s["path"]).name for s in site.ledger_scans())
    assert outcomes == Counter({f.name: 1 for f in files})
    idents = {Path(m["path"]).name: m for m in site.ledger_messages() if m["topic"] == messages.IDENTIFICATION}
    assert "Si-Std_SRM640d_D8D_20-97_7_16hm.brml" in idents and "TwoTheta_scan_scrambled.raw" in idents
    # none of these standards and alloys is a MOF of the library: none may be named with trust
    assert all({"unknown_phase", "amorphous"} & set(m["result"]["flags"]) for m in idents.values())
