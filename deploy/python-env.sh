#!/usr/bin/env bash
# Creates the project's two Python virtual environments (idempotent):
#   .venv/training — onnxruntime-training 1.19.2 (reference trainer, artifact generator)
#   .venv/ort      — the stock onnxruntime wheel (runs lowered graphs; ships libonnxruntime.so)
# Both install as the `onnxruntime` package, so they cannot share one environment.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-python3}"

make_venv() {
  local name="$1"; shift
  local dir="$root/.venv/$name" stamp="$root/.venv/$name/.hermes-ok"
  local want="$*"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  echo "[python-env] creating .venv/$name ($want)"
  "$py" -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check "$@"
  echo "$want" > "$stamp"
}

make_venv training "onnxruntime-training==1.19.2" "onnx==1.23.2" "numpy<2" "pytest"
make_venv ort "onnxruntime" "onnx==1.23.2" "numpy" "pytest"
