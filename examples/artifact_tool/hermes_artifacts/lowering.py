"""Lowering of onnxruntime-training graphs to standard ONNX.

The training graph made by ``generate_artifacts`` uses operators that only the
onnxruntime-training build has (``ReluGrad``, ``SoftmaxCrossEntropyLossGrad``,
``ConvGrad``, ``MaxPoolGrad``, ``InPlaceAccumulatorV2``, ...).  This module
rewrites each of them into standard ONNX operators (recipes in
``/work/shared/LOWERING.md``), turns the raw gradients into graph outputs and
drops the gradient-accumulation machinery, so the graph runs on any stock ONNX
Runtime.  A training-only operator without a recipe stops the lowering with an
:class:`UnsupportedOperatorError` that names it.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MS_DOMAIN = "com.microsoft"
#: Minimum default-domain opset the lowered graph needs (ScatterElements with reduction).
MIN_OPSET = 16
#: Ignore index the lowered loss uses (the reference ignores label -1 even without the attribute).
DEFAULT_IGNORE_INDEX = -1

ACCUMULATOR_OPS = ("InPlaceAccumulatorV2",)
BUFFER_SUFFIX = "_grad.accumulation.buffer"
LAZY_RESET_INPUT = "lazy_reset_grad"

#: ``com.microsoft`` operators that stock ONNX Runtime (CPU) implements; the
#: gradient builder may emit them and they need no lowering.
STOCK_CONTRIB_OPS = frozenset(
    {"FusedMatMul", "FusedGemm", "FusedConv", "Gelu", "FastGelu", "BiasGelu", "QuickGelu", "BiasAdd"}
)


class LoweringError(RuntimeError):
    """The training graph cannot be lowered (the message says why)."""


class UnsupportedOperatorError(LoweringError):
    """A training-only operator has no lowering recipe."""

    def __init__(self, op_type: str, domain: str, node_name: str):
        self.op_type = op_type
        self.domain = domain or "ai.onnx"
        self.node_name = node_name
        super().__init__(
            f"training-only operator '{op_type}' (domain {self.domain}, node '{node_name}') has no "
            "lowering recipe; the lowered graph would not run on stock ONNX Runtime. "
            "Supported: ReluGrad, SigmoidGrad, TanhGrad, SoftmaxCrossEntropyLossGrad, ConvGrad, "
            "MaxPoolGrad, InPlaceAccumulatorV2"
        )


@dataclass
class LoweredTraining:
    """Result of :func:`lower_training_model`."""

    model: onnx.ModelProto
    loss_output: str
    label_name: str
    logits_name: str
    #: (parameter name, gradient output name) in graph input order.
    gradients: List[Tuple[str, str]]


# --------------------------------------------------------------------------- helpers


def _attrs(node: onnx.NodeProto) -> Dict[str, object]:
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def default_opset(model: onnx.ModelProto) -> int:
    """Version of the default ONNX domain the model imports."""
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx"):
            return op.version
    raise LoweringError("the model imports no default ONNX opset")


def is_standard(node: onnx.NodeProto) -> bool:
    """True when a stock ONNX Runtime can run ``node`` without lowering."""
    if node.domain in ("", "ai.onnx", "ai.onnx.ml"):
        return onnx.defs.has(node.op_type, node.domain if node.domain == "ai.onnx.ml" else "")
    if node.domain == MS_DOMAIN:
        return node.op_type in STOCK_CONTRIB_OPS
    return False


class _Emitter:
    """Creates replacement nodes and constants with unique names."""

    def __init__(self, graph: onnx.GraphProto):
        self.graph = graph
        self.nodes: List[onnx.NodeProto] = []
        self.new_inits: List[onnx.TensorProto] = []
        self._taken = {n for node in graph.node for n in (*node.input, *node.output)}
        self._taken |= {i.name for i in graph.input} | {i.name for i in graph.initializer}
        self._consts: Dict[Tuple, str] = {}
        self.prefix = "lowered"

    def fresh(self, hint: str) -> str:
        base = f"{self.prefix}/{hint}"
        name, k = base, 0
        while name in self._taken:
            k += 1
            name = f"{base}_{k}"
        self._taken.add(name)
        return name

    def const(self, value, dtype) -> str:
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            name = self.fresh("const")
            self.new_inits.append(numpy_helper.from_array(arr, name))
            self._consts[key] = name
        return self._consts[key]

    def op(self, op_type: str, inputs: Sequence[str], hint: str, outputs: Optional[Sequence[str]] = None, **attrs):
        outs = list(outputs) if outputs is not None else [self.fresh(f"{hint}/{op_type}")]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=self.fresh(f"{hint}/{op_type}_node"), **attrs))
        return outs[0] if len(outs) == 1 else outs


class _Shapes:
    """Static shapes known from graph inputs, initializers and value_info."""

    def __init__(self, model: onnx.ModelProto):
        self.dims: Dict[str, List[Optional[int]]] = {}
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
        except Exception:  # unknown contrib ops can make inference fail; fall back to declared info
            inferred = model
        for vi in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
            t = vi.type.tensor_type
            if t.HasField("shape"):
                self.dims[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        for init in model.graph.initializer:
            self.dims[init.name] = list(init.dims)

    def static(self, name: str, what: str) -> List[int]:
        dims = self.dims.get(name)
        if dims is None or any(d is None for d in dims):
            raise LoweringError(f"the shape of {what} '{name}' is not known statically ({dims})")
        return [int(d) for d in dims]


# --------------------------------------------------------------------------- recipes


def _relu_grad(e: _Emitter, node: onnx.NodeProto, ctx) -> None:
    dy, x = node.input[0], node.input[1]
    zero = e.const(0.0, np.float32)
    mask = e.op("Greater", [x, zero], node.name)
    e.op("Where", [mask, dy, zero], node.name, outputs=[node.output[0]])


def _sigmoid_grad(e: _Emitter, node: onnx.NodeProto, ctx) -> None:
    dy, y = node.input[0], node.input[1]
    one_minus = e.op("Sub", [e.const(1.0, np.float32), y], node.name)
    local = e.op("Mul", [y, one_minus], node.name)
    e.op("Mul", [dy, local], node.name, outputs=[node.output[0]])


def _tanh_grad(e: _Emitter, node: onnx.NodeProto, ctx) -> None:
    dy, y = node.input[0], node.input[1]
    sq = e.op("Mul", [y, y], node.name)
    local = e.op("Sub", [e.const(1.0, np.float32), sq], node.name)
    e.op("Mul", [dy, local], node.name, outputs=[node.output[0]])


def _sce_loss_grad(e: _Emitter, node: onnx.NodeProto, ctx) -> None:
    """(Exp(log_prob) - OneHot(label)) * s * dY / (sum s, or 1 when 0) for mean."""
    a = _attrs(node)
    reduction = a.get("reduction", "mean")
    ignore_index = int(a.get("ignore_index", DEFAULT_IGNORE_INDEX))
    ins = list(node.input) + [""] * (6 - len(node.input))
    dy, log_prob, label, weight, ignore_input, bias = ins[:6]
    if ignore_input:
        value = ctx.constant_value(ignore_input)
        if value is None:
            raise LoweringError(f"{node.op_type} '{node.name}': ignore_index input must be a constant")
        ignore_index = int(value.reshape(-1)[0])
    h = node.name
    lab = e.op("Cast", [label], h, to=TensorProto.INT64)
    ignored = e.op("Equal", [lab, e.const(ignore_index, np.int64)], h)
    valid = e.op("Not", [ignored], h)
    safe = e.op("Where", [valid, lab, e.const(0, np.int64)], h)
    depth = e.op("Shape", [log_prob], h, start=1, end=2)
    onehot = e.op("OneHot", [safe, depth, e.const([0.0, 1.0], np.float32)], h, axis=1)
    prob = e.op("Exp", [log_prob], h)
    diff = e.op("Sub", [prob, onehot], h)
    s = e.op("Cast", [valid], h, to=TensorProto.FLOAT)
    if weight:
        s = e.op("Mul", [s, e.op("Gather", [weight, safe], h, axis=0)], h)
    s_b = e.op("Unsqueeze", [s, e.const([1], np.int64)], h)
    if reduction == "mean":
        total = e.op("ReduceSum", [s], h, keepdims=0)
        is_zero = e.op("Equal", [total, e.const(0.0, np.float32)], h)
        denom = e.op("Where", [is_zero, e.const(1.0, np.float32), total], h)
        scale = e.op("Div", [dy, denom], h)
        factor = e.op("Mul", [s_b, scale], h)
    elif reduction == "sum":
        factor = e.op("Mul", [s_b, dy], h)
    elif reduction == "none":
        factor = e.op("Mul", [s_b, e.op("Unsqueeze", [dy, e.const([1], np.int64)], h)], h)
    else:
        raise LoweringError(f"{node.op_type} '{node.name}': unknown reduction '{reduction}'")
    if bias:
        out = e.op("Mul", [diff, factor], h)
        e.op("Add", [out, bias], h, outputs=[node.output[0]])
    else:
        e.op("Mul", [diff, factor], h, outputs=[node.output[0]])


def _conv_grad(e: _Emitter, node: onnx.NodeProto, ctx) -> None:
    """ConvGrad(dY, X, W) -> dX, dW, dB with ConvTranspose / Conv / ReduceSum."""
    a = _attrs(node)
    dy, x, w = node.input[0], node.input[1], node.input[2]
    outs = list(node.output) + [""] * (3 - len(node.output))
    dx_out, dw_out, db_out = outs[:3]
    h = node.name or "ConvGrad"
    w_shape = ctx.shapes.static(w, "ConvGrad weight")
    r = len(w_shape) - 2
    kernel = list(a.get("kernel_shape", w_shape[2:]))
    if kernel != w_shape[2:]:
        raise LoweringError(f"ConvGrad '{h}': kernel_shape {kernel} does not match weight shape {w_shape}")
    auto_pad = a.get("auto_pad", "NOTSET")
    pads = list(a.get("pads", [0] * (2 * r)))
    if auto_pad == "VALID":
        pads = [0] * (2 * r)
    elif auto_pad not in ("NOTSET", ""):
        raise LoweringError(
            f"ConvGrad '{h}': auto_pad={auto_pad} is not supported (the reference kernel ignores it); "
            "convert the model's Conv nodes to explicit pads first (the tool's convert command does)"
        )
    strides = list(a.get("strides", [1] * r))
    dilations = list(a.get("dilations", [1] * r))
    group = int(a.get("group", 1))
    spatial_axes = list(range(2, 2 + r))
    perm_swap = [1, 0, *spatial_axes]

    if db_out:
        e.op("ReduceSum", [dy, e.const([0, *spatial_axes], np.int64)], h, outputs=[db_out], keepdims=0)

    if dx_out:
        full = e.op(
            "ConvTranspose",
            [dy, w],
            h,
            strides=strides,
            dilations=dilations,
            group=group,
            kernel_shape=kernel,
            pads=pads[:r] + [0] * r,
            output_padding=[s - 1 for s in strides],
        )
        ends = e.op("Shape", [x], h, start=2)
        e.op("Slice", [full, e.const([0] * r, np.int64), ends, e.const(spatial_axes, np.int64)], h, outputs=[dx_out])

    if dw_out:
        if CONV_WEIGHT_GRAD == "im2col":
            _conv_weight_grad_im2col(e, h, x, dy, dw_out, w_shape, strides, dilations, pads, group)
        else:
            _conv_weight_grad_conv(e, h, x, dy, dw_out, w_shape, strides, dilations, pads, group)


#: How ConvGrad's dW is lowered: "im2col" (shifted slices + one Gemm per group) or "conv" (the LOWERING.md recipe: a Conv of the
#: transposed input by the transposed output gradient).
CONV_WEIGHT_GRAD = "im2col"


def _conv_weight_grad_conv(e: _Emitter, h, x, dy, dw_out, w_shape, strides, dilations, pads, group) -> None:
    """dW = Conv(X^T, dY^T) with strides and dilations swapped, sliced to the kernel size."""
    r = len(w_shape) - 2
    kernel = w_shape[2:]
    spatial_axes = list(range(2, 2 + r))
    perm_swap = [1, 0, *spatial_axes]
    c_per_group = w_shape[1]
    if group == 1:
        xt = e.op("Transpose", [x], h, perm=perm_swap)
    else:
        x4 = e.op("Reshape", [x, e.const([0, group, c_per_group, -1], np.int64)], h)
        x4t = e.op("Transpose", [x4], h, perm=[2, 1, 0, 3])
        spatial = e.op("Shape", [x], h, start=2)
        new_shape = e.op("Concat", [e.const([c_per_group, -1], np.int64), spatial], h, axis=0)
        xt = e.op("Reshape", [x4t, new_shape], h)
    dyt = e.op("Transpose", [dy], h, perm=perm_swap)
    full_w = e.op("Conv", [xt, dyt], h, strides=dilations, dilations=strides, pads=pads, group=group)
    sliced = e.op(
        "Slice",
        [full_w, e.const([0] * r, np.int64), e.const(kernel, np.int64), e.const(spatial_axes, np.int64)],
        h,
    )
    e.op("Transpose", [sliced], h, outputs=[dw_out], perm=perm_swap)


def _conv_weight_grad_im2col(e: _Emitter, h, x, dy, dw_out, w_shape, strides, dilations, pads, group) -> None:
    """dW[m, c, i] = sum_{n, o} dY[n, m, o] * Xpad[n, c, o*s + i*d] as one batched MatMul.

    X is padded and transposed to [C, N, S...]; for every kernel offset i a strided
    Slice gives [C, N, O...] = [g, Cg, K] (K = N * prod(O)); concatenated over the
    offsets: cols [g, kk*Cg, K].  dY becomes [M, K]; per group one
    Gemm(dY_g, cols_g^T) -> [Mg, kk*Cg], rearranged to [M, Cg, k...].
    """
    r = len(w_shape) - 2
    m_out, c_per_group, kernel = w_shape[0], w_shape[1], w_shape[2:]
    m_per_group = m_out // group
    spatial_axes = list(range(2, 2 + r))
    xin = x
    if any(pads):
        xin = e.op("Pad", [x, e.const([0, 0, *pads[:r], 0, 0, *pads[r:]], np.int64)], h, mode="constant")
    xt = e.op("Transpose", [xin], h, perm=[1, 0, *spatial_axes])
    out_size = e.op("Shape", [dy], h, start=2)
    # span of one strided slice: (O - 1) * s + 1
    span = e.op("Add", [e.op("Mul", [e.op("Sub", [out_size, e.const([1] * r, np.int64)], h),
                                     e.const(strides, np.int64)], h), e.const([1] * r, np.int64)], h)
    cols = []
    for offset in itertools.product(*[range(k) for k in kernel]):
        starts = [i * d for i, d in zip(offset, dilations)]
        ends = e.op("Add", [span, e.const(starts, np.int64)], h)
        piece = e.op("Slice", [xt, e.const(starts, np.int64), ends, e.const(spatial_axes, np.int64),
                               e.const(strides, np.int64)], h)
        cols.append(e.op("Reshape", [piece, e.const([group, c_per_group, -1], np.int64)], h))
    stacked = cols[0] if len(cols) == 1 else e.op("Concat", cols, h, axis=1)  # [g, kk*Cg, K]
    dy_t = e.op("Transpose", [dy], h, perm=[1, 0, *spatial_axes])  # [M, N, O...]
    dy_k = e.op("Reshape", [dy_t, e.const([m_out, -1], np.int64)], h)  # [M, K]
    kk = int(np.prod(kernel))
    if group == 1:
        cols2 = e.op("Reshape", [stacked, e.const([kk * c_per_group, -1], np.int64)], h)
        prod = e.op("Gemm", [dy_k, cols2], h, transB=1)  # [M, kk*Cg]
    else:
        col_parts = e.op("Split", [stacked], h, outputs=[e.fresh(f"{h}/cols_g") for _ in range(group)], axis=0)
        dy_parts = e.op("Split", [dy_k], h, outputs=[e.fresh(f"{h}/dy_g") for _ in range(group)], axis=0)
        pieces = []
        for cp, dp in zip(col_parts, dy_parts):
            c2 = e.op("Reshape", [cp, e.const([kk * c_per_group, -1], np.int64)], h)
            pieces.append(e.op("Gemm", [dp, c2], h, transB=1))  # [Mg, kk*Cg]
        prod = e.op("Concat", pieces, h, axis=0)  # [M, kk*Cg]
    prod3 = e.op("Reshape", [prod, e.const([m_out, kk, c_per_group], np.int64)], h)
    prod_t = e.op("Transpose", [prod3], h, perm=[0, 2, 1])  # [M, Cg, kk]
    e.op("Reshape", [prod_t, e.const([m_out, c_per_group, *kernel], np.int64)], h, outputs=[dw_out])


def _maxpool_grad(e: _Emitter, node: onnx.NodeProto, ctx) -> None:
    """Scatter-add dY into zeros of X's shape at the forward MaxPool's flat Indices."""
    dy, indices = node.input[0], node.input[1]
    a = _attrs(node)
    h = node.name or "MaxPoolGrad"
    if int(a.get("storage_order", 0)) != 0:
        raise LoweringError(f"MaxPoolGrad '{h}': storage_order=1 is not supported")
    producer = ctx.producer.get(indices)
    if producer is None or producer.op_type != "MaxPool" or len(producer.output) < 2 or producer.output[1] != indices:
        raise LoweringError(f"MaxPoolGrad '{h}': its Indices input '{indices}' is not a MaxPool Indices output")
    x = producer.input[0]
    shape = e.op("Shape", [x], h)
    zeros = e.op("ConstantOfShape", [shape], h, value=numpy_helper.from_array(np.zeros(1, np.float32)))
    flat = e.const([-1], np.int64)
    zeros_flat = e.op("Reshape", [zeros, flat], h)
    idx_flat = e.op("Reshape", [indices, flat], h)
    dy_flat = e.op("Reshape", [dy, flat], h)
    scattered = e.op("ScatterElements", [zeros_flat, idx_flat, dy_flat], h, axis=0, reduction="add")
    e.op("Reshape", [scattered, shape], h, outputs=[node.output[0]])




class _Context:
    def __init__(self, model: onnx.ModelProto):
        self.shapes = _Shapes(model)
        self.producer = {o: n for n in model.graph.node for o in n.output if o}
        self.inits = {i.name: i for i in model.graph.initializer}

    def constant_value(self, name: str) -> Optional[np.ndarray]:
        init = self.inits.get(name)
        return numpy_helper.to_array(init) if init is not None else None


# --------------------------------------------------------------------------- graph passes


def _forward_loss(e: _Emitter, node: onnx.NodeProto, ctx) -> None:
    """Forward SoftmaxCrossEntropyLoss with an explicit ignore_index and the reference's mean.

    Stock ONNX Runtime wraps label -1 to class C-1 unless ``ignore_index`` is
    set, and returns NaN (0/0) for a mean over a batch whose labels are all
    ignored, where the reference returns 0.  So: ``reduction='none'`` per-sample
    losses, summed and divided by (sum of sample weights, or 1 when that is 0).
    """
    a = _attrs(node)
    ignore_index = int(a.get("ignore_index", DEFAULT_IGNORE_INDEX))
    reduction = a.get("reduction", "mean")
    if reduction != "mean":
        node = copy.deepcopy(node)
        if "ignore_index" not in a:
            node.attribute.append(helper.make_attribute("ignore_index", ignore_index))
        e.nodes.append(node)
        return
    h = node.name or "SoftmaxCrossEntropyLoss"
    ins = list(node.input)
    label = ins[1]
    weight = ins[2] if len(ins) > 2 else ""
    per_sample = e.fresh(f"{h}/per_sample")
    outputs = [per_sample] + list(node.output[1:])
    e.nodes.append(
        helper.make_node(
            "SoftmaxCrossEntropyLoss", ins, outputs, name=e.fresh(f"{h}/none"), reduction="none", ignore_index=ignore_index
        )
    )
    lab = e.op("Cast", [label], h, to=TensorProto.INT64)
    valid = e.op("Not", [e.op("Equal", [lab, e.const(ignore_index, np.int64)], h)], h)
    s = e.op("Cast", [valid], h, to=TensorProto.FLOAT)
    if weight:
        safe = e.op("Where", [valid, lab, e.const(0, np.int64)], h)
        s = e.op("Mul", [s, e.op("Gather", [weight, safe], h, axis=0)], h)
    total = e.op("ReduceSum", [s], h, keepdims=0)
    denom = e.op("Where", [e.op("Equal", [total, e.const(0.0, np.float32)], h), e.const(1.0, np.float32), total], h)
    summed = e.op("ReduceSum", [per_sample], h, keepdims=0)
    e.op("Div", [summed, denom], h, outputs=[node.output[0]])


#: Recipes by (domain, op_type).  Default-domain training kernels are keyed with "".
RECIPES: Dict[Tuple[str, str], Callable] = {
    (MS_DOMAIN, "ReluGrad"): _relu_grad,
    (MS_DOMAIN, "SigmoidGrad"): _sigmoid_grad,
    (MS_DOMAIN, "TanhGrad"): _tanh_grad,
    (MS_DOMAIN, "SoftmaxCrossEntropyLossGrad"): _sce_loss_grad,
    (MS_DOMAIN, "SoftmaxCrossEntropyLossInternalGrad"): _sce_loss_grad,
    (MS_DOMAIN, "ConvGrad"): _conv_grad,
    ("", "MaxPoolGrad"): _maxpool_grad,
    ("", "SoftmaxCrossEntropyLoss"): _forward_loss,
}


def _loss_node(graph: onnx.GraphProto) -> onnx.NodeProto:
    found = [n for n in graph.node if n.op_type == "SoftmaxCrossEntropyLoss" and n.domain in ("", "ai.onnx")]
    if len(found) != 1:
        raise LoweringError(
            f"expected exactly one SoftmaxCrossEntropyLoss node (the CrossEntropyLoss), found {len(found)}"
        )
    return found[0]


def _check_standard(graph: onnx.GraphProto) -> None:
    for node in graph.node:
        if not is_standard(node):
            raise UnsupportedOperatorError(node.op_type, node.domain, node.name)


def _tidy(model: onnx.ModelProto) -> None:
    """Drops unused initializers/value_info and opset imports of unused domains."""
    g = model.graph
    used = {n for node in g.node for n in node.input} | {o.name for o in g.output}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    produced = {o for node in g.node for o in node.output} | {i.name for i in g.input}
    vis = [v for v in g.value_info if v.name in produced]
    del g.value_info[:]
    g.value_info.extend(vis)
    domains = {n.domain if n.domain != "ai.onnx" else "" for n in g.node}
    ops = [o for o in model.opset_import if (o.domain if o.domain != "ai.onnx" else "") in domains or o.domain in ("", "ai.onnx")]
    del model.opset_import[:]
    model.opset_import.extend(ops)


def _rewrite_nodes(model: onnx.ModelProto) -> None:
    ctx = _Context(model)
    e = _Emitter(model.graph)
    for node in model.graph.node:
        recipe = RECIPES.get((node.domain if node.domain != "ai.onnx" else "", node.op_type))
        if recipe is None:
            e.nodes.append(node)
        else:
            recipe(e, node, ctx)
    del model.graph.node[:]
    model.graph.node.extend(e.nodes)
    model.graph.initializer.extend(e.new_inits)


def lower_training_model(training: onnx.ModelProto) -> LoweredTraining:
    """Lowers an onnxruntime-training ``training_model.onnx`` (see module doc)."""
    model = copy.deepcopy(training)
    g = model.graph
    opset = default_opset(model)
    if opset < MIN_OPSET:
        raise LoweringError(f"the model uses ONNX opset {opset}; lowering needs opset >= {MIN_OPSET} (re-export it)")

    loss = _loss_node(g)
    loss_output = loss.output[0]
    logits_name, label_name = loss.input[0], loss.input[1]
    if not g.output or g.output[0].name != loss_output:
        raise LoweringError(f"the first training graph output should be the loss '{loss_output}'")

    # 1. gradient accumulators -> raw gradient outputs
    input_types = {i.name: i for i in g.input}
    grads: Dict[str, str] = {}
    drop_outputs = set()
    kept = []
    for node in g.node:
        if node.domain == MS_DOMAIN and node.op_type in ACCUMULATOR_OPS:
            buffer, value = node.input[0], node.input[1]
            if not buffer.endswith(BUFFER_SUFFIX):
                raise LoweringError(f"{node.op_type} '{node.name}': unexpected buffer name '{buffer}'")
            param = buffer[: -len(BUFFER_SUFFIX)]
            if param not in input_types:
                raise LoweringError(f"{node.op_type} '{node.name}': parameter '{param}' is not a graph input")
            grads[param] = value
            drop_outputs.update(node.output)
        else:
            kept.append(node)
    if not grads:
        raise LoweringError("the training graph has no InPlaceAccumulatorV2 nodes: no trainable parameters found")
    del g.node[:]
    g.node.extend(kept)

    drop_inputs = {LAZY_RESET_INPUT} | {p + BUFFER_SUFFIX for p in grads}
    new_inputs = [i for i in g.input if i.name not in drop_inputs]
    del g.input[:]
    g.input.extend(new_inputs)

    order = [i.name for i in g.input if i.name in grads]
    new_outputs = [o for o in g.output if o.name not in drop_outputs and o.name == loss_output]
    for param in order:
        vi = copy.deepcopy(input_types[param])
        vi.name = grads[param]
        new_outputs.append(vi)
    del g.output[:]
    g.output.extend(new_outputs)

    # 2. recipes, forward-loss ignore index, final check
    _rewrite_nodes(model)
    _tidy(model)
    _check_standard(g)
    onnx.checker.check_model(model)
    return LoweredTraining(model, loss_output, label_name, logits_name, [(p, grads[p]) for p in order])


def lower_eval_model(eval_model: onnx.ModelProto, logits_type: Optional[onnx.ValueInfoProto] = None):
    """Lowers ``eval_model.onnx``: explicit ignore_index, logits added as an output.

    Returns ``(model, loss_output, logits_output)``.
    """
    model = copy.deepcopy(eval_model)
    g = model.graph
    loss = _loss_node(g)
    logits = loss.input[0]
    if logits not in {o.name for o in g.output}:
        if logits_type is not None:
            vi = copy.deepcopy(logits_type)
            vi.name = logits
        else:
            vi = helper.make_tensor_value_info(logits, TensorProto.FLOAT, None)
        g.output.append(vi)
    _rewrite_nodes(model)
    _tidy(model)
    _check_standard(g)
    onnx.checker.check_model(model)
    return model, loss.output[0], logits
