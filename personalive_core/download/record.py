"""What is on disk: the record of what was fetched (repo, revision, sha256, size per file), the per-file lock
that makes two processes fetching one file safe, and the state of a planned file."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


from .report import DownloadCancelled
from .sources import PlannedFile


RECORD_NAME = ".personalive-download.json"
LOCK_SUFFIX = ".lock"
_HAVE_FLOCK = importlib.util.find_spec("fcntl") is not None


def local_state(file: PlannedFile, record: Record | None = None) -> str:
    """'verified' (there, as recorded), 'unverified' (there, not recorded), 'partial' (a .part) or 'missing'."""
    record = record or Record(file.root)
    if record.verified(file):
        return "verified"
    if file.dest.is_file():
        return "unverified"
    return "partial" if file.part.is_file() else "missing"


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
