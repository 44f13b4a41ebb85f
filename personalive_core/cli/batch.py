"""`python -m personalive_core batch`: many jobs on Ray (docs/BATCH.md). The options of every row default to the
flags generated from the config; the JSON summary is the last line on stdout."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os

from .. import batch
from ..errors import InputError
from .options import RENDER_FIELDS, add_config_arguments, config_from_args, log

INSTALL = (
    "the batch command needs Ray, which the node pack does not install: "
    ".venv/bin/pip install -r requirements-batch.txt (or pip install 'comfyui-personalive[batch]')"
)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    b = sub.add_parser(
        "batch",
        help="render many jobs on Ray, on this machine or a cluster (docs/BATCH.md)",
        description="Render every row of MANIFEST (CSV or JSONL: reference, driving, optional out and "
        "any option by its config name), or --reference × every video of --driving.",
    )
    b.add_argument("manifest", nargs="?", help="CSV or JSONL manifest, one job a row (paths relative to its folder)")
    b.add_argument("--reference", help="instead of a manifest: a portrait (or a folder of them) ...")
    b.add_argument("--driving", help="... × every video of this folder (or one video)")
    b.add_argument("--out", required=True, metavar="DIR", help="output folder; results.jsonl there records each row")
    b.add_argument(
        "--shared-out",
        action="store_true",
        help="--out is on storage every machine of the cluster mounts at the same path (NFS, a cluster file "
        "system): the workers write the clips there themselves instead of sending them to the driver",
    )
    b.add_argument(
        "--engine",
        choices=("core", "comfyui"),
        default="core",
        help="core: the models in each worker (default); comfyui: a ComfyUI server per worker",
    )
    b.add_argument("--weights", help="core: weights folder in the official layout, at this path on every machine")
    b.add_argument(
        "--download",
        action="store_true",
        help="core: every machine first fetches what --weights lacks there (verified, resumable, one "
        "fetch per machine; HF_ENDPOINT and HF_TOKEN from the workers' environment)",
    )
    r = b.add_argument_group("cluster")
    r.add_argument(
        "--address",
        help="join a running cluster: auto, HOST:PORT or ray://HOST:PORT (default: start Ray on this machine)",
    )
    r.add_argument("--workers", type=int, metavar="N", help="N CPU workers (default: one per GPU; 1 without GPUs)")
    r.add_argument("--gpus", type=int, metavar="N", help="N GPU workers (default: every GPU of the cluster)")
    r.add_argument("--cpus-per-worker", type=int, default=1, metavar="N", help="CPU threads of a CPU worker")
    r.add_argument(
        "--in-flight", type=int, metavar="N", help="jobs shipped and not finished at most (default: 2 per worker)"
    )
    r.add_argument("--retries", type=int, default=2, help="times a job is sent again after its worker died (default 2)")
    r.add_argument("--max-restarts", type=int, default=3, help="times Ray restarts a dead worker (default 3)")
    r.add_argument("--object-store-mb", type=int, metavar="MB", help="embedded Ray: object store size")
    j = b.add_argument_group("resuming")
    j.add_argument("--retry-failed", action="store_true", help="run the jobs that failed in an earlier run again")
    j.add_argument("--strict", action="store_true", help="refuse the whole batch when a row is bad")
    c = b.add_argument_group("comfyui engine")
    c.add_argument("--workflow", help="API-format workflow (e.g. workflows/api/personalive_portrait_to_video.json)")
    c.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NODE.INPUT=VALUE",
        help="set a workflow input for every job (NODE: a node id or a class_type)",
    )
    c.add_argument("--comfyui", metavar="PATH", help="ComfyUI checkout each worker starts its own server from")
    c.add_argument("--comfyui-python", default="python3", metavar="PY", help="ComfyUI's Python (default python3)")
    c.add_argument(
        "--comfyui-args",
        default="",
        metavar="ARGS",
        help='more arguments for each server, e.g. "--base-directory /data/comfy"',
    )
    c.add_argument(
        "--server",
        action="append",
        default=[],
        metavar="URL",
        help="attach to a running ComfyUI instead (repeat: one worker per server)",
    )
    c.add_argument("--poll", type=float, default=1.0, help="seconds between status requests (default 1)")
    c.add_argument("--job-timeout", type=float, default=0, help="seconds a job may take on a server (0: no limit)")
    add_config_arguments(
        b.add_argument_group("options of every row (docs/CONFIG.md); a row's own values win"), RENDER_FIELDS
    )
    b.set_defaults(fn=cmd_batch)


def settings_from_args(a: argparse.Namespace) -> batch.BatchSettings:
    """The batch's settings; InputError for a combination that cannot work."""
    if bool(a.manifest) == bool(a.reference or a.driving) or bool(a.reference) != bool(a.driving):
        raise InputError("give a MANIFEST, or --reference and --driving (one portrait × every video)")
    if a.engine == "core" and not a.weights:
        raise InputError("the core engine needs --weights DIR (docs/DOWNLOAD.md)")
    if a.engine == "comfyui" and (not a.workflow or bool(a.comfyui) == bool(a.server)):
        raise InputError(
            "the comfyui engine needs --workflow, and --comfyui PATH (a server per worker) or --server "
            "URL (one worker per running server)"
        )
    if a.download and a.engine != "core":
        raise InputError(
            "--download fetches the core engine's --weights; a ComfyUI server fetches its own models "
            "(Download models on Load PersonaLive Model, docs/DOWNLOAD.md)"
        )
    if a.engine == "core" and (a.workflow or a.comfyui or a.server or a.set):
        raise InputError("--workflow, --set, --comfyui and --server are for --engine comfyui")
    config_from_args(a, RENDER_FIELDS)  # a bad flag is said as the flag
    options = {n: getattr(a, n) for n in RENDER_FIELDS if getattr(a, n, None) is not None}
    return batch.BatchSettings(
        out=a.out,
        manifest=a.manifest,
        reference=a.reference,
        driving=a.driving,
        engine=a.engine,
        options=options,
        weights=a.weights and os.path.abspath(a.weights),
        download=a.download,
        shared_out=a.shared_out,
        workflow=a.workflow,
        sets=batch.parse_sets(a.set),
        comfyui=a.comfyui,
        comfyui_python=a.comfyui_python,
        comfyui_args=a.comfyui_args,
        servers=a.server,
        poll=a.poll,
        job_timeout=a.job_timeout,
        address=a.address,
        workers=a.workers,
        gpus=a.gpus,
        cpus_per_worker=a.cpus_per_worker,
        in_flight=a.in_flight,
        retries=a.retries,
        max_restarts=a.max_restarts,
        object_store_mb=a.object_store_mb,
        retry_failed=a.retry_failed,
        strict=a.strict,
    )


def cmd_batch(a: argparse.Namespace) -> int:
    if importlib.util.find_spec("ray") is None:
        log(f"error: {INSTALL}")
        return 2
    summary = batch.run_batch(settings_from_args(a), log)
    print(json.dumps(summary), flush=True)
    if summary["error"]:
        return 2
    if summary["interrupted"]:
        return 130
    return 1 if summary["failed"] or summary["invalid"] else 0
