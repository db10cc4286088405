"""The message contract: generated schemas do not drift, examples validate, bad messages
fail with a reason that names the field, and garbage frames only ever raise MessageError."""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xrd_agent import errors, messages
from xrd_agent.errors import MessageError
from xrd_agent.identification import Candidate, CamRegion, Flag, Identification
from xrd_agent.pattern import Coverage, GateDecision

SCHEMA_DIR = Path(messages.__file__).with_name("schemas")
DOCS = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"


def test_committed_schemas_match_the_typeddict_source():
    generated = messages.generate_schemas()
    on_disk = {p.name for p in SCHEMA_DIR.glob("*.json")}
    assert on_disk == set(generated), "run: python -m xrd_agent.messages"
    for name, content in generated.items():
        assert (SCHEMA_DIR / name).read_text(encoding="utf-8") == messages.render(content), (
            f"schemas/{name} drifted from messages.py; run: python -m xrd_agent.messages")


def _objects(node, where="$"):
    if isinstance(node, dict):
        if "properties" in node:
            yield where, node
        for key, value in node.items():
            yield from _objects(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _objects(value, f"{where}[{i}]")


@pytest.mark.parametrize("name", sorted(messages.generate_schemas()))
def test_every_field_is_described_and_every_object_closed(name):
    document = messages.generate_schemas()[name]
    objects = list(_objects(document))
    assert objects
    for where, obj in objects:
        assert obj["additionalProperties"] is False, where
        assert obj["description"], where
        for field, spec in obj["properties"].items():
            assert spec.get("description"), f"{name}: {where}.{field} has no description"


def test_schemas_are_valid_draft_2020_12():
    import jsonschema

    for name, document in messages.generate_schemas().items():
        jsonschema.Draft202012Validator.check_schema(document)


def test_flag_enum_matches_the_identification_flags():
    result = messages.schema(messages.IDENTIFICATION)["properties"]["result"]
    assert set(result["properties"]["flags"]["items"]["enum"]) == {f.value for f in Flag}


def _scan_error_codes():
    seen, todo = set(), [errors.ScanError]
    while todo:
        cls = todo.pop()
        seen.add(cls.code)
        todo.extend(cls.__subclasses__())
    return seen


def test_every_scan_error_code_fits_the_rejected_error_field():
    pattern = re.compile(messages.schema(messages.REJECTED)["properties"]["error"]["pattern"])
    for code in _scan_error_codes():
        assert pattern.match(code), code


@pytest.mark.parametrize("topic", messages.TOPICS)
def test_examples_validate_and_round_trip(topic):
    message = messages.example(topic, seq=7)
    frames = messages.encode(message)
    assert frames[0] == topic.encode()
    assert b" " not in frames[1].split(b'"')[0]  # compact JSON
    assert messages.decode(frames) == message
    assert message["schema_version"] == messages.SCHEMA_VERSION == "1"


def test_real_identification_value_fits_the_result_schema():
    ident = Identification(
        top=tuple(Candidate(i + 1, f"REF{i}", f"MOF-{i}", p)
                  for i, p in enumerate((0.6, 0.2, 0.1, 0.05, 0.05))),
        confidence=0.6,
        flags=frozenset({Flag.MIXTURE, Flag.LOW_COVERAGE}),
        gate=GateDecision(applied=False, high_band_mean=0.01, threshold=0.05, cutoff_bins=200),
        coverage=Coverage(first=5.0, last=40.0, fraction=0.777),
        cam_regions=(CamRegion(7.01, 7.4, 0.5),),
        model_version="m", library_version="l",
    )
    message = messages.example(messages.IDENTIFICATION, result=ident.to_dict())
    assert messages.decode(messages.encode(message))["result"]["flags"] == ["low_coverage", "mixture"]


def test_folder_alert_has_no_scan():
    message = messages.example(
        messages.ALERT, reason="folder_missing", severity="critical", scan_id=None, path="/data/d8-export",
        sample_id=None, written_at=None, evidence={"directory": "/data/d8-export",
                                                   "detail": "the export share is not mounted"}, result=None)
    messages.validate(message)


def _set(message, dotted, value):
    node = message
    *parents, last = [int(p) if p.isdigit() else p for p in dotted.split(".")]
    for p in parents:
        node = node[p]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value


_DELETE = object()

BROKEN = [
    (messages.IDENTIFICATION, "result.top.0.probability", 1.5,
     "result.top[0].probability: 1.5 is greater than"),
    (messages.IDENTIFICATION, "scan_id", "not-a-hash", "scan_id: 'not-a-hash' does not match"),
    (messages.IDENTIFICATION, "path", _DELETE, "'path' is a required property"),
    (messages.IDENTIFICATION, "robot_arm", 3, "'robot_arm' was unexpected"),
    (messages.IDENTIFICATION, "result.flags", ["crystalline"], "'crystalline' is not one of"),
    (messages.IDENTIFICATION, "published_at", "2026-11-26 09:14:06",
     "published_at: '2026-11-26 09:14:06' does not"),
    (messages.IDENTIFICATION, "seq", 0, "seq: 0 is less than the minimum of 1"),
    (messages.IDENTIFICATION, "result.confidence", float("nan"), "not representable as JSON"),
    (messages.ALERT, "reason", "robot_on_fire", "reason: 'robot_on_fire' is not one of"),
    (messages.ALERT, "severity", "CRITICAL", "severity: 'CRITICAL' is not one of"),
    (messages.ALERT, "evidence.mood", "bad", "evidence: Additional properties"),
    (messages.REJECTED, "error", "Truncated File", "error: 'Truncated File' does not match"),
    (messages.STATUS, "state", "sleeping", "state: 'sleeping' is not one of"),
    (messages.STATUS, "counters.scans_seen", -1, "counters.scans_seen: -1 is less than the minimum of 0"),
    (messages.STATUS, "counters.Scans Seen", 1, "'Scans Seen' does not match"),
    (messages.HEARTBEAT, "last_seq", 40, "seq 41 must equal last_seq 40"),
    (messages.HEARTBEAT, "schema_version", "2", "schema_version '2' is not '1'"),
    (messages.HEARTBEAT, "topic", "xrd.heartbeats", "unknown topic 'xrd.heartbeats'"),
]


@pytest.mark.parametrize(("topic", "field", "value", "reason"), BROKEN)
def test_broken_message_fails_with_a_reason_naming_the_field(topic, field, value, reason):
    message = copy.deepcopy(messages.example(topic, seq=41))
    _set(message, field, value)
    if reason is None:
        messages.validate(message)
        return
    with pytest.raises(MessageError) as info:
        messages.validate(message)
    assert reason in str(info.value)
    assert isinstance(info.value, ValueError)


def test_build_refuses_a_body_that_overrides_the_header():
    body = {k: v for k, v in messages.example(messages.STATUS).items() if k not in messages.HEADER_KEYS}
    with pytest.raises(MessageError, match="must not set header field.*seq"):
        messages.build(messages.STATUS, 3, {**body, "seq": 9}, agent_id="a", instrument_id="b")


def test_build_fills_the_header():
    body = {"state": "starting", "detail": "", "counters": {}}
    message = messages.build(messages.STATUS, 1, body, agent_id="a", instrument_id="d8")
    assert message["seq"] == 1 and message["model_version"] == ""
    published = datetime.fromisoformat(message["published_at"])
    assert abs(published - datetime.now(UTC)) < timedelta(minutes=5)


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([b"xrd.status"], "expected 2 frames"),
        ([b"xrd.status", b"{}", b"x"], "expected 2 frames"),
        ([b"xrd.status", b"\xff\xfe"], "not [topic, UTF-8 JSON]"),
        ([b"xrd.status", b"{not json"], "not [topic, UTF-8 JSON]"),
        ([b"xrd.status", b"[1, 2]"], "must be an object"),
        ([b"xrd.status", b'{"seq": NaN}'], "not [topic, UTF-8 JSON]"),
        ([b"xrd.alert", None], "does not match"),
        ([b"xrd.status", b"x" * (messages.MAX_MESSAGE_BYTES + 1)], "exceeds"),
    ],
)
def test_decode_refuses_bad_frames(frames, reason):
    if len(frames) == 2 and frames[1] is None:
        frames = [b"xrd.alert", messages.encode(messages.example(messages.STATUS))[1]]
    with pytest.raises(MessageError, match=re.escape(reason)):
        messages.decode(frames)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=4))
def test_garbage_frames_raise_only_message_error(frames):
    with pytest.raises(MessageError):
        messages.decode(frames)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=10), st.one_of(st.none(), st.integers(), st.text(max_size=10),
                                                       st.floats(allow_nan=True)), max_size=6))
def test_garbage_requests_raise_only_message_error(request_dict):
    request_dict.setdefault("op", "replay")
    try:
        messages.validate_request(request_dict)
    except MessageError:
        pass


def test_control_requests_and_replies():
    assert messages.validate_request({"op": "replay", "since_seq": 0, "limit": 10, "id": "r1"})
    assert messages.validate_request({"op": "expect", "sample_id": "S-1", "phases": ["OFERUN"], "top_k": 3})
    for bad, reason in [
        ({"op": "replay"}, "'since_seq' is a required property"),
        ({"op": "replay", "since_seq": 0, "limit": 100000}, "limit: 100000 is greater than the maximum"),
        ({"op": "expect", "sample_id": "S\n1", "phases": []}, "sample_id"),
        ({"op": "status", "path": "/etc/passwd"}, "'path' was unexpected"),
        ({"op": "shutdown"}, "unknown op 'shutdown'"),
        ("status", "must be a JSON object"),
    ]:
        with pytest.raises(MessageError, match=re.escape(reason)):
            messages.validate_request(bad)
    messages.validate_reply({"ok": True, "op": "replay", "messages": [], "more": False, "last_seq": 0})
    messages.validate_reply({"ok": False, "op": None, "error": "not JSON"})
    with pytest.raises(MessageError, match="'error' is a required property"):
        messages.validate_reply({"ok": False, "op": "ping"})


def test_rfc3339():
    assert messages.rfc3339(0) == "1970-01-01T00:00:00.000Z"
    assert messages.rfc3339(datetime(2026, 11, 26, 10, 0, tzinfo=timezone(timedelta(hours=1)))) == (
        "2026-11-26T09:00:00.000Z")
    with pytest.raises(MessageError, match="naive"):
        messages.rfc3339(datetime(2026, 11, 26))


def test_schema_lookup():
    assert messages.schema("xrd.alert")["title"] == "xrd.alert"
    assert "oneOf" in messages.schema("control_request")
    with pytest.raises(MessageError, match="unknown topic"):
        messages.schema("xrd.nothing")


def _doc_examples():
    text = DOCS.read_text(encoding="utf-8")
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, flags=re.S)]


def test_documented_examples_validate():
    blocks = _doc_examples()
    topics = set()
    for block in blocks:
        if "topic" in block:
            messages.validate(block)
            topics.add(block["topic"])
        elif "ok" in block:
            messages.validate_reply(block)
        else:
            messages.validate_request(block)
    assert topics == set(messages.TOPICS)


def test_schema_files_work_on_their_own():
    """Another lab validates with the files and any JSON Schema library, not with our code."""
    import jsonschema

    def files_validator(name):
        document = json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))
        return jsonschema.Draft202012Validator(document)

    for topic in messages.TOPICS:
        assert files_validator(f"{topic.removeprefix('xrd.')}.json").is_valid(messages.example(topic, 3))
    requests = files_validator("control_request.json")
    assert requests.is_valid({"op": "replay", "since_seq": 0})
    assert requests.is_valid({"op": "ping", "id": "x"})
    assert not requests.is_valid({"op": "ping", "since_seq": 0})
    replies = files_validator("control_reply.json")
    assert replies.is_valid({"ok": True, "op": "ping", "schema_version": "1", "time": "2026-11-26T09:00:00Z"})
    assert replies.is_valid({"ok": False, "op": None, "error": "no"})
    assert not replies.is_valid({"ok": True, "op": "ping"})
