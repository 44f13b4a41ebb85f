"""`bench-memory`: peak RSS of whole `render` runs of different lengths, each in a fresh process.

For every length it writes a synthetic driving video (H.264, streamed frame by frame with PyAV,
with an AAC track unless `--no-audio`), runs `python -m personalive_core render` on it in a new
process and takes that process's peak resident set size from `os.wait4` (the kernel's maxrss of
that one child). Flat memory means the longest run peaks within `--tolerance` of the shortest.
Prints a table, then one JSON line; exit code 1 when the tolerance is exceeded.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from ..config import CROP_MODES, StreamConfig
from ..errors import InputError


def synthetic_frame(i, h, w):
    """A bright blob drifting over a gradient with a little texture: motion, and real work for the codec."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy, xx = yy / h, xx / w
    cx, cy = 0.5 + 0.2 * np.sin(i / 6), 0.5 + 0.15 * np.cos(i / 9)
    blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.03)
    stripes = 0.1 * np.sin(40 * xx + i / 3)
    img = np.stack([blob + stripes, 0.5 * blob + 0.3 * xx, 0.3 + 0.4 * yy], -1)
    return np.clip(img * 255, 0, 255).astype(np.uint8)


def write_driving_video(path, frames, hw, fps=25, audio=True):
    """Stream `frames` synthetic frames of size hw (even sides) into an mp4, never holding more than one."""
    import av

    h, w = hw
    rate = 16000
    with av.open(path, "w") as c:
        v = c.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        a = c.add_stream("aac", rate=rate) if audio else None
        samples = 0
        for i in range(frames):
            for p in v.encode(av.VideoFrame.from_ndarray(synthetic_frame(i, h, w), format="rgb24")):
                c.mux(p)
            if a is not None:  # the audio of this frame's duration, interleaved
                end = round((i + 1) * rate / fps)
                t = np.arange(samples, end) / rate
                fr = av.AudioFrame.from_ndarray(
                    (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None], format="fltp", layout="mono"
                )
                fr.sample_rate, fr.pts = rate, samples
                samples = end
                for p in a.encode(fr):
                    c.mux(p)
        for p in v.encode():
            c.mux(p)
        if a is not None:
            for p in a.encode():
                c.mux(p)


def write_reference(path, size):
    from PIL import Image

    Image.fromarray(synthetic_frame(0, size, size)).save(path)


def count_frames(path):
    import av

    with av.open(path) as c:
        return sum(1 for p in c.demux(video=0) if p.size)


def measure(argv, log_path, env=None):
    """Run argv in a new process; → (exit code, peak RSS in MiB, seconds). stderr goes to log_path."""
    t0 = time.perf_counter()
    with open(log_path, "wb") as err:
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=env)
        _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, usage.ru_maxrss / 1024, time.perf_counter() - t0  # Linux: ru_maxrss in KiB


def parse_hw(text, size):
    if text is None:
        return size, size
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError(f"--driving-size {text!r}: use WIDTHxHEIGHT, e.g. 320x180") from None
    if w <= 0 or h <= 0 or w % 2 or h % 2:
        raise InputError(f"--driving-size {text}: sides must be positive and even")
    return h, w


def main(a, log):
    StreamConfig(size=a.size)  # checks the size
    if not a.frames or any(n <= 0 for n in a.frames):
        raise InputError(f"--frames {a.frames}: give one or more positive lengths")
    hw = parse_hw(a.driving_size, a.size)
    work = a.workdir or tempfile.mkdtemp(prefix="personalive-bench-memory-")
    os.makedirs(work, exist_ok=True)
    weights = a.weights
    if weights is None:
        from .random_weights import write_random_weights

        weights = os.path.join(work, "weights-tiny")
        if not os.path.isdir(weights):
            write_random_weights(weights, "tiny", seed=0)
    reference = os.path.join(work, "reference.png")
    write_reference(reference, a.size)
    runs = []
    for n in a.frames:
        driving = os.path.join(work, f"driving-{n}.mp4")
        t = time.perf_counter()
        write_driving_video(driving, n, hw, a.fps, audio=not a.no_audio)
        log(f"{n} frames: wrote {driving} ({time.perf_counter() - t:.1f} s); rendering")
        out = os.path.join(work, f"out-{n}.mp4")
        argv = [
            sys.executable,
            "-m",
            "personalive_core",
            "render",
            "--weights",
            weights,
            "--reference",
            reference,
            "--driving",
            driving,
            "--out",
            out,
            "--size",
            str(a.size),
            "--device",
            a.device,
            "--crop",
            a.crop,
        ]
        if a.paste_into:
            argv += ["--paste-into", a.paste_into]
        env = dict(os.environ)
        if a.threads:
            env.update(OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
        rc, peak, seconds = measure(argv, out + ".log", env)
        if rc != 0:
            with open(out + ".log", errors="replace") as f:
                tail = f.read()[-2000:]
            raise RuntimeError(f"render of {n} frames exited with {rc}:\n{tail}")
        written = count_frames(out)
        runs.append(
            {"frames": n, "peak_rss_mb": round(peak, 1), "seconds": round(seconds, 1), "frames_written": written}
        )
        log(f"{n} frames: peak RSS {peak:.1f} MiB, {seconds:.1f} s, {written} frames written")
    base = min(runs, key=lambda r: r["frames"])["peak_rss_mb"]
    growth = max(r["peak_rss_mb"] for r in runs) / base - 1
    flat = growth <= a.tolerance
    print(f"{'frames':>8} {'peak RSS MiB':>13} {'vs shortest':>12} {'seconds':>9} {'written':>8}")
    for r in runs:
        print(
            f"{r['frames']:>8} {r['peak_rss_mb']:>13.1f} {r['peak_rss_mb'] / base - 1:>+12.1%} "
            f"{r['seconds']:>9.1f} {r['frames_written']:>8}"
        )
    print(
        json.dumps(
            {
                "size": a.size,
                "driving_size": f"{hw[1]}x{hw[0]}",
                "device": a.device,
                "crop": a.crop,
                "paste_into": a.paste_into,
                "audio": not a.no_audio,
                "threads": a.threads,
                "runs": runs,
                "growth": round(growth, 4),
                "tolerance": a.tolerance,
                "flat": flat,
            }
        ),
        flush=True,
    )
    if not a.keep and not a.workdir:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0 if flat else 1


def add_parser(sub):
    """The `bench-memory` subcommand on the CLI's subparsers."""
    b = sub.add_parser("bench-memory", help="peak RSS of whole renders of different lengths (flat memory check)")
    b.add_argument(
        "--weights", help="folder in the official layout (default: tiny random weights written to the work folder)"
    )
    b.add_argument("--frames", type=int, nargs="+", default=[200, 2000], help="driving video lengths to render")
    b.add_argument("--size", type=int, default=64, help="generation size")
    b.add_argument(
        "--driving-size", default=None, help="WIDTHxHEIGHT of the synthetic driving video (default: size x size)"
    )
    b.add_argument("--fps", type=int, default=25)
    b.add_argument("--no-audio", action="store_true", help="driving video without an audio track")
    b.add_argument("--crop", default="center", choices=CROP_MODES, help="passed to render")
    b.add_argument("--paste-into", default=None, choices=["reference", "driving"], help="passed to render")
    b.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="passed to render")
    b.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads of each render (OMP_NUM_THREADS); 1 avoids oversubscription on busy machines",
    )
    b.add_argument("--tolerance", type=float, default=0.10, help="allowed growth of the peak RSS over the shortest run")
    b.add_argument("--workdir", default=None, help="keep inputs, outputs and render logs here")
    b.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    b.set_defaults(fn=lambda a: main(a, _log))
    return b


def _log(msg):
    print(msg, file=sys.stderr, flush=True)
