"""What the service needs from the firmware profiles, in one small adapter.

``[watch] profile`` names one profile, or ``auto``: then every bundled profile's ignore
patterns apply, the profile whose watch patterns match a file names its sample and
default wavelength, and the configured settle time is used. Without any profile
installed the built-in ignore list and the configuration alone apply.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from xrd_agent.config import Config
from xrd_agent.errors import ConfigError, ScanError, XrdAgentError
from xrd_agent.scan import Scan, Wavelength
from xrd_agent.service.ledger import path_text
from xrd_agent.service.watcher import DEFAULT_IGNORE, ignore_by_patterns

log = structlog.get_logger("xrd_agent.instrument")


def _load_profiles(config: Config) -> list[Any]:
    try:
        from xrd_agent import profiles
    except ImportError:  # profiles not installed: built-in ignore list and configuration only
        return []
    extra = [config.watch.profiles_dir] if getattr(config.watch, "profiles_dir", "") else []
    return list(profiles.load_profiles(extra_dirs=extra).values())


class Instrument:
    """Ignore rules, settle time, polling advice, sample ids and default wavelength."""

    def __init__(self, config: Config, profiles: Sequence[Any] | None = None) -> None:
        available = list(_load_profiles(config) if profiles is None else profiles)
        name = config.watch.profile
        if name and name != "auto":
            chosen = [p for p in available if getattr(p, "name", None) == name]
            if not chosen:
                known = ", ".join(sorted(str(getattr(p, "name", "?")) for p in available)) or "none installed"
                raise ConfigError(f"watch.profile {name!r} is not a known firmware profile ({known})")
            self.profiles = chosen
        else:
            self.profiles = available
        self.named = bool(name and name != "auto")
        self._builtin_ignore = ignore_by_patterns(DEFAULT_IGNORE)
        self._default_wavelength: Wavelength | None = None
        if config.service.default_anode:
            try:
                self._default_wavelength = Wavelength.for_anode(config.service.default_anode)
            except ScanError as exc:
                raise ConfigError(f"service.default_anode: {exc.reason}") from None
        self.settle_s = config.watch.settle_s
        self.max_settle_s = config.watch.max_settle_s
        self.prefers_polling = self.named and any(_polling(p) for p in self.profiles)

    def ignores(self, path: Path) -> bool:
        if self._builtin_ignore(path):
            return True
        return any(_call(p, "ignores", path, False) for p in self.profiles)

    def profile_for(self, path: Path) -> Any | None:
        for p in self.profiles:
            if _call(p, "matches", path, False):
                return p
        return self.profiles[0] if self.named and self.profiles else None

    def settle_for(self, path: Path) -> float:
        """How long a file without a completeness test must stay unchanged: its profile's
        settle time, else ``watch.settle_s``; never more than ``watch.max_settle_s`` if set."""
        profile = self.profile_for(path)
        settle = float(getattr(profile, "settle_s", self.settle_s) or self.settle_s) if profile else self.settle_s
        return min(settle, self.max_settle_s) if self.max_settle_s > 0 else settle

    def settle_only(self, path: Path) -> bool:
        """The file's profile says its files are finished when quiet, whatever the reader says."""
        profile = self.profile_for(path)
        return getattr(profile, "completeness", "reader") == "settle"

    def wavelength_for(self, path: Path) -> Wavelength | None:
        """The configured default anode first, else the matching profile's default."""
        if self._default_wavelength is not None:
            return self._default_wavelength
        profile = self.profile_for(path)
        if profile is None:
            return None
        method = getattr(profile, "wavelength", None)
        if callable(method):
            try:
                found = method()
            except XrdAgentError:
                return None
            return found if isinstance(found, Wavelength) else None
        value = _first_attr(profile, ("default_wavelength", "default_anode"))
        if isinstance(value, (int, float)) and value > 0:
            return Wavelength(alpha1=float(value))
        if isinstance(value, str) and value:
            try:
                return Wavelength.for_anode(value)
            except XrdAgentError:
                return None
        return None

    def sample_id(self, scan: Scan) -> str:
        """The profile that claims the file decides (its metadata key, minus software
        placeholders such as "Commander Sample ID", else its file-name pattern); without a
        profile the file's own metadata (RAW SAMPLEID, BRML SampleName); else the file name
        without extension."""
        profile = self.profile_for(scan.source_path)
        if profile is not None:
            found = _call(profile, "sample_id", scan, None)
        else:
            found = scan.sample_id
        found = str(found).strip() if found else ""
        return path_text(found or scan.source_path.stem)[:256]


def _call(obj: Any, method: str, arg: Any, default: Any) -> Any:
    fn = getattr(obj, method, None)
    if fn is None:
        return default
    try:
        return fn(arg)
    except Exception:  # a profile bug must not stop the watcher
        log.debug("profile call failed", method=method, exc_info=True)
        return default


def _first_attr(obj: Any, names: Sequence[str]) -> Any:
    for n in names:
        value = getattr(obj, n, None)
        if value is not None:
            return value
    return None


def _polling(profile: Any) -> bool:
    return bool(_first_attr(profile, ("polling", "polling_recommended", "prefer_polling")))
