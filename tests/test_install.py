"""The lab-PC install path of docs/install.md, as far as one machine can check it: a wheel of
the project installed runtime-only into a fresh venv under an /opt-like prefix, whose Python is
not under anyone's home, run by a non-root system user; the agent starts from it and answers
`xrd-agent status`, and an unwritable state folder is one line naming the user and the fix.

Practical shortcut (no network, no minutes of TensorFlow download): the fresh venv gets the
project's wheel with --no-deps, and a .pth line makes the heavy dependencies of the running
interpreter's site-packages importable (what `pip install --no-index --find-links WHEELHOUSE`
would have installed into the venv itself)."""

from __future__ import annotations

import grp
import json
import os
import re
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
import zipfile
from pathlib import Path

import pytest

from xrd_agent.client import ControlClient
from xrd_agent.errors import ControlError
from xrd_agent.library.artifact import Library
from xrd_agent.testing.agent import agent_config, write_config
from xrd_agent.testing.library import save_tiny_library
from xrd_agent.testing.simulated_d8 import SimulatedD8

REPO = Path(__file__).resolve().parents[1]
USER = "xrd-agent-test"
SYSTEM_PYTHON = Path("/usr/bin/python3")
UNIT = REPO / "systemd" / "xrd-agent.service"


def test_the_unit_runs_a_venv_under_opt_as_its_own_user():
    text = UNIT.read_text()
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    binary = exec_start.split("=", 1)[1].split()[0]
    assert binary.startswith("/opt/xrd-agent/") and binary.endswith("/bin/xrd-agent")
    assert not binary.startswith(("/home", "/root")) and "ProtectHome=yes" in text
    assert "User=xrd-agent" in text and "StateDirectory=xrd-agent" in text
    assert "ReadOnlyPaths=" in text
    guide = (REPO / "docs" / "install.md").read_text()
    assert binary in guide  # the guide creates the venv the unit runs


def _world_traversable(path: Path) -> bool:
    for part in [path, *path.parents]:
        if part.exists() and not part.stat().st_mode & stat.S_IXOTH:
            return False
    return True


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    """(prefix, venv, user) with the project installed runtime-only into the venv."""
    if os.geteuid() != 0:
        pytest.skip("creating a system user and running the agent as it needs root")
    if not SYSTEM_PYTHON.exists() or shutil.which("setpriv") is None or shutil.which("useradd") is None:
        pytest.skip("needs /usr/bin/python3, setpriv and useradd (util-linux, passwd)")
    version = subprocess.run([str(SYSTEM_PYTHON), "-c", "import sys; print(sys.version_info[:2])"],
                             capture_output=True, text=True).stdout.strip()
    if version != str(tuple(sys.version_info[:2])):
        pytest.skip(f"/usr/bin/python3 is {version}, the test interpreter {sys.version_info[:2]}: "
                    "the dependencies cannot be shared")
    base = Path(sysconfig.get_paths()["purelib"])
    if not _world_traversable(base):
        pytest.skip(f"{base} is not readable by other users: the dependencies cannot be shared")

    created_user = False
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", USER], check=True)
        created_user = True
    root = Path(tempfile.mkdtemp(prefix="xrd-install-", dir="/tmp"))
    root.chmod(0o755)
    try:
        # the wheel, built from a copy of the sources (an in-tree build would write into the repo)
        src = root / "src"
        src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(REPO / name, src / name)
        shutil.copytree(REPO / "xrd_agent", src / "xrd_agent",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        wheelhouse = root / "wheelhouse"
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "-w", str(wheelhouse), str(src)], check=True, timeout=600)
        prefix = root / "opt" / "xrd-agent"
        venv = prefix / "venv"
        subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", "--without-pip", str(venv)], check=True)
        purelib = subprocess.run([str(venv / "bin" / "python"), "-c",
                                  "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                        "--no-deps", "--no-index", "--find-links", str(wheelhouse), "xrd-agent"],
                       check=True, timeout=600, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
        # only now: pip must neither see the base's xrd-agent as "already installed" nor touch it
        Path(purelib, "zz-shared-dependencies.pth").write_text(f"{base}\n")
        for path in [root, *root.rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)
        yield root, venv, pwd.getpwnam(USER)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if created_user:
            subprocess.run(["userdel", USER], check=False)


def as_user(user: pwd.struct_passwd, *argv: str, **kwargs):
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "LANG": "C.UTF-8"}
    command = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", *argv]
    return command, env


def test_the_wheel_pulls_no_dev_eval_or_library_extras(runtime):
    root, _, _ = runtime
    wheel = next((root / "wheelhouse").glob("xrd_agent-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        metadata = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    base = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
    agent = [line for line in metadata.splitlines() if "extra == \"agent\"" in line or "extra == 'agent'" in line]
    assert base and agent
    for heavy in ("pytest", "pymatgen", "core-mof", "scikit-learn", "playwright", "hypothesis"):
        assert not any(heavy in line for line in base + agent), heavy


def test_the_agent_runs_from_the_venv_as_a_system_user(runtime):
    root, venv, user = runtime
    site = root / "site"
    export, state = site / "srv" / "d8-export", site / "var" / "lib" / "xrd-agent"
    export.mkdir(parents=True)
    state.mkdir(parents=True)
    os.chown(state, user.pw_uid, user.pw_gid)
    state.chmod(0o750)
    library_dir = save_tiny_library(site / "library")
    for path in [site, *site.rglob("*")]:
        if path.is_dir() and path != state:
            path.chmod(0o755)
        elif path.is_file():
            path.chmod(0o644)
    settings = agent_config(site, model={"engine": "cosine", "library_dir": str(library_dir)},
                            watch={"mode": "polling"}, http={"enabled": True, "port": 0})
    settings["service"]["state_dir"] = str(state)
    settings["watch"]["directory"] = str(export)
    config = write_config(site / "xrd-agent.toml", settings)
    config.chmod(0o644)

    command, env = as_user(user, str(venv / "bin" / "python"), "-c", "import xrd_agent, fastapi; print(xrd_agent.__file__)")
    found = subprocess.run(command, env=env, capture_output=True, text=True, cwd="/")
    assert found.returncode == 0, found.stderr
    where = found.stdout.strip()
    assert where.startswith(str(venv)), where  # the installed copy, not the source tree

    command, env = as_user(user, str(venv / "bin" / "xrd-agent"), "run", "--config", str(config))
    log = open(site / "agent.log", "wb")
    agent = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd="/")
    try:
        deadline = time.monotonic() + 120
        health = None
        while time.monotonic() < deadline and health is None:
            assert agent.poll() is None, (site / "agent.log").read_text()[-3000:]
            try:
                endpoints = json.loads((state / "endpoints.json").read_text())
                client = ControlClient(endpoints["control"], timeout_s=2)
                try:
                    reply = client.health()
                    health = reply if reply["state"] == "ready" else None
                finally:
                    client.close()
            except (OSError, ValueError, ControlError):
                pass
            time.sleep(0.2)
        assert health is not None and health["healthy"], (site / "agent.log").read_text()[-3000:]
        assert endpoints["pid"] == agent.pid  # setpriv execs: the agent itself, as the user
        assert pwd.getpwuid(os.stat(state / "ledger.sqlite3").st_uid).pw_name == USER

        d8 = SimulatedD8(export, Library.load(library_dir), seed=2)
        d8.export("P-1.xy", d8.measure("P-1", ["TSTMOF06"]))
        command, env = as_user(user, str(venv / "bin" / "xrd-agent"), "result", "P-1", "--state", str(state))
        deadline = time.monotonic() + 60
        while (done := subprocess.run(command, env=env, capture_output=True, text=True, cwd="/")).returncode != 0:
            assert time.monotonic() < deadline, done.stderr
            time.sleep(0.3)
        assert re.search(r"identification P-1: TESTMOF-06 [0-9.]+ \(TSTMOF06\)", done.stdout), done.stdout
        command, env = as_user(user, str(venv / "bin" / "xrd-agent"), "status", "--state", str(state))
        assert subprocess.run(command, env=env, capture_output=True, text=True, cwd="/").returncode == 0
    finally:
        agent.send_signal(signal.SIGTERM)
        code = agent.wait(60)
        log.close()
    assert code == 0, (site / "agent.log").read_text()[-3000:]


def test_an_unwritable_state_folder_is_one_line_naming_the_user(runtime):
    root, venv, user = runtime
    site = root / "ro"
    (site / "export").mkdir(parents=True)
    (site / "state").mkdir()  # root's, mode 0755: the agent's user may not write
    for path in (site, site / "export", site / "state"):
        path.chmod(0o755)
    command, env = as_user(user, str(venv / "bin" / "xrd-agent"), "run", "--watch", str(site / "export"),
                           "--state", str(site / "state"), "--engine", "cosine", "--pub", "tcp://127.0.0.1:*",
                           "--control", "tcp://127.0.0.1:*")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, cwd="/")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    line = done.stderr.strip()
    assert "\n" not in line
    assert f"not writable by user {USER}" in line and "owner root" in line and "drwxr-xr-x" in line
    assert f"chown -R {USER}" in line
    group = grp.getgrgid(user.pw_gid).gr_name
    assert group  # the user exists with its own group

    command, env = as_user(user, str(venv / "bin" / "xrd-agent"), "run", "--watch", str(site / "export"),
                           "--state", str(site / "state" / "sub"), "--engine", "cosine")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, cwd="/")
    assert done.returncode == 2 and "cannot create the state folder" in done.stderr
    assert f"user {USER} may not write" in done.stderr
