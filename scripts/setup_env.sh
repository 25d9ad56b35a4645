#!/usr/bin/env bash
# Create the virtual environment and install everything the demo and the tests need.
# Idempotent: safe to run again. Torch is installed first, pinned to the CPU build
# this machine class ships; the package itself only asks for torch>=2.4, so a GPU
# user who installed their own torch build keeps it.
set -euo pipefail
VENV=${1:-.venv}
PYTHON=${PYTHON:-python3}

system_packages=(xvfb xauth libgl1 libegl1 libxkbcommon-x11-0 libxkbcommon0 libxcb-icccm4 libxcb-keysyms1
  libxcb-xinerama0 libxcb-image0 libxcb-render-util0 libxcb-randr0 libxcb-shape0 libxcb-xfixes0
  libxcb-cursor0 libxcb-xkb1 libdbus-1-3 libfontconfig1 libglib2.0-0)

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for package in "${system_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
fi
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    echo "setup: installing system packages for headless Qt: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: warning: missing ${missing[*]} and no apt-get; GUI tests need an X server (xvfb)" >&2
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  "$VENV/bin/python" -m pip install -q torch==2.13.0
fi
"$VENV/bin/python" -m pip install -q -e ".[pyqt,testing]"
# The Qt binding is PyQt6 (napari's own extra); a PyQt5 left by an earlier install would still be the one
# qtpy and napari pick, with napari's deprecation warning on every start.
if "$VENV/bin/python" -m pip show -q PyQt5 >/dev/null 2>&1; then
  "$VENV/bin/python" -m pip uninstall -q -y PyQt5 PyQt5-Qt5 PyQt5-sip
fi
echo "setup: $("$VENV/bin/napari-ssl-seg" --version) installed in $VENV"
