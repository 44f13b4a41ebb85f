"""Inputs travel to the workers as bytes (through Ray's object store), never as paths: the driver reads each
file once, a worker on another machine writes it into its own scratch folder and renders from there.
Outputs come back as bytes and the driver writes them (`write_output`), or, when the output folder is on
storage every machine mounts (`--shared-out`), the worker writes them there itself.

`Digests` gives each input's content digest for the job hash, reading a file only when its size or mtime
differ from what the earlier record says (so a re-run of a finished batch reads no video).
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from ..pipelines import file_digest, input_files, partial_name

DIGESTS_KEPT = 512  # inputs remembered in one run (a portrait shared by every row is hashed once)


@dataclass(frozen=True)
class Shipment:
    """One input as bytes: its files (one, or the frames of a folder) and the driver's path (for messages)."""

    origin: str
    name: str
    files: tuple[tuple[str, bytes], ...]
    folder: bool

    @property
    def size(self) -> int:
        return sum(len(data) for _, data in self.files)


def pack(path: str) -> Shipment:
    """Read an input (a file, or a folder of frames) into a Shipment."""
    files = []
    for name in input_files(path):
        with open(name, "rb") as f:
            files.append((os.path.basename(name), f.read()))
    return Shipment(path, os.path.basename(os.path.normpath(path)), tuple(files), os.path.isdir(path))


def unpack(shipment: Shipment, folder: str) -> str:
    """Write a Shipment into `folder` (a worker's scratch); the path to render from."""
    target = os.path.join(folder, shipment.name)
    if shipment.folder:
        os.makedirs(target, exist_ok=True)
    for name, data in shipment.files:
        with open(os.path.join(target, name) if shipment.folder else target, "wb") as f:
            f.write(data)
    return target


def output_names(out: str, files: list[tuple[str, bytes]]) -> list[str]:
    """Where a job's files go: the first under `out` (with the suffix it was saved with), more as `_1`, `_2`."""
    stem, suffix = os.path.splitext(out)
    names = []
    for i, (saved, _) in enumerate(files):
        ext = os.path.splitext(saved)[1] or suffix
        names.append(f"{stem}{ext}" if i == 0 else f"{stem}_{i}{ext}")
    return names


def write_output(folder: str, name: str, data: bytes) -> str:
    """Bytes into `folder/name`, under a temporary name until complete. The temporary name is the writer's
    own (host and pid): on shared storage a job sent again while its first worker still writes gets a second
    temporary file, and whichever rename comes last leaves a complete file."""
    path = os.path.join(folder, name)
    tmp = f"{partial_name(path)}.{socket.gethostname()}-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def stat_of(path: str) -> str:
    """Size and modification time of an input's files: what says a file changed without reading it."""
    stats = [f"{os.path.basename(p)}:{s.st_size}:{s.st_mtime_ns}" for p in input_files(path) for s in [os.stat(p)]]
    return stats[0] if len(stats) == 1 else hashlib.sha1("|".join(stats).encode()).hexdigest()


class Digests:
    """Content digests of inputs, each computed once per (path, stat), or taken from an earlier record."""

    def __init__(self) -> None:
        self.known: OrderedDict[tuple[str, str], str] = OrderedDict()

    def remember(self, inputs: Any) -> None:
        """Seed from a record's `inputs` ({"reference": {"path", "stat", "sha256"}, ...})."""
        for item in (inputs or {}).values():
            if isinstance(item, dict) and {"path", "stat", "sha256"} <= item.keys():
                self._keep((item["path"], item["stat"]), item["sha256"])

    def __call__(self, path: str) -> str:
        return self.describe(path)["sha256"]

    def describe(self, path: str) -> dict[str, str]:
        """{"path", "stat", "sha256"} of an input, reading it only when it is new or changed."""
        key = (path, stat_of(path))
        digest = self.known.get(key)
        if digest is None:
            digest = file_digest(path)
        self._keep(key, digest)
        return {"path": path, "stat": key[1], "sha256": digest}

    def _keep(self, key: tuple[str, str], digest: str) -> None:
        self.known[key] = digest
        self.known.move_to_end(key)
        while len(self.known) > DIGESTS_KEPT:
            self.known.popitem(last=False)
