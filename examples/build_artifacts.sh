#!/usr/bin/env bash
# Builds the example training artifacts (git-ignored) with the artifact tool:
#
#   examples/artifacts/mlp/   784-128-64-10 MLP, with the reference/ parity fixture
#   examples/artifacts/cnn/   small CNN for 1x28x28, with the reference/ parity fixture
#
# Uses .venv/training (onnxruntime-training 1.19.2) to generate and lower, then
# .venv/ort (stock onnxruntime) to check the lowered graphs against the fixture.
# Idempotent: a folder whose manifest exists and whose stamp (hash of the tool's
# sources and options) matches is kept. Quiet on success, loud on failure.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
tool="examples/artifact_tool"
training_py=".venv/training/bin/python"
stock_py=".venv/ort/bin/python"
models=(mlp cnn)
seed=0

die() { echo "build_artifacts.sh: $*" >&2; exit 1; }
[[ -x "$training_py" ]] || die "$training_py not found: run deploy/python-env.sh first"
[[ -x "$stock_py" ]] || die "$stock_py not found: run deploy/python-env.sh first"

tool_hash="$(cd "$tool" && find hermes_artifacts pyproject.toml -name '*.py' -o -name pyproject.toml | LC_ALL=C sort \
  | xargs sha256sum | sha256sum | cut -d' ' -f1)"

log="$(mktemp)"
trap 'rm -f "$log"' EXIT

for model in "${models[@]}"; do
  out="examples/artifacts/$model"
  stamp="$tool_hash model=$model seed=$seed reference=1"
  if [[ -f "$out/manifest.json" && -f "$out/reference/reference.json" && -f "$out/.tool-stamp" \
        && "$(cat "$out/.tool-stamp")" == "$stamp" ]]; then
    continue
  fi
  rm -rf "$out"
  mkdir -p "$out"
  if ! (cd "$tool" && "../../$training_py" -m hermes_artifacts build --model "$model" --out "../../$out" \
          --seed "$seed" --with-reference) >"$log" 2>&1; then
    cat "$log" >&2
    die "building $out failed (output above)"
  fi
  if ! "$stock_py" "$tool/hermes_artifacts/check_fixture.py" "$out" >"$log" 2>&1; then
    cat "$log" >&2
    die "the lowered graphs in $out do not match the reference on stock onnxruntime (output above)"
  fi
  echo "$stamp" > "$out/.tool-stamp"
done
