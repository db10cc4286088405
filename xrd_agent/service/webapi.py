"""The read-only HTTP API and the review page (FastAPI on uvicorn, in a thread of its own).

Off by default (``[http] enabled``). Bound to 127.0.0.1 unless ``http.host`` says otherwise;
any other host needs a bearer token, and once a token is configured every request needs it
(``Authorization: Bearer ...``, or ``?token=`` for a browser opening the review page).

    GET  /health                      200 ready, 503 otherwise (the control op ``health``)
    GET  /results?sample_id=S         every stored message of the sample, newest first (404: none)
    GET  /results/{seq}               one stored message (404: none)
    GET  /results/{seq}/plot.png      scan, the first candidate's reference pattern, CAM regions
    GET  /review                      results that need a person, each with its plot and Top-k
    POST /results/{seq}/review        a chemist's decision -> ledger -> ``xrd.review`` (400: does not fit)
    GET  /openapi.json                this API; its bodies are the JSON Schemas generated from
                                      xrd_agent/messages.py (no second model of the messages)

The server never touches the worker's state: it reads the ledger through its own SQLite
connections (one per thread), and a review goes to the worker as a notice, which gives it its
seq and publishes it like every durable message. Handlers are plain functions run in
uvicorn's thread pool, so a slow plot never holds up the event loop.
"""

from __future__ import annotations

import errno
import hmac
import html
import ipaddress
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from xrd_agent import __version__, messages
from xrd_agent.config import HttpConfig
from xrd_agent.errors import MessageError
from xrd_agent.service import review as review_mod
from xrd_agent.service.ledger import Ledger
from xrd_agent.service.startup import StartupError, address_in_use

log = structlog.get_logger("xrd_agent.http")

REVIEW_WAIT_S = 30.0  # a review waits this long for the worker to record it
#: Linux scheduling niceness of the HTTP threads (event loop and handler pool): on a busy lab PC
#: the worker thread, which identifies scans, wins the CPU over a client flooding the API.
HTTP_THREAD_NICE = 10
_lowered = threading.local()


def lower_thread_priority() -> None:
    """Make the calling thread nicer (Linux schedules threads one by one); once per thread."""
    if getattr(_lowered, "done", False):
        return
    _lowered.done = True
    try:
        current = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(19, max(current, HTTP_THREAD_NICE)))
    except (AttributeError, OSError):  # not Linux, or not allowed: run at the process's priority
        pass
_SAMPLE_PATTERN = r"^[^\x00-\x1f\x7f]+$"
_SCHEMAS: dict[str, type] = {
    "HealthReply": messages.HealthReply,
    "BySampleReply": messages.BySampleReply,
    "ReviewRequest": messages.ReviewRequest,
    "HttpError": messages.HttpError,
    **{cls.__name__: cls for cls in messages.MESSAGE_TYPES.values()},
}


@dataclass(frozen=True)
class Backend:
    """What the HTTP server may ask of the running agent (all thread-safe)."""

    state_dir: Path
    health: Callable[[], dict[str, Any]]  # the health op's fields
    submit_review: Callable[[dict[str, Any]], Future]  # Pipeline.notify_review
    load_pattern: Callable[[str], Any]  # scan path -> Pattern (intensity, mask) or None
    reference: Callable[[str], np.ndarray | None]  # refcode -> reference pattern on the grid
    review_below: Callable[[], float]


def token_of(config: HttpConfig) -> str:
    """The configured bearer token (``token`` or the first line of ``token_file``), or ''."""
    if config.token_file:
        try:
            lines = Path(config.token_file).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise StartupError(f"http.token_file {config.token_file} cannot be read ({exc.strerror}); "
                               "make it readable by the agent's user") from None
        token = lines[0].strip() if lines else ""
        if not token:
            raise StartupError(f"http.token_file {config.token_file} is empty; write the token on its first line")
        return token
    return config.token.strip()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Any:
    return Response(messages.dumps(body), status_code=status, media_type="application/json",
                    headers=dict(headers or {}))


def _error(status: int, text: str, headers: Mapping[str, str] | None = None) -> Any:
    return _json({"error": text[:2000] or "error", "status": status}, status, headers)


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _responses(ok: Any, *errors: int, media: str = "application/json") -> dict[int | str, Any]:
    out: dict[int | str, Any] = {200: {"description": "OK", "content": {media: {"schema": ok}}}}
    for status in errors:
        out[status] = {"description": {400: "Bad request", 401: "Token missing or wrong", 404: "Not found",
                                       422: "Malformed request", 503: "Not healthy"}[status],
                       "content": {"application/json": {"schema": _ref("HealthReply" if status == 503 else "HttpError")}}}
    return out


def build_app(backend: Backend, token: str = "") -> Any:
    """The FastAPI application over ``backend``."""
    ledger = Ledger(backend.state_dir)  # this server's own; one SQLite connection per thread
    app = FastAPI(title="xrd-agent", version=__version__, docs_url=None, redoc_url=None,
                  description="Read-only results of an xrd-agent and the review page for results that need a "
                              "person. Bodies follow the JSON Schemas generated from xrd_agent/messages.py.")
    app.state.ledger = ledger

    @app.middleware("http")
    async def require_token(request: Request, call_next: Any) -> Any:
        if token:
            header = request.headers.get("authorization", "")
            given = header[7:].strip() if header.lower().startswith("bearer ") else request.query_params.get("token", "")
            if not hmac.compare_digest(given.encode(), token.encode()):
                return _error(401, "a bearer token is required: send 'Authorization: Bearer <token>' "
                                   "(the agent's http.token / http.token_file)", {"WWW-Authenticate": "Bearer"})
        return await call_next(request)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Any:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def malformed(request: Request, exc: RequestValidationError) -> Any:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body"))
        return _error(422, f"{where}: {first.get('msg', 'malformed request')}" if where else
                      str(first.get("msg", "malformed request")))

    @app.get("/health", responses=_responses(_ref("HealthReply"), 401, 503))
    def health() -> Any:
        """200 when the agent is ready and healthy, 503 otherwise; the body says why."""
        lower_thread_priority()
        body = {"ok": True, "op": "health", **backend.health()}
        return _json(body, 200 if body["healthy"] else 503)

    @app.get("/results", responses=_responses(_ref("BySampleReply"), 401, 404, 422))
    def by_sample(sample_id: str = Query(min_length=1, max_length=256, pattern=_SAMPLE_PATTERN,
                                         description="Sample id as the instrument writes it."),
                  limit: int = Query(100, ge=1, le=1000, description="Most messages, newest first.")) -> Any:
        """Every stored message of a sample (identifications, alerts, rejections, reviews), newest first."""
        lower_thread_priority()
        found, more = ledger.by_sample(sample_id, limit)
        if not found:
            return _error(404, f"no results for sample {sample_id!r}")
        return _json({"ok": True, "op": "by_sample", "sample_id": sample_id, "messages": found, "more": more})

    @app.get("/results/{seq}", responses=_responses(
        {"oneOf": [_ref(cls.__name__) for cls in messages.MESSAGE_TYPES.values() if cls is not messages.HeartbeatMessage]},
        401, 404, 422))
    def one(seq: int = PathParam(ge=1, description="The message's seq.")) -> Any:
        """One stored message, exactly as published."""
        lower_thread_priority()
        found = ledger.message(seq)
        return _json(found) if found is not None else _error(404, f"there is no result with seq {seq}")

    @app.get("/results/{seq}/plot.png", responses=_responses({"type": "string", "format": "binary"}, 401, 404, 422,
                                                              media="image/png"))
    def plot(seq: int = PathParam(ge=1)) -> Any:
        """The scan, the first candidate's reference pattern (drawn downwards) and the CAM regions."""
        lower_thread_priority()
        found = ledger.message(seq)
        if found is None or found.get("result") is None:
            return _error(404, f"there is no identification with seq {seq}")
        return Response(_plot(found, backend), media_type="image/png",
                        headers={"Cache-Control": "max-age=3600"})

    @app.get("/review", response_class=HTMLResponse)
    def review_page(request: Request) -> Any:
        """Results that need a person, newest first."""
        lower_thread_priority()
        stored = ledger.recent((messages.IDENTIFICATION, messages.ALERT, messages.REVIEW), 2000)
        items = review_mod.pending(stored, backend.review_below())
        return HTMLResponse(_page(items, request.query_params.get("token", "")))

    @app.post("/results/{seq}/review", responses=_responses(_ref("ReviewMessage"), 400, 401, 422),
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": _ref("ReviewRequest")}}}})
    async def review(request: Request, seq: int = PathParam(ge=1)) -> Any:
        """Record a chemist's decision; it is published as xrd.review with its own seq."""
        try:
            body = messages.validate_http("review_request", json.loads(await request.body() or b"null"))
        except ValueError as exc:  # MessageError is a ValueError too
            return _error(400, getattr(exc, "reason", None) or f"the body is not JSON: {exc}")
        return await run_in_threadpool(_record_review, ledger, backend, seq, body)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, description=app.description,
                                   routes=app.routes)
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            schemas.update({name: messages.object_schema(cls) for name, cls in _SCHEMAS.items()})
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _record_review(ledger: Ledger, backend: Backend, seq: int, body: dict[str, Any]) -> Any:
    lower_thread_priority()
    try:
        fields = review_mod.review_body(ledger.message(seq), seq, body)
        messages.build(messages.REVIEW, 1, fields, agent_id="check", instrument_id="check")  # refuse before queueing
    except (review_mod.ReviewError, MessageError) as exc:
        return _error(400, str(exc))
    try:
        published = backend.submit_review(fields).result(REVIEW_WAIT_S)
    except FutureTimeout:
        return _error(503, f"the agent did not record the review within {REVIEW_WAIT_S:g} s; try again")
    except Exception as exc:
        log.exception("review not recorded", of_seq=seq)
        return _error(503, f"the review was not recorded ({type(exc).__name__}); see the agent's log")
    message = published[0]
    log.info("review recorded", seq=message["seq"], of_seq=seq, decision=fields["decision"], refcode=fields["refcode"])
    return _json(message)


def _plot(found: Mapping[str, Any], backend: Backend) -> bytes:
    from xrd_agent.pattern import GRID_POINTS, GRID_START, GRID_STEP
    from xrd_agent.service.plot import render_png

    grid = GRID_START + GRID_STEP * np.arange(GRID_POINTS)
    result = found["result"]
    note = ""
    try:
        pattern = backend.load_pattern(found["path"])
    except Exception as exc:  # moved, rewritten, unreadable: plot what the ledger has
        pattern, note = None, f"the scan file cannot be read again ({type(exc).__name__})"
    if pattern is None and not note:
        note = "the scan file is no longer there"
    first = result["top"][0] if result["top"] else None
    reference = backend.reference(first["refcode"]) if first else None
    label = f"reference {first['name']} ({first['refcode']})" if first else ""
    title = (f"#{found['seq']} {found.get('sample_id') or '-'}: "
             + (f"{first['name']} (p {first['probability']:.2f})" if first else "no candidate")
             + f", confidence {result['confidence']:.2f}"
             + (f"  [{', '.join(result['flags'])}]" if result["flags"] else ""))
    return render_png(two_theta=grid, intensity=None if pattern is None else np.asarray(pattern.intensity),
                      mask=None if pattern is None else np.asarray(pattern.mask, bool), reference=reference,
                      reference_label=label, cam_regions=result["cam_regions"], title=title, note=note)


# --------------------------------------------------------------------------- the review page

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;max-width:70rem}
h1{font-size:1.3rem} .card{border:1px solid #ccc;border-radius:6px;padding:.8rem 1rem;margin:1rem 0}
.why{color:#a33;font-size:.9rem} table{border-collapse:collapse;margin:.4rem 0}
td,th{padding:.15rem .6rem;text-align:left;font-size:.9rem} img{max-width:100%;height:auto}
button{margin-right:.4rem} .done{background:#eef7ee} .err{color:#a33}
"""

_SCRIPT = """
async function decide(seq, decision) {
  const card = document.getElementById('card-' + seq);
  const body = {decision: decision, reviewer: document.getElementById('reviewer').value};
  const comment = card.querySelector('textarea').value; if (comment) body.comment = comment;
  if (decision === 'pick') {
    const picked = card.querySelector('input[type=radio]:checked');
    if (!picked) { card.querySelector('.msg').textContent = 'choose a candidate first'; return; }
    body.decision = picked.dataset.rank === '1' ? 'confirmed' : 'corrected';
    body.refcode = picked.value;
  }
  const headers = {'Content-Type': 'application/json'};
  const token = new URLSearchParams(location.search).get('token');
  if (token) headers['Authorization'] = 'Bearer ' + token;
  const reply = await fetch('/results/' + seq + '/review', {method: 'POST', headers: headers, body: JSON.stringify(body)});
  const data = await reply.json();
  const msg = card.querySelector('.msg');
  if (reply.ok) {
    card.classList.add('done');
    card.querySelectorAll('button,input,textarea').forEach(e => e.disabled = true);
    msg.className = 'msg'; msg.textContent = 'Recorded as xrd.review #' + data.seq + ': ' + data.decision +
      (data.name ? ' ' + data.name + ' (' + data.refcode + ')' : '');
  } else { msg.className = 'msg err'; msg.textContent = data.error; }
}
"""


def _page(items: list[review_mod.Pending], token: str) -> str:
    e = html.escape
    query = f"?token={e(token)}" if token else ""
    cards = []
    for item in items:
        m, seq = item.message, item.message["seq"]
        rows = "".join(
            f"<tr><td><input type='radio' name='pick-{seq}' value='{e(c['refcode'])}' data-rank='{c['rank']}'"
            f"{' checked' if c['rank'] == 1 else ''}></td><td>{c['rank']}</td><td>{e(c['name'])}</td>"
            f"<td>{e(c['refcode'])}</td><td>{c['probability']:.3f}</td></tr>" for c in m["result"]["top"])
        cards.append(f"""
<div class="card" id="card-{seq}" data-seq="{seq}" data-sample="{e(m['sample_id'] or '')}">
  <div><b>#{seq}</b> sample <b class="sample">{e(m['sample_id'] or '-')}</b> · {e(Path(m['path']).name)}
   · confidence {m['result']['confidence']:.2f} · {e(m['detected_at'])}</div>
  <div class="why">needs review: {e('; '.join(item.reasons))}</div>
  <img src="/results/{seq}/plot.png{query}" alt="scan, reference and CAM regions of #{seq}" width="900" height="360">
  <table><tr><th></th><th>rank</th><th>name</th><th>refcode</th><th>probability</th></tr>{rows}</table>
  <textarea rows="1" cols="60" placeholder="comment (optional)"></textarea><br>
  <button class="confirm" onclick="decide({seq}, 'pick')">Confirm selected candidate</button>
  <button class="failed" onclick="decide({seq}, 'failed')">Synthesis failed</button>
  <button class="unknown" onclick="decide({seq}, 'unknown')">Unknown phase</button>
  <span class="msg"></span>
</div>""")
    body = "".join(cards) or "<p id='empty'>Nothing waits for review.</p>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>xrd-agent review</title><style>{_STYLE}</style></head>
<body><h1>xrd-agent: results that need a person ({len(items)})</h1>
<p>Reviewer: <input id="reviewer" size="12" placeholder="initials"> · Each decision is recorded in the
agent's ledger and published as <code>xrd.review</code>.</p>
{body}
<script>{_SCRIPT}</script></body></html>"""


# --------------------------------------------------------------------------- the server thread


class HttpServer:
    """uvicorn serving :func:`build_app` from a daemon thread of its own. :meth:`bind` early
    (a port in use fails before the model loads), :meth:`serve` once the worker runs."""

    def __init__(self, config: HttpConfig) -> None:
        self.config = config
        self.token = token_of(config)
        if not is_loopback(config.host) and not self.token:
            raise StartupError(f"http.host = {config.host!r} exposes the HTTP API beyond this machine: set "
                               "http.token_file (a bearer token) or bind http.host to 127.0.0.1")
        self._socket: socket.socket | None = None
        self._server: Any = None
        self._app: Any = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        host = self.config.host if ":" not in self.config.host else f"[{self.config.host}]"
        return f"http://{host}:{self.port}"

    def bind(self) -> None:
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.config.host, self.config.port))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            endpoint = f"tcp://{self.config.host}:{self.config.port}"
            if exc.errno == errno.EADDRINUSE:
                raise address_in_use(endpoint, "http.port") from None
            raise StartupError(f"cannot listen on {endpoint} for HTTP ({exc.strerror}); "
                               "check http.host / http.port") from None
        self._socket = sock
        self.port = sock.getsockname()[1]

    def serve(self, backend: Backend, timeout: float = 30.0) -> None:
        import uvicorn

        if self._socket is None:
            self.bind()
        sock = self._socket
        self._app = build_app(backend, self.token)
        config = uvicorn.Config(self._app, log_level="warning", access_log=False, lifespan="off",
                                timeout_keep_alive=5)
        self._server = uvicorn.Server(config)

        def run() -> None:
            lower_thread_priority()
            try:
                self._server.run(sockets=[sock])
            except BaseException:  # noqa: BLE001 - the agent keeps identifying without its HTTP API
                log.exception("the HTTP server stopped")

        self._thread = threading.Thread(target=run, name="xrd-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise StartupError("the HTTP server did not start; see the agent's log")
            time.sleep(0.02)
        log.info("http_bound", url=self.url, token=bool(self.token))

    def stop(self, timeout: float = 5.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._app is not None:
            self._app.state.ledger.close()
