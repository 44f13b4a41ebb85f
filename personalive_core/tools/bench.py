"""`bench`: streaming speed and memory, chunk by chunk, on synthetic driving frames.

Prints a table, then one JSON line: fps, chunk_ms_p50, chunk_ms_p95, first_output_ms,
peak_mem_mb (VRAM on a GPU, peak RSS on the CPU), reference_ms and the options used.
A chunk is timed from its 4 driving frames in to its 4 decoded frames out (device synchronised).

`--vae taesd` decodes with TAESD (`--taesd PATH`, else the weights folder's `taesd/`, else random
weights when the models are random); `decoder` in the JSON says which decoder ran.
`--compile`: before the timed stream, a throw-away stream compiles the denoising UNet for every
shape it will meet (no historical keyframe, then 1, 2, ... up to the maximum), so no compilation
falls inside the timed chunks; that time is `compile_ms`.
"""
import json
import resource
import time

import numpy as np
import torch
from PIL import Image

from ..streaming.reference import encode_reference
from ..streaming.render import to_model_frames
from ..streaming.session import Settings, StreamingSession, decode
from ..models.speed import apply_speed_options, compile_label


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
        return torch.cuda.max_memory_allocated() / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _compile_warmup(models, reference, settings, decoder, frames, log):
    """Run a throw-away stream until the compiled UNet has met every shape of a stream: the
    reference alone, then each historical keyframe count. CUDA graphs need a few calls per shape
    (warm-up, record, replay). Returns (milliseconds, shape variants)."""
    device = models.device
    calls = 3 if torch.device(device).type == "cuda" else 1
    session = StreamingSession(models, reference, seed=0, settings=settings)
    latents, context = reference.latents.to(models.dtype), reference.context.to(models.dtype)
    _sync(device)
    t0 = time.perf_counter()
    variants = 1 + session.settings.keyframes.max_keyframes
    for v in range(variants):
        if v:  # a historical keyframe: the reference keys/values grow by one block of tokens
            session.attention.add_keyframe(latents, context)
        for c in range(calls):
            x = to_model_frames(frames[:4], device)
            t = time.perf_counter()
            decode(decoder, session.push(x)).cpu()
            log(f"compile warm-up, {v} keyframes, call {c + 1}: {(time.perf_counter() - t) * 1e3:8.1f} ms")
    _sync(device)
    return (time.perf_counter() - t0) * 1e3, variants


def run_bench(models, size=512, chunks=32, warmup=3, settings=None, log=print, decoder=None):
    """`decoder`: models.vae (default) or a TAESD decoder. A denoising UNet compiled by
    `speed.apply_speed_options` is warmed up first (reported as compile_ms)."""
    device = models.device
    decoder = models.vae if decoder is None else decoder
    ref = Image.fromarray(next(synthetic_frames(1, size)))
    t0 = time.perf_counter()
    reference = encode_reference(models, ref, size)
    _sync(device)
    reference_ms = (time.perf_counter() - t0) * 1e3
    frames = list(synthetic_frames(4 * (warmup + chunks), size))
    compile_ms = None
    if getattr(models.denoising_unet, "_speed_compiled", None):
        compile_ms, variants = _compile_warmup(models, reference, settings, decoder, frames, log)
        log(f"compiled ({variants} shapes) in {compile_ms / 1e3:.1f} s")
    session = StreamingSession(models, reference, seed=0, settings=settings)
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for c in range(warmup + chunks):
        x = to_model_frames(frames[4 * c:4 * c + 4], device)
        _sync(device)
        t = time.perf_counter()
        out = decode(decoder, session.push(x))
        out.cpu()
        times.append((time.perf_counter() - t) * 1e3)
        log(f"chunk {c:3d}{' (warm-up)' if c < warmup else ''}: {times[-1]:8.1f} ms")
    timed = np.array(times[warmup:])
    return {
        "fps": round(4 * len(timed) / (timed.sum() / 1e3), 3),
        "chunk_ms_p50": round(float(np.percentile(timed, 50)), 1),
        "chunk_ms_p95": round(float(np.percentile(timed, 95)), 1),
        "first_output_ms": round(times[0], 1),
        "reference_ms": round(reference_ms, 1),
        "compile_ms": None if compile_ms is None else round(compile_ms, 1),
        "peak_mem_mb": round(_peak_mb(device), 1),
    }


def pick_decoder(args, models, log):
    """(decoder module, description) for `--vae` / `--taesd`."""
    from ..models.taesd import load_taesd, random_taesd
    if args.vae != "taesd":
        return models.vae, "sd-vae (AutoencoderKL)"
    path = args.taesd
    if path is None and args.weights:
        import os
        path = next((p for p in (os.path.join(args.weights, "taesd"),
                                 os.path.join(args.weights, "pretrained_weights", "taesd")) if os.path.isdir(p)), None)
    if path is not None:
        log(f"decoding with TAESD from {path}")
        return load_taesd(path, models.device, models.dtype), f"taesd ({path})"
    if args.weights:
        from ..errors import InputError
        raise InputError("--vae taesd: give --taesd PATH (taesd_decoder.pth or .safetensors, or a "
                         f"taesd/ folder); none found under {args.weights}")
    return random_taesd(0, models.device, models.dtype), "taesd (random weights)"


def main(args, log):
    from .options import load_weights_source, pick_device, pick_dtype, resolve_speed_arguments
    device = pick_device(args.device)
    dtype = pick_dtype(args.dtype, device)
    resolve_speed_arguments(args, device, dtype)
    models = load_weights_source(args, device, dtype)
    decoder, decoder_name = pick_decoder(args, models, log)
    apply_speed_options(models, channels_last=args.channels_last, compile=args.compile, extra=[decoder],
                        onednn=args.onednn_linear)
    settings = Settings(cache_reference_kv=not args.no_cache_kv)
    threads = torch.get_num_threads()
    result = run_bench(models, args.size, args.chunks, args.warmup, settings, log, decoder)
    result.update(size=args.size, chunks=args.chunks, device=str(device), dtype=str(dtype).split(".")[-1],
                  weights=args.weights or f"random-{args.random_weights}", vae=args.vae, decoder=decoder_name,
                  channels_last=args.channels_last, onednn_linear=args.onednn_linear,
                  reuse_memory=args.reuse_memory,
                  compile=compile_label(device) if args.compile else None,
                  cache_reference_kv=not args.no_cache_kv, threads=threads)
    compiled = f" | compile {result['compile_ms'] / 1e3:.1f} s" if result["compile_ms"] is not None else ""
    log(f"{result['fps']:.2f} fps | chunk p50 {result['chunk_ms_p50']} ms, p95 {result['chunk_ms_p95']} ms | "
        f"first output {result['first_output_ms']} ms | peak {result['peak_mem_mb']} MB{compiled}")
    print(json.dumps(result))
