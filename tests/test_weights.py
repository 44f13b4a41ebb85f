import os
import shutil
import warnings

import pytest
import torch

from personalive_core.pipelines import check_weights as report
from personalive_core.models.loader import find_layout, load_models
from personalive_core.pipelines import convert_to_safetensors
from personalive_core.errors import WeightsWarning
from personalive_core.models.weights import WeightsError, read_state_dict, save_state_dict


@pytest.fixture
def weights_copy(tiny_weights, tmp_path):
    dst = tmp_path / "w"
    shutil.copytree(tiny_weights, dst)
    return dst


def test_official_layout_found_in_both_roots(tiny_weights, tmp_path):
    layout = find_layout(tiny_weights)
    assert all(layout.personalive.values()) and layout.image_encoder and layout.vae
    nested = tmp_path / "x" / "pretrained_weights"
    shutil.copytree(tiny_weights, nested)
    assert find_layout(tmp_path / "x").personalive["pose_guider"].endswith("pose_guider.pth")


def test_check_weights_ok(tiny_weights):
    ok, lines = report(tiny_weights)
    assert ok, lines
    assert sum(line.startswith("ok") for line in lines) == 7
    assert not any(line.startswith("note") for line in lines)


def test_missing_file_names_it_and_the_layout(weights_copy):
    os.remove(weights_copy / "personalive" / "motion_encoder.pth")
    with pytest.raises(WeightsError, match="motion_encoder.pth.*expected under"):
        load_models(weights_copy)
    ok, lines = report(weights_copy)
    assert not ok and any(line.startswith("MISSING personalive/motion_encoder") for line in lines)


def test_truncated_checkpoint_is_refused_with_keys(weights_copy):
    """The official loader would silently keep random weights here (strict=False)."""
    path = weights_copy / "personalive" / "temporal_module.pth"
    sd = read_state_dict(path)
    dropped = sorted(sd)[0]
    del sd[dropped]
    save_state_dict(sd, path)
    with pytest.raises(WeightsError, match="missing keys: " + dropped.split(".")[0]):
        load_models(weights_copy)


def test_renamed_prefix_and_wrong_shape_are_refused(weights_copy):
    path = weights_copy / "personalive" / "motion_extractor.pth"
    sd = read_state_dict(path)
    save_state_dict({k.replace("detector.", "model."): v for k, v in sd.items()}, path)
    with pytest.raises(WeightsError, match="motion_extractor.pth"):
        load_models(weights_copy)
    save_state_dict(sd, path)
    path = weights_copy / "personalive" / "pose_guider.pth"
    sd = read_state_dict(path)
    save_state_dict({**sd, "conv_in.bias": torch.zeros(3)}, path)
    with pytest.raises(WeightsError, match=r"pose_guider.pth.*wrong shape: conv_in.bias \(3,\)"):
        load_models(weights_copy)


def test_pickles_with_objects_are_not_unpickled(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(1), "obj": _Thing()}, path)
    with pytest.raises(WeightsError, match="cannot read weights"):
        read_state_dict(path)


class _Thing:
    pass


def test_safetensors_twins_load_identically(weights_copy, tiny_models):
    written = convert_to_safetensors(weights_copy)
    assert len(written) == 6
    for name in (
        "denoising_unet",
        "temporal_module",
        "reference_unet",
        "pose_guider",
        "motion_encoder",
        "motion_extractor",
    ):
        os.remove(weights_copy / "personalive" / f"{name}.pth")
    twin = load_models(weights_copy)
    for (name, a), b in zip(tiny_models.modules().items(), twin.modules().values()):
        for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(va, vb), (name, k)


def test_denoiser_state_dict_is_freed_before_the_next_file(tiny_weights, monkeypatch):
    """Peak memory of a load: the denoiser's state dict (6.7 GB at the published size) must be gone
    before the reference UNet's file is read (it stayed alive until the end: 19.8 GB peak RSS for
    the full-size float32 set instead of 13.4 GB)."""
    import gc
    import weakref
    from personalive_core.models import loader as models

    real, held, checked = models.read_state_dict, [], []

    def read(path):
        if "reference_unet" in str(path):
            gc.collect()
            checked.append([r() is None for r in held])
        sd = real(path)
        if "denoising_unet" in str(path) or "temporal_module" in str(path):
            held.append(weakref.ref(next(iter(sd.values()))))
        return sd

    monkeypatch.setattr(models, "read_state_dict", read)
    models.build_personalive_networks(find_layout(tiny_weights).personalive)
    assert len(held) == 2 and checked == [[True, True]]


def test_the_normal_files_load_without_a_note(tiny_weights):
    with warnings.catch_warnings():
        warnings.simplefilter("error", WeightsWarning)
        load_models(tiny_weights)


def _save(obj, path):
    """torch.save beside, then rename: the tensors read from `path` are memory-mapped from it."""
    torch.save(obj, f"{path}.tmp")
    os.replace(f"{path}.tmp", path)


def test_extra_keys_a_state_dict_wrapper_and_a_module_prefix_load_with_notes(weights_copy, tiny_models):
    """As the published files may come: keys the module lacks (the official loads three files with
    strict=False), a training checkpoint's {"state_dict": ...}, DataParallel's `module.` prefix. The networks
    get exactly the tensors of the normal files; each adjustment is a warning naming the file, and
    check-weights lists it."""
    folder = weights_copy / "personalive"
    sd = read_state_dict(folder / "pose_guider.pth")
    save_state_dict({**sd, "head.weight": torch.zeros(2), "head.bias": torch.zeros(3)}, folder / "pose_guider.pth")
    sd = read_state_dict(folder / "temporal_module.pth")
    save_state_dict({**sd, "down_blocks.0.motion_modules.9.extra": torch.zeros(1)}, folder / "temporal_module.pth")
    _save({"state_dict": read_state_dict(folder / "motion_encoder.pth"), "epoch": 7}, folder / "motion_encoder.pth")
    sd = read_state_dict(folder / "reference_unet.pth")
    _save({f"module.{k}": v for k, v in sd.items()}, folder / "reference_unet.pth")

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", WeightsWarning)
        models = load_models(weights_copy)
    notes = {str(w.message): w.message.kind for w in seen if issubclass(w.category, WeightsWarning)}
    assert sorted(notes.values()) == [
        "extra keys ignored",
        "extra keys ignored",
        "prefix stripped",
        "wrapper unwrapped",
    ]
    expected = [
        "pose_guider.pth: 2 keys the PoseGuider does not have were ignored: head.bias, head.weight",
        "temporal_module.pth: 1 key the UNet does not have was ignored: down_blocks.0.motion_modules.9.extra",
        "reference_unet.pth: every key started with 'module.'",
        "motion_encoder.pth: the tensors were wrapped in {'state_dict': ...} beside epoch (ignored); unwrapped",
    ]
    for text in expected:
        assert any(text in message for message in notes), (text, notes)
    for (name, a), b in zip(tiny_models.modules().items(), models.modules().values()):
        for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(va, vb), (name, k)

    ok, lines = report(weights_copy)
    assert ok, lines
    shown = [line for line in lines if line.startswith("note")]
    assert any(line.startswith("note    personalive/pose_guider: extra keys ignored: ") for line in shown), shown
    assert any(
        line.startswith("note    personalive/denoising_unet + temporal_module: extra keys ignored: ") for line in shown
    ), shown
    assert any(line.startswith("note    personalive/reference_unet: prefix stripped: ") for line in shown), shown
    assert any(line.startswith("note    personalive/motion_encoder: wrapper unwrapped: ") for line in shown), shown


def test_a_missing_key_still_stops_a_wrapped_file(weights_copy):
    path = weights_copy / "personalive" / "motion_encoder.pth"
    sd = read_state_dict(path)
    dropped = sorted(sd)[0]
    del sd[dropped]
    _save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    with (
        pytest.raises(WeightsError, match=f"motion_encoder.pth does not fit.*1 missing keys: {dropped}"),
        pytest.warns(WeightsWarning),
    ):
        load_models(weights_copy)
    ok, lines = report(weights_copy)
    assert not ok and any(line.startswith("BAD     personalive/motion_encoder") for line in lines)
