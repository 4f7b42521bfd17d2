#!/usr/bin/env python3
"""Reference side of the train-step benchmark (common/benches/train_step.rs).

Measures the throughput of onnxruntime-training's own training loop —
``Module.train_step`` (via ``module(*inputs)``) + ``Optimizer.step`` +
``Module.lazy_reset_grad`` — on the *original* artifacts of each folder
(training_model.onnx, optimizer_model.onnx with AdamW, checkpoint), with a
seeded random batch. Run it with the training venv:

    .venv/training/bin/python examples/bench_reference.py \
        --artifacts examples/artifacts/mlp examples/artifacts/cnn \
        --batch 64 --steps 200 --repeats 5 --threads 1

Prints one JSON object on stdout: per model, the samples/s of each repeat
and their median. Nothing else goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--artifacts", nargs="+", required=True, help="artifact folders (with manifest.json)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=200, help="timed steps per repeat")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (0 = onnxruntime's default)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def make_batch(manifest, batch, seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    inputs = {}
    for spec in manifest["inputs"]:
        shape = [batch] + [int(d) for d in spec["shape"][1:]]
        inputs[spec["name"]] = rng.random(shape, dtype=np.float32)
    labels = rng.integers(0, manifest["num_classes"], size=[batch]).astype(np.int64)
    return inputs, labels


def bench_model(folder: Path, args):
    import onnxruntime

    # `import onnxruntime.training` pulls in torch; the artifact tool's helper
    # reaches the training API without it.
    sys.path.insert(0, str(Path(__file__).resolve().parent / "artifact_tool"))
    from hermes_artifacts import _ort_training

    api = _ort_training.api()
    CheckpointState, Module, Optimizer = api.CheckpointState, api.Module, api.Optimizer
    onnxruntime.set_default_logger_severity(3)
    manifest = json.loads((folder / "manifest.json").read_text())
    options = onnxruntime.SessionOptions()
    if args.threads > 0:
        options.intra_op_num_threads = args.threads
    state = CheckpointState.load_checkpoint(str(folder / "checkpoint"))
    module = Module(
        str(folder / "training_model.onnx"),
        state,
        str(folder / "eval_model.onnx"),
        device="cpu",
        session_options=options,
    )
    optimizer = Optimizer(str(folder / "optimizer_model.onnx"), module)
    optimizer.set_learning_rate(args.lr)
    inputs, labels = make_batch(manifest, args.batch, args.seed)
    feeds = [labels if n == manifest["label"]["name"] else inputs[n] for n in module.input_names()]
    module.train()

    def step():
        loss = module(*feeds)
        optimizer.step()
        module.lazy_reset_grad()
        return loss

    for _ in range(args.warmup):
        step()
    rates = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        elapsed = time.perf_counter() - start
        rates.append(args.steps * args.batch / elapsed)
    return {"samples_per_s": rates, "median": statistics.median(rates)}


def main(argv):
    args = parse_args(argv)
    import onnxruntime

    out = {
        "onnxruntime": onnxruntime.__version__,
        "python": sys.version.split()[0],
        "batch": args.batch,
        "steps": args.steps,
        "repeats": args.repeats,
        "threads": args.threads,
        "optimizer": "AdamW (optimizer_model.onnx)",
        "models": {},
    }
    for folder in args.artifacts:
        path = Path(folder)
        if not (path / "manifest.json").is_file():
            print(f"bench_reference.py: {path}/manifest.json missing: run examples/build_artifacts.sh", file=sys.stderr)
            return 2
        manifest = json.loads((path / "manifest.json").read_text())
        out["models"][manifest["model"]] = bench_model(path, args)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
