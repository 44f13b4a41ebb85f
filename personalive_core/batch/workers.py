"""The workers of a batch, each a Ray actor that renders one job at a time (the driver makes them remote).

`CoreWorker` loads the models once (on its GPU, or the CPU) and renders every job through `render_job`, the
pipeline of the `render` command, so its frames are `render`'s for the same inputs and seed. `ComfyWorker`
owns one ComfyUI server (started on its own port with the GPU Ray gave the worker, or attached to a given
URL) and submits each job's workflow to it. A job arrives with its inputs as bytes (`shipping.Shipment`),
is rendered in the worker's own scratch folder and goes back as bytes (or, with `shared_out`, is written by
the worker into the output folder every machine mounts); a worker never reads a path of the driver.
`ready()` prepares a worker (models, server) and describes it; the driver calls it first and after a
restart. Progress goes to the driver's `Events` actor, fire and forget.

A job that fails on its own input (no face, a corrupt video, a rejected workflow) comes back as a failed
result with the message; a lost server raises `WorkerLost`, which the driver treats as a dead worker.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..config import StreamConfig
from ..errors import InputError
from ..pipelines import Job, fetch_lacking_weights, load_models, placement, render_job
from ..runtime import process_settings
from . import comfy_api
from .manifest import MODEL_FIELDS
from .shipping import Shipment, output_names, unpack, write_output

SCRATCH = os.path.join(tempfile.gettempdir(), "personalive-batch")


class WorkerLost(RuntimeError):
    """The worker lost what it renders with (its ComfyUI server): the job goes to another worker."""


class Events:
    """The driver's mailbox for progress: workers `add`, the driver `take`s everything so far."""

    def __init__(self) -> None:
        self.items: list[tuple[Any, ...]] = []

    def add(self, *item: Any) -> None:
        self.items.append(item)

    def take(self) -> list[tuple[Any, ...]]:
        items, self.items = self.items, []
        return items


def scratch_folder() -> str:
    """This process's scratch folder; those of processes that are gone (a killed worker) are removed."""
    os.makedirs(SCRATCH, exist_ok=True)
    for name in os.listdir(SCRATCH):
        if name.isdigit() and int(name) != os.getpid() and not _alive(int(name)):
            shutil.rmtree(os.path.join(SCRATCH, name), ignore_errors=True)
    mine = os.path.join(SCRATCH, str(os.getpid()))
    os.makedirs(mine, exist_ok=True)
    return mine


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _where() -> str:
    import ray

    context = ray.get_runtime_context()
    return f"pid {os.getpid()}, node {ray.util.get_node_ip_address()} {context.get_node_id()[:8]}"


class _Worker:
    """What both engines share: identity, scratch, progress, and one job's inputs on this machine."""

    def __init__(self, index: int, events: str, shared_out: str = "") -> None:
        self.index, self.events = index, events  # the driver's Events actor, by name (a handle would pin it)
        self.shared_out = shared_out
        self.mailbox: Any = None
        self.label = f"worker {index}"
        self.scratch = ""

    def describe(self) -> dict[str, Any]:
        return {"worker": f"{self.label} ({_where()})", "pid": os.getpid()}

    def tell(self, *event: Any) -> None:
        if self.mailbox is None:
            import ray

            self.mailbox = ray.get_actor(self.events)
        self.mailbox.add.remote(*event)

    def run(
        self, key: str, reference: Shipment, driving: Shipment, render: Callable[[str, str, str], dict[str, Any]]
    ) -> dict[str, Any]:
        """Unpack the inputs into a fresh folder, `render(folder, reference, driving)`, and answer with the
        result; an InputError is the job's failure, its message naming the driver's paths."""
        self.tell("start", key, self.describe()["worker"])
        folder = tempfile.mkdtemp(dir=self.scratch)
        t0 = time.perf_counter()
        ref, drv = unpack(reference, folder), unpack(driving, folder)
        try:
            result = self._deliver(key, render(folder, ref, drv))
        except InputError as e:
            message = str(e).replace(ref, reference.origin).replace(drv, driving.origin).replace(folder, "")
            result = {"status": "failed", "error": message}
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return {**result, "seconds": round(time.perf_counter() - t0, 3), **self.describe()}

    def _deliver(self, key: str, result: dict[str, Any]) -> dict[str, Any]:
        """With a shared output folder, write the files there and answer with their names only."""
        if not self.shared_out or result.get("status") != "done":
            return result
        if not os.path.isdir(self.shared_out):
            raise InputError(
                f"--shared-out: {self.shared_out} is not a folder on {_where()}: mount the output folder at the "
                "same path on every machine, or leave --shared-out out (the driver then writes every clip)"
            )
        names = output_names(key, result["files"])
        for name, (_, data) in zip(names, result["files"], strict=True):
            write_output(self.shared_out, name, data)
        return {**{k: v for k, v in result.items() if k != "files"}, "written": names}


class CoreWorker(_Worker):
    """The core engine: the models of `weights` loaded once, `config` (the batch's) deciding device, dtype
    and speed; a CPU worker renders with `threads` threads."""

    def __init__(
        self,
        index: int,
        events: str,
        weights: str,
        config: Mapping[str, Any],
        threads: int = 0,
        fetch: bool = False,
        shared_out: str = "",
    ) -> None:
        super().__init__(index, events, shared_out)
        self.weights, self.threads, self.fetch = weights, threads, fetch
        self.config = StreamConfig.from_dict(config)
        self.models: Any = None
        self.settings = contextlib.ExitStack()
        self.load_s = 0.0

    def ready(self) -> dict[str, Any]:
        """Load the models (once); what the driver shows of this worker."""
        if self.models is None:
            import torch

            t0 = time.perf_counter()
            self.scratch = scratch_folder()
            where = placement(self.config)
            if where.device == "cpu" and self.threads:
                torch.set_num_threads(self.threads)
            config = self.config.replace(**where.speed.to_dict())
            speed = self.settings.enter_context(process_settings(config.speed))  # the worker owns its process
            self.config = config.replace(reuse_memory=speed.reuse_memory)
            if self.fetch:  # each machine once: the download's per-file locks make its other workers wait
                fetch_lacking_weights(self.weights)
            self.models = load_models(self.weights, self.config)
            self.load_s = time.perf_counter() - t0
        return {**self.describe(), "device": str(self.models.device), "load_s": round(self.load_s, 3)}

    def render(self, key: str, options: Mapping[str, Any], reference: Shipment, driving: Shipment) -> dict[str, Any]:
        """One job: `options` over the worker's model settings, the output back as bytes."""
        self.ready()
        config = StreamConfig.from_dict(options).replace(
            **{k: v for k, v in self.config.to_dict().items() if k in MODEL_FIELDS}
        )
        notes: list[str] = []

        def render(folder: str, ref: str, drv: str) -> dict[str, Any]:
            out = os.path.join(folder, key)
            frames = lambda read, total: self.tell("frames", key, read, total)
            result = render_job(self.models, Job(ref, drv, out, config), out, frames, notes.append)
            with open(out, "rb") as f:
                return {"status": "done", "files": [(key, f.read())], "frames": result.frames}

        return {**self.run(key, reference, driving, render), "notes": notes}


class ComfyWorker(_Worker):
    """The comfyui engine: a ComfyUI server of its own (`comfyui` with `python`, `args`) or the one at
    `server`; each job one submission of its workflow."""

    def __init__(
        self,
        index: int,
        events: str,
        comfyui: str | None = None,
        python: str = "python3",
        server: str | None = None,
        args: str = "",
        poll: float = 1.0,
        job_timeout: float = 0,
        shared_out: str = "",
    ) -> None:
        super().__init__(index, events, shared_out)
        self.comfyui, self.python, self.url, self.args = comfyui, python, server, args
        self.poll, self.job_timeout = poll, job_timeout
        self.own: comfy_api.OwnServer | None = None
        self.server: comfy_api.Server | None = None

    def ready(self) -> dict[str, Any]:
        """Start (or restart) the worker's server, or check the given one answers."""
        if not self.scratch:
            self.scratch = scratch_folder()
        if self.url:
            self.server = comfy_api.Server(self.url)
            if not self.server.alive():
                raise WorkerLost(f"ComfyUI at {self.url} does not answer (GET /system_stats)")
        elif self.own is None or not self.own.running():
            import ray

            gpu = bool(ray.get_runtime_context().get_accelerator_ids().get("GPU"))
            assert self.comfyui is not None  # the driver gives --comfyui or --server
            try:
                self.own = comfy_api.OwnServer(
                    self.comfyui, self.python, tempfile.mkdtemp(dir=self.scratch), self.args, gpu
                )
            except comfy_api.ServerGone as e:
                raise WorkerLost(str(e)) from None
            self.server = self.own.server
        return {**self.describe(), "server": self.server.url if self.server else None}

    def render(self, key: str, prompt: dict[str, Any], reference: Shipment, driving: Shipment) -> dict[str, Any]:
        """One job: upload, submit, wait, download every file the workflow saved."""
        self.ready()
        server = self.server
        assert server is not None

        def render(_folder: str, _ref: str, _drv: str) -> dict[str, Any]:
            image, video = comfy_api.load_node(prompt, "LoadImage"), comfy_api.load_node(prompt, "LoadVideo")
            prompt[image]["inputs"]["image"] = server.upload(reference.name, reference.files[0][1])
            prompt[video]["inputs"]["file"] = server.upload(driving.name, driving.files[0][1])
            entry = server.wait(server.submit(prompt), self.poll, self.job_timeout)
            if entry.get("status", {}).get("status_str") == "error":
                raise comfy_api.JobRejected(comfy_api.error_text(entry))
            items = comfy_api.saved_items(entry)
            if not items:
                raise comfy_api.JobRejected("the workflow saved no files; it needs a Save Video (or Render Video) node")
            return {"status": "done", "files": [(item["filename"], server.download(item)) for item in items]}

        try:
            return self.run(key, reference, driving, render)
        except comfy_api.ServerGone as e:
            raise WorkerLost(str(e)) from None

    def __del__(self) -> None:
        if self.own is not None:
            self.own.stop()
