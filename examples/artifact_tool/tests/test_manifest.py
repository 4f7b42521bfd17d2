"""manifest.json and reference/ match the graphs and the contract (docs/artifacts-manifest.md)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from conftest import MODEL_NAMES, rel_err
from hermes_artifacts import _ort_training
from hermes_artifacts.lowering import MS_DOMAIN, is_standard
from hermes_artifacts.reference import ReferenceTrainer

CONTRACT_KEYS = {"format_version", "model", "training_graph", "eval_graph", "initial_parameters", "inputs", "label",
                 "num_classes", "parameters", "train_outputs", "eval_outputs", "generator"}
DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.INT64: "int64", onnx.TensorProto.INT32: "int32"}
MAX_FIXTURE_BYTES = 3 * 1024 * 1024


def _vi(vi):
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim]
    return {"name": vi.name, "shape": dims, "dtype": DTYPES[vi.type.tensor_type.elem_type]}


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_manifest_matches_graphs(built, model):
    b = built(model)
    m = b.manifest
    assert CONTRACT_KEYS <= set(m)
    assert m["format_version"] == 1 and m["model"] == model
    assert m["generator"] == {"onnxruntime_training": "1.19.2", "loss": "CrossEntropyLoss", "opset": 17}
    train = onnx.load(str(b.training))
    ev = onnx.load(str(b.eval))
    params = m["parameters"]

    # inputs: data inputs, label, then every parameter (never initializers)
    expected = m["inputs"] + [m["label"]] + [{"name": p["name"], "shape": p["shape"], "dtype": "float32"} for p in params]
    assert [_vi(i) for i in train.graph.input] == expected
    assert sorted(i.name for i in ev.graph.input) == sorted(e["name"] for e in expected)
    for g in (train, ev):
        assert not {i.name for i in g.graph.initializer} & {p["name"] for p in params}
        assert all(is_standard(n) for n in g.graph.node)
        assert MS_DOMAIN not in {n.domain for n in g.graph.node}
        onnx.checker.check_model(g, full_check=True)
    assert m["inputs"][0]["shape"][0] == -1 and m["label"] == {"name": "labels", "shape": [-1], "dtype": "int64"}

    # outputs: loss, then one raw gradient per parameter with the parameter's shape
    outs = [_vi(o) for o in train.graph.output]
    assert outs[0]["name"] == m["train_outputs"]["loss"]
    grads = m["train_outputs"]["gradients"]
    assert [g["parameter"] for g in grads] == [p["name"] for p in params]
    assert [(o["name"], o["shape"]) for o in outs[1:]] == [(g["output"], p["shape"]) for g, p in zip(grads, params)]
    assert {o.name for o in ev.graph.output} == {m["eval_outputs"]["loss"], m["eval_outputs"]["logits"]}

    # flat parameter buffer: contiguous offsets, values from the checkpoint
    offset = 0
    for p in params:
        assert p["offset"] == offset and p["numel"] == int(np.prod(p["shape"]))
        offset += p["numel"]
    assert (b.path / m["initial_parameters"]).stat().st_size == 4 * offset
    state = _ort_training.api().CheckpointState.load_checkpoint(str(b.path / "checkpoint"))
    for name, value in b.initial().items():
        assert np.array_equal(value, state.parameters[name].data)

    # optimizer record equals the optimizer graph's attributes
    node = next(n for n in onnx.load(str(b.path / "optimizer_model.onnx")).graph.node if n.op_type == "AdamWOptimizer")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    opt = m["optimizer"]
    assert (opt["beta1"], opt["beta2"], opt["epsilon"], opt["weight_decay"]) == pytest.approx(
        (attrs["alpha"], attrs["beta"], attrs["epsilon"], attrs["weight_decay"]))
    assert (opt["adam_mode"], opt["correct_bias"]) == (attrs["adam_mode"], attrs["correct_bias"])


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_reference_fixture(built, model):
    b = built(model, reference=True)
    ref_dir = b.path / "reference"
    r = json.loads((ref_dir / "reference.json").read_text())
    total = sum(p["numel"] for p in b.manifest["parameters"])
    n, c = r["batch_size"], b.manifest["num_classes"]
    for f in ref_dir.iterdir():
        assert f.stat().st_size < MAX_FIXTURE_BYTES, f
    (name, fname), = r["inputs"].items()
    spec = b.manifest["inputs"][0]
    x = np.fromfile(ref_dir / fname, dtype="<f4").reshape([n] + spec["shape"][1:])
    y = np.fromfile(ref_dir / r["labels"], dtype="<i8")
    assert y.shape == (n,) and y.min() >= 0 and y.max() < c
    grads = np.fromfile(ref_dir / r["gradients"], dtype="<f4")
    assert grads.size == total
    assert np.fromfile(ref_dir / r["eval"]["logits"], dtype="<f4").size == n * c
    for opt in ("sgd", "adamw"):
        t = r["trajectories"][opt]
        assert t["steps"] == 100 and len(t["losses"]) == 100
        assert t["losses"][0] == pytest.approx(r["loss"], rel=1e-6)
        assert t["losses"][-1] < t["losses"][0]
        assert np.fromfile(ref_dir / t["final_parameters"], dtype="<f4").size == total
    adamw = r["trajectories"]["adamw"]
    assert {k: adamw[k] for k in ("beta1", "beta2", "epsilon", "weight_decay", "adam_mode", "correct_bias")} == {
        k: b.manifest["optimizer"][k] for k in ("beta1", "beta2", "epsilon", "weight_decay", "adam_mode", "correct_bias")}

    # the recorded values are the reference's (recomputed here)
    trainer = ReferenceTrainer(b.path, b.manifest)
    loss, fresh = trainer.train_step({name: x}, y)
    assert loss == pytest.approx(r["loss"], rel=1e-6)
    flat = np.concatenate([fresh[p["name"]].reshape(-1) for p in b.manifest["parameters"]])
    assert rel_err(grads, flat) <= 1e-6
    assert trainer.eval_loss({name: x}, y) == pytest.approx(r["eval"]["loss"], rel=1e-6)
