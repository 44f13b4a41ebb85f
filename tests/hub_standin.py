"""A Hugging Face Hub stand-in for tests: the hub's resolve URLs on 127.0.0.1, LFS files handed to a second
server (the "CDN") addressed by another host name (`localhost`) and port, as the real hub hands them over.

Hub: HEAD/GET /{org}/{name}/resolve/{revision}/{path}
  - LFS files (weights): 302 to the CDN with X-Linked-Etag (the sha256, quoted), X-Linked-Size, X-Repo-Commit
  - small files: 200 with ETag (the git blob sha1, quoted), X-Repo-Commit, Content-Length; Range honoured
  - 401 without the right token when `token` is set; 404 with X-Error-Code for unknown repositories,
    revisions and files (and for the keys in `missing`)
CDN: HEAD/GET /{sha256}?sig=... with Range; 400 for any request carrying Authorization (as S3 answers).
Faults: `cut_once[key] = offset` ends the next transfer of that file after byte `offset` (once);
`corrupt` serves its files with one byte flipped; `chunk_delay` slows every body (concurrency tests).
Keys are "org/name/path". `log` holds every request (server, method, path, Range, Authorization present).
Files are served from `root/org/name/path`, a folder laid out like the hub's repositories, streamed from disk
(ComfyUI's own loaders need the full-size image encoder and VAE: about 0.9 GB); their hashes are computed once
per file version.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

LFS_SUFFIXES = (".pth", ".bin", ".safetensors", ".ckpt")


@dataclass(frozen=True)
class Hit:
    server: str  # "hub" or "cdn"
    method: str
    path: str  # the URL path, unquoted, without the query
    range: str | None
    auth: bool
    status: int


@dataclass(frozen=True)
class _Blob:
    key: str
    path: Path
    size: int
    sha256: str


def _hash(path: Path, digest: Any) -> str:  # a hashlib object
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class _Quiet(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client closing early (the cut, the cancel tests) is expected


class HubStandIn:
    def __init__(
        self, root: str | Path, *, token: str | None = None, chunk_delay: float = 0.0, cdn_host: str = "localhost"
    ) -> None:
        self.root = Path(root)
        self.token = token
        self.chunk_delay = chunk_delay
        self.cdn_host = cdn_host
        self.cut_once: dict[str, int] = {}
        self.corrupt: set[str] = set()
        self.missing: set[str] = set()
        self.log: list[Hit] = []
        self._lock = threading.Lock()
        self._hub = _Quiet(("127.0.0.1", 0), self._handler("hub"))
        self._cdn = _Quiet((cdn_host, 0), self._handler("cdn"))
        self._threads: list[threading.Thread] = []
        self._shas: dict[Path, tuple[tuple[int, int], str]] = {}  # path -> ((mtime, size), sha256)

    # -- life ---------------------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._hub.server_address[1]}"

    @property
    def cdn(self) -> str:
        return f"http://{self.cdn_host}:{self._cdn.server_address[1]}"

    def start(self) -> HubStandIn:
        for server in (self._hub, self._cdn):
            t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        for server in (self._hub, self._cdn):
            server.shutdown()
            server.server_close()
        for t in self._threads:
            t.join(5)

    # -- what tests look at -------------------------------------------------------------------------------
    @staticmethod
    def commit(repo: str) -> str:
        return hashlib.sha1(repo.encode()).hexdigest()

    def blob(self, key: str) -> _Blob | None:
        path = self.root / key
        return _Blob(key, path, path.stat().st_size, self._sha256(path)) if path.is_file() else None

    def _sha256(self, path: Path) -> str:
        st = path.stat()
        with self._lock:
            known = self._shas.get(path)
        if known is None or known[0] != (st.st_mtime_ns, st.st_size):
            known = ((st.st_mtime_ns, st.st_size), _hash(path, hashlib.sha256()))
            with self._lock:
                self._shas[path] = known
        return known[1]

    def hits(self, server: str | None = None, method: str | None = None, key: str | None = None) -> list[Hit]:
        """Requests, filtered; `key` ("org/name/path") matches the hub's requests of that file and the CDN's
        requests of its sha256."""
        with self._lock:
            log = list(self.log)
        if key is not None:
            org, name, path = key.split("/", 2)
            blob = self.blob(key)
            cdn_path = f"/{blob.sha256}" if blob else None
            log = [
                h
                for h in log
                if h.path == cdn_path or (h.path.startswith(f"/{org}/{name}/resolve/") and h.path.endswith("/" + path))
            ]
        return [h for h in log if (server is None or h.server == server) and (method is None or h.method == method)]

    def clear_log(self) -> None:
        with self._lock:
            self.log.clear()

    # -- serving ------------------------------------------------------------------------------------------
    def _find_sha(self, sha: str) -> _Blob | None:
        for path in self.root.rglob("*"):
            if path.is_file() and path.suffix in LFS_SUFFIXES and self._sha256(path) == sha:
                return self.blob(path.relative_to(self.root).as_posix())
        return None

    def _handler(self, server: str) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self._route()

            def do_GET(self) -> None:
                self._route()

            def _route(self) -> None:
                if server == "hub":
                    standin._hub_request(self)
                else:
                    standin._cdn_request(self)

        return Handler

    def _hit(self, h: BaseHTTPRequestHandler, server: str, status: int) -> None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(h.path).path)
        with self._lock:
            self.log.append(Hit(server, h.command, path, h.headers.get("Range"), "Authorization" in h.headers, status))

    def _error(self, h: BaseHTTPRequestHandler, server: str, status: int, code: str, message: str) -> None:
        self._hit(h, server, status)
        body = message.encode()
        h.send_response(status)
        h.send_header("X-Error-Code", code)
        h.send_header("X-Error-Message", message)
        h.send_header("Content-Type", "text/plain")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command == "GET":
            h.wfile.write(body)

    def _hub_request(self, h: BaseHTTPRequestHandler) -> None:
        parts = [urllib.parse.unquote(p) for p in urllib.parse.urlsplit(h.path).path.lstrip("/").split("/")]
        if len(parts) < 5 or parts[2] != "resolve":
            return self._error(h, "hub", 404, "RepoNotFound", "no such route")
        repo, revision, path = f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:])
        if self.token is not None and h.headers.get("Authorization") != f"Bearer {self.token}":
            return self._error(h, "hub", 401, "GatedRepo", f"Access to {repo} is restricted: log in")
        if not (self.root / repo).is_dir():
            return self._error(h, "hub", 404, "RepoNotFound", f"Repository {repo} not found")
        if revision not in ("main", self.commit(repo)):
            return self._error(h, "hub", 404, "RevisionNotFound", f"Invalid rev id: {revision}")
        key = f"{repo}/{path}"
        blob = None if key in self.missing else self.blob(key)
        if blob is None:
            return self._error(h, "hub", 404, "EntryNotFound", f"{path} does not exist at {revision}")
        common = {"X-Repo-Commit": self.commit(repo)}
        if Path(path).suffix in LFS_SUFFIXES:
            location = f"{self.cdn}/{blob.sha256}?sig=stand-in-{int(time.time())}"
            body = f"Found. Redirecting to {location}".encode()
            self._hit(h, "hub", 302)
            h.send_response(302)
            for name, value in {
                **common,
                "Location": location,
                "X-Linked-Etag": f'"{blob.sha256}"',
                "X-Linked-Size": str(blob.size),
                "Content-Length": str(len(body)),
            }.items():
                h.send_header(name, value)
            h.end_headers()
            if h.command == "GET":
                h.wfile.write(body)
            return None
        git_sha1 = _hash(blob.path, hashlib.sha1(b"blob %d\0" % blob.size))  # small files only
        self._send(h, "hub", blob, {**common, "ETag": f'"{git_sha1}"'})
        return None

    def _cdn_request(self, h: BaseHTTPRequestHandler) -> None:
        if "Authorization" in h.headers:  # a client that forwards the hub token to the CDN
            return self._error(h, "cdn", 400, "InvalidArgument", "Only one auth mechanism allowed")
        url = urllib.parse.urlsplit(h.path)
        if "sig=" not in url.query:
            return self._error(h, "cdn", 403, "AccessDenied", "unsigned request")
        blob = self._find_sha(url.path.lstrip("/"))
        if blob is None:
            return self._error(h, "cdn", 404, "NoSuchKey", "no such object")
        # S3 answers an md5 here, never the sha256: an md5-shaped tag that is not it (no second pass over the file)
        self._send(h, "cdn", blob, {"ETag": f'"{hashlib.md5(blob.sha256.encode()).hexdigest()}"'})
        return None

    def _send(self, h: BaseHTTPRequestHandler, server: str, blob: _Blob, headers: dict[str, str]) -> None:
        size, start, end, status = blob.size, 0, blob.size - 1, 200
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", (h.headers.get("Range") or "").strip())
        if m:
            start = int(m[1])
            end = min(int(m[2]), size - 1) if m[2] else size - 1
            if start >= size:
                self._hit(h, server, 416)
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{size}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            status = 206
        self._hit(h, server, status)
        h.send_response(status)
        for name, value in headers.items():
            h.send_header(name, value)
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("Content-Length", str(end + 1 - start))
        if status == 206:
            h.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        h.end_headers()
        if h.command == "HEAD":
            return
        flip = size // 2 if blob.key in self.corrupt else None
        with self._lock:
            cut = self.cut_once.pop(blob.key, None) if blob.key in self.cut_once and h.command == "GET" else None
        stop = end + 1 if cut is None or not start < cut <= end else cut
        try:
            with blob.path.open("rb") as f:
                f.seek(start)
                for offset in range(start, stop, 1 << 16):
                    data = bytearray(f.read(min(1 << 16, stop - offset)))
                    if flip is not None and offset <= flip < offset + len(data):
                        data[flip - offset] ^= 0xFF
                    h.wfile.write(data)
                    if self.chunk_delay:
                        time.sleep(self.chunk_delay)
            h.wfile.flush()
        except ConnectionError:
            pass  # the client stopped reading (a cancel)
        if stop != end + 1:
            h.close_connection = True  # the connection ends short of Content-Length
