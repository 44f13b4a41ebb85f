"""PersonaLive, re-implemented for streaming portrait animation; imports nothing from ComfyUI.

The public API: one typed configuration (`StreamConfig` and its parts, `preset`), the errors a user can
act on, and the pipelines (`personalive_core.pipelines`, the most used re-exported here).
"""

from .config import (
    ConfigError,
    Framing,
    Keyframes,
    MotionControls,
    Precision,
    SpeedOptions,
    StreamConfig,
    fields_of,
    preset,
)
from .errors import InputError, WeightsError
from .pipelines import (
    LiveTarget,
    Reframer,
    encode_reference,
    load_models,
    prepare_reference,
    render_footage,
    render_video,
)

__all__ = [
    "ConfigError",
    "Framing",
    "InputError",
    "Keyframes",
    "LiveTarget",
    "MotionControls",
    "Precision",
    "Reframer",
    "SpeedOptions",
    "StreamConfig",
    "WeightsError",
    "encode_reference",
    "fields_of",
    "load_models",
    "prepare_reference",
    "preset",
    "render_footage",
    "render_video",
]
