"""Where the hub is, who we are, and where its cache lives: the environment variables huggingface_hub reads
(HF_ENDPOINT, HF_TOKEN, HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE)."""

from __future__ import annotations

import contextlib
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ..errors import InputError


DEFAULT_ENDPOINT = "https://huggingface.co"


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


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")
