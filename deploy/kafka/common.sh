# Shared settings and helpers of start.sh and stop.sh (sourced, not run).
#
# Env (all optional):
#   KAFKA_PORT             client (PLAINTEXT) port            default 9092
#   KAFKA_CONTROLLER_PORT  KRaft controller port              default 9093
#   KAFKA_HOST             address both listeners bind to     default 127.0.0.1
#   KAFKA_STATE_DIR        pid, log, generated configs        default <repo>/.cache/kafka
#   KAFKA_DATA_DIR         formatted KRaft storage (log.dirs) default <repo>/.cache/kafka/data
#   KAFKA_HEAP_OPTS        JVM heap flags                     default -Xms128m -Xmx512m
#   KAFKA_START_TIMEOUT    seconds to wait for the broker     default 60
#   KAFKA_STOP_TIMEOUT     seconds before SIGKILL on stop     default 60
#   KAFKA_CDS              1: class-data-sharing archive for a faster JVM start
#                          (written at the first clean stop), 0: off   default 1
#   KAFKA_EXTRA_PROPS      extra broker properties, whitespace-separated key=value
#                          pairs that override the defaults (e.g. auto.create.topics.enable=true)
#   KAFKA_EXTERNAL_LISTENER  an extra client listener for other devices, host:port to
#                          bind (e.g. 0.0.0.0:19094); off when empty       default ''
#   KAFKA_EXTERNAL_ADVERTISED  host:port that listener tells clients (the address the
#                          devices reach); default: KAFKA_EXTERNAL_LISTENER
#   KAFKA_TLS_DIR          ca.pem + broker.pem as deploy/kafka/tls.sh makes them;
#                          needed by the two TLS listeners below       default ''
#   KAFKA_SSL_PORT         a TLS (SSL) client listener on KAFKA_HOST     default '' (off)
#   KAFKA_SASL_SSL_PORT    a SASL/SCRAM-SHA-512 over TLS listener        default '' (off)
#   KAFKA_SCRAM_USERS      "name:password ..." SCRAM-SHA-512 users, created when the
#                          storage is formatted (first start)          default ''

kafka_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$kafka_dir/../.." && pwd)"

KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_HOST="${KAFKA_HOST:-127.0.0.1}"
KAFKA_STATE_DIR="${KAFKA_STATE_DIR:-$repo_root/.cache/kafka}"
KAFKA_DATA_DIR="${KAFKA_DATA_DIR:-$KAFKA_STATE_DIR/data}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms128m -Xmx512m}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-60}"
KAFKA_STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-60}"
KAFKA_CDS="${KAFKA_CDS:-1}"
KAFKA_EXTRA_PROPS="${KAFKA_EXTRA_PROPS:-}"
KAFKA_EXTERNAL_LISTENER="${KAFKA_EXTERNAL_LISTENER:-}"
KAFKA_EXTERNAL_ADVERTISED="${KAFKA_EXTERNAL_ADVERTISED:-$KAFKA_EXTERNAL_LISTENER}"
KAFKA_TLS_DIR="${KAFKA_TLS_DIR:-}"
KAFKA_SSL_PORT="${KAFKA_SSL_PORT:-}"
KAFKA_SASL_SSL_PORT="${KAFKA_SASL_SSL_PORT:-}"
KAFKA_SCRAM_USERS="${KAFKA_SCRAM_USERS:-}"

pid_file="$KAFKA_STATE_DIR/broker.pid"
log_file="$KAFKA_STATE_DIR/broker.log"
props_file="$KAFKA_STATE_DIR/server.properties"
lock_file="$KAFKA_STATE_DIR/broker.lock"
# Class-data-sharing (AppCDS) archive of the broker's classes: it roughly halves
# the JVM start on a busy 2-core machine. It lives next to the jars it was made
# from (fetch.sh replaces both together). A broker started without it dumps one
# to cds_tmp when it exits; stop.sh keeps it only after a clean exit.
cds_archive="$kafka_dir/lib/broker.jsa"
cds_tmp="$KAFKA_STATE_DIR/broker.jsa.tmp"

die() { echo "$(basename "$0"): $*" >&2; exit 1; }

# Validates a TCP port number given in env var $1 with value $2.
check_port_value() {
    case "$2" in
        '' | *[!0-9]*) die "$1 must be a port number, got '$2'" ;;
    esac
    [ "$2" -ge 1 ] && [ "$2" -le 65535 ] || die "$1 must be in 1..65535, got '$2'"
}

# Takes the per-state-dir lock so concurrent start/stop calls run one at a time.
take_lock() {
    mkdir -p "$KAFKA_STATE_DIR" || die "cannot create $KAFKA_STATE_DIR"
    exec 9>"$lock_file"
    flock -w $((KAFKA_START_TIMEOUT + KAFKA_STOP_TIMEOUT + 30)) 9 \
        || die "timed out waiting for the lock $lock_file (another start/stop is running)"
}

# True when pid $1 is a live broker started with this state dir's server.properties.
is_our_broker() {
    local pid="$1" cmd
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
    case "$cmd" in
        *"kafka.Kafka $props_file"*) return 0 ;;
        *) return 1 ;;
    esac
}

# Prints the pid of this state dir's broker (pid file first, then a /proc scan
# in case the pid file was lost); prints nothing if none runs.
find_broker_pid() {
    local pid=""
    if [ -f "$pid_file" ]; then
        pid="$(tr -dc '0-9' <"$pid_file")"
        if is_our_broker "$pid"; then echo "$pid"; return 0; fi
    fi
    for d in /proc/[0-9]*; do
        pid="${d#/proc/}"
        if is_our_broker "$pid"; then echo "$pid"; return 0; fi
    done
    return 0
}

# Prints a new Kafka cluster id: 16 random bytes in URL-safe base64 without
# padding, not starting with '-' (the tools would read it as an option).
new_cluster_id() {
    local id=""
    while [ -z "$id" ] || [ "${id#-}" != "$id" ]; do
        id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
    done
    echo "$id"
}

# True when something accepts TCP connections on $1:$2.
port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

# True when a Kafka broker answers an ApiVersions request (v0) on $1:$2 with
# correlation id 1 and error code 0: a real protocol round trip, no JVM needed.
kafka_answers() {
    local reply
    reply="$(timeout 3 bash -c '
        exec 3<>"/dev/tcp/$1/$2" || exit 1
        # size=12, api_key=18 (ApiVersions), version=0, correlation_id=1, client_id="hr"
        printf "\x00\x00\x00\x0c\x00\x12\x00\x00\x00\x00\x00\x01\x00\x02hr" >&3
        head -c 10 <&3 | od -An -tx1
    ' _ "$1" "$2" 2>/dev/null)" || return 1
    reply="$(echo $reply)"
    # bytes 0-3: response size; 4-7: correlation id 1; 8-9: error code 0
    [ "$(echo "$reply" | cut -d' ' -f5-10)" = "00 00 00 01 00 00" ]
}

# --- Cluster mode: start.sh / stop.sh --cluster N ---------------------------
# N combined broker+controller nodes on KAFKA_HOST, one JVM and one state dir
# each (node-1 .. node-N under KAFKA_CLUSTER_DIR), one KRaft quorum of all N.
# Env (all optional; KAFKA_STATE_DIR, KAFKA_DATA_DIR, KAFKA_CONTROLLER_PORT and
# KAFKA_EXTERNAL_* are not used in cluster mode):
#   KAFKA_CLUSTER_DIR      parent of node-1..node-N and cluster.id  default <repo>/.cache/kafka-cluster
#   KAFKA_CLUSTER_PORTS    client ports, comma separated, one per node
#                          default KAFKA_PORT, KAFKA_PORT+1, ... (9092,9093,9094)
#   KAFKA_CLUSTER_CONTROLLER_PORTS  KRaft controller ports, one per node
#                          default each client port + 100 (9192,9193,9194)
# KAFKA_START_TIMEOUT defaults to 120 s there (three JVMs start at once).

KAFKA_CLUSTER_DIR="${KAFKA_CLUSTER_DIR:-$repo_root/.cache/kafka-cluster}"
cluster_dirs=()
cluster_ports=()
cluster_cports=()

# Checks that $1 (the argument of --cluster) is a node count in 2..9.
check_cluster_size() {
    case "$1" in
        [2-9]) ;;
        *) die "--cluster needs the number of brokers, 2 to 9 (e.g. --cluster 3), got '$1'" ;;
    esac
}

# Sets cluster_dirs (node i's state dir at index i-1) for $1 nodes.
cluster_dirs_setup() {
    local i
    cluster_dirs=()
    for i in $(seq "$1"); do
        cluster_dirs+=("$KAFKA_CLUSTER_DIR/node-$i")
    done
}

# Sets cluster_ports and cluster_cports (client and controller port of node i
# at index i-1) for $1 nodes from the settings above, and validates them: one
# per node, numbers, all 2N distinct.
cluster_ports_setup() {
    local n="$1" i p
    check_port_value KAFKA_PORT "$KAFKA_PORT"
    if [ -n "${KAFKA_CLUSTER_PORTS:-}" ]; then
        IFS=', ' read -r -a cluster_ports <<<"$KAFKA_CLUSTER_PORTS"
    else
        cluster_ports=()
        for i in $(seq 0 $((n - 1))); do cluster_ports+=($((KAFKA_PORT + i))); done
    fi
    [ "${#cluster_ports[@]}" = "$n" ] \
        || die "KAFKA_CLUSTER_PORTS must list $n client ports (one per broker), got '${KAFKA_CLUSTER_PORTS:-}'"
    for p in "${cluster_ports[@]}"; do check_port_value "a port of KAFKA_CLUSTER_PORTS" "$p"; done
    if [ -n "${KAFKA_CLUSTER_CONTROLLER_PORTS:-}" ]; then
        IFS=', ' read -r -a cluster_cports <<<"$KAFKA_CLUSTER_CONTROLLER_PORTS"
    else
        cluster_cports=()
        for p in "${cluster_ports[@]}"; do cluster_cports+=($((p + 100))); done
    fi
    [ "${#cluster_cports[@]}" = "$n" ] \
        || die "KAFKA_CLUSTER_CONTROLLER_PORTS must list $n controller ports (one per broker), got '${KAFKA_CLUSTER_CONTROLLER_PORTS:-}'"
    for p in "${cluster_cports[@]}"; do check_port_value "a port of KAFKA_CLUSTER_CONTROLLER_PORTS" "$p"; done
    local dup
    dup="$(printf '%s\n' "${cluster_ports[@]}" "${cluster_cports[@]}" | sort | uniq -d | head -n1)"
    [ -z "$dup" ] || die "port $dup is given twice (client ports ${cluster_ports[*]}, controller ports ${cluster_cports[*]}); every broker needs its own two ports"
}

# Exports node $1's settings (state dir, data dir, node id, and its ports
# once cluster_ports_setup ran) for a start.sh / stop.sh run on that node.
node_env() {
    local i="$1"
    export KAFKA_STATE_DIR="${cluster_dirs[i-1]}" KAFKA_DATA_DIR="${cluster_dirs[i-1]}/data"
    export KAFKA_NODE_ID="$i"
    if [ "${#cluster_ports[@]}" -gt 0 ]; then
        export KAFKA_PORT="${cluster_ports[i-1]}" KAFKA_CONTROLLER_PORT="${cluster_cports[i-1]}"
    fi
}

# Prints the pid of the broker of the state dir in KAFKA_STATE_DIR (after
# node_env, in a subshell), nothing if none runs.
find_node_pid() {
    pid_file="$KAFKA_STATE_DIR/broker.pid"
    props_file="$KAFKA_STATE_DIR/server.properties"
    find_broker_pid
}

# Runs $1 (start.sh or stop.sh) with the remaining arguments for all $2
# nodes at once, each with node_env, then prints each node's output prefixed with `node <i>: `. Returns the number
# of nodes whose script failed (0: all succeeded).
run_on_nodes() {
    local script="$1" n="$2" i failed=0 out
    shift 2
    out="$(mktemp -d)"
    local pids=()
    for i in $(seq "$n"); do
        # fd 8 (the cluster lock) must not leak into the brokers.
        ( node_env "$i"; exec bash "$kafka_dir/$script" "$@" ) \
            >"$out/$i.out" 2>"$out/$i.err" 8>&- &
        pids+=($!)
    done
    for i in $(seq "$n"); do
        wait "${pids[i-1]}" || failed=$((failed + 1))
        sed "s/^/node $i: /" "$out/$i.out"
        sed "s/^/node $i: /" "$out/$i.err" >&2
    done
    rm -rf "$out"
    return "$failed"
}
