#!/usr/bin/env bash
# Installs the stock ONNX Runtime shared library into deploy/ort/lib/ (git-ignored).
#
# The library comes from the PyPI `onnxruntime` wheel, which ships
# onnxruntime/capi/libonnxruntime.so.<version>. Source, in order:
#   1. the project venv .venv/ort (created by deploy/python-env.sh; created here if missing),
#   2. `pip download onnxruntime --no-deps` + unzip, when the venv cannot be made.
# Result: deploy/ort/lib/libonnxruntime.so.<version> and a libonnxruntime.so symlink to it,
# which is the path common::engine uses when neither config nor ORT_DYLIB_PATH names one.
# Idempotent and quiet on success; fails loudly otherwise.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dest="$root/deploy/ort/lib"

fail() { echo "[ort/install] error: $*" >&2; exit 1; }

find_in_venv() {
  local capi
  for capi in "$root"/.venv/ort/lib/python3*/site-packages/onnxruntime/capi; do
    [ -d "$capi" ] || continue
    ls "$capi"/libonnxruntime.so.* 2>/dev/null | grep -E 'libonnxruntime\.so\.[0-9]+\.[0-9]+\.[0-9]+$' | head -n 1
    return 0
  done
}

lib="$(find_in_venv || true)"
if [ -z "$lib" ] && [ -f "$root/deploy/python-env.sh" ]; then
  bash "$root/deploy/python-env.sh" >/dev/null || echo "[ort/install] deploy/python-env.sh failed; trying pip download" >&2
  lib="$(find_in_venv || true)"
fi

tmp=""
cleanup() { if [ -n "$tmp" ]; then rm -rf "$tmp"; fi; }
trap cleanup EXIT
if [ -z "$lib" ]; then
  py="${PYTHON:-python3}"
  tmp="$(mktemp -d)"
  "$py" -m pip download --quiet --disable-pip-version-check --no-deps -d "$tmp" onnxruntime \
    || fail "could not download the onnxruntime wheel from PyPI"
  wheel="$(ls "$tmp"/onnxruntime-*.whl 2>/dev/null | head -n 1)"
  [ -n "$wheel" ] || fail "pip download produced no onnxruntime wheel in $tmp"
  "$py" -m zipfile -e "$wheel" "$tmp/wheel" || fail "could not unzip $wheel"
  lib="$(ls "$tmp"/wheel/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null \
    | grep -E 'libonnxruntime\.so\.[0-9]+\.[0-9]+\.[0-9]+$' | head -n 1 || true)"
  [ -n "$lib" ] || fail "the onnxruntime wheel has no onnxruntime/capi/libonnxruntime.so.*"
fi

name="$(basename "$lib")"
mkdir -p "$dest"
if ! cmp -s "$lib" "$dest/$name"; then
  cp "$lib" "$dest/$name.tmp"
  mv "$dest/$name.tmp" "$dest/$name"
fi
# Keep only the installed version next to the link, so the link never points at a stale copy.
for old in "$dest"/libonnxruntime.so.*; do
  [ "$old" = "$dest/$name" ] || rm -f "$old"
done
if [ "$(readlink "$dest/libonnxruntime.so" 2>/dev/null || true)" != "$name" ]; then
  ln -sfn "$name" "$dest/libonnxruntime.so"
fi
[ -s "$dest/libonnxruntime.so" ] || fail "install left no usable $dest/libonnxruntime.so"
