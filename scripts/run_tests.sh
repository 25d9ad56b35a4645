#!/usr/bin/env bash
# Lint, manifest, types, then pytest; under a virtual X server when there is no display (napari needs OpenGL).
set -euo pipefail
VENV=${1:-.venv}
"$VENV/bin/ruff" check napari_ssl_seg tests benchmarks scripts
"$VENV/bin/npe2" validate napari-ssl-seg
"$VENV/bin/mypy"  # the packages and settings in pyproject.toml's [tool.mypy]
if [ -z "${DISPLAY:-}" ] && command -v xvfb-run >/dev/null 2>&1; then
  exec xvfb-run -a -s "-screen 0 1280x1024x24" "$VENV/bin/python" -m pytest "${@:2}"
fi
exec "$VENV/bin/python" -m pytest "${@:2}"
