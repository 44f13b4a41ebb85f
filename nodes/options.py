"""Node inputs generated from the core's config: one input per config field, named as the field, with
its default, bounds, step, choices and help (the tooltip), so a node repeats none of them; and the
values a node got, back into a StreamConfig (`node_config`), validated there."""

from comfy_api.latest import io

from ..personalive_core import StreamConfig, fields_of, preset

# inside ComfyUI the host moves, offloads and patches weights: a compiled step never freezes them
RENDER = preset("render").replace(freeze_weights=False)
LIVE = preset("live").replace(freeze_weights=False)


def config_inputs(*names, base=RENDER, notes=None, optional=()):
    """io inputs for the config fields `names`; `notes[name]` is added to that field's tooltip, the
    fields in `optional` are optional inputs (new inputs, so workflows saved before them still load)."""
    notes = notes or {}
    current = base.to_dict()
    inputs = []
    for name, info in fields_of(StreamConfig, names).items():
        spec = info.spec
        kw = {
            "default": current[name],
            "tooltip": " ".join(filter(None, [spec.help, notes.get(name)])),
            "optional": name in optional,
        }
        if spec.choices:
            inputs.append(io.Combo.Input(name, options=list(spec.choices), **kw))
        elif info.type is bool:
            inputs.append(io.Boolean.Input(name, **kw))
        else:
            bounds = {k: getattr(spec, k) for k in ("min", "max", "step") if getattr(spec, k) is not None}
            cls = io.Float if info.type is float else io.Int
            inputs.append(cls.Input(name, **bounds, **kw))
    if "seed" in names:  # the host's own seed widget behaviour
        seed = next(i for i in inputs if i.id == "seed")
        seed.control_after_generate = True
    return inputs


def node_config(options, base=RENDER):
    """The node's config inputs (`options`, by field name) over `base`; a bad value raises ConfigError
    naming the input."""
    return base.replace(**options)
