"""Download models from inside ComfyUI: what the PersonaLive, CLIP vision and VAE folders lack, fetched by the
core's download module into ComfyUI's own models folder (its "comfyui" layout under `folder_paths.models_dir`)
under the names the bundled workflows select. Endpoint and token: HF_ENDPOINT and HF_TOKEN, as for every
Hugging Face client (docs/DOWNLOAD.md).

Routes on the host's server (the Download models button of Load PersonaLive Model, web/js/personalive_download.js):
    GET  /personalive/models            {"lacking": [{name, folder, file, source, size, partial}], "download": …}
    POST /personalive/models/download   start fetching what is lacking in a background thread (a partial file
                                        resumes), or report the run already going
    GET  /personalive/models/download   {"state", "files": [{name, done, total, state}], "done", "total", "error"}
    POST /personalive/models/cancel     stop between reads; partial files (.part) are kept for resuming
The loader node's first use: `fetch_personalive()`, with the node's progress bar and the host's interrupt.
After a download the loaders' file lists are read afresh (`refresh_lists`)."""

import logging
import os
import threading
import time

import comfy.model_management as mm
import comfy.utils
import folder_paths

from ..personalive_core import download
from ..personalive_core.errors import DownloadError, InputError
from ..personalive_core.pipelines import personalive_files
from .common import MODEL_FOLDER, host_server

log = logging.getLogger(__name__)

COMPONENTS = download.DEFAULT_COMPONENTS  # PersonaLive files, the CLIP vision image encoder, the VAE
LISTS = (MODEL_FOLDER, "clip_vision", "vae", "vae_approx")  # the host's file lists a download changes
PROGRESS_EVERY_S = 0.25  # the node's progress bar: at most this often (each update is a websocket message)


def comfy_folder():
    """The folder holding ComfyUI's models folder: the download module's target for its comfyui layout."""
    os.makedirs(folder_paths.models_dir, exist_ok=True)
    return os.path.dirname(os.path.abspath(folder_paths.models_dir))


def _present(file):
    """Whether a ComfyUI loader finds `file` in any folder the host registers for its kind (extra_model_paths
    included); a PersonaLive file also as its .safetensors twin."""
    kind, name = file.rel.split("/", 1)
    if kind == MODEL_FOLDER:
        stem = os.path.splitext(name)[0]
        return any(personalive_files(folder)[stem] for folder in folder_paths.get_folder_paths(MODEL_FOLDER))
    return folder_paths.get_full_path(kind, name) is not None


def lacking(components=COMPONENTS):
    """The planned files (download.PlannedFile) no folder of the host has yet."""
    return [f for f in download.plan(comfy_folder(), "comfyui", components) if not _present(f)]


def refresh_lists():
    """Forget the host's cached file lists, so the loaders' combos and the next prompt see the new files."""
    for name in LISTS:
        folder_paths.filename_list_cache.pop(name, None)


class Tally:
    """Bytes per file and overall of one run, from the download's `on_sizes` and `progress` callbacks."""

    def __init__(self, files=()):
        files = list(files)
        self.sizes = dict.fromkeys(files)
        self.done = dict.fromkeys(files, 0)

    def on_sizes(self, sizes):
        self.sizes.update(sizes)

    def progress(self, file, done, total):
        self.done[file] = done
        if total:
            self.sizes[file] = total

    @property
    def bytes_done(self):
        return sum(self.done.values())

    @property
    def bytes_total(self):
        """None until every size is known."""
        sizes = list(self.sizes.values())
        return None if any(s is None for s in sizes) else sum(sizes)


def _fetch(files, progress, on_sizes, cancel):
    return download.download(
        comfy_folder(),
        "comfyui",
        list(dict.fromkeys(f.source.component for f in files)),
        files=[f.rel for f in files],
        progress=progress,
        on_sizes=on_sizes,
        cancel=cancel,
        log=log.info,
    )


# -- the loader's first use ----------------------------------------------------------------------------------
def fetch_personalive():
    """Fetch the PersonaLive files the personalive folders lack (nothing, and no network, when none is), with
    the running node's progress bar in bytes; an interrupt from the host stops it between reads (partial files
    are kept, the next run resumes them). DownloadError names the URL, the status and what to do."""
    files = lacking(("personalive",))
    if not files:
        return
    log.info(
        f"PersonaLive: downloading {len(files)} missing file(s) into {folder_paths.models_dir}/{MODEL_FOLDER}: "
        f"{', '.join(f.rel for f in files)}"
    )
    bar = comfy.utils.ProgressBar(1)
    tally = Tally(f.rel for f in files)
    shown = 0.0

    def progress(file, done, total):
        nonlocal shown
        tally.progress(file, done, total)
        whole, now = tally.bytes_total, time.monotonic()
        if whole and (now - shown >= PROGRESS_EVERY_S or tally.bytes_done >= whole):
            shown = now
            bar.update_absolute(tally.bytes_done, whole)

    try:
        _fetch(files, progress, tally.on_sizes, mm.processing_interrupted)
    except download.DownloadCancelled:
        mm.throw_exception_if_processing_interrupted()  # the host's own interrupt exception
        raise
    finally:
        refresh_lists()


# -- the route's background download ---------------------------------------------------------------------------
class DownloadJob:
    """The one background download behind the route: its thread, its cancel switch and its progress. Pressing
    the button again after a cancel or a failure starts a new run, which resumes the partial files."""

    def __init__(self):
        self.lock = threading.Lock()
        self.thread = None
        self.cancel = threading.Event()
        self.state = "idle"  # idle, running, done, failed, cancelled
        self.error = None
        self.tally = Tally()
        self.names = []
        self.sizes = {}  # every size learnt so far, kept across runs (for the lacking list)

    def start(self):
        with self.lock:
            if self.thread is not None and self.thread.is_alive():
                return self._status()
            files = lacking()
            self.cancel.clear()
            self.error, self.names = None, [f.rel for f in files]
            self.tally = Tally(self.names)
            self.tally.on_sizes({n: self.sizes.get(n) for n in self.names})
            if not files:
                self.state = "done"
                refresh_lists()
                return self._status()
            self.state = "running"
            self.thread = threading.Thread(target=self._run, args=(files,), name="personalive-download", daemon=True)
            self.thread.start()
            return self._status()

    def _run(self, files):
        state, error = "done", None
        try:
            _fetch(files, self.tally.progress, self.tally.on_sizes, self.cancel)
        except download.DownloadCancelled:
            state = "cancelled"
        except (DownloadError, InputError, OSError) as e:
            state, error = "failed", str(e)
        except Exception as e:  # reported to the page instead of dying unseen in this thread
            log.exception("PersonaLive: the model download failed")
            state, error = "failed", f"{type(e).__name__}: {e}"
        finally:
            refresh_lists()
        if error:
            log.error(f"PersonaLive: the model download failed: {error}")
        with self.lock:
            self.sizes.update({k: v for k, v in self.tally.sizes.items() if v is not None})
            self.state, self.error = state, error

    def stop(self):
        self.cancel.set()
        return self.status()

    def status(self):
        with self.lock:
            return self._status()

    def _status(self):
        t = self.tally
        files = []
        for name in self.names:
            done, total = t.done.get(name, 0), t.sizes.get(name)
            complete = total is not None and done >= total
            files.append(
                {
                    "name": name,
                    "done": done,
                    "total": total,
                    "state": "done" if complete else "downloading" if done else "waiting",
                }
            )
        return {"state": self.state, "files": files, "done": t.bytes_done, "total": t.bytes_total, "error": self.error}

    def lacking(self):
        """What the host lacks now, with the size of each file once a run has learnt it, and partial bytes."""
        with self.lock:
            sizes = dict(self.sizes)
        return [
            {
                "name": f.rel,
                "folder": f.rel.split("/", 1)[0],
                "file": f.rel.split("/", 1)[1],
                "source": f"{f.source.repo}/{f.source.path}",
                "size": sizes.get(f.rel),
                "partial": f.part.stat().st_size if f.part.is_file() else 0,
            }
            for f in lacking()
        ]


def add_routes(routes, job, prefix="/personalive/models"):
    from aiohttp import web

    async def models(request):
        return web.json_response({"lacking": job.lacking(), "download": job.status()})

    async def start(request):
        return web.json_response(job.start())

    async def progress(request):
        return web.json_response(job.status())

    async def cancel(request):
        return web.json_response(job.stop())

    routes.get(prefix)(models)
    routes.post(f"{prefix}/download")(start)
    routes.get(f"{prefix}/download")(progress)
    routes.post(f"{prefix}/cancel")(cancel)


JOB = DownloadJob()
if host_server() is not None:
    add_routes(host_server().routes, JOB)
