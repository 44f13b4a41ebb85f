#!/usr/bin/env bash
# One-time set-up on a fresh machine: a virtual environment in .venv with the CPU build of torch
# (installed first, so that no CUDA wheels are pulled in), the command line's requirements
# (requirements-cli.txt, which includes the nodes' requirements.txt), Ray for `batch` (requirements-batch.txt)
# and pytest.
# On a CUDA machine, install your CUDA torch into .venv first; the script keeps an existing torch.
# ComfyUI itself is not needed here; to install the nodes into ComfyUI see the README.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -r requirements-cli.txt pytest pytest-xdist
.venv/bin/python -m pip install -q -r requirements-batch.txt  # Ray: the batch command only
.venv/bin/python -c "import torch, diffusers, cv2; print('ready: torch', torch.__version__, '| diffusers', diffusers.__version__, '| opencv', cv2.__version__)"
