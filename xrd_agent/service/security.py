"""CurveZMQ for the PUB and control sockets: key files, the allow-list, the authenticator.

With ``publish.curve_secret_key`` set, both sockets become CURVE servers: traffic is
encrypted and a ZAP authenticator (one per context, as libzmq requires) admits only
clients whose public key file lies in ``publish.curve_allowed_dir``. A client without
an allowed key completes no handshake, so it receives nothing and cannot command.
Keys are the ``zmq.auth`` certificate files that ``xrd-agent keys generate`` writes.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import structlog
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from xrd_agent.config import PublishConfig
from xrd_agent.errors import ConfigError

log = structlog.get_logger(__name__)

SERVER_NAME = "server"
ALLOWED_SUBDIR = "allowed"
_KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _load_secret(path: str | Path, what: str) -> tuple[bytes, bytes]:
    try:
        public, secret = zmq.auth.load_certificate(os.fspath(path))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the {what} key file {path}: {exc}") from None
    if not secret:
        raise ConfigError(f"{path} holds no secret key: give the .key_secret file, not the public .key")
    return public, secret


def _load_public(path: str | Path, what: str) -> bytes:
    try:
        public, _ = zmq.auth.load_certificate(os.fspath(path))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the {what} public key file {path}: {exc}") from None
    return public


@dataclass(frozen=True)
class CurveServerKeys:
    """The agent's key pair and the folder of client public keys it accepts."""

    public: bytes
    secret: bytes
    allowed_dir: Path

    @classmethod
    def from_files(cls, secret_key_file: str | Path, allowed_dir: str | Path) -> CurveServerKeys:
        public, secret = _load_secret(secret_key_file, "server secret")
        allowed = Path(allowed_dir)
        if not str(allowed_dir) or not allowed.is_dir():
            raise ConfigError(f"publish.curve_allowed_dir {str(allowed_dir)!r} is not a folder: CURVE needs "
                              "an allow-list of client public keys (see `xrd-agent keys generate`)")
        if not any(allowed.glob("*.key")):
            log.warning("curve_allow_list_empty", allowed_dir=str(allowed),
                        hint="no client can connect until a client .key file is copied there")
        return cls(public, secret, allowed)

    def apply(self, socket: zmq.Socket) -> None:
        """Make ``socket`` a CURVE server (before it binds)."""
        socket.curve_secretkey = self.secret
        socket.curve_publickey = self.public
        socket.curve_server = True  # no zap_domain: the authenticator's '*' domain matches only the empty one

    def __repr__(self) -> str:  # never print the secret key
        return f"CurveServerKeys(public={self.public.decode()!r}, allowed_dir={str(self.allowed_dir)!r})"


@dataclass(frozen=True)
class CurveClientKeys:
    """A client's key pair and the server public key it expects to talk to."""

    public: bytes
    secret: bytes
    server_public: bytes

    @classmethod
    def from_files(cls, client_secret_file: str | Path, server_public_file: str | Path) -> CurveClientKeys:
        public, secret = _load_secret(client_secret_file, "client secret")
        return cls(public, secret, _load_public(server_public_file, "server"))

    def apply(self, socket: zmq.Socket) -> None:
        """Make ``socket`` a CURVE client (before it connects)."""
        socket.curve_secretkey = self.secret
        socket.curve_publickey = self.public
        socket.curve_serverkey = self.server_public

    def __repr__(self) -> str:
        return (f"CurveClientKeys(public={self.public.decode()!r}, "
                f"server_public={self.server_public.decode()!r})")


def server_keys(config: PublishConfig) -> CurveServerKeys | None:
    """The CURVE server keys the configuration asks for, or None (plain TCP)."""
    if not config.curve_secret_key:
        if config.curve_allowed_dir:
            raise ConfigError("publish.curve_allowed_dir is set but publish.curve_secret_key is not: "
                              "give the server secret key file to enable CURVE")
        return None
    return CurveServerKeys.from_files(config.curve_secret_key, config.curve_allowed_dir)


# One authenticator per context: libzmq routes every ZAP request of a context to the one
# handler bound at inproc://zeromq.zap.01, so a second one would fail to bind. Sockets
# acquire it and release it when they close; the last release stops its thread, so that
# ``context.term()`` (which waits for every socket, the authenticator's included) returns.


@dataclass
class _Shared:
    auth: ThreadAuthenticator
    users: int


_authenticators: weakref.WeakKeyDictionary[zmq.Context, _Shared] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def acquire_authenticator(context: zmq.Context, keys: CurveServerKeys) -> ThreadAuthenticator:
    """Start (once per context) the ZAP authenticator enforcing ``keys.allowed_dir``, and
    count one more socket using it; pair with :func:`release_authenticator`."""
    with _lock:
        shared = _authenticators.get(context)
        if shared is None:
            auth = ThreadAuthenticator(context, log=_StdlibBridge())
            auth.start()
            shared = _authenticators[context] = _Shared(auth, 0)
        shared.users += 1
        shared.auth.configure_curve(domain="*", location=os.fspath(keys.allowed_dir))
        return shared.auth


def release_authenticator(context: zmq.Context) -> None:
    """One socket less uses the context's authenticator; the last one stops it."""
    with _lock:
        shared = _authenticators.get(context)
        if shared is None:
            return
        shared.users -= 1
        if shared.users > 0:
            return
        del _authenticators[context]
    shared.auth.stop()


def reload_allow_list(context: zmq.Context, keys: CurveServerKeys) -> None:
    """Re-read the allowed client keys (after adding or removing a robot's key)."""
    with _lock:
        shared = _authenticators.get(context)
    if shared is not None:
        shared.auth.configure_curve(domain="*", location=os.fspath(keys.allowed_dir))
        log.info("curve_allow_list_reloaded", allowed=len(list(keys.allowed_dir.glob("*.key"))))


def stop_authenticator(context: zmq.Context) -> None:
    """Stop the context's authenticator whoever still uses it (a safety net before ``term``)."""
    with _lock:
        shared = _authenticators.pop(context, None)
    if shared is not None:
        shared.auth.stop()


class _StdlibBridge:
    """pyzmq's authenticator logs through a stdlib-style logger; send it to structlog.
    Denials (logged by pyzmq at debug level) become warnings, at most one a minute: a
    robot with the wrong key is a support call, but it retries ten times a second."""

    interval_s = 60.0

    def __init__(self) -> None:
        self._last_denial = -self.interval_s

    def debug(self, msg: str, *args: object) -> None:
        text = msg % args if args else msg
        if text.startswith("DENIED"):
            now = time.monotonic()
            if now - self._last_denial >= self.interval_s:
                self._last_denial = now
                log.warning("curve_client_denied", detail=text,
                            hint="its public key is not in publish.curve_allowed_dir")

    def info(self, msg: str, *args: object) -> None:
        pass

    def warning(self, msg: str, *args: object) -> None:
        log.warning("curve_auth", detail=msg % args if args else msg)

    def error(self, msg: str, *args: object) -> None:
        log.error("curve_auth", detail=msg % args if args else msg)

    def exception(self, msg: str, *args: object) -> None:
        log.error("curve_auth", detail=msg % args if args else msg, exc_info=True)


def is_loopback(endpoint: str) -> bool:
    """True when ``endpoint`` can only be reached from this machine (tcp on a loopback
    address, ipc, inproc)."""
    transport, _, rest = endpoint.partition("://")
    if transport in ("ipc", "inproc"):
        return True
    if transport != "tcp":
        return False
    host = rest.rsplit(":", 1)[0].strip("[]")
    if ";" in host:  # tcp://source;destination
        host = host.split(";")[-1]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # '*', an interface name or a host name: reachable from outside


def warn_if_exposed(endpoint: str, curve: CurveServerKeys | None, what: str) -> None:
    if curve is None and not is_loopback(endpoint):
        log.warning("socket_exposed_without_curve", endpoint=endpoint, socket=what,
                    hint="anyone on the network can connect; set publish.curve_secret_key "
                         "(xrd-agent keys generate) or bind to 127.0.0.1")


@dataclass(frozen=True)
class GeneratedKeys:
    server_public: Path
    server_secret: Path
    client_public: Path
    client_secret: Path
    allowed_public: Path
    server_created: bool


def generate_keys(directory: str | Path, name: str = "client") -> GeneratedKeys:
    """Create (if missing) the server key pair in ``directory`` and a client pair ``name``,
    and put the client's public key in ``directory/allowed``. Never overwrites a key."""
    if not _KEY_NAME.match(name) or name == SERVER_NAME:
        raise ConfigError(f"client key name {name!r}: use letters, digits, '-', '_' or '.', and not "
                          f"{SERVER_NAME!r}")
    root = Path(directory)
    allowed = root / ALLOWED_SUBDIR
    for folder in (root, allowed):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    server_public, server_secret = root / f"{SERVER_NAME}.key", root / f"{SERVER_NAME}.key_secret"
    client_public, client_secret = root / f"{name}.key", root / f"{name}.key_secret"
    if client_secret.exists() or client_public.exists():
        raise ConfigError(f"{client_secret} already exists: choose another --name "
                          "(keys are never overwritten)")
    server_created = not server_secret.exists()
    if server_created and server_public.exists():
        raise ConfigError(f"{server_public} exists without its secret key: move it away first")
    previous = os.umask(0o077)  # secret files are born private (no window at the default mode)
    try:
        if server_created:
            zmq.auth.create_certificates(os.fspath(root), SERVER_NAME)
        zmq.auth.create_certificates(os.fspath(root), name)
    finally:
        os.umask(previous)
    for public in (server_public, client_public):
        public.chmod(0o644)
    shutil.copyfile(client_public, allowed / client_public.name)
    return GeneratedKeys(server_public, server_secret, client_public, client_secret,
                         allowed / client_public.name, server_created)
