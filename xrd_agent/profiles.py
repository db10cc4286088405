"""Firmware profiles: what each D8 software/export variant writes into the export folder.

A profile is a small TOML file (``firmware_profiles/*.toml``) saying which files a
variant writes (globs), which to leave alone (lock and temporary files), how to tell
that a file is finished, which radiation to assume when the format does not record it,
where the sample id lives, and which 2-theta range a method for this agent should
cover. Profiles are frozen values, validated completely on load: an unknown key, a
wrong type, a bad regex or an unsafe glob is a :class:`ProfileError` naming the file
and the key, so a typo fails at start-up instead of silently never matching.

Labs add their own profiles in a folder of their choice (``[watch] profiles_dir``);
a profile there with the same name as a bundled one replaces it.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

from xrd_agent.errors import ProfileError, UnknownWavelength

if TYPE_CHECKING:
    from xrd_agent.scan import Scan, Wavelength

COMPLETENESS = ("reader", "settle")
#: Settle times above this are a typo (seconds vs milliseconds), not a slow share.
MAX_SETTLE_S = 3600.0
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_FORMAT = re.compile(r"^[a-z0-9_]{1,32}$")
_GLOB_MAX = 200

# Declarative schema: key -> (type, required). Tables nest. ``list`` means list[str].
_SCHEMA: dict[str, Any] = {
    "name": (str, True),
    "description": (str, False),
    "software": (str, False),
    "formats": (list, True),
    "completeness": (str, True),
    "settle_s": (float, False),
    "polling": (bool, False),
    "files": {
        "watch": (list, True),
        "ignore": (list, False),
    },
    "radiation": {
        "anode": (str, False),
        "wavelength": (float, False),
    },
    "sample_id": {
        "metadata": (str, False),
        "filename_regex": (str, False),
        "placeholders": (list, False),
    },
    "two_theta": {
        "min": (float, False),
        "max": (float, False),
        "step": (float, False),
    },
}


def _glob_regex(pattern: str) -> re.Pattern[str]:
    # fnmatch.translate gives shell-glob semantics; compiled once, case-insensitive
    # because Windows instrument PCs write .RAW and .raw alike.
    return re.compile(fnmatch.translate(pattern), re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class FirmwareProfile:
    """One D8 software/export variant. Build with :func:`load_profile`."""

    name: str
    formats: tuple[str, ...]
    watch: tuple[str, ...]
    completeness: str = "reader"
    description: str = ""
    software: str = ""
    ignore: tuple[str, ...] = ()
    settle_s: float = 2.0
    polling: bool = False
    default_anode: str | None = None
    default_wavelength: float | None = None  # K-alpha1 in angstrom
    sample_id_key: str | None = None
    sample_id_regex: re.Pattern[str] | None = None
    sample_id_placeholders: tuple[str, ...] = ()
    two_theta_min: float | None = None
    two_theta_max: float | None = None
    two_theta_step: float | None = None
    source: Path | None = field(default=None, compare=False)
    _watch_re: tuple[re.Pattern[str], ...] = field(default=(), init=False, repr=False, compare=False)
    _ignore_re: tuple[re.Pattern[str], ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_watch_re", tuple(_glob_regex(p) for p in self.watch))
        object.__setattr__(self, "_ignore_re", tuple(_glob_regex(p) for p in self.ignore))

    # ------------------------------------------------------------------ files

    def ignores(self, path: str | PurePath) -> bool:
        """True for files this variant's software writes but are not scans (locks, temporaries)."""
        name = PurePath(path).name
        return any(rx.match(name) for rx in self._ignore_re)

    def matches(self, path: str | PurePath) -> bool:
        """True when ``path``'s file name is a scan this variant writes (and not an ignored one)."""
        name = PurePath(path).name
        return any(rx.match(name) for rx in self._watch_re) and not self.ignores(name)

    # ------------------------------------------------------------------ scans

    def sample_id(self, scan: Scan) -> str | None:
        """The sample id: from the scan's metadata, else from the file name, else None.

        Values listed as placeholders (software defaults such as "Commander Sample ID")
        do not count as an id.
        """
        if self.sample_id_key:
            raw = (
                scan.sample_id
                if self.sample_id_key == "sample_id"
                else scan.metadata.get(self.sample_id_key)
            )
            value = (raw or "").strip()
            if value and value.casefold() not in {p.casefold() for p in self.sample_id_placeholders}:
                return value
        if self.sample_id_regex is not None:
            return self.sample_from_filename(scan.source_path)
        return None

    def sample_from_filename(self, path: str | PurePath) -> str | None:
        """The ``sample`` group of the file-name regex (the name without its extension)."""
        if self.sample_id_regex is None:
            return None
        stem = PurePath(path).stem
        found = self.sample_id_regex.search(stem)
        value = (found.group("sample") or "").strip() if found else ""
        return value or None

    def wavelength(self) -> Wavelength | None:
        """The radiation to assume for files of this variant that do not record one."""
        from xrd_agent.scan import Wavelength

        if self.default_wavelength is not None:
            anode = self.default_anode.capitalize() if self.default_anode else None
            return Wavelength(alpha1=self.default_wavelength, anode=anode)
        if self.default_anode:
            return Wavelength.for_anode(self.default_anode)
        return None

    def range_notes(self, scan: Scan) -> tuple[str, ...]:
        """Plain-language notes where a scan does not cover the range this profile expects."""
        notes: list[str] = []
        tt = scan.two_theta
        if tt.size == 0:
            return ("the scan holds no points",)
        if self.two_theta_min is not None and tt[0] > self.two_theta_min + 1e-6:
            notes.append(f"the scan starts at {tt[0]:.2f} deg 2-theta; {self.two_theta_min:g} deg was expected")
        if self.two_theta_max is not None and tt[-1] < self.two_theta_max - 1e-6:
            notes.append(f"the scan ends at {tt[-1]:.2f} deg 2-theta; {self.two_theta_max:g} deg was expected")
        step = scan.step
        if self.two_theta_step is not None and step is not None and step > 1.5 * self.two_theta_step:
            notes.append(f"the step is {step:.4f} deg; {self.two_theta_step:g} deg or finer was expected")
        return tuple(notes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (what ``xrd-agent profiles --json`` prints)."""
        return {
            "name": self.name,
            "description": self.description,
            "software": self.software,
            "formats": list(self.formats),
            "watch": list(self.watch),
            "ignore": list(self.ignore),
            "completeness": self.completeness,
            "settle_s": self.settle_s,
            "polling": self.polling,
            "default_anode": self.default_anode,
            "default_wavelength": self.default_wavelength,
            "sample_id": {
                "metadata": self.sample_id_key,
                "filename_regex": self.sample_id_regex.pattern if self.sample_id_regex else None,
                "placeholders": list(self.sample_id_placeholders),
            },
            "two_theta": {"min": self.two_theta_min, "max": self.two_theta_max, "step": self.two_theta_step},
            "source": str(self.source) if self.source else None,
        }


# --------------------------------------------------------------------------- loading


def bundled_dir() -> Path:
    """The folder of the profiles shipped with xrd-agent.

    The canonical files are ``firmware_profiles/`` at the top of the repository (a
    checkout or an editable install); an installed wheel carries a copy as package data
    in ``xrd_agent/data/firmware_profiles/``.
    """
    package = Path(__file__).resolve().parent
    candidates = (package.parent / "firmware_profiles", package / "data" / "firmware_profiles")
    for candidate in candidates:
        if candidate.is_dir() and any(candidate.glob("*.toml")):
            return candidate
    raise ProfileError(
        "the bundled firmware profiles are missing (looked in "
        + " and ".join(str(c) for c in candidates)
        + "); reinstall xrd-agent"
    )


def load_profile(path: str | Path) -> FirmwareProfile:
    """Read and validate one profile TOML file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ProfileError(f"{path}: is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: is not valid TOML ({exc})") from None
    return profile_from_dict(data, source=path)


def profile_from_dict(data: Mapping[str, Any], source: Path | None = None) -> FirmwareProfile:
    """Validate the parsed TOML of one profile and build it."""
    where = str(source) if source else "profile"
    values = _checked(data, _SCHEMA, where, "")
    files = values.get("files", {})
    radiation = values.get("radiation", {})
    sample = values.get("sample_id", {})
    two_theta = values.get("two_theta", {})

    def fail(key: str, why: str) -> ProfileError:
        return ProfileError(f"{where}: {key} {why}")

    name = values["name"]
    if not _NAME.match(name):
        raise fail("name", f"{name!r} must be lower-case letters, digits, '.', '_' or '-' (at most 64)")
    formats = tuple(values["formats"])
    if not formats:
        raise fail("formats", "must list at least one format (e.g. \"brml\")")
    for fmt in formats:
        if not _FORMAT.match(fmt):
            raise fail("formats", f"{fmt!r} is not a reader format name (e.g. brml, bruker_raw4, uxd)")
    completeness = values["completeness"]
    if completeness not in COMPLETENESS:
        raise fail("completeness", f"must be one of {', '.join(COMPLETENESS)}, not {completeness!r}")
    settle = values.get("settle_s", 2.0)
    if not 0 <= settle <= MAX_SETTLE_S:
        raise fail("settle_s", f"must be between 0 and {MAX_SETTLE_S:g} seconds, not {settle:g}")
    if completeness == "settle" and settle <= 0:
        raise fail("settle_s", "must be above 0 when completeness = \"settle\" (it is the only signal)")
    watch = tuple(_checked_glob(p, where, "files.watch") for p in files["watch"])
    if not watch:
        raise fail("files.watch", "must list at least one glob (e.g. \"*.brml\")")
    ignore = tuple(_checked_glob(p, where, "files.ignore") for p in files.get("ignore", ()))

    anode = radiation.get("anode")
    if anode is not None:
        from xrd_agent.scan import Wavelength

        try:
            Wavelength.for_anode(anode)
        except UnknownWavelength:
            from xrd_agent.scan import ANODE_LINES

            raise fail("radiation.anode", f"{anode!r} is not one of {', '.join(ANODE_LINES)}") from None
    wavelength = radiation.get("wavelength")
    if wavelength is not None and not 0.1 <= wavelength <= 3.0:
        raise fail("radiation.wavelength", f"{wavelength:g} is not an X-ray wavelength in angstrom (0.1-3)")

    regex = None
    if "filename_regex" in sample:
        try:
            regex = re.compile(sample["filename_regex"])
        except re.error as exc:
            raise fail("sample_id.filename_regex", f"is not a valid regular expression ({exc})") from None
        if "sample" not in regex.groupindex:
            raise fail("sample_id.filename_regex", "needs a named group (?P<sample>...) for the sample id")

    lo, hi, step = two_theta.get("min"), two_theta.get("max"), two_theta.get("step")
    for key, value in (("min", lo), ("max", hi)):
        if value is not None and not 0 <= value <= 180:
            raise fail(f"two_theta.{key}", f"{value:g} is not a 2-theta angle in degrees (0-180)")
    if lo is not None and hi is not None and not lo < hi:
        raise fail("two_theta", f"min ({lo:g}) must be below max ({hi:g})")
    if step is not None and not 0 < step <= 5:
        raise fail("two_theta.step", f"{step:g} is not a step in degrees (above 0, at most 5)")

    return FirmwareProfile(
        name=name,
        formats=formats,
        watch=watch,
        completeness=completeness,
        description=values.get("description", "").strip(),
        software=values.get("software", "").strip(),
        ignore=ignore,
        settle_s=settle,
        polling=values.get("polling", False),
        default_anode=anode,
        default_wavelength=wavelength,
        sample_id_key=sample.get("metadata"),
        sample_id_regex=regex,
        sample_id_placeholders=tuple(sample.get("placeholders", ())),
        two_theta_min=lo,
        two_theta_max=hi,
        two_theta_step=step,
        source=source,
    )


def _checked(data: Mapping[str, Any], schema: Mapping[str, Any], where: str, prefix: str) -> dict[str, Any]:
    """Type-check ``data`` against ``schema``; unknown keys and missing required keys are errors."""
    unknown = sorted(set(data) - set(schema))
    if unknown:
        known = ", ".join(prefix + k for k in schema)
        raise ProfileError(f"{where}: unknown key(s) {', '.join(prefix + k for k in unknown)} (known: {known})")
    out: dict[str, Any] = {}
    for key, spec in schema.items():
        full = prefix + key
        if isinstance(spec, dict):
            if key not in data:
                if any(required for _, required in spec.values()):
                    raise ProfileError(f"{where}: missing table [{full}]")
                continue
            if not isinstance(data[key], dict):
                raise ProfileError(f"{where}: {full} must be a table ([{full}])")
            out[key] = _checked(data[key], spec, where, full + ".")
            continue
        kind, required = spec
        if key not in data:
            if required:
                raise ProfileError(f"{where}: missing key {full}")
            continue
        value = data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is list:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ProfileError(f"{where}: {full} must be a list of strings, not {value!r}")
        elif not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise ProfileError(f"{where}: {full} must be {_KIND_NAMES[kind]}, not {value!r}")
        out[key] = value
    return out


_KIND_NAMES = {str: "text", float: "a number", bool: "true or false"}


def _checked_glob(pattern: str, where: str, key: str) -> str:
    """File-name globs only: no folders, no recursion, and never one that matches everything."""
    stripped = pattern.strip()
    if not stripped or stripped != pattern:
        raise ProfileError(f"{where}: {key} glob {pattern!r} is empty or has surrounding spaces")
    if "/" in pattern or "\\" in pattern or "**" in pattern:
        raise ProfileError(f"{where}: {key} glob {pattern!r} must be a file-name pattern (no folders, no **)")
    if len(pattern) > _GLOB_MAX:
        raise ProfileError(f"{where}: {key} glob {pattern!r} is longer than {_GLOB_MAX} characters")
    if not re.sub(r"[*?\[\]!]", "", pattern):
        raise ProfileError(f"{where}: {key} glob {pattern!r} would match every file")
    return pattern


def load_profiles(
    directory: str | Path | None = None, extra_dirs: Iterable[str | Path] = ()
) -> dict[str, FirmwareProfile]:
    """Every profile in ``directory`` (default: the bundled ones), then those in ``extra_dirs``.

    Returns name -> profile in load order (file names sorted within a folder). Two files
    with the same profile name in one folder are an error; a later folder's profile
    replaces an earlier one of the same name, in place.
    """
    profiles: dict[str, FirmwareProfile] = {}
    folders = [Path(directory) if directory is not None else bundled_dir(), *(Path(d) for d in extra_dirs)]
    for folder in folders:
        if not folder.is_dir():
            raise ProfileError(f"{folder}: no such folder of firmware profiles")
        files = sorted(folder.glob("*.toml"))
        if not files:
            raise ProfileError(f"{folder}: holds no *.toml firmware profiles")
        seen: dict[str, Path] = {}
        for file in files:
            profile = load_profile(file)
            if profile.name in seen:
                raise ProfileError(f"{file}: profile name {profile.name!r} is already used by {seen[profile.name]}")
            seen[profile.name] = file
            profiles[profile.name] = profile
    return profiles


def select(
    profiles: Mapping[str, FirmwareProfile] | Iterable[FirmwareProfile], name: str
) -> tuple[FirmwareProfile, ...]:
    """The profiles a watcher uses: all of them for ``"auto"``, else the one named."""
    profiles = tuple(profiles.values() if isinstance(profiles, Mapping) else profiles)
    if name == "auto":
        return profiles
    chosen = tuple(p for p in profiles if p.name == name)
    if not chosen:
        known = ", ".join(p.name for p in profiles) or "none"
        raise ProfileError(f"unknown firmware profile {name!r}; known: {known}")
    return chosen


def profile_for(
    path: str | PurePath, profiles: Iterable[FirmwareProfile], format: str | None = None
) -> FirmwareProfile | None:
    """The first profile that claims ``path`` (and reads ``format``, when given).

    None when no profile matches, or when any of them ignores the file: a lock file
    that one variant writes is never a scan for another.
    """
    candidates = tuple(profiles)
    if any(p.ignores(path) for p in candidates):
        return None
    for profile in candidates:
        if profile.matches(path) and (format is None or format in profile.formats):
            return profile
    return None


def format_of(path: str | PurePath) -> str | None:
    """The format of an existing file, by content (its magic bytes), then extension, so that
    RAW1.01 and RAW4.00 files, both ``*.raw``, go to the right profile. None for a name that
    is not a readable file (``profiles --match`` also answers for names alone)."""
    from xrd_agent.errors import ScanError
    from xrd_agent.readers import detect_format

    if not Path(path).is_file():
        return None
    try:
        return detect_format(Path(path))
    except (ScanError, OSError):
        return None


def profile_for_file(
    path: str | PurePath, profiles: Iterable[FirmwareProfile], format: str | None = None
) -> FirmwareProfile | None:
    """THE profile selection, used by the service, ``xrd-agent profiles --match`` and
    ``xrd-agent identify``: :func:`profile_for` with the file's format, found from its
    content when not given."""
    return profile_for(path, profiles, format if format is not None else format_of(path))


def sample_id_for(scan: Scan, profile: FirmwareProfile | None) -> str:
    """The sample id the agent reports: the profile that claims the file decides (its metadata
    key, minus software placeholders such as "Commander Sample ID", else its file-name pattern);
    without a profile the file's own metadata (RAW SAMPLEID, BRML SampleName); else the file
    name without extension."""
    found = profile.sample_id(scan) if profile is not None else scan.sample_id
    found = str(found).strip() if found else ""
    return found or scan.source_path.stem
