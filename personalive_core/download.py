"""Fetch the published weights from the Hugging Face Hub (or a mirror) into the official or the ComfyUI layout.

Plain HTTP with the hub's URL scheme (`{endpoint}/{repo}/resolve/{revision}/{path}`) and the standard library
only: it behaves the same whichever `huggingface_hub` (0.x, 1.x or none) the host has, never upgrades a
package and never imports torch. Every front end (CLI, ComfyUI route, loader node) calls the same functions:

    plan(target, layout="official", components=None, revision=None) -> list[PlannedFile]
    missing(target, layout="official", components=None) -> list[PlannedFile]
    local_state(file, record=None) -> "verified" | "unverified" | "partial" | "missing"
    download(target, layout="official", components=None, *, files=None, endpoint=None, token=None,
             revision=None, progress=None, on_sizes=None, cancel=None, log=None, check=True, retries=3,
             timeout=30.0, free_bytes=None) -> DownloadReport
    parse_components("personalive,vae") -> ("personalive", "vae")
    TextProgress()   # a `progress` callback drawing one bar per file on stderr

From argparse: `download DIR` -> download(DIR); `download --comfyui COMFYUI_DIR` -> download(COMFYUI_DIR,
layout="comfyui"); `--only a,b` -> components=parse_components(args.only); `--endpoint`, `--revision` and
`--token` pass through as they are (None: HF_ENDPOINT, HF_TOKEN, the table's revision); progress=TextProgress(),
log=print to stderr. InputError: bad arguments (exit 2). DownloadError: a failed download (exit 1); its message
names each URL, the HTTP status, the environment variables and what was kept.

How each file is obtained, first that applies: already there and recorded (no network at all); already there
but not recorded (hashed against the hub's sha256); in the user's Hugging Face cache with the same sha256
(hard link, else copy); fetched into `<name>.part` (resumed with HTTP Range), verified (size, and sha256 for
LFS files), then renamed. A half file never has its final name. Details and the manual route: docs/DOWNLOAD.md.
"""

from __future__ import annotations

import contextlib
import datetime
import email.message
import hashlib
import http.client
import importlib.util
import json
import os
import shutil
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, TextIO

from .errors import DownloadError, InputError

DEFAULT_ENDPOINT = "https://huggingface.co"
# "main", as the official tools/download_weights.py: none of the four repositories has a release tag to pin,
# and the record keeps the commit each file came from (`revision=` or --revision pins one).
DEFAULT_REVISION = "main"
DOCS = "docs/DOWNLOAD.md"
RECORD_NAME = ".personalive-download.json"
PART_SUFFIX = ".part"
LOCK_SUFFIX = ".lock"
USER_AGENT = "personalive-download/1 (python urllib)"
CHUNK = 1 << 20
MAX_REDIRECTS = 10
RETRY_WAIT_S = 1.0  # × the attempt number, between resumes of a broken transfer
_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
_HAVE_FLOCK = importlib.util.find_spec("fcntl") is not None

Layout = Literal["official", "comfyui"]
LAYOUTS: tuple[str, ...] = ("official", "comfyui")
Progress = Callable[[str, int, int], None]
Cancel = Callable[[], bool] | threading.Event
Log = Callable[[str], None]

# ---------------------------------------------------------------------------------------------------------------
# What is fetched from where: the one table.


@dataclass(frozen=True)
class Source:
    """One file: where it is on the hub, and where it goes in each layout."""

    component: str
    repo: str
    path: str  # in the repository
    official: str  # under DIR
    comfyui: str | None  # under COMFYUI_DIR/models; None: ComfyUI's loaders do not need it
    revision: str = DEFAULT_REVISION


PERSONALIVE_NAMES = (
    "denoising_unet",
    "reference_unet",
    "pose_guider",
    "motion_encoder",
    "motion_extractor",
    "temporal_module",
)
COMPONENTS = ("personalive", "image_encoder", "vae", "taesd", "base_unet")
DEFAULT_COMPONENTS = ("personalive", "image_encoder", "vae")
_PERSONALIVE = "huaichang/PersonaLive"
_SD_IV = "lambdalabs/sd-image-variations-diffusers"
_VAE = "stabilityai/sd-vae-ft-mse"
_TAESD = "madebyollin/taesd"

# `.safetensors` where a repository has one (the official script takes the `.bin` twins: same tensors, no pickle).
# taesd: the optional fast preview decoder. base_unet (3.4 GB): only on request; the loader reads it only for
# keys the PersonaLive files lack (published files cover every key, so renders never need it).
SOURCES: tuple[Source, ...] = (
    *(
        Source(
            "personalive",
            _PERSONALIVE,
            f"pretrained_weights/personalive/{n}.pth",
            f"personalive/{n}.pth",
            f"personalive/{n}.pth",
        )
        for n in PERSONALIVE_NAMES
    ),
    Source(
        "image_encoder",
        _SD_IV,
        "image_encoder/config.json",
        "sd-image-variations-diffusers/image_encoder/config.json",
        None,
    ),
    Source(
        "image_encoder",
        _SD_IV,
        "image_encoder/model.safetensors",
        "sd-image-variations-diffusers/image_encoder/model.safetensors",
        "clip_vision/sd-image-variations-image-encoder.safetensors",
    ),
    Source("vae", _VAE, "config.json", "sd-vae-ft-mse/config.json", None),
    Source(
        "vae",
        _VAE,
        "diffusion_pytorch_model.safetensors",
        "sd-vae-ft-mse/diffusion_pytorch_model.safetensors",
        "vae/sd-vae-ft-mse.safetensors",
    ),
    Source(
        "taesd",
        _TAESD,
        "taesd_decoder.safetensors",
        "taesd/taesd_decoder.safetensors",
        "vae_approx/taesd_decoder.safetensors",
    ),
    Source("base_unet", _SD_IV, "unet/config.json", "sd-image-variations-diffusers/unet/config.json", None),
    Source(
        "base_unet",
        _SD_IV,
        "unet/diffusion_pytorch_model.safetensors",
        "sd-image-variations-diffusers/unet/diffusion_pytorch_model.safetensors",
        None,
    ),
)


@dataclass(frozen=True)
class PlannedFile:
    """A file of the plan: its source, the folder its record lives in, and its local path under that folder."""

    source: Source
    root: Path  # DIR, or COMFYUI_DIR/models
    rel: str  # posix path under root: also the name shown in progress, reports and the record
    revision: str

    @property
    def dest(self) -> Path:
        return self.root.joinpath(*self.rel.split("/"))

    @property
    def part(self) -> Path:
        return self.dest.with_name(self.dest.name + PART_SUFFIX)

    def url(self, endpoint: str) -> str:
        rev = urllib.parse.quote(self.revision, safe="")  # refs/pr/1 -> refs%2Fpr%2F1, as the hub wants
        return f"{endpoint}/{self.source.repo}/resolve/{rev}/{urllib.parse.quote(self.source.path)}"


def parse_components(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """Component names from `"a,b"`, a list, `"all"` or None (the defaults); InputError names an unknown one."""
    if value is None:
        return DEFAULT_COMPONENTS
    names = value.split(",") if isinstance(value, str) else list(value)
    names = [n.strip() for n in names if n.strip()]
    if names == ["all"]:
        return COMPONENTS
    unknown = [n for n in names if n not in COMPONENTS]
    if unknown or not names:
        raise InputError(
            f"unknown component(s) {', '.join(map(repr, unknown)) or '(none given)'}: "
            f"choose from {', '.join(COMPONENTS)} (or 'all'), comma-separated"
        )
    return tuple(dict.fromkeys(names))


def layout_root(target: str | os.PathLike[str], layout: str = "official") -> Path:
    """The folder the layout's paths (and the record) are relative to: DIR, or COMFYUI_DIR/models."""
    if layout not in LAYOUTS:
        raise InputError(
            f"unknown layout {layout!r}: use 'official' (a weights folder) or 'comfyui' (a ComfyUI folder)"
        )
    path = Path(target).expanduser()
    if path.exists() and not path.is_dir():
        raise InputError(f"{path} is a file: pass a folder")
    if layout == "official":
        return path
    if not (path / "models").is_dir():
        raise InputError(f"{path} has no models/ folder: pass the ComfyUI folder (the one holding main.py and models/)")
    return path / "models"


def _revision_for(source: Source, revision: str | Mapping[str, str] | None) -> str:
    if isinstance(revision, Mapping):  # per component or per repository
        revision = revision.get(source.component) or revision.get(source.repo)
    if revision is None:
        return source.revision
    if not revision.strip():
        raise InputError("revision is empty: give a branch, tag or commit (or leave it out for 'main')")
    return revision.strip()


def plan(
    target: str | os.PathLike[str],
    layout: str = "official",
    components: str | Iterable[str] | None = None,
    revision: str | Mapping[str, str] | None = None,
) -> list[PlannedFile]:
    """The files of `components` for a target: an official-layout DIR, or a ComfyUI folder (`layout="comfyui"`).

    `revision`: one for every repository, or a mapping component/repository -> revision."""
    root = layout_root(target, layout)
    chosen = parse_components(components)
    files = []
    for name in chosen:
        sources = [s for s in SOURCES if s.component == name]
        if layout == "comfyui" and all(s.comfyui is None for s in sources):
            raise InputError(
                f"{name} has no place in the ComfyUI layout (the nodes never load it): fetch it into "
                "an official-layout folder instead"
            )
        for s in sources:
            rel = s.official if layout == "official" else s.comfyui
            if rel is not None:
                files.append(PlannedFile(s, root, rel, _revision_for(s, revision)))
    return files


def missing(
    target: str | os.PathLike[str], layout: str = "official", components: str | Iterable[str] | None = None
) -> list[PlannedFile]:
    """The files of the plan that have no final name yet (what a front end offers to download)."""
    return [f for f in plan(target, layout, components) if not f.dest.is_file()]


def local_state(file: PlannedFile, record: Record | None = None) -> str:
    """'verified' (there, as recorded), 'unverified' (there, not recorded), 'partial' (a .part) or 'missing'."""
    record = record or Record(file.root)
    if record.verified(file):
        return "verified"
    if file.dest.is_file():
        return "unverified"
    return "partial" if file.part.is_file() else "missing"


# ---------------------------------------------------------------------------------------------------------------
# Where the hub is, who we are, where its cache is (the environment variables huggingface_hub reads).


def resolve_endpoint(endpoint: str | None = None) -> str:
    """An explicit endpoint, else HF_ENDPOINT, else https://huggingface.co; without a trailing slash."""
    value = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).strip().rstrip("/")
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        where = "--endpoint" if endpoint else "HF_ENDPOINT"
        raise InputError(
            f"{where} {value!r} is not an http(s) URL: use e.g. https://huggingface.co or a mirror "
            "such as https://hf-mirror.com"
        )
    return value


def hf_home() -> Path:
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "huggingface"


def hf_cache_dir() -> Path:
    """HF_HUB_CACHE (or the older HUGGINGFACE_HUB_CACHE), else $HF_HOME/hub, else ~/.cache/huggingface/hub."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    return hf_home() / "hub"


def resolve_token(token: str | None = None) -> str | None:
    """An explicit token, else HF_TOKEN, else HUGGING_FACE_HUB_TOKEN, else the file of `hf auth login`."""
    for value in (token, os.environ.get("HF_TOKEN"), os.environ.get("HUGGING_FACE_HUB_TOKEN")):
        if value and value.strip():
            return value.strip()
    path = Path(os.environ.get("HF_TOKEN_PATH") or hf_home() / "token").expanduser()
    with contextlib.suppress(OSError, UnicodeDecodeError):
        return path.read_text().strip() or None
    return None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


# ---------------------------------------------------------------------------------------------------------------
# The record of what was fetched, and the per-file lock.


class Record:
    """What was fetched, `<root>/.personalive-download.json` (local name -> repo, revision, commit, file,
    sha256, size, url, ...), merged across runs and processes."""

    def __init__(self, root: Path) -> None:
        self.path = root / RECORD_NAME
        self.entries = self._load()

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):  # absent or damaged: files are then checked against the hub again
            return {}
        files = data.get("files") if isinstance(data, dict) else None
        return {k: v for k, v in files.items() if isinstance(v, dict)} if isinstance(files, dict) else {}

    def reload(self) -> None:
        self.entries = self._load()

    def entry(self, file: PlannedFile) -> dict[str, Any] | None:
        e = self.entries.get(file.rel)
        if e is None or e.get("repo") != file.source.repo or e.get("file") != file.source.path:
            return None
        return e

    def verified(self, file: PlannedFile) -> bool:
        """There under its final name, recorded for this revision, with the recorded size (no hashing: a re-run
        is instant and needs no network)."""
        e = self.entry(file)
        if e is None or file.revision not in (e.get("revision"), e.get("commit")):
            return False
        with contextlib.suppress(OSError):
            return file.dest.is_file() and file.dest.stat().st_size == e.get("size")
        return False

    def add(self, file: PlannedFile, entry: dict[str, Any]) -> None:
        """Merge one entry into the file on disk (under a lock: other processes may add theirs meanwhile)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(self.path.with_name(self.path.name + LOCK_SUFFIX)):
            self.entries = self._load()
            self.entries[file.rel] = entry
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps({"version": 1, "files": dict(sorted(self.entries.items()))}, indent=2) + "\n")
            os.replace(tmp, self.path)


def _flock_nb(fd: int) -> bool:
    import fcntl  # callers check _HAVE_FLOCK

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class FileLock:
    """An exclusive lock between threads and processes, held as the file `path`, removed on release.

    flock where the OS has it (the kernel frees it when its process dies); elsewhere an exclusive-create lock
    file, taken over once its holder stopped refreshing it for `stale_s`. `cancel` is checked while waiting."""

    def __init__(
        self,
        path: Path,
        *,
        cancel: Callable[[], bool] | None = None,
        on_wait: Callable[[], None] | None = None,
        use_flock: bool | None = None,
        poll_s: float = 0.05,
        stale_s: float = 60.0,
    ) -> None:
        self.path = path
        self.cancel = cancel
        self.on_wait = on_wait
        self.use_flock = _HAVE_FLOCK if use_flock is None else use_flock
        self.poll_s, self.stale_s = poll_s, stale_s
        self._fd: int | None = None
        self._held = False
        self._waited = False
        self._touched = 0.0

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        while not (self._try_flock() if self.use_flock else self._try_create()):
            self._wait()
        self._held = True
        self._touched = time.monotonic()

    def _try_flock(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if _flock_nb(fd) and self._still_linked(fd):
            self._fd = fd
            return True
        os.close(fd)  # busy, or a holder removed this file on release: try the path afresh
        return False

    def _still_linked(self, fd: int) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        own = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)

    def _try_create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                if time.time() - os.stat(self.path).st_mtime > self.stale_s:
                    os.unlink(self.path)  # its holder died: nobody refreshed it
            return False
        os.write(fd, f"{os.getpid()}\n".encode())
        os.close(fd)
        return True

    def _wait(self) -> None:
        if self.cancel is not None and self.cancel():
            raise DownloadCancelled(f"cancelled while waiting for {self.path}")
        if not self._waited and self.on_wait is not None:
            self.on_wait()
        self._waited = True
        time.sleep(self.poll_s)

    def refresh(self) -> None:
        """Show the lock is alive (lock-file fallback only; cheap to call often)."""
        now = time.monotonic()
        if self._held and not self.use_flock and now - self._touched > self.stale_s / 4:
            self._touched = now
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # before closing: a waiter that got the old file sees it unlinked and retries
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# ---------------------------------------------------------------------------------------------------------------
# HTTP: redirects followed by hand, so the Authorization header never leaves the endpoint's host.


class DownloadCancelled(DownloadError):
    """Stopped by the cancel hook: partial files are kept for resuming."""

    report: DownloadReport | None = None


class NetworkError(DownloadError):
    """No HTTP answer (connection refused, DNS failure, timeout, a dropped connection)."""


class DownloadFailed(DownloadError):
    """Some files could not be fetched; `report` says what was fetched, kept and why the rest failed."""

    def __init__(self, report: DownloadReport, total: int) -> None:
        kept = [*report.fetched, *report.reused, *report.present]
        lines = [f"{len(report.failed)} of {total} files could not be downloaded into {report.root}:", ""]
        for message in report.failed.values():
            lines += [message, ""]
        lines.append(f"Kept: {len(kept)} finished file(s)" + (f" ({', '.join(kept)})" if kept else "") + ".")
        if report.partial:
            parts = ", ".join(f"{name}.part ({_human(n)})" for name, n in report.partial.items())
            lines.append(f"Partial files kept for resuming: {parts}; run the download again to continue.")
        super().__init__("\n".join(lines))
        self.report = report


class _NetFailure(Exception):
    """A request got no HTTP answer; turned into a NetworkError naming the file by the caller."""

    def __init__(self, url: str, cause: object) -> None:
        super().__init__(f"{url}: {cause}")
        self.url = url
        self.cause = cause.reason if isinstance(cause, urllib.error.URLError) else cause

    @property
    def transient(self) -> bool:
        """Worth retrying: a refused connection or an unknown host fails the same way at once again."""
        return not isinstance(self.cause, (ConnectionRefusedError, socket.gaierror))


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: email.message.Message,
        newurl: str,
    ) -> urllib.request.Request | None:
        return None  # the 3xx comes back to _Client.open as an answer


@dataclass
class _Reply:
    url: str
    status: int
    headers: email.message.Message
    body: Any  # http.client.HTTPResponse or urllib.error.HTTPError: both have read() and close()

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        return None if value is None else str(value)

    def read(self, n: int) -> bytes:
        data: bytes = self.body.read(n)
        return data

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.body.close()


def _origin(url: str) -> tuple[str, str, int]:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)


def _send(method: str, url: str, headers: Mapping[str, str], timeout: float) -> _Reply:
    # a fresh opener each time: its ProxyHandler reads HTTP(S)_PROXY / NO_PROXY as they are now
    opener = urllib.request.build_opener(_NoRedirects)
    request = urllib.request.Request(url, method=method, headers=dict(headers))
    try:
        response = opener.open(request, timeout=timeout)
    except urllib.error.HTTPError as e:  # any status but 2xx, redirects included
        return _Reply(url, e.code, e.headers, e)
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
        raise _NetFailure(url, e) from e
    return _Reply(url, int(response.status), response.headers, response)


@dataclass
class _Client:
    endpoint: str
    token: str | None
    timeout: float

    def headers(self, url: str, extra: Mapping[str, str]) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **extra}
        if self.token and _origin(url) == _origin(self.endpoint):  # never to a CDN or any other host
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def open(
        self,
        method: str,
        url: str,
        extra: Mapping[str, str] | None = None,
        follow: Callable[[_Reply], bool] = lambda reply: True,
    ) -> _Reply:
        for _ in range(MAX_REDIRECTS + 1):
            reply = _send(method, url, self.headers(url, extra or {}), self.timeout)
            location = reply.header("Location")
            if reply.status not in _REDIRECT_CODES or not location or not follow(reply):
                return reply
            reply.close()
            url = urllib.parse.urljoin(url, location)
        raise _NetFailure(url, f"more than {MAX_REDIRECTS} redirects")


def _etag(value: str | None) -> str | None:
    if not value:
        return None
    value = value.strip()
    return value.removeprefix("W/").strip('"') or None


def _is_sha256(value: str | None) -> bool:
    return value is not None and len(value) == 64 and all(c in "0123456789abcdef" for c in value.lower())


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    with contextlib.suppress(ValueError):
        return int(value)
    return None


def _has_hub_headers(reply: _Reply) -> bool:
    return reply.header("X-Linked-Etag") is not None or reply.header("X-Repo-Commit") is not None


@dataclass(frozen=True)
class Remote:
    """What the hub says of a file (HEAD): its size, its sha256 (LFS files) and the commit it is at."""

    url: str  # the resolve URL: fetched again with GET, since CDN links expire
    size: int | None
    sha256: str | None
    etag: str | None
    commit: str | None


# ---------------------------------------------------------------------------------------------------------------
# Messages a user can act on.


def _env_line(endpoint: str, token: str | None) -> str:
    where = "HF_ENDPOINT" if os.environ.get("HF_ENDPOINT") else "default; HF_ENDPOINT not set"
    sent = "a token was sent" if token else "no token (HF_TOKEN not set)"
    return (
        f"  endpoint: {endpoint} ({where}; set HF_ENDPOINT for a mirror, e.g. https://hf-mirror.com); "
        f"{sent}; HF_TOKEN gives access to gated or private files"
    )


def _manual_line(url: str, dest: Path) -> str:
    return f"  manual route ({DOCS}): download {url} (a browser, or curl -L) and save it as {dest}"


_STATUS_HINTS = {
    401: "the server wants a valid token: set HF_TOKEN to a read token (https://huggingface.co/settings/tokens)",
    403: "access refused: a gated or private repository needs HF_TOKEN with access, and its terms accepted on its page",
    404: "no such file at this revision here: check the revision, and that the mirror in HF_ENDPOINT carries "
    "this repository",
    429: "rate-limited: wait a little and run again (a token in HF_TOKEN raises the limit)",
}


def _status_error(file: PlannedFile, reply: _Reply, endpoint: str, token: str | None) -> DownloadError:
    reason = http.client.responses.get(reply.status, "")
    hint = _STATUS_HINTS.get(reply.status) or (
        "the server failed: run again later (finished files are kept, a partial one resumes), or use a mirror "
        "(HF_ENDPOINT)"
        if reply.status >= 500
        else "unexpected answer"
    )
    detail = " ".join(v for v in (reply.header("X-Error-Code"), reply.header("X-Error-Message")) if v)
    lines = [
        f"{file.rel}: {file.source.repo}/{file.source.path} at revision {file.revision}: "
        f"HTTP status {reply.status} {reason}" + (f" ({detail})" if detail else ""),
        f"  URL: {reply.url}" + ("" if reply.url == file.url(endpoint) else f" (from {file.url(endpoint)})"),
        f"  {hint}",
        _env_line(endpoint, token),
        _manual_line(file.url(endpoint), file.dest),
    ]
    return DownloadError("\n".join(lines), url=reply.url, status=reply.status)


def _network_error(
    file: PlannedFile, failure: _NetFailure, endpoint: str, token: str | None, kept: int = 0
) -> NetworkError:
    host = urllib.parse.urlsplit(failure.url).netloc
    lines = [
        f"{file.rel}: {file.source.repo}/{file.source.path}: no answer from {host} ({failure.cause})",
        f"  URL: {failure.url}",
        (
            "  HTTP status: none (no network, DNS failure, timeout, a firewall or proxy, or the server is down): "
            "check the connection, or set HF_ENDPOINT to a reachable mirror"
        ),
        _env_line(endpoint, token),
        _manual_line(file.url(endpoint), file.dest),
    ]
    if kept:
        lines.insert(2, f"  {_human(kept)} kept in {file.part}: run again to resume")
    return NetworkError("\n".join(lines), url=failure.url)


def _human(n: float) -> str:
    """Decimal units, as the hub shows sizes."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


# ---------------------------------------------------------------------------------------------------------------
# Disk space.


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def disk_free(path: Path) -> int:
    return shutil.disk_usage(_existing_ancestor(path)).free


def check_free_space(needs: Mapping[Path, int], free_bytes: Callable[[Path], int] | None = None) -> None:
    """Fail before any transfer when a drive lacks room: `needs` maps destination folders to bytes still to
    write there; folders on one drive add up. `free_bytes(folder)`: free space (default: the drive's)."""
    drives: dict[int, tuple[Path, int]] = {}
    for folder, n in needs.items():
        anchor = _existing_ancestor(folder)
        dev = anchor.stat().st_dev
        first, total = drives.get(dev, (anchor, 0))
        drives[dev] = (first, total + n)
    problems = []
    for anchor, need in drives.values():
        free = (free_bytes or disk_free)(anchor)
        if need > free:
            problems.append(
                f"{_human(need)} to write on the drive of {anchor}, {_human(free)} free: {_human(need - free)} missing"
            )
    if problems:
        raise DownloadError(
            "not enough free disk space: "
            + "; ".join(problems)
            + ". Free that much space or download into another folder; nothing was transferred."
        )


# ---------------------------------------------------------------------------------------------------------------
# The engine.


@dataclass
class DownloadReport:
    """What a download did: local names (relative to `root`) per outcome."""

    root: Path
    fetched: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)  # taken from the Hugging Face cache
    present: list[str] = field(default_factory=list)  # already there and verified
    failed: dict[str, str] = field(default_factory=dict)  # local name -> message
    partial: dict[str, int] = field(default_factory=dict)  # .part files kept for resuming -> bytes
    bytes_transferred: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        counts = [
            f"{len(self.fetched)} fetched ({_human(self.bytes_transferred)})",
            f"{len(self.reused)} from the Hugging Face cache",
            f"{len(self.present)} already present",
            f"{len(self.failed)} failed",
        ]
        return f"{self.root}: " + ", ".join(counts)


class _Partial:
    """`<final>.part` and the sha256 of its bytes so far, updated together."""

    def __init__(self, path: Path, expected: int | None) -> None:
        self.path = path
        self.size = 0
        self.digest = hashlib.sha256()
        if path.is_file():
            if expected is not None and path.stat().st_size > expected:
                path.unlink()  # longer than the file: not a prefix of it
            else:
                self.size, self.digest = _hash_file(path)

    def restart(self) -> None:
        self.path.unlink(missing_ok=True)
        self.size, self.digest = 0, hashlib.sha256()

    def append(self, out: IO[bytes], chunk: bytes) -> None:
        try:
            out.write(chunk)
        except OSError:
            with contextlib.suppress(OSError):  # keep the file a clean prefix for resuming (e.g. disk full)
                out.truncate(self.size)
            raise
        self.digest.update(chunk)
        self.size += len(chunk)


def _hash_file(path: Path, cancel: Callable[[], bool] | None = None) -> tuple[int, Any]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            if cancel is not None and cancel():
                raise DownloadCancelled(f"cancelled while checking {path}")
            digest.update(chunk)
            size += len(chunk)
    return size, digest


def _content_range_start(value: str | None) -> int | None:
    # "bytes 100-199/200"
    words = (value or "").split()
    return _int(words[1].split("-")[0]) if len(words) == 2 and words[0] == "bytes" else None


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class _Run:
    """One download(): the client, the callbacks and the per-file steps."""

    def __init__(
        self,
        endpoint: str,
        token: str | None,
        progress: Progress | None,
        cancel: Cancel | None,
        log: Log | None,
        retries: int,
        timeout: float,
    ) -> None:
        self.client = _Client(endpoint, token, timeout)
        self.progress = progress or (lambda file, done, total: None)
        self.cancelled: Callable[[], bool] = (
            cancel.is_set if isinstance(cancel, threading.Event) else cancel or (lambda: False)
        )
        self.log = log or (lambda message: None)
        self.retries = max(0, retries)
        self.transferred = 0

    def check_cancel(self, what: str) -> None:
        if self.cancelled():
            raise DownloadCancelled(f"cancelled during {what}; partial files are kept for resuming")

    # -- metadata -------------------------------------------------------------------------------------------
    def head(self, file: PlannedFile) -> Remote:
        url = file.url(self.client.endpoint)
        for attempt in range(self.retries + 1):
            try:
                # stop at the first answer carrying the hub's headers: the 302 of an LFS file carries them,
                # its CDN target does not (and its ETag there is not the sha256)
                reply = self.client.open("HEAD", url, follow=lambda r: not _has_hub_headers(r))
                break
            except _NetFailure as failure:
                if not failure.transient or attempt == self.retries:
                    raise _network_error(file, failure, self.client.endpoint, self.client.token) from None
                time.sleep(RETRY_WAIT_S * (attempt + 1))
        reply.close()
        if reply.status >= 400 or (reply.status >= 300 and not _has_hub_headers(reply)):
            raise _status_error(file, reply, self.client.endpoint, self.client.token)
        linked = _etag(reply.header("X-Linked-Etag"))
        size = _int(reply.header("X-Linked-Size"))
        if size is None and reply.status < 300:
            size = _int(reply.header("Content-Length"))
        return Remote(
            url,
            size,
            linked.lower() if linked and _is_sha256(linked) else None,
            linked or _etag(reply.header("ETag")),
            reply.header("X-Repo-Commit"),
        )

    # -- the Hugging Face cache -----------------------------------------------------------------------------
    def cache_candidates(self, file: PlannedFile, remote: Remote) -> list[Path]:
        """Files of the user's HF cache with the right size that may be this one (checked before use)."""
        if remote.size is None or not (remote.sha256 or remote.etag):
            return []
        base = hf_cache_dir() / ("models--" + file.source.repo.replace("/", "--"))
        paths = [base / "blobs" / str(remote.sha256 or remote.etag)]
        snapshots = base / "snapshots"
        if remote.commit:
            paths.append(snapshots / remote.commit / file.source.path)
        with contextlib.suppress(OSError):
            paths += sorted(s / file.source.path for s in snapshots.iterdir())
        found: dict[str, Path] = {}
        for p in paths:
            with contextlib.suppress(OSError):
                real = Path(os.path.realpath(p))
                if real.is_file() and real.stat().st_size == remote.size:
                    found.setdefault(str(real), real)
        return list(found.values())

    def cache_match(self, file: PlannedFile, remote: Remote) -> Path | None:
        for path in self.cache_candidates(file, remote):
            if remote.sha256:
                if _hash_file(path, self.cancelled)[1].hexdigest() == remote.sha256:
                    return path
            elif path.name == remote.etag:  # a small file's blob is named by its ETag
                return path
        return None

    def take_from_cache(self, file: PlannedFile, source: Path, remote: Remote) -> str:
        file.part.unlink(missing_ok=True)
        try:
            os.link(source, file.part)
            how = "hard link"
        except OSError:  # another drive, or no hard links here: copy
            self.copy(file, source, remote)
            how = "copy"
        os.replace(file.part, file.dest)
        self.progress(file.rel, int(remote.size or 0), int(remote.size or 0))
        return how

    def copy(self, file: PlannedFile, source: Path, remote: Remote) -> None:
        partial = _Partial(file.part, None)
        partial.restart()
        with source.open("rb") as src, file.part.open("ab") as out:
            while chunk := src.read(CHUNK):
                self.check_cancel(f"the copy of {source}")
                partial.append(out, chunk)
                self.progress(file.rel, partial.size, int(remote.size or 0))
        self.verify(file, remote, partial)

    # -- transfer -------------------------------------------------------------------------------------------
    def fetch(self, file: PlannedFile, remote: Remote, lock: FileLock) -> str:
        """Fetch into the .part (resuming it), verify, rename; the sha256."""
        partial = _Partial(file.part, remote.size)
        attempt = 0
        if partial.size:
            self.log(f"{file.rel}: resuming at {_human(partial.size)}")
        self.progress(file.rel, partial.size, remote.size or 0)
        while True:
            try:
                state = self.get_into(file, remote, partial, lock)
                if state == "restart":
                    continue
                if remote.size is None or partial.size >= remote.size:
                    break
                raise _NetFailure(remote.url, "the connection closed before the end of the file")
            except _NetFailure as failure:
                attempt += 1
                if not failure.transient or attempt > self.retries:
                    raise _network_error(file, failure, self.client.endpoint, self.client.token, partial.size) from None
                self.log(
                    f"{file.rel}: {failure.cause}; resuming at {_human(partial.size)} (try {attempt} of {self.retries})"
                )
                time.sleep(RETRY_WAIT_S * attempt)
        sha = self.verify(file, remote, partial)
        os.replace(file.part, file.dest)
        return sha

    def get_into(self, file: PlannedFile, remote: Remote, partial: _Partial, lock: FileLock) -> str:
        """One GET appended to the partial file: 'ended' (the body ended), or 'restart' (the server would not
        resume this partial file: it was emptied, fetch from the start)."""
        extra = {"Range": f"bytes={partial.size}-"} if partial.size else {}
        reply = self.client.open("GET", remote.url, extra)
        with contextlib.closing(reply):
            if partial.size and (
                reply.status == 416
                or (  # the range is past its file, or not what we asked
                    reply.status == 206 and _content_range_start(reply.header("Content-Range")) != partial.size
                )
            ):
                self.log(f"{file.rel}: the server cannot resume the partial file; starting over")
                partial.restart()
                return "restart"
            if reply.status == 200 and partial.size:
                self.log(f"{file.rel}: the server ignored the range; starting over")
                partial.restart()
            elif reply.status not in (200, 206):
                raise _status_error(file, reply, self.client.endpoint, self.client.token)
            total = (
                remote.size if remote.size is not None else partial.size + (_int(reply.header("Content-Length")) or 0)
            )
            file.part.parent.mkdir(parents=True, exist_ok=True)
            with file.part.open("ab") as out:
                while True:
                    self.check_cancel(f"the transfer of {file.rel}")
                    try:
                        chunk = reply.read(CHUNK)
                    except (OSError, http.client.HTTPException) as e:
                        raise _NetFailure(reply.url, e) from e
                    if not chunk:
                        return "ended"
                    partial.append(out, chunk)
                    self.transferred += len(chunk)
                    lock.refresh()
                    self.progress(file.rel, partial.size, total)

    def verify(self, file: PlannedFile, remote: Remote, partial: _Partial) -> str:
        """Size, and sha256 against the hub's LFS ETag; a mismatch deletes the partial file and says why."""
        sha = str(partial.digest.hexdigest())
        problems = []
        if remote.size is not None and partial.size != remote.size:
            problems.append(f"size: expected {remote.size} bytes, got {partial.size}")
        if remote.sha256 and sha != remote.sha256:
            problems.append(f"sha256: expected {remote.sha256}, got {sha}")
        if problems:
            partial.path.unlink(missing_ok=True)
            raise DownloadError(
                f"{file.rel}: {file.source.repo}/{file.source.path} from {remote.url} failed verification "
                f"({'; '.join(problems)}); the partial file {partial.path} was deleted. Run again to fetch it anew; "
                f"if it fails again, the mirror (HF_ENDPOINT) or a proxy alters the file: see {DOCS}.",
                url=remote.url,
            )
        with partial.path.open("rb+") as f:  # on disk before it gets its final name
            os.fsync(f.fileno())
        return sha

    # -- one file, start to end -------------------------------------------------------------------------------
    def existing_sha(self, file: PlannedFile, remote: Remote, record: Record) -> str | None:
        """The sha256 of a file already under its final name if it is the hub's file, else None."""
        size = file.dest.stat().st_size
        if remote.size is not None and size != remote.size:
            return None
        entry = record.entry(file)
        if entry and entry.get("size") == size and _is_sha256(entry.get("sha256")):
            sha = str(entry["sha256"])
        else:
            self.log(f"{file.rel}: already there, checking it against the hub's sha256")
            sha = str(_hash_file(file.dest, self.cancelled)[1].hexdigest())
        return sha if remote.sha256 in (None, sha) else None

    def obtain(self, file: PlannedFile, remote: Remote, record: Record) -> str:
        """'present', 'reused' or 'fetched' (the DownloadReport list it goes to)."""
        file.dest.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(
            file.dest.with_name(file.dest.name + LOCK_SUFFIX),
            cancel=self.cancelled,
            on_wait=lambda: self.log(f"{file.rel}: another download of it is running; waiting"),
        )
        with lock:
            record.reload()
            if record.verified(file):  # another process finished it while we waited
                return "present"
            entry = {
                "repo": file.source.repo,
                "revision": file.revision,
                "commit": remote.commit,
                "file": file.source.path,
                "url": remote.url,
                "etag": remote.etag,
                "lfs": remote.sha256 is not None,
            }
            if file.dest.is_file():
                sha = self.existing_sha(file, remote, record)
                if sha is not None:
                    record.add(
                        file,
                        {
                            **entry,
                            "sha256": sha,
                            "size": file.dest.stat().st_size,
                            "source": "existing",
                            "time": _now(),
                        },
                    )
                    return "present"
                if record.entry(file) is None:  # not ours: never overwrite a user's file
                    raise DownloadError(
                        f"{file.rel}: {file.dest} exists but is not {file.source.repo}/{file.source.path} at revision "
                        f"{file.revision} (expected {remote.size} bytes, sha256 {remote.sha256 or 'not given'}); "
                        "it was left untouched: move or delete it to fetch the hub's file.",
                        url=remote.url,
                    )
                self.log(f"{file.rel}: the hub has another version at {file.revision}; replacing it")
            cached = self.cache_match(file, remote)
            if cached is not None:
                how = self.take_from_cache(file, cached, remote)
                self.log(f"{file.rel}: taken from the Hugging Face cache ({how} of {cached})")
                record.add(
                    file,
                    {
                        **entry,
                        "sha256": remote.sha256 or _hash_file(file.dest)[1].hexdigest(),
                        "size": file.dest.stat().st_size,
                        "source": "hf-cache",
                        "time": _now(),
                    },
                )
                return "reused"
            sha = self.fetch(file, remote, lock)
            record.add(
                file, {**entry, "sha256": sha, "size": file.dest.stat().st_size, "source": "hub", "time": _now()}
            )
            return "fetched"

    def space_needed(self, remotes: Mapping[PlannedFile, Remote]) -> dict[Path, int]:
        """Bytes still to write per destination folder: sizes from HEAD minus what is already there."""
        needs: dict[Path, int] = {}
        for file, remote in remotes.items():
            if remote.size is None:
                self.log(f"{file.rel}: the server gave no size; not counted in the disk-space check")
                continue
            if file.dest.is_file():
                continue
            need = remote.size - (file.part.stat().st_size if file.part.is_file() else 0)
            for cached in self.cache_candidates(file, remote):
                if cached.stat().st_dev == _existing_ancestor(file.dest).stat().st_dev:
                    need = 0  # a hard link takes no room
            folder = file.dest.parent
            needs[folder] = needs.get(folder, 0) + max(0, need)
        return needs


def download(
    target: str | os.PathLike[str],
    layout: str = "official",
    components: str | Iterable[str] | None = None,
    *,
    files: Iterable[str] | None = None,
    endpoint: str | None = None,
    token: str | None = None,
    revision: str | Mapping[str, str] | None = None,
    progress: Progress | None = None,
    on_sizes: Callable[[dict[str, int | None]], None] | None = None,
    cancel: Cancel | None = None,
    log: Log | None = None,
    check: bool = True,
    retries: int = 3,
    timeout: float = 30.0,
    free_bytes: Callable[[Path], int] | None = None,
) -> DownloadReport:
    """Fetch what `target` lacks of `components` (default: personalive, image_encoder, vae) and verify it.

    target/layout: an official-layout DIR (`render --weights DIR`), or a ComfyUI folder with layout="comfyui".
    files: only these local names of the plan (`PlannedFile.rel`), e.g. what a front end found missing.
    endpoint/token: None reads HF_ENDPOINT / HF_TOKEN (then HUGGING_FACE_HUB_TOKEN, then $HF_HOME/token).
    revision: one for all repositories, or {component or repo: revision}; None: the table's ("main").
    progress(file, done_bytes, total_bytes): per file (total 0 when unknown); it may raise to stop (the .part
    is kept); every file given to on_sizes reaches done == total (also one found already there).
    on_sizes({file: bytes or None}): once, before any transfer, the hub's size of each file still to obtain
    (None where unknown; files already recorded are left out), for an overall progress.
    cancel: a threading.Event or a callable, checked between reads; when set, DownloadCancelled is raised and
    partial files are kept for resuming. log(message): what happens, one line each.
    check: raise DownloadFailed (a DownloadError, with `.report`) when a file failed; else return the report.
    retries: resumes of a broken transfer. free_bytes(folder): free space, for tests and quota-aware callers.
    Raises InputError for bad arguments, DownloadError when the disk lacks room (before any transfer)."""
    planned = _only(plan(target, layout, components, revision), files)
    root = layout_root(target, layout)
    run = _Run(resolve_endpoint(endpoint), resolve_token(token), progress, cancel, log, retries, timeout)
    report = DownloadReport(root)
    record = Record(root)
    todo = []
    for f in planned:
        if record.verified(f):
            report.present.append(f.rel)
        else:
            todo.append(f)
    if todo and _offline():
        raise DownloadError(
            f"HF_HUB_OFFLINE is set, and {len(todo)} file(s) are missing or not verified in {root}: "
            f"{', '.join(f.rel for f in todo)}. Unset HF_HUB_OFFLINE, or copy them by hand ({DOCS})."
        )
    try:
        remotes = _look_up(run, todo, report)
        if on_sizes is not None:
            on_sizes({f.rel: r.size for f, r in remotes.items()})
        if remotes:
            check_free_space(run.space_needed(remotes), free_bytes)
        _obtain_all(run, remotes, record, report)
    except DownloadCancelled as e:
        report.bytes_transferred = run.transferred
        _note_partials(planned, report)
        e.report = report
        raise
    _note_partials(planned, report)
    if check and report.failed:
        raise DownloadFailed(report, len(planned))
    return report


def _only(files: list[PlannedFile], names: Iterable[str] | None) -> list[PlannedFile]:
    if names is None:
        return files
    wanted = set(names)
    unknown = wanted - {f.rel for f in files}
    if unknown:
        raise InputError(
            f"not in the plan of these components: {', '.join(sorted(unknown))}; choose from "
            f"{', '.join(f.rel for f in files)}"
        )
    return [f for f in files if f.rel in wanted]


def _look_up(run: _Run, files: list[PlannedFile], report: DownloadReport) -> dict[PlannedFile, Remote]:
    remotes: dict[PlannedFile, Remote] = {}
    for i, f in enumerate(files):
        run.check_cancel("the look-up of the files")
        try:
            remotes[f] = run.head(f)
        except NetworkError as e:  # the same for every other file: do not wait for each to time out
            report.failed[f.rel] = str(e)
            _skip_rest(files[i + 1 :], report)
            break
        except DownloadError as e:
            report.failed[f.rel] = str(e)
    return remotes


def _obtain_all(run: _Run, remotes: Mapping[PlannedFile, Remote], record: Record, report: DownloadReport) -> None:
    items = list(remotes.items())
    for i, (f, remote) in enumerate(items):
        try:
            outcome = run.obtain(f, remote, record)
        except DownloadCancelled:
            raise
        except NetworkError as e:
            report.failed[f.rel] = str(e)
            _skip_rest([g for g, _ in items[i + 1 :]], report)
            break
        except DownloadError as e:
            report.failed[f.rel] = str(e)
        except OSError as e:  # the network's errors are NetworkErrors by now: this is the local disk
            report.failed[f.rel] = (
                f"{f.rel}: cannot write {f.dest}: {e}. Check the folder's permissions and free "
                "space; finished files are kept."
            )
        else:
            if outcome == "present":  # verified without a transfer: complete for a progress display too
                size = f.dest.stat().st_size
                run.progress(f.rel, size, size)
            getattr(report, outcome).append(f.rel)
    report.bytes_transferred = run.transferred


def _skip_rest(files: Iterable[PlannedFile], report: DownloadReport) -> None:
    for f in files:
        report.failed[f.rel] = f"{f.rel}: not tried after the network error above"


def _note_partials(files: Iterable[PlannedFile], report: DownloadReport) -> None:
    for f in files:
        if f.part.is_file():
            report.partial[f.rel] = f.part.stat().st_size


# ---------------------------------------------------------------------------------------------------------------
# A text progress bar (tqdm-free) for the command line.


class TextProgress:
    """A `progress` callback drawing one bar per file on a stream (stderr): bytes, rate and ETA.

    On a terminal the bar is redrawn in place at most every `interval_s`; elsewhere (logs, CI) one line per
    file every `log_interval_s` and when it completes."""

    def __init__(
        self, stream: TextIO | None = None, width: int = 24, interval_s: float = 0.1, log_interval_s: float = 10.0
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval_s = interval_s if self.tty else log_interval_s
        self._file: str | None = None
        self._start = self._last = 0.0
        self._first_done = 0
        self._open_line = False

    def __call__(self, file: str, done: int, total: int) -> None:
        now = time.monotonic()
        if file != self._file:
            self._end_line()
            self._file, self._start, self._last, self._first_done = file, now, 0.0, done
        finished = total > 0 and done >= total
        if not finished and now - self._last < self.interval_s:
            return
        self._last = now
        line = self.format(file, done, total, now - self._start, done - self._first_done)
        if self.tty:
            self.stream.write("\r" + line.ljust(100))
            self._open_line = not finished
            if finished:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        if finished:
            self._file = None

    def _end_line(self) -> None:
        if self._open_line:
            self.stream.write("\n")
            self._open_line = False

    def format(self, file: str, done: int, total: int, elapsed: float, transferred: int) -> str:
        name = file if len(file) <= 40 else "…" + file[-39:]
        rate = transferred / elapsed if elapsed > 0 else 0.0
        if total > 0:
            frac = min(1.0, done / total)
            filled = int(frac * self.width)
            eta = (total - done) / rate if rate > 0 else None
            eta_text = (
                "--:--" if eta is None else time.strftime("%H:%M:%S" if eta >= 3600 else "%M:%S", time.gmtime(eta))
            )
            return (
                f"{name:<40} {frac * 100:5.1f}% [{'#' * filled}{'.' * (self.width - filled)}] "
                f"{_human(done)}/{_human(total)} {_human(rate)}/s ETA {eta_text}"
            )
        return f"{name:<40} {_human(done)} {_human(rate)}/s"
