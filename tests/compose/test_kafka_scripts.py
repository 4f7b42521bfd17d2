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


class KafkaCluster:
    """Runs the broker scripts with --cluster 3, one cluster dir and six spare ports."""

    NODES = 3

    def __init__(self, cluster_dir: pathlib.Path):
        ports = set()
        while len(ports) < 2 * self.NODES:
            ports.add(spare_port())
        ports = sorted(ports)
        self.ports = ports[: self.NODES]
        self.dir = cluster_dir
        self.env = dict(
            os.environ,
            KAFKA_CLUSTER_DIR=str(cluster_dir),
            KAFKA_CLUSTER_PORTS=",".join(map(str, self.ports)),
            KAFKA_CLUSTER_CONTROLLER_PORTS=",".join(map(str, ports[self.NODES:])),
            KAFKA_STOP_TIMEOUT="20",
        )
        self.bootstrap = ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def script(self, name, *args, check=True, timeout=240, stdin=None):
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

    def cluster(self, name, *args, **kw):
        return self.script(name, "--cluster", str(self.NODES), *args, **kw)

    def tool(self, main_class, *args, stdin=None, bootstrap=None):
        return self.script("kafka-tool.sh", main_class, "--bootstrap-server",
                           bootstrap or self.bootstrap, *args, stdin=stdin)

    def pid(self, node: int) -> int:
        return int((self.dir / f"node-{node}" / "broker.pid").read_text().strip())


@pytest.fixture(scope="module")
def kafka_cluster(tmp_path_factory):
    c = KafkaCluster(tmp_path_factory.mktemp("kafka-cluster"))
    yield c
    c.cluster("stop.sh", check=False)


def test_cluster_lifecycle(kafka_cluster):
    c = kafka_cluster
    assert c.cluster("start.sh", "--check", check=False).returncode == 1

    out, cold = timed(lambda: c.cluster("start.sh").stdout)
    print(f"cluster cold start (format + start, 3 JVMs): {cold:.1f}s")
    assert f"Kafka cluster of 3 brokers running on {c.bootstrap}" in out
    assert sum("started" in line for line in out.splitlines()) == 3, out
    cluster_id = (c.dir / "cluster.id").read_text().strip()
    for node in (1, 2, 3):
        meta = (c.dir / f"node-{node}" / "data" / "meta.properties").read_text().splitlines()
        assert f"cluster.id={cluster_id}" in meta and f"node.id={node}" in meta
        props = (c.dir / f"node-{node}" / "server.properties").read_text().splitlines()
        voters = ",".join(f"{i}@127.0.0.1:{p}" for i, p in
                          enumerate(c.env["KAFKA_CLUSTER_CONTROLLER_PORTS"].split(","), 1))
        for line in (f"node.id={node}", f"controller.quorum.voters={voters}",
                     "default.replication.factor=3", "min.insync.replicas=2",
                     "offsets.topic.replication.factor=3", "transaction.state.log.replication.factor=3",
                     "transaction.state.log.min.isr=2", "auto.create.topics.enable=false"):
            assert line in props, (node, line)
    pids = {node: c.pid(node) for node in (1, 2, 3)}

    out = c.cluster("start.sh").stdout
    assert out.count("already running") == 3 and {n: c.pid(n) for n in pids} == pids
    assert c.cluster("start.sh", "--check", check=False).returncode == 0

    # Topics get 3 replicas and min.insync.replicas 2 by default.
    topic = "cluster-scripts-test"
    c.tool("org.apache.kafka.tools.TopicCommand", "--create", "--topic", topic, "--partitions", "3")
    described = c.tool("org.apache.kafka.tools.TopicCommand", "--describe", "--topic", topic).stdout
    assert "ReplicationFactor: 3" in described and "min.insync.replicas=2" in described, described
    message = f"hello-{uuid.uuid4().hex}"
    c.tool("org.apache.kafka.tools.ConsoleProducer", "--topic", topic, "--producer-property",
           "acks=all", stdin=message + "\n")

    # One broker dies: --check says so, the other two still serve the data.
    os.kill(pids[2], 9)
    deadline = time.monotonic() + 10
    while pathlib.Path(f"/proc/{pids[2]}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert c.cluster("start.sh", "--check", check=False).returncode == 1
    survivors = f"127.0.0.1:{c.ports[0]},127.0.0.1:{c.ports[2]}"
    got = c.tool(
        "org.apache.kafka.tools.consumer.ConsoleConsumer", "--topic", topic, "--from-beginning",
        "--max-messages", "1", "--timeout-ms", "60000", "--group", f"g-{uuid.uuid4().hex[:8]}",
        bootstrap=survivors,
    ).stdout.strip()
    assert got == message

    # start.sh restarts only the dead broker.
    out = c.cluster("start.sh").stdout
    assert out.count("already running") == 2 and "node 2: Kafka broker started" in out, out
    assert c.pid(1) == pids[1] and c.pid(3) == pids[3] and c.pid(2) != pids[2]
    assert c.cluster("start.sh", "--check", check=False).returncode == 0

    out, took = timed(lambda: c.cluster("stop.sh").stdout)
    print(f"cluster stop: {took:.1f}s")
    assert out.count("Kafka broker stopped") == 3
    for node in (1, 2, 3):
        assert not (c.dir / f"node-{node}" / "broker.pid").exists()
    assert c.cluster("start.sh", "--check", check=False).returncode == 1
    assert c.cluster("stop.sh").returncode == 0  # idempotent


def test_cluster_settings_are_checked(tmp_path):
    c = KafkaCluster(tmp_path / "cluster")
    for args, env, needle in [
        (["--cluster", "1"], {}, "--cluster needs the number of brokers, 2 to 9"),
        (["--cluster"], {}, "--cluster needs the number of brokers"),
        (["--cluster", "3"], {"KAFKA_CLUSTER_PORTS": "1,2"}, "KAFKA_CLUSTER_PORTS must list 3 client ports"),
        (["--cluster", "3"], {"KAFKA_CLUSTER_PORTS": "1,2,x"}, "a port of KAFKA_CLUSTER_PORTS must be a port number"),
        (["--cluster", "3"], {"KAFKA_CLUSTER_CONTROLLER_PORTS": c.env["KAFKA_CLUSTER_PORTS"]},
         "is given twice"),
        (["--cluster", "3"], {"KAFKA_EXTERNAL_LISTENER": "0.0.0.0:1"}, "not supported with --cluster"),
        (["--bogus"], {}, "unknown argument '--bogus'"),
    ]:
        proc = subprocess.run(["bash", str(KAFKA / "start.sh"), *args], env=dict(c.env, **env),
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and needle in proc.stderr, (args, env, proc.stderr)
    assert not (tmp_path / "cluster").exists(), "nothing is created for bad settings"


def test_cluster_port_taken_names_the_node(tmp_path):
    c = KafkaCluster(tmp_path / "cluster")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", c.ports[1]))
        squatter.listen()
        proc = c.cluster("start.sh", check=False, timeout=180)
    try:
        assert proc.returncode != 0
        assert f"node 2: 127.0.0.1:{c.ports[1]} is already in use by another process" in proc.stderr
        assert "KAFKA_CLUSTER_PORTS" in proc.stderr and "nothing was started" in proc.stderr
        assert not list(c.dir.glob("node-*/broker.pid")), "no node may be left running"
    finally:
        c.cluster("stop.sh", check=False)
