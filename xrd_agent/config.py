"""The one place for settings: embedded defaults, a TOML file, then command-line flags.

Each section is a frozen dataclass; ``load_config`` merges a TOML file over the
defaults and refuses unknown keys, so a typo in a config file fails loudly at start.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from xrd_agent.errors import ConfigError


@dataclass(frozen=True)
class GateConfig:
    """FFT noise gate (Wang et al. 2020): cut-off in frequency bins, threshold on the
    mean magnitude of the band beyond it (scan normalised to max 1 before the FFT).

    threshold 1.0: measured on the real fixtures and on simulated patterns
    (docs/preprocessing.md): clean or high-count scans sit at 0.3-0.9, scans with
    ~1,000 counts at the strongest peak at 0.7-1.2, ~100 counts at 1.3-3.1."""

    cutoff_bins: int = 200
    threshold: float = 1.0


@dataclass(frozen=True)
class ModelConfig:
    model_dir: str = ""  # empty: the model bundled in the package
    device: str = "auto"  # auto | cpu | gpu
    top_k: int = 5
    batch_sizes: tuple[int, ...] = (1, 8, 64)
    unknown_threshold: float = 0.35  # below: unknown_phase
    min_coverage: float = 0.5  # covered share of 5-50 deg below which: low_coverage
    engine: str = "auto"  # service engine: auto (cnn if a model is found, else cosine) | cnn | cosine
    library_dir: str = ""  # empty: the library bundled in the package (cosine engine, alert aliases)
    verify: bool = True  # physics check: fit candidates to the whole measured scan (xrd_agent/verify)


@dataclass(frozen=True)
class WatchConfig:
    directory: str = "./xrd-export"
    profile: str = "auto"  # a firmware profile name, or auto (all profiles' patterns)
    profiles_dir: str = ""  # extra folder of firmware profile TOMLs; a same-named one replaces a bundled one
    mode: str = "auto"  # auto | inotify | polling
    recursive: bool = False
    poll_interval_s: float = 1.0
    rescan_interval_s: float = 30.0
    settle_s: float = 2.0
    queue_size: int = 256
    incomplete_timeout_s: float = 900.0  # a recognised scan still incomplete this long is read anyway (rejected)
    max_settle_s: float = 0.0  # caps every settle time, the profiles' included (0: no cap)


@dataclass(frozen=True)
class PublishConfig:
    pub_endpoint: str = "tcp://127.0.0.1:5556"
    control_endpoint: str = "tcp://127.0.0.1:5557"
    heartbeat_s: float = 5.0
    high_water_mark: int = 100_000
    curve_secret_key: str = ""  # path to a zmq.auth secret key file: enables CurveZMQ
    curve_allowed_dir: str = ""  # folder of allowed client public keys


@dataclass(frozen=True)
class ServiceConfig:
    agent_id: str = "xrd-agent"
    instrument_id: str = "bruker-d8"
    state_dir: str = "./xrd-state"
    default_anode: str = ""  # used when a scan's file does not say (e.g. plain .xy)
    expectations: dict[str, list[str]] = field(default_factory=dict)  # sample id -> phases
    log_level: str = "info"  # debug | info | warning | error


@dataclass(frozen=True)
class Config:
    service: ServiceConfig = field(default_factory=ServiceConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    gate: GateConfig = field(default_factory=GateConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(section: Any, values: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(type(section))
    known = {f.name for f in fields(section)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"unknown setting(s) in [{where}]: {', '.join(sorted(unknown))}")
    changes: dict[str, Any] = {}
    for key, value in values.items():
        current = getattr(section, key)
        if is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"[{where}.{key}] must be a table")
            changes[key] = _coerce(current, value, f"{where}.{key}")
            continue
        hint = hints[key]
        origin = typing.get_origin(hint) or hint
        try:
            if origin is tuple:
                value = tuple(value)
            elif origin is bool and not isinstance(value, bool):
                raise TypeError
            elif origin in (int, float, str):
                if isinstance(value, bool) or (origin is str and not isinstance(value, str)):
                    raise TypeError
                value = origin(value)
            elif origin is dict and not isinstance(value, dict):
                raise TypeError
        except (TypeError, ValueError):
            raise ConfigError(f"{where}.{key}: expected {hint}, got {value!r}") from None
        changes[key] = value
    return replace(section, **changes)


def merge(config: Config, values: dict[str, Any]) -> Config:
    """Return ``config`` with the nested ``values`` (as in a TOML file) applied."""
    return _coerce(config, values, "config")


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    config = Config()
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read configuration {path}: {exc}") from None
        config = merge(config, data)
    if overrides:
        config = merge(config, overrides)
    return config


def defaults_toml() -> str:
    """The embedded defaults as TOML (``xrd-agent config --defaults``)."""
    lines: list[str] = []
    for section in fields(Config):
        lines.append(f"[{section.name}]")
        for f in fields(getattr(Config(), section.name)):
            lines.append(f"{f.name} = {_toml_value(getattr(getattr(Config(), section.name), f.name))}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f'"{k}" = {_toml_value(v)}' for k, v in value.items()) + "}"
    return repr(value)
