"""Preparation of a user's ONNX model before artifact generation.

The reference ``ConvGrad`` kernel ignores ``auto_pad`` and computes wrong
gradients for ``SAME_*`` padding, so every ``Conv``/``MaxPool`` with
``auto_pad`` gets explicit ``pads`` first (needs static spatial sizes).
"""

from __future__ import annotations

import copy
import math
from typing import Dict, List

import onnx
from onnx import helper

from .lowering import LoweringError, _Shapes, _attrs

PADDED_OPS = ("Conv", "MaxPool", "AveragePool")


def _set_attr(node: onnx.NodeProto, name: str, value) -> None:
    for i, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[i]
            break
    node.attribute.append(helper.make_attribute(name, value))


def explicit_pads(model: onnx.ModelProto) -> onnx.ModelProto:
    """Returns a copy of ``model`` whose Conv/MaxPool/AveragePool nodes use explicit pads."""
    model = copy.deepcopy(model)
    shapes = None
    for node in model.graph.node:
        if node.op_type not in PADDED_OPS or node.domain not in ("", "ai.onnx"):
            continue
        a: Dict[str, object] = _attrs(node)
        auto_pad = a.get("auto_pad", "NOTSET")
        if auto_pad in ("NOTSET", ""):
            continue
        if shapes is None:
            shapes = _Shapes(model)
        x_dims = shapes.dims.get(node.input[0])
        if x_dims is None or len(x_dims) < 3 or any(d is None for d in x_dims[2:]):
            raise LoweringError(
                f"{node.op_type} '{node.name}' uses auto_pad={auto_pad} but the spatial size of its input "
                f"'{node.input[0]}' is not known statically ({x_dims}); export the model with explicit pads"
            )
        spatial = [int(d) for d in x_dims[2:]]
        r = len(spatial)
        if "kernel_shape" in a:
            kernel: List[int] = list(a["kernel_shape"])
        else:
            kernel = shapes.static(node.input[1], f"{node.op_type} '{node.name}' weight")[2:]
        strides = list(a.get("strides", [1] * r))
        dilations = list(a.get("dilations", [1] * r))
        if auto_pad == "VALID":
            pads = [0] * (2 * r)
        elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            begin, end = [], []
            for size, k, s, d in zip(spatial, kernel, strides, dilations):
                out = math.ceil(size / s)
                total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
                small = total // 2
                if auto_pad == "SAME_UPPER":
                    begin.append(small)
                    end.append(total - small)
                else:
                    begin.append(total - small)
                    end.append(small)
            pads = begin + end
        else:
            raise LoweringError(f"{node.op_type} '{node.name}': unknown auto_pad '{auto_pad}'")
        _set_attr(node, "auto_pad", "NOTSET")
        _set_attr(node, "pads", pads)
    return model
