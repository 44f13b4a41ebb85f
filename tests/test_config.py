"""The one typed config (config.py): every default, range and choice lives there, a value is checked
once, when a config is made, and the flat {name: value} mapping round-trips through JSON. The command
line's flags and the live protocol are generated from it (checked against the config itself here; the
node schema in test_nodes.py)."""

import argparse
import json

import pytest
import torch

from personalive_core.cli.main import parser
from personalive_core.cli.options import RENDER_FIELDS, config_from_args, flag
from personalive_core.config import ConfigError, MotionControls, SpeedOptions, StreamConfig, fields_of, preset
from personalive_core.live.server import protocol


def test_defaults_are_the_official_ones():
    c = StreamConfig()
    assert (c.size, c.seed, c.keep_warmup, c.official_quirks) == (512, 0, False, True)
    assert (c.keyframes.keyframe_threshold, c.keyframes.max_keyframes, c.keyframes.first_keyframe_chunk) == (17.0, 3, 9)
    assert c.controls.identity and (c.framing.crop, c.framing.crop_scale) == ("center", 1.75)
    assert preset("live").size == 256 and preset("live").replace(size=512, crop="center") == StreamConfig()


def test_every_field_has_help_and_a_valid_default():
    infos = fields_of(StreamConfig)
    assert len(infos) == len(StreamConfig().to_dict()) > 25  # flat names are unique across the parts
    for name, info in infos.items():
        assert info.spec.help.strip(), name
        assert StreamConfig().replace(**{name: info.default}) == StreamConfig()


@pytest.mark.parametrize(
    "values, field, words",
    [
        ({"head_pose": 3}, "head_pose", "between 0 and 2"),
        ({"size": 100}, "size", "multiple of 64"),
        ({"size": 0}, "size", "between 64 and 2048"),
        ({"crop": "face"}, "crop", "center, auto"),
        ({"keep_warmup": 1}, "keep_warmup", "true or false"),
        ({"seed": -1}, "seed", "between 0 and 18446744073709551615"),
        ({"expression": float("nan")}, "expression", "finite"),
        ({"headpose": 1}, "headpose", "did you mean 'head_pose'"),
        ({"paste_into": "driving"}, "paste_into", "needs crop 'auto'"),
    ],
)
def test_a_bad_value_names_its_field(values, field, words):
    with pytest.raises(ConfigError) as e:
        StreamConfig().replace(**values)
    assert e.value.field == field and words in str(e.value) and field in str(e.value).split(":")[0]


def test_round_trip_through_json():
    c = StreamConfig().replace(seed=7, head_pose=0.5, crop="auto", paste_into="driving", compile=True, dtype="bf16")
    flat = json.loads(json.dumps(c.to_dict()))
    assert StreamConfig.from_dict(flat) == c
    assert (
        StreamConfig.from_dict({"seed": 7}).seed == 7 and MotionControls.from_dict({"smoothness": 1}).smoothness == 1.0
    )
    with pytest.raises(ConfigError, match="unknown option 'seed'"):
        MotionControls.from_dict({"seed": 1})  # a part knows its own fields only


def test_configs_are_frozen_and_ints_become_floats():
    c = StreamConfig().replace(expression=2)
    assert c.controls.expression == 2.0 and isinstance(c.controls.expression, float)
    with pytest.raises(AttributeError):
        c.seed = 3


def test_auto_speed_options_are_decided_per_device():
    cpu = SpeedOptions().resolve("cpu", torch.float32)
    assert (cpu.channels_last, cpu.onednn_linear, cpu.reuse_memory, cpu.cudnn_benchmark) == (True, True, True, False)
    assert SpeedOptions().resolve("cpu", torch.bfloat16).onednn_linear is False
    cuda = SpeedOptions().resolve("cuda", torch.float16)
    assert (cuda.channels_last, cuda.onednn_linear, cuda.reuse_memory, cuda.cudnn_benchmark) == (
        False,
        False,
        False,
        True,
    )
    assert SpeedOptions(channels_last=False).resolve("cpu", torch.float32).channels_last is False  # a choice stands
    assert StreamConfig().replace(compile=True).speed.static


def _render_parser():
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["render"]


def test_render_flags_are_generated_from_the_config():
    actions = {a.dest: a for a in _render_parser()._actions}
    for name, info in fields_of(StreamConfig).items():
        assert name in RENDER_FIELDS
        action = actions[name]
        assert action.option_strings[0] == flag(name) and action.default is None  # the config's default applies
        assert (
            info.spec.help.replace("%", "%%") in action.help
            and f"(default: {info.default if info.default is not None else 'auto'})" in action.help
        )
        if info.spec.choices:
            assert tuple(action.choices) == info.spec.choices
        if info.type is bool:
            assert isinstance(action, argparse.BooleanOptionalAction)
        else:
            assert action.type is info.type


def test_flags_become_a_config_and_bad_values_name_the_flag():
    args = _render_parser().parse_args(
        [
            "--weights",
            "w",
            "--reference",
            "r",
            "--driving",
            "d",
            "--out",
            "o",
            "--head-pose",
            "0.5",
            "--no-official-quirks",
            "--max-keyframes",
            "0",
        ]
    )
    c = config_from_args(args, RENDER_FIELDS)
    assert (c.controls.head_pose, c.official_quirks, c.keyframes.max_keyframes, c.size) == (0.5, False, 0, 512)
    bad = _render_parser().parse_args(
        ["--weights", "w", "--reference", "r", "--driving", "d", "--out", "o", "--smoothness", "2"]
    )
    with pytest.raises(ConfigError, match=r"^--smoothness 2.0: must be between 0 and 1"):
        config_from_args(bad, RENDER_FIELDS)


def test_the_live_protocol_is_generated_from_the_config():
    described = protocol()["controls"]
    assert list(described) == list(fields_of(MotionControls))
    for name, info in fields_of(MotionControls).items():
        d = described[name]
        assert (d["default"], d["min"], d["max"], d["step"], d["help"]) == (
            info.default,
            info.spec.min,
            info.spec.max,
            info.spec.step,
            info.spec.help,
        )
