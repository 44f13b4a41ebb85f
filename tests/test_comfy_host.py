"""End to end through a real ComfyUI server: every API workflow of workflows/api/ and the batch command.

Needs `COMFYUI_PATH` (a ComfyUI checkout, v0.3.64 or newer) and a Python that runs it (this one, or
`COMFYUI_PYTHON`), with this extension's requirements installed. The test starts
`python main.py --cpu --listen 127.0.0.1 --port P --base-directory TMP` with this repository linked into
TMP/custom_nodes, puts random weights into TMP/models (`personalive/`, `clip_vision/`, `vae/`) and
submits the workflows through /prompt, at size 64 to keep it cheap.

The random weights: the core's `comfy` preset (`python -m personalive_core make-random-weights DIR
--preset comfy`): the six PersonaLive files with small UNets whose cross-attention takes the 768-d
embedding of a full-size CLIP ViT-L/14 image encoder, and a full-size SD VAE — the host's own
CLIP-vision and VAE loaders accept only the standard architectures. They are written once (about
1 GB, ~15 s) into $PERSONALIVE_TEST_CACHE (default ~/.cache/personalive-tests) and reused.
"""

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMFY = os.environ.get("COMFYUI_PATH")
WORKFLOWS = os.path.join(REPO, "workflows", "api")
EXTENSION = "comfyui-personalive"  # the custom_nodes folder name, as the registry installs it
CLIP_NAME = "sd-image-variations-image-encoder.safetensors"  # the names the shipped workflows use
VAE_NAME = "sd-vae-ft-mse.safetensors"
SIZE = 64
DRIVING_FRAMES, FPS = 9, 12
WEIGHTS_VERSION = "comfy-weights-v2"  # bump when the comfy preset changes

pytestmark = pytest.mark.skipif(
    not COMFY or not os.path.isfile(os.path.join(COMFY, "main.py")),
    reason="set COMFYUI_PATH to a ComfyUI checkout (with main.py) to run the real-host tests",
)


# -- weights -----------------------------------------------------------------------------------------
def comfy_weights():
    """The cached official-layout folder of the core's `comfy` preset, seed 0 (written on first use)."""
    from personalive_core.devtools.random_weights import write_random_weights

    cache = os.environ.get("PERSONALIVE_TEST_CACHE", os.path.expanduser("~/.cache/personalive-tests"))
    root = os.path.join(cache, WEIGHTS_VERSION)
    if not os.path.isfile(os.path.join(root, "complete")):
        os.makedirs(cache, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=WEIGHTS_VERSION + ".", dir=cache)
        write_random_weights(tmp, "comfy", seed=0)
        open(os.path.join(tmp, "complete"), "w").close()
        shutil.rmtree(root, ignore_errors=True)
        os.replace(tmp, root)
    return root


def install_models(weights, models):
    """Link the weights into a ComfyUI models/ folder under the names the workflows use."""
    links = {
        os.path.join("personalive", f): os.path.join(weights, "personalive", f)
        for f in os.listdir(os.path.join(weights, "personalive"))
    }
    links[os.path.join("clip_vision", CLIP_NAME)] = os.path.join(
        weights, "sd-image-variations-diffusers", "image_encoder", "model.safetensors"
    )
    links[os.path.join("vae", VAE_NAME)] = os.path.join(weights, "sd-vae-ft-mse", "diffusion_pytorch_model.safetensors")
    for rel, target in links.items():
        os.makedirs(os.path.dirname(os.path.join(models, rel)), exist_ok=True)
        os.symlink(target, os.path.join(models, rel))


# -- inputs --------------------------------------------------------------------------------------------
REF_W, REF_H = 128, 160  # portrait reference
DRV_W, DRV_H = 96, 128  # driving video


def synthetic_frames(n, w, h, seed=0):
    """uint8 frames with a drawn face moving a little (so the face-crop nodes find one), or the
    plain moving blobs of conftest where the face drawing helper is not available."""
    try:
        from test_face_crop import frame_with_face
    except ImportError:
        from conftest import moving_frames

        return [f[:h, :w] for f in moving_frames(n, max(w, h), seed=seed)]
    return [frame_with_face(h, w, w / 2 + 3 * np.sin(t / 2), h * 0.45 + t, w * 0.5, seed=seed + t) for t in range(n)]


def make_media(folder, frames=DRIVING_FRAMES, fps=FPS):
    """reference.png (REF_W×REF_H) and driving.mp4 (DRV_W×DRV_H h264 at `fps` + AAC sine over the
    same duration)."""
    import av
    from PIL import Image

    sys.path.insert(0, os.path.join(REPO, "tests"))
    ref = os.path.join(folder, "reference.png")
    Image.fromarray(synthetic_frames(1, REF_W, REF_H, seed=3)[0]).save(ref)
    drv = os.path.join(folder, "driving.mp4")
    with av.open(drv, "w") as c:
        v = c.add_stream("h264", rate=fps)
        v.width, v.height, v.pix_fmt = DRV_W, DRV_H, "yuv420p"
        a = c.add_stream("aac", rate=16000)
        for img in synthetic_frames(frames, DRV_W, DRV_H):
            for p in v.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
        t = np.arange(16000 * frames // fps) / 16000
        wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        for i in range(0, wave.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(wave[:, i : i + 1024]), format="fltp", layout="mono"
            )
            frame.sample_rate = 16000
            for p in a.encode(frame):
                c.mux(p)
        for p in a.encode():
            c.mux(p)
    return ref, drv


def probe(path):
    import av

    with av.open(path) as c:
        v = c.streams.video[0]
        n = sum(1 for _ in c.decode(video=0))
        return {
            "frames": n,
            "fps": float(v.average_rate),
            "width": v.width,
            "height": v.height,
            "audio": len(c.streams.audio) > 0,
        }


# -- server --------------------------------------------------------------------------------------------
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, base, port, env=None, args=()):
        self.base, self.port, self.url = base, port, f"http://127.0.0.1:{port}"
        self.log = os.path.join(base, "server.log")
        python = os.environ.get("COMFYUI_PYTHON", sys.executable)
        args = [
            python,
            "main.py",
            "--cpu",
            "--listen",
            "127.0.0.1",
            "--port",
            str(port),
            "--base-directory",
            base,
            "--disable-auto-launch",
            "--disable-api-nodes",
            "--database-url",
            f"sqlite:///{base}/user/comfyui.db",
            *args,
        ]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1", **(env or {})}
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(args, cwd=COMFY, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 240
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited early:\n{self.tail()}")
            try:
                self.get("/system_stats")
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(1)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer within 240 s:\n{self.tail()}")

    def tail(self, n=60):
        with open(self.log, errors="replace") as f:
            return "".join(f.readlines()[-n:])

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def post(self, path, obj):
        req = urllib.request.Request(self.url + path, json.dumps(obj).encode(), {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def run(self, prompt, timeout=600):
        status, reply = self.post("/prompt", {"prompt": prompt, "client_id": "test"})
        assert status == 200, f"rejected: {json.dumps(reply)[:2000]}"
        pid = reply["prompt_id"]
        deadline = time.time() + timeout
        while time.time() < deadline:
            entry = self.get(f"/history/{pid}").get(pid)
            if (
                entry
                and entry.get("status", {}).get("completed") is not None
                and (entry["status"]["completed"] or entry["status"].get("status_str") == "error")
            ):
                return entry
            time.sleep(0.5)
        raise TimeoutError(f"prompt {pid} did not finish in {timeout} s")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def running_host(base, env=None, args=()):
    """A ComfyUI server in `base` with this extension, the test weights and the test media."""
    for sub in ("custom_nodes", "input", "output", "user", "models"):
        os.makedirs(os.path.join(base, sub), exist_ok=True)
    os.symlink(REPO, os.path.join(base, "custom_nodes", EXTENSION))
    weights = comfy_weights()
    install_models(weights, os.path.join(base, "models"))
    ref, drv = make_media(os.path.join(base, "input"))
    server = Server(base, free_port(), env, args)
    try:
        server.weights, server.reference, server.driving = weights, ref, drv
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    with running_host(str(tmp_path_factory.mktemp("comfy"))) as server:
        yield server


def prepare(prompt, reference="reference.png", driving="driving.mp4", size=SIZE):
    """The shipped workflow with the test inputs and the small size."""
    prompt = json.loads(json.dumps(prompt))
    for node in prompt.values():
        inputs, kind = node["inputs"], node["class_type"]
        if kind == "LoadImage":
            inputs["image"] = reference
        elif kind == "LoadVideo":
            inputs["file"] = driving
        elif kind.startswith("PersonaLive") and "size" in inputs:
            inputs["size"] = size
    return prompt


def saved_files(host, entry):
    files = []
    for out in entry["outputs"].values():
        for item in out.get("images", []) + out.get("videos", []):
            files.append(
                os.path.join(host.base, item.get("type", "output"), item.get("subfolder", ""), item["filename"])
            )
    return files


def test_extension_loads(host):
    info = host.get("/object_info")
    ours = sorted(k for k in info if k.startswith("PersonaLive"))
    assert {
        "PersonaLiveEncodeReference",
        "PersonaLiveExtractMotion",
        "PersonaLiveLoadModel",
        "PersonaLiveStreamSampler",
    } <= set(ours), host.tail()
    for name in ours:
        spec = info[name]
        assert spec["category"] == "PersonaLive"
        for group in ("required", "optional"):
            for key, value in spec["input"].get(group, {}).items():
                assert len(value) > 1 and value[1].get("tooltip"), f"{name}.{key} has no tooltip"
    assert info["PersonaLiveLoadModel"]["input"]["required"]["weights"][1]["options"] == ["personalive"]
    failed = [line for line in host.tail(400).splitlines() if "IMPORT FAILED" in line and "personalive" in line]
    assert not failed, host.tail()
    # the UI-format workflows are offered as templates under their titles, each with its thumbnail
    # (workflows/api/ is not: API format)
    templates = host.get("/api/workflow_templates")[EXTENSION]
    folder = os.path.dirname(WORKFLOWS)
    assert sorted(templates) == sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".json"))
    for name in templates:
        base = f"{host.url}/api/workflow_templates/{EXTENSION}/{urllib.parse.quote(name)}"
        with urllib.request.urlopen(base + ".json", timeout=30) as r:
            served = json.loads(r.read())
        assert "nodes" in served and "links" in served
        with urllib.request.urlopen(base + ".jpg", timeout=30) as r:
            assert r.headers["Content-Type"] == "image/jpeg", (name, r.headers["Content-Type"])
            with open(os.path.join(folder, name + ".jpg"), "rb") as f:
                assert r.read() == f.read(), name


def requirement_names(path):
    """Distribution names in a requirements file (its -r includes followed), lower case."""
    names = set()
    with open(path) as f:
        for line in f:
            line = line.split("#")[0].strip()
            if line.startswith("-r"):
                names |= requirement_names(os.path.join(os.path.dirname(path), line[2:].strip()))
            elif line:
                names.add(re.split(r"[<>=!~;\[ ]", line)[0].lower().replace("_", "-"))
    return names


LOAD_WITHOUT = """
import asyncio, importlib.util, os, sys
from importlib.metadata import packages_distributions
def blocks(dists):
    return {d.lower().replace("_", "-") for d in dists} & BLOCKED
# the import names of installed ones, or their own
blocked = sorted({n.replace("-", "_") for n in BLOCKED} | {m for m, d in packages_distributions().items() if blocks(d)})
for module in blocked:
    sys.modules[module] = None  # any import of it fails
sys.path.insert(0, COMFY)
import comfy.cli_args
comfy.cli_args.args.cpu = True
init = os.path.join(REPO, "__init__.py")
spec = importlib.util.spec_from_file_location("ext", init, submodule_search_locations=[REPO])
ext = importlib.util.module_from_spec(spec)
sys.modules["ext"] = ext
spec.loader.exec_module(ext)
nodes = asyncio.run(asyncio.run(ext.comfy_entrypoint()).get_node_list())
print(blocked, len(nodes))
"""


def test_nodes_need_only_requirements_txt():
    """ComfyUI users install requirements.txt alone: the nodes (the live server included) import nothing that
    only requirements-cli.txt brings (diffusers: the nodes use the host's VAE), checked by importing the
    extension as ComfyUI does with those packages made unimportable."""
    cli_only = (
        requirement_names(os.path.join(REPO, "requirements-cli.txt"))
        - requirement_names(os.path.join(REPO, "requirements.txt"))
        - requirement_names(os.path.join(COMFY, "requirements.txt"))
    )
    assert "diffusers" in cli_only
    code = (
        f"BLOCKED, COMFY, REPO = {cli_only!r}, {COMFY!r}, {REPO!r}\n"
        + LOAD_WITHOUT
        + "import ext.personalive_core.live.server\n"
    )
    run = subprocess.run(
        [os.environ.get("COMFYUI_PYTHON", sys.executable), "-c", code],
        cwd=COMFY,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    blocked, count = run.stdout.strip().splitlines()[-1].rsplit(" ", 1)
    assert "diffusers" in blocked and int(count) >= 8, run.stdout


LIVE_WORKFLOWS = ("personalive_live_webcam.json",)  # no video out: test_live_host.py streams through it
WORKFLOW_FILES = sorted(f for f in os.listdir(WORKFLOWS) if f.endswith(".json") and f not in LIVE_WORKFLOWS)


@pytest.mark.parametrize("name", WORKFLOW_FILES)
def test_api_workflow(host, name):
    with open(os.path.join(WORKFLOWS, name)) as f:
        prompt = prepare(json.load(f))
    entry = host.run(prompt)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000] + host.tail()
    videos = [p for p in saved_files(host, entry) if p.endswith(".mp4")]
    assert videos, f"{name}: no video saved: {entry['outputs']}"
    for path in videos:
        meta = probe(path)
        assert meta["frames"] == DRIVING_FRAMES, (name, meta)
        assert meta["fps"] == FPS, (name, meta)
        assert meta["audio"], (name, meta)
        assert (meta["width"], meta["height"]) == expected_size(prompt), (name, meta)


def expected_size(prompt):
    """(width, height) of a workflow's saved video on the test inputs."""
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] == "PersonaLiveRenderVideo" and inputs.get("paste_into") in ("reference", "driving"):
            return (REF_W, REF_H) if inputs["paste_into"] == "reference" else (DRV_W, DRV_H)
        if node["class_type"] == "PersonaLiveExtractMotion" and inputs.get("preview") == "side by side":
            return 2 * SIZE, SIZE
    return SIZE, SIZE


def test_missing_weights_error(host):
    """A prompt whose weights folder lacks files fails with the list of expected files and folders."""
    wf = prepare(json.load(open(os.path.join(WORKFLOWS, WORKFLOW_FILES[0]))))
    folder = os.path.join(host.base, "models", "personalive", "broken")
    os.makedirs(folder, exist_ok=True)
    if not os.path.exists(os.path.join(folder, "denoising_unet.pth")):
        os.symlink(
            os.path.join(host.weights, "personalive", "denoising_unet.pth"), os.path.join(folder, "denoising_unet.pth")
        )
    for node in wf.values():
        if node["class_type"] == "PersonaLiveLoadModel":
            node["inputs"]["weights"] = "personalive/broken"
    entry = host.run(wf)
    assert entry["status"]["status_str"] == "error"
    errors = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    message = errors[0]["exception_message"]
    for expected in (
        "temporal_module",
        "reference_unet",
        "pose_guider",
        "motion_encoder",
        "motion_extractor",
        os.path.join("models", "personalive", "broken"),
        "models/clip_vision",
        "models/vae",
    ):
        assert expected in message, message


def psnr(a, b):
    return float(10 * np.log10(1 / max(float(((a - b) ** 2).mean()), 1e-20)))


# The parity run is at 128 px: at 64 px the small UNets' deepest level is 1×1 with 2 channels per
# GroupNorm group (the published model at 512 px: 8×8 and 40), a normalisation that is a sign function of
# their difference, so rounding-level changes flip it: at 64 px the core in-process against the core CLI
# already falls to ~44 dB (the host against the core: 42 dB); at 128 px both are above 120 dB.
PARITY_SIZE = 128


def test_parity_with_core_render(tmp_path):
    """The nodes with the host's own CLIP-vision and VAE loaders against `python -m personalive_core
    render` on the same weights, images and seed (no server: same code, fewer moving parts)."""
    from pack import call, load

    ext = load(COMFY)
    import comfy.clip_vision
    import comfy.sd
    import comfy.utils
    import folder_paths
    from comfy_api.latest import InputImpl
    from PIL import Image

    N = ext.nodes
    size = PARITY_SIZE
    weights = comfy_weights()
    ref_path, drv_path = make_media(str(tmp_path))
    paths = folder_paths.folder_names_and_paths["personalive"][0]
    saved = list(paths)
    paths[:] = [os.path.join(weights, "personalive")]
    folder_paths.filename_list_cache.pop("personalive", None)
    try:
        model = N.load_model.PersonaLiveLoadModel.execute("personalive", dtype="auto").result[0]
    finally:
        paths[:] = saved
        folder_paths.filename_list_cache.pop("personalive", None)
    clip = comfy.clip_vision.load(
        os.path.join(weights, "sd-image-variations-diffusers", "image_encoder", "model.safetensors")
    )
    vae = comfy.sd.VAE(
        sd=comfy.utils.load_torch_file(os.path.join(weights, "sd-vae-ft-mse", "diffusion_pytorch_model.safetensors"))
    )
    ref = torch.from_numpy(np.array(Image.open(ref_path).convert("RGB"))).float()[None] / 255
    driving = InputImpl.VideoFromFile(drv_path).get_components().images
    reference = call(N.encode_reference.PersonaLiveEncodeReference, model, clip, vae, ref, size, "stretch").result[0]
    motion = call(
        N.extract_motion.PersonaLiveExtractMotion, model, ref, size=size, resize="stretch", driving_images=driving
    ).result[0]
    images, latent = call(N.sampler.PersonaLiveStreamSampler, model, reference, motion, vae, seed=42).result
    frames = images.numpy()

    out = os.path.join(str(tmp_path), "core.npy")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "personalive_core",
            "render",
            "--weights",
            weights,
            "--reference",
            ref_path,
            "--driving",
            drv_path,
            "--out",
            out,
            "--size",
            str(size),
            "--seed",
            "42",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    core = np.load(out)
    assert frames.shape == core.shape == (DRIVING_FRAMES, size, size, 3)
    value = psnr(frames, core)

    # where the difference comes from (the PersonaLive networks are the core's own): the host's CLIP vision
    # and VAE encoding the reference, and the host's VAE decoding (the sampler's latents, decoded by both)
    from personalive_core.models.loader import load_models
    from personalive_core.pipelines import encode_reference, prepare_reference

    models = load_models(weights)
    with torch.no_grad():
        expected = encode_reference(models, prepare_reference(Image.open(ref_path).convert("RGB"), size))
        core_decoded = (models.vae.decode(latent["samples"]).sample.permute(0, 2, 3, 1) / 2 + 0.5).clamp(0, 1)
    got = reference.reference
    context = float((got.context - expected.context).norm() / expected.context.norm())
    context_max = float((got.context - expected.context).abs().max())
    latents = float((got.latents - expected.latents).abs().max())
    decoded = psnr(frames, core_decoded.numpy())
    print(
        f"\nhost nodes vs core render at {size} px: PSNR {value:.2f} dB over {len(frames)} frames, max abs "
        f"{np.abs(frames - core).max():.2e}; reference encoding: CLIP context relative error {context:.2e} "
        f"(max abs {context_max:.2e}), VAE-encoded latents max abs {latents:.2e}; the same latents decoded by "
        f"the host's and the core's VAE: PSNR {decoded:.2f} dB"
    )
    assert value >= 35, value  # issue 3's bar; measured ~120 dB
    assert context < 1e-5 and latents < 1e-5 and decoded > 80, (context, latents, decoded)
    assert torch.equal(got.image, expected.image) and torch.equal(got.cond, expected.cond)


def test_batch_comfyui_engine_attached(host, tmp_path):
    """`batch --engine comfyui --server URL` against the running host: the driver in .venv (the Python with Ray,
    scripts/setup.sh), uploads, workflow inputs set, runs, downloads; a re-run renders nothing. This Python
    (ComfyUI's) has no Ray: there the command says how to install it."""
    out = tmp_path / "results"
    wf = os.path.join(WORKFLOWS, "personalive_portrait_to_video.json")
    args = [
        "-m",
        "personalive_core",
        "batch",
        "--engine",
        "comfyui",
        "--workflow",
        wf,
        "--server",
        host.url,
        "--reference",
        host.reference,
        "--driving",
        host.driving,
        "--out",
        str(out),
        "--size",
        str(SIZE),
        "--set",
        "PersonaLiveExtractMotion.max_frames=5",
        "--object-store-mb",
        "96",
        "--poll",
        "0.2",
    ]
    venv = os.path.join(REPO, ".venv", "bin", "python")
    assert os.path.isfile(venv), "the batch driver runs in .venv (bash scripts/setup.sh)"
    run = subprocess.run([venv, *args], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr
    assert sorted(os.listdir(out)) == ["reference__driving.mp4", "results.jsonl"], os.listdir(out)
    meta = probe(os.path.join(out, "reference__driving.mp4"))
    assert (meta["frames"], meta["fps"], meta["audio"], meta["width"]) == (5, FPS, True, SIZE), meta
    again = subprocess.run([venv, *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and json.loads(again.stdout.splitlines()[-1])["skipped"] == 1, again.stderr
    no_ray = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert no_ray.returncode == 2 and "pip install -r requirements-batch.txt" in no_ray.stderr, no_ray.stderr
