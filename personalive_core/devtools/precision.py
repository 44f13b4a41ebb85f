"""`precision`: one stream in two precisions (or on two devices), frame by frame: PSNR per chunk,
non-finite values, and drift (does the gap grow as the stream goes on?).

Both sides load the same weights and draw the same noise (the session's CPU float32 generator,
cast afterwards), so the only difference is the arithmetic: e.g. `--base cpu:fp32 --test
cuda:fp16`. The two streams advance together, one chunk each, so memory holds one chunk of frames.
Prints a table of windows, then one JSON line: psnr_min, psnr_mean, psnr_first / psnr_last (mean
over the first / last tenth of the driven chunks, after the warm-up), drift_db (first − last),
max_abs, nonfinite_chunks.
Exit code 1 when any frame has a NaN or an infinity.
"""

import json
import math
from dataclasses import dataclass

import torch

from ..config import StreamConfig
from ..errors import InputError
from ..pipelines import encode_reference, load_models, prepare_reference
from ..streaming.render import to_model_frames
from ..streaming.session import WARMUP, StreamingSession, decode
from ..streaming.window import CHUNK


@dataclass
class ChunkGap:
    index: int
    psnr: float  # dB, test against base; inf where equal
    max_abs: float
    finite: bool


def psnr(a, b):
    """PSNR (dB) of frames in [0, 1]; inf where equal."""
    mse = float(((a.double() - b.double()) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def compare_streams(base, test, image, frames, size, config=None, test_config=None):
    """Yield a ChunkGap per chunk of `frames` (uint8 (H, W, 3) at `size`; a trailing partial chunk
    is dropped) streamed through `base` and `test` (PersonaLiveModels) from the same reference
    image and seed (`config`'s; `test_config`, e.g. compiled, for the test side)."""
    config = config or StreamConfig()
    picture = prepare_reference(image, size)
    sessions = [
        StreamingSession(m, encode_reference(m, picture), c) for m, c in ((base, config), (test, test_config or config))
    ]
    chunk, index = [], 0
    for frame in frames:
        chunk.append(frame)
        if len(chunk) < CHUNK:
            continue
        a, b = (
            decode(m.vae, s.push(to_model_frames(chunk, m.device))).float().cpu()
            for m, s in zip((base, test), sessions)
        )
        if torch.isfinite(b).all():
            yield ChunkGap(index, psnr(a, b), float((a - b).abs().max()), True)
        else:
            yield ChunkGap(index, -math.inf, math.inf, False)
        chunk, index = [], index + 1


def summarize(gaps):
    """Totals over all chunks; first / last tenth (and drift) over the chunks driven by the input,
    after the 3 chunks of motion-interpolated warm-up frames."""
    values = [g.psnr for g in gaps]
    driven = values[WARMUP // CHUNK :] or values
    tenth = max(1, len(driven) // 10)
    first, last = _mean(driven[:tenth]), _mean(driven[-tenth:])
    return {
        "chunks": len(values),
        "psnr_min": round(min(values), 2),
        "psnr_mean": round(_mean(values), 2),
        "psnr_first": round(first, 2),
        "psnr_last": round(last, 2),
        "drift_db": round(first - last, 2),
        "max_abs": max(g.max_abs for g in gaps),
        "nonfinite_chunks": sum(not g.finite for g in gaps),
    }


def _mean(values):
    """Mean PSNR through the mean squared error (an infinite PSNR is a zero error)."""
    mse = [10 ** (-v / 10) for v in values]
    m = sum(mse) / len(mse)
    return math.inf if m == 0 else -10 * math.log10(m)


DTYPES = ("fp32", "fp16", "bf16")


def _side(spec, args):
    """'cpu:fp32' → PersonaLiveModels on that device and dtype, with that device's speed defaults."""
    from .random_weights import random_models
    from ..models.rewrites import apply_rewrites
    from ..pipelines import placement

    device, _, dtype = spec.partition(":")
    if device not in ("cpu", "cuda") or dtype not in DTYPES:
        raise InputError(
            f"{spec!r}: expected DEVICE:DTYPE with DEVICE cpu or cuda and DTYPE one of "
            f"{', '.join(DTYPES)} (e.g. cuda:fp16)"
        )
    config = StreamConfig(size=args.size).replace(device=device, dtype=dtype)
    if args.weights:
        return load_models(args.weights, config)
    where = placement(config)
    models = random_models(args.random_weights).to(where.device, where.dtype)
    apply_rewrites(models.modules().values(), where.speed)
    return models


def main(args, log):
    from PIL import Image
    from .bench import synthetic_frames

    if args.chunks < 1:
        raise InputError(f"--chunks {args.chunks}: must be at least 1")
    config = StreamConfig(size=args.size, seed=args.seed)  # checks the size and the seed
    test_spec = args.test or ("cuda:fp16" if torch.cuda.is_available() else "cpu:bf16")
    base, test = _side(args.base, args), _side(test_spec, args)
    image = Image.fromarray(next(synthetic_frames(1, args.size)))
    window = max(1, args.chunks // 10)
    gaps, part = [], []
    log(f"{args.chunks} chunks at {args.size}², {test_spec} against {args.base}")
    log("chunks      psnr mean  psnr min    max |Δ|")
    for gap in compare_streams(base, test, image, synthetic_frames(CHUNK * args.chunks, args.size), args.size, config):
        gaps.append(gap)
        part.append(gap)
        if len(part) == window or len(gaps) == args.chunks:
            log(
                f"{part[0].index:4d}–{part[-1].index:<4d}  {_mean([g.psnr for g in part]):9.2f}  "
                f"{min(g.psnr for g in part):8.2f}  {max(g.max_abs for g in part):9.2e}"
            )
            part = []
    result = summarize(gaps)
    result.update(
        size=args.size,
        seed=args.seed,
        base=args.base,
        test=test_spec,
        weights=args.weights or f"random-{args.random_weights}",
    )
    print(json.dumps(result))
    return 1 if result["nonfinite_chunks"] else 0


def add_parser(sub):
    p = sub.add_parser("precision", help="one stream in two precisions/devices: PSNR per chunk and drift")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--weights", help="folder in the official layout")
    src.add_argument(
        "--random-weights",
        choices=["tiny", "full"],
        default="full",
        help="random weights built in memory (default: full, the published sizes)",
    )
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--chunks", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--base", default="cpu:fp32", help="reference side, DEVICE:DTYPE (default cpu:fp32)")
    p.add_argument("--test", default=None, help="compared side (default cuda:fp16 where a GPU is, else cpu:bf16)")
    p.set_defaults(fn=lambda a: main(a, _log))


def _log(msg):
    import sys

    print(msg, file=sys.stderr, flush=True)
