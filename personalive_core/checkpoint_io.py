"""Reading weight files safely and loading them strictly.

Safetensors is preferred; pickled `.bin`/`.pth` files go through `torch.load(weights_only=True)`
so no arbitrary object is ever unpickled. Every mismatch between a file and the module it is
meant for raises a ValueError naming the file, a few offending keys and what file was expected,
instead of silently leaving random weights behind.
"""
import json
from pathlib import Path

import torch
from torch import nn

PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt")
SHOWN = 5  # offending keys listed per category


def read_state_dict(path):
    """All tensors of a `.safetensors` or pickled state-dict file, on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: weight file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    if path.suffix not in PICKLE_SUFFIXES:
        raise ValueError(f"{path}: unsupported weight file type (expected .safetensors or "
                         f"{'/'.join(PICKLE_SUFFIXES)})")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the weights_only unpickler refuses anything but tensors/containers
        raise ValueError(f"{path}: cannot be read as a plain state dict ({e})") from e
    # Lightning/LDM checkpoints wrap the tensors in {"state_dict": {...}}
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path}: expected a flat mapping of parameter names to tensors")
    return sd


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def first_existing(directory, names, expected):
    """The first of `names` inside `directory`; ValueError saying what was expected otherwise."""
    for name in names:
        if (Path(directory) / name).is_file():
            return Path(directory) / name
    raise ValueError(f"{directory}: no weight file found; expected one of {', '.join(names)} "
                     f"({expected})")


def _few(keys):
    keys = sorted(keys)
    more = f" ... (+{len(keys) - SHOWN} more)" if len(keys) > SHOWN else ""
    return ", ".join(keys[:SHOWN]) + more


def check_keys(module, state_dict, file, expected):
    """Raise a ValueError naming `file` if `state_dict` does not match `module` key for key."""
    want = {k: v.shape for k, v in module.state_dict().items()}
    missing = want.keys() - state_dict.keys()
    unexpected = state_dict.keys() - want.keys()
    bad_shape = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(want[k])}"
                 for k in sorted(want.keys() & state_dict.keys()) if state_dict[k].shape != want[k]]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_few(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_few(unexpected)}")
    if bad_shape:
        problems.append(f"{len(bad_shape)} wrong shape(s) (file vs model): {_few(bad_shape)}")
    if problems:
        raise ValueError(f"{file}: does not match {expected}; " + "; ".join(problems))


def load_strict(module, state_dict, file, expected):
    """Check keys/shapes, then copy the tensors into `module` (which may live on the meta device)."""
    check_keys(module, state_dict, file, expected)
    module.load_state_dict(state_dict, strict=True, assign=True)
    return module


def random_state_dict(module, seed, gain=1.0):
    """Deterministic random weights with the module's keys and shapes, scaled so activations stay O(1).

    Matrices/kernels get std gain/sqrt(fan_in); norm scales (LayerNorm, GroupNorm, BatchNorm)
    1 + 0.1·N(0,1); biases and other vectors 0.02·N(0,1); buffers keep the module's values.
    Used to write random checkpoints for tests and benchmarks.
    """
    norms = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d)
    norm_params = {f"{name}.weight" for name, m in module.named_modules() if isinstance(m, norms)}
    params = {name for name, _ in module.named_parameters()}
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, t in module.state_dict().items():
        if key not in params:
            out[key] = t.clone() if t.device.type != "meta" else torch.zeros(t.shape, dtype=t.dtype)
            continue
        noise = torch.randn(t.shape, generator=g)
        if key in norm_params:
            out[key] = 1 + 0.1 * noise
        elif t.dim() >= 2:
            out[key] = noise * (gain / t[0].numel() ** 0.5)
        else:
            out[key] = 0.02 * noise
    return out


def save_state_dict(state_dict, path):
    """Write as safetensors, or as a plain pickled dict for `.bin`/`.pth` (the official layout)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state_dict = {k: v.contiguous() for k, v in state_dict.items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file(state_dict, str(path), metadata={"format": "pt"})  # transformers 4.36 requires it
    else:
        torch.save(state_dict, path)
    return path
