"""Live streaming inside a real ComfyUI: the live workflow queued through /prompt, then frames over
/personalive/live (websocket client), then the widget in headless Chromium with a fake camera.

Needs `COMFYUI_PATH` (see test_comfy_host.py). The browser test also needs Chromium (`CHROMIUM`, default
/usr/bin/chromium: Debian's package `chromium`) and the Python package `playwright` (its bundled driver
only; no browser download). The widget is tried with the host's installed `comfyui-frontend-package` on the
classic canvas and, where that frontend offers it as a setting (1.31 on; "Nodes 2.0" from 1.32), with
Vue-rendered nodes (setting Comfy.VueNodes.Enabled). Screenshots go to $PERSONALIVE_TEST_ARTIFACTS (default
tests/artifacts/), named after the frontend version and the rendering. CI runs this file on ComfyUI's pinned
frontend and on the newest one (.ci/run).
"""
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import urllib.request

import numpy as np
import pytest

from test_comfy_host import COMFY, EXTENSION, REPO, prepare, running_host
from test_live_server import stream_frames

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = os.environ.get("PERSONALIVE_TEST_ARTIFACTS", os.path.join(REPO, "tests", "artifacts"))
LIVE = os.path.join(REPO, "workflows", "PersonaLive - Live webcam.json")
LIVE_API = os.path.join(REPO, "workflows", "api", "personalive_live_webcam.json")
SIZE = 64
VUE_NODES_SINCE = (1, 31)  # the first frontend whose settings offer Vue-rendered nodes (before: a hidden experiment)

pytestmark = pytest.mark.skipif(
    not COMFY or not os.path.isfile(os.path.join(COMFY, "main.py")),
    reason="set COMFYUI_PATH to a ComfyUI checkout (with main.py) to run the real-host tests")


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    # one torch thread: the browser shares the cores, and oversubscribed OpenMP threads spin-wait
    with running_host(str(tmp_path_factory.mktemp("comfy_live")), env={"OMP_NUM_THREADS": "1"}) as server:
        yield server


def queue_live(host):
    """Queue the shipped live workflow (API format) at the test size; returns the live node's id."""
    with open(LIVE_API) as f:
        prompt = prepare(json.load(f), size=SIZE)
    entry = host.run(prompt)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000] + host.tail()
    (node,) = [k for k, v in prompt.items() if v["class_type"] == "PersonaLiveLive"]
    assert entry["outputs"][node]["personalive_live"] == [{"target": node, "size": SIZE}]
    return node


def camera_frames(n, w=160, h=120):
    from test_comfy_host import synthetic_frames
    return synthetic_frames(n, w, h)


async def live_client(url, node, frames, want):
    """One websocket session on `node`: ([(frame id, server latency, image)] of the first `want` generated
    frames, None), or ([], the error) when the start is refused."""
    import aiohttp
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.send_json({"type": "start", "target": node})
        reply = (await asyncio.wait_for(ws.receive(), 120)).json()
        if reply["type"] == "error":
            return [], reply
        return await stream_frames(ws, frames, want), None


def test_live_over_websocket_two_sessions(host):
    node = queue_live(host)
    url = host.url.replace("http", "ws") + "/personalive/live"
    frames = camera_frames(24)

    async def both():
        return await asyncio.gather(live_client(url, node, frames, 20), live_client(url, node, frames, 20))
    for got, error in asyncio.run(both()):
        assert error is None, error
        ids = [i for i, _, _ in got]
        assert ids[:12] == [0xFFFFFFFF] * 12 and ids[12:20] == list(range(8))
    status = host.get("/personalive/status")
    assert node in status["targets"]
    # a node that was never queued: a clear error, and the server goes on
    got, error = asyncio.run(live_client(url, "999", frames, 1))
    assert not got and error["code"] == "no_reference" and "queue the workflow" in error["message"]


def write_y4m(path, frames, fps=30):
    """A Y4M (4:2:0) video for Chromium's fake camera."""
    import cv2
    h, w = frames[0].shape[:2]
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            f.write(b"FRAME\n" + cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2YUV_I420).tobytes())


def frontend_version():
    """The comfyui-frontend-package version installed in the server's Python ("" where there is none)."""
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    run = subprocess.run([python, "-c", "from importlib.metadata import version; "
                                        "print(version('comfyui-frontend-package'))"], capture_output=True, text=True)
    return run.stdout.strip()


FRONTEND = frontend_version() if COMFY else ""
RENDERINGS = ["classic"] + (["vue"] if FRONTEND and tuple(map(int, FRONTEND.split(".")[:2])) >= VUE_NODES_SINCE else [])


def post_setting(host, setting, value):
    request = urllib.request.Request(f"{host.url}/settings/{setting}", json.dumps(value).encode(), method="POST")
    urllib.request.urlopen(request, timeout=30).close()


def browser_api():
    """playwright's sync API for Debian's Chromium, or a skip naming what is missing."""
    if not os.path.isfile(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's 'chromium' package or set CHROMIUM")
    return pytest.importorskip("playwright.sync_api", reason="pip install playwright (driver only)")


@contextlib.contextmanager
def comfy_page(playwright, host, args, height=800):
    """Headless Chromium on the host's page with the app loaded; yields (browser, page, console lines)."""
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": height})
        logs = []
        page.on("console", lambda m: logs.append(m.text))
        page.on("pageerror", lambda e: logs.append(f"page error: {e} {e.stack}"))
        page.goto(host.url, wait_until="domcontentloaded")
        page.wait_for_function("() => window.app && window.app.graph && window.app.extensionManager", timeout=120_000)
        yield browser, page, logs


@contextlib.contextmanager
def live_page(playwright, host, tmp_path, rendering, height=800):
    """A returning user's page (no first-visit template browser, no minimap) with a fake camera fed from a
    Y4M file and the live workflow loaded; yields (browser, page, console lines, the live node's id)."""
    camera = str(tmp_path / "camera.y4m")
    write_y4m(camera, camera_frames(60, 320, 240))
    args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={camera}"]
    with open(LIVE) as f:
        workflow = json.load(f)
    (live_id,) = [n["id"] for n in workflow["nodes"] if n["type"] == "PersonaLiveLive"]
    settings = {"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False}
    if "vue" in RENDERINGS:  # older frontends have it as a hidden experiment: a user never sets it there
        settings["Comfy.VueNodes.Enabled"] = rendering == "vue"
    for setting, value in settings.items():
        post_setting(host, setting, value)
    with comfy_page(playwright, host, args, height) as (browser, page, logs):
        page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
        yield browser, page, logs, live_id


def wait_for_new_history(host, before, page, logs):
    """The history entry of the prompt queued after `before` entries existed; asserts it succeeded."""
    for _ in range(300):
        history = host.get("/history")
        if len(history) > before:
            entry = list(history.values())[-1]
            if entry.get("status", {}).get("completed") or entry.get("status", {}).get("status_str") == "error":
                assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000] + host.tail()
                return entry
        page.wait_for_timeout(1000)
    raise AssertionError("the queued live workflow never finished:\n" + host.tail() + "\n".join(logs))


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_widget_streams_a_fake_camera(host, tmp_path, rendering):
    """As a user: open the page, load the live workflow, queue it, press Start, watch generated frames arrive —
    on the classic LiteGraph canvas and with "Nodes 2.0" (Vue-rendered nodes)."""
    playwright = browser_api()
    with live_page(playwright, host, tmp_path, rendering) as (browser, page, logs, live_id):
        os.makedirs(ARTIFACTS, exist_ok=True)
        version = page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__")
        assert version == FRONTEND, (version, FRONTEND)
        name = f"live_{version}_{rendering}"
        page.evaluate("(size) => { for (const n of window.app.graph._nodes) for (const w of n.widgets || []) "
                      "if (w.name === 'size') w.value = size; }", SIZE)
        start = page.locator(".personalive-live .pl-start")
        try:
            start.wait_for(state="visible", timeout=60_000)
        except playwright.TimeoutError:
            page.screenshot(path=os.path.join(ARTIFACTS, f"{name}_failure.png"))
            raise AssertionError(f"the live widget is not shown ({rendering}, frontend {version}); console: {logs[-20:]}")
        before = len(host.get("/history"))
        page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
        wait_for_new_history(host, before, page, logs)
        assert str(live_id) in host.get("/personalive/status")["targets"]
        page.locator(".personalive-live .pl-fps").fill("8")  # driving fps: still faster than the model here
        start.click()
        try:
            page.wait_for_function("() => { const r = document.querySelector('.personalive-live'); "
                                   "return r && r.dataset.latency && r.dataset.latency !== '–'; }", timeout=180_000)
        except playwright.TimeoutError:
            page.screenshot(path=os.path.join(ARTIFACTS, f"{name}_failure.png"))
            raise AssertionError(f"no generated frame reached the widget; readout: "
                                 f"{page.inner_text('.personalive-live .pl-readout')!r}; status: "
                                 f"{host.get('/personalive/status')}; console: {logs[-20:]}\n{host.tail(30)}")
        page.wait_for_timeout(3000)  # a few seconds of steady streaming for the readouts
        status = host.get("/personalive/status")
        readout = page.inner_text(".personalive-live .pl-readout")
        shot = os.path.join(ARTIFACTS, f"{name}_widget.png")
        page.locator(".personalive-live").screenshot(path=shot)
        page.screenshot(path=os.path.join(ARTIFACTS, f"{name}_page.png"))
        start.click()  # stop
        browser.close()
    (stream,) = [s for s in status["streams"] if s["target"] == str(live_id)]
    assert stream["emitted"] > 12 and stream["latency_ms"] > 0, stream
    assert "fps" in readout and "latency" in readout and "error" not in readout, readout
    assert os.path.getsize(shot) > 1000
    ours = [line for line in logs if "personalive" in line.lower()]  # errors and warnings raised in our script
    assert not ours, ours


# the template card of `title` (the smallest element holding its title and an image, and no other title) shows
# a loaded image of the thumbnail's width
CARD_SHOWS_THUMBNAIL = """([title, titles, side]) => {
    const label = [...document.querySelectorAll("*")].find(e => !e.childElementCount && e.textContent.trim() === title);
    for (let card = label; card; card = card.parentElement) {
        if (titles.some(t => t !== title && card.textContent.includes(t))) return false;
        const image = card.querySelector("img");
        if (image) return image.complete && image.naturalWidth === side;
    }
    return false;
}"""


def test_templates_browser_shows_titles_and_thumbnails(host):
    """As a user: Browse Templates → this extension's folder: every shipped workflow under its title, each with
    its own thumbnail loaded (not the broken-image placeholder)."""
    playwright = browser_api()
    from PIL import Image
    folder = os.path.dirname(LIVE)
    titles = sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".json"))
    with Image.open(os.path.join(folder, titles[0] + ".jpg")) as thumbnail:
        side = thumbnail.width
    post_setting(host, "Comfy.TutorialCompleted", True)
    with comfy_page(playwright, host, ["--no-sandbox", "--disable-gpu"]) as (browser, page, _logs):
        version = page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__")
        page.evaluate("() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
        page.get_by_text(EXTENSION, exact=True).first.click(timeout=60_000)
        try:
            for title in titles:  # scrolled to, as a user does: the browser loads thumbnails as they come into view
                page.get_by_text(title, exact=True).first.scroll_into_view_if_needed(timeout=30_000)
                page.wait_for_function(CARD_SHOWS_THUMBNAIL, arg=[title, titles, side], timeout=30_000)
        finally:
            os.makedirs(ARTIFACTS, exist_ok=True)
            page.screenshot(path=os.path.join(ARTIFACTS, f"templates_{version}.png"))
            browser.close()


def test_prepare_output_page_and_a_recorded_take(host, tmp_path):
    """As a user, classic canvas: queue with the node's prepare option off, press Prepare and wait for it,
    Start, open the output page in a second tab (it shows generated frames while the widget streams),
    record a take, stop. The take is a playable mp4 in output/PersonaLive/ whose frames and duration are
    the recorded ones; the stream reports that its first chunk ran on prepared networks. First and steady
    chunk times are printed (measurements, not assertions)."""
    playwright = browser_api()
    import av
    widget = ".personalive-live"
    with live_page(playwright, host, tmp_path, "classic", height=900) as (browser, page, logs, live_id):
        page.evaluate("(size) => { for (const n of window.app.graph._nodes) for (const w of n.widgets || []) {"
                      "if (w.name === 'size') w.value = size; if (w.name === 'prepare') w.value = false; } }", SIZE)
        page.locator(f"{widget} .pl-start").wait_for(state="visible", timeout=60_000)
        before = len(host.get("/history"))
        page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
        wait_for_new_history(host, before, page, logs)
        # the option was off: this queue prepared nothing (an earlier test on this host may have)
        earlier = host.get("/personalive/status")["prepared"].get(str(live_id), {}).get("run", 0)

        def wait(condition, what, timeout=180_000):
            try:
                page.wait_for_function(condition, timeout=timeout)
            except playwright.TimeoutError:
                page.screenshot(path=os.path.join(ARTIFACTS, "live_controls_failure.png"))
                raise AssertionError(f"{what}: readout {page.inner_text(f'{widget} .pl-readout')!r}, note "
                                     f"{page.inner_text(f'{widget} .pl-note')!r}, status "
                                     f"{host.get('/personalive/status')}, console {logs[-20:]}\n{host.tail(30)}")
        page.locator(f"{widget} .pl-prepare").click()
        wait(f"() => document.querySelector('{widget}').dataset.prepared === 'true'", "Prepare never finished")
        prepared = host.get("/personalive/status")["prepared"][str(live_id)]
        page.locator(f"{widget} .pl-fps").fill("8")
        page.locator(f"{widget} .pl-start").click()
        viewer = browser.new_page(viewport={"width": 320, "height": 320})
        viewer.goto(f"{host.url}/personalive/view/{live_id}", wait_until="domcontentloaded")
        viewer.wait_for_function("() => Number(document.body.dataset.frames) >= 8", timeout=180_000)
        lit = viewer.evaluate("() => { const c = document.querySelector('canvas'); const d = c.getContext('2d')"
                              ".getImageData(0, 0, c.width, c.height).data; let s = 0; for (const v of d) s += v; "
                              "return [c.width, s / d.length]; }")
        page.locator(f"{widget} .pl-record").click()
        wait(f"() => document.querySelector('{widget} .pl-note').textContent.startsWith('recording')",
             "the take never started")
        emitted = next(s for s in host.get("/personalive/status")["streams"] if s["target"] == str(live_id))["emitted"]
        for _ in range(300):  # two more chunks of generated frames into the take
            stream = next(s for s in host.get("/personalive/status")["streams"] if s["target"] == str(live_id))
            if stream["emitted"] >= emitted + 8:
                break
            page.wait_for_timeout(500)
        page.locator(f"{widget} .pl-record").click()
        wait(f"() => document.querySelector('{widget}').dataset.take", "the take was never written")
        take = page.evaluate(f"() => ({{...document.querySelector('{widget}').dataset}})")
        page.screenshot(path=os.path.join(ARTIFACTS, "live_controls_page.png"))
        viewer.screenshot(path=os.path.join(ARTIFACTS, "live_output_page.png"))
        page.locator(f"{widget} .pl-start").click()  # stop
        browser.close()
    assert lit[0] == SIZE and lit[1] > 1, lit  # the output page drew generated frames at the live size
    assert prepared["chunks"] >= 4 and prepared["run"] > earlier, prepared  # the button's own warm-up
    assert stream["warm_start"] is True, stream  # its first chunk ran after Prepare had finished
    print(f"\nprepare: {prepared}; first live chunk {stream['first_chunk_ms']} ms, last {stream['chunk_ms']} ms")
    path = os.path.join(host.base, "output", take["take"])
    assert take["take"].startswith("PersonaLive/live_") and take["take"].endswith("_.mp4")
    with av.open(path) as c:
        times = [f.time for f in c.decode(video=0)]
    frames, seconds = int(take["takeFrames"]), float(take["takeSeconds"])
    assert frames >= 8 and len(times) == frames, (frames, times)
    assert times[0] == 0 and abs(times[-1] - seconds) <= 1e-3 * frames, (times, seconds)
    ours = [line for line in logs if "personalive" in line.lower()]
    assert not ours, ours
