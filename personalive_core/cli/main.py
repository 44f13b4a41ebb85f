"""`python -m personalive_core`: the arguments of every command and the dispatch to it (`commands`).
Render options are generated from the config (`options.add_config_arguments`); the developer tools
(bench, bench-memory, precision, make-random-weights) bring their own."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ..config import ConfigError
from ..download import DownloadCancelled
from ..errors import DownloadError, InputError, WeightsError
from . import batch as batch_command
from . import live as live_command
from .commands import cmd_bench, cmd_check_weights, cmd_convert, cmd_make_random_weights, cmd_render
from .download import add_parser as add_download
from .options import BENCH_FIELDS, RENDER_FIELDS, add_config_arguments, flag_message, log


def _render(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    r = sub.add_parser("render", help="animate a reference portrait with a driving video")
    r.add_argument("--weights", required=True, help="folder in the official layout (docs/DOWNLOAD.md)")
    r.add_argument("--reference", required=True, help="reference portrait image")
    r.add_argument("--driving", required=True, help="driving video, folder of images, or one image")
    r.add_argument(
        "--out", required=True, help=".mp4 (with the driving audio), .npy (float32 frames) or a folder of PNGs"
    )
    r.add_argument(
        "--taesd",
        metavar="PATH",
        help="decode with TAESD (taesd_decoder.pth/.safetensors or a taesd/ "
        "folder): fast preview quality instead of the SD VAE",
    )
    r.add_argument(
        "--download",
        action="store_true",
        help="first fetch whatever --weights lacks from the Hugging Face Hub (HF_ENDPOINT: a mirror, "
        "HF_TOKEN: a token), verified; nothing when it is complete (docs/DOWNLOAD.md)",
    )
    add_config_arguments(r.add_argument_group("options (docs/CONFIG.md)"), RENDER_FIELDS)
    r.set_defaults(fn=cmd_render)


def _bench(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    b = sub.add_parser("bench", help="measure streaming speed and memory")
    src = b.add_mutually_exclusive_group()
    src.add_argument("--weights", help="folder in the official layout")
    src.add_argument(
        "--random-weights",
        choices=["tiny", "full"],
        default="full",
        help="random weights built in memory (default: full, the published sizes)",
    )
    b.add_argument(
        "--chunks",
        type=int,
        default=None,
        help="timed chunks, after --warmup (default 32; in --suite, of each non-headline run: 16)",
    )
    b.add_argument("--warmup", type=int, default=3)
    b.add_argument(
        "--vae",
        default=None,
        choices=["full", "taesd"],
        help="decoder: full (SD VAE, default) or taesd (--taesd, else <weights>/taesd/, else random)",
    )
    b.add_argument("--taesd", metavar="PATH", help="TAESD decoder weights (implies --vae taesd)")
    b.add_argument(
        "--stages",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="time each stage of a chunk (CUDA events on a GPU; default on)",
    )
    b.add_argument(
        "--overlap",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="CUDA: motion of the next chunk and decode of the previous one on their own CUDA streams, "
        "beside the denoiser (one chunk more latency); the plain loop elsewhere",
    )
    b.add_argument(
        "--compile-decoder",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="torch.compile the decoder network too (no CUDA graphs: it may run beside the step)",
    )
    b.add_argument(
        "--keyframes",
        type=int,
        default=None,
        metavar="N",
        help="force N historical keyframes into the timed chunks (threshold 0); default: the official "
        "test, which synthetic frames rarely pass",
    )
    add_config_arguments(b.add_argument_group("options (docs/CONFIG.md)"), BENCH_FIELDS)
    s_ = b.add_argument_group("suite", "bench --suite: every configuration in one process")
    s_.add_argument(
        "--suite",
        action="store_true",
        help="run every configuration (eager/compiled, fp16/bf16, SD VAE/TAESD, overlap, kernels, fp8) "
        "and a precision run of the fast path against fp32, loading the weights once",
    )
    s_.add_argument(
        "--only",
        metavar="NAMES",
        help="suite: run only these configurations (comma-separated names, "
        "'precision' included); the others are reported as skipped",
    )
    s_.add_argument(
        "--budget-s",
        type=float,
        default=480,
        help="suite: skip the configurations that would not finish within this many seconds",
    )
    s_.add_argument("--headline-chunks", type=int, default=64, help="suite: timed chunks of the headline runs")
    s_.add_argument("--precision-chunks", type=int, default=100, help="suite: chunks of the precision run")
    s_.add_argument(
        "--compile-cache",
        metavar="DIR",
        help="suite: the compiler's cache folder (default: a fresh one, so the first compile is cold)",
    )
    b.set_defaults(fn=cmd_bench)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m personalive_core")
    sub = p.add_subparsers(dest="command", required=True)
    _render(sub)
    add_download(sub)
    c = sub.add_parser("check-weights", help="list the expected files and their key coverage")
    c.add_argument("weights")
    c.set_defaults(fn=cmd_check_weights)
    v = sub.add_parser("convert", help="write .safetensors twins of the .pth/.bin files of a weights folder")
    v.add_argument("weights")
    v.set_defaults(fn=cmd_convert)
    _bench(sub)
    m = sub.add_parser("make-random-weights", help="write seeded random weights in the official layout")
    m.add_argument("dir")
    m.add_argument(
        "--preset",
        choices=["tiny", "comfy", "full"],
        default="tiny",
        help="tiny: smallest models (tests); comfy: small UNets with the full image encoder and "
        "VAE, which ComfyUI's own CLIP Vision and VAE loaders accept; full: the published sizes",
    )
    m.add_argument("--seed", type=int, default=0)
    m.set_defaults(fn=cmd_make_random_weights)
    from ..devtools.bench_batch import add_parser as add_bench_batch
    from ..devtools.bench_memory import add_parser as add_bench_memory
    from ..devtools.precision import add_parser as add_precision

    add_bench_batch(sub)
    add_bench_memory(sub)
    add_precision(sub)
    batch_command.add_parser(sub)
    live_command.add_parser(sub)
    # Listed from the parser itself, so a new command cannot be missing from the help.
    p.description = f"PersonaLive portrait animation: {', '.join(sub.choices)}"
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except ConfigError as e:
        log(f"error: {flag_message(e)}")
        return 2
    except (InputError, WeightsError, FileNotFoundError) as e:
        log(f"error: {e}")
        return 2
    except DownloadCancelled as e:
        log(f"interrupted: {e}")
        return 130
    except DownloadError as e:
        log(f"error: {e}")
        return 1
    except KeyboardInterrupt:
        log("interrupted: frames written so far are kept")
        return 130
