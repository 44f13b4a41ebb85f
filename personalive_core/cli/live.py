"""`python -m personalive_core live`: the live page (the ComfyUI node's widget: camera in, animated portrait
out, options, portrait swap, Prepare, takes, output page) and its websocket, served without ComfyUI
(`personalive_core.live.make_app`). The process is the server's own: it applies the process settings."""

from __future__ import annotations

import argparse

import numpy as np

from .. import pipelines
from ..config import preset
from ..live import TARGET, LiveEngine, TakeFolder, check_address, make_app, serve
from ..runtime import process_settings
from .options import SPEED_FIELDS, add_config_arguments, config_from_args, log

# what a live stream may set: the size, the device, the stream's options and the speed options
LIVE_FIELDS = (
    "size",
    "seed",
    "device",
    "dtype",
    "crop",
    "paste_into",
    "crop_scale",
    "feather",
    "expression",
    "head_pose",
    "smoothness",
    "keyframe_threshold",
    "max_keyframes",
    "first_keyframe_chunk",
    "official_quirks",
    *SPEED_FIELDS,
)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("live", help="serve the live page (camera in, animated portrait out) without ComfyUI")
    p.add_argument("--weights", required=True, help="folder in the official layout (docs/DOWNLOAD.md)")
    p.add_argument(
        "--reference",
        required=True,
        help="the portrait to animate (its face is cropped; others can be dropped onto the page while live)",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: loopback only; any other address needs --token)",
    )
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    p.add_argument(
        "--token",
        metavar="SECRET",
        help="every request must carry ?token=SECRET (the page passes it on to its sockets); required off loopback",
    )
    p.add_argument(
        "--tls-cert",
        metavar="PEM",
        help="serve HTTPS with this certificate (browsers grant the camera off loopback only to a secure page)",
    )
    p.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    p.add_argument(
        "--takes",
        metavar="DIR",
        help="record takes (the page's Rec button) into DIR as live_00001_.mp4, …; without it recording is off",
    )
    p.add_argument("--max-sessions", type=int, default=2, help="live streams served at once (default 2)")
    add_config_arguments(p.add_argument_group("options (docs/CONFIG.md)"), LIVE_FIELDS, preset("live"))
    p.set_defaults(fn=cmd_live)


def cmd_live(a: argparse.Namespace) -> None:
    tls = check_address(a.host, a.token, a.tls_cert, a.tls_key)  # before minutes of loading
    config = config_from_args(a, LIVE_FIELDS, preset("live"))
    where = pipelines.placement(config)
    config = config.replace(**where.speed.to_dict())
    with process_settings(config.speed, log) as speed:
        config = config.replace(reuse_memory=speed.reuse_memory)
        log(f"loading weights from {a.weights} ({where.device}, {str(where.dtype).split('.')[-1]})")
        models = pipelines.load_models(a.weights, config)
        portrait = np.asarray(pipelines.load_image(a.reference))
        engine = LiveEngine(max_streams=a.max_sessions)
        engine.set_target(TARGET, pipelines.core_target(models, portrait, config, log))
        takes = TakeFolder(a.takes, "live") if a.takes else None
        serve(make_app(engine, takes, a.token), a.host, a.port, tls, a.token, log)
