"""Shared fixtures: built artifact folders, the reference trainer and the stock runner.

The tests run in the onnxruntime-training venv (``.venv/training``); lowered
graphs run on the stock onnxruntime in ``.venv/ort`` through a subprocess
(``hermes_artifacts/stock_runner.py``) because the two packages cannot share
one environment.  ``HERMES_STOCK_PYTHON`` overrides the stock interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import pytest

TOOL_DIR = Path(__file__).resolve().parents[1]
REPO = TOOL_DIR.parents[1]
sys.path.insert(0, str(TOOL_DIR))

from hermes_artifacts.build import BuildOptions, build_artifacts  # noqa: E402
from hermes_artifacts.models import MODELS  # noqa: E402

STOCK_RUNNER = TOOL_DIR / "hermes_artifacts" / "stock_runner.py"
MODEL_NAMES = ("mlp", "cnn", "cnn_grouped")
#: Parity tolerance on loss and gradients (max |a - b| / max |reference| per tensor).
REL_TOL = 1e-5


def stock_python() -> str:
    path = os.environ.get("HERMES_STOCK_PYTHON", str(REPO / ".venv" / "ort" / "bin" / "python"))
    if not Path(path).exists():
        pytest.fail(f"stock onnxruntime python not found at {path} (run deploy/python-env.sh)")
    return path


def run_stock(mode: str, graph: Path, feeds: Dict[str, np.ndarray], meta: Optional[Dict] = None) -> Dict[str, np.ndarray]:
    """Runs ``stock_runner.py MODE`` on the stock onnxruntime and returns its response arrays."""
    with tempfile.TemporaryDirectory() as tmp:
        req, resp = Path(tmp) / "req.npz", Path(tmp) / "resp.npz"
        payload = {k: np.asarray(v) for k, v in feeds.items()}
        payload["__graph__"] = np.array(str(graph))
        for k, v in (meta or {}).items():
            payload[f"__{k}__"] = np.array(v)
        np.savez(req, **payload)
        proc = subprocess.run([stock_python(), str(STOCK_RUNNER), mode, str(req), str(resp)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise AssertionError(f"stock runner failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        with np.load(resp, allow_pickle=False) as r:
            return {k: r[k] for k in r.files}


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    """max |got - ref| / max |ref| (absolute when the reference is all zeros)."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, f"shape {got.shape} != {ref.shape}"
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    diff = float(np.max(np.abs(got - ref))) if ref.size else 0.0
    if not np.isfinite(diff):
        return float("inf")
    return diff / scale if scale > 0 else diff


class Built:
    """An artifact folder built for the tests."""

    def __init__(self, path: Path):
        self.path = path
        self.manifest = json.loads((path / "manifest.json").read_text())

    @property
    def training(self) -> Path:
        return self.path / self.manifest["training_graph"]

    @property
    def eval(self) -> Path:
        return self.path / self.manifest["eval_graph"]

    def initial(self) -> Dict[str, np.ndarray]:
        flat = np.fromfile(self.path / self.manifest["initial_parameters"], dtype="<f4")
        return {
            p["name"]: flat[p["offset"] : p["offset"] + p["numel"]].reshape(p["shape"]) for p in self.manifest["parameters"]
        }


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """Builds (once per session) the example model folders; ``built(name, reference=False)``."""
    cache: Dict = {}

    def get(name: str, reference: bool = False) -> Built:
        key = (name, reference)
        if key not in cache:
            out = tmp_path_factory.mktemp(f"{name}{'_ref' if reference else ''}")
            build_artifacts(MODELS[name](0), BuildOptions(name, out, with_reference=reference, seed=0))
            cache[key] = Built(out)
        return cache[key]

    return get
