#!/usr/bin/env bash
# One-shot, rerunnable set-up of zaqbench's environment on a machine that reaches
# only the package registries. Creates .venv, installs torch, builds mmcv 2.1.0
# with its compiled ops (cached per torch + Python version), installs the
# OpenMMLab stack and zaqbench itself, and installs the Fashion-MNIST data.
# A stamp keyed on this script and setup.cfg makes a rerun take seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ZAQBENCH_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="2.14.1"
TORCHVISION_VERSION="0.29.1"
MMCV_VERSION="2.1.0"
CACHE="${ZAQBENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/zaqbench}"

log() { echo "[setup] $*" >&2; }

stamp_key() {
  cat "$ROOT/tools/setup_env.sh" "$ROOT/setup.cfg" | sha256sum | cut -c1-16
}
STAMP="$VENV/.zaqbench-setup-$(stamp_key)"
if [[ -f "$STAMP" ]]; then
  exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
VPY="$VENV/bin/python"

have_torch() {
  "$VPY" - <<PY 2>/dev/null
import torch, torchvision
assert torch.__version__.split('+')[0] == "$TORCH_VERSION", torch.__version__
assert torchvision.__version__.split('+')[0] == "$TORCHVISION_VERSION"
PY
}
if ! have_torch; then
  log "installing torch $TORCH_VERSION and torchvision $TORCHVISION_VERSION"
  "${PIP[@]}" install "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi

have_mmcv() {
  "$VPY" - <<PY 2>/dev/null
import mmcv
assert mmcv.__version__ == "$MMCV_VERSION"
from mmcv.ops import nms, RoIAlign  # needs the compiled extension
PY
}
if ! have_mmcv; then
  PYV="$("$VPY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
  WHEEL_DIR="$CACHE/wheels/mmcv-$MMCV_VERSION-torch$TORCH_VERSION-$PYV"
  mkdir -p "$WHEEL_DIR"
  WHEEL="$(ls "$WHEEL_DIR"/mmcv-*.whl 2>/dev/null | head -n1 || true)"
  if [[ -z "$WHEEL" ]]; then
    log "building mmcv $MMCV_VERSION with compiled ops (about 5 minutes on 2 cores)"
    BUILD="$(mktemp -d)"
    trap 'rm -rf "$BUILD"' EXIT
    # mmcv's setup.py imports torch and pkg_resources (gone from setuptools 70).
    "${PIP[@]}" install -q "setuptools<70" wheel ninja
    "${PIP[@]}" download -q --no-deps --no-binary :all: --no-build-isolation "mmcv==$MMCV_VERSION" -d "$BUILD"
    tar -xzf "$BUILD"/mmcv-"$MMCV_VERSION".tar.gz -C "$BUILD"
    # torch 2.14's headers need C++20; mmcv 2.1.0 hard-codes -std=c++17.
    sed -i 's/-std=c++17/-std=c++20/g' "$BUILD/mmcv-$MMCV_VERSION/setup.py"
    (cd "$BUILD/mmcv-$MMCV_VERSION" && MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-2}" CFLAGS=-g0 \
      "${PIP[@]}" wheel -q --no-build-isolation --no-deps -w "$BUILD/dist" .)
    cp "$BUILD"/dist/mmcv-*.whl "$WHEEL_DIR/"
    WHEEL="$(ls "$WHEEL_DIR"/mmcv-*.whl | head -n1)"
  fi
  log "installing $WHEEL"
  "${PIP[@]}" install -q "$WHEEL"
fi

log "installing zaqbench and its dependencies"
"${PIP[@]}" install -q -e "$ROOT[all]"
# Test data whose metadata pins versions nothing can resolve: setup.cfg's [zaqbench:test_no_deps].
mapfile -t NO_DEPS < <("$VPY" - "$ROOT/setup.cfg" <<'PY'
import configparser, sys
cfg = configparser.ConfigParser()
cfg.read(sys.argv[1])
print("\n".join(cfg.get("zaqbench:test_no_deps", "packages", fallback="").split()))
PY
)
if (( ${#NO_DEPS[@]} )); then
  log "installing test data without dependencies: ${NO_DEPS[*]}"
  "${PIP[@]}" install -q --no-deps "${NO_DEPS[@]}"
fi
# mmengine's Config resolves 'mmdet::'/'mmseg::' bases through pkg_resources, which
# setuptools dropped after 80; torch 2.14 asks for setuptools>=77.0.3.
"${PIP[@]}" install -q "setuptools>=77.0.3,<81"
"$VPY" -c "import pkg_resources, mmcv.ops, mmdet, mmseg" 2>/dev/null \
  || { log "the OpenMMLab stack does not import; see the messages above"; exit 1; }

# Real data for the embedded defaults: Fashion-MNIST from Debian.
FMNIST=/usr/share/datasets/fashion-mnist
if [[ ! -f "$FMNIST/t10k-images-idx3-ubyte.gz" ]]; then
  if command -v apt-get >/dev/null && [[ "$(id -u)" == 0 ]]; then
    log "installing Debian package dataset-fashion-mnist"
    (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
      || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1)) \
      || log "could not install dataset-fashion-mnist; set ZAQBENCH_DATA or pass --data-root"
  else
    log "Fashion-MNIST not found at $FMNIST and apt-get is not usable here; set ZAQBENCH_DATA or pass --data-root"
  fi
fi

rm -f "$VENV"/.zaqbench-setup-*
touch "$STAMP"
log "environment ready: $VENV"
