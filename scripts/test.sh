#!/usr/bin/env bash
# The test suite (CPU, no network). Options go to both pytest runs (e.g. -x, -k NAME).
#   1. the core, the CLI and everything that needs no ComfyUI: in .venv (scripts/setup.sh);
#   2. with COMFYUI_PATH set (a ComfyUI checkout, v0.3.64 or newer): the nodes, the real host and the
#      browser test, in the Python that runs that ComfyUI ($COMFYUI_PYTHON, default python3) with this
#      extension's requirements-cli.txt, pytest, and for the browser test the `playwright` package and
#      Chromium (see tests/test_live_host.py). Without COMFYUI_PATH this part is left out, and said so.
# PERSONALIVE_NO_SKIP=1 (CI) turns every skipped test into a failure. The core part runs on
# PERSONALIVE_TEST_WORKERS processes (pytest-xdist, default 2; a test file stays on one process).
set -uo pipefail
cd "$(dirname "$0")/.."
HOST_TESTS=(tests/test_nodes.py tests/test_nodes_footage.py tests/test_nodes_download.py tests/test_comfy_host.py tests/test_live_host.py)
# the batch command's comfyui engine: its driver needs Ray (.venv), its workers start that ComfyUI with its Python
COMFY_BATCH_TESTS=(tests/test_batch_comfyui.py)

run() {  # pytest; "no test collected" (exit 5) is a failure with a message, not a silent pass
  "$@"; local rc=$?
  if [[ $rc == 5 ]]; then echo "test.sh: pytest collected no test: $*" >&2; fi
  return $rc
}

ignore=(); for t in "${HOST_TESTS[@]}"; do ignore+=(--ignore "$t"); done
[[ -n "${COMFYUI_PATH:-}" ]] || for t in "${COMFY_BATCH_TESTS[@]}"; do ignore+=(--ignore "$t"); done
status=0
run env -u COMFYUI_PATH PERSONALIVE_COMFYUI="${COMFYUI_PATH:-}" PERSONALIVE_COMFYUI_PYTHON="${COMFYUI_PYTHON:-python3}" \
  ./.venv/bin/python -m pytest -q -n "${PERSONALIVE_TEST_WORKERS:-2}" --dist loadfile "${ignore[@]}" "$@" || status=$?
if [[ -n "${COMFYUI_PATH:-}" ]]; then
  run "${COMFYUI_PYTHON:-python3}" -m pytest -q "${HOST_TESTS[@]}" "$@" || status=$?
else
  echo "test.sh: COMFYUI_PATH is not set: the node, host and browser tests (${HOST_TESTS[*]}) and the batch"
  echo "test.sh: command's comfyui engine (${COMFY_BATCH_TESTS[*]}) did not run"
fi
exit $status
