"""Lowered graphs on stock onnxruntime vs the reference Module: loss, gradients, eval."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import MODEL_NAMES, REL_TOL, rel_err, run_stock
from hermes_artifacts.reference import ReferenceTrainer, eval_logits, make_batch

# (batch size, data seed, number of labels set to -1)
BATCHES = [(32, 1, 0), (7, 2, 3), (1, 3, 0), (16, 4, 16)]


def _random_parameters(built, seed: int):
    """Parameters away from the initial point (so no ReLU/max-pool pattern is special)."""
    rng = np.random.default_rng(seed)
    return {name: (value + rng.normal(0, 0.05, value.shape)).astype(np.float32) for name, value in built.initial().items()}


def _check_train(built, trainer, params, inputs, labels):
    trainer.set_parameters(params)
    ref_loss, ref_grads = trainer.train_step(inputs, labels)
    feeds = dict(inputs)
    feeds[built.manifest["label"]["name"]] = labels
    feeds.update(params)
    out = run_stock("run", built.training, feeds)
    outputs = built.manifest["train_outputs"]
    errors = {"loss": rel_err(out[outputs["loss"]], np.float32(ref_loss))}
    for g in outputs["gradients"]:
        errors[g["parameter"]] = rel_err(out[g["output"]], ref_grads[g["parameter"]])
    return errors


@pytest.mark.parametrize("model", MODEL_NAMES)
@pytest.mark.parametrize("batch_size,seed,ignored", BATCHES)
def test_loss_and_gradients_match_reference(built, model, batch_size, seed, ignored):
    b = built(model)
    trainer = ReferenceTrainer(b.path, b.manifest)
    inputs, labels = make_batch(b.manifest, batch_size, seed, ignored=ignored)
    for params in (b.initial(), _random_parameters(b, seed)):
        errors = _check_train(b, trainer, params, inputs, labels)
        worst = max(errors, key=errors.get)
        print(f"{model} batch={batch_size} ignored={ignored}: max rel err {errors[worst]:.3g} ({worst})")
        assert errors[worst] <= REL_TOL, errors


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_eval_graph_matches_reference(built, model):
    b = built(model)
    trainer = ReferenceTrainer(b.path, b.manifest)
    inputs, labels = make_batch(b.manifest, 24, 11, ignored=2)
    params = _random_parameters(b, 5)
    trainer.set_parameters(params)
    ref_loss = trainer.eval_loss(inputs, labels)
    ref_logits = eval_logits(b.path, b.manifest, params, inputs, labels)
    feeds = dict(inputs)
    feeds[b.manifest["label"]["name"]] = labels
    feeds.update(params)
    out = run_stock("run", b.eval, feeds)
    assert rel_err(out[b.manifest["eval_outputs"]["loss"]], np.float32(ref_loss)) <= REL_TOL
    assert out[b.manifest["eval_outputs"]["logits"]].shape == (24, b.manifest["num_classes"])
    assert rel_err(out[b.manifest["eval_outputs"]["logits"]], ref_logits) <= REL_TOL


def test_parity_check_can_fail(built):
    """A wrong gradient (other batch) is caught by the same comparison."""
    b = built("mlp")
    trainer = ReferenceTrainer(b.path, b.manifest)
    inputs, labels = make_batch(b.manifest, 8, 1)
    other_inputs, _ = make_batch(b.manifest, 8, 2)
    trainer.set_parameters(b.initial())
    _, ref_grads = trainer.train_step(inputs, labels)
    feeds = dict(other_inputs)
    feeds["labels"] = labels
    feeds.update(b.initial())
    out = run_stock("run", b.training, feeds)
    g = b.manifest["train_outputs"]["gradients"][0]
    assert rel_err(out[g["output"]], ref_grads[g["parameter"]]) > REL_TOL


@pytest.mark.parametrize("variant", ["im2col", "conv"])
def test_both_conv_weight_gradient_recipes_match(built, variant, monkeypatch, tmp_path):
    """ConvGrad's dW has two recipes (lowering.CONV_WEIGHT_GRAD); both must match the reference."""
    import onnx

    from hermes_artifacts import lowering

    b = built("cnn_grouped")
    monkeypatch.setattr(lowering, "CONV_WEIGHT_GRAD", variant)
    lowered = lowering.lower_training_model(onnx.load(str(b.path / "training_model.onnx")))
    ops = {n.op_type for n in lowered.model.graph.node}
    assert ("Gemm" in ops and "Split" in ops) if variant == "im2col" else ("Split" not in ops)
    graph = tmp_path / "training_lowered.onnx"
    onnx.save(lowered.model, str(graph))
    trainer = ReferenceTrainer(b.path, b.manifest)
    inputs, labels = make_batch(b.manifest, 9, 21, ignored=1)
    params = _random_parameters(b, 21)
    trainer.set_parameters(params)
    ref_loss, ref_grads = trainer.train_step(inputs, labels)
    feeds = dict(inputs)
    feeds["labels"] = labels
    feeds.update(params)
    out = run_stock("run", graph, feeds)
    errs = {p: rel_err(out[g], ref_grads[p]) for p, g in lowered.gradients}
    errs["loss"] = rel_err(out[lowered.loss_output], np.float32(ref_loss))
    print(f"cnn_grouped dW recipe {variant}: max rel err {max(errs.values()):.3g}")
    assert max(errs.values()) <= REL_TOL, errs
