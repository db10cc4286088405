"""The client and the message contract install without TensorFlow; the CLI keeps TensorFlow's
C++ start-up lines off stderr unless --verbose."""

from __future__ import annotations

import subprocess
import sys
import tomllib

from conftest import REPO

HEAVY = ("tensorflow", "keras", "scipy", "watchdog", "xylib", "matplotlib", "pymatgen", "sklearn")

#: A real interpreter in which the agent's heavy dependencies cannot be imported: what a robot
#: PC with only `pip install xrd-agent` has.
BLOCKER = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {HEAVY!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Block())
"""


def _light(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCKER + code], capture_output=True, text=True, cwd=REPO,
                          timeout=120)


def test_base_dependencies_are_light_and_the_agent_extra_has_the_rest():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = {d.split(">")[0].split("=")[0].strip() for d in project["dependencies"]}
    assert base == {"numpy", "pyzmq", "structlog", "jsonschema"}
    agent = {d.split(">")[0].strip() for d in project["optional-dependencies"]["agent"]}
    assert {"tensorflow", "keras", "watchdog", "xylib-py", "scipy", "matplotlib"} <= agent
    assert "xrd-agent[agent]" in project["optional-dependencies"]["train"]


def test_the_client_and_the_contract_import_without_the_agents_dependencies():
    proc = _light("import xrd_agent.client, xrd_agent.messages\n"
                  "from xrd_agent.cli import main\n"
                  "raise SystemExit(main(['subscribe', '--help']))\n")
    assert proc.returncode == 0, proc.stderr
    assert "subscribe" in proc.stdout


def test_a_command_that_needs_the_agent_extra_says_which():
    scan = REPO / "tests" / "data" / "real-scans" / "mof" / "Zn2-(TBAPy)_AsMade.xy"
    proc = _light("from xrd_agent.cli import main\n"
                  f"raise SystemExit(main(['identify', {str(scan)!r}, '--wavelength', 'Cu']))\n")
    assert proc.returncode == 2
    assert "pip install 'xrd-agent[agent]'" in proc.stderr and "Traceback" not in proc.stderr


def test_tensorflow_start_up_lines_are_silenced_unless_verbose():
    code = ("import sys\nfrom xrd_agent.cli import main\nfrom xrd_agent import tfimport\n"
            "tfimport.quiet() if '--verbose' not in sys.argv else None\n"
            "from xrd_agent.model.predictor import select_device\nprint(select_device('cpu'))\n")
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert quiet.returncode == 0 and quiet.stdout.strip() == "cpu", quiet.stderr
    assert "cuInit" not in quiet.stderr and "cudart" not in quiet.stderr and "absl" not in quiet.stderr
    assert "cpu_feature_guard" not in quiet.stderr
