"""The comfyui engine through the vendored ComfyUI: the driver here (in .venv, with Ray), each worker starting
its own ComfyUI server from $PERSONALIVE_COMFYUI with $PERSONALIVE_COMFYUI_PYTHON (ComfyUI's Python, which has
no Ray), with this extension and the `comfy` random weights of tests/test_comfy_host.py in its base folder.

scripts/test.sh sets both variables from COMFYUI_PATH and COMFYUI_PYTHON (and leaves this file out without
them). The attached mode (`--server URL`) runs against the host of tests/test_comfy_host.py."""

import os
import shutil

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # read when ray is imported: clusters on loopback

import pytest

from test_batch import batch, by_out, visible_files, write_manifest
from test_comfy_host import DRIVING_FRAMES, EXTENSION, FPS, REPO, SIZE, comfy_weights, install_models, make_media, probe

COMFY = os.environ.get("PERSONALIVE_COMFYUI")
PYTHON = os.environ.get("PERSONALIVE_COMFYUI_PYTHON", "python3")
WORKFLOW = os.path.join(REPO, "workflows", "api", "personalive_portrait_to_video.json")

pytestmark = pytest.mark.skipif(
    not COMFY or not os.path.isfile(os.path.join(COMFY, "main.py")),
    reason="set PERSONALIVE_COMFYUI to a ComfyUI checkout (scripts/test.sh does, from COMFYUI_PATH)",
)


def comfy_processes(base):
    """Pids of processes whose command line names `base` (the servers the workers started)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if str(base).encode() in f.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


def test_comfyui_engine_with_a_server_of_its_own(tmp_path):
    base = tmp_path / "comfy"
    for sub in ("custom_nodes", "models", "user"):
        (base / sub).mkdir(parents=True)
    os.symlink(REPO, base / "custom_nodes" / EXTENSION)
    install_models(comfy_weights(), str(base / "models"))
    (tmp_path / "in").mkdir()
    ref, drv = make_media(str(tmp_path / "in"))
    shutil.copy(drv, tmp_path / "in" / "other.mp4")
    manifest = write_manifest(
        tmp_path / "in" / "jobs.csv",
        [
            {"reference": "reference.png", "driving": "driving.mp4"},
            {
                "reference": "reference.png",
                "driving": "other.mp4",
                "out": "four.mp4",
                "PersonaLiveExtractMotion.max_frames": 4,
            },
        ],
    )
    out = tmp_path / "out"
    server_args = f"--base-directory {base} --disable-api-nodes --database-url sqlite:///{base}/user/comfyui.db"
    code, summary, log = batch(
        manifest,
        "--out",
        out,
        "--engine",
        "comfyui",
        "--workflow",
        WORKFLOW,
        "--comfyui",
        COMFY,
        "--comfyui-python",
        PYTHON,
        "--comfyui-args",
        server_args,
        "--workers",
        1,
        "--size",
        SIZE,
        "--object-store-mb",
        96,
        "--poll",
        0.2,
    )
    assert code == 0 and summary["done"] == 2, log
    assert visible_files(out) == ["four.mp4", "reference__driving.mp4"]
    # --size reached both PersonaLive nodes that take it, the row's Node.input its node
    for name, frames in (("reference__driving.mp4", DRIVING_FRAMES), ("four.mp4", 4)):
        meta = probe(str(out / name))
        assert (meta["frames"], meta["fps"], meta["audio"], meta["width"]) == (frames, FPS, True, SIZE), meta
    assert by_out(out)["reference__driving.mp4"]["worker"].startswith("worker 1")
    assert not comfy_processes(base) or _ended(base)  # the worker's server ends with the batch


def _ended(base):
    """Whether the servers started for `base` end (a worker's server gets SIGTERM when its worker ends)."""
    import time

    for _ in range(60):
        if not comfy_processes(base):
            return True
        time.sleep(0.5)
    return False
