#!/usr/bin/env bash
# Set up dse on a fresh Debian machine: system tools (apt) + the locked Python env (uv).
# Idempotent: safe to run again; it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(poppler-utils chromium libreoffice-impress libreoffice-writer libreoffice-calc tesseract-ocr
              fonts-dejavu-core fonts-liberation)
UV_VERSION=0.13.9

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v uv >/dev/null 2>&1 || [ "$(uv --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  echo "setup: installing uv $UV_VERSION" >&2
  python3 -m pip install -q "uv==$UV_VERSION"
fi

# The lock file pins torch 2.13.0 + torchvision 0.28.0 from PyPI (CUDA builds that run on a CPU).
# FAISS: the "cpu" extra (faiss-cpu); on a CUDA machine use DSE_EXTRA=gpu (faiss-gpu-cu12).
uv sync --frozen --extra "${DSE_EXTRA:-cpu}" --extra all
echo "setup: done ($(uv run --frozen python -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__)'))" >&2
