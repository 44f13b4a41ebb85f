"""`bench-batch`: what the batch command costs on top of the rendering (a benchmark, not a test).

On a small machine it measures overhead, not scale:
- `render`: one `python -m personalive_core render` of one job (process start, model load and render), and the
  same job rendered in one process with the models already loaded (`render_job`, one thread per job as a CPU
  worker has): the plain cost of a job;
- `batch`: `--jobs` jobs on `--workers` CPU workers of an embedded Ray: cluster start, model load per worker,
  the worker's time per job (receiving the inputs, rendering, sending the output back) against the plain cost;
- `memory`: the driver of a `--rows`-row manifest with workers that render nothing (each answers at once), so
  that only the driver's own work remains (checking the rows, reading and shipping the inputs, writing and
  recording each output); its resident memory sampled along the way, and its cost per job.
Each part runs in a process of its own; prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from ..batch import BatchSettings
from ..batch.driver import Batch, Task
from ..config import StreamConfig
from .bench_memory import write_driving_video, write_reference

PARTS = ("render", "batch", "memory")


def rss_mb() -> float:
    """This process's resident memory now (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class EchoWorker:
    """A worker that renders nothing: each job is answered at once with one byte."""

    def __init__(self, index: int) -> None:
        self.index = index

    def ready(self) -> dict[str, Any]:
        return {"worker": f"echo {self.index}", "pid": os.getpid(), "load_s": 0.0}

    def render(self, key: str, _options: Any, _reference: Any, _driving: Any) -> dict[str, Any]:
        return {"status": "done", "files": [(key, b"\0")], "seconds": 0.0, "worker": f"echo {self.index}"}


class EchoBatch(Batch):
    """A batch on EchoWorkers, sampling the driver's memory every `every` jobs."""

    def __init__(self, settings: BatchSettings, log: Callable[[str], None], every: int) -> None:
        super().__init__(settings, log)
        self.every, self.samples = every, []

    def _actor(self, index: int, gpu: bool) -> Any:
        return self.ray.remote(EchoWorker).options(num_cpus=1).remote(index)

    def _record(self, task: Task, status: str, **info: Any) -> None:
        super()._record(task, status, **info)
        if self.counts.done % self.every == 0:
            self.samples.append((self.counts.done, round(rss_mb(), 1)))


# -- the parts, each in its own process -------------------------------------------------------------------
def inputs(work: str, frames: int, size: int, jobs: int) -> tuple[str, str]:
    """reference.png, driving.mp4 and a manifest of `jobs` rows of them (seeds 0..jobs-1)."""
    reference, driving = os.path.join(work, "reference.png"), os.path.join(work, "driving.mp4")
    if not os.path.isfile(driving):
        write_reference(reference, size)
        write_driving_video(driving, frames, (size, size), audio=True)
    manifest = os.path.join(work, f"jobs-{jobs}.csv")
    with open(manifest, "w") as f:
        f.write("reference,driving,out,seed\n")
        f.writelines(f"reference.png,driving.mp4,job{i:06d}.mp4,{i}\n" for i in range(jobs))
    return reference, manifest


def part_render(a: argparse.Namespace, work: str, weights: str) -> dict[str, Any]:
    import torch

    from ..pipelines import Job, load_models, placement, render_job
    from ..runtime import process_settings

    reference, _ = inputs(work, a.frames, a.size, 1)
    driving = os.path.join(work, "driving.mp4")
    t0 = time.perf_counter()
    subprocess.run(
        [
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
            os.path.join(work, "render.mp4"),
            "--size",
            str(a.size),
            "--device",
            "cpu",
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    command_s = time.perf_counter() - t0
    torch.set_num_threads(1)  # as a CPU worker (--cpus-per-worker 1)
    config = StreamConfig().replace(size=a.size, device="cpu")
    config = config.replace(**placement(config).speed.to_dict())
    with process_settings(config.speed):
        t0 = time.perf_counter()
        models = load_models(weights, config)
        load_s = time.perf_counter() - t0
        seconds = []
        for i in range(a.jobs):
            out = os.path.join(work, f"plain{i}.mp4")
            t0 = time.perf_counter()
            render_job(models, Job(reference, driving, out, config.replace(seed=i)))
            seconds.append(time.perf_counter() - t0)
    return {
        "render_command_s": round(command_s, 3),
        "model_load_s": round(load_s, 3),
        "job_s": round(sum(seconds) / len(seconds), 3),
    }


def part_batch(a: argparse.Namespace, work: str, weights: str) -> dict[str, Any]:
    from ..batch import run_batch

    _, manifest = inputs(work, a.frames, a.size, a.jobs)
    shutil.rmtree(os.path.join(work, "batch-out"), ignore_errors=True)  # a fresh batch, nothing to skip
    settings = BatchSettings(
        out=os.path.join(work, "batch-out"),
        manifest=manifest,
        weights=weights,
        workers=a.workers,
        options={"size": a.size},
        object_store_mb=256,
    )
    s = run_batch(settings, lambda message: None)
    return {
        "cluster_start_s": s["cluster_start_s"],
        "model_load_s": s["model_load_s"],
        "worker_job_s": s["worker_seconds_per_clip"],
        "wall_s": s["seconds"],
        "clips_per_s": s["clips_per_s"],
        "done": s["done"],
    }


def part_memory(a: argparse.Namespace, work: str, _weights: str) -> dict[str, Any]:
    _, manifest = inputs(work, a.frames, a.size, a.rows)
    shutil.rmtree(os.path.join(work, "memory-out"), ignore_errors=True)
    settings = BatchSettings(
        out=os.path.join(work, "memory-out"),
        manifest=manifest,
        weights="-",
        workers=a.workers,
        options={"size": a.size},
        object_store_mb=256,
    )
    base = rss_mb()
    batch = EchoBatch(settings, lambda message: None, max(a.rows // 10, 1))
    t0 = time.perf_counter()
    try:
        good = batch.check_rows()
        checked_s, after_check = time.perf_counter() - t0, rss_mb()
        t1 = time.perf_counter()
        batch.run(good)
        run_s = time.perf_counter() - t1
    finally:
        batch.close()
    samples = batch.samples
    return {
        "rows": a.rows,
        "done": batch.counts.done,
        "rss_start_mb": round(base, 1),
        "rss_after_check_mb": round(after_check, 1),
        "rss_samples_mb": samples,
        "rss_growth_mb": round(samples[-1][1] - samples[0][1], 1) if samples else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "check_ms_per_row": round(1000 * checked_s / a.rows, 3),
        "driver_ms_per_job": round(1000 * run_s / max(batch.counts.done, 1), 3),
    }


# -- the command ---------------------------------------------------------------------------------------------
def main(a: argparse.Namespace, log: Callable[[str], None]) -> int:
    work = a.workdir or tempfile.mkdtemp(prefix="personalive-bench-batch-")
    os.makedirs(work, exist_ok=True)
    weights = a.weights or os.path.join(work, "weights-tiny")
    if a.part:  # one part, in this process
        result = {"render": part_render, "batch": part_batch, "memory": part_memory}[a.part](a, work, weights)
        print(json.dumps(result), flush=True)
        return 0
    if not a.weights and not os.path.isdir(weights):
        from .random_weights import write_random_weights

        write_random_weights(weights, "tiny", seed=0)
    results = {}
    for part in PARTS:
        log(f"bench-batch: {part} ...")
        argv = [
            sys.executable,
            "-m",
            "personalive_core",
            "bench-batch",
            "--part",
            part,
            "--workdir",
            work,
            "--weights",
            weights,
            "--jobs",
            str(a.jobs),
            "--workers",
            str(a.workers),
            "--frames",
            str(a.frames),
            "--size",
            str(a.size),
            "--rows",
            str(a.rows),
        ]
        run = subprocess.run(argv, capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"bench-batch --part {part} exited with {run.returncode}:\n{run.stderr[-3000:]}")
        results[part] = json.loads(run.stdout.strip().splitlines()[-1])
    report(results, a)
    print(json.dumps({"jobs": a.jobs, "workers": a.workers, "frames": a.frames, "size": a.size, **results}), flush=True)
    if not a.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report(r: dict[str, Any], a: argparse.Namespace) -> None:
    plain, batch, memory = r["render"], r["batch"], r["memory"]
    print(
        f"plain render: the render command {plain['render_command_s']:.2f} s for one job (start, load, render); "
        f"in one process {plain['model_load_s']:.2f} s to load, {plain['job_s']:.3f} s per job"
    )
    print(
        f"batch, {a.workers} CPU workers: cluster up in {batch['cluster_start_s']:.2f} s, models loaded in "
        f"{', '.join(f'{s:.2f}' for s in batch['model_load_s'])} s; {batch['worker_job_s']:.3f} s per job in a "
        f"worker (+{batch['worker_job_s'] - plain['job_s']:.3f} s over the plain job), "
        f"{batch['clips_per_s']:.3f} clips/s"
    )
    print(
        f"driver, {memory['rows']} rows: {memory['check_ms_per_row']:.3f} ms per row to check, "
        f"{memory['driver_ms_per_job']:.3f} ms per job to ship and record; RSS {memory['rss_start_mb']:.0f} MiB "
        f"at start, {memory['rss_after_check_mb']:.0f} after the check, then "
        + ", ".join(f"{mb:.0f} (job {n})" for n, mb in memory["rss_samples_mb"])
    )


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    b = sub.add_parser(
        "bench-batch",
        help="the batch command's overhead: cluster start, model load per worker, "
        "per-job cost against a plain render, driver memory with many rows",
    )
    b.add_argument("--weights", help="weights folder (default: tiny random weights in the work folder)")
    b.add_argument("--jobs", type=int, default=6, help="jobs of the render and batch parts")
    b.add_argument("--workers", type=int, default=2)
    b.add_argument("--frames", type=int, default=16, help="frames of the driving video")
    b.add_argument("--size", type=int, default=64)
    b.add_argument("--rows", type=int, default=100_000, help="rows of the memory part's manifest")
    b.add_argument("--workdir", help="keep inputs and outputs here")
    b.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)  # one part, in this process
    b.set_defaults(fn=lambda a: main(a, _log))


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
