"""`python -m personalive_core`: render, bench, check-weights, make-random-weights, convert."""
import argparse
import os
import sys
import time

import numpy as np
import torch

from .video_io import DrivingSource, InputError, VideoWriter, load_image, square, to_uint8
from .weights import WeightsError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def pick_device(name):
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available; use --device cpu")
    return name


def pick_dtype(name, device):
    if name == "auto":
        return torch.float16 if device == "cuda" else torch.float32
    if device == "cpu" and name == "fp16":
        raise InputError("--dtype fp16 is not supported on the CPU; use fp32 or bf16")
    return DTYPES[name]


def driving_frames(source, size, limit):
    for i, frame in enumerate(source):
        if limit is not None and i >= limit:
            return
        h, w = frame.shape[:2]
        if (h, w) != (size, size):
            from PIL import Image
            frame = np.asarray(square(Image.fromarray(frame), size))
        yield frame


class Output:
    """Writes frames to .mp4, .npy or a PNG folder as they come; a cut-short run keeps what it wrote."""

    def __init__(self, path, fps, size, audio_from):
        self.path, self.frames = path, []
        self.kind = "mp4" if path.lower().endswith((".mp4", ".mov", ".mkv")) else (
            "npy" if path.lower().endswith(".npy") else "png")
        if self.kind == "mp4":
            self.writer = VideoWriter(path, fps, (size, size), audio_from)
        elif self.kind == "png":
            os.makedirs(path, exist_ok=True)
        self.count = 0

    def write(self, frame):
        if self.kind == "npy":
            self.frames.append(frame.astype(np.float32))
        elif self.kind == "mp4":
            self.writer.write(to_uint8(frame))
        else:
            from PIL import Image
            Image.fromarray(to_uint8(frame)).save(os.path.join(self.path, f"{self.count:06d}.png"))
        self.count += 1

    def close(self):
        if self.kind == "npy":
            np.save(self.path, np.stack(self.frames) if self.frames else np.zeros((0, 0, 0, 3), np.float32))
        elif self.kind == "mp4":
            self.writer.close()


def cmd_render(a):
    from .models import load_models
    from .reference import encode_reference
    from .render import chunks_needed, render_stream
    from .session import Settings
    if a.size % 64:
        raise InputError(f"--size {a.size}: must be a multiple of 64 (e.g. 256 or 512)")
    if a.frames is not None and a.frames <= 0:
        raise InputError(f"--frames {a.frames}: must be positive")
    device = pick_device(a.device)
    dtype = pick_dtype(a.dtype, device)
    ref = load_image(a.reference)
    source = DrivingSource(a.driving)
    log(f"loading weights from {a.weights} ({device}, {str(dtype).split('.')[-1]})")
    models = load_models(a.weights, device, dtype)
    reference = encode_reference(models, ref, a.size)
    audio = a.driving if source.has_audio() else None
    out = Output(a.out, source.fps, a.size, audio)
    t0, total = time.perf_counter(), None
    if a.frames is not None:
        total = chunks_needed(a.frames)

    def progress(n, _frames):
        eta = f"/{total}" if total else ""
        log(f"chunk {n}{eta}  {(time.perf_counter() - t0) / n:.2f} s/chunk")

    settings = Settings(official_quirks=not a.no_official_quirks)
    try:
        for frame in render_stream(models, reference, driving_frames(source, a.size, a.frames), a.seed,
                                   a.keep_warmup, settings, progress):
            out.write(frame)
    finally:
        out.close()
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
    if a.vae != "full":
        raise InputError("--vae taesd is not available yet; use --vae full")
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
    r.set_defaults(fn=cmd_render)
    c = sub.add_parser("check-weights", help="list the expected files and their key coverage")
    c.add_argument("weights")
    c.set_defaults(fn=cmd_check_weights)
    m = sub.add_parser("make-random-weights", help="write seeded random weights in the official layout")
    m.add_argument("dir")
    m.add_argument("--preset", choices=["tiny", "full"], default="tiny")
    m.add_argument("--seed", type=int, default=0)
    m.set_defaults(fn=cmd_make_random_weights)
    v = sub.add_parser("convert", help="write .safetensors twins of the .pth/.bin files of a weights folder")
    v.add_argument("weights")
    v.set_defaults(fn=cmd_convert)
    b = sub.add_parser("bench", help="measure streaming speed and memory")
    src = b.add_mutually_exclusive_group()
    src.add_argument("--weights", help="folder in the official layout")
    src.add_argument("--random-weights", choices=["tiny", "full"], default="full",
                     help="random weights built in memory (default: full, the published sizes)")
    b.add_argument("--size", type=int, default=512)
    b.add_argument("--chunks", type=int, default=32, help="timed chunks, after --warmup")
    b.add_argument("--warmup", type=int, default=3)
    b.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    b.add_argument("--dtype", default="auto", choices=["auto", *DTYPES])
    b.add_argument("--vae", default="full", choices=["full", "taesd"])
    b.add_argument("--no-cache-kv", action="store_true", help="re-project the reference tokens at every chunk")
    b.set_defaults(fn=cmd_bench)
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
