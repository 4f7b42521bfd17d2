#!/usr/bin/env bash
# Stops the broker started by start.sh (same KAFKA_STATE_DIR): SIGTERM for a
# clean shutdown, SIGKILL after KAFKA_STOP_TIMEOUT seconds (default 60).
# Idempotent: does nothing (exit 0) when no broker is running.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"

case "$KAFKA_STOP_TIMEOUT" in '' | *[!0-9]*) die "KAFKA_STOP_TIMEOUT must be whole seconds, got '$KAFKA_STOP_TIMEOUT'" ;; esac
[ -d "$KAFKA_STATE_DIR" ] || exit 0
take_lock

pid="$(find_broker_pid)"
if [ -z "$pid" ]; then
    rm -f "$pid_file"
    exit 0
fi

kill -TERM "$pid" 2>/dev/null || true
deadline=$((SECONDS + KAFKA_STOP_TIMEOUT))
while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
    sleep 0.2
done
clean=1
if kill -0 "$pid" 2>/dev/null; then
    echo "$(basename "$0"): broker (pid $pid) still running after ${KAFKA_STOP_TIMEOUT}s, sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    clean=0
fi
rm -f "$pid_file"

# A class-data-sharing archive dumped at exit is kept only after a clean exit
# (a killed JVM may have left it half written); see common.sh.
if [ -f "$cds_tmp" ]; then
    if [ "$clean" = 1 ] && [ -s "$cds_tmp" ] && [ ! -e "$cds_archive" ] && [ -d "$(dirname "$cds_archive")" ]; then
        cp "$cds_tmp" "$cds_archive.tmp.$$" && mv -f "$cds_archive.tmp.$$" "$cds_archive" \
            || rm -f "$cds_archive.tmp.$$"
    fi
    rm -f "$cds_tmp"
fi
echo "Kafka broker stopped (pid $pid)"
