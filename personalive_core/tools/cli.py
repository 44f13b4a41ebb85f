"""`python -m personalive_core`: render, bench, bench-memory, precision, check-weights, make-random-weights,
convert."""
import argparse
import time

from ..errors import InputError, WeightsError
from ..media.footage import CROP_MODES
from ..media.output import Output
from ..media.images import load_image
from .options import (DTYPES, add_speed_arguments, add_weights_source, check_size, log, pick_device, pick_dtype,
                      resolve_speed_arguments)


def cmd_render(a):
    from ..media.driving import DrivingSource
    from ..media.footage import Reframer, render_footage
    from ..models.loader import load_models
    from ..streaming.reference import encode_reference
    from ..streaming.render import chunks_needed
    from ..streaming.session import Settings
    check_size(a.size)
    if a.frames is not None and a.frames <= 0:
        raise InputError(f"--frames {a.frames}: must be positive")
    paste_into = a.paste_into or ("reference" if a.paste_back else "none")
    if paste_into != "none" and a.crop != "auto":
        raise InputError("--paste-back needs --crop auto (the paste-back warps the face crop back)")
    if not 1.0 <= a.crop_scale <= 4.0:
        raise InputError(f"--crop-scale {a.crop_scale}: use a value between 1 and 4 (default 1.75)")
    if not 0.0 < a.feather <= 1.0:
        raise InputError(f"--feather {a.feather}: use a value in (0, 1] (default 0.2)")
    device = pick_device(a.device)
    dtype = pick_dtype(a.dtype, device)
    resolve_speed_arguments(a, device, dtype)
    reframer = Reframer(a.size, a.crop, paste_into, scale=a.crop_scale, feather=a.feather, log=log)
    ref = reframer.reference(load_image(a.reference))
    source = DrivingSource(a.driving, a.frames)
    log(f"loading weights from {a.weights} ({device}, {str(dtype).split('.')[-1]})")
    models = load_models(a.weights, device, dtype)
    decoder = taesd = None
    if a.taesd:
        from ..models.taesd import decoder as taesd_decoder, load_taesd
        taesd = load_taesd(a.taesd, device, dtype)
        decoder = taesd_decoder(taesd)
        log(f"decoding with TAESD from {a.taesd} (fast preview, lower quality than the SD VAE)")
    if a.channels_last or a.compile or a.onednn_linear:
        from ..models.speed import apply_speed_options, compile_label
        apply_speed_options(models, channels_last=a.channels_last, compile=a.compile,
                            extra=[taesd] if taesd else [], onednn=a.onednn_linear)
        if a.compile:
            log(f"compiling the denoising UNet ({compile_label(device)}) on the first chunk; each new "
                "historical keyframe compiles once more")
    reference = encode_reference(models, ref, a.size)
    out = Output(a.out, source.fps, source.audio_file(), log)
    t0, total = time.perf_counter(), chunks_needed(a.frames) if a.frames else None

    def progress(n, _frames):
        eta = f"/{total}" if total else ""
        log(f"chunk {n}{eta}  {(time.perf_counter() - t0) / n:.2f} s/chunk")

    settings = Settings(official_quirks=not a.no_official_quirks)
    try:
        render_footage(out, models, reference, source, reframer, a.seed, a.keep_warmup, settings, progress, decoder)
    except KeyboardInterrupt:
        log(f"interrupted after {out.count} frames: {a.out} holds them")
        raise
    finally:
        if reframer.report():
            log(reframer.report())
    log(f"wrote {out.count} frames to {a.out} in {time.perf_counter() - t0:.1f} s")


def cmd_check_weights(a):
    from .checkweights import report
    ok, lines = report(a.weights)
    print("\n".join(lines))
    return 0 if ok else 1


def cmd_make_random_weights(a):
    from .random_weights import write_random_weights
    write_random_weights(a.dir, a.preset, a.seed, log=log)
    log(f"wrote {a.preset} random weights to {a.dir}")


def cmd_convert(a):
    from .random_weights import convert_to_safetensors
    for path in convert_to_safetensors(a.weights):
        log(f"wrote {path}")


def cmd_bench(a):
    from .bench import main as bench_main
    if a.taesd and a.vae == "full":
        raise InputError("--taesd is a TAESD decoder: use it with --vae taesd (or leave --vae out)")
    a.vae = a.vae or ("taesd" if a.taesd else "full")
    bench_main(a, log)


def parser():
    p = argparse.ArgumentParser(prog="python -m personalive_core", description=__doc__)
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
    b.add_argument("--chunks", type=int, default=32, help="timed chunks, after --warmup")
    b.add_argument("--warmup", type=int, default=3)
    b.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    b.add_argument("--dtype", default="auto", choices=["auto", *DTYPES])
    b.add_argument("--vae", default=None, choices=["full", "taesd"],
                   help="decoder: full (SD VAE, default) or taesd (--taesd, else <weights>/taesd/, else random)")
    b.add_argument("--taesd", metavar="PATH", help="TAESD decoder weights (implies --vae taesd)")
    add_speed_arguments(b)
    b.add_argument("--no-cache-kv", action="store_true", help="re-project the reference tokens at every chunk")
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
