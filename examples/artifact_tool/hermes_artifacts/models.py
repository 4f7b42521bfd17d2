"""The example models, built directly with ``onnx.helper`` (no torch).

* ``mlp``: 784-128-64-10 with ReLU, as in the original Hermes example (Gemm/Relu).
* ``cnn``: a small CNN for 1x28x28 images: conv, relu, max-pool (twice), fc.
* ``cnn_grouped``: a CNN that exercises the harder lowering cases: dilated,
  strided, padded (also asymmetric) and grouped convolutions, and an
  overlapping, padded max-pool.

Parameters are initialised like PyTorch's default layers
(uniform in +-1/sqrt(fan_in)) from a seeded numpy generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: Default ONNX opset of the example models.
OPSET = 17
#: Name of the data input of the example models.
INPUT_NAME = "input"
#: Name of the logits output of the example models.
LOGITS_NAME = "logits"


@dataclass
class _Builder:
    """Collects nodes and initialisers of a model under construction."""

    rng: np.random.Generator
    nodes: List[onnx.NodeProto]
    inits: List[onnx.TensorProto]

    def param(self, name: str, shape, fan_in: int) -> str:
        bound = 1.0 / np.sqrt(fan_in)
        value = self.rng.uniform(-bound, bound, size=shape).astype(np.float32)
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs, output: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, list(inputs), [output], name=output, **attrs))
        return output

    def linear(self, x: str, prefix: str, fan_in: int, fan_out: int, out: str) -> str:
        w = self.param(f"{prefix}.weight", (fan_out, fan_in), fan_in)
        b = self.param(f"{prefix}.bias", (fan_out,), fan_in)
        return self.node("Gemm", [x, w, b], out, transB=1)

    def conv(self, x: str, prefix: str, cin: int, cout: int, k: int, group: int = 1, **attrs) -> str:
        fan_in = (cin // group) * k * k
        w = self.param(f"{prefix}.weight", (cout, cin // group, k, k), fan_in)
        b = self.param(f"{prefix}.bias", (cout,), fan_in)
        return self.node("Conv", [x, w, b], f"{prefix}.out", kernel_shape=[k, k], group=group, **attrs)


def _finish(name: str, b: _Builder, input_shape, logits: str) -> onnx.ModelProto:
    graph = helper.make_graph(
        b.nodes,
        name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", *input_shape])],
        [helper.make_tensor_value_info(logits, TensorProto.FLOAT, ["batch", 10])],
        initializer=b.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="hermes_artifacts")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def build_mlp(seed: int) -> onnx.ModelProto:
    """The 784-128-64-10 MLP with ReLU activations."""
    b = _Builder(np.random.default_rng(seed), [], [])
    h = b.linear(INPUT_NAME, "fc1", 784, 128, "fc1.out")
    h = b.node("Relu", [h], "relu1")
    h = b.linear(h, "fc2", 128, 64, "fc2.out")
    h = b.node("Relu", [h], "relu2")
    b.linear(h, "fc3", 64, 10, LOGITS_NAME)
    return _finish("hermes_mlp", b, [784], LOGITS_NAME)


def build_cnn(seed: int) -> onnx.ModelProto:
    """Small CNN: conv(1->8,3x3,pad 1) relu maxpool2, conv(8->16) relu maxpool2, fc(784->10)."""
    b = _Builder(np.random.default_rng(seed), [], [])
    h = b.conv(INPUT_NAME, "conv1", 1, 8, 3, pads=[1, 1, 1, 1])
    h = b.node("Relu", [h], "relu1")
    h = b.node("MaxPool", [h], "pool1", kernel_shape=[2, 2], strides=[2, 2])
    h = b.conv(h, "conv2", 8, 16, 3, pads=[1, 1, 1, 1])
    h = b.node("Relu", [h], "relu2")
    h = b.node("MaxPool", [h], "pool2", kernel_shape=[2, 2], strides=[2, 2])
    h = b.node("Flatten", [h], "flat", axis=1)
    b.linear(h, "fc", 16 * 7 * 7, 10, LOGITS_NAME)
    return _finish("hermes_cnn", b, [1, 28, 28], LOGITS_NAME)


def build_cnn_grouped(seed: int) -> onnx.ModelProto:
    """CNN with dilated/strided/padded/grouped convs and an overlapping padded max-pool.

    Shapes: 1x28x28 -> conv1 (dilation 2, pad 2) 8x28x28 -> conv2 (stride 2, pad 1,
    group 4) 16x14x14 -> max-pool (k 3, stride 2, pad 1: overlapping) 16x7x7 ->
    conv3 (stride 2, asymmetric pads, group 2; (7+1-3) mod 2 != 0) 16x3x3 -> fc 10.
    """
    b = _Builder(np.random.default_rng(seed), [], [])
    h = b.conv(INPUT_NAME, "conv1", 1, 8, 3, pads=[2, 2, 2, 2], dilations=[2, 2])
    h = b.node("Relu", [h], "relu1")
    h = b.conv(h, "conv2", 8, 16, 3, group=4, strides=[2, 2], pads=[1, 1, 1, 1])
    h = b.node("Relu", [h], "relu2")
    h = b.node("MaxPool", [h], "pool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    h = b.conv(h, "conv3", 16, 16, 3, group=2, strides=[2, 2], pads=[0, 1, 1, 0])
    h = b.node("Relu", [h], "relu3")
    h = b.node("Flatten", [h], "flat", axis=1)
    b.linear(h, "fc", 16 * 3 * 3, 10, LOGITS_NAME)
    return _finish("hermes_cnn_grouped", b, [1, 28, 28], LOGITS_NAME)


#: The example models by name.
MODELS: Dict[str, Callable[[int], onnx.ModelProto]] = {
    "mlp": build_mlp,
    "cnn": build_cnn,
    "cnn_grouped": build_cnn_grouped,
}
