"""Torch-free access to the ``onnxruntime.training`` submodules.

``import onnxruntime.training`` runs the package ``__init__``, which imports the
``optim`` subpackage and, through it, ``torch``.  The artifact tool only needs
``onnxruntime.training.artifacts``, ``onnxruntime.training.onnxblock`` and
``onnxruntime.training.api``, none of which need torch.  This module registers
an empty placeholder for the ``onnxruntime.training`` package (with the real
search path) so that importing those submodules never runs the package
``__init__``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types


class TrainingPackageMissing(RuntimeError):
    """Raised when the ``onnxruntime-training`` package is not installed."""


def _install_placeholder() -> None:
    name = "onnxruntime.training"
    if name in sys.modules:
        return
    try:
        spec = importlib.util.find_spec(name)
    except ModuleNotFoundError as err:  # onnxruntime itself is missing
        raise TrainingPackageMissing(
            "onnxruntime-training 1.19.2 is not installed in this Python "
            "(run deploy/python-env.sh and use .venv/training/bin/python)"
        ) from err
    if spec is None or spec.submodule_search_locations is None:
        raise TrainingPackageMissing(
            "this Python has the stock 'onnxruntime' package, which has no training "
            "API; use the onnxruntime-training venv (.venv/training/bin/python)"
        )
    placeholder = types.ModuleType(name)
    placeholder.__path__ = list(spec.submodule_search_locations)
    placeholder.__spec__ = spec
    placeholder.__package__ = name
    sys.modules[name] = placeholder
    importlib.import_module("onnxruntime").training = placeholder  # type: ignore[attr-defined]


def artifacts():
    """Returns the ``onnxruntime.training.artifacts`` module (no torch)."""
    _install_placeholder()
    return importlib.import_module("onnxruntime.training.artifacts")


def onnxblock():
    """Returns the ``onnxruntime.training.onnxblock`` module (no torch)."""
    _install_placeholder()
    return importlib.import_module("onnxruntime.training.onnxblock")


def api():
    """Returns the ``onnxruntime.training.api`` module (no torch)."""
    _install_placeholder()
    return importlib.import_module("onnxruntime.training.api")


def version() -> str:
    """Returns the installed onnxruntime(-training) version string."""
    return importlib.import_module("onnxruntime").__version__
