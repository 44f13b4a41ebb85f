"""One batch job: a reference portrait, a driving video and an output file, rendered as `render` renders it.

`render_job` is `render_video` with a guarantee a batch needs: the output appears under its final name
only when it is complete (written under a hidden temporary name beside it, renamed at the end, removed
on failure), so a job cut short by an error, a Ctrl-C or a killed process never leaves a file that looks
finished. `job_hash` fingerprints what decides the frames (the input files' content and the options), so
a re-run can tell a finished job from one whose inputs or options changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ..config import StreamConfig
from ..errors import InputError
from ..media.driving import DrivingSource
from ..models.loader import PersonaLiveModels
from .footage import RenderResult, render_video

OUTPUT_SUFFIXES = (".mp4", ".mov", ".mkv", ".npy")  # one file each (a PNG folder cannot be renamed into place)
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".gif")
HASH_VERSION = b"personalive-job/1"  # bump when the same inputs and options render other frames
_BLOCK = 1 << 20


@dataclass(frozen=True)
class Job:
    """What one output needs: the reference picture, the driving video (a file or a folder of frames),
    the output file and the options."""

    reference: str
    driving: str
    out: str
    config: StreamConfig = field(default_factory=StreamConfig)


def input_files(path: str) -> list[str]:
    """The files an input consists of: the file itself, or the files of a folder (sorted)."""
    if os.path.isdir(path):
        return [os.path.join(path, f) for f in sorted(os.listdir(path)) if os.path.isfile(os.path.join(path, f))]
    return [path]


def file_digest(path: str) -> str:
    """sha256 of an input's content (a folder: its files' names and content), read in blocks."""
    h = hashlib.sha256()
    for name in input_files(path):
        h.update(os.path.basename(name).encode() + b"\0")
        with open(name, "rb") as f:
            while block := f.read(_BLOCK):
                h.update(block)
    return h.hexdigest()


def job_hash(job: Job, digest: Callable[[str], str] = file_digest, extra: str = "") -> str:
    """A fingerprint of what decides the job's frames: both inputs' content (`digest(path)`; a caller may
    cache it), every option, and `extra` (e.g. a workflow). The output name and the weights are not in it."""
    h = hashlib.sha256(HASH_VERSION)
    options = json.dumps(job.config.to_dict(), sort_keys=True)
    for part in (digest(job.reference), digest(job.driving), options, extra):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:32]


def partial_name(out: str) -> str:
    """The temporary name an output is written under: hidden, beside it, with its suffix (which picks
    the writer)."""
    folder, name = os.path.split(out)
    stem, suffix = os.path.splitext(name)
    return os.path.join(folder, f".{stem}.partial{suffix}")


def render_job(
    models: PersonaLiveModels,
    job: Job,
    out: str | None = None,
    on_frames: Callable[[int, int | None], None] | None = None,
    log: Callable[[str], None] | None = None,
    decoder: Callable[[Any], Any] | None = None,
) -> RenderResult:
    """Render `job` into `out` (default `job.out`) exactly as `render_video` does; the file gets its name
    only once complete. `on_frames(read, total or None)`: driving frames read so far, after every chunk."""
    out = out or job.out
    if not out.lower().endswith(OUTPUT_SUFFIXES):
        raise InputError(f"output {out}: use a file ending in {', '.join(OUTPUT_SUFFIXES)}")
    source = DrivingSource(job.driving, job.config.max_frames, log=log)
    progress = None if on_frames is None else lambda _chunks, _total: on_frames(source.read, source.estimate)
    tmp = partial_name(out)
    try:
        result = render_video(models, job.reference, source, tmp, job.config, decoder, progress, log)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return replace(result, path=out)
