"""deploy/kafka/{start,stop}.sh against a real Apache Kafka broker.

Runs a second broker on spare ports with its own state dir (the shared test
broker on 9092 is left alone): cold start (formats storage), idempotent
restart, produce/consume with Kafka's own console tools, clean stop, start on
the already-formatted storage (the message is still there), stop twice.
"""

import os
import pathlib
import socket
import subprocess
import time
import uuid

import pytest

from conftest import REPO

KAFKA = REPO / "deploy" / "kafka"


def spare_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """Runs the broker scripts with one state dir and port pair."""

    def __init__(self, state_dir: pathlib.Path):
        self.port = spare_port()
        controller = spare_port()
        while controller == self.port:
            controller = spare_port()
        self.state_dir = state_dir
        self.env = dict(
            os.environ,
            KAFKA_STATE_DIR=str(state_dir),
            KAFKA_PORT=str(self.port),
            KAFKA_CONTROLLER_PORT=str(controller),
        )
        self.bootstrap = f"127.0.0.1:{self.port}"

    def script(self, name, *args, check=True, timeout=180, stdin=None):
        proc = subprocess.run(
            ["bash", str(KAFKA / name), *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            pytest.fail(f"{name} {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
        return proc

    def tool(self, main_class, *args, stdin=None):
        return self.script("kafka-tool.sh", main_class, "--bootstrap-server", self.bootstrap,
                           *args, stdin=stdin)

    def pid(self) -> int:
        return int((self.state_dir / "broker.pid").read_text().strip())


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("kafka-state"))
    yield b
    b.script("stop.sh", check=False)


def timed(fn):
    start = time.monotonic()
    result = fn()
    return result, time.monotonic() - start


def consume_one(broker, topic):
    return broker.tool(
        "org.apache.kafka.tools.consumer.ConsoleConsumer", "--topic", topic,
        "--from-beginning", "--max-messages", "1", "--timeout-ms", "30000",
        "--group", f"g-{uuid.uuid4().hex[:8]}",
    ).stdout.strip()


def test_broker_lifecycle(broker):
    assert broker.script("start.sh", "--check", check=False).returncode == 1

    out, cold = timed(lambda: broker.script("start.sh").stdout)
    assert "started" in out
    assert (broker.state_dir / "data" / "meta.properties").is_file()
    first_pid = broker.pid()
    print(f"cold start (format + start): {cold:.1f}s")

    out = broker.script("start.sh").stdout
    assert "already running" in out and broker.pid() == first_pid
    assert broker.script("start.sh", "--check", check=False).returncode == 0

    topic = "scripts-test"
    message = f"hello-{uuid.uuid4().hex}"
    broker.tool("org.apache.kafka.tools.TopicCommand", "--create", "--topic", topic,
                "--partitions", "1")
    broker.tool("org.apache.kafka.tools.ConsoleProducer", "--topic", topic, stdin=message + "\n")
    assert consume_one(broker, topic) == message

    assert topic in broker.tool("org.apache.kafka.tools.TopicCommand", "--list").stdout.split()
    # Topics are not created on first use (the transport creates them explicitly),
    # and the broker logs to the state dir.
    props = (broker.state_dir / "server.properties").read_text().splitlines()
    assert "auto.create.topics.enable=false" in props
    assert "Kafka Server started" in (broker.state_dir / "broker.log").read_text()

    broker.script("stop.sh")
    assert not (broker.state_dir / "broker.pid").exists()
    assert not pathlib.Path(f"/proc/{first_pid}").exists()
    assert broker.script("start.sh", "--check", check=False).returncode == 1

    out, warm = timed(lambda: broker.script("start.sh").stdout)
    assert "started" in out and broker.pid() != first_pid
    print(f"warm start (formatted storage): {warm:.1f}s")
    assert consume_one(broker, topic) == message, "the data did not survive a restart"

    broker.script("stop.sh")
    assert broker.script("stop.sh").returncode == 0  # idempotent


def test_port_taken_by_another_process_is_a_clear_error(tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        b = Broker(tmp_path / "state")
        b.env["KAFKA_PORT"] = str(squatter.getsockname()[1])
        proc = b.script("start.sh", check=False, timeout=60)
    assert proc.returncode != 0
    assert "already in use by another process" in proc.stderr
    assert not (tmp_path / "state" / "broker.pid").exists()


def test_bad_settings_are_rejected_before_starting(tmp_path):
    b = Broker(tmp_path / "state")
    for key, value, needle in [
        ("KAFKA_PORT", "abc", "KAFKA_PORT must be a port number"),
        ("KAFKA_CONTROLLER_PORT", "70000", "KAFKA_CONTROLLER_PORT must be in 1..65535"),
        ("KAFKA_EXTRA_PROPS", "oops", "KAFKA_EXTRA_PROPS entries must be key=value"),
    ]:
        env = dict(b.env, **{key: value})
        proc = subprocess.run(["bash", str(KAFKA / "start.sh")], env=env,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and needle in proc.stderr, (key, proc.stderr)
