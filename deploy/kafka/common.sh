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
