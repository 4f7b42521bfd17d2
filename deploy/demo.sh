#!/usr/bin/env bash
# The demo, from a fresh machine: sets everything up, starts a local Kafka
# broker, then trains the MLP on mnist_5k with a master and three local
# workers of different (emulated) speeds until the target accuracy.
# Prints the run summary and the path of the plot.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash deploy/setup.sh
bash deploy/kafka/start.sh

run_id="demo-$(date +%Y%m%d-%H%M%S)"
export HERMES_RUN_ID="$run_id"
bin="$root/target/debug"
mkdir -p data/demo
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

echo "[demo] run $run_id: 1 master + 3 workers (slowdown 1x, 2x, 4x: each worker idles"
echo "[demo] (slowdown - 1) x its measured compute time, emulating slower devices)"
slow=(1.0 2.0 4.0)
for i in 0 1 2; do
  HERMES_SLOWDOWN="${slow[$i]}" "$bin/worker" --conf conf/worker.json --id "worker-$((i + 1))" \
    > "data/demo/worker-$((i + 1)).log" 2>&1 &
  pids+=($!)
done
HERMES_MIN_WORKERS=3 "$bin/master" --conf conf/master.json
for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
pids=()
echo "[demo] centralized log: data/centralized-logs/distml-central.txt (last lines below)"
tail -n 5 data/centralized-logs/distml-central.txt
