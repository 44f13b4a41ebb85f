"""HTTP with the standard library: redirects followed by hand, so the Authorization header never leaves the
endpoint's host (LFS files answer with a 302 to a CDN; the X-Linked-* headers are on the 302)."""

from __future__ import annotations

import contextlib
import email.message
import http.client
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any


USER_AGENT = "personalive-download/1 (python urllib)"
MAX_REDIRECTS = 10
_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})


class NetFailure(Exception):
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
        return None  # the 3xx comes back to Client.open as an answer


@dataclass
class Reply:
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


def _send(method: str, url: str, headers: Mapping[str, str], timeout: float) -> Reply:
    # a fresh opener each time: its ProxyHandler reads HTTP(S)_PROXY / NO_PROXY as they are now
    opener = urllib.request.build_opener(_NoRedirects)
    request = urllib.request.Request(url, method=method, headers=dict(headers))
    try:
        response = opener.open(request, timeout=timeout)
    except urllib.error.HTTPError as e:  # any status but 2xx, redirects included
        return Reply(url, e.code, e.headers, e)
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
        raise NetFailure(url, e) from e
    return Reply(url, int(response.status), response.headers, response)


@dataclass
class Client:
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
        follow: Callable[[Reply], bool] = lambda reply: True,
    ) -> Reply:
        for _ in range(MAX_REDIRECTS + 1):
            reply = _send(method, url, self.headers(url, extra or {}), self.timeout)
            location = reply.header("Location")
            if reply.status not in _REDIRECT_CODES or not location or not follow(reply):
                return reply
            reply.close()
            url = urllib.parse.urljoin(url, location)
        raise NetFailure(url, f"more than {MAX_REDIRECTS} redirects")


def etag_value(value: str | None) -> str | None:
    if not value:
        return None
    value = value.strip()
    return value.removeprefix("W/").strip('"') or None


def is_sha256(value: str | None) -> bool:
    return value is not None and len(value) == 64 and all(c in "0123456789abcdef" for c in value.lower())


def as_int(value: str | None) -> int | None:
    if value is None:
        return None
    with contextlib.suppress(ValueError):
        return int(value)
    return None


def has_hub_headers(reply: Reply) -> bool:
    return reply.header("X-Linked-Etag") is not None or reply.header("X-Repo-Commit") is not None


@dataclass(frozen=True)
class Remote:
    """What the hub says of a file (HEAD): its size, its sha256 (LFS files) and the commit it is at."""

    url: str  # the resolve URL: fetched again with GET, since CDN links expire
    size: int | None
    sha256: str | None
    etag: str | None
    commit: str | None
