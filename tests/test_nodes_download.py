"""Model download inside ComfyUI (nodes/downloads.py, web/js/personalive_download.js) against the hub stand-in
(tests/hub_standin.py) on 127.0.0.1: no network, nothing mocked.

- the Load PersonaLive Model node's first-use download, called in this process as the host calls it: the files
  appear in models/personalive/, the bytes go through comfy.utils' progress-bar hook, an interrupt stops it and
  the next run resumes the partial file;
- the route on a real ComfyUI server started with HF_ENDPOINT pointing at the stand-in: lists what is lacking,
  downloads in the background with progress, cancels and resumes, refreshes the loaders' lists;
- the Download models button in headless Chromium, on that host lacking every file: each bundled workflow
  opened, the button pressed, the workflow queued and run successfully.
The host serves the `comfy` random weights (tests/test_comfy_host.py: ComfyUI's own CLIP vision and VAE loaders
accept only the full-size architectures, about 0.9 GB); each browser scenario downloads them again.
Needs COMFYUI_PATH (and for the browser test Chromium and playwright, as tests/test_live_host.py).
"""

import hashlib
import json
import os
import time

import pytest

from hub_standin import HubStandIn
from test_comfy_host import COMFY, EXTENSION, REPO, SIZE, Server, comfy_weights, free_port, make_media
import test_live_host
from test_live_host import (
    ARTIFACTS,
    browser_api,
    comfy_page,
    returning_user,
    wait_for_new_history,
)

pytestmark = pytest.mark.skipif(
    not COMFY or not os.path.isfile(os.path.join(COMFY, "main.py")),
    reason="set COMFYUI_PATH to a ComfyUI checkout (with main.py) to run the host tests",
)

PL = "huaichang/PersonaLive/pretrained_weights/personalive"
NAMES = ("denoising_unet", "reference_unet", "pose_guider", "motion_encoder", "motion_extractor", "temporal_module")
CLIP_KEY = "lambdalabs/sd-image-variations-diffusers/image_encoder/model.safetensors"
VAE_KEY = "stabilityai/sd-vae-ft-mse/diffusion_pytorch_model.safetensors"
CLIP_NAME = "sd-image-variations-image-encoder.safetensors"  # what the bundled workflows select
VAE_NAME = "sd-vae-ft-mse.safetensors"
# hub key -> ComfyUI models/ name (the oracle, written out independently of personalive_core/download/)
COMFY_NAMES = {
    **{f"{PL}/{n}.pth": f"personalive/{n}.pth" for n in NAMES},
    CLIP_KEY: f"clip_vision/{CLIP_NAME}",
    VAE_KEY: f"vae/{VAE_NAME}",
}
OFFICIAL = {
    **{f"{PL}/{n}.pth": f"personalive/{n}.pth" for n in NAMES},
    CLIP_KEY: "sd-image-variations-diffusers/image_encoder/model.safetensors",
    VAE_KEY: "sd-vae-ft-mse/diffusion_pytorch_model.safetensors",
}
WORKFLOWS = os.path.join(REPO, "workflows")
LOADER = "PersonaLiveLoadModel"


def sha(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def hub_folder(weights, root):
    """`root` laid out like the hub's repositories, its files links to an official-layout `weights` folder."""
    for key, rel in OFFICIAL.items():
        os.makedirs(os.path.dirname(os.path.join(root, key)), exist_ok=True)
        os.symlink(os.path.join(weights, rel), os.path.join(root, key))
    return root


def start_hub(weights, root):
    return HubStandIn(hub_folder(weights, str(root))).start()


# -- the loader node's first-use download, in this process ----------------------------------------------------
@pytest.fixture(scope="module")
def N():
    import pack

    return pack.load(COMFY).nodes


@pytest.fixture
def tiny_hub(tiny_weights, tmp_path):
    hub = start_hub(tiny_weights, tmp_path / "hub")
    yield hub
    hub.stop()


@pytest.fixture
def models(N, tmp_path, monkeypatch):
    """An empty ComfyUI models folder in place of the host's (its folder list for each kind the download fills),
    HF_ENDPOINT unset, a fresh Hugging Face home."""
    import folder_paths

    folder = tmp_path / "ComfyUI" / "models"
    folder.mkdir(parents=True)
    monkeypatch.setattr(folder_paths, "models_dir", str(folder))
    for kind in N.downloads.LISTS:
        extensions = folder_paths.folder_names_and_paths[kind][1]
        monkeypatch.setitem(folder_paths.folder_names_and_paths, kind, ([str(folder / kind)], extensions))
    for var in ("HF_ENDPOINT", "HF_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setattr(N.downloads, "PROGRESS_EVERY_S", 0.0)  # every update reaches the hook
    N.downloads.refresh_lists()
    yield folder
    N.downloads.refresh_lists()


@pytest.fixture
def progress_hook():
    """comfy.utils' progress-bar hook (the server's: a websocket message per update), recording (value, total)."""
    import comfy.utils

    calls = []
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: calls.append((value, total)))
    yield calls
    comfy.utils.set_progress_bar_global_hook(None)


def test_loader_downloads_missing_files_on_first_use(N, tiny_hub, models, progress_hook, monkeypatch):
    from pack import call

    monkeypatch.setenv("HF_ENDPOINT", tiny_hub.endpoint)
    assert N.common.weight_sets() == ["personalive"]  # nothing there yet
    patcher = call(N.load_model.PersonaLiveLoadModel, "personalive").result[0]  # as an old prompt: no toggle given
    for n in NAMES:
        assert sha(models / "personalive" / f"{n}.pth") == sha(tiny_hub.root / PL / f"{n}.pth")
    assert set(patcher.model.info.files.values()) == {str(models / "personalive" / f"{n}.pth") for n in NAMES}
    assert not (models / "clip_vision").exists()  # the node fetches its own files; the button fetches all
    total = sum(os.path.getsize(tiny_hub.root / PL / f"{n}.pth") for n in NAMES)
    values = [v for v, _ in progress_hook]
    assert progress_hook[-1] == (total, total) and values == sorted(values) and len(values) > 6
    assert {t for _, t in progress_hook} == {total}  # bytes of the whole download, from the first update on

    tiny_hub.clear_log()
    call(N.load_model.PersonaLiveLoadModel, "personalive")
    assert tiny_hub.log == []  # present: no request


def test_an_interrupt_stops_the_download_and_the_next_run_resumes(N, tiny_hub, models, monkeypatch):
    import comfy.model_management as mm
    import comfy.utils
    from pack import call

    monkeypatch.setenv("HF_ENDPOINT", tiny_hub.endpoint)
    first = models / "personalive" / "denoising_unet.pth"
    interrupted = []

    def interrupt_once(value, total, preview, node_id=None):
        if value >= 1 << 20 and not interrupted:
            interrupted.append(value)
            mm.interrupt_current_processing(True)  # what POST /interrupt (the page's cancel) does

    comfy.utils.set_progress_bar_global_hook(interrupt_once)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            call(N.load_model.PersonaLiveLoadModel, "personalive")
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
    assert not mm.processing_interrupted()  # the host's flag is reset, as after any interrupted node
    kept = os.path.getsize(f"{first}.part")
    assert kept >= 1 << 20 and not first.exists()

    tiny_hub.clear_log()
    call(N.load_model.PersonaLiveLoadModel, "personalive")
    assert sha(first) == sha(tiny_hub.root / PL / "denoising_unet.pth")
    assert [h.range for h in tiny_hub.hits("cdn", "GET", f"{PL}/denoising_unet.pth")] == [f"bytes={kept}-"]


def test_without_the_toggle_a_missing_file_says_how_to_fetch_it(N, models):
    from pack import call

    with pytest.raises(FileNotFoundError) as e:
        call(N.load_model.PersonaLiveLoadModel, "personalive", download_missing=False)
    for text in ("denoising_unet", "download_missing", "Download models", "HF_ENDPOINT", str(models / "personalive")):
        assert text in str(e.value), str(e.value)
    assert not (models / "personalive").exists()


# -- the route on a real server, and the button in the browser ------------------------------------------------
@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    standin = start_hub(comfy_weights(), tmp_path_factory.mktemp("hub"))
    yield standin
    standin.stop()


@pytest.fixture(scope="module")
def host(tmp_path_factory, hub):
    """A ComfyUI server with this extension, the test media and no model at all; HF_ENDPOINT is the stand-in."""
    base = str(tmp_path_factory.mktemp("comfy_download"))
    for sub in ("custom_nodes", "input", "output", "user", "models"):
        os.makedirs(os.path.join(base, sub))
    os.symlink(REPO, os.path.join(base, "custom_nodes", EXTENSION))
    make_media(os.path.join(base, "input"))
    env = {
        "HF_ENDPOINT": hub.endpoint,
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": os.path.join(base, "hf-home"),
        "OMP_NUM_THREADS": "1",
    }  # one torch thread: the browser shares the cores
    server = Server(base, free_port(), env)
    try:
        yield server
    finally:
        server.stop()


def wait_for_run(host, timeout=300):
    """Poll the progress route until the run ends; returns (the last status, every status seen)."""
    seen = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = host.get("/personalive/models/download")
        seen.append(status)
        if status["state"] != "running":
            return status, seen
        time.sleep(0.05)
    raise AssertionError(f"the download did not end in {timeout} s: {seen[-1]}\n{host.tail()}")


def options(host, node, name):
    spec = host.get(f"/object_info/{node}")[node]["input"]["required"][name]
    return spec[0] if isinstance(spec[0], list) else spec[1]["options"]


def remove_models(host):
    """Back to a host lacking every file (the download's record and partial files too). The folders stay, as
    in a fresh install: the host's file-list cache fails on a listed folder that vanished."""
    for root, _, files in os.walk(os.path.join(host.base, "models")):
        for name in files:
            os.remove(os.path.join(root, name))


def test_route_lists_downloads_with_progress_cancels_resumes_and_refreshes_lists(host, hub):
    remove_models(host)
    lacking = host.get("/personalive/models")["lacking"]
    assert sorted(f["name"] for f in lacking) == sorted(COMFY_NAMES.values())
    assert {f["name"]: f["source"] for f in lacking} == {v: k for k, v in COMFY_NAMES.items()}
    assert CLIP_NAME not in options(host, "CLIPVisionLoader", "clip_name")

    hub.chunk_delay = 0.01  # 6.4 MB/s: the cancel lands inside the first file
    try:
        assert host.post("/personalive/models/download", {})[1]["state"] == "running"
        for _ in range(600):
            status = host.get("/personalive/models/download")
            if status["done"] > 2_000_000:
                break
            time.sleep(0.02)
        assert host.post("/personalive/models/cancel", {})[0] == 200
        status, _ = wait_for_run(host)
    finally:
        hub.chunk_delay = 0.0
    assert status["state"] == "cancelled"
    assert status["total"] == sum(os.path.getsize(hub.root / k) for k in COMFY_NAMES)
    (cut,) = [f for f in status["files"] if f["state"] == "downloading"]
    lacking = {f["name"]: f for f in host.get("/personalive/models")["lacking"]}
    assert len(lacking) == 8 and all(f["size"] for f in lacking.values())  # sizes are known after a first run
    kept = lacking[cut["name"]]["partial"]
    assert kept >= 2_000_000 and not os.path.exists(os.path.join(host.base, "models", cut["name"]))

    hub.clear_log()
    assert host.post("/personalive/models/download", {})[1]["state"] == "running"  # pressed again: resumes
    status, seen = wait_for_run(host)
    assert status["state"] == "done", status
    done = [s["done"] for s in seen]
    assert done == sorted(done) and status["done"] == status["total"]
    assert all(f["state"] == "done" and f["done"] == f["total"] for f in status["files"])
    key = next(k for k, v in COMFY_NAMES.items() if v == cut["name"])
    assert [h.range for h in hub.hits("cdn", "GET", key)] == [f"bytes={kept}-"]
    for key, name in COMFY_NAMES.items():
        assert sha(os.path.join(host.base, "models", name)) == sha(hub.root / key), name
    assert host.get("/personalive/models")["lacking"] == []
    assert CLIP_NAME in options(host, "CLIPVisionLoader", "clip_name")  # the lists are read afresh
    assert VAE_NAME in options(host, "VAELoader", "vae_name")

    hub.clear_log()
    assert host.post("/personalive/models/download", {})[1]["state"] == "done"  # nothing lacking: no request
    assert hub.log == []


pw = test_live_host.pw  # the playwright driver fixture


def missing_models_listed(page):
    """The text of the frontend's missing-models list, which it builds from a workflow's metadata: the dialog of
    frontend 1.27 (closed again), or the Missing Models section of the issues panel behind the "issues found"
    notice of the 1.5x frontends."""
    dialog, notice = page.locator(".comfy-missing-models"), page.get_by_text("View details")
    title, all_button = page.get_by_text("Missing Models", exact=True), page.get_by_text("Download all")
    dialog.or_(notice).first.wait_for(state="visible", timeout=30_000)
    if dialog.is_visible():
        text = dialog.inner_text()
        page.keyboard.press("Escape")
        dialog.wait_for(state="hidden", timeout=30_000)
        return text
    notice.first.click()
    all_button.first.wait_for(state="visible", timeout=30_000)
    # the innermost element holding the section's title and its Download all button: the section
    return page.locator("div", has=title).filter(has=all_button).last.inner_text()


WIDGET = ".personalive-download"


def download_then_queue(host, page, logs, title):
    """On a host lacking every file: load the workflow, check the frontend's missing-models list, press Download
    models, wait for it, queue, wait for the run's success."""
    with open(os.path.join(WORKFLOWS, title + ".json")) as f:
        workflow = json.load(f)
    selects = {m["name"] for n in workflow["nodes"] for m in n["properties"].get("models", [])}
    page.wait_for_function(f"() => window.LiteGraph?.registered_node_types?.['{LOADER}']", timeout=120_000)
    page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
    if selects:  # the frontend read the metadata: its missing-models list names the files
        shown = missing_models_listed(page)
        assert all(name in shown for name in selects), (selects, shown)
    page.evaluate(
        "(size) => { for (const n of window.app.graph._nodes) for (const w of n.widgets || []) "
        "if (w.name === 'size') w.value = size; }",
        SIZE,
    )
    page.wait_for_function(f"() => document.querySelector('{WIDGET}')?.dataset.state === 'lacking'", timeout=60_000)
    page.locator(f"{WIDGET} .pl-download").click()
    page.wait_for_function(f"() => document.querySelector('{WIDGET}').dataset.result === 'done'", timeout=300_000)
    page.wait_for_function(f"() => document.querySelector('{WIDGET}').dataset.state === 'complete'", timeout=60_000)
    before = len(host.get("/history"))
    page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
    wait_for_new_history(host, before, page, logs)


TITLES = sorted(f[:-5] for f in os.listdir(WORKFLOWS) if f.endswith(".json"))


@pytest.mark.parametrize("title", TITLES)
def test_workflow_queues_after_pressing_download_models(host, hub, pw, title):
    """As a user, on a host lacking every model file: open a bundled workflow (the frontend's missing-models list
    names the CLIP vision and VAE files from the workflow's metadata), press Download models on the Load
    PersonaLive Model node, wait for it, queue: the workflow runs. Each workflow on an emptied host, in a browser
    of its own (the frontend caches what the model folders held, and a page restores its last workflows)."""
    playwright = browser_api()
    returning_user(host)
    remove_models(host)
    with comfy_page(pw, host, ["--no-sandbox", "--disable-gpu"], height=900) as (_, page, logs):
        try:
            download_then_queue(host, page, logs, title)
        except (AssertionError, playwright.TimeoutError) as e:
            os.makedirs(ARTIFACTS, exist_ok=True)
            page.screenshot(path=os.path.join(ARTIFACTS, f"download_{title}_failure.png"))
            shown = page.evaluate(f"() => ({{...document.querySelector('{WIDGET}')?.dataset}})")
            status = host.get("/personalive/models/download")
            raise AssertionError(
                f"{title}: {e}; widget {shown}, status {status}, console {logs[-20:]}\n{host.tail(30)}"
            ) from None
        os.makedirs(ARTIFACTS, exist_ok=True)
        page.screenshot(path=os.path.join(ARTIFACTS, f"download_{title}.png"))
    ours = [line for line in logs if "personalive" in line.lower()]
    assert not ours, ours
