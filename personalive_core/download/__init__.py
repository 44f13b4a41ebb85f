"""Fetch the published weights from the Hugging Face Hub (or a mirror) into the official or the ComfyUI layout.

Plain HTTP with the hub's URL scheme (`{endpoint}/{repo}/resolve/{revision}/{path}`) and the standard library
only: it behaves the same whichever `huggingface_hub` (0.x, 1.x or none) the host has, never upgrades a
package and never imports torch. Every front end (CLI, ComfyUI route, loader node) calls the same
functions, all importable from here:

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

from .sources import (
    COMPONENTS,
    DEFAULT_COMPONENTS,
    DEFAULT_REVISION,
    LAYOUTS,
    Layout,
    PART_SUFFIX,
    PERSONALIVE_NAMES,
    PlannedFile,
    SOURCES,
    Source,
    layout_root,
    missing,
    parse_components,
    plan,
)
from .hub import DEFAULT_ENDPOINT, hf_cache_dir, hf_home, resolve_endpoint, resolve_token
from .record import FileLock, LOCK_SUFFIX, RECORD_NAME, Record, local_state
from .transport import MAX_REDIRECTS, Remote, USER_AGENT
from .report import DOCS, DownloadCancelled, DownloadFailed, DownloadReport, NetworkError
from .disk import check_free_space, disk_free
from .engine import CHUNK, Cancel, Log, Progress, download
from .progress import TextProgress

__all__ = [
    "CHUNK",
    "COMPONENTS",
    "DEFAULT_COMPONENTS",
    "DEFAULT_ENDPOINT",
    "DEFAULT_REVISION",
    "DOCS",
    "LAYOUTS",
    "LOCK_SUFFIX",
    "MAX_REDIRECTS",
    "PART_SUFFIX",
    "PERSONALIVE_NAMES",
    "RECORD_NAME",
    "SOURCES",
    "USER_AGENT",
    "Cancel",
    "DownloadCancelled",
    "DownloadFailed",
    "DownloadReport",
    "FileLock",
    "Layout",
    "Log",
    "NetworkError",
    "PlannedFile",
    "Progress",
    "Record",
    "Remote",
    "Source",
    "TextProgress",
    "check_free_space",
    "disk_free",
    "download",
    "hf_cache_dir",
    "hf_home",
    "layout_root",
    "local_state",
    "missing",
    "parse_components",
    "plan",
    "resolve_endpoint",
    "resolve_token",
]
