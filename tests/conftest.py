import os

import numpy as np
import pytest
import torch

COMFY = os.environ.get("COMFYUI_PATH")
if COMFY and os.path.isfile(os.path.join(COMFY, "main.py")):  # the nodes' process: the pack's core (tests/pack.py)
    import pack

    pack.load(COMFY)

from personalive_core.devtools.random_weights import write_random_weights  # noqa: E402
from personalive_core.models.loader import load_models  # noqa: E402  (plain: no rewrites)

NO_SKIP = os.environ.get("PERSONALIVE_NO_SKIP") == "1"
SIZE = 64  # smallest generation size: latents 8×8, four UNet levels
# tiny models run many small ops: a second thread costs more in synchronisation than it gains
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """Tiny random weights in the official layout, written by the project's own code."""
    return str(write_random_weights(tmp_path_factory.mktemp("weights"), "tiny", seed=0))


@pytest.fixture(scope="session")
def tiny_models(tiny_weights):
    torch.manual_seed(0)
    return load_models(tiny_weights)


@pytest.fixture(scope="session")
def damped(tiny_models):
    """The tiny models with motion cross-attention keys/values × 0.02: without it the tiny random
    motion modules attend almost one-hot, and rounding-level differences grow to O(1) (see
    test_rewrites.py); comparisons of arithmetic (kernels, precisions) use this copy."""
    import copy

    models = copy.deepcopy(tiny_models)
    with torch.no_grad():
        for name, p in models.denoising_unet.named_parameters():
            if ".motion_modules." in name and name.endswith(("to_k.weight", "to_v.weight")):
                p.mul_(0.02)
    return models


def moving_frames(n, size=SIZE, seed=0):
    """Driving frames (uint8 HWC): a bright blob drifting over a gradient, so motion varies."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    frames = []
    for i in range(n):
        cx, cy = 0.5 + 0.2 * np.sin(i / 5), 0.5 + 0.2 * np.cos(i / 7)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.02)
        img = np.stack([blob, xx, yy], -1) * 200 + rng.integers(0, 30, (size, size, 3))
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return frames


@pytest.fixture(scope="session")
def reference_image():
    from PIL import Image

    return Image.fromarray(moving_frames(1, 96, seed=3)[0])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """PERSONALIVE_NO_SKIP=1 (CI): a skipped test fails, so that a missing ComfyUI, browser or package
    cannot pass unnoticed."""
    outcome = yield
    report = outcome.get_result()
    if NO_SKIP and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped, which PERSONALIVE_NO_SKIP=1 forbids: {reason}"
