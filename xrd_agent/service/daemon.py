"""``xrd-agent run``: the long-running service, as systemd (``Type=notify``) runs it.

Start order: lock the state dir → bind the PUB and control sockets (a port in use fails
fast, before seconds of model loading) → load the engine → start the worker (it first
re-publishes what was recorded but maybe not sent) → start the watcher (its first act is a
reconciliation scan: files that arrived while the agent was down) → ``xrd.status`` ready,
``READY=1``.

The main thread then only waits for signals and pings the systemd watchdog, and only
while the worker is turning (a hung engine or a dead worker stops the pings and systemd
restarts the service). SIGTERM/SIGINT: stop watching, drain the queue, publish
``stopped``, close. SIGHUP: re-read the configuration; expectations, thresholds, batch
and heartbeat settings apply at once, a changed export folder or socket address is
re-opened, a different model needs a restart.
"""

from __future__ import annotations

import dataclasses
import fcntl
import inspect
import json
import os
import select
import signal
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from xrd_agent import messages
from xrd_agent.config import Config, load_config
from xrd_agent.errors import ConfigError, XrdAgentError
from xrd_agent.decide import aliases_of
from xrd_agent.service import health as health_mod
from xrd_agent.service import startup
from xrd_agent.service.debounce import Debouncer, signature_format
from xrd_agent.service.expectations import ExpectationBook
from xrd_agent.service.instrument import Instrument
from xrd_agent.service.ledger import Ledger, path_text
from xrd_agent.service.pipeline import Identity, Pipeline, settings_for
from xrd_agent.service.readings import Readings
from xrd_agent.service.sdnotify import Notifier
from xrd_agent.service.watcher import FolderEvent, Watcher, choose_mode

log = structlog.get_logger("xrd_agent.daemon")

ENDPOINTS_FILE = "endpoints.json"
LOCK_FILE = "agent.lock"
#: The worker may stay silent this long (one batch) before the agent counts as unhealthy,
#: when systemd gives no watchdog interval.
DEFAULT_MAX_SILENCE_S = 60.0


class StateLocked(XrdAgentError, RuntimeError):
    """Another agent already runs on this state directory."""


class Daemon:
    def __init__(self, config: Config, *, config_path: str | None = None,
                 overrides: Mapping[str, Any] | None = None, notifier: Notifier | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.overrides = dict(overrides or {})
        self.notifier = notifier or Notifier()
        self._term = False
        self._hup = False
        self._stopping = threading.Event()
        self._lock_fd: int | None = None

    # -- signals ---------------------------------------------------------------------------
    def _on_term(self, signum: int, frame: Any) -> None:
        self._term = True

    def _on_hup(self, signum: int, frame: Any) -> None:
        self._hup = True

    def _install_signals(self) -> int:
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        signal.signal(signal.SIGHUP, self._on_hup)
        return r

    # -- pieces ------------------------------------------------------------------------------
    def _lock_state(self, state_dir: Path) -> None:
        fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateLocked(f"another xrd-agent is already running with state directory {state_dir}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _bind(self, config: Config) -> None:
        import zmq

        from xrd_agent.service import security
        from xrd_agent.service.control import ControlServer
        from xrd_agent.service.publisher import Publisher

        self.curve = security.server_keys(config.publish)
        try:
            self.publisher = Publisher(self.context, config.publish.pub_endpoint,
                                       high_water_mark=config.publish.high_water_mark, curve=self.curve)
        except zmq.ZMQError as exc:
            raise _bind_error(exc, config.publish.pub_endpoint, "publish.pub_endpoint", "--pub") from None
        try:
            self.control = ControlServer(self.context, config.publish.control_endpoint, self._handlers(),
                                         curve=self.curve)
            self.control.start()
        except zmq.ZMQError as exc:
            self.publisher.close()
            raise _bind_error(exc, config.publish.control_endpoint, "publish.control_endpoint", "--control") from None
        except RuntimeError:
            self.publisher.close()
            raise
        self.http = None
        if config.http.enabled:
            from xrd_agent.service.webapi import HttpServer

            try:
                self.http = HttpServer(config.http)
                self.http.bind()
            except XrdAgentError:
                self.control.stop()
                self.publisher.close()
                raise
        self._write_endpoints()

    def _handlers(self) -> dict[str, Any]:
        from xrd_agent.service.control import replay_handler

        return {"replay": replay_handler(self.ledger.replay, self.ledger.last_seq),
                "status": self._status_reply, "expect": self._expect,
                "by_sample": self._by_sample, "health": self.health}

    def _serve_http(self) -> None:
        """The read-only HTTP API and review page, in a thread of its own (``[http]``)."""
        from xrd_agent.service.webapi import Backend

        backend = Backend(state_dir=self.state_dir, health=lambda: self.health(None),
                          submit_review=self.pipeline.notify_review, load_pattern=self._load_pattern,
                          reference=self._reference, review_below=lambda: self.config.http.review_below)
        self.http.serve(backend)
        log.info("http ready", url=self.http.url)

    def _load_pattern(self, path: str) -> Any:
        """The scan at ``path`` (from the ledger, never from a request) prepared as the model saw it."""
        from xrd_agent import readers
        from xrd_agent.preprocess import prepare

        scan_path = Path(path)
        if not scan_path.is_file():
            return None
        scan = readers.read_scan(scan_path, wavelength=self.instrument.wavelength_for(scan_path))
        return prepare(scan, self.config.gate)

    def _reference(self, refcode: str) -> Any:
        library = getattr(getattr(self, "engine", None), "library_", None)
        if library is None:
            return None
        try:
            index = library.refcodes.index(refcode)
        except ValueError:
            return None
        return library.patterns16[index].astype("float32")

    def _write_endpoints(self) -> None:
        data = {"pub": self.publisher.endpoint, "control": self.control.endpoint, "pid": os.getpid()}
        if getattr(self, "http", None) is not None:
            data["http"] = self.http.url
        tmp = self.state_dir / (ENDPOINTS_FILE + ".tmp")
        tmp.write_text(json.dumps(data) + "\n")
        os.replace(tmp, self.state_dir / ENDPOINTS_FILE)

    def _make_watcher(self, config: Config) -> Watcher:
        directory = Path(config.watch.directory).absolute()
        instrument = self.instrument

        def classify(path: Path) -> str | None:
            fmt = signature_format(path)  # one look at the header serves both questions
            return None if instrument.settle_only(path, fmt) else fmt

        debouncer = Debouncer(
            settle_s=instrument.settle_s,
            incomplete_timeout_s=config.watch.incomplete_timeout_s,
            is_complete=self.readings.complete,  # the worker reuses this read of the file version
            classify=classify,
            settle_for=instrument.settle_for,
        )
        mode = choose_mode(config.watch.mode, directory, self.instrument.prefers_polling)
        return Watcher(
            directory,
            debouncer=debouncer,
            on_ready=lambda due: self.pipeline.submit(due, self._stopping),
            on_folder=self._on_folder,
            skip=lambda due: self.ledger.seen(path_text(due.path), due.signature.size, due.signature.mtime_ns),
            ignore=self.instrument.ignores,
            mode=mode,
            recursive=config.watch.recursive,
            poll_interval_s=config.watch.poll_interval_s,
            rescan_interval_s=config.watch.rescan_interval_s,
        )

    def _on_folder(self, event: FolderEvent) -> None:
        """Watcher thread: the export folder vanished or came back."""
        self.pipeline.notify_folder(event.state, event.path)
        if event.state == "missing":
            self.state, self.detail = "degraded", f"export folder {event.path} is missing"
        else:
            self.state, self.detail = "ready", f"watching {event.path}"
        if hasattr(self, "watcher"):  # not for the report during start: ready follows anyway
            self.pipeline.notify_status(self.state, self.detail)
        self.notifier.status(f"{self.state}: {self.detail}")

    # -- control handlers (control thread) ------------------------------------------------------
    def _status_reply(self, request: dict[str, Any]) -> dict[str, Any]:
        return {
            "state": self.state,
            "detail": self.detail,
            "counters": self.pipeline.counters.as_dict() if hasattr(self, "pipeline") else {},
            "last_seq": self.ledger.last_seq(),
            "uptime_s": round(time.monotonic() - self.started, 3),
            "queue_depth": self.pipeline.depth if hasattr(self, "pipeline") else 0,
            "model_version": self.pipeline.model_version if hasattr(self, "pipeline") else "",
            "library_version": self.pipeline.library_version if hasattr(self, "pipeline") else "",
        }

    def _expect(self, request: dict[str, Any]) -> dict[str, Any]:
        if not hasattr(self, "expectations"):
            raise ConfigError("the agent is still starting; send the expectation again in a few seconds")
        elements = request.get("elements")
        extra: dict[str, Any] = {}
        if elements is not None and "elements" in inspect.signature(self.expectations.expect).parameters:
            extra["elements"] = elements  # the identification side uses them where it knows how
        try:
            exp = self.expectations.expect(request["sample_id"], request["phases"],
                                           request.get("top_k", self.config.model.top_k), request, **extra)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        log.info("expectation set", sample_id=exp.sample_id, phases=list(exp.phases), top_k=exp.top_k,
                 elements=elements, amorphous_below=exp.amorphous_below,
                 low_crystallinity_below=exp.low_crystallinity_below)
        reply = {"sample_id": exp.sample_id, "phases": list(exp.phases), "top_k": exp.top_k}
        if elements is not None:
            reply["elements"] = list(getattr(exp, "elements", None) or elements)
        return reply

    def _by_sample(self, request: dict[str, Any]) -> dict[str, Any]:
        found, more = self.ledger.by_sample(request["sample_id"], int(request.get("limit", 100)))
        return {"sample_id": request["sample_id"], "messages": found, "more": more}

    def observe(self) -> health_mod.Observed:
        """What the agent sees of itself now (for ``health``; any thread)."""
        pipeline = getattr(self, "pipeline", None)
        watcher = getattr(self, "watcher", None)
        interval = self.notifier.watchdog_interval_s
        error = None if pipeline is None or pipeline.error is None else repr(pipeline.error)[:200]
        limit = interval * 2 if interval else DEFAULT_MAX_SILENCE_S
        return health_mod.Observed(
            state=self.state,
            folder=str(watcher.directory) if watcher is not None else str(self.config.watch.directory),
            folder_present=bool(watcher.present) if watcher is not None else True,
            worker_alive=pipeline is not None and pipeline.alive,
            worker_error=error,
            worker_silent_s=max(0.0, time.monotonic() - pipeline.beat) if pipeline is not None else 0.0,
            max_silence_s=(pipeline.silence_limit(limit) if pipeline is not None else limit),
            queue_depth=pipeline.depth if pipeline is not None else 0,
            queue_size=self.config.watch.queue_size,
            model_loaded=bool(getattr(self, "engine_version", "") or getattr(self, "library_version", "")),
        )

    def health(self, request: dict[str, Any] | None = None) -> dict[str, Any]:
        """The ``health`` op's fields (also served as HTTP ``/health``)."""
        seen = self.observe()
        why = health_mod.reasons(seen)
        state = "degraded" if seen.state == "ready" and why else seen.state
        last = self.ledger.last_scan_at()
        age = None if last is None else round(max(0.0, (datetime.now(UTC) - last).total_seconds()), 3)
        return {"state": state, "healthy": state == "ready" and not why, "reasons": why,
                "queue_depth": seen.queue_depth, "queue_size": seen.queue_size, "last_scan_age_s": age,
                "worker_silent_s": round(seen.worker_silent_s, 3), "last_seq": self.ledger.last_seq(),
                "uptime_s": round(time.monotonic() - self.started, 3),
                "model_version": str(getattr(self, "engine_version", "") or ""),
                "library_version": str(getattr(self, "library_version", "") or "")}

    # -- the service -----------------------------------------------------------------------------
    def _publish_direct(self, state: str, detail: str) -> None:
        """A status message from the main thread, while the worker is not running."""
        with self.ledger.transaction() as tx:
            msg = tx.build(lambda seq: messages.build(
                messages.STATUS, seq, {"state": state, "detail": detail, "counters": self._counters()},
                agent_id=self.config.service.agent_id, instrument_id=self.config.service.instrument_id,
                model_version=str(getattr(self, "engine_version", "")),
                library_version=str(getattr(self, "library_version", ""))))
        try:
            if self.publisher.send(msg):
                self.ledger.mark_sent([msg["seq"]])
        except Exception:
            log.exception("status not published", state=state)

    def _republish_unsent(self) -> None:
        """Messages recorded before a crash but maybe never sent, oldest first (main thread,
        before the worker exists; subscribers drop the ones they already have by seq)."""
        pending = self.ledger.unsent()
        sent = [m["seq"] for m in pending if self.publisher.send(m)]
        self.ledger.mark_sent(sent)
        if pending:
            log.info("re-published unsent messages", count=len(pending), first=pending[0]["seq"])

    def _abort(self, detail: str) -> None:
        """Start-up failed after the sockets were bound: say so on the wire, then let go."""
        log.error("start-up failed", detail=detail)
        self.notifier.status(f"failed: {detail}"[:200])
        try:
            self._publish_direct("stopped", detail[:2000])
        finally:
            self.control.stop()
            self.publisher.close()
            self.context.term()
            self.ledger.close()

    def _counters(self) -> dict[str, int]:
        return self.pipeline.counters.as_dict() if hasattr(self, "pipeline") else {}

    def run(self) -> int:
        import zmq

        from xrd_agent.service.engines import make_engine

        config = self.config
        self.started = time.monotonic()
        self.state, self.detail = "starting", ""
        self.state_dir = startup.prepare_state_dir(Path(config.service.state_dir).absolute())
        self._lock_state(self.state_dir)
        wake = self._install_signals()
        self.notifier.status("starting: binding sockets")
        self.ledger = Ledger(self.state_dir)
        self.context = zmq.Context()
        self._bind(config)
        log.info("sockets bound", pub=self.publisher.endpoint, control=self.control.endpoint,
                 state_dir=str(self.state_dir), last_seq=self.ledger.last_seq())
        self._republish_unsent()
        self._publish_direct("starting", "loading the identification model")

        self.notifier.status("starting: loading the model")
        t0 = time.monotonic()
        try:
            engine = make_engine(config)
            engine.load()
        except BaseException as exc:
            self._abort(f"the identification engine could not be loaded: {exc}")
            raise
        self.engine_version, self.library_version = engine.model_version, engine.library_version
        log.info("engine ready", engine=type(engine).__name__, model_version=engine.model_version,
                 library_version=engine.library_version, load_s=round(time.monotonic() - t0, 2))

        self.instrument = Instrument(config)
        self.readings = Readings()  # one read per file version, shared by the debouncer and the worker
        library = getattr(engine, "library_", None)
        self.expectations = ExpectationBook(config.service.expectations, config.model.top_k, self.ledger,
                                            materials=getattr(library, "materials", None),
                                            configured_elements=config.service.expected_elements)
        self.pipeline = Pipeline(
            ledger=self.ledger,
            engine=engine,
            send=self.publisher.send,
            expectations=self.expectations,
            identity=Identity(config.service.agent_id, config.service.instrument_id),
            root=Path(config.watch.directory),
            read=self.readings.get,
            wavelength_for=self.instrument.wavelength_for,
            sample_id_of=self.instrument.sample_id,
            queue_size=config.watch.queue_size,
            settings=settings_for(config, aliases_of(getattr(engine, "library_", None))),
        )
        self.pipeline.start()
        self.watcher = self._make_watcher(config)
        self.watcher.start()
        self.engine = engine
        if self.http is not None:
            self._serve_http()
        self.state = "ready" if self.watcher.present else "degraded"
        self.detail = f"watching {self.watcher.directory} ({self.watcher.mode})"
        self.pipeline.notify_status(self.state, self.detail)
        self.notifier.ready(f"{self.state}: {self.detail}")
        log.info("ready", folder=str(self.watcher.directory), mode=self.watcher.mode,
                 pub=self.publisher.endpoint, control=self.control.endpoint)
        try:
            code = self._loop(wake)
        finally:
            self._shutdown()
        return code

    def _loop(self, wake: int) -> int:
        interval = self.notifier.watchdog_interval_s
        max_silence = interval * 2 if interval else DEFAULT_MAX_SILENCE_S
        next_ping = 0.0
        while True:
            if self._term:
                return 0
            if self._hup:
                self._hup = False
                self.reload()
            if self.pipeline.error is not None or not self.pipeline.alive:
                log.error("the worker stopped; exiting so that systemd restarts the agent",
                          error=repr(self.pipeline.error))
                self.notifier.status("failed: the worker stopped")
                return 1
            now = time.monotonic()
            if interval and now >= next_ping:
                if self.pipeline.healthy(max_silence):
                    self.notifier.watchdog()
                else:
                    log.warning("worker silent: withholding the watchdog ping",
                                silent_s=round(now - self.pipeline.beat, 1))
                next_ping = now + interval
            timeout = min(1.0, max(0.05, next_ping - time.monotonic())) if interval else 1.0
            try:
                select.select([wake], [], [], timeout)
                os.read(wake, 512)
            except (BlockingIOError, InterruptedError):
                pass

    def _shutdown(self) -> None:
        log.info("stopping: draining the queue", queued=self.pipeline.depth)
        self.notifier.stopping(f"draining {self.pipeline.depth} queued scan(s)")
        self.state = "draining"
        self._stopping.set()
        self.watcher.stop()
        if self.http is not None:
            self.http.stop()
        self.pipeline.notify_status("draining", f"{self.pipeline.depth} scan(s) queued")
        self.pipeline.stop(drain=True)
        self.state = "stopped"
        self._publish_direct("stopped", "the agent stopped cleanly")
        self.control.stop()
        self.publisher.close()
        self.context.term()
        counts = self.ledger.counts()
        self.ledger.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
        log.info("stopped", **counts)

    # -- SIGHUP ------------------------------------------------------------------------------------
    def reload(self) -> None:
        log.info("reloading configuration", path=self.config_path)
        self.notifier.reloading()
        try:
            new = load_config(self.config_path, self.overrides)
            Instrument(new)  # validates the profile name and default anode
        except XrdAgentError as exc:
            log.error("configuration not reloaded: keeping the running one", reason=str(exc))
            self.notifier.ready(f"{self.state}: configuration NOT reloaded ({exc})")
            return
        old, self.config = self.config, new
        self.pipeline.notify_status("reloading", "configuration changed (SIGHUP)")
        self.expectations.reload(new.service.expectations, new.model.top_k, new.service.expected_elements)
        # thresholds and Top-k apply at once; the network, library and physics check stay as loaded
        keep = dataclasses.replace(new, model=dataclasses.replace(
            new.model, engine=old.model.engine, model_dir=old.model.model_dir, library_dir=old.model.library_dir,
            verify=old.model.verify))
        fresh, settings = settings_for(keep), self.pipeline.settings  # batch size and allowance follow the loaded check
        settings.heartbeat_s, settings.max_batch, settings.allowance_s = (
            fresh.heartbeat_s, fresh.max_batch, fresh.allowance_s)
        reconfigure = getattr(self.pipeline.engine, "reconfigure", None)
        if callable(reconfigure):
            self.pipeline.call_in_worker(lambda: reconfigure(keep))
        if (old.model.model_dir, old.model.engine, old.model.library_dir, old.model.verify) != (
                new.model.model_dir, new.model.engine, new.model.library_dir, new.model.verify):
            log.warning("a different model, library or physics check takes a restart: `systemctl restart xrd-agent`")
        endpoints = ("pub_endpoint", "control_endpoint", "curve_secret_key", "curve_allowed_dir")
        if any(getattr(old.publish, k) != getattr(new.publish, k) for k in endpoints):
            self._rebind(old, new)
        elif self.curve is not None:
            from xrd_agent.service import security

            security.reload_allow_list(self.context, self.curve)  # a robot's key added or removed
        if old.watch != new.watch or old.service.default_anode != new.service.default_anode:
            self.instrument = Instrument(new)
            self.pipeline.use_instrument(self.instrument.wavelength_for, self.instrument.sample_id)
            self._stopping.set()
            self.watcher.stop()
            self._stopping.clear()
            self.pipeline.root = Path(new.watch.directory).absolute()
            self.watcher = self._make_watcher(new)
            self.watcher.start()
        else:
            self.watcher.rescan()
        self.detail = f"watching {self.watcher.directory} ({self.watcher.mode})"
        self.state = "ready" if self.watcher.present else "degraded"
        self.pipeline.notify_status(self.state, f"configuration reloaded; {self.detail}")
        self.notifier.ready(f"{self.state}: {self.detail}")
        log.info("configuration reloaded", folder=str(self.watcher.directory))

    def _rebind(self, old: Config, new: Config) -> None:
        """New socket addresses or CURVE keys. A socket that changes is closed before its
        successor binds (the same address may be asked for again, now with keys): subscribers
        see a gap of milliseconds, reconnect by themselves and fill it by replay. An address
        that cannot be bound falls back to the old one."""
        from xrd_agent.service import security
        from xrd_agent.service.control import ControlServer
        from xrd_agent.service.publisher import Publisher

        try:
            curve = security.server_keys(new.publish)
        except XrdAgentError as exc:
            log.error("new CURVE keys refused: keeping the sockets as they are", reason=str(exc))
            return
        old_curve, o, n = self.curve, old.publish, new.publish
        keys_changed = (o.curve_secret_key, o.curve_allowed_dir) != (n.curve_secret_key, n.curve_allowed_dir)
        if keys_changed or o.pub_endpoint != n.pub_endpoint:
            done = threading.Event()

            def swap_publisher() -> None:  # in the worker: the only thread that uses the publisher
                try:
                    self.publisher.close()
                    self.publisher = _bind_retrying(
                        lambda: Publisher(self.context, n.pub_endpoint, high_water_mark=n.high_water_mark, curve=curve),
                        lambda: Publisher(self.context, o.pub_endpoint, high_water_mark=o.high_water_mark,
                                          curve=old_curve), "PUB")
                    self.pipeline.use_sender(self.publisher.send)
                finally:
                    done.set()

            self.pipeline.call_in_worker(swap_publisher)
            if not done.wait(60):
                log.error("the worker did not switch the PUB socket within 60 s")
        if keys_changed or o.control_endpoint != n.control_endpoint:
            self.control.stop()

            def control(endpoint: str, keys: Any) -> ControlServer:
                server = ControlServer(self.context, endpoint, self._handlers(), curve=keys)
                server.start()
                return server

            self.control = _bind_retrying(lambda: control(n.control_endpoint, curve),
                                          lambda: control(o.control_endpoint, old_curve), "control")
        self.curve = curve
        self._write_endpoints()
        log.info("sockets re-bound", pub=self.publisher.endpoint, control=self.control.endpoint)


def _bind_error(exc: Any, endpoint: str, setting: str, flag: str) -> XrdAgentError:
    """A failed bind as one line that says what to do."""
    import zmq

    if exc.errno == zmq.EADDRINUSE:
        return startup.address_in_use(endpoint, setting, flag)
    if exc.errno == zmq.EADDRNOTAVAIL:
        return startup.StartupError(f"cannot listen on {endpoint}: this machine has no such address; "
                                    f"set {setting} or {flag} to one of its addresses (or 127.0.0.1)")
    return startup.StartupError(f"cannot listen on {endpoint} ({exc.strerror}); check {setting} / {flag} "
                                "(e.g. tcp://127.0.0.1:5556)")


def _bind_retrying(new: Any, old: Any, what: str, attempts: int = 50) -> Any:
    """Bind with ``new()``; a just-closed socket may hold the port for some milliseconds,
    so retry for a few seconds; then fall back to ``old()`` (retried the same way)."""
    import zmq

    for make, label in ((new, "new"), (old, "old")):
        for _ in range(attempts):
            try:
                return make()
            except zmq.ZMQError as exc:
                if exc.errno != zmq.EADDRINUSE:
                    log.error(f"{what} socket could not be bound", address=label, error=str(exc))
                    break
                time.sleep(0.1)
        log.error(f"{what} socket: the {label} address cannot be bound")
    raise RuntimeError(f"the {what} socket could be bound neither on the new nor on the old address")


def run_service(config_path: str | None, overrides: Mapping[str, Any]) -> int:
    """Entry point of ``xrd-agent run`` after argument parsing."""
    from xrd_agent.service import logs as service_logging

    config = load_config(config_path, overrides)
    service_logging.configure(config.service.log_level)
    return Daemon(config, config_path=config_path, overrides=overrides).run()
