"""Optimizer trajectories: lowered graph + numpy optimizer on stock onnxruntime vs the reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import MODEL_NAMES, rel_err, run_stock
from hermes_artifacts.reference import ReferenceTrainer, make_batch, sgd_optimizer_model

TRAJ_TOL = 1e-4
#: SGD learning rates: the CNNs at 0.05 overfit the batch in an oscillating regime
#: where one float-rounding flip of a ReLU/max-pool decision moves the loss by 1e-5
#: and then grows (measured: 0.42 apart after 200 steps, while every single-step
#: gradient matches to 5e-7); at 0.01 they still learn and stay within 5e-7.
SGD_LR = {"mlp": 0.05, "cnn": 0.01, "cnn_grouped": 0.01}


def _feeds(b, inputs, labels):
    feeds = dict(inputs)
    feeds[b.manifest["label"]["name"]] = labels
    feeds.update(b.initial())
    return feeds


def _param_err(b, got, ref):
    return max(rel_err(got[p["name"]], ref[p["name"]]) for p in b.manifest["parameters"])


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_sgd_200_steps_follow_reference(built, model, tmp_path: Path):
    b = built(model)
    inputs, labels = make_batch(b.manifest, 32, 7, ignored=2)
    lr, steps = SGD_LR[model], 200
    ref = ReferenceTrainer(b.path, b.manifest, sgd_optimizer_model(b.path, b.manifest, tmp_path / "sgd.onnx"))
    ref_losses = ref.trajectory(inputs, labels, lr, steps // 2)
    ref_mid = ref.parameters()
    ref_losses += ref.trajectory(inputs, labels, lr, steps - steps // 2)
    meta = {"manifest": str(b.path / "manifest.json"), "lr": lr, "steps": steps, "snapshot": steps // 2}
    out = run_stock("sgd", b.training, _feeds(b, inputs, labels), meta)
    losses = out["__losses__"]
    loss_err = float(np.max(np.abs(losses - np.array(ref_losses))))
    mid_err = _param_err(b, {k[len("snapshot/"):]: v for k, v in out.items() if k.startswith("snapshot/")}, ref_mid)
    final_err = _param_err(b, out, ref.parameters())
    print(f"{model} SGD {steps} steps: loss {ref_losses[0]:.4f} -> {ref_losses[-1]:.4f}, max loss diff "
          f"{loss_err:.3g}; param rel err after {steps // 2} steps {mid_err:.3g}, after {steps} {final_err:.3g}")
    assert ref_losses[-1] < ref_losses[0] - 0.05, "the reference did not learn; the test would be vacuous"
    assert loss_err <= TRAJ_TOL
    assert mid_err <= TRAJ_TOL
    # Late in the run a float-rounding difference can flip one ReLU/max-pool decision
    # (seen once: fc1 rows after ~150 steps); the loss stays within tolerance and the
    # parameters within a loose bound that still catches any systematic error.
    assert final_err <= 1e-2


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_adamw_100_steps_follow_reference(built, model):
    """The AdamW formula recorded in reference.json (adam_mode=1) reproduces the reference."""
    b = built(model)
    opt = b.manifest["optimizer"]
    assert opt["adam_mode"] == 1 and opt["correct_bias"] == 1
    assert opt["weight_decay"] > 0, "weight decay must be exercised"
    inputs, labels = make_batch(b.manifest, 32, 8)
    lr, steps = 0.001, 100
    ref = ReferenceTrainer(b.path, b.manifest, b.path / "optimizer_model.onnx")
    early = 30
    ref_losses = ref.trajectory(inputs, labels, lr, early)
    ref_early = ref.parameters()
    ref_losses += ref.trajectory(inputs, labels, lr, steps - early)
    meta = {"manifest": str(b.path / "manifest.json"), "lr": lr, "steps": steps, "beta1": opt["beta1"],
            "beta2": opt["beta2"], "epsilon": opt["epsilon"], "weight_decay": opt["weight_decay"], "snapshot": early}
    out = run_stock("adamw", b.training, _feeds(b, inputs, labels), meta)
    loss_err = float(np.max(np.abs(out["__losses__"] - np.array(ref_losses))))
    early_err = _param_err(b, {k[len("snapshot/"):]: v for k, v in out.items() if k.startswith("snapshot/")}, ref_early)
    final_err = _param_err(b, out, ref.parameters())
    print(f"{model} AdamW {steps} steps: loss {ref_losses[0]:.4f} -> {ref_losses[-1]:.4f}, max loss diff "
          f"{loss_err:.3g}; param rel err after {early} steps {early_err:.3g}, after {steps} {final_err:.3g}")
    assert loss_err <= TRAJ_TOL
    # The formula is exact while the run is smooth (measured 1.3e-6 .. 2e-5 after 30 steps) ...
    assert early_err <= TRAJ_TOL
    # ... later AdamW's m/sqrt(v) turns float noise in near-zero gradients into
    # full-size steps (measured up to 3e-3 after 100 CNN steps, loss still within 7e-6).
    assert final_err <= 1e-2
