"""Reading published checkpoints safely and checking that they cover a module.

The official code loads three of its six files with `strict=False`, which silently leaves random
weights behind a renamed or truncated checkpoint. Here every key of a module must be in its file
with the right shape; a missing or mis-shaped key stops the load with the file name and the keys.
Keys the module does not have are ignored with a `WeightsWarning` listing them, and so are the two
common wrappings of a training checkpoint: `{"state_dict": ...}` and a `module.` prefix on every key
(DataParallel).
"""

import json
import os
import warnings
from pathlib import Path

import torch

from ..errors import WeightsError, WeightsMissing, WeightsWarning

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
WRAPPER_KEY = "state_dict"  # a training checkpoint: {"state_dict": {...}, "epoch": ..., ...}
PARALLEL_PREFIX = "module."  # torch.nn.DataParallel / DistributedDataParallel


def note(message, kind):
    """A WeightsWarning: shown by the command line and the host's log, listed by check-weights."""
    warnings.warn(WeightsWarning(message, kind), stacklevel=3)


def read_state_dict(path):
    """Tensors of a .safetensors or a pickled state dict (tensors only, `weights_only=True`), unwrapped
    from `{"state_dict": ...}` and stripped of a `module.` prefix on every key (each with a note)."""
    path = str(path)
    if not os.path.isfile(path):
        raise WeightsMissing(f"weights file not found: {path}")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            sd = load_file(path)
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # corrupt file, or a pickle holding more than tensors
        raise WeightsError(f"cannot read weights from {path}: {e}") from e
    if isinstance(sd, dict) and isinstance(sd.get(WRAPPER_KEY), dict):
        others = sorted(k for k in sd if k != WRAPPER_KEY)
        sd = sd[WRAPPER_KEY]
        note(
            f"{path}: the tensors were wrapped in {{'{WRAPPER_KEY}': ...}}"
            + (f" beside {_listing(others)} (ignored)" if others else "")
            + "; unwrapped",
            "wrapper unwrapped",
        )
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors")
    if sd and all(k.startswith(PARALLEL_PREFIX) for k in sd):
        sd = {k[len(PARALLEL_PREFIX) :]: v for k, v in sd.items()}
        note(
            f"{path}: every key started with '{PARALLEL_PREFIX}' (saved from DataParallel); prefix stripped",
            "prefix stripped",
        )
    return sd


def find_weights(folder, stem):
    """`folder/stem.<suffix>`, preferring .safetensors; None if absent."""
    for suffix in WEIGHT_SUFFIXES:
        path = os.path.join(folder, stem + suffix)
        if os.path.isfile(path):
            return path
    return None


def _listing(keys, limit=6):
    keys = sorted(keys)
    more = f" … (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def coverage(module, sd, optional=()):
    """(missing, unexpected, wrong_shape) keys of `sd` against `module`'s state dict.
    Keys ending in one of `optional` may be absent (deterministic buffers)."""
    own = module.state_dict()
    missing = {k for k in own if k not in sd and not k.endswith(tuple(optional))}
    unexpected = {k for k in sd if k not in own}
    wrong = {k for k in sd if k in own and tuple(sd[k].shape) != tuple(own[k].shape)}
    return missing, unexpected, wrong


def load_exact(module, sd, source, optional=()):
    """Copy `sd` into `module`: every key of the module must be there with its shape, else WeightsError
    naming the file and the keys; keys the module does not have are left out with a WeightsWarning."""
    missing, unexpected, wrong = coverage(module, sd, optional)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_listing(missing)}")
    if wrong:
        own = module.state_dict()
        shown = [f"{k} {tuple(sd[k].shape)} vs expected {tuple(own[k].shape)}" for k in sorted(wrong)[:4]]
        problems.append(f"{len(wrong)} keys of the wrong shape: " + "; ".join(shown))
    if problems:
        if unexpected:  # beside missing keys, often the same keys under another name
            problems.append(f"{len(unexpected)} unexpected keys: {_listing(unexpected)}")
        raise WeightsError(
            f"{source} does not fit the {type(module).__name__}: "
            + "; ".join(problems)
            + ". Is this the right file (see `python -m personalive_core check-weights`)?"
        )
    if unexpected:
        n = len(unexpected)
        note(
            f"{source}: {n} key{'s' if n > 1 else ''} the {type(module).__name__} does not have "
            f"{'were' if n > 1 else 'was'} ignored: {_listing(unexpected)}",
            "extra keys ignored",
        )
        sd = {k: v for k, v in sd.items() if k not in unexpected}
    # assign=True: modules built on the meta device take the loaded tensors as they are
    module.load_state_dict(sd, strict=False, assign=any(t.is_meta for t in module.state_dict().values()))
    return module


def load_strict(module, sd, file, expected):
    """`load_exact` with the message naming what file was expected."""
    try:
        return load_exact(module, sd, file)
    except WeightsError as e:
        raise WeightsError(f"{e} Expected {expected}.") from None


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def first_existing(directory, names, expected):
    """The first of `names` inside `directory`; WeightsMissing saying what was expected otherwise."""
    for name in names:
        if (Path(directory) / name).is_file():
            return Path(directory) / name
    raise WeightsMissing(f"{directory}: no weight file found; expected one of {', '.join(names)} ({expected})")


def save_state_dict(state_dict, path):
    """Write as safetensors, or as a plain pickled dict for `.bin`/`.pth` (the official layout)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state_dict = {k: v.contiguous() for k, v in state_dict.items()}
    # write beside, then rename: never truncates a file that may still be memory-mapped
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state_dict, str(tmp), metadata={"format": "pt"})  # transformers 4.36 requires it
    else:
        torch.save(state_dict, tmp)
    os.replace(tmp, path)
    return path
