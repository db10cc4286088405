"""What the service needs from the firmware profiles, in one small adapter.

``[watch] profile`` names one profile, or ``auto``: then every bundled profile's ignore
patterns apply, the profile that claims a file (:func:`xrd_agent.profiles.profile_for_file`:
its name AND its format, by content, the same selection as ``xrd-agent profiles --match``
and ``xrd-agent identify``) names its sample and default wavelength, and the configured
settle time is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from xrd_agent import profiles as _profiles
from xrd_agent.config import Config
from xrd_agent.errors import ConfigError, ScanError, XrdAgentError
from xrd_agent.profiles import FirmwareProfile
from xrd_agent.scan import Scan, Wavelength
from xrd_agent.service.ledger import path_text
from xrd_agent.service.watcher import DEFAULT_IGNORE, ignore_by_patterns


def _load_profiles(config: Config) -> list[FirmwareProfile]:
    extra = [config.watch.profiles_dir] if config.watch.profiles_dir else []
    return list(_profiles.load_profiles(extra_dirs=extra).values())


class Instrument:
    """Ignore rules, settle time, polling advice, sample ids and default wavelength."""

    def __init__(self, config: Config, profiles: Sequence[FirmwareProfile] | None = None) -> None:
        available = list(_load_profiles(config) if profiles is None else profiles)
        name = config.watch.profile
        if name and name != "auto":
            chosen = [p for p in available if p.name == name]
            if not chosen:
                known = ", ".join(sorted(p.name for p in available)) or "none installed"
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
        self.prefers_polling = self.named and any(p.polling for p in self.profiles)

    def ignores(self, path: Path) -> bool:
        if self._builtin_ignore(path):
            return True
        return any(p.ignores(path) for p in self.profiles)

    def profile_for(self, path: Path, format: str | None = None) -> FirmwareProfile | None:
        """The profile that claims the file (by name and format); with a named profile, that one."""
        found = _profiles.profile_for_file(path, self.profiles, format)
        if found is None and self.named and self.profiles:
            return self.profiles[0]
        return found

    def settle_for(self, path: Path, format: str | None = None) -> float:
        """How long a file without a completeness test must stay unchanged: its profile's
        settle time, else ``watch.settle_s``; never more than ``watch.max_settle_s`` if set."""
        profile = self.profile_for(path, format)
        settle = float(profile.settle_s or self.settle_s) if profile else self.settle_s
        return min(settle, self.max_settle_s) if self.max_settle_s > 0 else settle

    def settle_only(self, path: Path, format: str | None = None) -> bool:
        """The file's profile says its files are finished when quiet, whatever the reader says."""
        profile = self.profile_for(path, format)
        return profile is not None and profile.completeness == "settle"

    def wavelength_for(self, path: Path, format: str | None = None) -> Wavelength | None:
        """The configured default anode first, else the matching profile's default."""
        if self._default_wavelength is not None:
            return self._default_wavelength
        profile = self.profile_for(path, format)
        if profile is None:
            return None
        try:
            return profile.wavelength()
        except XrdAgentError:
            return None

    def sample_id(self, scan: Scan) -> str:
        """:func:`xrd_agent.profiles.sample_id_for` with the profile that claims the scan's file."""
        profile = self.profile_for(scan.source_path, scan.format)
        return path_text(_profiles.sample_id_for(scan, profile))[:256]
