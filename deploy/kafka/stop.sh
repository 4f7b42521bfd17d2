#!/usr/bin/env bash
# Stops the broker started by start.sh (same KAFKA_STATE_DIR): SIGTERM for a
# clean shutdown, SIGKILL after KAFKA_STOP_TIMEOUT seconds (default 60).
# Idempotent: does nothing (exit 0) when no broker is running.
#
# Usage: stop.sh               the single broker
#        stop.sh --cluster N   every broker of the N-broker cluster started by
#                              start.sh --cluster N (same KAFKA_CLUSTER_DIR), one
#                              after the other. A node needs a controller quorum
#                              (a majority of the N) to finish its controlled
#                              shutdown, so the nodes left without one (the last
#                              of three) get SIGKILL after KAFKA_CLUSTER_LAST_STOP_TIMEOUT
#                              seconds (default 5); their storage recovers on the next start.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"

usage="stop.sh [--cluster N]"
cluster_size=""
while [ "$#" -gt 0 ]; do
    case "$1" in
        --cluster)
            [ "$#" -ge 2 ] || die "--cluster needs the number of brokers (usage: $usage)"
            cluster_size="$2"
            shift
            ;;
        --cluster=*) cluster_size="${1#--cluster=}" ;;
        -h | --help) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (usage: $usage)" ;;
    esac
    shift
done

case "$KAFKA_STOP_TIMEOUT" in '' | *[!0-9]*) die "KAFKA_STOP_TIMEOUT must be whole seconds, got '$KAFKA_STOP_TIMEOUT'" ;; esac

if [ -n "$cluster_size" ]; then
    check_cluster_size "$cluster_size"
    [ -d "$KAFKA_CLUSTER_DIR" ] || exit 0
    exec 8>"$KAFKA_CLUSTER_DIR/cluster.lock"
    flock -w $((KAFKA_START_TIMEOUT + KAFKA_STOP_TIMEOUT + 60)) 8 \
        || die "timed out waiting for the lock $KAFKA_CLUSTER_DIR/cluster.lock (another start/stop of this cluster is running)"
    last_timeout="${KAFKA_CLUSTER_LAST_STOP_TIMEOUT:-5}"
    case "$last_timeout" in '' | *[!0-9]*) die "KAFKA_CLUSTER_LAST_STOP_TIMEOUT must be whole seconds, got '$last_timeout'" ;; esac
    n="$cluster_size"
    cluster_dirs_setup "$n"
    running=()
    for i in $(seq "$n"); do
        [ -z "$(node_env "$i" && find_node_pid)" ] || running+=("$i")
    done
    majority=$((n / 2 + 1))
    out="$(mktemp -d)"
    left="${#running[@]}"
    failed=0
    for i in "${running[@]}"; do
        timeout="$KAFKA_STOP_TIMEOUT"
        if [ "$left" -lt "$majority" ]; then
            timeout="$last_timeout"
            echo "node $i: $left of $n brokers left, no controller quorum for a controlled shutdown: SIGKILL after ${timeout}s"
        fi
        rc=0
        ( node_env "$i"; KAFKA_STOP_TIMEOUT="$timeout" exec bash "$kafka_dir/stop.sh" ) \
            >"$out/$i.out" 2>"$out/$i.err" 8>&- || rc=$?
        sed "s/^/node $i: /" "$out/$i.out"
        sed "s/^/node $i: /" "$out/$i.err" >&2
        [ "$rc" = 0 ] || failed=$((failed + 1))
        left=$((left - 1))
    done
    rm -rf "$out"
    [ "$failed" = 0 ] || die "$failed of $n brokers could not be stopped (output above)"
    echo "Kafka cluster of $n brokers stopped (${#running[@]} were running; state kept in $KAFKA_CLUSTER_DIR)"
    exit 0
fi

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
