"""Checks an artifact folder's lowered graphs on the *stock* onnxruntime.

Self-contained (numpy + onnxruntime), to run in the stock venv::

    .venv/ort/bin/python examples/artifact_tool/hermes_artifacts/check_fixture.py examples/artifacts/mlp

Runs the training and eval graphs on the ``reference/`` batch with the initial
parameters and compares loss, every gradient, eval loss and logits with the
reference values (max |a - b| / max |reference| <= 1e-5 per tensor).  Prints
one line per folder; exits 1 with the worst mismatch otherwise.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

TOL = 1e-5


def _rel(got, ref) -> float:
    got, ref = np.asarray(got, np.float64).reshape(-1), np.asarray(ref, np.float64).reshape(-1)
    if got.shape != ref.shape:
        return float("inf")
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    diff = float(np.max(np.abs(got - ref))) if ref.size else 0.0
    return diff / scale if scale > 0 else diff


def check(folder: Path) -> float:
    manifest = json.loads((folder / "manifest.json").read_text())
    ref_dir = folder / "reference"
    ref = json.loads((ref_dir / "reference.json").read_text())
    n = ref["batch_size"]
    feeds = {}
    for spec in manifest["inputs"]:
        shape = [n] + spec["shape"][1:]
        feeds[spec["name"]] = np.fromfile(ref_dir / ref["inputs"][spec["name"]], dtype="<f4").reshape(shape)
    feeds[manifest["label"]["name"]] = np.fromfile(ref_dir / ref["labels"], dtype="<i8")
    flat = np.fromfile(folder / manifest["initial_parameters"], dtype="<f4")
    for p in manifest["parameters"]:
        feeds[p["name"]] = flat[p["offset"] : p["offset"] + p["numel"]].reshape(p["shape"])
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    train = ort.InferenceSession(str(folder / manifest["training_graph"]), opts, providers=["CPUExecutionProvider"])
    outs = manifest["train_outputs"]
    names = [outs["loss"]] + [g["output"] for g in outs["gradients"]]
    values = train.run(names, feeds)
    grads = np.concatenate([v.reshape(-1) for v in values[1:]])
    errors = {
        "loss": _rel(values[0], ref["loss"]),
        "gradients": _rel(grads, np.fromfile(ref_dir / ref["gradients"], dtype="<f4")),
    }
    ev = ort.InferenceSession(str(folder / manifest["eval_graph"]), opts, providers=["CPUExecutionProvider"])
    eo = manifest["eval_outputs"]
    loss, logits = ev.run([eo["loss"], eo["logits"]], feeds)
    errors["eval loss"] = _rel(loss, ref["eval"]["loss"])
    errors["eval logits"] = _rel(logits, np.fromfile(ref_dir / ref["eval"]["logits"], dtype="<f4"))
    worst = max(errors, key=errors.get)
    if errors[worst] > TOL:
        raise SystemExit(f"check_fixture: {folder}: {worst} differs from the reference by {errors[worst]:.3g} "
                         f"(> {TOL}) on onnxruntime {ort.__version__}")
    return errors[worst]


def main(argv) -> int:
    if len(argv) < 2:
        print("usage: check_fixture.py ARTIFACT_DIR...", file=sys.stderr)
        return 2
    for folder in argv[1:]:
        worst = check(Path(folder))
        print(f"{folder}: lowered graphs match the reference on onnxruntime {ort.__version__} (max rel err {worst:.2g})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
