"""The exception family of xrd-agent.

Kept in a module of its own so any module can raise without import loops. Every
error a user can provoke with a file is a :class:`ScanError`; each subclass also
mixes in the built-in it resembles, so ``except ValueError`` keeps working.
"""

from __future__ import annotations

from pathlib import Path


class XrdAgentError(Exception):
    """Root of every error xrd-agent raises on purpose."""


class ScanError(XrdAgentError):
    """A scan file cannot be turned into a trustworthy :class:`~xrd_agent.scan.Scan`.

    ``reason`` is one sentence a chemist understands; it is what the CLI prints and
    what the service publishes on ``xrd.rejected``.
    """

    code = "scan_error"

    def __init__(self, reason: str, path: str | Path | None = None) -> None:
        self.reason = reason
        self.path = Path(path) if path is not None else None
        super().__init__(f"{self.path}: {reason}" if self.path else reason)


class UnsupportedFormat(ScanError, ValueError):
    """No reader recognises the file (wrong magic, unknown extension)."""

    code = "unsupported_format"


class CorruptScan(ScanError, ValueError):
    """The file claims a format but its content contradicts it."""

    code = "corrupt"


class TruncatedScan(CorruptScan):
    """The file ends before everything its headers promise."""

    code = "truncated"


class UnsafeScan(ScanError, ValueError):
    """The file would exhaust resources if read (zip bomb, entity expansion, huge size)."""

    code = "unsafe"


class NotAScanFile(ScanError, OSError):
    """The path is a directory, a symlink, a device or unreadable."""

    code = "not_a_file"


class UnknownWavelength(ScanError, ValueError):
    """Neither the file, the profile nor the configuration says which radiation was used."""

    code = "unknown_wavelength"


class NoCoverage(ScanError, ValueError):
    """The scan measured nothing inside the 2-theta range the model reads (5-50 deg Cu)."""

    code = "no_coverage"


class ProfileError(XrdAgentError, ValueError):
    """A firmware profile or configuration file is invalid."""


class ConfigError(XrdAgentError, ValueError):
    """A configuration file or flag is invalid."""


class NotFittedError(XrdAgentError, RuntimeError):
    """A model or engine was asked for predictions before being loaded or trained."""


class LibraryError(XrdAgentError, ValueError):
    """A reference-library artifact is missing, inconsistent or of an unknown version."""


class MessageError(XrdAgentError, ValueError):
    """A message or control request does not follow the published contract (schemas/*.json).

    ``reason`` names the offending field and what was wrong with it.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class ControlError(XrdAgentError, RuntimeError):
    """The agent's control socket did not answer in time or refused a request."""


class StructureError(XrdAgentError, ValueError):
    """A crystal structure (CIF) cannot be read or simulated; the library build skips it."""


class ModelError(XrdAgentError, ValueError):
    """A trained-model folder is missing, damaged, or was trained on another library."""


class LibraryMismatch(ModelError):
    """The library given is not the one the model was trained on (a lab's own CIFs, say)."""
