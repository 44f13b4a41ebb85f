"""The commands of `python -m personalive_core` (their arguments: `main.parser`). Each takes the parsed
arguments, makes one StreamConfig of them and calls the public API; a return value other than None is
the exit code."""

from __future__ import annotations

import argparse
import time

from .. import pipelines
from ..config import StreamConfig
from ..errors import InputError, WeightsMissing
from ..runtime import process_settings
from .download import ensure_weights, missing_hint
from .options import BENCH_FIELDS, RENDER_FIELDS, config_from_args, log


def _resolved(config: StreamConfig) -> tuple[StreamConfig, pipelines.Placement]:
    """`config` with device, dtype and speed decided for this machine (what the process applies)."""
    where = pipelines.placement(config)
    return config.replace(**where.speed.to_dict()), where


def _load_models(weights: str, config: StreamConfig) -> pipelines.PersonaLiveModels:
    """The models, with what the load adjusted logged as notes; a missing file says how to fetch it."""
    try:
        with pipelines.weights_notes() as notes:
            models = pipelines.load_models(weights, config)
    except WeightsMissing as e:
        raise missing_hint(e, weights) from None
    finally:
        for n in notes:
            log(f"note: {n}")
    return models


def cmd_render(a: argparse.Namespace) -> None:
    config, where = _resolved(config_from_args(a, RENDER_FIELDS))
    ensure_weights(a.weights, a.download)
    with process_settings(config.speed, log) as speed:
        config = config.replace(reuse_memory=speed.reuse_memory)
        log(f"loading weights from {a.weights} ({where.device}, {str(where.dtype).split('.')[-1]})")
        models = _load_models(a.weights, config)
        decoder = None
        if a.taesd:
            decoder = pipelines.taesd_decoder(a.taesd, models, config)
            log(f"decoding with TAESD from {a.taesd} (fast preview, lower quality than the SD VAE)")
        if config.speed.compile:
            log("compiling the chunk step at the first chunk")
        t0 = time.perf_counter()

        def progress(n: int, total: int | None) -> None:
            log(f"chunk {n}{f'/{total}' if total else ''}  {(time.perf_counter() - t0) / n:.2f} s/chunk")

        result = pipelines.render_video(models, a.reference, a.driving, a.out, config, decoder, progress, log)
    log(f"wrote {result.frames} frames to {a.out} in {result.seconds:.1f} s")


def cmd_check_weights(a: argparse.Namespace) -> int:
    ok, lines = pipelines.check_weights(a.weights)
    print("\n".join(lines))
    return 0 if ok else 1


def cmd_make_random_weights(a: argparse.Namespace) -> None:
    from ..devtools.random_weights import write_random_weights

    write_random_weights(a.dir, a.preset, a.seed, log=log)
    log(f"wrote {a.preset} random weights to {a.dir}")


def cmd_convert(a: argparse.Namespace) -> None:
    for path in pipelines.convert_to_safetensors(a.weights):
        log(f"wrote {path}")


def cmd_bench(a: argparse.Namespace) -> int | None:
    from ..devtools import bench, suite

    if a.taesd and a.vae == "full":
        raise InputError("--taesd is a TAESD decoder: use it with --vae taesd (or leave --vae out)")
    a = argparse.Namespace(
        **{**vars(a), "vae": a.vae or ("taesd" if a.taesd else "full"), "chunks": a.chunks or (16 if a.suite else 32)}
    )
    config = config_from_args(a, BENCH_FIELDS, StreamConfig(size=512))
    if a.suite:
        return suite.main(a, config, log)
    return bench.main(a, config, log)
