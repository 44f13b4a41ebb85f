#!/usr/bin/env bash
# `bench --suite` on a GPU machine (the device tool's H200, or any CUDA machine): every speed configuration
# in one process, full-size random weights at 512², output under $OUT.
#
# Packages: the device image has torch 2.11 (CUDA 13), numpy, Pillow, safetensors 0.8, huggingface-hub 1.33,
# einops, opencv-python-headless, regex, requests, filelock and zipp, but no diffusers. Carry these as
# wheels in .whl/ (both pure-Python, py3-none-any), made on the development machine from the repo root:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .whl diffusers==0.42.1 importlib_metadata==10.2.0
# diffusers 0.42.1 (not the <0.40 of requirements-cli.txt): the image's huggingface-hub 1.33 needs diffusers
# 0.40 or later, and 0.42.1 is what the development venv tests with. Then, with the device tool:
#   run(command="bash scripts/gpu_suite.sh", carry=[".whl"], timeout_s=590)
# Extra arguments go to the suite (e.g. --weights DIR instead of --random-weights full, --budget-s 300).
#
# $OUT/suite.jsonl: one JSON line per configuration and a summary line; $OUT/suite.log: the tables and
# per-chunk lines; $OUT/gpu.txt: the GPU, driver and package versions.
set -uo pipefail
OUT=${OUT:-/tmp/personalive-suite}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
    python3 -c "import torch, diffusers; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'diffusers', diffusers.__version__, 'capability', torch.cuda.get_device_capability())"
} 2>&1 | tee "$OUT/gpu.txt"
weights_source=(--random-weights full)
for arg in "$@"; do [[ $arg == --weights* ]] && weights_source=(); done
python3 -m personalive_core bench --suite "${weights_source[@]}" --size 512 --device cuda --budget-s 480 "$@" \
    2> >(tee "$OUT/suite.log" >&2) | tee "$OUT/suite.jsonl"
status=${PIPESTATUS[0]}
wait
exit "$status"
