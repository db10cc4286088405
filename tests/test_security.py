"""CurveZMQ on real sockets: an allowed robot receives and commands; an unknown key and a
plain client get nothing and cannot command. Plus the key files `xrd-agent keys` writes."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
import time

import pytest
import zmq
from structlog.testing import capture_logs

from xrd_agent import messages
from xrd_agent.client import ControlClient, HeartbeatEvent, Subscriber
from xrd_agent.config import PublishConfig
from xrd_agent.errors import ConfigError, ControlError
from xrd_agent.service import security
from xrd_agent.service.control import ControlServer
from xrd_agent.service.publisher import Publisher
from xrd_agent.service.security import CurveClientKeys, CurveServerKeys, generate_keys


@pytest.fixture
def keydir(tmp_path):
    generate_keys(tmp_path / "keys", "robot1")
    generate_keys(tmp_path / "keys", "robot2")
    (tmp_path / "keys" / "allowed" / "robot2.key").unlink()  # robot2 exists but is not allowed
    return tmp_path / "keys"


@pytest.fixture
def context():
    ctx = zmq.Context()
    yield ctx
    security.stop_authenticator(ctx)
    ctx.destroy(linger=0)


@pytest.fixture
def curve_agent(context, keydir):
    keys = security.server_keys(PublishConfig(curve_secret_key=str(keydir / "server.key_secret"),
                                              curve_allowed_dir=str(keydir / "allowed")))
    assert isinstance(keys, CurveServerKeys)
    expected: dict[str, list[str]] = {}

    def expect(request):
        expected[request["sample_id"]] = request["phases"]

    publisher = Publisher(context, "tcp://127.0.0.1:*", curve=keys)
    control = ControlServer(context, "tcp://127.0.0.1:*", {"expect": expect, "status": lambda r: {
        "state": "ready", "detail": "", "counters": {}, "last_seq": 0, "uptime_s": 0.0, "queue_depth": 0,
        "model_version": "", "library_version": ""}}, curve=keys)
    control.start()
    yield publisher, control, keys, expected
    control.stop()
    publisher.close()


def client_keys(keydir, name):
    return CurveClientKeys.from_files(keydir / f"{name}.key_secret", keydir / "server.key")


def heartbeat():
    return messages.build(messages.HEARTBEAT, 0, {"last_seq": 0, "uptime_s": 0.0, "queue_depth": 0},
                          agent_id="t", instrument_id="d8")


def plain_sub(context, endpoint):
    sock = context.socket(zmq.SUB)
    sock.linger = 0
    sock.subscribe(b"")
    sock.connect(endpoint)
    return sock


def test_allowed_key_receives_and_commands_unknown_keys_get_nothing(context, keydir, curve_agent):
    publisher, control, keys, expected = curve_agent
    topics = (*messages.DURABLE_TOPICS, messages.HEARTBEAT)
    allowed = Subscriber(publisher.endpoint, control.endpoint, topics=topics, context=context,
                         curve_client_keys=client_keys(keydir, "robot1"))
    denied = Subscriber(publisher.endpoint, control.endpoint, topics=topics, context=context,
                        curve_client_keys=client_keys(keydir, "robot2"), control_timeout_s=0.5)
    plain = plain_sub(context, publisher.endpoint)
    try:
        with allowed, denied:
            received = 0
            deadline = time.monotonic() + 30
            while received < 5 and time.monotonic() < deadline:
                publisher.send(heartbeat())
                if isinstance(allowed.receive(0.05), HeartbeatEvent):
                    received += 1
            assert received == 5
            # Everything the allowed robot got was also published to the others: they got none of it.
            assert denied.receive(0.2) is None
            assert not plain.poll(0)

            assert allowed.control.expect("S-9", ["OFERUN"])["ok"] is True
            assert expected == {"S-9": ["OFERUN"]}
            # a denied handshake leaves no peer: the request is either never taken ("not accepting
            # requests", when the failed connection is already torn down) or never answered
            refused = "no reply|not accepting requests"
            with pytest.raises(ControlError, match=refused):
                denied.control.expect("S-9", ["FIQCEN"])
            plain_control = ControlClient(control.endpoint, context=context, timeout_s=0.5)
            with pytest.raises(ControlError, match=refused):
                plain_control.expect("S-9", ["FIQCEN"])
            plain_control.close()
            assert expected == {"S-9": ["OFERUN"]}
    finally:
        plain.close()


def test_adding_a_key_and_reloading_admits_the_robot(context, keydir, curve_agent):
    publisher, control, keys, _ = curve_agent
    robot2 = ControlClient(control.endpoint, context=context, timeout_s=0.5,
                           curve_client_keys=client_keys(keydir, "robot2"))
    with capture_logs() as logs:
        with pytest.raises(ControlError):
            robot2.status()
        deadline = time.monotonic() + 30  # the denial is logged by the authenticator thread
        while not any(e["event"] == "curve_client_denied" for e in logs) and time.monotonic() < deadline:
            time.sleep(0.05)
    denied = [e for e in logs if e["event"] == "curve_client_denied"]
    assert len(denied) == 1 and client_keys(keydir, "robot2").public.decode() in denied[0]["detail"]
    shutil.copyfile(keydir / "robot2.key", keydir / "allowed" / "robot2.key")
    security.reload_allow_list(context, keys)
    robot2.close()
    robot2 = ControlClient(control.endpoint, context=context, timeout_s=10,
                           curve_client_keys=client_keys(keydir, "robot2"))
    assert robot2.status()["state"] == "ready"
    robot2.close()


def test_wrong_server_key_gets_nothing(context, keydir, tmp_path, curve_agent):
    _, control, _, _ = curve_agent
    other = generate_keys(tmp_path / "other", "robot1")  # a different agent's server key
    keys = CurveClientKeys.from_files(keydir / "robot1.key_secret", other.server_public)
    c = ControlClient(control.endpoint, context=context, timeout_s=0.5, curve_client_keys=keys)
    with pytest.raises(ControlError, match="no reply"):
        c.ping()
    c.close()


def test_generate_keys_files_and_modes(tmp_path):
    made = generate_keys(tmp_path / "k", "robot-A")
    assert made.server_created
    for secret in (made.server_secret, made.client_secret):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        public, key = zmq.auth.load_certificate(secret)
        assert key and len(key) == 40
    assert made.allowed_public.read_bytes() == made.client_public.read_bytes()
    again = generate_keys(tmp_path / "k", "robot-B")
    assert not again.server_created and again.server_secret.read_bytes() == made.server_secret.read_bytes()
    with pytest.raises(ConfigError, match="never overwritten"):
        generate_keys(tmp_path / "k", "robot-A")
    for bad in ("server", "../evil", "", "a b"):
        with pytest.raises(ConfigError, match="client key name"):
            generate_keys(tmp_path / "k", bad)


def test_keys_command_in_a_subprocess(tmp_path):
    run = subprocess.run([sys.executable, "-m", "xrd_agent", "keys", "generate", "--dir", str(tmp_path),
                          "--name", "robot1"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "allowed" / "robot1.key").is_file()
    assert "curve_secret_key" in run.stdout
    again = subprocess.run([sys.executable, "-m", "xrd_agent", "keys", "generate", "--dir", str(tmp_path),
                            "--name", "robot1"], capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "never overwritten" in again.stderr


def test_configuration_errors_are_clear(tmp_path, keydir):
    assert security.server_keys(PublishConfig()) is None
    cases = [
        (PublishConfig(curve_secret_key=str(tmp_path / "missing.key_secret"),
                       curve_allowed_dir=str(tmp_path)),
         "cannot read the server secret key file"),
        (PublishConfig(curve_secret_key=str(keydir / "server.key"),
                       curve_allowed_dir=str(keydir / "allowed")),
         "holds no secret key"),
        (PublishConfig(curve_secret_key=str(keydir / "server.key_secret")), "is not a folder"),
        (PublishConfig(curve_allowed_dir=str(keydir / "allowed")), "curve_secret_key is not"),
    ]
    for config, reason in cases:
        with pytest.raises(ConfigError, match=reason):
            security.server_keys(config)


def test_key_reprs_hide_secrets(keydir):
    server = CurveServerKeys.from_files(keydir / "server.key_secret", keydir / "allowed")
    client = client_keys(keydir, "robot1")
    assert server.secret.decode() not in repr(server)
    assert client.secret.decode() not in repr(client)


def test_closing_the_curve_sockets_lets_the_context_terminate(keydir):
    """The last CURVE socket to close stops the authenticator; otherwise ``term()`` hangs."""
    import threading

    ctx = zmq.Context()
    keys = CurveServerKeys.from_files(keydir / "server.key_secret", keydir / "allowed")
    publisher = Publisher(ctx, "tcp://127.0.0.1:*", curve=keys)
    control = ControlServer(ctx, "tcp://127.0.0.1:*", {}, curve=keys)
    control.start()
    control.stop()
    publisher.close()
    done = threading.Thread(target=ctx.term, daemon=True)
    done.start()
    done.join(30)
    assert not done.is_alive(), "context.term() hung: the authenticator was left running"
