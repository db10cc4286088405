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
