"""`bench`: streaming speed and memory, chunk by chunk, on synthetic driving frames.

Prints a table, then one JSON line: fps, chunk_ms_p50, chunk_ms_p95, first_output_ms,
peak_mem_mb (VRAM on a GPU, peak RSS on the CPU), reference_ms, stage_ms and the options used.
A chunk is timed from one chunk's frames on the host to the next's (the first from its 4 driving
frames in): with nothing overlapped, from 4 frames in to 4 decoded frames out.

`stage_ms`: mean time per timed chunk of each stage (motion, of which keypoints and motion_encoder;
pose_guider, denoiser, scheduler, keyframe, decode, to_host), from CUDA events on a GPU (device
time; stages on other CUDA streams overlap) and wall time on the CPU. The timing records events or
reads a clock and changes no result; `--no-stages` leaves it out.

`--vae taesd` decodes with TAESD (`--taesd PATH`, else the weights folder's `taesd/`, else random
weights when the models are random); `decoder` in the JSON says which decoder ran.
`--compile`: before the timed stream, a throw-away stream compiles the chunk step (one set of
shapes for the whole stream, keyframes included), so no compilation falls inside the timed chunks;
that time is `compile_ms`. `--keyframes N` forces N historical keyframes into the timed run
(threshold 0 from the first timed chunk on); `keyframes_added` says how many were.
`--suite` (devtools/suite.py) runs every configuration in one process.
"""

import json
import resource
import time

import numpy as np
import torch
from PIL import Image

from ..config import StreamConfig
from ..models.rewrites import Fp8Linear, apply_rewrites, to_channels_last
from ..pipelines import encode_reference, placement, prepare_reference
from ..runtime import process_settings
from ..streaming.compiled import compile_decoder, compile_label, compile_options
from ..streaming.overlap import StreamRunner
from ..streaming.render import to_model_frames
from ..streaming.session import StreamingSession, decode
from ..streaming.timing import STAGES, StageTimer


def synthetic_frames(n, size):
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        cx, cy = 0.5 + 0.1 * np.sin(i / 6), 0.5 + 0.1 * np.cos(i / 9)
        face = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.03)
        yield (np.stack([face, 0.5 * face + 0.3 * xx, 0.3 + 0.4 * yy], -1) * 255).astype(np.uint8)


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _peak_mb(device):
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def forced_keyframes(config, count, first_chunk):
    """`config` with `count` historical keyframes accepted from chunk `first_chunk` on (threshold
    0: every tested chunk qualifies until the slots are full): benchmarks see the keyframe work and
    the full reference length whatever the synthetic motion does."""
    return config.replace(keyframe_threshold=0.0, max_keyframes=count, first_keyframe_chunk=first_chunk)


def synthetic_reference(models, size):
    """The encoded reference of the first synthetic frame."""
    return encode_reference(models, prepare_reference(Image.fromarray(next(synthetic_frames(1, size))), size))


def _decoder_fn(decoder):
    return lambda latents: decode(decoder, latents)


def _chunks(frames, device, first, count):
    for c in range(first, first + count):
        yield to_model_frames(frames[4 * c : 4 * c + 4], device)


def compile_warmup(models, reference, config, decoder, frames, log):
    """Run a throw-away stream until the compiled chunk step has met its shapes (one set for a
    whole stream, keyframes included) and, on CUDA, recorded its CUDA graphs (warm-up, record,
    replay). Returns milliseconds."""
    device = models.device
    calls = 3 if torch.device(device).type == "cuda" else 1
    session = StreamingSession(models, reference, config)
    _sync(device)
    t0 = time.perf_counter()
    for c, _ in enumerate(StreamRunner(session, _decoder_fn(decoder)).run(_chunks(frames, device, 0, calls))):
        log(f"compile warm-up, call {c + 1}: {(time.perf_counter() - t0) * 1e3:8.1f} ms since start")
    _sync(device)
    return (time.perf_counter() - t0) * 1e3


def run_bench(
    models, config=None, chunks=32, warmup=3, log=print, decoder=None, stages=True, overlap=False, keyframes=None
):
    """Stream `chunks` timed chunks (after `warmup`) at `config.size` under `config`. `decoder`:
    models.vae (default) or a TAESD decoder. A compiled chunk step (`config.speed.compile`) is warmed up
    first (reported as compile_ms). `overlap`: motion ahead and decode behind on CUDA streams
    (streaming/overlap.py). `keyframes`: force that many."""
    config = config or StreamConfig()
    size = config.size
    device = models.device
    decoder = models.vae if decoder is None else decoder
    if keyframes is not None:
        config = forced_keyframes(config, keyframes, warmup)
    _sync(device)
    t0 = time.perf_counter()
    reference = synthetic_reference(models, size)
    _sync(device)
    reference_ms = (time.perf_counter() - t0) * 1e3
    frames = list(synthetic_frames(4 * (warmup + chunks), size))
    compile_ms = None
    if config.speed.compile:
        compile_ms = compile_warmup(models, reference, config, decoder, frames, log)
        log(f"compiled in {compile_ms / 1e3:.1f} s")
    session = StreamingSession(models, reference, config)
    timer = StageTimer(device) if stages else None
    if timer:
        session.timer = timer
    hooks = (
        [
            h
            for module, name in ((models.motion_extractor, "keypoints"), (models.motion_encoder, "motion_encoder"))
            for h in timer.hooks(module, name)
        ]
        if timer
        else []
    )
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    runner = StreamRunner(session, _decoder_fn(decoder), motion_ahead=overlap, decode_behind=overlap, timer=timer)
    times = []
    try:
        _sync(device)
        t = time.perf_counter()
        for c, _out in enumerate(runner.run(_chunks(frames, device, 0, warmup + chunks))):
            now = time.perf_counter()
            times.append((now - t) * 1e3)
            t = now
            log(f"chunk {c:3d}{' (warm-up)' if c < warmup else ''}: {times[-1]:8.1f} ms")
            if c == warmup - 1 and timer:
                timer.reset()  # stage times of the timed chunks only
    finally:
        for h in hooks:
            h.remove()
    timed = np.array(times[warmup:])
    result = {
        "fps": round(4 * len(timed) / (timed.sum() / 1e3), 3),
        "chunk_ms_p50": round(float(np.percentile(timed, 50)), 1),
        "chunk_ms_p95": round(float(np.percentile(timed, 95)), 1),
        "first_output_ms": round(times[0], 1),
        "reference_ms": round(reference_ms, 1),
        "compile_ms": None if compile_ms is None else round(compile_ms, 1),
        "peak_mem_mb": round(_peak_mb(device), 1),
        "keyframes_added": session.attention.keyframes,
        "overlap": bool(overlap),
        "static_step": session.static,
    }
    if timer:
        totals = timer.totals()
        result["stage_ms"] = {k: round(totals[k] / len(timed), 2) for k in STAGES if k in totals}
    return result


def stage_table(stage_ms):
    """Lines of a table of the stage times (ms per chunk)."""
    lines = ["stage            ms/chunk"]
    for name in STAGES:
        if name in stage_ms:
            indent = "  " if name in ("keypoints", "motion_encoder") else ""
            lines.append(f"{indent + name:<16} {stage_ms[name]:9.2f}")
    return lines


def pick_decoder(args, models, log):
    """(decoder module, description) for `--vae` / `--taesd`."""
    from ..models.taesd import load_taesd
    from .random_weights import random_taesd

    if args.vae != "taesd":
        return models.vae, "sd-vae (AutoencoderKL)"
    path = args.taesd
    if path is None and args.weights:
        import os

        path = next(
            (
                p
                for p in (
                    os.path.join(args.weights, "taesd"),
                    os.path.join(args.weights, "pretrained_weights", "taesd"),
                )
                if os.path.isdir(p)
            ),
            None,
        )
    if path is not None:
        log(f"decoding with TAESD from {path}")
        return load_taesd(path, models.device, models.dtype), f"taesd ({path})"
    if args.weights:
        from ..errors import InputError

        raise InputError(
            "--vae taesd: give --taesd PATH (taesd_decoder.pth or .safetensors, or a "
            f"taesd/ folder); none found under {args.weights}"
        )
    return random_taesd(0, models.device, models.dtype), "taesd (random weights)"


def main(args, config, log):
    """`bench` (not --suite): one configuration, `config` from the flags."""
    from .random_weights import random_models
    from ..pipelines import load_models

    where = placement(config)
    config = config.replace(**where.speed.to_dict())
    with process_settings(config.speed, log) as speed:
        config = config.replace(reuse_memory=speed.reuse_memory)
        if args.weights:
            models = load_models(args.weights, config)
        else:
            models = random_models(args.random_weights).to(where.device, where.dtype)
            apply_rewrites(models.modules().values(), config.speed, fp8=[models.denoising_unet])
        decoder, decoder_name = pick_decoder(args, models, log)
        if config.speed.channels_last and decoder is not models.vae:
            to_channels_last(decoder)
        if args.compile_decoder:
            compile_decoder(decoder, config.speed)
        threads = torch.get_num_threads()
        result = run_bench(
            models, config, args.chunks, args.warmup, log, decoder, args.stages, args.overlap, args.keyframes
        )
    speed = config.speed
    result.update(
        size=config.size,
        chunks=args.chunks,
        device=where.device,
        dtype=str(where.dtype).split(".")[-1],
        weights=args.weights or f"random-{args.random_weights}",
        vae=args.vae,
        decoder=decoder_name,
        channels_last=speed.channels_last,
        onednn_linear=speed.onednn_linear,
        reuse_memory=speed.reuse_memory,
        cudnn_benchmark=speed.cudnn_benchmark,
        sdpa=speed.sdpa,
        fp8_linear=speed.fp8_linear and any(isinstance(m, Fp8Linear) for m in models.denoising_unet.modules()),
        compile=compile_label(compile_options(where.device, speed)) if speed.compile else None,
        compile_decoder=args.compile_decoder,
        cache_reference_kv=speed.cache_reference_kv,
        threads=threads,
    )
    for line in stage_table(result.get("stage_ms", {}))[1:] if args.stages else []:
        log(line)
    compiled = f" | compile {result['compile_ms'] / 1e3:.1f} s" if result["compile_ms"] is not None else ""
    log(
        f"{result['fps']:.2f} fps | chunk p50 {result['chunk_ms_p50']} ms, p95 {result['chunk_ms_p95']} ms | "
        f"first output {result['first_output_ms']} ms | peak {result['peak_mem_mb']} MB{compiled}"
    )
    print(json.dumps(result))
