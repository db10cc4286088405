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
    # Crystalline mass fraction (xrd_agent.crystallinity) below which a product is flagged
    # amorphous (critical: failed synthesis) or low_crystallinity (warning); judged only on
    # scans covering >= min_coverage from <= 10 deg. Chosen from the calibration (docs/preprocessing.md).
    amorphous_below: float = 0.25
    low_crystallinity_below: float = 0.35
    engine: str = "auto"  # service engine: auto (cnn if a model is found, else cosine) | cnn | cosine
    library_dir: str = ""  # empty: the library bundled in the package (cosine engine, alert aliases)
    # physics check: fit the candidates to the whole measured scan (xrd_agent/verify). Seconds per
    # scan against a D8 scan's minutes, and the answer `identify` gives; false: the network alone (ms)
    verify: bool = True
    # Elements or metals in the pot (expect --elements): a candidate material with a metal outside
    # them is demoted (its summed probability x elements_factor) or excluded (x 0).
    elements_mode: str = "demote"  # demote | exclude
    elements_factor: float = 0.001

    def __post_init__(self) -> None:
        if not 0.0 <= self.amorphous_below <= self.low_crystallinity_below <= 1.0:
            raise ConfigError("model.amorphous_below and model.low_crystallinity_below must satisfy "
                              f"0 <= amorphous_below <= low_crystallinity_below <= 1 (got {self.amorphous_below}, "
                              f"{self.low_crystallinity_below})")
        if not 0.0 <= self.min_coverage <= 1.0:
            raise ConfigError(f"model.min_coverage must be within 0-1 (got {self.min_coverage})")


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
    expected_elements: dict[str, list[str]] = field(default_factory=dict)  # sample id -> elements in the pot
    log_level: str = "info"  # debug | info | warning | error


@dataclass(frozen=True)
class HttpConfig:
    """The read-only HTTP API and the review page (off by default). Bound to loopback unless
    ``host`` says otherwise; any other host needs a bearer token (``token`` or ``token_file``)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8557  # 0: a free port (written to endpoints.json)
    token: str = ""  # bearer token; prefer token_file on a shared machine
    token_file: str = ""  # a file whose first line is the token (e.g. under /etc/xrd-agent, mode 0600)
    review_below: float = 0.85  # results under this confidence go to the review page (as do flags, alerts)


@dataclass(frozen=True)
class Config:
    service: ServiceConfig = field(default_factory=ServiceConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    http: HttpConfig = field(default_factory=HttpConfig)

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
                if origin in (int, float) and not isinstance(value, (int, float)):
                    raise TypeError  # "5" is text in TOML: say so instead of guessing
                if origin is int and isinstance(value, float) and not value.is_integer():
                    raise TypeError
                value = origin(value)
            elif origin is dict and not isinstance(value, dict):
                raise TypeError
        except (TypeError, ValueError):
            name = f"{where}.{key}".removeprefix("config.")
            raise ConfigError(f"{name} = {value!r}: expected {_TYPE_WORDS.get(origin, str(hint))}") from None
        changes[key] = value
    return replace(section, **changes)


_TYPE_WORDS = {int: "a whole number", float: "a number", str: "text in quotes", bool: "true or false",
               tuple: "a list", dict: "a table"}


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
    check(config)
    return config


# Ranges and choices of the settings, checked after merging (the type is checked while merging).
# (low, high, low_open): value must be > low when low_open, else >= low; and <= high (None: no bound).
_RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "gate.cutoff_bins": (1, 4500, False),
    "gate.threshold": (0, None, True),
    "model.top_k": (1, 50, False),
    "model.unknown_threshold": (0, 1, False),
    "model.min_coverage": (0, 1, False),
    "watch.poll_interval_s": (0, 3600, True),
    "watch.rescan_interval_s": (0, 86400, True),
    "watch.settle_s": (0, 3600, False),
    "watch.queue_size": (1, 1_000_000, False),
    "watch.incomplete_timeout_s": (0, None, True),
    "watch.max_settle_s": (0, 3600, False),
    "publish.heartbeat_s": (0, 3600, True),
    "publish.high_water_mark": (0, None, False),
    "http.port": (0, 65535, False),
    "http.review_below": (0, 1, False),
}
_CHOICES: dict[str, tuple[str, ...]] = {
    "model.device": ("auto", "cpu", "gpu"),
    "model.engine": ("auto", "cnn", "cosine"),
    "watch.mode": ("auto", "inotify", "polling"),
    "service.log_level": ("debug", "info", "warning", "error"),
}
_NOT_EMPTY = ("service.agent_id", "service.instrument_id", "service.state_dir", "watch.directory",
              "publish.pub_endpoint", "publish.control_endpoint", "http.host")


def _setting(config: Config, name: str) -> Any:
    section, key = name.split(".")
    return getattr(getattr(config, section, None), key, _MISSING)


_MISSING = object()


def check(config: Config) -> None:
    """Refuse values of the right type but outside their range, naming the key and the range
    (``model.top_k = 0: must be from 1 to 50``)."""
    problems: list[str] = []
    for name, (low, high, low_open) in _RANGES.items():
        value = _setting(config, name)
        if value is _MISSING:
            continue
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and value > high
        if too_low or too_high:
            if high is None:
                want = f"must be {'greater than' if low_open else 'at least'} {low:g}"
            elif low_open:
                want = f"must be greater than {low:g} and at most {high:g}"
            else:
                want = f"must be from {low:g} to {high:g}"
            problems.append(f"{name} = {value!r}: {want}")
    for name, choices in _CHOICES.items():
        value = _setting(config, name)
        if value is not _MISSING and value not in choices:
            problems.append(f"{name} = {value!r}: must be one of {', '.join(choices)}")
    for name in _NOT_EMPTY:
        value = _setting(config, name)
        if value is not _MISSING and not str(value).strip():
            problems.append(f"{name} is empty: give a value")
    sizes = getattr(config.model, "batch_sizes", ())
    if not sizes or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in sizes):
        problems.append(f"model.batch_sizes = {list(sizes)!r}: must be a non-empty list of whole numbers >= 1")
    if problems:
        raise ConfigError("; ".join(problems))


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
