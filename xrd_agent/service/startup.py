"""Start-up problems as one line each that says what to do: a port already in use (and,
where Linux tells, by which process), a state folder the agent's user cannot write.

Which process holds a port is read from ``/proc/net/tcp{,6}`` (listening sockets and their
inodes) and ``/proc/<pid>/fd`` (which process has that socket open) — what ``ss -ltnp``
does; hand-written because psutil is not a dependency and the lookup is twenty lines.
Another user's processes are not visible to an unprivileged agent: the message then names
the port only.
"""

from __future__ import annotations

import errno
import os
import pwd
import re
import stat
from pathlib import Path

from xrd_agent.errors import XrdAgentError

_LISTEN = "0A"
_TCP_ENDPOINT = re.compile(r"^tcp://(?P<host>\[[^\]]*\]|[^:]*):(?P<port>\d+)$")


class StartupError(XrdAgentError, RuntimeError):
    """The agent cannot start; the message says why and what to do."""


def port_of(endpoint: str) -> int | None:
    """The TCP port of a ZeroMQ endpoint such as ``tcp://127.0.0.1:5556`` (None for ``*`` or ipc)."""
    match = _TCP_ENDPOINT.match(endpoint)
    return int(match["port"]) if match else None


def _listening_inodes(port: int, proc: Path) -> set[str]:
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == _LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def port_holder(port: int, proc: Path = Path("/proc")) -> tuple[int, str] | None:
    """(pid, command line) of the process listening on TCP ``port``, when this user can see it."""
    inodes = {f"socket:[{inode}]" for inode in _listening_inodes(port, proc)}
    if not inodes:
        return None
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    raw = (entry / "cmdline").read_bytes().decode("utf-8", "replace")
                    return int(entry.name), " ".join(raw.replace("\0", " ").split())[:200] or "?"
        except OSError:
            continue
    return None


def address_in_use(endpoint: str, setting: str, flag: str | None = None) -> StartupError:
    """The one-line error for an endpoint someone else already listens on."""
    port = port_of(endpoint)
    holder = port_holder(port) if port is not None else None
    who = (f"process {holder[0]} ({holder[1]}) already listens on it" if holder
           else f"another process already listens on port {port}" if port is not None
           else "it is already in use")
    if holder and os.getpid() == holder[0]:
        who = "this agent listens on it twice (two settings give the same address)"
    choose = f"set {setting}" + (f" or {flag}" if flag else "")
    return StartupError(f"cannot listen on {endpoint}: {who}; stop that process or {choose} to another port")


def user_name(uid: int | None = None) -> str:
    uid = os.geteuid() if uid is None else uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _describe(path: Path) -> str:
    try:
        st = path.stat()
    except OSError:
        return str(path)
    return f"{path} (owner {user_name(st.st_uid)}, mode {stat.filemode(st.st_mode)})"


def prepare_state_dir(path: Path) -> Path:
    """Create the state folder if needed and prove the agent can write in it, or raise
    :class:`StartupError` naming the folder, its owner and mode, and the agent's user."""
    me = user_name()
    missing = path
    while not missing.parent.exists() and missing.parent != missing:
        missing = missing.parent
    try:
        path.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        parent = missing.parent
        raise StartupError(
            f"cannot create the state folder {path}: user {me} may not write in {_describe(parent)}; "
            f"create it for that user (sudo install -d -o {me} {path}) or set service.state_dir / --state") from None
    except OSError as exc:
        raise StartupError(f"cannot create the state folder {path}: {exc.strerror}; "
                           "set service.state_dir / --state to a local folder") from None
    if not path.is_dir():
        raise StartupError(f"the state folder {path} is not a folder; set service.state_dir / --state")
    probe = path / f".write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise StartupError(
                f"the state folder {_describe(path)} is not writable by user {me}: the agent needs write "
                f"permission there; run `sudo chown -R {me} {path}` or set service.state_dir / --state") from None
        if exc.errno == errno.EROFS:
            raise StartupError(f"the state folder {path} is on a read-only file system; "
                               "set service.state_dir / --state to a writable folder") from None
        raise StartupError(f"cannot write in the state folder {path}: {exc.strerror}") from None
    return path
