"""docker-compose.yml checked with a real compose parser (Debian's docker-compose 1.29).

The parser validates the file against the compose schema; the tests then read
the configuration as the parser resolved it and check the Kafka service: KRaft
mode, one listener for the host and one for other containers, a data volume;
the 3-broker cluster of profile "kafka-cluster" (one KRaft quorum of three,
three replicas, two in sync); and the master and worker services, which must be
able to write their data folder.
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
    compose(["--profile", "kafka-cluster", "config", "-q"])
    compose(["--profile", "kafka-cluster", "--profile", "cluster", "config", "-q"])


CLUSTER_NODES = ("kafka-1", "kafka-2", "kafka-3")


def hermes_services(services: dict) -> dict:
    """The master and worker services (built from deploy/Dockerfile)."""
    return {name: s for name, s in services.items() if "build" in s}


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
    hermes = hermes_services(with_cluster)
    assert set(hermes) == {"master", "worker-1", "worker-2"}
    for name, service in hermes.items():
        assert service["profiles"] == ["cluster"], name
        assert plain[name]["profiles"] == ["cluster"], name
        assert service["environment"]["HERMES_KAFKA__BROKERS"] == "kafka:19092", name
        assert service["depends_on"]["kafka"]["condition"] == "service_healthy", name
        dockerfile = REPO / service["build"]["dockerfile"]
        assert dockerfile.is_file(), f"{name}: {dockerfile} is missing"
    ids = [hermes[w]["environment"]["HERMES_WORKER_ID"] for w in ("worker-1", "worker-2")]
    assert len(set(ids)) == 2


def mounts(service: dict) -> list:
    """(source, target, mode) of each volume entry as the parser wrote it."""
    result = []
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            mode = "ro" if entry.get("read_only") else "rw"
            result.append((entry.get("source", ""), entry["target"], mode))
            continue
        parts = entry.split(":")
        mode = parts[2] if len(parts) > 2 else "rw"
        result.append((parts[0], parts[1], mode))
    return result


def test_no_data_mount_is_read_only_and_the_image_user_may_write():
    services = resolved_config(profiles=["cluster", "kafka-cluster"])["services"]
    data_mounts = 0
    for name, service in services.items():
        for source, target, mode in mounts(service):
            if "data" in source.split("/")[-1] or "/data" in target:
                data_mounts += 1
                assert "ro" not in mode.split(","), f"{name}: {source}:{target} is read-only"
    assert data_mounts >= 3 + 4, "master, workers and every broker mount a data folder"

    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    uid = re.search(r"useradd[^\n]*--uid (\d+)", dockerfile)
    gid = re.search(r"groupadd[^\n]*--gid (\d+)", dockerfile)
    assert uid and gid, "the Dockerfile must create its user with a fixed uid and gid"
    assert re.search(r"chown hermes:hermes /app/data", dockerfile), "/app/data must belong to hermes"
    for name, service in hermes_services(services).items():
        targets = {t: (src, mode) for src, t, mode in mounts(service)}
        source, _ = targets["/app/data"]
        assert source == str(REPO / "data"), f"{name}: /app/data comes from {source}"
        # By default the processes run as the image's user, which owns /app/data.
        assert service["user"] == f"{uid.group(1)}:{gid.group(1)}", name


def test_data_owner_can_be_set_to_the_host_user():
    env = dict(os.environ, HERMES_UID="1234", HERMES_GID="5678")
    services = resolved_config(profiles=["cluster"], env=env)["services"]
    for name, service in hermes_services(services).items():
        assert service["user"] == "1234:5678", name


@pytest.fixture(scope="module")
def kafka_cluster():
    services = resolved_config(profiles=["kafka-cluster"])["services"]
    return {name: services[name] for name in CLUSTER_NODES}


def test_kafka_cluster_profile_is_one_kraft_quorum_of_three(kafka_cluster):
    config = resolved_config()
    plain = config["services"]
    node_ids = set()
    voters_seen = set()
    for name, node in kafka_cluster.items():
        assert node["profiles"] == ["kafka-cluster"], name
        assert plain[name]["profiles"] == ["kafka-cluster"], name
        assert node["image"] == plain["kafka"]["image"], f"{name}: same Kafka as the single broker"
        assert node["hostname"] == name
        env = node["environment"]
        assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}, name
        assert "KAFKA_ZOOKEEPER_CONNECT" not in env
        node_ids.add(int(env["KAFKA_NODE_ID"]))
        voters = {}
        for voter in env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(","):
            node_id, address = voter.split("@")
            host, port = address.split(":")
            voters[int(node_id)] = (host, int(port))
        voters_seen.add(tuple(sorted(voters.items())))
        # This node is a voter, at its own controller listener.
        controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
        assert voters[int(env["KAFKA_NODE_ID"])] == (name, listeners(env["KAFKA_LISTENERS"])[controller][1])
        # Replicated: 3 copies of everything, 2 in sync for a write.
        assert int(env["KAFKA_DEFAULT_REPLICATION_FACTOR"]) == 3, name
        assert int(env["KAFKA_MIN_INSYNC_REPLICAS"]) == 2, name
        for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
                    "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                    "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR"):
            assert int(env[key]) == 3, f"{name}: {key}"
        for key in ("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR"):
            assert int(env[key]) == 2, f"{name}: {key}"
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
        # Its storage is its own named volume.
        ((source, _, _),) = [m for m in mounts(node) if m[1] == env["KAFKA_LOG_DIRS"]]
        assert source in config["volumes"], f"{name}: {source} is not a named volume"
    assert node_ids == {1, 2, 3}
    assert len(voters_seen) == 1, "every node must name the same quorum"
    (quorum,) = voters_seen
    assert [node_id for node_id, _ in quorum] == [1, 2, 3]
    assert {host for _, (host, _) in quorum} == set(CLUSTER_NODES)
    cluster_ids = {n["environment"]["CLUSTER_ID"] for n in kafka_cluster.values()}
    assert len(cluster_ids) == 1
    (cluster_id,) = cluster_ids
    raw = base64.urlsafe_b64decode(cluster_id + "==")
    assert len(raw) == 16 and base64.urlsafe_b64encode(raw).decode().rstrip("=") == cluster_id
    assert cluster_id != plain["kafka"]["environment"]["CLUSTER_ID"]
    volumes = [m[0] for n in kafka_cluster.values() for m in mounts(n)]
    assert len(set(volumes)) == 3, f"each broker needs its own storage: {volumes}"


def test_kafka_cluster_listeners_do_not_clash(kafka_cluster):
    published = []
    for name, node in kafka_cluster.items():
        env = node["environment"]
        bound = listeners(env["KAFKA_LISTENERS"])
        advertised = listeners(env["KAFKA_ADVERTISED_LISTENERS"])
        assert set(advertised) == set(bound) - {env["KAFKA_CONTROLLER_LISTENER_NAMES"]}
        assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
        ports = {int(p["published"]): int(p["target"]) for p in node["ports"]}
        host_side = [(h, p) for h, p in advertised.values() if h == "localhost"]
        assert len(host_side) == 1, advertised
        host_port = host_side[0][1]
        assert host_port in ports, f"{name}: advertised host port {host_port} is not published"
        assert (name, 19092) in advertised.values()
        published += list(ports)
    single = {int(p["published"]) for p in resolved_config()["services"]["kafka"]["ports"]}
    assert len(set(published)) == 3 and not single & set(published), (
        f"the cluster's host ports {published} must differ from each other and from {single}"
    )


def test_hermes_services_can_use_the_kafka_cluster():
    brokers = "kafka-1:19092,kafka-2:19092,kafka-3:19092"
    env = dict(os.environ, HERMES_KAFKA_BROKERS=brokers)
    services = resolved_config(profiles=["cluster", "kafka-cluster"], env=env)["services"]
    for name, service in hermes_services(services).items():
        assert service["environment"]["HERMES_KAFKA__BROKERS"] == brokers, name
