"""The comfyui engine's side of ComfyUI: its HTTP API (stdlib only) and the API-format workflow of a job.

A job is one submission of the workflow: both inputs uploaded (POST /upload/image, which stores any file in
the input folder; the stored name carries a content hash, so equal names never clash), their names put into
the workflow's LoadImage and LoadVideo nodes, the workflow submitted (POST /prompt), followed (GET /history,
GET /queue) and every file it saved fetched (GET /view). `ServerGone`: the server did not answer (try the job
elsewhere); `JobRejected`: it answered that the job cannot succeed (a node error, a rejected prompt).
`OwnServer` is a ComfyUI process started for one worker, on its own port and scratch folders.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import mimetypes
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import InputError

SAVED_KEYS = ("images", "gifs", "videos", "audio")  # where ComfyUI's history lists the files a node saved
PREFIX = "PersonaLive/batch"  # the files of a job are saved on the server as PREFIX/<job name>


class ServerGone(Exception):
    """The server did not answer: the job may succeed elsewhere."""


class JobRejected(InputError):
    """The server answered, but the job cannot succeed there or anywhere (bad input, a node error)."""


# -- the workflow --------------------------------------------------------------------------------------
def load_workflow(path: str) -> dict[str, Any]:
    """An API-format workflow (ComfyUI's Workflow → Export (API)); InputError for the UI format."""
    try:
        with open(path, encoding="utf-8") as f:
            prompt = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"workflow {path}: {e}") from e
    if isinstance(prompt, dict) and isinstance(prompt.get("prompt"), dict):
        prompt = prompt["prompt"]
    if (
        not isinstance(prompt, dict)
        or "nodes" in prompt
        or not all(isinstance(v, dict) and "class_type" in v for v in prompt.values())
    ):
        raise InputError(
            f"{path} is not an API-format workflow; in ComfyUI use Workflow → Export (API), or take "
            "a copy in workflows/api/"
        )
    return prompt


def targets(prompt: Mapping[str, Any], node: str) -> list[str]:
    """Node ids a `Node` of `Node.input` names: the id itself, or every node of that class_type."""
    return [node] if node in prompt else [k for k, v in prompt.items() if v.get("class_type") == node]


def set_inputs(prompt: dict[str, Any], values: Mapping[str, Any], where: str) -> None:
    """`{"Node.input": value}` into the workflow (NODE: a node id or a class_type, then all of them)."""
    for key, value in values.items():
        node, _, name = key.rpartition(".")
        ids = targets(prompt, node) if node and name else []
        if not ids:
            raise InputError(
                f"{where}: {key!r}: no node with id or class_type {node!r} in the workflow"
                if node and name
                else f"{where}: {key!r}: expected NODE.INPUT"
            )
        for k in ids:
            prompt[k]["inputs"][name] = value


def parse_sets(items: Iterable[str]) -> dict[str, Any]:
    """`--set NODE.INPUT=VALUE` (VALUE as JSON, else a string) → {"NODE.INPUT": value}."""
    out: dict[str, Any] = {}
    for item in items:
        target, eq, text = item.partition("=")
        if not eq or "." not in target:
            raise InputError(f"--set {item!r}: expected NODE.INPUT=VALUE, e.g. PersonaLiveStreamSampler.seed=7")
        try:
            out[target] = json.loads(text)
        except json.JSONDecodeError:
            out[target] = text  # a bare string
    return out


def set_options(prompt: dict[str, Any], options: Mapping[str, Any], where: str) -> None:
    """Config fields given (`seed`, `size`, ...) into every PersonaLive node with an input of that name (node
    inputs carry the config's field names)."""
    for name, value in options.items():
        nodes = [v for v in prompt.values() if v["class_type"].startswith("PersonaLive") and name in v["inputs"]]
        if not nodes:
            raise InputError(
                f"{where}: option {name}: no PersonaLive node of the workflow has an input {name!r}; "
                "set a node input with Node.input instead"
            )
        for node in nodes:
            node["inputs"][name] = value


def load_node(prompt: Mapping[str, Any], class_type: str) -> str:
    """The one node of `class_type` that receives an input (LoadImage, LoadVideo)."""
    ids = [k for k, v in prompt.items() if v.get("class_type") == class_type]
    if len(ids) != 1:
        raise InputError(f"the workflow has {len(ids)} {class_type} nodes; the batch fills exactly one")
    return ids[0]


def job_prompt(
    template: Mapping[str, Any], options: Mapping[str, Any], inputs: Mapping[str, Any], name: str, where: str
) -> dict[str, Any]:
    """The workflow of one job: the options and the row's `Node.input` values set, results saved under the
    job's name."""
    prompt: dict[str, Any] = json.loads(json.dumps(template))
    set_options(prompt, options, where)
    set_inputs(prompt, inputs, where)
    for node in prompt.values():
        if isinstance(node["inputs"].get("filename_prefix"), str):
            node["inputs"]["filename_prefix"] = f"{PREFIX}/{name}"
    return prompt


def saved_items(entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The output files a finished prompt saved, in node order."""
    items = []
    for node_id in sorted(entry.get("outputs", {}), key=str):
        out = entry["outputs"][node_id]
        for key in SAVED_KEYS:
            for item in out.get(key, []) or []:
                if isinstance(item, dict) and item.get("filename") and item.get("type", "output") == "output":
                    items.append(item)
    return items


def error_text(entry: Mapping[str, Any]) -> str:
    for kind, data in entry.get("status", {}).get("messages", []):
        if kind == "execution_error":
            return f"{data.get('node_type')} (node {data.get('node_id')}): {data.get('exception_message', '').strip()}"
        if kind == "execution_interrupted":
            return "interrupted on the server"
    return "failed without a message"


# -- HTTP ----------------------------------------------------------------------------------------------
class Server:
    """One ComfyUI server's HTTP API."""

    def __init__(self, url: str, timeout: float = 60) -> None:
        self.url = (url if "://" in url else "http://" + url).rstrip("/")
        self.timeout, self.client_id = timeout, uuid.uuid4().hex

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> tuple[int, bytes]:
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=dict(headers or {}))
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
            raise ServerGone(f"{self.url}: {getattr(e, 'reason', e)}") from e

    def get_json(self, path: str) -> Any:
        status, data = self.request("GET", path)
        if status != 200:
            raise ServerGone(f"{self.url}{path}: HTTP {status}")
        try:
            return json.loads(data)
        except json.JSONDecodeError as e:
            raise ServerGone(f"{self.url}{path}: not JSON ({e})") from e

    def alive(self) -> bool:
        try:
            self.get_json("/system_stats")
            return True
        except ServerGone:
            return False

    def upload(self, name: str, content: bytes) -> str:
        """Store a file in the server's input folder; the name it is known by there."""
        stored = f"pl_{hashlib.sha1(content).hexdigest()[:12]}_{name}"
        boundary = uuid.uuid4().hex
        ctype = mimetypes.guess_type(stored)[0] or "application/octet-stream"
        fields = "".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
            for k, v in (("type", "input"), ("overwrite", "true"))
        )
        body = (
            fields.encode()
            + f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
            f'filename="{stored}"\r\nContent-Type: {ctype}\r\n\r\n'.encode()
            + content
            + f"\r\n--{boundary}--\r\n".encode()
        )
        status, data = self.request(
            "POST", "/upload/image", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}, timeout=600
        )
        if status != 200:
            raise JobRejected(f"upload of {name} to {self.url} refused: HTTP {status} {data[:300]!r}")
        reply = json.loads(data)
        return f"{reply['subfolder']}/{reply['name']}" if reply.get("subfolder") else str(reply["name"])

    def submit(self, prompt: Mapping[str, Any]) -> str:
        body = json.dumps({"prompt": prompt, "client_id": self.client_id}).encode()
        status, data = self.request("POST", "/prompt", body, {"Content-Type": "application/json"})
        try:
            reply = json.loads(data) if data else {}
        except json.JSONDecodeError:
            reply = {"raw": data[:500].decode("utf-8", "replace")}
        if status != 200 or "prompt_id" not in reply:
            if status >= 500:
                raise ServerGone(f"{self.url}/prompt: HTTP {status}")
            raise JobRejected(f"rejected by {self.url}: {json.dumps(reply)[:2000]}")
        return str(reply["prompt_id"])

    def wait(self, prompt_id: str, poll: float, timeout: float) -> dict[str, Any]:
        """The history entry of a finished prompt; ServerGone if the server restarted and forgot it."""
        deadline = time.monotonic() + timeout if timeout else None
        quoted = urllib.parse.quote(prompt_id)
        while True:
            entry = self.get_json(f"/history/{quoted}").get(prompt_id)
            status = (entry or {}).get("status", {})
            if status.get("completed") or status.get("status_str") == "error":
                return dict(entry)
            queue = self.get_json("/queue")
            lists = (queue.get("queue_running", []), queue.get("queue_pending", []))
            known = any(item[1] == prompt_id for items in lists for item in items)
            if not known and not entry and not self.get_json(f"/history/{quoted}").get(prompt_id):
                raise ServerGone(f"{self.url} no longer knows prompt {prompt_id} (restarted?)")
            if deadline and time.monotonic() > deadline:
                raise JobRejected(f"not finished after {timeout:g} s on {self.url} (--job-timeout)")
            time.sleep(poll)

    def download(self, item: Mapping[str, Any]) -> bytes:
        query = urllib.parse.urlencode(
            {"filename": item["filename"], "subfolder": item.get("subfolder", ""), "type": item.get("type", "output")}
        )
        status, data = self.request("GET", f"/view?{query}", timeout=600)
        if status != 200:
            raise ServerGone(f"{self.url}/view {item['filename']}: HTTP {status}")
        return data


# -- a server of our own -------------------------------------------------------------------------------
def _die_with_parent() -> None:
    """In the child: end when the worker that started it ends (Linux), so a killed worker leaves no server
    holding its GPU."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OwnServer:
    """A ComfyUI process for one worker: `python main.py` of the checkout at `comfyui` with `python` (ComfyUI's
    own), on 127.0.0.1 and a free port, input/output/temp in `scratch`, `--cpu` without a GPU, and `args`."""

    def __init__(
        self, comfyui: str, python: str, scratch: str, args: str = "", gpu: bool = False, start_timeout: float = 300
    ) -> None:
        if not os.path.isfile(os.path.join(comfyui, "main.py")):
            raise InputError(f"--comfyui {comfyui}: not a ComfyUI checkout (no main.py there)")
        self.port = free_port()
        folders = {k: os.path.join(scratch, k) for k in ("input", "output", "temp")}
        for folder in folders.values():
            os.makedirs(folder, exist_ok=True)
        cmd = [
            python,
            "main.py",
            "--listen",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--disable-auto-launch",
            *(f for k, v in folders.items() for f in (f"--{k}-directory", v)),
            *([] if gpu else ["--cpu"]),
            *shlex.split(args),
        ]
        # ComfyUI's Python is not the worker's: nothing of the worker's interpreter set-up goes with it
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("RAY_")}
        self.log_path = os.path.join(scratch, "comfyui.log")
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=comfyui, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent
            )
        self.server = Server(f"http://127.0.0.1:{self.port}")
        self._wait(start_timeout)

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerGone(f"ComfyUI exited at start (code {self.proc.returncode}):\n{self.tail()}")
            if self.server.alive():
                return
            time.sleep(0.5)
        self.stop()
        raise ServerGone(f"ComfyUI did not answer within {timeout:g} s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        with open(self.log_path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
