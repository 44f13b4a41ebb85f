"""One typed configuration for every front end: the single source of each default, range and choice.

`StreamConfig` holds everything a stream, a render or a batch job may set, in nested frozen parts:
`Precision` (device, dtype), `SpeedOptions`, `Keyframes` (HKM), `MotionControls` and `Framing`
(face crop and paste-back). Every field carries its help text and its bounds in the field metadata
(`Spec`); node inputs, command-line flags and the live protocol are generated from that metadata
(`fields_of`), so a default is written down here and nowhere else. Field names are unique across the
parts, and the flat mapping `{name: value}` (`to_dict`, `from_dict`, `replace`) is the one spelling
of every option: the ComfyUI input `head_pose`, the flag `--head-pose`, the manifest column
`head_pose`, the live message key `head_pose`.

A config is validated once, when it is made: a bad value raises `ConfigError` (an `InputError`)
naming the field, the value and what is allowed. Front ends that want other defaults use a named
preset (`preset("live")`: 256² for speed), never a copy of a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from .errors import InputError

SEED_MAX = 2**64 - 1


class ConfigError(InputError):
    """A configuration value that is not allowed; `field` names it (the flat name, e.g. "head_pose")."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.field = name


@dataclass(frozen=True)
class Spec:
    """What a front end needs to offer one field: help (the tooltip), bounds, choices, step."""

    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None
    step: float | None = None
    multiple_of: int | None = None
    # None means "decided for the device" (SpeedOptions.resolve); only the command line offers it
    auto: bool = False


def option(default: Any, help: str, **spec: Any) -> Any:
    """A dataclass field with its `Spec` in the metadata."""
    return field(default=default, metadata={"spec": Spec(help, **spec)})


@dataclass(frozen=True)
class FieldInfo:
    """One leaf field of a config: its flat name, type, default and `Spec`."""

    name: str
    type: type
    default: Any
    spec: Spec
    part: str  # the nested part holding it ("" for the top level)

    def describe(self) -> dict[str, Any]:
        """JSON-ready: type, default, bounds, choices, step and help (a protocol or UI builds on it)."""
        out: dict[str, Any] = {"type": self.type.__name__, "default": self.default, "help": self.spec.help}
        for key in ("min", "max", "step", "choices"):
            value = getattr(self.spec, key)
            if value is not None:
                out[key] = list(value) if key == "choices" else value
        return out


_TYPES = {"bool": bool, "int": int, "float": float, "str": str}


def _leaf_type(annotation: str) -> type:
    base = annotation.replace(" | None", "").strip()
    return _TYPES[base]


def _check(info: FieldInfo, value: Any) -> Any:
    """`value` for field `info`, normalised (int → float); ConfigError when it is not allowed."""
    spec, name = info.spec, info.name
    if value is None and spec.auto:
        return None
    expected = info.type
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if (expected is bool and not isinstance(value, bool)) or (expected is not bool and isinstance(value, bool)):
        raise ConfigError(name, f"{name} {value!r}: must be {_kind(info)}")
    if not isinstance(value, expected):
        raise ConfigError(name, f"{name} {value!r}: must be {_kind(info)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(name, f"{name} {value!r}: must be a finite number")
    if spec.choices is not None and value not in spec.choices:
        raise ConfigError(name, f"{name} {value!r}: use one of {', '.join(spec.choices)} (default {info.default})")
    lo = -math.inf if spec.min is None else spec.min
    hi = math.inf if spec.max is None else spec.max
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not lo <= value <= hi:
        raise ConfigError(name, f"{name} {value!r}: must be {_bounds(spec)} (default {info.default})")
    if spec.multiple_of and isinstance(value, int) and value % spec.multiple_of:
        raise ConfigError(name, f"{name} {value}: must be a multiple of {spec.multiple_of} (e.g. 256 or 512)")
    return value


def _kind(info: FieldInfo) -> str:
    kind = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}[info.type]
    return f"{kind} or null (auto)" if info.spec.auto else kind


def _number(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def _bounds(spec: Spec) -> str:
    lo, hi = spec.min, spec.max
    if lo is not None and hi is not None:
        return f"between {_number(lo)} and {_number(hi)}"
    if lo is not None:
        return f"at least {_number(lo)}"
    return f"at most {_number(hi)}" if hi is not None else "any number"


P = TypeVar("P", bound="Part")


class Part:
    """Base of the config parts: validation at construction, flat dict views."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    def __post_init__(self) -> None:
        for info in _own_fields(type(self)):
            object.__setattr__(self, info.name, _check(info, getattr(self, info.name)))

    def to_dict(self) -> dict[str, Any]:
        """Every leaf field, flat: {name: value}."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out.update(value.to_dict() if isinstance(value, Part) else {f.name: value})
        return out

    def replace(self: P, **values: Any) -> P:
        """A copy with the given flat fields changed (validated); unknown names are a ConfigError."""
        return _apply(self, dict(values))

    @classmethod
    def from_dict(cls: type[P], values: Mapping[str, Any]) -> P:
        """From a flat {name: value} mapping (missing names keep their default)."""
        return cls().replace(**dict(values))


def _own_fields(cls: type) -> list[FieldInfo]:
    out = []
    for f in dataclasses.fields(cls):
        if "spec" in f.metadata:
            out.append(FieldInfo(f.name, _leaf_type(str(f.type)), f.default, f.metadata["spec"], ""))
    return out


def fields_of(cls: type[Part] | Part, names: tuple[str, ...] | None = None) -> dict[str, FieldInfo]:
    """The leaf fields of a config class (all, or `names` in that order), by flat name."""
    cls = cls if isinstance(cls, type) else type(cls)
    found: dict[str, FieldInfo] = {}

    def walk(c: type, part: str) -> None:
        instance = c()
        for f in dataclasses.fields(c):
            if "spec" in f.metadata:
                found[f.name] = FieldInfo(f.name, _leaf_type(str(f.type)), f.default, f.metadata["spec"], part)
            else:
                walk(type(getattr(instance, f.name)), f.name)

    walk(cls, "")
    if names is None:
        return found
    return {n: found[n] if n in found else _unknown(n, found) for n in names}


def _unknown(name: str, known: Mapping[str, Any]) -> Any:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "."
    raise ConfigError(name, f"unknown option {name!r}{hint} Options: {', '.join(sorted(known))}")


def _apply(config: P, values: dict[str, Any]) -> P:
    known = fields_of(type(config))
    for name in values:
        if name not in known:
            _unknown(name, known)
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        current = getattr(config, f.name)
        if isinstance(current, Part):
            mine = {k: values[k] for k in fields_of(type(current)) if k in values}
            if mine:
                changes[f.name] = _apply(current, mine)
        elif f.name in values:
            changes[f.name] = values[f.name]
    return dataclasses.replace(config, **changes) if changes else config


# -- the parts ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Precision(Part):
    device: str = option(
        "auto", "Compute device: auto = CUDA when available, else the CPU.", choices=("auto", "cpu", "cuda")
    )
    dtype: str = option(
        "auto",
        "Weight and compute dtype: auto = fp16 on CUDA, fp32 on the CPU. fp16 needs a GPU.",
        choices=("auto", "fp32", "fp16", "bf16"),
    )

    def resolve_device(self) -> str:
        """The device name this precision runs on ("cpu" or "cuda")."""
        import torch

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device", "device cuda: no CUDA device is available; use device cpu")
        return self.device

    def resolve_dtype(self, device: str) -> Any:
        """The torch dtype for `device` (a CPU refuses fp16)."""
        import torch

        if self.dtype == "auto":
            return torch.float16 if device == "cuda" else torch.float32
        if device == "cpu" and self.dtype == "fp16":
            raise ConfigError("dtype", "dtype fp16 is not supported on the CPU; use fp32 or bf16")
        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.dtype]


DTYPE_NAMES = ("fp32", "fp16", "bf16")


@dataclass(frozen=True)
class SpeedOptions(Part):
    channels_last: bool | None = option(
        None, "Models in channels-last memory format (auto: on for the CPU).", auto=True
    )
    onednn_linear: bool | None = option(
        None,
        "CPU float32: the linear layers through oneDNN instead of the BLAS (about 2x faster on AMD CPUs; "
        "auto: on for CPU float32).",
        auto=True,
    )
    reuse_memory: bool | None = option(
        None,
        "CPU, Linux: the process keeps freed memory for the next layers instead of returning it to the "
        "system, which re-zeroes it at every allocation (auto: on for the CPU; a process setting).",
        auto=True,
    )
    cudnn_benchmark: bool | None = option(
        None,
        "CUDA: cuDNN times its convolution algorithms once per shape and keeps the fastest "
        "(auto: on for CUDA; a process setting).",
        auto=True,
    )
    compile: bool = option(
        False,
        "torch.compile the chunk step (denoiser + DDIM step, pose guider) with fixed shapes; CUDA graphs on "
        "a GPU. The first chunk compiles (minutes the first time, faster from the compiler's cache), then no "
        "recompiles, keyframes included. Frames equal the plain path's to float rounding. Off: plain PyTorch.",
    )
    static_step: bool = option(
        False, "Fixed shapes from the first chunk on: keyframe slots preallocated and masked (implied by compile)."
    )
    sdpa: str = option(
        "auto",
        "Attention kernel to prefer (auto: torch's choice; a process setting).",
        choices=("auto", "flash", "efficient", "cudnn", "math"),
    )
    fp8_linear: bool = option(
        False,
        "Hopper-class GPUs (sm_90+): the denoising UNet's linear layers in fp8 with "
        "per-tensor scales (changes the frames); ignored elsewhere.",
    )
    cache_reference_kv: bool = option(
        True,
        "Project the reference tokens to keys/values once per reference and "
        "keyframe instead of at every chunk (same numbers, less work).",
    )
    compile_backend: str = option(
        "inductor",
        "torch.compile backend (eager or aot_eager test the wiring without code generation).",
        choices=("inductor", "eager", "aot_eager"),
    )
    freeze_weights: bool = option(
        True,
        "CPU compile: fold the weights into the graph as constants (prepacked once). "
        "Off where a host moves, offloads or patches the weights (ComfyUI).",
    )

    def resolve(self, device: str, dtype: Any) -> SpeedOptions:
        """The options left on auto (None) decided for `device`/`dtype`: on the CPU channels-last, memory
        reuse and, in float32, oneDNN linear layers (each measured faster there and within float rounding);
        on CUDA only cuDNN autotuning (the rest stays off until `bench --suite` has measured it)."""
        import torch

        cpu = device == "cpu"
        auto = {
            "channels_last": cpu,
            "onednn_linear": cpu and dtype == torch.float32,
            "reuse_memory": cpu,
            "cudnn_benchmark": device == "cuda",
        }
        return self.replace(**{k: v for k, v in auto.items() if getattr(self, k) is None})

    @property
    def static(self) -> bool:
        """Whether streams run the fixed-shape chunk step."""
        return self.static_step or self.compile


@dataclass(frozen=True)
class Keyframes(Part):
    keyframe_threshold: float = option(
        17.0,
        "Historical keyframes: a finished frame whose motion is farther than this (L2 over its motion tokens) "
        "from every stored keyframe becomes an extra reference. Official: 17.",
        min=0.0,
        max=1000.0,
        step=0.5,
    )
    max_keyframes: int = option(
        3, "At most this many historical keyframes (0 = off). Official: 3.", min=0, max=16, step=1
    )
    first_keyframe_chunk: int = option(
        9,
        "0-based index of the first chunk tested for a keyframe (official: after 9 chunks).",
        min=0,
        max=1_000_000,
        step=1,
    )


@dataclass(frozen=True)
class MotionControls(Part):
    expression: float = option(
        1.0,
        "Expression strength α: the face-motion tokens become reference + α·(driving − reference). 1 = as "
        "driven (official), 0 = the reference's own expression, above 1 exaggerates.",
        min=0.0,
        max=2.0,
        step=0.05,
    )
    head_pose: float = option(
        1.0,
        "Head-pose strength β on the 3D keypoints: rotation and translation become reference + "
        "β·(driving − reference) (translation relative to the first driving frame). 1 = as driven (official), "
        "0 = the head stays in the reference pose while the expression still follows.",
        min=0.0,
        max=2.0,
        step=0.05,
    )
    smoothness: float = option(
        0.0,
        "Temporal smoothing of head pose and expression (causal one-euro filter, so it works live): 0 = off, "
        "0.5 removes about half the jitter with a lag of about 1 frame, 1 = strongest (lag up to about 4 frames on "
        "slow motion).",
        min=0.0,
        max=1.0,
        step=0.05,
    )

    @property
    def identity(self) -> bool:
        """The defaults: the motion goes through untouched, bit for bit."""
        return self.expression == 1.0 and self.head_pose == 1.0 and self.smoothness == 0.0


CROP_MODES = ("center", "auto")
PASTE_TARGETS = ("none", "reference", "driving")
RESIZE_MODES = ("stretch", "center crop")
DEFAULT_CROP_SCALE = 1.75  # the median crop/face ratio of PersonaLive's own demo portraits: the training framing


@dataclass(frozen=True)
class Framing(Part):
    crop: str = option(
        "center",
        "How driving (live: camera) frames become square: 'center' = the centred square, resized; 'auto' = "
        "the square around the tracked, smoothed face (any framing, any aspect). Frames without a face reuse the "
        "last box. Live streams default to 'auto'.",
        choices=CROP_MODES,
    )
    paste_into: str = option(
        "none",
        "'none': output the generated squares. 'reference': paste every frame back into the original "
        "reference picture. 'driving': into the original driving (live: camera) frames (needs crop 'auto'). The "
        "output then has that picture's size.",
        choices=PASTE_TARGETS,
    )
    crop_scale: float = option(
        DEFAULT_CROP_SCALE,
        "With crop 'auto': crop side / detected face side (1.75 = the training framing).",
        min=1.0,
        max=4.0,
        step=0.05,
    )
    feather: float = option(
        0.2, "Paste-back: width of the mask's soft edge as a fraction of the crop radius.", min=0.01, max=1.0, step=0.01
    )
    resize: str = option(
        "stretch",
        "How a reference that is not face-cropped becomes square: 'stretch' resizes the whole picture "
        "(as the official code does), 'center crop' cuts the centred square first. Use the same value wherever "
        "the same reference is encoded.",
        choices=RESIZE_MODES,
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.paste_into == "driving" and self.crop != "auto":
            raise ConfigError(
                "paste_into",
                "paste_into 'driving' needs crop 'auto' (the paste-back warps the "
                "driving face crops back into their frames)",
            )


@dataclass(frozen=True)
class StreamConfig(Part):
    size: int = option(
        512,
        "Generation size in pixels (square, multiple of 64). PersonaLive was trained at 512; 256 runs about 4x faster.",
        min=64,
        max=2048,
        step=64,
        multiple_of=64,
    )
    seed: int = option(0, "Seed of the noise stream (one CPU generator).", min=0, max=SEED_MAX)
    max_frames: int = option(0, "Use only the first N driving frames (0 = all).", min=0, max=100_000_000)
    keep_warmup: bool = option(
        False,
        "Also output the 12 warm-up frames (the reference easing into the first "
        "driving pose) before the driven frames, as the official online path emits "
        "them. Off: exactly one frame per driving frame.",
    )
    official_quirks: bool = option(
        True,
        "Reproduce the official code's fp16 roundings (reference tokens, noise "
        "coefficients), needed for frame-exact parity.",
    )
    precision: Precision = field(default_factory=Precision)
    speed: SpeedOptions = field(default_factory=SpeedOptions)
    keyframes: Keyframes = field(default_factory=Keyframes)
    controls: MotionControls = field(default_factory=MotionControls)
    framing: Framing = field(default_factory=Framing)


PRESETS: dict[str, StreamConfig] = {
    "render": StreamConfig(),
    # live: a quarter of the pixels for four times the frame rate; a webcam's face is anywhere in its picture
    "live": StreamConfig(size=256, framing=Framing(crop="auto")),
}


def preset(name: str) -> StreamConfig:
    """A named preset: "render" (512², the defaults) or "live" (256², face-tracked camera frames)."""
    if name not in PRESETS:
        raise ConfigError("preset", f"preset {name!r}: use one of {', '.join(PRESETS)}")
    return PRESETS[name]


def iter_specs(cls: type[Part], names: tuple[str, ...] | None = None) -> Iterator[FieldInfo]:
    """The `FieldInfo` of `names` (or every field), in order."""
    yield from fields_of(cls, names).values()
