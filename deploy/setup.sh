#!/usr/bin/env bash
# Sets up everything hermes-rs needs on a fresh Debian machine, reusing what is
# already there: system packages, Python environments, the Kafka broker's jars,
# the ONNX Runtime library, the datasets, the training artifacts, and the build.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
step() { printf '\n\033[1m[setup] %s\033[0m\n' "$*"; }

apt_packages=(cmake pkg-config libcurl4-openssl-dev libsasl2-dev libssl-dev zlib1g-dev
  libzstd-dev openssh-server openssh-client docker-compose iproute2 maven
  openjdk-17-jre-headless python3-venv fonts-dejavu-core iperf3 kcat)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  step "installing system packages: ${missing[*]}"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "[setup] cargo not found: install Rust (rustup, 1.92 or newer) first" >&2; exit 1; }

step "python environments";        bash deploy/python-env.sh
step "kafka broker jars";          bash deploy/kafka/fetch.sh
step "onnx runtime library";       bash deploy/ort/install.sh
step "datasets";                   bash examples/prepare_data.sh
step "training artifacts";         bash examples/build_artifacts.sh
step "building the workspace";     cargo build --workspace --all-targets --quiet
echo "[setup] done"
