import subprocess
import sys


def run(*args):
    return subprocess.run([sys.executable, "-m", "xrd_agent", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_subcommands_and_version():
    out = run("--help")
    assert out.returncode == 0 and "xrd-agent" in out.stdout
    version = run("--version")
    assert version.returncode == 0 and version.stdout.startswith("xrd-agent ")


def test_no_command_prints_help_and_fails():
    out = run()
    assert out.returncode == 2 and "usage" in out.stdout
