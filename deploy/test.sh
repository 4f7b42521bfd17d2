#!/usr/bin/env bash
# The whole test suite, from a fresh machine: sets everything up, starts a real
# Kafka broker on loopback, then runs format and lint checks, the Rust tests
# (unit + integration against the broker, ONNX Runtime and sshd) and the
# Python tests. Stops the broker afterwards if it started it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash deploy/setup.sh

broker_was_running=0
bash deploy/kafka/start.sh --check >/dev/null 2>&1 && broker_was_running=1
bash deploy/kafka/start.sh
if [ "$broker_was_running" = 0 ]; then trap 'bash deploy/kafka/stop.sh' EXIT; fi
export HERMES_TEST_BROKERS="${HERMES_TEST_BROKERS:-127.0.0.1:${KAFKA_PORT:-9092}}"
# The testbed tests (namespaces, tc, cgroups) need root; as root they must run.
if [ "$(id -u)" = 0 ]; then export HERMES_TESTBED_TESTS=required; fi

echo "[test] cargo fmt --check";  cargo fmt --all -- --check
echo "[test] cargo clippy";       cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "[test] cargo test";         cargo test --workspace --no-fail-fast -- --test-threads 2
echo "[test] python tests"
.venv/training/bin/python -m pytest -q examples/artifact_tool/tests
.venv/ort/bin/python -m pytest -q tests/compose
echo "[test] all green"
