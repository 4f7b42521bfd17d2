"""The artifact pipeline: ONNX model -> training artifacts -> lowered graphs + manifest.

Steps (see ``docs/artifacts-manifest.md`` for the folder contract):

1. make pads explicit (:mod:`.prepare`);
2. ``onnxruntime.training.artifacts.generate_artifacts`` with CrossEntropyLoss
   (``ignore_index=-1``) and AdamW;
3. lower the training and eval graphs (:mod:`.lowering`);
4. export the initial parameters from the checkpoint and write ``manifest.json``;
5. optionally the ``reference/`` parity fixture (:mod:`.reference`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import onnx
from onnx import TensorProto

from . import _ort_training
from .lowering import LoweringError, default_opset, lower_eval_model, lower_training_model
from .prepare import explicit_pads

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TRAINING_LOWERED = "training_lowered.onnx"
EVAL_LOWERED = "eval_lowered.onnx"
INITIAL_PARAMETERS = "initial_parameters.bin"

_DTYPES = {TensorProto.FLOAT: "float32", TensorProto.INT64: "int64", TensorProto.INT32: "int32"}


class ToolError(RuntimeError):
    """A user-facing error of the artifact tool (bad model, bad arguments)."""


@dataclass
class AdamWConfig:
    """Hyper-parameters baked into ``optimizer_model.onnx`` (the reference's AdamW)."""

    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8
    weight_decay: float = 0.01
    correct_bias: bool = True


@dataclass
class BuildOptions:
    """What :func:`build_artifacts` needs besides the model."""

    model_name: str
    out_dir: Path
    label_name: str = "labels"
    logits_name: Optional[str] = None
    frozen: Sequence[str] = field(default_factory=tuple)
    adamw: AdamWConfig = field(default_factory=AdamWConfig)
    with_reference: bool = False
    seed: int = 0


def _quiet_onnxruntime() -> None:
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)
    logging.getLogger().setLevel(logging.WARNING)


def _dims(vi: onnx.ValueInfoProto) -> List[int]:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return []
    return [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]


def _dtype(vi: onnx.ValueInfoProto) -> str:
    et = vi.type.tensor_type.elem_type
    if et not in _DTYPES:
        raise ToolError(f"input '{vi.name}' has element type {TensorProto.DataType.Name(et)}; "
                        f"supported: {sorted(_DTYPES.values())}")
    return _DTYPES[et]


def _io(vi: onnx.ValueInfoProto) -> Dict[str, object]:
    return {"name": vi.name, "shape": _dims(vi), "dtype": _dtype(vi)}


def _trainable(model: onnx.ModelProto, frozen: Sequence[str]) -> List[str]:
    names = {i.name for i in model.graph.initializer}
    unknown = [f for f in frozen if f not in names]
    if unknown:
        raise ToolError(f"--frozen names no initializer of the model: {unknown}")
    out = [
        i.name
        for i in model.graph.initializer
        if i.data_type == TensorProto.FLOAT and i.name not in frozen and len(i.dims) > 0
    ]
    if not out:
        raise ToolError("the model has no float initializers to train (parameters must be initializers)")
    return out


def _logits_output(model: onnx.ModelProto, logits_name: Optional[str]) -> onnx.ValueInfoProto:
    outs = {o.name: o for o in model.graph.output}
    if logits_name is None:
        if not model.graph.output:
            raise ToolError("the model has no outputs")
        return model.graph.output[0]
    if logits_name not in outs:
        raise ToolError(f"--logits-name '{logits_name}' is not a model output (outputs: {sorted(outs)})")
    return outs[logits_name]


def _num_classes(logits: onnx.ValueInfoProto) -> int:
    dims = _dims(logits)
    if len(dims) < 2 or dims[1] <= 0:
        raise ToolError(f"the logits output '{logits.name}' must have a static class dimension [N, C, ...], "
                        f"got shape {dims}")
    return dims[1]


def _optimizer_attributes(path: Path) -> Dict[str, object]:
    model = onnx.load(str(path))
    for node in model.graph.node:
        if node.op_type == "AdamWOptimizer":
            a = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
            return {
                "type": "AdamW",
                "beta1": float(a.get("alpha", 0.9)),
                "beta2": float(a.get("beta", 0.999)),
                "epsilon": float(a.get("epsilon", 1e-8)),
                "weight_decay": float(a.get("weight_decay", 0.0)),
                "adam_mode": int(a.get("adam_mode", 0)),
                "correct_bias": int(a.get("correct_bias", 1)),
            }
    raise ToolError(f"{path} holds no AdamWOptimizer node")


def generate(model: onnx.ModelProto, opts: BuildOptions, logits: onnx.ValueInfoProto) -> None:
    """Runs ``generate_artifacts`` (CrossEntropyLoss with ignore_index=-1, AdamW) into ``opts.out_dir``."""
    artifacts = _ort_training.artifacts()
    onnxblock = _ort_training.onnxblock()
    label_name, logits_name = opts.label_name, logits.name

    class _CrossEntropyOnLogits(onnxblock.Block):
        """CrossEntropyLoss on the chosen logits output with the chosen label input name."""

        def __init__(self):
            super().__init__()
            self._loss = onnxblock.loss.CrossEntropyLoss(ignore_index=-1)

        def build(self, *outputs):
            return self._loss(logits_name, label_name)

    cfg = opts.adamw
    optimizer = onnxblock.optim.AdamW(
        bias_correction=cfg.correct_bias,
        betas=(cfg.beta1, cfg.beta2),
        eps=cfg.epsilon,
        weight_decay=cfg.weight_decay,
    )
    requires_grad = _trainable(model, opts.frozen)
    with _captured_stderr():
        artifacts.generate_artifacts(
            model,
            requires_grad=requires_grad,
            loss=_CrossEntropyOnLogits(),
            optimizer=optimizer,
            artifact_directory=str(opts.out_dir),
        )
    # onnxblock stamps the optimizer graph with the installed onnx package's IR
    # version (14 for onnx 1.23), which onnxruntime-training 1.19.2 refuses to
    # load; give it the training graph's IR version.
    fix_ir_version(opts.out_dir / "optimizer_model.onnx", onnx.load(str(opts.out_dir / "training_model.onnx")).ir_version)


def fix_ir_version(path: Path, ir_version: int) -> None:
    """Rewrites ``path`` with ``ir_version`` when it is newer."""
    model = onnx.load(str(path))
    if model.ir_version > ir_version:
        model.ir_version = ir_version
        onnx.save(model, str(path))


@contextlib.contextmanager
def _captured_stderr():
    """Swallows the native library's verbose log lines; replays them if the block fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            tmp.seek(0)
            sys.stderr.write(tmp.read().decode(errors="replace")[-20000:])
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _check_same_inputs(train: onnx.ModelProto, ev: onnx.ModelProto) -> None:
    t = [i.name for i in train.graph.input]
    e = [i.name for i in ev.graph.input]
    if sorted(t) != sorted(e):
        raise LoweringError(f"training and eval graphs take different inputs: {sorted(set(t) ^ set(e))}")


def export_parameters(out_dir: Path, names: Sequence[str]) -> List[Dict[str, object]]:
    """Writes ``initial_parameters.bin`` from the checkpoint; returns the manifest parameter entries."""
    api = _ort_training.api()
    state = api.CheckpointState.load_checkpoint(str(out_dir / "checkpoint"))
    entries, offset = [], 0
    with open(out_dir / INITIAL_PARAMETERS, "wb") as f:
        for name in names:
            if name not in state.parameters:
                raise LoweringError(f"parameter '{name}' is not in the checkpoint")
            data = np.ascontiguousarray(state.parameters[name].data, dtype="<f4")
            f.write(data.tobytes())
            entries.append({"name": name, "shape": list(data.shape), "offset": offset, "numel": int(data.size)})
            offset += int(data.size)
    return entries


def build_artifacts(model: onnx.ModelProto, opts: BuildOptions) -> Dict[str, object]:
    """Builds the whole artifact folder for ``model``; returns the manifest."""
    _quiet_onnxruntime()
    out = Path(opts.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    opts.out_dir = out
    for stale in (MANIFEST, TRAINING_LOWERED, EVAL_LOWERED, INITIAL_PARAMETERS):
        if (out / stale).exists():
            (out / stale).unlink()

    onnx.checker.check_model(model)
    model = explicit_pads(model)
    logits = _logits_output(model, opts.logits_name)
    num_classes = _num_classes(logits)
    if opts.label_name in {i.name for i in model.graph.input}:
        raise ToolError(f"--label-name '{opts.label_name}' is already a model input")

    generate(model, opts, logits)

    training = onnx.load(str(out / "training_model.onnx"))
    lowered = lower_training_model(training)
    if lowered.label_name != opts.label_name or lowered.logits_name != logits.name:
        raise LoweringError("the generated loss node does not use the expected logits/label names")
    ev, eval_loss, eval_logits = lower_eval_model(onnx.load(str(out / "eval_model.onnx")), logits)
    _check_same_inputs(lowered.model, ev)
    onnx.save(lowered.model, str(out / TRAINING_LOWERED))
    onnx.save(ev, str(out / EVAL_LOWERED))

    param_names = [p for p, _ in lowered.gradients]
    params = export_parameters(out, param_names)
    special = set(param_names) | {lowered.label_name}
    graph_inputs = {i.name: i for i in lowered.model.graph.input}
    manifest = {
        "format_version": FORMAT_VERSION,
        "model": opts.model_name,
        "training_graph": TRAINING_LOWERED,
        "eval_graph": EVAL_LOWERED,
        "initial_parameters": INITIAL_PARAMETERS,
        "inputs": [_io(i) for i in lowered.model.graph.input if i.name not in special],
        "label": _io(graph_inputs[lowered.label_name]),
        "num_classes": num_classes,
        "parameters": params,
        "train_outputs": {
            "loss": lowered.loss_output,
            "gradients": [{"parameter": p, "output": g} for p, g in lowered.gradients],
        },
        "eval_outputs": {"loss": eval_loss, "logits": eval_logits},
        "optimizer": _optimizer_attributes(out / "optimizer_model.onnx"),
        "loss": {"type": "CrossEntropyLoss", "reduction": "mean", "ignore_index": -1},
        "generator": {
            "onnxruntime_training": _ort_training.version(),
            "loss": "CrossEntropyLoss",
            "opset": default_opset(lowered.model),
        },
    }
    if opts.with_reference:
        from .reference import write_reference

        write_reference(out, manifest, seed=opts.seed)
    # written last: its presence marks a complete folder
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out / MANIFEST)
    return manifest
