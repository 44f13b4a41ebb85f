"""The download itself: each planned file taken from disk, the Hugging Face cache or the hub (resumed with
HTTP Range into `<name>.part`, verified, then renamed), under its lock."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import http.client
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from ..errors import DownloadError, InputError
from .disk import existing_ancestor, check_free_space
from .hub import offline, hf_cache_dir, resolve_endpoint, resolve_token
from .record import FileLock, LOCK_SUFFIX, Record
from .report import (
    DOCS,
    DownloadCancelled,
    DownloadFailed,
    DownloadReport,
    NetworkError,
    human_size,
    network_error,
    status_error,
)
from .sources import PlannedFile, layout_root, plan
from .transport import Remote, Client, NetFailure, etag_value, has_hub_headers, as_int, is_sha256


CHUNK = 1 << 20
RETRY_WAIT_S = 1.0  # × the attempt number, between resumes of a broken transfer
Progress = Callable[[str, int, int], None]
Cancel = Callable[[], bool] | threading.Event
Log = Callable[[str], None]


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
    return as_int(words[1].split("-")[0]) if len(words) == 2 and words[0] == "bytes" else None


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
        self.client = Client(endpoint, token, timeout)
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
                reply = self.client.open("HEAD", url, follow=lambda r: not has_hub_headers(r))
                break
            except NetFailure as failure:
                if not failure.transient or attempt == self.retries:
                    raise network_error(file, failure, self.client.endpoint, self.client.token) from None
                time.sleep(RETRY_WAIT_S * (attempt + 1))
        reply.close()
        if reply.status >= 400 or (reply.status >= 300 and not has_hub_headers(reply)):
            raise status_error(file, reply, self.client.endpoint, self.client.token)
        linked = etag_value(reply.header("X-Linked-Etag"))
        size = as_int(reply.header("X-Linked-Size"))
        if size is None and reply.status < 300:
            size = as_int(reply.header("Content-Length"))
        return Remote(
            url,
            size,
            linked.lower() if linked and is_sha256(linked) else None,
            linked or etag_value(reply.header("ETag")),
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
            self.log(f"{file.rel}: resuming at {human_size(partial.size)}")
        self.progress(file.rel, partial.size, remote.size or 0)
        while True:
            try:
                state = self.get_into(file, remote, partial, lock)
                if state == "restart":
                    continue
                if remote.size is None or partial.size >= remote.size:
                    break
                raise NetFailure(remote.url, "the connection closed before the end of the file")
            except NetFailure as failure:
                attempt += 1
                if not failure.transient or attempt > self.retries:
                    raise network_error(file, failure, self.client.endpoint, self.client.token, partial.size) from None
                self.log(
                    f"{file.rel}: {failure.cause}; resuming at {human_size(partial.size)} "
                    f"(try {attempt} of {self.retries})"
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
                raise status_error(file, reply, self.client.endpoint, self.client.token)
            total = (
                remote.size if remote.size is not None else partial.size + (as_int(reply.header("Content-Length")) or 0)
            )
            file.part.parent.mkdir(parents=True, exist_ok=True)
            with file.part.open("ab") as out:
                while True:
                    self.check_cancel(f"the transfer of {file.rel}")
                    try:
                        chunk = reply.read(CHUNK)
                    except (OSError, http.client.HTTPException) as e:
                        raise NetFailure(reply.url, e) from e
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
        if entry and entry.get("size") == size and is_sha256(entry.get("sha256")):
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
                if cached.stat().st_dev == existing_ancestor(file.dest).stat().st_dev:
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
    if todo and offline():
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
