"""Command-line flags generated from the config (`config.fields_of`): one flag per field, spelled as the
field (`head_pose` → `--head-pose`), with the field's help, choices and default; the values given become
a StreamConfig through `config_from_args`, so the bounds are checked where they are written down."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from typing import Any

from ..config import ConfigError, FieldInfo, StreamConfig, fields_of

# the fields of a render (and a batch job): every field of the config
RENDER_FIELDS = tuple(fields_of(StreamConfig))
# the speed options that bench and live take
SPEED_FIELDS = (
    "channels_last",
    "onednn_linear",
    "reuse_memory",
    "cudnn_benchmark",
    "compile",
    "static_step",
    "sdpa",
    "fp8_linear",
    "cache_reference_kv",
    "compile_backend",
)
# what a benchmark may set: where it runs and how fast
BENCH_FIELDS = ("size", "device", "dtype", *SPEED_FIELDS)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _help(info: FieldInfo, default: Any) -> str:
    shown = "auto" if default is None else default
    return f"{info.spec.help} (default: {shown})".replace("%", "%%")


def add_config_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, names: Iterable[str], base: StreamConfig | None = None
) -> None:
    """One flag per config field of `names`; every default is left at None ("not given"), the
    effective default being the config's (`base`'s) and shown in the help."""
    base = base or StreamConfig()
    current = base.to_dict()
    for name, info in fields_of(StreamConfig, tuple(names)).items():
        kw: dict[str, Any] = {"default": None, "dest": name, "help": _help(info, current[name])}
        if info.type is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = info.type
            if info.spec.choices:
                kw["choices"] = info.spec.choices
            else:
                kw["metavar"] = name.upper()
        parser.add_argument(flag(name), **kw)


def config_from_args(args: argparse.Namespace, names: Iterable[str], base: StreamConfig | None = None) -> StreamConfig:
    """The flags of `names` that were given, over `base`; a bad value is a ConfigError naming its flag."""
    given = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    try:
        return (base or StreamConfig()).replace(**given)
    except ConfigError as e:
        raise ConfigError(e.field, flag_message(e)) from None


def flag_message(error: ConfigError) -> str:
    """A ConfigError's message with its field spelled as the flag (`head_pose 3` → `--head-pose 3`)."""
    text = str(error)
    return flag(error.field) + text[len(error.field) :] if text.startswith(error.field) else text
