"""The commands of `python -m personalive_core` (their arguments: `cli.parser`). Each takes the parsed
arguments; a return value other than None is the exit code."""
import time

from ..errors import InputError
from ..media.images import load_image
from ..media.output import Output
from .options import check_size, log, pick_device, pick_dtype, resolve_speed_arguments


def motion_controls(a):
    """--expression, --head-pose, --smoothness → MotionControls; a bad value is named as its flag."""
    from ..streaming.motion_controls import MotionControls
    try:
        return MotionControls(a.expression, a.head_pose, a.smoothness)
    except InputError as e:
        raise InputError("--" + str(e).replace("head_pose", "head-pose")) from None


def cmd_render(a):
    from ..models.speed import sdpa_backend
    from ..media.driving import DrivingSource
    from ..media.footage import Reframer, render_footage
    from ..models.loader import load_models
    from ..streaming.reference import encode_reference
    from ..streaming.render import chunks_needed
    from ..streaming.session import Settings
    check_size(a.size)
    if a.frames is not None and a.frames <= 0:
        raise InputError(f"--frames {a.frames}: must be positive")
    controls = motion_controls(a)
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
    source = DrivingSource(a.driving, a.frames, log=log)
    log(f"loading weights from {a.weights} ({device}, {str(dtype).split('.')[-1]})")
    models = load_models(a.weights, device, dtype)
    decoder = taesd = None
    if a.taesd:
        from ..models.taesd import decoder as taesd_decoder, load_taesd
        taesd = load_taesd(a.taesd, device, dtype)
        decoder = taesd_decoder(taesd)
        log(f"decoding with TAESD from {a.taesd} (fast preview, lower quality than the SD VAE)")
    if a.channels_last or a.compile or a.onednn_linear or a.fp8_linear:
        from ..models.speed import apply_speed_options, compile_options
        apply_speed_options(models, channels_last=a.channels_last, compile=a.compile,
                            extra=[taesd] if taesd else [], onednn=a.onednn_linear, fp8=a.fp8_linear)
        if a.compile:
            log(f"compiling the chunk step ({compile_options(device)}) at the first chunk")
    reference = encode_reference(models, ref, a.size)
    out = Output(a.out, source.fps, source.audio_file(), log, source.time_base, source.start)
    t0, total = time.perf_counter(), chunks_needed(a.frames) if a.frames else None

    def progress(n, _frames):
        eta = f"/{total}" if total else ""
        log(f"chunk {n}{eta}  {(time.perf_counter() - t0) / n:.2f} s/chunk")

    settings = Settings(official_quirks=not a.no_official_quirks, controls=controls, static_step=a.static_step)
    try:
        with sdpa_backend(a.sdpa):
            render_footage(out, models, reference, source, reframer, a.seed, a.keep_warmup, settings, progress,
                           decoder)
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
    if a.chunks is None:
        a.chunks = 16 if a.suite else 32
    if a.compile_backend:
        from ..models import speed
        speed.BACKEND = a.compile_backend
    if a.suite:
        from .suite import main as suite_main
        return suite_main(a, log)
    return bench_main(a, log)
