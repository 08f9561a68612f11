#!/usr/bin/env bash
# Installs the Debian packages iat's build, tests, examples and benchmarks need, when missing.
# Sourced by scripts/test.sh and scripts/demo.sh; safe to run again.
set -euo pipefail

IAT_DEBIAN_PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libtorch-dev libopenblas0-pthread        # LibTorch 1.13.1 (CPU) and a fast BLAS for its linear layers
  libgloo-dev                              # Gloo headers for iat::distributed (c10d on the CPU), both legs
  catch2 libfmt-dev libcli11-dev nlohmann-json3-dev libstb-dev zlib1g-dev libzip-dev
  python3-torch python3-numpy              # side-by-side references in benchmarks and interop tests
  python3-matplotlib                       # the pictures (scripts/report.py)
  dataset-fashion-mnist                    # the real data of the demo
)

# iat_install_packages PKG...: installs those of the packages that are missing (apt-get, as root or with sudo).
iat_install_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "iat: installing Debian packages: ${missing[*]}"
    local SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

iat_install_packages "${IAT_DEBIAN_PACKAGES[@]}"
