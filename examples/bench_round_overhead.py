#!/usr/bin/env python3
"""Round overhead of BSP on loopback: how much longer a round takes than
the slowest worker's own round (compute + emulated idle, as it reports).

Runs the real master and 3 real workers (slowdown 1, 2, 4; the workload of
the performance issue: MLP on mnist_5k) for N versions per setting, in the
same script, alternating, R repeats: `model_delivery` targeted, the same
with every shard sent whole (`cache_samples: false`, the baseline of the
ratios), and broadcast. From each run's metrics.csv (one row per version, with its time)
and summary.json (each worker's mean round time) it takes the median and
p95 of the time between versions and the overhead above the slowest
worker. Prints a table, writes data/bench/round_overhead.json.

    bash deploy/kafka/start.sh && cargo build --workspace
    python3 examples/bench_round_overhead.py [--versions 60] [--repeats 3]
        [--baseline OTHER_CHECKOUT:OTHER_TARGET_DIR]

`--baseline` also runs another build (an older commit's checkout, with its
own conf/, and the target folder its binaries were built in) with targeted
delivery, alternating with this build's runs, and gives every ratio
against it: a before/after from one script on one machine. Where a run
writes phases.csv (the round-phase profile), the medians of its phases are
printed too.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def binary(name, target=None):
    target = Path(target or os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    path = target / "debug" / name
    if not path.exists():
        sys.exit(f"{path} missing: run `cargo build --workspace`")
    return path


def one_run(run_id, overrides, versions, root=ROOT, target=None):
    env = dict(os.environ, HERMES_RUN_ID=run_id, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
    workers = []
    for i, slowdown in enumerate([1, 2, 4]):
        workers.append(
            subprocess.Popen(
                [binary("worker", target), "--id", f"ov{i}"],
                cwd=root,
                env=dict(env, HERMES_SLOWDOWN=str(slowdown)),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    master_env = dict(
        env,
        HERMES_MIN_WORKERS="3",
        HERMES_POLICY__NAME="bsp",
        # The workload: shards sized by throughput (comm_aware, the
        # default, gives a worker whose compute is short next to its
        # transfers larger shards, which changes the workload).
        HERMES_ALLOCATION__MODE="throughput",
        **overrides,
        HERMES_STOP__TARGET_ACCURACY="0.999",
        HERMES_STOP__MAX_VERSIONS=str(versions),
    )
    try:
        done = subprocess.run(
            [binary("master", target), "--conf", "conf/master.json", "--fresh"],
            cwd=root,
            env=master_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=300,
        )
        if done.returncode != 0:
            sys.exit(f"master failed: {done.stderr.decode()[-2000:]}")
    finally:
        for w in workers:
            try:
                w.wait(timeout=20)
            except subprocess.TimeoutExpired:
                w.kill()
    run_dir = root / "data" / "runs" / run_id
    times = []
    with open(run_dir / "metrics.csv") as f:
        next(f)
        for line in f:
            cells = line.split(",")
            if int(cells[2]) >= 1:
                times.append(float(cells[0]))
    gaps = [b - a for a, b in zip(times, times[1:])]
    summary = json.loads((run_dir / "summary.json").read_text())
    slowest = max(w["mean_round_secs"] for w in summary["workers"].values())
    phases = {}
    profile = run_dir / "phases.csv"
    if profile.exists():
        with open(profile) as f:
            header = next(f).strip().split(",")
            for line in list(f)[1:]:
                for k, v in zip(header, line.strip().split(",")):
                    if k.endswith("_ms") and v:
                        phases.setdefault(k[:-3], []).append(float(v))
    return gaps, slowest, phases


def p95(values):
    s = sorted(values)
    return s[min(len(s) - 1, int(0.95 * len(s)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--versions", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline", help="OTHER_CHECKOUT:OTHER_TARGET_DIR, run as `baseline`")
    args = ap.parse_args()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    targeted = {"HERMES_MODEL_DELIVERY": "targeted"}
    settings = [
        ("targeted", targeted, ROOT, None),
        # The same build sending every shard whole (no sample cache).
        ("whole", dict(targeted, HERMES_CACHE_SAMPLES="false"), ROOT, None),
        ("broadcast", {"HERMES_MODEL_DELIVERY": "broadcast"}, ROOT, None),
    ]
    if args.baseline:
        root, target = args.baseline.split(":", 1)
        settings.append(("baseline", targeted, Path(root).resolve(), target))
    results = {}
    for r in range(args.repeats):
        for name, overrides, root, target in settings:
            gaps, slowest, phases = one_run(
                f"overhead-{name}-{stamp}-{r}", overrides, args.versions, root, target
            )
            res = results.setdefault(name, {"gaps": [], "slowest": [], "phases": {}})
            res["gaps"].extend(gaps)
            res["slowest"].append(slowest)
            for k, v in phases.items():
                res["phases"].setdefault(k, []).extend(v)
            print(f"  {name} #{r + 1}: median round {statistics.median(gaps) * 1e3:.1f} ms", flush=True)
            time.sleep(1)
    rows = {}
    for delivery, res in results.items():
        med = statistics.median(res["gaps"])
        slowest = statistics.median(res["slowest"])
        rows[delivery] = {
            "rounds": len(res["gaps"]),
            "median_round_ms": med * 1e3,
            "p95_round_ms": p95(res["gaps"]) * 1e3,
            "slowest_worker_round_ms": slowest * 1e3,
            "median_overhead_ms": (med - slowest) * 1e3,
            "p95_overhead_ms": (p95(res["gaps"]) - slowest) * 1e3,
            "phase_medians_ms": {k: statistics.median(v) for k, v in res["phases"].items()},
        }
    against = "baseline" if "baseline" in rows else "whole"
    base = rows[against]["median_round_ms"]
    base_overhead = rows[against]["median_overhead_ms"]
    for row in rows.values():
        row[f"ratio_vs_{against}"] = row["median_round_ms"] / base
        row[f"overhead_ratio_vs_{against}"] = row["median_overhead_ms"] / base_overhead
    print(f"BSP, 3 workers (slowdown 1/2/4), MLP on mnist_5k, {args.versions} versions x {args.repeats} runs per setting")
    print(f"{'setting':<10} {'rounds':>6} {'median ms':>10} {'p95 ms':>8} {'slowest worker ms':>18} {'overhead ms (med/p95)':>22} {'vs ' + against:>12} {'overhead vs':>12}")
    for name, row in rows.items():
        print(
            f"{name:<10} {row['rounds']:>6} {row['median_round_ms']:>10.1f} {row['p95_round_ms']:>8.1f} "
            f"{row['slowest_worker_round_ms']:>18.1f} {row['median_overhead_ms']:>10.1f} / {row['p95_overhead_ms']:<9.1f} "
            f"{row[f'ratio_vs_{against}']:>12.3f} {row[f'overhead_ratio_vs_{against}']:>12.3f}"
        )
    for name, row in rows.items():
        if row["phase_medians_ms"]:
            parts = ", ".join(f"{k} {v:.1f}" for k, v in sorted(row["phase_medians_ms"].items()))
            print(f"  {name} phases (median ms): {parts}")
    out = ROOT / "data" / "bench" / "round_overhead.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "bench": "round_overhead",
                "date": datetime.now(timezone.utc).isoformat(),
                "machine": os.uname().nodename + f", {os.cpu_count()} cores",
                "versions": args.versions,
                "repeats": args.repeats,
                "baseline": args.baseline,
                "results": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
