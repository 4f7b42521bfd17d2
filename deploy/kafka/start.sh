#!/usr/bin/env bash
# Starts a single-node Apache Kafka 4.x broker in KRaft mode (broker and
# controller in one JVM) on loopback, for tests, benchmarks and the demo; or,
# with --cluster N, N such nodes forming one KRaft cluster (one quorum of all N).
#
# Idempotent: if this state dir's broker is already running and answering, it
# says so and exits 0. On first start it formats the storage. It returns once
# the broker answers Kafka ApiVersions requests on KAFKA_PORT, or fails with the
# tail of the broker log. Settings: see common.sh (KAFKA_PORT, KAFKA_DATA_DIR, ...).
#
# Usage: start.sh           start (or reuse) the broker
#        start.sh --check   exit 0 if this state dir's broker runs and answers,
#                           1 otherwise; starts nothing
#        start.sh --cluster N [--check]
#                           the same for an N-broker cluster (2..9; nodes under
#                           KAFKA_CLUSTER_DIR, client ports KAFKA_CLUSTER_PORTS,
#                           default KAFKA_PORT, +1, ...): starts the nodes that do
#                           not run, returns once every broker answers
set -euo pipefail
start_timeout_given="${KAFKA_START_TIMEOUT:-}"
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"

usage="start.sh [--cluster N] [--check]"
check_only=0
cluster_size=""
# --cluster-node (internal): start one node of a cluster; start.sh --cluster
# runs it per node with that node's settings in the environment.
cluster_node=0
while [ "$#" -gt 0 ]; do
    case "$1" in
        --check) check_only=1 ;;
        --cluster)
            [ "$#" -ge 2 ] || die "--cluster needs the number of brokers (usage: $usage)"
            cluster_size="$2"
            shift
            ;;
        --cluster=*) cluster_size="${1#--cluster=}" ;;
        --cluster-node) cluster_node=1 ;;
        -h | --help) sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (usage: $usage)" ;;
    esac
    shift
done

if [ -n "$cluster_size" ]; then
    check_cluster_size "$cluster_size"
    n="$cluster_size"
    KAFKA_START_TIMEOUT="${start_timeout_given:-120}"
    case "$KAFKA_START_TIMEOUT" in '' | *[!0-9]*) die "KAFKA_START_TIMEOUT must be whole seconds, got '$KAFKA_START_TIMEOUT'" ;; esac
    cluster_dirs_setup "$n"
    cluster_ports_setup "$n"
    [ -z "$KAFKA_EXTERNAL_LISTENER" ] \
        || die "KAFKA_EXTERNAL_LISTENER is not supported with --cluster (each broker would need its own external port)"
    [ -z "$KAFKA_SSL_PORT$KAFKA_SASL_SSL_PORT" ] \
        || die "KAFKA_SSL_PORT / KAFKA_SASL_SSL_PORT are not supported with --cluster"
    hosts=""
    for i in $(seq "$n"); do hosts="$hosts${hosts:+,}$KAFKA_HOST:${cluster_ports[i-1]}"; done
    if [ "$check_only" = 1 ]; then
        run_on_nodes start.sh "$n" --check >/dev/null 2>&1 || exit 1
        exit 0
    fi
    "$kafka_dir/fetch.sh"
    mkdir -p "$KAFKA_CLUSTER_DIR" || die "cannot create KAFKA_CLUSTER_DIR $KAFKA_CLUSTER_DIR"
    exec 8>"$KAFKA_CLUSTER_DIR/cluster.lock"
    flock -w $((KAFKA_START_TIMEOUT + KAFKA_STOP_TIMEOUT + 60)) 8 \
        || die "timed out waiting for the lock $KAFKA_CLUSTER_DIR/cluster.lock (another start/stop of this cluster is running)"
    # All nodes are formatted with the one cluster id kept here.
    id_file="$KAFKA_CLUSTER_DIR/cluster.id"
    if [ ! -s "$id_file" ]; then
        new_cluster_id >"$id_file.tmp" && mv -f "$id_file.tmp" "$id_file"
    fi
    voters=""
    for i in $(seq "$n"); do voters="$voters${voters:+,}$i@$KAFKA_HOST:${cluster_cports[i-1]}"; done
    export KAFKA_CLUSTER_ID="$(tr -d '[:space:]' <"$id_file")" KAFKA_CLUSTER_VOTERS="$voters" \
        KAFKA_CLUSTER_SIZE="$n" KAFKA_START_TIMEOUT="$KAFKA_START_TIMEOUT"
    # Refuse before starting anything when a port of a node that is not
    # running is taken (a partial cluster would be left behind otherwise).
    for i in $(seq "$n"); do
        [ -z "$(node_env "$i" && find_node_pid)" ] || continue
        for port in "${cluster_ports[i-1]}" "${cluster_cports[i-1]}"; do
            if port_open "$KAFKA_HOST" "$port"; then
                if kafka_answers "$KAFKA_HOST" "$port"; then
                    what="a Kafka broker that is not node $i of this cluster"
                else
                    what="another process"
                fi
                die "node $i: $KAFKA_HOST:$port is already in use by $what; stop it or pick other ports with KAFKA_CLUSTER_PORTS / KAFKA_CLUSTER_CONTROLLER_PORTS (nothing was started)"
            fi
        done
    done
    failed=0
    run_on_nodes start.sh "$n" --cluster-node || failed=$?
    [ "$failed" = 0 ] || die "$failed of $n brokers did not start (their output above; logs: $KAFKA_CLUSTER_DIR/node-*/broker.log); stop the cluster with deploy/kafka/stop.sh --cluster $n"
    echo "Kafka cluster of $n brokers running on $hosts (state: $KAFKA_CLUSTER_DIR)"
    exit 0
fi

check_port_value KAFKA_PORT "$KAFKA_PORT"
check_port_value KAFKA_CONTROLLER_PORT "$KAFKA_CONTROLLER_PORT"
[ "$KAFKA_PORT" != "$KAFKA_CONTROLLER_PORT" ] \
    || die "KAFKA_PORT and KAFKA_CONTROLLER_PORT must differ (both $KAFKA_PORT)"
case "$KAFKA_START_TIMEOUT" in '' | *[!0-9]*) die "KAFKA_START_TIMEOUT must be whole seconds, got '$KAFKA_START_TIMEOUT'" ;; esac
command -v java >/dev/null 2>&1 || die "java not found (install a JRE >= 17, e.g. apt-get install openjdk-17-jre-headless)"

if [ "$check_only" = 1 ]; then
    [ -n "$(find_broker_pid)" ] && kafka_answers "$KAFKA_HOST" "$KAFKA_PORT"
    exit
fi

# How this broker is named in messages, and how it is stopped and re-ported.
what_broker="the broker"
stop_cmd="deploy/kafka/stop.sh"
port_vars="KAFKA_PORT / KAFKA_CONTROLLER_PORT"
if [ "$cluster_node" = 1 ]; then
    for var in KAFKA_NODE_ID KAFKA_CLUSTER_VOTERS KAFKA_CLUSTER_ID KAFKA_CLUSTER_SIZE; do
        [ -n "${!var:-}" ] || die "--cluster-node is internal to start.sh --cluster N ($var is not set)"
    done
    what_broker="broker $KAFKA_NODE_ID"
    stop_cmd="deploy/kafka/stop.sh --cluster $KAFKA_CLUSTER_SIZE"
    port_vars="KAFKA_CLUSTER_PORTS / KAFKA_CLUSTER_CONTROLLER_PORTS"
else
    "$kafka_dir/fetch.sh"
fi
take_lock

# Waits until pid $1 answers on the client port. Returns 1 if the process
# exits first; dies with the log tail if the timeout passes.
wait_ready() {
    local pid="$1" deadline=$((SECONDS + KAFKA_START_TIMEOUT))
    while [ "$SECONDS" -lt "$deadline" ]; do
        kill -0 "$pid" 2>/dev/null || return 1
        if kafka_answers "$KAFKA_HOST" "$KAFKA_PORT"; then
            return 0
        fi
        sleep 0.2
    done
    tail -n 40 "$log_file" >&2 || true
    die "$what_broker (pid $pid) did not answer on $KAFKA_HOST:$KAFKA_PORT within ${KAFKA_START_TIMEOUT}s (log above, full log: $log_file); stop it with $stop_cmd"
}

# Dies with the log tail after the broker exited during startup.
die_exited() {
    rm -f "$pid_file"
    tail -n 40 "$log_file" >&2 || true
    die "$what_broker exited during startup (log above, full log: $log_file)"
}

running="$(find_broker_pid)"
if [ -n "$running" ]; then
    echo "$running" >"$pid_file"
    wait_ready "$running" || die_exited
    echo "Kafka broker already running (pid $running) on $KAFKA_HOST:$KAFKA_PORT"
    exit 0
fi
rm -f "$pid_file"

for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
    if port_open "$KAFKA_HOST" "$port"; then
        if kafka_answers "$KAFKA_HOST" "$port"; then
            what="a Kafka broker that this script did not start (no broker with $props_file runs)"
        else
            what="another process"
        fi
        die "$KAFKA_HOST:$port is already in use by $what; stop it or pick other ports with $port_vars"
    fi
done

listeners="PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$KAFKA_CONTROLLER_PORT"
advertised="PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT"
protocols="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
if [ -n "$KAFKA_EXTERNAL_LISTENER" ]; then
    for hp in "$KAFKA_EXTERNAL_LISTENER" "$KAFKA_EXTERNAL_ADVERTISED"; do
        case "$hp" in
            ?*:[0-9]*) check_port_value "the port of '$hp'" "${hp##*:}" ;;
            *) die "KAFKA_EXTERNAL_LISTENER / KAFKA_EXTERNAL_ADVERTISED must be host:port, got '$hp'" ;;
        esac
    done
    listeners="$listeners,EXTERNAL://$KAFKA_EXTERNAL_LISTENER"
    advertised="$advertised,EXTERNAL://$KAFKA_EXTERNAL_ADVERTISED"
    protocols="$protocols,EXTERNAL:PLAINTEXT"
fi
tls_props=""
if [ -n "$KAFKA_SSL_PORT$KAFKA_SASL_SSL_PORT" ]; then
    [ -n "$KAFKA_TLS_DIR" ] || die "KAFKA_SSL_PORT / KAFKA_SASL_SSL_PORT need KAFKA_TLS_DIR (make one with deploy/kafka/tls.sh DIR)"
    for f in ca.pem broker.pem; do
        [ -s "$KAFKA_TLS_DIR/$f" ] || die "$KAFKA_TLS_DIR/$f is missing (make it with deploy/kafka/tls.sh $KAFKA_TLS_DIR)"
    done
    tls_dir="$(cd "$KAFKA_TLS_DIR" && pwd)"
    tls_props="ssl.keystore.type=PEM
ssl.keystore.location=$tls_dir/broker.pem
ssl.truststore.type=PEM
ssl.truststore.location=$tls_dir/ca.pem
ssl.client.auth=none"
    if [ -n "$KAFKA_SSL_PORT" ]; then
        check_port_value KAFKA_SSL_PORT "$KAFKA_SSL_PORT"
        listeners="$listeners,SSL://$KAFKA_HOST:$KAFKA_SSL_PORT"
        advertised="$advertised,SSL://$KAFKA_HOST:$KAFKA_SSL_PORT"
        protocols="$protocols,SSL:SSL"
    fi
    if [ -n "$KAFKA_SASL_SSL_PORT" ]; then
        check_port_value KAFKA_SASL_SSL_PORT "$KAFKA_SASL_SSL_PORT"
        listeners="$listeners,SASL_SSL://$KAFKA_HOST:$KAFKA_SASL_SSL_PORT"
        advertised="$advertised,SASL_SSL://$KAFKA_HOST:$KAFKA_SASL_SSL_PORT"
        protocols="$protocols,SASL_SSL:SASL_SSL"
        tls_props="$tls_props
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;"
    fi
fi
scram_args=()
for user in $KAFKA_SCRAM_USERS; do
    case "$user" in
        ?*:?*) scram_args+=(--add-scram "SCRAM-SHA-512=[name=\"${user%%:*}\",password=\"${user#*:}\"]") ;;
        *) die "KAFKA_SCRAM_USERS entries must be name:password, got '$user'" ;;
    esac
done

mkdir -p "$KAFKA_DATA_DIR" || die "cannot create KAFKA_DATA_DIR $KAFKA_DATA_DIR"

node_id=1
voters="1@$KAFKA_HOST:$KAFKA_CONTROLLER_PORT"
replicas=1
min_isr=1
replication_note="Single node: every internal topic has one replica."
node_label=""
if [ "$cluster_node" = 1 ]; then
    node_id="$KAFKA_NODE_ID"
    voters="$KAFKA_CLUSTER_VOTERS"
    # Up to 3 replicas per partition; with 3, a write needs 2 in-sync copies,
    # so one broker may fail without losing acknowledged records or availability.
    replicas=$((KAFKA_CLUSTER_SIZE < 3 ? KAFKA_CLUSTER_SIZE : 3))
    min_isr=$((replicas >= 3 ? 2 : 1))
    node_label=" $node_id"
    replication_note="Node $node_id of a $KAFKA_CLUSTER_SIZE-broker cluster: $replicas replicas, $min_isr in sync for a write."
fi

# The config is regenerated on every start so port/dir changes take effect.
cat >"$props_file" <<PROPS
# Generated by deploy/kafka/start.sh; edits are overwritten on the next start.
process.roles=broker,controller
node.id=$node_id
controller.quorum.voters=$voters
listeners=$listeners
advertised.listeners=$advertised
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=$protocols
log.dirs=$KAFKA_DATA_DIR

# $replication_note
num.partitions=1
default.replication.factor=$replicas
min.insync.replicas=$min_isr
offsets.topic.replication.factor=$replicas
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=$replicas
transaction.state.log.min.isr=$min_isr
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=$replicas
share.coordinator.state.topic.min.isr=$min_isr
group.initial.rebalance.delay.ms=0

# Topics are created explicitly through the admin API.
auto.create.topics.enable=false
PROPS
if [ -n "$tls_props" ]; then
    printf '\n# TLS (KAFKA_TLS_DIR)\n%s\n' "$tls_props" >>"$props_file"
fi
if [ -n "$KAFKA_EXTRA_PROPS" ]; then
    echo "# KAFKA_EXTRA_PROPS" >>"$props_file"
    for kv in $KAFKA_EXTRA_PROPS; do
        case "$kv" in
            ?*=*) echo "$kv" >>"$props_file" ;;
            *) die "KAFKA_EXTRA_PROPS entries must be key=value, got '$kv'" ;;
        esac
    done
fi

log4j_opt="-Dlog4j2.configurationFile=$kafka_dir/log4j2.properties"

if [ "$cluster_node" = 1 ] && [ -f "$KAFKA_DATA_DIR/meta.properties" ]; then
    # A node's storage must belong to this cluster and this node id.
    formatted_id="$(sed -n 's/^cluster.id=//p' "$KAFKA_DATA_DIR/meta.properties")"
    formatted_node="$(sed -n 's/^node.id=//p' "$KAFKA_DATA_DIR/meta.properties")"
    [ "$formatted_id" = "$KAFKA_CLUSTER_ID" ] \
        || die "$KAFKA_DATA_DIR was formatted for Kafka cluster '$formatted_id', not this cluster's '$KAFKA_CLUSTER_ID' ($KAFKA_CLUSTER_DIR/cluster.id); stop the cluster and remove $KAFKA_CLUSTER_DIR to start over"
    [ "$formatted_node" = "$node_id" ] \
        || die "$KAFKA_DATA_DIR was formatted for node $formatted_node, not node $node_id; stop the cluster and remove $KAFKA_CLUSTER_DIR to start over"
fi
if [ ! -f "$KAFKA_DATA_DIR/meta.properties" ]; then
    if [ "$cluster_node" = 1 ]; then
        cluster_id="$KAFKA_CLUSTER_ID"
    else
        cluster_id="$(new_cluster_id)"
    fi
    if ! java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 "$log4j_opt" \
            -cp "$kafka_dir/lib/*" kafka.tools.StorageTool format \
            -t "$cluster_id" -c "$props_file" "${scram_args[@]}" >>"$log_file" 2>&1 9>&-; then
        tail -n 20 "$log_file" >&2 || true
        die "formatting the storage in $KAFKA_DATA_DIR failed (log above)"
    fi
fi

# Starts the broker JVM in its own session with class-data-sharing option $1
# and prints its pid.
launch() {
    rm -f "$pid_file" "$cds_tmp"
    echo "==== $(date -u +%FT%TZ) starting broker$node_label on $KAFKA_HOST:$KAFKA_PORT (controller $KAFKA_CONTROLLER_PORT), $1" >>"$log_file"
    # shellcheck disable=SC2086  # KAFKA_HEAP_OPTS holds several flags
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pid_file" \
        java $KAFKA_HEAP_OPTS "$1" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -XX:ErrorFile="$KAFKA_STATE_DIR/hs_err_pid%p.log" -Djava.awt.headless=true \
        "$log4j_opt" -cp "$kafka_dir/lib/*" kafka.Kafka "$props_file" \
        </dev/null >>"$log_file" 2>&1 9>&- &
    disown
    local pid=""
    for _ in $(seq 100); do
        pid="$(tr -dc '0-9' 2>/dev/null <"$pid_file" || true)"
        [ -n "$pid" ] && break
        sleep 0.1
    done
    [ -n "$pid" ] || die "the broker process did not start (log: $log_file)"
    echo "$pid"
}

case "$KAFKA_CDS" in
    1)
        if [ -s "$cds_archive" ]; then
            cds_opt="-XX:SharedArchiveFile=$cds_archive"
        else
            cds_opt="-XX:ArchiveClassesAtExit=$cds_tmp"
        fi
        ;;
    0) cds_opt="-Xshare:auto" ;;
    *) die "KAFKA_CDS must be 0 or 1, got '$KAFKA_CDS'" ;;
esac

pid="$(launch "$cds_opt")"
if ! wait_ready "$pid"; then
    # An unusable class-data-sharing archive (e.g. a truncated file) can crash
    # the JVM at once: then drop the archive and try once more without it.
    if [ "$cds_opt" != "-XX:SharedArchiveFile=$cds_archive" ] \
        || ! { [ -f "$KAFKA_STATE_DIR/hs_err_pid$pid.log" ] \
            || tail -n 60 "$log_file" | grep -qiE '\[cds\]|shared archive'; }; then
        die_exited
    fi
    echo "$(basename "$0"): broker exited at once with the CDS archive $cds_archive; removing it and retrying without" >&2
    rm -f "$cds_archive"
    pid="$(launch "-XX:ArchiveClassesAtExit=$cds_tmp")"
    wait_ready "$pid" || die_exited
fi
echo "Kafka broker started (pid $pid) on $KAFKA_HOST:$KAFKA_PORT, log: $log_file"
