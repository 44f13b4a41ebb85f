"""What a download reports: the per-file outcome, the errors, and messages a user can act on (the URL, the
HTTP status, the environment variables and the manual route)."""

from __future__ import annotations

import http.client
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DownloadError
from .sources import PlannedFile
from .transport import NetFailure, Reply


DOCS = "docs/DOWNLOAD.md"


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
            parts = ", ".join(f"{name}.part ({human_size(n)})" for name, n in report.partial.items())
            lines.append(f"Partial files kept for resuming: {parts}; run the download again to continue.")
        super().__init__("\n".join(lines))
        self.report = report


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


def status_error(file: PlannedFile, reply: Reply, endpoint: str, token: str | None) -> DownloadError:
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


def network_error(
    file: PlannedFile, failure: NetFailure, endpoint: str, token: str | None, kept: int = 0
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
        lines.insert(2, f"  {human_size(kept)} kept in {file.part}: run again to resume")
    return NetworkError("\n".join(lines), url=failure.url)


def human_size(n: float) -> str:
    """Decimal units, as the hub shows sizes."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


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
            f"{len(self.fetched)} fetched ({human_size(self.bytes_transferred)})",
            f"{len(self.reused)} from the Hugging Face cache",
            f"{len(self.present)} already present",
            f"{len(self.failed)} failed",
        ]
        return f"{self.root}: " + ", ".join(counts)
