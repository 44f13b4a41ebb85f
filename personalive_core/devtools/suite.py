"""`bench --suite`: every speed configuration in one process, the weights loaded once.

Runs, in order of value, the headline configurations (eager and compiled with the SD VAE, compiled
with TAESD; `--headline-chunks` timed chunks each), the compiled step with overlap, a precision run
of the fast path against float32 on the same device (`--precision-chunks` chunks), then one knob at a
time on shorter runs (`--chunks`): the static step in eager mode, channels-last, the SDPA kernels,
cuDNN autotuning off, the other dtype, fp8 linear layers, the compiled decoder, and compiled
variants (channels-last, other dtype, fp8). Every timed run forces 3 historical keyframes (or
`--keyframes N`) into its timed chunks.

Each configuration prints one JSON line (`"config"`: its name; `"status"`: ran, skipped or failed,
with `"reason"`), and `elapsed_s`; the end prints a table, the fastest configuration per decoder,
and a summary JSON line. `--budget-s` bounds the whole suite: once the time is spent, the
remaining configurations are reported as skipped; a configuration that needs a new compile is
skipped when 1.5 times the first compile (plus 20 s) would not fit.

Compile cost: the first compiled configuration's `compile_ms` is a cold compile (the compiler's
cache folder is fresh unless `--compile-cache DIR` is given); right after it, the compiled code
is dropped (`torch._dynamo.reset()`) and compiled again from the on-disk cache: `compile_warm_ms`.

The weights are loaded once, in float32 on the CPU; each configuration runs on a copy cast to its
dtype on the device (one copy on the device at a time, plus the float32 one during the precision
run), so `peak_mem_mb` is that configuration's own peak.
"""

import copy
import gc
import json
import os
import tempfile
import time
from argparse import Namespace
from dataclasses import asdict, dataclass
from functools import partial

import torch

from ..config import SpeedOptions
from ..models.rewrites import Fp8Linear, apply_rewrites, fp8_supported, to_channels_last
from ..pipelines import load_models, placement
from ..runtime import cudnn_benchmark, process_settings, sdpa_preference
from ..streaming.compiled import compile_decoder, compile_label, compile_options
from .bench import (
    compile_warmup,
    forced_keyframes,
    pick_decoder,
    run_bench,
    stage_table,
    synthetic_frames,
    synthetic_reference,
)
from .random_weights import random_models

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

PRECISION = "precision"  # marks where in the order the precision run goes


@dataclass(frozen=True)
class Config:
    name: str
    dtype: str
    compile: bool = False
    vae: str = "full"
    overlap: bool = False
    compile_decoder: bool = False
    channels_last: bool = False
    sdpa: str = "auto"
    fp8: bool = False
    cudnn_benchmark: bool = True
    static_step: bool = False
    headline: bool = False

    @property
    def weights_key(self):
        return self.dtype, self.channels_last, self.fp8


def configurations(device):
    """The suite's configurations in run order (PRECISION where the precision run goes)."""
    cuda = torch.device(device).type == "cuda"
    main, other = ("fp16", "bf16") if cuda else ("fp32", "bf16")
    c = lambda name, **kw: Config(name, kw.pop("dtype", main), **kw)
    return [
        c("eager", headline=True),
        c("compiled", compile=True, headline=True),
        c("compiled-taesd", compile=True, vae="taesd", headline=True),
        c("compiled-overlap", compile=True, overlap=True),
        c("compiled-taesd-overlap", compile=True, vae="taesd", overlap=True),
        PRECISION,
        c("eager-static", static_step=True),
        c("eager-taesd", vae="taesd"),
        c("eager-sdpa-flash", sdpa="flash"),
        c("eager-sdpa-efficient", sdpa="efficient"),
        c("eager-sdpa-cudnn", sdpa="cudnn"),
        c("eager-no-cudnn-benchmark", cudnn_benchmark=False),
        c("compiled-decoder", compile=True, compile_decoder=True),
        # from here each pair shares one copy of the weights
        c("eager-channels-last", channels_last=True),
        c("compiled-channels-last", compile=True, channels_last=True),
        c(f"eager-{other}", dtype=other),
        c(f"compiled-{other}", dtype=other, compile=True),
        c("eager-fp8", fp8=True),
        c("compiled-fp8", compile=True, fp8=True),
    ]


def unsupported(config, device):
    """Why `config` cannot run on `device` (None if it can)."""
    cuda = torch.device(device).type == "cuda"
    if config.fp8 and not fp8_supported(device):
        return "fp8 matrix products need a CUDA GPU with compute capability 9.0+ (Hopper)"
    if not cuda and config.sdpa in ("efficient", "cudnn"):
        return f"the {config.sdpa} attention kernel exists on CUDA only"
    if not cuda and not config.cudnn_benchmark:
        return "cuDNN is CUDA only"
    if not cuda and config.dtype == "fp16":
        return "float16 is not supported on the CPU"
    return None


class Models:
    """One copy of the master weights on the device at a time, per (dtype, channels-last, fp8)."""

    def __init__(self, master, device):
        self.master, self.device = master, device
        self.key, self.models = None, None

    def get(self, config):
        if self.key != config.weights_key:
            self.drop()
            dtype = DTYPES[config.dtype]
            models = copy.deepcopy(self.master).to(self.device, dtype)
            fast = SpeedOptions().resolve(torch.device(self.device).type, dtype)
            rewrites = SpeedOptions(
                channels_last=config.channels_last, onednn_linear=fast.onednn_linear, fp8_linear=config.fp8
            )
            apply_rewrites(models.modules().values(), rewrites, fp8=[models.denoising_unet])
            self.key, self.models = config.weights_key, models
        return self.models

    def fresh(self, dtype):
        """A plain copy in `dtype` beside the current one (precision runs)."""
        return copy.deepcopy(self.master).to(self.device, dtype)

    def drop(self):
        self.key = self.models = None
        gc.collect()
        if torch.device(self.device).type == "cuda":
            torch.cuda.empty_cache()


class Suite:
    def __init__(self, args, config, log, device):
        self.args, self.config, self.log, self.device = args, config, log, device
        self.keyframes = 3 if args.keyframes is None else args.keyframes  # every timed run forces them
        self.t0 = time.perf_counter()
        self.results = []
        self.cold_compile_s = None
        self.compiled_keys = set()
        self.decoders = {}

    def elapsed(self):
        return time.perf_counter() - self.t0

    def emit(self, record):
        self.results.append(record)
        print(json.dumps(record), flush=True)

    def skip_reason(self, config):
        if self.args.only and config.name not in self.args.only.split(","):
            return "not in --only"
        reason = unsupported(config, self.device)
        if reason:
            return reason
        left = self.args.budget_s - self.elapsed()
        if left <= 0:
            return f"time budget spent ({self.args.budget_s:.0f} s)"
        new_compile = config.compile and config.weights_key not in self.compiled_keys and self.cold_compile_s
        if new_compile and 1.5 * self.cold_compile_s + 20 > left:  # margin: other dtypes and fp8 compile longer
            return (
                f"a new compile (the first took {self.cold_compile_s:.0f} s) would not fit in the "
                f"{left:.0f} s left of the budget"
            )
        return None

    def precision_wont_fit(self):
        """Why the precision run would pass the budget (None if it fits): its float32 side is
        estimated at 4 eager chunks a chunk, from the eager run's p50."""
        left = self.args.budget_s - self.elapsed()
        eager = next((r for r in self.results if r["config"] == "eager" and r["status"] == "ran"), None)
        need = self.args.precision_chunks * eager["chunk_ms_p50"] * 5 / 1e3 if eager else 0
        if left <= 0 or need > left:
            return f"about {need:.0f} s needed, {max(left, 0):.0f} s left of the budget"
        return None

    def decoder(self, models, config):
        if config.vae == "full":
            return models.vae, "sd-vae (AutoencoderKL)"
        key = (config.dtype, config.channels_last)
        if key not in self.decoders:
            args = Namespace(**{**vars(self.args), "vae": "taesd"})
            taesd, name = pick_decoder(args, models, self.log)
            if config.channels_last:
                to_channels_last(taesd)
            self.decoders = {key: (taesd, name)}  # one at a time
        return self.decoders[key]

    def stream_config(self, config):
        """The StreamConfig of one suite configuration."""
        return self.config.replace(
            compile=config.compile,
            static_step=config.static_step,
            sdpa=config.sdpa,
            cudnn_benchmark=config.cudnn_benchmark,
            channels_last=config.channels_last,
            fp8_linear=config.fp8,
        )

    def run_config(self, pool, config):
        models = pool.get(config)
        decoder, decoder_name = self.decoder(models, config)
        unet = models.denoising_unet
        stream = self.stream_config(config)
        if config.compile_decoder:  # on a copy: the next configuration decodes uncompiled unless it asks
            decoder = compile_decoder(copy.deepcopy(decoder), stream.speed)
        chunks = self.args.headline_chunks if config.headline else self.args.chunks
        with sdpa_preference(config.sdpa), cudnn_benchmark(config.cudnn_benchmark):
            result = run_bench(
                models,
                stream,
                chunks,
                self.args.warmup,
                self.log,
                decoder,
                keyframes=self.keyframes,
                overlap=config.overlap,
            )
            if config.compile and config.weights_key not in self.compiled_keys:
                self.compiled_keys.add(config.weights_key)
                if self.cold_compile_s is None:
                    self.cold_compile_s = result["compile_ms"] / 1e3
                    result["compile_warm_ms"] = self.warm_compile(models, decoder, stream)
        fp8_layers = sum(type(m) is Fp8Linear for m in unet.modules())
        return {
            **result,
            "chunks": chunks,
            "decoder": decoder_name,
            "fp8_layers": fp8_layers,
            "compile": compile_label(compile_options(self.device, stream.speed)) if config.compile else None,
        }

    def warm_compile(self, models, decoder, stream):
        """Drop the compiled code and compile again: the compiler's caches are now warm."""
        torch._dynamo.reset()
        size = self.config.size
        reference = synthetic_reference(models, size)
        frames = list(synthetic_frames(4 * 3, size))
        stream = forced_keyframes(stream, self.keyframes, self.args.warmup)
        ms = compile_warmup(models, reference, stream, decoder, frames, self.log)
        self.log(f"compiled again from the warm cache in {ms / 1e3:.1f} s")
        return round(ms, 1)

    def precision(self, pool, config):
        """The fast path (`config`'s models) against float32 on the same device."""
        from PIL import Image
        from .precision import compare_streams, summarize

        fast = pool.get(config)
        base = pool.fresh(torch.float32)
        size, chunks = self.config.size, self.args.precision_chunks
        image = Image.fromarray(next(synthetic_frames(1, size)))
        try:
            gaps = list(
                compare_streams(
                    base, fast, image, synthetic_frames(4 * chunks, size), size, test_config=self.stream_config(config)
                )
            )
        finally:
            del base
            gc.collect()
        return {**summarize(gaps), "test": f"{config.name} ({config.dtype})", "base": "float32, eager"}

    def run(self):
        args, log = self.args, self.log
        master = (
            load_models(
                args.weights, self.config.replace(device="cpu", dtype="fp32", channels_last=False, onednn_linear=False)
            )
            if args.weights
            else random_models(args.random_weights)
        )
        log(f"weights loaded in {self.elapsed():.1f} s")
        pool = Models(master, self.device)
        fast = None
        for config in configurations(self.device):
            started = time.perf_counter()
            if config == PRECISION:
                record = {"config": PRECISION}
                reason = (
                    "not in --only"
                    if args.only and PRECISION not in args.only.split(",")
                    else "no compiled configuration ran"
                    if fast is None
                    else self.precision_wont_fit()
                )
                if reason:
                    record.update(status="skipped", reason=reason)
                else:
                    record.update(self.attempt(partial(self.precision, pool, fast)))
                record["elapsed_s"] = round(time.perf_counter() - started, 1)
                self.emit(record)
                continue
            record = {"config": config.name, **asdict(config)}
            reason = self.skip_reason(config)
            if reason:
                record.update(status="skipped", reason=reason)
                log(f"[{config.name}] skipped: {reason}")
            else:
                log(f"[{config.name}] running ({self.elapsed():.0f} s into the suite)")
                record.update(self.attempt(partial(self.run_config, pool, config)))
                if record["status"] == "ran" and config.compile and fast is None:
                    fast = config
            record["elapsed_s"] = round(time.perf_counter() - started, 1)
            log(f"[{config.name}] {record['status']} in {record['elapsed_s']} s")
            self.emit(record)
        pool.drop()
        self.summary()

    def attempt(self, fn):
        try:
            return {"status": "ran", **fn()}
        except Exception as e:  # one configuration's failure (a kernel missing, memory) ends only it
            self.log(f"failed: {type(e).__name__}: {e}")
            return {"status": "failed", "reason": f"{type(e).__name__}: {str(e)[:300]}"}

    def summary(self):
        log = self.log
        log("")
        log(
            f"{'configuration':<26} {'status':<8} {'fps':>8} {'p50 ms':>8} {'p95 ms':>8} {'peak MB':>9} "
            f"{'compile s':>9} {'s':>6}"
        )
        for r in self.results:
            if r["config"] == PRECISION:
                continue
            comp = f"{r['compile_ms'] / 1e3:9.1f}" if r.get("compile_ms") else f"{'':9}"
            if r["status"] == "ran":
                log(
                    f"{r['config']:<26} {'ran':<8} {r['fps']:8.2f} {r['chunk_ms_p50']:8.1f} {r['chunk_ms_p95']:8.1f} "
                    f"{r['peak_mem_mb']:9.0f} {comp} {r['elapsed_s']:6.1f}"
                )
            else:
                log(f"{r['config']:<26} {r['status']:<8} {r.get('reason', '')}")
        ran = [r for r in self.results if r["status"] == "ran" and r["config"] != PRECISION]
        first = next((r for r in ran if r.get("stage_ms")), None)
        for r in ran:
            if r["config"] in ("eager", "compiled") and r.get("stage_ms"):
                log(f"stages of '{r['config']}':")
                for line in stage_table(r["stage_ms"]):
                    log("  " + line)
        fastest = {}
        for vae in ("full", "taesd"):
            best = max((r for r in ran if r["vae"] == vae and not r["fp8"]), key=lambda r: r["fps"], default=None)
            fastest[vae] = best and best["config"]
            if best:
                log(
                    f"fastest with the {'SD VAE' if vae == 'full' else 'TAESD'} decoder (fp8 aside): "
                    f"{best['config']} at {best['fps']:.2f} fps"
                )
        precision = next((r for r in self.results if r["config"] == PRECISION), None)
        if precision and precision["status"] == "ran":
            log(
                f"precision of {precision['test']} against float32: min {precision['psnr_min']} dB, mean "
                f"{precision['psnr_mean']} dB, drift {precision['drift_db']} dB, non-finite chunks "
                f"{precision['nonfinite_chunks']}"
            )
        log(f"suite finished in {self.elapsed():.0f} s (budget {self.args.budget_s:.0f} s)")
        print(
            json.dumps(
                {
                    "config": "summary",
                    "fastest_full_vae": fastest["full"],
                    "fastest_taesd": fastest["taesd"],
                    "elapsed_s": round(self.elapsed(), 1),
                    "budget_s": self.args.budget_s,
                    "ran": sum(r["status"] == "ran" for r in self.results),
                    "skipped": [r["config"] for r in self.results if r["status"] == "skipped"],
                    "failed": [r["config"] for r in self.results if r["status"] == "failed"],
                    "stages_of": first and first["config"],
                }
            ),
            flush=True,
        )


def main(args, config, log):
    """`bench --suite`: `config` holds the size and the options that every configuration starts from."""
    where = placement(config)
    device = where.device
    cache = args.compile_cache or tempfile.mkdtemp(prefix="personalive-compile-")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache  # the compiler's own configuration is its environment
    os.environ["TRITON_CACHE_DIR"] = os.path.join(cache, "triton")
    config = config.replace(device=device)
    log(
        f"bench --suite on {device} at {config.size}², budget {args.budget_s:.0f} s, compiler cache "
        f"{cache}, backend {config.speed.compile_backend}"
    )
    with process_settings(where.speed.replace(cudnn_benchmark=False, sdpa="auto"), log):  # memory reuse on the CPU
        Suite(args, config, log, device).run()
    return 0
