"""The arguments of `python -m personalive_core` and the dispatch to its commands (`commands`,
`bench_memory`, `precision`)."""
import argparse

from ..errors import InputError, WeightsError
from ..media.footage import CROP_MODES
from .commands import cmd_bench, cmd_check_weights, cmd_convert, cmd_make_random_weights, cmd_render
from .options import DTYPES, add_speed_arguments, add_weights_source, log


def parser():
    p = argparse.ArgumentParser(prog="python -m personalive_core", description="PersonaLive portrait animation: "
                                "render, bench, bench-memory, precision, check-weights, make-random-weights, convert")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render", help="animate a reference portrait with a driving video")
    r.add_argument("--weights", required=True, help="folder in the official layout (see README)")
    r.add_argument("--reference", required=True, help="reference portrait image")
    r.add_argument("--driving", required=True, help="driving video, folder of images, or one image")
    r.add_argument("--out", required=True, help=".mp4 (with the driving audio), .npy (float32 frames) or a folder of PNGs")
    r.add_argument("--size", type=int, default=512, help="generation size (square), multiple of 64")
    r.add_argument("--frames", type=int, default=None, help="render only the first N driving frames")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    r.add_argument("--dtype", default="auto", choices=["auto", *DTYPES])
    r.add_argument("--keep-warmup", action="store_true", help="output the 12 warm-up frames first (official online behaviour)")
    r.add_argument("--no-official-quirks", action="store_true", help="skip the official code's fp16 roundings")
    r.add_argument("--crop", default="center", choices=CROP_MODES,
                   help="auto: square face crops of the reference and of every driving frame (face tracked and "
                        "smoothed), for footage of any size and aspect; center: resize the reference, centre-crop "
                        "the driving frames")
    r.add_argument("--paste-back", action="store_true",
                   help="with --crop auto: paste every generated face back into the original reference (or, with "
                        "--paste-into driving, the original driving frame) at its original size, feathered")
    r.add_argument("--paste-into", choices=["reference", "driving"], default=None,
                   help="what --paste-back pastes into (default reference; implies --paste-back)")
    r.add_argument("--crop-scale", type=float, default=1.75, help="crop side / detected face side (default 1.75)")
    r.add_argument("--feather", type=float, default=0.2, help="paste-back mask ramp, fraction of the crop radius")
    r.add_argument("--expression", type=float, default=1.0, metavar="A",
                   help="expression strength α, 0–2: motion tokens = reference + α·(driving − reference); 1 = as "
                        "driven, 0 = the reference's expression (README: Motion controls)")
    r.add_argument("--head-pose", type=float, default=1.0, metavar="B",
                   help="head-pose strength β, 0–2: rotation and translation = reference + β·(driving − reference); "
                        "0 locks the head in the reference pose while the expression follows")
    r.add_argument("--smoothness", type=float, default=0.0, metavar="S",
                   help="temporal smoothing of head pose and expression, 0–1 (causal one-euro filter; 0 = off)")
    r.add_argument("--taesd", metavar="PATH", help="decode with TAESD (taesd_decoder.pth/.safetensors or a taesd/ "
                                                   "folder): fast preview quality instead of the SD VAE")
    add_speed_arguments(r)
    r.set_defaults(fn=cmd_render)
    c = sub.add_parser("check-weights", help="list the expected files and their key coverage")
    c.add_argument("weights")
    c.set_defaults(fn=cmd_check_weights)
    m = sub.add_parser("make-random-weights", help="write seeded random weights in the official layout")
    m.add_argument("dir")
    m.add_argument("--preset", choices=["tiny", "comfy", "full"], default="tiny",
                   help="tiny: smallest models (tests); comfy: small UNets with the full image encoder and "
                        "VAE, which ComfyUI's own CLIP Vision and VAE loaders accept; full: the published sizes")
    m.add_argument("--seed", type=int, default=0)
    m.set_defaults(fn=cmd_make_random_weights)
    v = sub.add_parser("convert", help="write .safetensors twins of the .pth/.bin files of a weights folder")
    v.add_argument("weights")
    v.set_defaults(fn=cmd_convert)
    b = sub.add_parser("bench", help="measure streaming speed and memory")
    add_weights_source(b)
    b.add_argument("--size", type=int, default=512)
    b.add_argument("--chunks", type=int, default=None,
                   help="timed chunks, after --warmup (default 32; in --suite, of each non-headline run: 16)")
    b.add_argument("--warmup", type=int, default=3)
    b.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    b.add_argument("--dtype", default="auto", choices=["auto", *DTYPES])
    b.add_argument("--vae", default=None, choices=["full", "taesd"],
                   help="decoder: full (SD VAE, default) or taesd (--taesd, else <weights>/taesd/, else random)")
    b.add_argument("--taesd", metavar="PATH", help="TAESD decoder weights (implies --vae taesd)")
    add_speed_arguments(b)
    b.add_argument("--no-cache-kv", action="store_true", help="re-project the reference tokens at every chunk")
    b.add_argument("--stages", action=argparse.BooleanOptionalAction, default=True,
                   help="time each stage of a chunk (CUDA events on a GPU; default on)")
    b.add_argument("--overlap", action=argparse.BooleanOptionalAction, default=False,
                   help="CUDA: motion of the next chunk and decode of the previous one on their own CUDA streams, "
                        "beside the denoiser (one chunk more latency); the plain loop elsewhere")
    b.add_argument("--compile-decoder", action=argparse.BooleanOptionalAction, default=False,
                   help="torch.compile the decoder network too (no CUDA graphs: it may run beside the step)")
    b.add_argument("--keyframes", type=int, default=None, metavar="N",
                   help="force N historical keyframes into the timed chunks (threshold 0); default: the official "
                        "test, which synthetic frames rarely pass")
    s_ = b.add_argument_group("suite", "bench --suite: every configuration in one process")
    s_.add_argument("--suite", action="store_true",
                    help="run every configuration (eager/compiled, fp16/bf16, SD VAE/TAESD, overlap, kernels, fp8) "
                         "and a precision run of the fast path against fp32, loading the weights once")
    s_.add_argument("--only", metavar="NAMES", help="suite: run only these configurations (comma-separated names, "
                                                    "'precision' included); the others are reported as skipped")
    s_.add_argument("--budget-s", type=float, default=480,
                    help="suite: skip the configurations that would not finish within this many seconds")
    s_.add_argument("--headline-chunks", type=int, default=64, help="suite: timed chunks of the headline runs")
    s_.add_argument("--precision-chunks", type=int, default=100, help="suite: chunks of the precision run")
    s_.add_argument("--compile-backend", default=None,
                    help="suite and --compile: torch.compile backend (inductor; eager or aot_eager to test the wiring)")
    s_.add_argument("--compile-cache", metavar="DIR",
                    help="suite: the compiler's cache folder (default: a fresh one, so the first compile is cold)")
    b.set_defaults(fn=cmd_bench)
    from .bench_memory import add_parser as add_bench_memory
    add_bench_memory(sub)
    from .precision import add_parser as add_precision
    add_precision(sub)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        return args.fn(args) or 0
    except (InputError, WeightsError, FileNotFoundError) as e:
        log(f"error: {e}")
        return 2
    except KeyboardInterrupt:
        log("interrupted: frames written so far are kept")
        return 130
