"""Runs lowered graphs on the *stock* onnxruntime (the ``.venv/ort`` venv).

This file is self-contained (numpy + onnxruntime only) because it runs in the
other virtual environment: the onnxruntime-training and the stock onnxruntime
packages both install as ``onnxruntime`` and cannot share one.

Usage (``.venv/ort/bin/python stock_runner.py MODE REQUEST.npz RESPONSE.npz``):

* ``run``: request holds ``__graph__`` (path) and the feeds; the response holds
  every graph output by name, plus ``__ort_version__``.
* ``sgd``/``adamw``: request holds ``__graph__``, ``__manifest__`` (path),
  ``__lr__``, ``__steps__`` (and for adamw ``__beta1__``, ``__beta2__``,
  ``__epsilon__``, ``__weight_decay__``), the data/label feeds and the starting
  parameters by name; repeats train step + optimizer step on the same batch and
  returns ``__losses__`` and the final parameters by name (and, with
  ``__snapshot__`` = k, the parameters after step k as ``snapshot/<name>``).  The AdamW update is
  onnxruntime-training's ``AdamWOptimizer`` with ``adam_mode=1``,
  ``correct_bias=1`` (bias correction folded into the learning rate, decoupled
  weight decay applied after the update, step counted from 1).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import onnxruntime as ort


def _session(path: str) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def _split(request):
    meta = {k: request[k] for k in request.files if k.startswith("__")}
    feeds = {k: request[k] for k in request.files if not k.startswith("__")}
    return meta, feeds


def run(request, response_path: str) -> None:
    meta, feeds = _split(request)
    sess = _session(str(meta["__graph__"]))
    names = [o.name for o in sess.get_outputs()]
    values = sess.run(names, feeds)
    out = dict(zip(names, values))
    out["__ort_version__"] = np.array(ort.__version__)
    out["__output_names__"] = np.array(names)
    np.savez(response_path, **out)


def train(mode: str, request, response_path: str) -> None:
    meta, feeds = _split(request)
    sess = _session(str(meta["__graph__"]))
    with open(str(meta["__manifest__"]), encoding="utf-8") as f:
        manifest = json.load(f)
    params = [p["name"] for p in manifest["parameters"]]
    grad_out = {g["parameter"]: g["output"] for g in manifest["train_outputs"]["gradients"]}
    loss_name = manifest["train_outputs"]["loss"]
    fetch = [loss_name] + [grad_out[p] for p in params]
    lr = np.float32(meta["__lr__"])
    steps = int(meta["__steps__"])
    state = {p: feeds[p].astype(np.float32).copy() for p in params}
    m1 = {p: np.zeros_like(v) for p, v in state.items()}
    m2 = {p: np.zeros_like(v) for p, v in state.items()}
    if mode == "adamw":
        b1, b2 = np.float32(meta["__beta1__"]), np.float32(meta["__beta2__"])
        eps, wd = np.float32(meta["__epsilon__"]), np.float32(meta["__weight_decay__"])
    snapshot_at = int(meta["__snapshot__"]) if "__snapshot__" in meta else -1
    out = {}
    losses = []
    for step in range(1, steps + 1):
        feeds.update(state)
        values = sess.run(fetch, feeds)
        losses.append(float(values[0]))
        for p, g in zip(params, values[1:]):
            if mode == "sgd":
                state[p] = state[p] - lr * g
            else:
                m1[p] = b1 * m1[p] + (np.float32(1) - b1) * g
                m2[p] = b2 * m2[p] + (np.float32(1) - b2) * g * g
                c1 = np.float32(1) - np.float32(b1**step)
                c2 = np.float32(1) - np.float32(b2**step)
                lr_c = lr * np.float32(np.sqrt(c2)) / c1
                w = state[p] - lr_c * m1[p] / (np.sqrt(m2[p]) + eps)
                state[p] = w - lr * wd * w
        if step == snapshot_at:
            out.update({f"snapshot/{p}": v.copy() for p, v in state.items()})
    out.update(state)
    out["__losses__"] = np.array(losses, dtype=np.float64)
    np.savez(response_path, **out)


def main(argv) -> int:
    if len(argv) != 4 or argv[1] not in ("run", "sgd", "adamw"):
        print("usage: stock_runner.py run|sgd|adamw REQUEST.npz RESPONSE.npz", file=sys.stderr)
        return 2
    with np.load(argv[2], allow_pickle=False) as request:
        if argv[1] == "run":
            run(request, argv[3])
        else:
            train(argv[1], request, argv[3])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
