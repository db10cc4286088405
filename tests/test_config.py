import tomllib

import pytest

from xrd_agent.config import Config, defaults_toml, load_config
from xrd_agent.errors import ConfigError


def test_defaults_round_trip_through_toml(tmp_path):
    path = tmp_path / "defaults.toml"
    path.write_text(defaults_toml())
    assert load_config(path) == Config()


def test_file_then_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[watch]\ndirectory = "/data/d8"\nrecursive = true\n[gate]\nthreshold = 0.2\n')
    config = load_config(path, {"watch": {"directory": "/other"}})
    assert config.watch.directory == "/other"
    assert config.watch.recursive is True
    assert config.gate.threshold == 0.2
    assert config.gate.cutoff_bins == 200


@pytest.mark.parametrize(
    "text, message",
    [
        ("[watch]\ndirectroy = 'x'\n", "directroy"),
        ("[nonsense]\na = 1\n", "nonsense"),
        ("[watch]\nrecursive = 'yes'\n", "recursive"),
        ("[gate]\ncutoff_bins = 'many'\n", "cutoff_bins"),
        ("[watch\n", "cannot read"),
    ],
)
def test_bad_config_fails_loudly(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_defaults_toml_is_valid_toml():
    data = tomllib.loads(defaults_toml())
    assert data["publish"]["pub_endpoint"].startswith("tcp://127.0.0.1")


@pytest.mark.parametrize(
    "text, message",
    [
        ("[model]\ntop_k = 0\n", r"model.top_k = 0: must be from 1 to 50"),
        ("[model]\nunknown_threshold = 3\n", r"model.unknown_threshold = 3.0: must be from 0 to 1"),
        ("[publish]\nheartbeat_s = -1\n", r"publish.heartbeat_s = -1.0: must be greater than 0"),
        ("[model]\ntop_k = 2.5\n", r"model.top_k = 2.5: expected a whole number"),
        ("[model]\ntop_k = '5'\n", r"model.top_k = '5': expected a whole number"),
        ("[watch]\nqueue_size = 0\n", r"watch.queue_size = 0"),
        ("[watch]\nmode = 'fast'\n", r"watch.mode = 'fast': must be one of auto, inotify, polling"),
        ("[model]\nbatch_sizes = [0]\n", r"model.batch_sizes"),
        ("[http]\nport = 70000\n", r"http.port = 70000: must be from 0 to 65535"),
        ("[service]\nagent_id = ''\n", r"service.agent_id is empty"),
    ],
)
def test_out_of_range_values_are_refused_with_the_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_config_check_command_refuses_a_range_error_in_one_line(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "bad.toml"
    path.write_text("[model]\ntop_k = 0\nunknown_threshold = 3\n[publish]\nheartbeat_s = -1\n")
    done = subprocess.run([sys.executable, "-m", "xrd_agent", "config", "--check", str(path)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1
    for key in ("model.top_k", "model.unknown_threshold", "publish.heartbeat_s"):
        assert key in done.stderr
