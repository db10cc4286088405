"""The HTTP API of a real agent subprocess ([http] enabled, cosine engine on the tiny library):
health, results by sample and seq, the plot, bad input (404, 422, 400, 401), a review recorded
through the worker and received by a real ZeroMQ subscriber, and OpenAPI from messages.py."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import wait_until as wait

pytest.importorskip("fastapi", reason="the HTTP API needs the `http` extra (fastapi, uvicorn)")
pytest.importorskip("uvicorn", reason="the HTTP API needs the `http` extra (fastapi, uvicorn)")

from xrd_agent import messages  # noqa: E402
from xrd_agent.client import ControlClient  # noqa: E402
from xrd_agent.library.artifact import Library  # noqa: E402
from xrd_agent.testing.agent import AgentProcess, agent_config, write_config  # noqa: E402
from xrd_agent.testing.capture import Capture  # noqa: E402
from xrd_agent.testing.library import save_tiny_library  # noqa: E402
from xrd_agent.testing.simulated_d8 import SimulatedD8  # noqa: E402


def http(method: str, url: str, body: object = None, token: str | None = None) -> tuple[int, bytes, dict]:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, reply.read(), dict(reply.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)




class Site:
    def __init__(self, root: Path, library_dir: Path, **http_settings) -> None:
        self.root = root
        self.export = root / "export"
        self.export.mkdir()
        settings = agent_config(root, model={"engine": "cosine", "library_dir": str(library_dir)},
                                watch={"mode": "polling"}, http={"enabled": True, "port": 0, **http_settings})
        self.agent = AgentProcess(write_config(root / "agent.toml", settings), root / "state")
        self.d8 = SimulatedD8(self.export, Library.load(library_dir), seed=21)

    @property
    def url(self) -> str:
        return self.agent.endpoints["http"]


@pytest.fixture(scope="module")
def library_dir(tmp_path_factory) -> Path:
    return save_tiny_library(tmp_path_factory.mktemp("lib") / "tiny")


@pytest.fixture(scope="module")
def site(tmp_path_factory, library_dir):
    s = Site(tmp_path_factory.mktemp("http"), library_dir)
    with s.agent:
        s.agent.start()
        s.d8.export("H-1.xy", s.d8.measure("H-1", ["TSTMOF03"]))
        s.d8.export("H-2.xy", s.d8.measure("H-2", ["TSTMOF04", "TSTMOF08"], weights=[0.55, 0.45]))
        wait(lambda: http("GET", f"{s.url}/results?sample_id=H-2")[0] == 200, what="H-2 recorded")
        wait(lambda: http("GET", f"{s.url}/results?sample_id=H-1")[0] == 200, what="H-1 recorded")
        yield s
        s.agent.stop()


def identification_of(site: Site, sample_id: str) -> dict:
    status, body, _ = http("GET", f"{site.url}/results?sample_id={sample_id}")
    assert status == 200
    return next(m for m in json.loads(body)["messages"] if m["topic"] == messages.IDENTIFICATION)


def test_health_is_200_when_ready(site):
    status, body, headers = http("GET", f"{site.url}/health")
    assert status == 200 and headers["content-type"] == "application/json"
    reply = messages.validate_reply(json.loads(body))
    assert reply["healthy"] is True and reply["library_version"] == "tiny-12-3"


def test_results_by_sample_and_by_seq(site):
    status, body, _ = http("GET", f"{site.url}/results?sample_id=H-1")
    assert status == 200
    reply = messages.validate_reply(json.loads(body))
    assert reply["op"] == "by_sample" and reply["messages"]
    ident = identification_of(site, "H-1")
    assert ident["result"]["top"][0]["refcode"] == "TSTMOF03"
    status, body, _ = http("GET", f"{site.url}/results/{ident['seq']}")
    assert status == 200 and json.loads(body) == ident
    messages.validate(json.loads(body))


def test_plot_is_a_png_of_the_result(site):
    ident = identification_of(site, "H-1")
    status, body, headers = http("GET", f"{site.url}/results/{ident['seq']}/plot.png")
    assert status == 200 and headers["content-type"] == "image/png"
    assert body[:8] == b"\x89PNG\r\n\x1a\n" and len(body) > 10_000


@pytest.mark.parametrize(("path", "code", "words"), [
    ("/results?sample_id=NO-SUCH", 404, "no results for sample 'NO-SUCH'"),
    ("/results/999999", 404, "no result with seq 999999"),
    ("/results/999999/plot.png", 404, "no identification with seq 999999"),
    ("/results", 422, "sample_id"),
    ("/results?sample_id=", 422, "sample_id"),
    ("/results?sample_id=H-1&limit=0", 422, "limit"),
    ("/results/abc", 422, "seq"),
    ("/results/-3", 422, "seq"),
])
def test_bad_requests_get_a_json_reason(site, path, code, words):
    status, body, headers = http("GET", site.url + path)
    assert status == code and headers["content-type"] == "application/json"
    error = json.loads(body)
    assert error["status"] == code and words in error["error"]
    messages.validate_http("error", error)


def test_reviews_that_do_not_fit_are_400(site):
    ident = identification_of(site, "H-1")
    status_seq = 1  # the first message is xrd.status "starting"
    cases = [
        (ident["seq"], {"decision": "corrected", "refcode": "NOTACANDIDATE"}, "not a candidate"),
        (ident["seq"], {"decision": "corrected"}, "needs the refcode"),
        (ident["seq"], {"decision": "failed", "refcode": ident["result"]["top"][0]["refcode"]}, "takes no refcode"),
        (ident["seq"], {"decision": "maybe"}, "decision"),
        (ident["seq"], {"decision": "unknown", "extra": 1}, "extra"),
        (999999, {"decision": "unknown"}, "no result with seq 999999"),
        (status_seq, {"decision": "unknown"}, "not an identification"),
    ]
    for seq, body, words in cases:
        status, reply, _ = http("POST", f"{site.url}/results/{seq}/review", body)
        assert status == 400, (body, reply)
        assert words in json.loads(reply)["error"], (body, reply)
    status, reply, _ = http("POST", f"{site.url}/results/{ident['seq']}/review", b"{not json")
    assert status == 400 and "not JSON" in json.loads(reply)["error"]


def test_a_review_is_recorded_published_replayed_and_listed_by_sample(site):
    ident = identification_of(site, "H-2")
    second = ident["result"]["top"][1]
    with Capture(site.agent.pub, site.agent.control, since_seq=None) as capture:
        status, body, _ = http("POST", f"{site.url}/results/{ident['seq']}/review",
                               {"decision": "corrected", "refcode": second["refcode"], "reviewer": "AK",
                                "comment": "second phase present"})
        assert status == 200, body
        review = json.loads(body)
        messages.validate(review)
        assert review["topic"] == messages.REVIEW and review["of_seq"] == ident["seq"]
        assert review["decision"] == "corrected" and review["refcode"] == second["refcode"]
        assert review["model_refcode"] == ident["result"]["top"][0]["refcode"] and review["seq"] > ident["seq"]
        events = capture.wait_for(lambda ev: any(e.topic == messages.REVIEW for e in ev))
    live = next(e for e in events if e.topic == messages.REVIEW)
    assert live.seq == review["seq"] and live.of_seq == ident["seq"] and live.decision == "corrected"
    client = ControlClient(site.agent.control)
    try:
        replayed = client.replay_page(review["seq"] - 1, 1)["messages"][0]
        mine = client.by_sample("H-2")["messages"]
    finally:
        client.close()
    assert replayed == review
    assert mine[0] == review  # newest first
    done = subprocess.run([sys.executable, "-m", "xrd_agent", "result", "H-2", "--control", site.agent.control],
                          capture_output=True, text=True, timeout=60)
    assert f"review of #{ident['seq']} H-2: corrected" in done.stdout.splitlines()[0]


def test_openapi_is_generated_from_the_message_contract(site):
    status, body, _ = http("GET", f"{site.url}/openapi.json")
    assert status == 200
    document = json.loads(body)
    schemas = document["components"]["schemas"]
    assert schemas["ReviewMessage"] == messages.object_schema(messages.ReviewMessage)
    assert schemas["HealthReply"] == messages.object_schema(messages.HealthReply)
    review_op = document["paths"]["/results/{seq}/review"]["post"]
    assert review_op["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ReviewRequest"}
    assert set(document["paths"]) >= {"/health", "/results", "/results/{seq}", "/results/{seq}/plot.png", "/review"}


def test_health_is_503_with_reasons_when_the_folder_vanishes(tmp_path, library_dir):
    s = Site(tmp_path, library_dir)
    with s.agent:
        s.agent.start()
        s.export.rename(tmp_path / "away")

        def degraded():
            status, body, _ = http("GET", f"{s.url}/health")
            return (status, json.loads(body)) if status == 503 else None

        status, reply = wait(degraded, what="503")
        assert reply["state"] == "degraded" and any("export folder" in r for r in reply["reasons"])
        s.agent.stop()


def test_a_configured_token_is_required(tmp_path, library_dir):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    s = Site(tmp_path, library_dir, token_file=str(token_file))
    with s.agent:
        s.agent.start()
        status, body, headers = http("GET", f"{s.url}/health")
        assert status == 401 and headers.get("www-authenticate") == "Bearer"
        assert "bearer token" in json.loads(body)["error"]
        assert http("GET", f"{s.url}/health", token="wrong")[0] == 401
        assert http("GET", f"{s.url}/results?sample_id=X", token="wrong")[0] == 401
        assert http("GET", f"{s.url}/health", token="s3cret-token")[0] == 200
        assert http("GET", f"{s.url}/review?token=s3cret-token")[0] == 200
        s.agent.stop()


def test_an_exposed_host_without_a_token_does_not_start(tmp_path):
    (tmp_path / "export").mkdir()
    done = subprocess.run(
        [sys.executable, "-c", "from xrd_agent.cli import main; import sys; sys.exit(main(sys.argv[1:]))",
         "run", "--watch", str(tmp_path / "export"), "--state", str(tmp_path / "state"), "--engine", "cosine",
         "--pub", "tcp://127.0.0.1:*", "--control", "tcp://127.0.0.1:*", "--config", str(write_config(
             tmp_path / "c.toml", {"http": {"enabled": True, "host": "0.0.0.0", "port": 0}}))],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "http.host = '0.0.0.0' exposes the HTTP API" in done.stderr and "http.token_file" in done.stderr
