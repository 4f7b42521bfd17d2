"""docker-compose.yml checked with a real compose parser (Debian's docker-compose 1.29).

The parser validates the file against the compose schema; the tests then read
the configuration as the parser resolved it and check the Kafka service: KRaft
mode, one listener for the host and one for other containers, a data volume.
"""

import base64
import os
import re

import pytest

from conftest import COMPOSE_FILE, REPO, compose, resolved_config


def listeners(value: str) -> dict:
    """Parses 'NAME://host:port,...' into {NAME: (host, port)}."""
    result = {}
    for entry in value.split(","):
        match = re.fullmatch(r"([A-Z_]+)://([^:]*):(\d+)", entry.strip())
        assert match, f"listener entry {entry!r} is not NAME://host:port"
        name, host, port = match.groups()
        assert name not in result, f"listener {name} appears twice in {value!r}"
        result[name] = (host, int(port))
    return result


@pytest.fixture(scope="module")
def kafka():
    return resolved_config()["services"]["kafka"]


def test_parser_accepts_the_file():
    compose(["config", "-q"])
    compose(["--profile", "cluster", "config", "-q"])


@pytest.mark.parametrize(
    "broken, expected",
    [
        # an unknown key in a service
        (lambda s: s.replace("    hostname: kafka\n", "    hostnme: kafka\n", 1), "hostnme"),
        # a wrong type (retries must be a number)
        (lambda s: s.replace("      retries: 12\n", "      retries: many\n", 1), "retries"),
        # a service that uses a volume nobody declared
        (lambda s: s.replace("volumes:\n  kafka-data:", "volumes:\n  other-data:"), "kafka-data"),
        # YAML that does not parse
        (lambda s: s.replace("services:\n", "services:\n  - [\n", 1), ""),
    ],
    ids=["unknown-key", "wrong-type", "undeclared-volume", "bad-yaml"],
)
def test_parser_rejects_a_broken_file(tmp_path, broken, expected):
    original = COMPOSE_FILE.read_text()
    text = broken(original)
    assert text != original, "the mutation did not apply: update this test"
    path = tmp_path / "docker-compose.yml"
    path.write_text(text)
    proc = compose(["config", "-q"], compose_file=path, check=False)
    assert proc.returncode != 0, "the compose parser accepted a broken file"
    assert expected in proc.stderr


def test_version_key_and_pinned_kafka_4_image(kafka):
    assert resolved_config()["version"] == "3.8"
    assert re.fullmatch(r"apache/kafka:4\.\d+\.\d+", kafka["image"]), kafka["image"]


def test_kafka_runs_in_kraft_mode(kafka):
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    # The only voter is this node, reachable on its controller listener.
    node_id, address = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split("@")
    assert int(node_id) == int(env["KAFKA_NODE_ID"])
    voter_host, voter_port = address.split(":")
    assert voter_host == kafka["hostname"] == "kafka"
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert listeners(env["KAFKA_LISTENERS"])[controller][1] == int(voter_port)
    # A valid Kafka cluster id: 16 bytes in URL-safe base64 without padding.
    cluster_id = env["CLUSTER_ID"]
    raw = base64.urlsafe_b64decode(cluster_id + "==")
    assert len(raw) == 16 and base64.urlsafe_b64encode(raw).decode().rstrip("=") == cluster_id
    assert "KAFKA_ZOOKEEPER_CONNECT" not in env


def test_host_and_container_listeners(kafka):
    env = kafka["environment"]
    bound = listeners(env["KAFKA_LISTENERS"])
    advertised = listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))

    assert controller not in advertised
    assert set(advertised) == set(bound) - {controller}
    assert len(advertised) == 2, f"want one host and one container listener: {advertised}"
    assert set(protocols) == set(bound)
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised

    published = {int(p["published"]): int(p["target"]) for p in kafka["ports"]}
    host_side = [n for n, (h, _) in advertised.items() if h == "localhost"]
    container_side = [n for n, (h, _) in advertised.items() if h == "kafka"]
    assert len(host_side) == 1 and len(container_side) == 1, advertised
    # Host clients dial localhost:9092, which Docker forwards to that listener.
    host_port = advertised[host_side[0]][1]
    assert host_port == 9092 and published[host_port] == bound[host_side[0]][1]
    # Containers dial kafka:<port> on the compose network; that port is not published.
    container_port = advertised[container_side[0]][1]
    assert bound[container_side[0]][1] == container_port
    assert container_port not in published
    for host, _ in bound.values():
        assert host in ("0.0.0.0", ""), "listeners must bind all interfaces in the container"


def test_advertised_host_and_port_can_be_overridden():
    env = dict(os.environ, KAFKA_ADVERTISED_HOST="10.1.2.3", KAFKA_HOST_PORT="29092")
    kafka = resolved_config(env=env)["services"]["kafka"]
    advertised = listeners(kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"])
    assert ("10.1.2.3", 29092) in advertised.values()
    assert ("kafka", 19092) in advertised.values()
    assert {(int(p["published"]), int(p["target"])) for p in kafka["ports"]} == {(29092, 9092)}


def test_data_lives_in_a_named_volume(kafka):
    config = resolved_config()
    log_dir = kafka["environment"]["KAFKA_LOG_DIRS"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in kafka["volumes"]}
    assert log_dir in mounts
    assert mounts[log_dir] in config["volumes"], "the data volume must be a named volume"


def test_cluster_profile_services():
    plain = resolved_config()["services"]
    with_cluster = resolved_config(profiles=["cluster"])["services"]
    hermes = {name: s for name, s in with_cluster.items() if name != "kafka"}
    assert {"master", "worker-1", "worker-2"} <= set(hermes)
    for name, service in hermes.items():
        assert service["profiles"] == ["cluster"], name
        assert plain[name]["profiles"] == ["cluster"], name
        assert service["environment"]["HERMES_KAFKA__BROKERS"] == "kafka:19092", name
        assert service["depends_on"]["kafka"]["condition"] == "service_healthy", name
        dockerfile = REPO / service["build"]["dockerfile"]
        assert dockerfile.is_file(), f"{name}: {dockerfile} is missing"
    ids = [hermes[w]["environment"]["HERMES_WORKER_ID"] for w in ("worker-1", "worker-2")]
    assert len(set(ids)) == 2
