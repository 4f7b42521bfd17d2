"""The convert command on user models, and errors: unknown training ops, bad input."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import REL_TOL, TOOL_DIR, Built, rel_err, run_stock
from hermes_artifacts.lowering import UnsupportedOperatorError, lower_training_model
from hermes_artifacts.prepare import explicit_pads
from hermes_artifacts.reference import ReferenceTrainer, make_batch


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hermes_artifacts", *args], cwd=TOOL_DIR, capture_output=True, text=True)


def _param(rng, name, shape, scale=0.1):
    return numpy_helper.from_array(rng.normal(0, scale, shape).astype(np.float32), name)


def _save(tmp_path: Path, nodes, inits, in_shape, out_name="scores", n_out=5, name="user.onnx") -> Path:
    graph = helper.make_graph(
        nodes,
        "user",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", *in_shape])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["N", n_out])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _parity(b: Built, batch_size=12, seed=3, ignored=2):
    trainer = ReferenceTrainer(b.path, b.manifest)
    inputs, labels = make_batch(b.manifest, batch_size, seed, ignored=ignored)
    loss, grads = trainer.train_step(inputs, labels)
    feeds = dict(inputs)
    feeds[b.manifest["label"]["name"]] = labels
    feeds.update(b.initial())
    out = run_stock("run", b.training, feeds)
    errs = [rel_err(out[b.manifest["train_outputs"]["loss"]], np.float32(loss))]
    errs += [rel_err(out[g["output"]], grads[g["parameter"]]) for g in b.manifest["train_outputs"]["gradients"]]
    return max(errs)


def test_convert_user_model_with_sigmoid_tanh_and_custom_label(tmp_path):
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Gemm", ["pixels", "l1.w", "l1.b"], ["a1"], transB=1),
        helper.make_node("Sigmoid", ["a1"], ["s1"]),
        helper.make_node("Gemm", ["s1", "l2.w", "l2.b"], ["a2"], transB=1),
        helper.make_node("Tanh", ["a2"], ["t2"]),
        helper.make_node("Gemm", ["t2", "l3.w", "l3.b"], ["scores"], transB=1),
    ]
    inits = [_param(rng, "l1.w", (16, 12)), _param(rng, "l1.b", (16,)), _param(rng, "l2.w", (8, 16)),
             _param(rng, "l2.b", (8,)), _param(rng, "l3.w", (5, 8)), _param(rng, "l3.b", (5,))]
    src = _save(tmp_path, nodes, inits, [12])
    out = tmp_path / "art"
    proc = _cli("convert", "--onnx", str(src), "--out", str(out), "--label-name", "target")
    assert proc.returncode == 0, proc.stderr
    b = Built(out)
    assert b.manifest["model"] == "user"
    assert b.manifest["label"]["name"] == "target"
    assert b.manifest["num_classes"] == 5
    assert b.manifest["eval_outputs"]["logits"] == "scores"
    err = _parity(b)
    print(f"sigmoid/tanh user model: max rel err {err:.3g}")
    assert err <= REL_TOL


def test_convert_turns_same_padding_into_explicit_pads(tmp_path):
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("Conv", ["pixels", "c.w", "c.b"], ["c"], auto_pad="SAME_UPPER", strides=[2, 2], kernel_shape=[4, 4]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], auto_pad="SAME_LOWER", kernel_shape=[3, 3], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["scores"], transB=1),
    ]
    # 1x11x11 -> conv (SAME_UPPER, s2) 4x6x6 -> pool (SAME_LOWER, s2) 4x3x3 -> fc 5
    inits = [_param(rng, "c.w", (4, 1, 4, 4), 0.3), _param(rng, "c.b", (4,)), _param(rng, "fc.w", (5, 36)), _param(rng, "fc.b", (5,))]
    src = _save(tmp_path, nodes, inits, [1, 11, 11])
    original = onnx.load(str(src))
    explicit = explicit_pads(original)
    assert all(a.s != b"SAME_UPPER" and a.s != b"SAME_LOWER" for n in explicit.graph.node for a in n.attribute if a.name == "auto_pad")
    import onnxruntime

    x = np.random.default_rng(2).random((3, 1, 11, 11), dtype=np.float32)
    want = onnxruntime.InferenceSession(original.SerializeToString()).run(None, {"pixels": x})[0]
    got = onnxruntime.InferenceSession(explicit.SerializeToString()).run(None, {"pixels": x})[0]
    assert rel_err(got, want) <= 1e-6
    out = tmp_path / "art"
    proc = _cli("convert", "--onnx", str(src), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    err = _parity(Built(out))
    print(f"SAME-padded CNN: max rel err {err:.3g}")
    assert err <= REL_TOL


def test_training_op_without_recipe_stops_the_tool(tmp_path):
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Gemm", ["pixels", "w", "b"], ["h"], transB=1), helper.make_node("LeakyRelu", ["h"], ["scores"], alpha=0.1)]
    src = _save(tmp_path, nodes, [_param(rng, "w", (5, 6)), _param(rng, "b", (5,))], [6])
    out = tmp_path / "art"
    proc = _cli("convert", "--onnx", str(src), "--out", str(out))
    assert proc.returncode == 1
    assert "LeakyReluGrad" in proc.stderr
    assert not (out / "manifest.json").exists()
    assert not (out / "training_lowered.onnx").exists()


@pytest.mark.parametrize("replace,domain", [("ReluGrad", "com.microsoft"), ("MaxPoolGrad", "")])
def test_unknown_training_op_is_named(built, replace, domain):
    b = built("cnn")
    training = onnx.load(str(b.path / "training_model.onnx"))
    lower_training_model(training)  # the untouched graph lowers
    broken = copy.deepcopy(training)
    node = next(n for n in broken.graph.node if n.op_type == replace)
    node.op_type = "MadeUpGrad"
    node.domain = domain
    with pytest.raises(UnsupportedOperatorError) as info:
        lower_training_model(broken)
    assert info.value.op_type == "MadeUpGrad"
    assert "MadeUpGrad" in str(info.value)


def test_bad_cli_input_gives_clear_errors(tmp_path):
    proc = _cli("convert", "--onnx", str(tmp_path / "missing.onnx"), "--out", str(tmp_path / "o"))
    assert proc.returncode == 1 and "model file not found" in proc.stderr
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    proc = _cli("convert", "--onnx", str(garbage), "--out", str(tmp_path / "o"))
    assert proc.returncode == 1 and "not a readable ONNX model" in proc.stderr
    rng = np.random.default_rng(0)
    src = _save(tmp_path, [helper.make_node("Gemm", ["pixels", "w", "b"], ["scores"], transB=1)],
                [_param(rng, "w", (5, 6)), _param(rng, "b", (5,))], [6])
    proc = _cli("convert", "--onnx", str(src), "--out", str(tmp_path / "o"), "--label-name", "pixels")
    assert proc.returncode == 1 and "already a model input" in proc.stderr
    proc = _cli("convert", "--onnx", str(src), "--out", str(tmp_path / "o"), "--logits-name", "nope")
    assert proc.returncode == 1 and "not a model output" in proc.stderr
    proc = _cli("build", "--model", "resnet", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
