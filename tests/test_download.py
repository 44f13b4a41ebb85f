"""The model download (personalive_core/download/) against a hub stand-in on 127.0.0.1 (tests/hub_standin.py)
serving tiny random weights made by the project's own code: no network, nothing mocked."""

import ast
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from hub_standin import HubStandIn
from PIL import Image

from personalive_core import download as dl
from personalive_core.errors import DownloadError, InputError

REPO = Path(__file__).resolve().parents[1]
PL = "huaichang/PersonaLive/pretrained_weights/personalive"
SDIV = "lambdalabs/sd-image-variations-diffusers"
VAE = "stabilityai/sd-vae-ft-mse"
TAESD = "madebyollin/taesd/taesd_decoder.safetensors"
NAMES = ("denoising_unet", "reference_unet", "pose_guider", "motion_encoder", "motion_extractor", "temporal_module")
# the oracle, written out independently of download.SOURCES: hub key -> official / ComfyUI local name
OFFICIAL = {
    **{f"{PL}/{n}.pth": f"personalive/{n}.pth" for n in NAMES},
    f"{SDIV}/image_encoder/config.json": "sd-image-variations-diffusers/image_encoder/config.json",
    f"{SDIV}/image_encoder/model.safetensors": "sd-image-variations-diffusers/image_encoder/model.safetensors",
    f"{VAE}/config.json": "sd-vae-ft-mse/config.json",
    f"{VAE}/diffusion_pytorch_model.safetensors": "sd-vae-ft-mse/diffusion_pytorch_model.safetensors",
}
COMFYUI = {
    **{f"{PL}/{n}.pth": f"personalive/{n}.pth" for n in NAMES},
    f"{SDIV}/image_encoder/model.safetensors": "clip_vision/sd-image-variations-image-encoder.safetensors",
    f"{VAE}/diffusion_pytorch_model.safetensors": "vae/sd-vae-ft-mse.safetensors",
    TAESD: "vae_approx/taesd_decoder.safetensors",
}
DENOISING = f"{PL}/denoising_unet.pth"
VAE_WEIGHTS = f"{VAE}/diffusion_pytorch_model.safetensors"


def hub_layout(tmp_path_factory):
    """A folder laid out like the four hub repositories, with tiny random weights."""
    from personalive_core.devtools import random_weights as rw

    official = rw.write_random_weights(tmp_path_factory.mktemp("official"), "tiny", seed=0)
    root = tmp_path_factory.mktemp("hub")
    for key, rel in OFFICIAL.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(official) / rel, root / key)
    (root / TAESD).parent.mkdir(parents=True)
    rw.write_taesd(root / TAESD)
    (root / SDIV / "unet").mkdir()
    (root / SDIV / "unet/config.json").write_text('{"_class_name": "UNet2DConditionModel"}')
    (root / SDIV / "unet/diffusion_pytorch_model.safetensors").write_bytes(os.urandom(20000))
    return root


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory):
    return hub_layout(tmp_path_factory)


@pytest.fixture
def hub(hub_root):
    standin = HubStandIn(hub_root).start()
    yield standin
    standin.stop()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No real endpoint, token, cache or proxy of the machine leaks into a test."""
    for var in (
        "HF_ENDPOINT",
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_TOKEN_PATH",
        "HF_HUB_OFFLINE",
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setattr(dl.engine, "RETRY_WAIT_S", 0.0)


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def cdn_gets(hub, key):
    return [h.range for h in hub.hits("cdn", "GET", key)]


def record(root):
    return json.loads((Path(root) / dl.RECORD_NAME).read_text())["files"]


def leftovers(root):
    return sorted(p.name for p in Path(root).rglob("*") if p.suffix in (".part", ".lock", ".tmp"))


# ---------------------------------------------------------------------------------------------------------------


def test_table_plans_and_arguments(tmp_path):
    from personalive_core.models.loader import PERSONALIVE_FILES

    assert set(dl.PERSONALIVE_NAMES) == set(PERSONALIVE_FILES)
    assert dl.parse_components(None) == ("personalive", "image_encoder", "vae")
    assert dl.parse_components("vae, taesd,vae") == ("vae", "taesd")
    assert dl.parse_components("all") == dl.COMPONENTS
    with pytest.raises(InputError, match="'bogus'.*personalive, image_encoder, vae, taesd, base_unet"):
        dl.parse_components("vae,bogus")

    files = dl.plan(tmp_path / "w")
    assert {(f.source.repo + "/" + f.source.path, f.rel) for f in files} == set(OFFICIAL.items())
    base = dl.plan(tmp_path / "w", components="base_unet", revision={"base_unet": "refs/pr/1"})
    assert [f.rel for f in base] == [
        "sd-image-variations-diffusers/unet/config.json",
        "sd-image-variations-diffusers/unet/diffusion_pytorch_model.safetensors",
    ]
    assert base[1].url("https://e.x") == (
        "https://e.x/lambdalabs/sd-image-variations-diffusers/resolve/refs%2Fpr%2F1/"
        "unet/diffusion_pytorch_model.safetensors"
    )

    comfy = tmp_path / "ComfyUI"
    with pytest.raises(InputError, match="no models/ folder"):
        dl.plan(comfy, "comfyui")
    (comfy / "models").mkdir(parents=True)
    files = dl.plan(comfy, "comfyui", "personalive,image_encoder,vae,taesd")
    assert {(f.source.repo + "/" + f.source.path, f.rel) for f in files} == set(COMFYUI.items())
    assert all(f.root == comfy / "models" for f in files)
    with pytest.raises(InputError, match="base_unet has no place in the ComfyUI layout"):
        dl.plan(comfy, "comfyui", "base_unet")
    with pytest.raises(InputError, match="layout 'flat'"):
        dl.plan(comfy, "flat")
    assert [f.rel for f in dl.missing(comfy, "comfyui", "taesd")] == ["vae_approx/taesd_decoder.safetensors"]
    with pytest.raises(InputError, match="'ftp://x' is not an http"):
        dl.download(tmp_path / "w", endpoint="ftp://x")


def test_package_imports_only_the_standard_library():
    imported, above = set(), set()
    for path in sorted((REPO / "personalive_core/download").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(str(node.module).split(".")[0])
            elif isinstance(node, ast.ImportFrom) and node.level > 1:
                above.add(str(node.module))
    assert imported - set(sys.stdlib_module_names) == set()
    assert above == {"errors"}  # personalive_core/errors.py, itself stdlib-only
    # and it runs without the package's __init__ (which loads torch): see _standalone()


def test_full_download_then_check_weights_render_and_rerun(hub, tmp_path, monkeypatch):
    """HF_ENDPOINT and HF_TOKEN from the environment; the token goes to the hub, never to the CDN."""
    hub.token = "hf_secret"
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    weights = tmp_path / "weights"
    seen = []
    report = dl.download(
        weights,
        components="personalive,image_encoder,vae,taesd",
        progress=lambda f, done, total: seen.append((f, done, total)),
    )
    expected = {**OFFICIAL, TAESD: "taesd/taesd_decoder.safetensors"}
    assert sorted(report.fetched) == sorted(expected.values()) and report.ok
    assert report.bytes_transferred == sum((hub.root / k).stat().st_size for k in expected)
    entries = record(weights)
    for key, rel in expected.items():
        assert sha(weights / rel) == sha(hub.root / key)
        repo = "/".join(key.split("/")[:2])
        e = entries[rel]
        assert (e["repo"], e["file"], e["revision"], e["commit"]) == (
            repo,
            key.split("/", 2)[2],
            "main",
            hub.commit(repo),
        )
        assert (e["sha256"], e["size"], e["source"]) == (sha(weights / rel), (weights / rel).stat().st_size, "hub")
        assert e["url"].startswith(hub.endpoint + f"/{repo}/resolve/main/")
        assert e["lfs"] == rel.endswith((".pth", ".safetensors"))
        assert seen.count((rel, e["size"], e["size"])) == 1
    assert leftovers(weights) == []
    assert all(h.auth for h in hub.hits("hub")) and hub.hits("cdn")
    assert not any(h.auth for h in hub.hits("cdn")) and all(h.status == 200 for h in hub.hits("cdn"))

    ok = _cli("check-weights", weights)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    inputs = _render_inputs(tmp_path)
    out = tmp_path / "x.npy"
    r = _cli(
        "render",
        "--weights",
        weights,
        "--reference",
        inputs / "ref.png",
        "--driving",
        inputs / "driving",
        "--out",
        out,
        "--size",
        "64",
        "--device",
        "cpu",
        "--taesd",
        weights / "taesd/taesd_decoder.safetensors",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert np.load(out).shape[0] == 4

    hub.clear_log()
    again = dl.download(weights, components="personalive,image_encoder,vae,taesd")
    assert sorted(again.present) == sorted(expected.values()) and not again.fetched
    assert hub.log == []  # nothing transferred, not even a HEAD


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "personalive_core", *map(str, args)],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _render_inputs(tmp_path):
    d = tmp_path / "inputs"
    (d / "driving").mkdir(parents=True)
    yy, xx = np.mgrid[0:96, 0:96] / 96
    for i in range(5):
        blob = np.exp(-((xx - 0.5 - 0.1 * np.sin(i)) ** 2 + (yy - 0.5) ** 2) / 0.02)
        img = Image.fromarray((np.stack([blob, xx, yy], -1) * 220).astype(np.uint8))
        img.save(d / "ref.png" if i == 4 else d / "driving" / f"{i:03d}.png")
    return d


def test_a_cut_transfer_resumes_at_the_cut(hub, tmp_path):
    hub.cut_once[DENOISING] = 5_000_000
    report = dl.download(tmp_path, components="personalive", endpoint=hub.endpoint)
    assert "personalive/denoising_unet.pth" in report.fetched
    assert cdn_gets(hub, DENOISING) == [None, "bytes=5000000-"]
    assert report.bytes_transferred == sum((hub.root / k).stat().st_size for k in OFFICIAL if k.startswith(PL))
    assert sha(tmp_path / "personalive/denoising_unet.pth") == sha(hub.root / DENOISING)
    assert leftovers(tmp_path) == []


def test_a_cut_without_retries_keeps_the_part_and_the_next_run_resumes(hub, tmp_path):
    hub.cut_once[DENOISING] = 3_000_000
    with pytest.raises(DownloadError) as e:
        dl.download(tmp_path, components="personalive", endpoint=hub.endpoint, retries=0)
    message = str(e.value)
    assert "personalive/denoising_unet.pth" in message and "run again to resume" in message
    assert (
        f"{hub.endpoint}/huaichang/PersonaLive/resolve/main/pretrained_weights/personalive/denoising_unet.pth"
        in message
    )
    report = e.value.report
    assert report.partial == {"personalive/denoising_unet.pth": 3_000_000}
    assert not (tmp_path / "personalive/denoising_unet.pth").exists()  # a half file never has the final name
    assert (tmp_path / "personalive/denoising_unet.pth.part").stat().st_size == 3_000_000
    assert report.fetched == []  # the network error stops the run: the rest is "not tried"
    assert "not tried" in report.failed["personalive/reference_unet.pth"]

    hub.clear_log()
    again = dl.download(tmp_path, components="personalive", endpoint=hub.endpoint, retries=0)
    assert len(again.fetched) == 6
    assert cdn_gets(hub, DENOISING) == ["bytes=3000000-"]
    assert sha(tmp_path / "personalive/denoising_unet.pth") == sha(hub.root / DENOISING)


def test_corrupted_bytes_are_caught_deleted_and_reported(hub, tmp_path):
    hub.corrupt.add(VAE_WEIGHTS)
    with pytest.raises(DownloadError) as e:
        dl.download(tmp_path, components="vae", endpoint=hub.endpoint)
    message = str(e.value)
    expected = sha(hub.root / VAE_WEIGHTS)
    assert "sd-vae-ft-mse/diffusion_pytorch_model.safetensors" in message and "failed verification" in message
    assert f"sha256: expected {expected}, got " in message and "was deleted" in message
    assert not (tmp_path / "sd-vae-ft-mse/diffusion_pytorch_model.safetensors").exists()
    assert leftovers(tmp_path) == []
    assert e.value.report.fetched == ["sd-vae-ft-mse/config.json"]  # finished work is kept

    hub.corrupt.clear()
    again = dl.download(tmp_path, components="vae", endpoint=hub.endpoint)
    assert again.fetched == ["sd-vae-ft-mse/diffusion_pytorch_model.safetensors"]
    assert again.present == ["sd-vae-ft-mse/config.json"]
    assert sha(tmp_path / "sd-vae-ft-mse/diffusion_pytorch_model.safetensors") == expected


def test_an_unreachable_endpoint_says_what_to_do(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(DownloadError) as e:
        dl.download(tmp_path, endpoint=f"http://127.0.0.1:{port}")
    assert time.monotonic() - start < 5  # one refused connection stops the run, no waiting per file
    message = str(e.value)
    url = (
        f"http://127.0.0.1:{port}/huaichang/PersonaLive/resolve/main/pretrained_weights/personalive/denoising_unet.pth"
    )
    for text in (
        url,
        "HTTP status: none",
        "HF_ENDPOINT",
        "HF_TOKEN",
        "docs/DOWNLOAD.md",
        str(tmp_path / "personalive/denoising_unet.pth"),
    ):
        assert text in message
    assert isinstance(e.value, RuntimeError) and e.value.status is None
    assert not any(tmp_path.rglob("*.pth*"))


def test_404_names_the_url_the_status_and_the_variables(hub, tmp_path):
    key = f"{PL}/pose_guider.pth"
    hub.missing.add(key)
    with pytest.raises(DownloadError) as e:
        dl.download(tmp_path, components="personalive", endpoint=hub.endpoint)
    message = str(e.value)
    for text in (
        f"URL: {hub.endpoint}/{key.replace('/pretrained_weights', '/resolve/main/pretrained_weights')}",
        "HTTP status 404",
        "EntryNotFound",
        "HF_ENDPOINT",
        "HF_TOKEN",
        "docs/DOWNLOAD.md",
    ):
        assert text in message
    assert len(e.value.report.fetched) == 5  # the others are fetched all the same

    with pytest.raises(DownloadError, match=r"(?s)HTTP status 404.*RevisionNotFound.*v9"):
        dl.download(tmp_path, components="taesd", endpoint=hub.endpoint, revision="v9")


def test_401_without_a_token_and_every_token_source(hub, tmp_path, monkeypatch):
    hub.token = "hf_secret"
    with pytest.raises(DownloadError) as e:
        dl.download(tmp_path / "a", components="taesd", endpoint=hub.endpoint)
    message = str(e.value)
    for text in (
        f"{hub.endpoint}/madebyollin/taesd/resolve/main/taesd_decoder.safetensors",
        "HTTP status 401",
        "HF_TOKEN",
        "HF_ENDPOINT",
        "no token",
    ):
        assert text in message
    assert e.value.report.failed and "hf_secret" not in message

    monkeypatch.setenv("HF_TOKEN", "wrong")
    assert dl.download(tmp_path / "b", components="taesd", endpoint=hub.endpoint, token="hf_secret").fetched
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", "hf_secret")
    assert dl.download(tmp_path / "c", components="taesd", endpoint=hub.endpoint).fetched
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN")
    (Path(os.environ["HF_HOME"])).mkdir(parents=True)
    (Path(os.environ["HF_HOME"]) / "token").write_text("hf_secret\n")
    assert dl.download(tmp_path / "d", components="taesd", endpoint=hub.endpoint).fetched
    assert not any(h.auth for h in hub.hits("cdn"))


def test_the_standin_cdn_refuses_a_forwarded_token(hub, tmp_path):
    """The check above means something: the CDN stand-in refuses what a careless client would send."""
    request = urllib.request.Request(
        f"{hub.endpoint}/{TAESD.replace('/taesd_decoder', '/resolve/main/taesd_decoder')}",
        headers={"Authorization": "Bearer x"},
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(request)  # urllib follows the 302 and forwards the header
    assert e.value.code == 400
    assert [(h.auth, h.status) for h in hub.hits("cdn")] == [(True, 400)]


def _standalone(code):
    """Python code run with personalive_core as a bare namespace: the download package without torch."""
    return (
        "import sys, types; pkg = types.ModuleType('personalive_core'); "
        f"pkg.__path__ = [{str(REPO / 'personalive_core')!r}]; sys.modules['personalive_core'] = pkg\n"
        "from personalive_core import download as dl\n"
        + code
        + "\nassert 'torch' not in sys.modules, 'the download package imported torch'\n"
    )


def test_two_processes_fetching_one_file_give_one_verified_file(hub, tmp_path):
    hub.chunk_delay = 0.01  # ~0.8 s for the 4.9 MB file: the two runs overlap
    go = tmp_path / "go"
    code = _standalone(
        "import os, sys, time, json\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
        f"r = dl.download({str(tmp_path / 'w')!r}, components='taesd', endpoint={hub.endpoint!r}, log=print)\n"
        "print(json.dumps({'fetched': r.fetched, 'present': r.present}))"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    time.sleep(0.3)
    go.touch()
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert sorted(len(r["fetched"]) for r in results) == [0, 1]
    assert sum("waiting" in out for out, _ in outs) == 1
    assert len(cdn_gets(hub, TAESD)) == 1
    assert sha(tmp_path / "w/taesd/taesd_decoder.safetensors") == sha(hub.root / TAESD)
    assert leftovers(tmp_path / "w") == []


@pytest.mark.parametrize("use_flock", [True, False])
def test_the_file_lock_excludes_threads(tmp_path, use_flock):
    inside, most, errors = [0], [0], []

    def work():
        try:
            for _ in range(5):
                with dl.FileLock(tmp_path / "x.lock", use_flock=use_flock, poll_s=0.001):
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                    time.sleep(0.002)
                    inside[0] -= 1
        except (OSError, DownloadError) as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and most[0] == 1 and not (tmp_path / "x.lock").exists()
    if not use_flock:  # a lock file whose holder died (not refreshed) is taken over
        (tmp_path / "y.lock").write_text("12345\n")
        os.utime(tmp_path / "y.lock", (time.time() - 120, time.time() - 120))
        with dl.FileLock(tmp_path / "y.lock", use_flock=False, stale_s=60, poll_s=0.001):
            pass


def test_files_in_the_hugging_face_cache_are_taken_without_a_get(hub, tmp_path, monkeypatch):
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))

    def cache_file(repo, path, blob_name, data):
        base = cache / f"models--{repo.replace('/', '--')}"
        (base / "blobs").mkdir(parents=True, exist_ok=True)
        (base / "blobs" / blob_name).write_bytes(data)
        link = base / "snapshots" / hub.commit(repo) / path
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(base / "blobs" / blob_name, link.parent))
        (base / "refs").mkdir(exist_ok=True)
        (base / "refs/main").write_text(hub.commit(repo))
        return base / "blobs" / blob_name

    taesd = (hub.root / TAESD).read_bytes()
    blob = cache_file("madebyollin/taesd", "taesd_decoder.safetensors", hashlib.sha256(taesd).hexdigest(), taesd)
    config = (hub.root / VAE / "config.json").read_bytes()
    git_sha1 = hashlib.sha1(b"blob %d\0" % len(config) + config).hexdigest()
    cache_file(VAE, "config.json", git_sha1, config)
    weights = (hub.root / VAE_WEIGHTS).read_bytes()  # a damaged cached copy: same size, other bytes
    cache_file(
        VAE,
        "diffusion_pytorch_model.safetensors",
        hashlib.sha256(weights).hexdigest(),
        weights[:-1] + bytes([weights[-1] ^ 1]),
    )

    report = dl.download(tmp_path / "w", components="vae,taesd", endpoint=hub.endpoint)
    assert sorted(report.reused) == ["sd-vae-ft-mse/config.json", "taesd/taesd_decoder.safetensors"]
    assert report.fetched == ["sd-vae-ft-mse/diffusion_pytorch_model.safetensors"]
    assert hub.hits(method="GET", key=TAESD) == [] and hub.hits(method="GET", key=f"{VAE}/config.json") == []
    assert os.stat(tmp_path / "w/taesd/taesd_decoder.safetensors").st_ino == os.stat(blob).st_ino  # a hard link
    assert sha(tmp_path / "w/sd-vae-ft-mse/diffusion_pytorch_model.safetensors") == sha(hub.root / VAE_WEIGHTS)
    assert record(tmp_path / "w")["taesd/taesd_decoder.safetensors"]["source"] == "hf-cache"


def test_free_disk_space_is_checked_before_any_transfer(hub, tmp_path):
    sizes = sum((hub.root / k).stat().st_size for k in OFFICIAL if k.startswith(PL))
    part = tmp_path / "personalive/denoising_unet.pth.part"
    part.parent.mkdir(parents=True)
    part.write_bytes((hub.root / DENOISING).read_bytes()[:1_000_000])
    need = sizes - 1_000_000  # what is already there does not count
    with pytest.raises(DownloadError) as e:
        dl.download(tmp_path, components="personalive", endpoint=hub.endpoint, free_bytes=lambda p: need - 1000)
    assert "not enough free disk space" in str(e.value) and "1.0 kB missing" in str(e.value)
    assert "nothing was transferred" in str(e.value)
    assert hub.hits(method="GET") == [] and part.stat().st_size == 1_000_000

    report = dl.download(tmp_path, components="personalive", endpoint=hub.endpoint, free_bytes=lambda p: need)
    assert len(report.fetched) == 6
    assert cdn_gets(hub, DENOISING) == ["bytes=1000000-"]

    with pytest.raises(DownloadError, match=r"5.0 kB to write .* 1.0 kB free: 4.0 kB missing"):
        dl.check_free_space({tmp_path / "a": 2000, tmp_path / "b/c": 3000}, free_bytes=lambda p: 1000)


def test_the_comfyui_layout_gets_the_names_the_workflows_select(hub, tmp_path):
    comfy = tmp_path / "ComfyUI"
    (comfy / "models").mkdir(parents=True)
    components = "personalive,image_encoder,vae,taesd"
    assert len(dl.missing(comfy, "comfyui", components)) == 9
    report = dl.download(comfy, "comfyui", components, endpoint=hub.endpoint)
    assert sorted(report.fetched) == sorted(COMFYUI.values())
    for key, rel in COMFYUI.items():
        assert sha(comfy / "models" / rel) == sha(hub.root / key)
    assert not list(comfy.rglob("config.json"))
    assert sorted(record(comfy / "models")) == sorted(COMFYUI.values())
    assert dl.missing(comfy, "comfyui", components) == []
    assert {dl.local_state(f) for f in dl.plan(comfy, "comfyui", components)} == {"verified"}


def test_cancel_keeps_the_part_and_a_rerun_resumes_it(hub, tmp_path):
    stop = threading.Event()

    def progress(file, done, total):
        if file == "personalive/denoising_unet.pth" and done >= 2 * dl.CHUNK:
            stop.set()

    with pytest.raises(dl.DownloadCancelled) as e:
        dl.download(tmp_path, components="personalive", endpoint=hub.endpoint, progress=progress, cancel=stop)
    kept = e.value.report.partial["personalive/denoising_unet.pth"]
    assert kept == 2 * dl.CHUNK and (tmp_path / "personalive/denoising_unet.pth.part").stat().st_size == kept
    assert not (tmp_path / "personalive/denoising_unet.pth").exists()
    hub.clear_log()
    assert len(dl.download(tmp_path, components="personalive", endpoint=hub.endpoint).fetched) == 6
    assert cdn_gets(hub, DENOISING) == [f"bytes={kept}-"]


def test_files_already_there(hub, tmp_path):
    """A right file without a record is checked and recorded, never fetched; a different one is left alone."""
    (tmp_path / "taesd").mkdir()
    shutil.copy(hub.root / TAESD, tmp_path / "taesd/taesd_decoder.safetensors")
    report = dl.download(tmp_path, components="taesd", endpoint=hub.endpoint)
    assert report.present == ["taesd/taesd_decoder.safetensors"] and hub.hits(method="GET") == []
    assert record(tmp_path)["taesd/taesd_decoder.safetensors"]["source"] == "existing"

    mine = tmp_path / "sd-vae-ft-mse/diffusion_pytorch_model.safetensors"
    mine.parent.mkdir()
    mine.write_bytes(b"my own VAE")
    with pytest.raises(DownloadError, match="exists but is not stabilityai/sd-vae-ft-mse.*left untouched"):
        dl.download(tmp_path, components="vae", endpoint=hub.endpoint)
    assert mine.read_bytes() == b"my own VAE"


def test_offline_mode_makes_no_request(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError, match="HF_HUB_OFFLINE is set.*taesd/taesd_decoder.safetensors"):
        dl.download(tmp_path, components="taesd", endpoint=hub.endpoint)
    assert hub.log == []


def test_text_progress_shows_bytes_rate_and_eta():
    out = io.StringIO()
    bar = dl.TextProgress(out, log_interval_s=0)
    bar("personalive/denoising_unet.pth", 0, 2_000_000)
    bar("personalive/denoising_unet.pth", 1_000_000, 2_000_000)
    bar("personalive/denoising_unet.pth", 2_000_000, 2_000_000)
    lines = out.getvalue().splitlines()
    assert "50.0%" in lines[1] and "1.0 MB/2.0 MB" in lines[1] and "/s ETA " in lines[1]
    assert "100.0%" in lines[-1] and "[" + "#" * 24 + "]" in lines[-1]


def test_a_recorded_file_the_hub_changed_is_replaced(hub_root, tmp_path):
    """Ours (recorded) but another version than the hub's now: fetched again, renamed over it atomically."""
    root = tmp_path / "hub"
    (root / TAESD).parent.mkdir(parents=True)
    shutil.copy(hub_root / TAESD, root / TAESD)
    standin = HubStandIn(root).start()
    try:
        w = tmp_path / "w"
        dl.download(w, components="taesd", endpoint=standin.endpoint)
        (root / TAESD).write_bytes((root / TAESD).read_bytes() + b"new version")
        entries = record(w)
        entries["taesd/taesd_decoder.safetensors"]["revision"] = "v1"  # recorded at another revision
        (w / dl.RECORD_NAME).write_text(json.dumps({"version": 1, "files": entries}))
        report = dl.download(w, components="taesd", endpoint=standin.endpoint, revision="main")
        assert report.fetched == ["taesd/taesd_decoder.safetensors"]
        assert sha(w / "taesd/taesd_decoder.safetensors") == sha(root / TAESD)
    finally:
        standin.stop()


def test_cancel_while_waiting_for_another_download(hub, tmp_path):
    dest = tmp_path / "taesd/taesd_decoder.safetensors"
    dest.parent.mkdir()
    stop = threading.Event()
    with dl.FileLock(dest.with_name(dest.name + ".lock")):  # "another process" holds the file
        threading.Timer(0.3, stop.set).start()
        with pytest.raises(dl.DownloadCancelled, match="waiting") as e:
            dl.download(tmp_path, components="taesd", endpoint=hub.endpoint, cancel=stop)
    assert e.value.report is not None and not dest.exists() and hub.hits(method="GET") == []


# -- the command line: `download`, `render --download` (in-process: personalive_core.cli.main) -------------------


def _main(*args):
    from personalive_core.cli.main import main

    return main([str(a) for a in args])


def test_cli_download_then_check_weights_and_a_render_that_fetches_nothing(hub, tmp_path, capsys):
    weights = tmp_path / "weights"
    assert _main("download", weights, "--endpoint", hub.endpoint) == 0
    err = capsys.readouterr().err
    assert "10 fetched" in err and "0 failed" in err and f"check-weights {weights}" in err
    assert "100.0%" in err  # the progress bar of each file
    assert sorted(record(weights)) == sorted(OFFICIAL.values())
    assert _main("check-weights", weights) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("ok ") for line in lines) == 7 and not any(line.startswith("note") for line in lines)

    hub.clear_log()
    inputs = _render_inputs(tmp_path)
    out = tmp_path / "x.npy"
    assert (
        _main(
            "render",
            "--weights",
            weights,
            "--download",
            "--reference",
            inputs / "ref.png",
            "--driving",
            inputs / "driving",
            "--out",
            out,
            "--size",
            "64",
            "--device",
            "cpu",
        )
        == 0
    )
    assert np.load(out).shape[0] == 4
    assert hub.log == []  # complete: no request at all
    assert _main("download", weights, "--endpoint", hub.endpoint) == 0  # a re-run: all present
    assert "10 already present" in capsys.readouterr().err and hub.log == []


def test_cli_download_comfyui_under_the_names_the_workflows_select(hub, tmp_path, capsys):
    comfy = tmp_path / "ComfyUI"
    (comfy / "models").mkdir(parents=True)
    assert (
        _main(
            "download", "--comfyui", comfy, "--only", "personalive,image_encoder,vae,taesd", "--endpoint", hub.endpoint
        )
        == 0
    )
    for key, rel in COMFYUI.items():
        assert sha(comfy / "models" / rel) == sha(hub.root / key)
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_workflows", REPO / "scripts/dev/make_workflows.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert (comfy / "models/clip_vision" / tool.CLIP_NAME).is_file()
    assert (comfy / "models/vae" / tool.VAE_NAME).is_file()


def test_cli_exit_codes_bad_input_2_failed_download_1(hub, tmp_path, capsys):
    for args in (
        ["download", tmp_path / "w", "--only", "bogus"],
        ["download", "--comfyui", tmp_path],
        ["download", tmp_path / "w", "--endpoint", "ftp://x"],
        ["download", "--comfyui", tmp_path / "c", "--only", "base_unet"],
    ):
        assert _main(*args) == 2, args
        assert "error: " in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # argparse: neither DIR nor --comfyui
        _main("download")
    assert e.value.code == 2

    hub.missing.add(f"{PL}/pose_guider.pth")
    assert _main("download", tmp_path / "w", "--only", "personalive", "--endpoint", hub.endpoint) == 1
    err = capsys.readouterr().err
    assert "HTTP status 404" in err and "Kept: 5 finished file(s)" in err and "personalive/pose_guider.pth" in err
    assert len(list((tmp_path / "w/personalive").glob("*.pth"))) == 5


def test_render_download_fetches_what_the_folder_lacks_then_renders(hub, hub_root, tmp_path, capsys, monkeypatch):
    """An empty folder: everything is fetched (HF_ENDPOINT); a folder lacking one file, with the official script's
    `.bin` image encoder and a user's own VAE: only the lacking file is fetched."""
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    inputs = _render_inputs(tmp_path)

    def render(weights, *extra):
        return _main(
            "render",
            "--weights",
            weights,
            "--reference",
            inputs / "ref.png",
            "--driving",
            inputs / "driving",
            "--out",
            tmp_path / "x.npy",
            "--size",
            "64",
            "--device",
            "cpu",
            *extra,
        )

    assert render(tmp_path / "new", "--download") == 0
    assert sorted(record(tmp_path / "new")) == sorted(OFFICIAL.values())
    assert np.load(tmp_path / "x.npy").shape[0] == 4

    mine = tmp_path / "mine/pretrained_weights"  # as the official tools/download_weights.py leaves it
    shutil.copytree(tmp_path / "new", mine)
    (mine / dl.RECORD_NAME).unlink()
    encoder = mine / "sd-image-variations-diffusers/image_encoder"
    from personalive_core.models.weights import read_state_dict, save_state_dict

    save_state_dict(read_state_dict(encoder / "model.safetensors"), encoder / "pytorch_model.bin")
    (encoder / "model.safetensors").unlink()
    vae = mine / "sd-vae-ft-mse/diffusion_pytorch_model.safetensors"  # the user's own: fp16, not the hub's file
    save_state_dict({k: v.half() for k, v in read_state_dict(vae).items()}, vae)
    own = sha(vae)
    (mine / "personalive/motion_encoder.pth").unlink()
    hub.clear_log()
    capsys.readouterr()
    assert render(tmp_path / "mine") == 2  # without --download: what lacks and how to fetch it
    err = capsys.readouterr().err
    assert "missing personalive/motion_encoder.pth;" in err and "--download" in err
    assert f"python -m personalive_core download {tmp_path / 'mine'}" in err and hub.log == []
    assert render(tmp_path / "mine", "--download") == 0
    assert {h.path.rsplit("/", 1)[-1] for h in hub.hits("hub")} == {"motion_encoder.pth"}
    assert sorted(record(mine)) == ["personalive/motion_encoder.pth"]
    assert not (mine / "sd-image-variations-diffusers/image_encoder/model.safetensors").exists() and sha(vae) == own


def test_the_loaders_own_missing_file_error_names_download_too(tiny_weights, tmp_path):
    """Past the check before loading (which names every lacking file), the loader's missing-file error gets
    the same hint: here a VAE folder without its weights."""
    weights = tmp_path / "w"
    shutil.copytree(tiny_weights, weights)
    from personalive_core.cli.commands import _load_models
    from personalive_core.config import StreamConfig
    from personalive_core.errors import WeightsMissing

    (weights / "sd-vae-ft-mse/diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(WeightsMissing, match=r"no weight file found.*--download.*personalive_core download"):
        _load_models(str(weights), StreamConfig().replace(device="cpu"))


def test_a_front_end_picks_files_and_gets_their_sizes_first(hub, tmp_path):
    """`files=` fetches only the named ones; `on_sizes` gives every size before the first byte; every file it
    named reaches done == total, also one found already there (hashed, not fetched)."""
    names = {"personalive/pose_guider.pth": f"{PL}/pose_guider.pth", "sd-vae-ft-mse/config.json": f"{VAE}/config.json"}
    expected = {name: (hub.root / key).stat().st_size for name, key in names.items()}
    for run in ("fetched", "present"):
        sizes, last = [], {}

        def progress(f, done, total, last=last):
            last[f] = (done, total)

        report = dl.download(
            tmp_path,
            components="personalive,vae",
            files=list(names),
            endpoint=hub.endpoint,
            on_sizes=sizes.append,
            progress=progress,
        )
        assert sorted(getattr(report, run)) == sorted(names) and sizes == [expected]
        assert last == {name: (n, n) for name, n in expected.items()}
        (tmp_path / dl.RECORD_NAME).unlink()  # the second run finds them there, unrecorded
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["config.json", "pose_guider.pth"]
    with pytest.raises(InputError, match="not in the plan of these components: bogus"):
        dl.download(tmp_path, files=["bogus"], endpoint=hub.endpoint)


def test_every_bundled_workflow_carries_the_frontends_model_metadata():
    """Each Load CLIP Vision and Load VAE node of each bundled workflow (UI format) names the file it selects in
    the frontend's model metadata: `properties.models` entries as the frontend schema's zModelFile defines them
    ({name, url, directory, hash?, hash_type?}, Comfy-Org/ComfyUI_frontend src/schemas/comfyWorkflowSchema.ts),
    each name one of the node's widget values (the frontend ignores any other), a huggingface.co resolve URL of a
    .safetensors file (what its missing-models dialog offers a download for) that is the download table's source
    of that file, and the loader's model folder as directory."""
    required, optional = {"name", "url", "directory"}, {"hash", "hash_type"}
    folders = {"CLIPVisionLoader": "clip_vision", "VAELoader": "vae"}
    table = {s.comfyui: s for s in dl.SOURCES if s.comfyui}
    loaders = set()
    for path in sorted((REPO / "workflows").glob("*.json")):
        workflow = json.loads(path.read_text())
        assert "models" not in workflow, path.name  # the top-level list: not used here
        for node in workflow["nodes"]:
            models = node["properties"].get("models")
            if node["type"] not in folders:
                assert models is None, (path.name, node["type"])
                continue
            loaders.add(node["type"])
            assert isinstance(models, list) and models, (path.name, node["type"])
            for m in models:
                assert required <= set(m) <= required | optional and all(isinstance(v, str) for v in m.values()), m
                url = urllib.parse.urlsplit(m["url"])
                assert (url.scheme, url.netloc) == ("https", "huggingface.co") and "/resolve/" in url.path, m
                assert m["name"] in node["widgets_values"] and m["name"].endswith(".safetensors"), m
                assert m["directory"] == folders[node["type"]], m
                source = table[f"{m['directory']}/{m['name']}"]
                assert m["url"] == f"https://huggingface.co/{source.repo}/resolve/{source.revision}/{source.path}"
    assert loaders == set(folders)
