"""hermes_artifacts: portable ONNX Runtime training artifacts for hermes-rs.

Builds the example models (or takes a user's ONNX model), generates
onnxruntime-training artifacts, lowers the training graph to standard ONNX
operators, and writes the folder described in ``docs/artifacts-manifest.md``.
Run ``python -m hermes_artifacts --help``.
"""

__version__ = "0.1.0"
