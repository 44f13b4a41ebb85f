"""`bench`: streaming speed and memory, chunk by chunk, on synthetic driving frames.

Prints a table, then one JSON line: fps, chunk_ms_p50, chunk_ms_p95, first_output_ms,
peak_mem_mb (VRAM on a GPU, peak RSS on the CPU), reference_ms and the options used.
A chunk is timed from its 4 driving frames in to its 4 decoded frames out (device synchronised).
"""
import json
import resource
import time

import numpy as np
import torch
from PIL import Image

from .reference import encode_reference
from .render import to_model_frames
from .session import Settings, StreamingSession, decode


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


def run_bench(models, size=512, chunks=32, warmup=3, settings=None, log=print):
    device = models.device
    ref = Image.fromarray(next(synthetic_frames(1, size)))
    t0 = time.perf_counter()
    reference = encode_reference(models, ref, size)
    _sync(device)
    reference_ms = (time.perf_counter() - t0) * 1e3
    session = StreamingSession(models, reference, seed=0, settings=settings)
    frames = list(synthetic_frames(4 * (warmup + chunks), size))
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for c in range(warmup + chunks):
        x = to_model_frames(frames[4 * c:4 * c + 4], device)
        _sync(device)
        t = time.perf_counter()
        out = decode(models.vae, session.push(x))
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
        "peak_mem_mb": round(_peak_mb(device), 1),
    }


def main(args, log):
    from .cli import pick_device, pick_dtype
    device = pick_device(args.device)
    dtype = pick_dtype(args.dtype, device)
    if args.weights:
        from .models import load_models
        models = load_models(args.weights, device, dtype)
    else:
        from .random_weights import random_models
        models = random_models(args.random_weights).to(device, dtype)
    settings = Settings(cache_reference_kv=not args.no_cache_kv)
    threads = torch.get_num_threads()
    result = run_bench(models, args.size, args.chunks, args.warmup, settings, log)
    result.update(size=args.size, chunks=args.chunks, device=str(device), dtype=str(dtype).split(".")[-1],
                  weights=args.weights or f"random-{args.random_weights}", vae=args.vae,
                  cache_reference_kv=not args.no_cache_kv, threads=threads)
    log(f"{result['fps']:.2f} fps | chunk p50 {result['chunk_ms_p50']} ms, p95 {result['chunk_ms_p95']} ms | "
        f"first output {result['first_output_ms']} ms | peak {result['peak_mem_mb']} MB")
    print(json.dumps(result))
