"""`python -m personalive_core download`: the published weights into a folder in the official layout (what
`render --weights DIR` and `check-weights DIR` take) or into a ComfyUI folder (`--comfyui`), and the fetch of
`render --download`. The work is personalive_core.download's (sources, sizes, mirrors: docs/DOWNLOAD.md)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable

from .. import download, pipelines
from ..errors import WeightsMissing
from .options import log

HINT = (
    "fetch them with --download (this command again, with --download added), or beforehand with "
    "`python -m personalive_core download {dir}` (mirror: HF_ENDPOINT; manual route: docs/DOWNLOAD.md)"
)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    d = sub.add_parser(
        "download",
        help="fetch the published weights from the Hugging Face Hub (docs/DOWNLOAD.md)",
        description="Fetch, verify (size, sha256) and record the published weights; interrupted "
        "files resume, files already there and verified are not fetched again. Exit "
        "status: 0 all present and verified, 1 a download failed (finished files are "
        "kept), 2 bad arguments.",
    )
    where = d.add_mutually_exclusive_group(required=True)
    where.add_argument("dir", nargs="?", help="folder to write in the official layout (render --weights DIR)")
    where.add_argument(
        "--comfyui",
        metavar="COMFYUI_DIR",
        help="a ComfyUI folder instead: fills models/personalive/, models/clip_vision/ and models/vae/ "
        "(models/vae_approx/ for taesd) under the names the bundled workflows select",
    )
    d.add_argument(
        "--only",
        metavar="COMPONENTS",
        help=f"comma-separated components: {', '.join(download.COMPONENTS)} or all (default: "
        f"{','.join(download.DEFAULT_COMPONENTS)}; base_unet, 3.4 GB, only in the official layout)",
    )
    d.add_argument(
        "--endpoint",
        metavar="URL",
        help=f"the hub or a mirror (default: HF_ENDPOINT, else {download.DEFAULT_ENDPOINT})",
    )
    d.add_argument(
        "--revision",
        metavar="REV",
        help=f"branch, tag or commit of every repository (default: {download.DEFAULT_REVISION})",
    )
    d.add_argument(
        "--token",
        metavar="TOKEN",
        help="Hugging Face read token (default: HF_TOKEN, else the login file of `hf auth login`)",
    )
    d.set_defaults(fn=cmd_download)


def cmd_download(a: argparse.Namespace) -> int:
    layout, target = ("comfyui", a.comfyui) if a.comfyui else ("official", a.dir)
    report = fetch(
        target, layout, download.parse_components(a.only), endpoint=a.endpoint, token=a.token, revision=a.revision
    )
    log(report.summary())
    if layout == "official":
        log(f"check: python -m personalive_core check-weights {target}; use: render --weights {target}")
    else:
        log("a ComfyUI already running lists the new files after Refresh Node Definitions (key R)")
    return 0


def fetch(
    target: str | os.PathLike[str],
    layout: str = "official",
    components: Iterable[str] | None = None,
    files: Iterable[str] | None = None,
    **hub: str | None,
) -> download.DownloadReport:
    """download.download with a progress bar per file and the log on stderr. DownloadError when a file
    failed (its message says what was kept); Ctrl-C becomes DownloadCancelled (partial files kept)."""
    try:
        return download.download(
            target, layout, components, files=files, progress=download.TextProgress(), log=log, **hub
        )
    except KeyboardInterrupt:
        raise download.DownloadCancelled(
            "finished files are kept, and a partial one resumes: run the same command again"
        ) from None


def ensure_weights(weights: str, fetch_missing: bool) -> None:
    """Before `render` loads `weights`: with `fetch_missing`, download what the folder lacks (nothing, and no
    network, when it is complete); without, stop naming the lacking files and how to fetch them."""
    lacking = pipelines.lacking_weights(weights)
    if not lacking:
        return
    if not fetch_missing:
        names = ", ".join(f.rel for f in lacking)
        raise WeightsMissing(f"{weights}: missing {names}; " + HINT.format(dir=weights))
    try:
        pipelines.fetch_lacking_weights(weights, download.TextProgress(), log)
    except KeyboardInterrupt:
        raise download.DownloadCancelled(
            "finished files are kept, and a partial one resumes: run the same command again"
        ) from None


def missing_hint(error: WeightsMissing, weights: str) -> WeightsMissing:
    """The loader's missing-file error with the way to fetch the files."""
    return WeightsMissing(f"{error}; " + HINT.format(dir=weights))
