#!/usr/bin/env bash
# The PyPI LibTorch leg's environment: a virtual environment holding the pinned torch 2.x wheel of
# scripts/requirements-pypi.txt (its LibTorch, CUDA-enabled, is what iat builds against in that leg),
# created on first use and reused while it matches the pins. Sourced by scripts/test.sh --torch pypi and
# scripts/gpu_check.sh; exports
#   IAT_PYTHON        the environment's python (torch 2.x, torchattacks, numpy)
#   IAT_TORCH_CMAKE   CMake prefix path for find_package(Torch): the wheel's cmake folder and its root
# Environment: IAT_VENV (default .venv/torch-pypi), IAT_PYTHON_FOR_VENV (default /usr/bin/python3, else
# python3).
set -euo pipefail

IAT_REQUIREMENTS="$(pwd)/scripts/requirements-pypi.txt"
IAT_VENV=${IAT_VENV:-.venv/torch-pypi}
IAT_TORCH_PIN=$(sed -n 's/^torch==//p' "$IAT_REQUIREMENTS")

iat_venv_ok() {
  [ -x "$IAT_VENV/bin/python" ] && cmp -s "$IAT_REQUIREMENTS" "$IAT_VENV/.iat-requirements" &&
    "$IAT_VENV/bin/python" -c "import torch, torchattacks, numpy" >/dev/null 2>&1
}

if ! iat_venv_ok; then
  base=${IAT_PYTHON_FOR_VENV:-}
  [ -n "$base" ] || { [ -x /usr/bin/python3 ] && base=/usr/bin/python3 || base=python3; }
  if ! "$base" -m venv --help >/dev/null 2>&1; then
    # Debian's python3 needs python3-venv for `python3 -m venv`.
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  fi
  echo "iat: creating $IAT_VENV with torch $IAT_TORCH_PIN from PyPI (about 3 GB to download, 5.6 GB installed)"
  start=$(date +%s)
  rm -rf "$IAT_VENV"
  "$base" -m venv "$IAT_VENV"
  "$IAT_VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$IAT_REQUIREMENTS"
  cp "$IAT_REQUIREMENTS" "$IAT_VENV/.iat-requirements"
  echo "iat: $IAT_VENV ready in $(( $(date +%s) - start )) s"
fi

IAT_PYTHON="$(cd "$IAT_VENV/bin" && pwd)/python"
IAT_TORCH_CMAKE=$("$IAT_PYTHON" -c 'import os, torch; print(torch.utils.cmake_prefix_path + ";" + os.path.dirname(torch.__file__))')
export IAT_PYTHON IAT_TORCH_CMAKE
