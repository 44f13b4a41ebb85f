"""The ComfyUI nodes, called directly inside this process (no server).

Needs `COMFYUI_PATH` (a ComfyUI checkout, v0.3.64 or newer, whose requirements this Python has);
skipped otherwise. The host's CLIP_VISION and VAE are stood in for by thin objects around the core's
tiny image encoder and VAE (same methods as `comfy.clip_vision.ClipVisionModel.encode_image` and
`comfy.sd.VAE.encode/decode`), so the node graph can be compared frame for frame with the core's
`render_stream` on the same tiny weights. tests/test_comfy_host.py runs the real host loaders.
"""

import asyncio
import copy
import json
import os
import shutil

import numpy as np
import pytest
import torch

from conftest import moving_frames

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMFY = os.environ.get("COMFYUI_PATH")
SIZE = 64

pytestmark = pytest.mark.skipif(
    not COMFY or not os.path.isfile(os.path.join(COMFY, "main.py")),
    reason="set COMFYUI_PATH to a ComfyUI checkout (with main.py) to run the node tests",
)


def load_extension():
    """ComfyUI (CPU) and this repository as a custom-node package, as the host imports it (tests/pack.py:
    one copy of the core in this process, the pack's)."""
    import pack

    return pack.load(COMFY)


@pytest.fixture(scope="module")
def ext():
    return load_extension()


@pytest.fixture(scope="module")
def N(ext):
    return ext.nodes


class Folders:
    """The registered personalive folders, replaceable by tests (ComfyUI's file-list cache cleared)."""

    def __init__(self):
        import folder_paths

        self.fp = folder_paths
        self.paths = folder_paths.folder_names_and_paths["personalive"][0]
        self.saved = list(self.paths)

    def set(self, *paths):
        self.paths[:] = [str(p) for p in paths]
        self.fp.filename_list_cache.pop("personalive", None)

    def restore(self):
        self.set(*self.saved)


@pytest.fixture()
def weights_folder(N, tiny_weights):
    """models/personalive pointing at the tiny weights (restored afterwards)."""
    folders = Folders()
    folders.set(os.path.join(tiny_weights, "personalive"))
    yield folders
    folders.restore()


@pytest.fixture()
def model(N, weights_folder):
    return N.load_model.PersonaLiveLoadModel.execute("personalive", dtype="auto").result[0]


class FakeClipVision:
    """CLIP_VISION stand-in over the core image encoder (encode_image → .image_embeds)."""

    def __init__(self, encoder):
        self.encoder = encoder

    def encode_image(self, image, crop=True):
        from personalive_core.pipelines import clip_pixels, image_to_uint8
        from PIL import Image

        out = type("Output", (), {})()
        out.image_embeds = self.encoder(clip_pixels(Image.fromarray(image_to_uint8(image[0]))))
        return out


class FakeVAE:
    """VAE stand-in over the core AutoencoderKL: IMAGE 0..1 ↔ unscaled latents."""

    latent_channels, downscale_ratio = 4, 8

    def __init__(self, vae):
        self.vae = vae

    def encode(self, pixels):
        return self.vae.encode(pixels.movedim(-1, 1) * 2 - 1).latent_dist.mean

    def decode(self, latents):
        return (self.vae.decode(latents).sample.permute(0, 2, 3, 1) / 2 + 0.5).clamp(0, 1)


@pytest.fixture()
def host_models(tiny_models):
    return FakeClipVision(tiny_models.image_encoder), FakeVAE(tiny_models.vae)


def as_image(frames_u8):
    return torch.from_numpy(np.stack(frames_u8)).float() / 255


@pytest.fixture(scope="module")
def reference_u8():
    return moving_frames(1, 96, seed=3)[0][:80]  # 80×96: not square


def encode(N, model, clip, vae, image, size=SIZE, resize="stretch"):
    return N.encode_reference.PersonaLiveEncodeReference.execute(
        model, clip, vae, image, size=size, resize=resize
    ).result[0]


def extract(N, model, image, size=SIZE, resize="stretch", preview="keypoints", **kw):
    """Extract Motion with the schema's defaults for the inputs not given (as the host fills them in)."""
    return N.extract_motion.PersonaLiveExtractMotion.execute(
        model, image, preview, size=size, resize=resize, **kw
    ).result


def sample(N, model, reference, motion, vae, seed=0, **kw):
    return N.sampler.PersonaLiveStreamSampler.execute(model, reference, motion, vae, seed=seed, **kw).result


def run_graph(N, model, clip, vae, ref_u8, driving, size=SIZE, seed=0, resize="stretch", **sampler):
    ref = as_image([ref_u8])
    reference = encode(N, model, clip, vae, ref, size, resize)
    motion, preview, fps, audio = extract(N, model, ref, size, resize, driving_images=as_image(driving))
    images, latent = sample(N, model, reference, motion, vae, seed, **sampler)
    return reference, motion, preview, images, latent


def as_loaded(tiny_models):
    """A copy of the core models whose five PersonaLive networks are prepared as the loader node prepares
    them for a CPU (channels-last, oneDNN linear layers): the same kernels, so node and core agree to float32
    rounding (the tiny models amplify any other kernel's rounding to O(0.1); that the options keep the
    frames is tested on damped models in test_rewrites.py)."""
    from personalive_core.config import SpeedOptions
    from personalive_core.models.rewrites import apply_rewrites

    models = copy.deepcopy(tiny_models)
    apply_rewrites(
        [
            models.denoising_unet,
            models.reference_unet,
            models.pose_guider,
            models.motion_encoder,
            models.motion_extractor,
        ],
        SpeedOptions().resolve("cpu", torch.float32),
    )
    return models


def core_render(tiny_models, ref_u8, driving, size=SIZE, seed=0, keep_warmup=False, threshold=17.0):
    from PIL import Image
    from personalive_core.config import StreamConfig
    from personalive_core.media.video_io import square
    from personalive_core.pipelines import encode_reference, prepare_reference
    from personalive_core.streaming.render import render_stream

    frames = [np.asarray(square(Image.fromarray(f), size)) for f in driving]
    tiny_models = as_loaded(tiny_models)
    with torch.no_grad():
        reference = encode_reference(tiny_models, prepare_reference(Image.fromarray(ref_u8), size))
        config = StreamConfig(seed=seed, keep_warmup=keep_warmup).replace(keyframe_threshold=threshold)
        return np.stack(list(render_stream(tiny_models, reference, frames, config)))


# -- registration and schemas --------------------------------------------------------------------------
def test_entrypoint_lists_the_nodes(ext):
    extension = asyncio.run(ext.comfy_entrypoint())
    nodes = asyncio.run(extension.get_node_list())
    ids = [n.define_schema().node_id for n in nodes]
    assert ids[:4] == [
        "PersonaLiveLoadModel",
        "PersonaLiveEncodeReference",
        "PersonaLiveExtractMotion",
        "PersonaLiveStreamSampler",
    ]
    assert len(set(ids)) == len(ids) and all(i.startswith("PersonaLive") for i in ids)


def test_schemas_have_prefix_category_and_tooltips(ext):
    for node in ext.NODES:
        schema = node.define_schema()
        assert schema.node_id.startswith("PersonaLive") and schema.category == "PersonaLive"
        assert schema.description
        for item in schema.inputs:
            assert item.tooltip, f"{schema.node_id}.{item.id} has no tooltip"
        for item in schema.outputs:
            assert item.tooltip, f"{schema.node_id} output {item.display_name} has no tooltip"


def test_config_inputs_are_generated_from_the_config(ext):
    """Every node input named as a config field carries that field's default (the preset's for the live
    node), bounds, step, choices and help: nothing is copied by hand."""
    from comfy_api.latest import io
    from personalive_core import StreamConfig, fields_of, preset

    infos = fields_of(StreamConfig)
    seen = set()
    for node in ext.NODES:
        schema = node.define_schema()
        base = preset("live" if schema.node_id == "PersonaLiveLive" else "render").to_dict()
        for item in schema.inputs:
            info = infos.get(item.id)
            if info is None:
                continue
            seen.add(item.id)
            assert item.default == base[item.id] and info.spec.help in item.tooltip, (schema.node_id, item.id)
            if info.spec.choices:
                assert isinstance(item, io.Combo.Input) and tuple(item.options) == info.spec.choices
            elif info.type is bool:
                assert isinstance(item, io.Boolean.Input)
            else:
                assert isinstance(item, io.Float.Input if info.type is float else io.Int.Input)
                assert (item.min, item.max, item.step) == (info.spec.min, info.spec.max, info.spec.step)
    assert {
        "size",
        "seed",
        "dtype",
        "compile",
        "expression",
        "head_pose",
        "smoothness",
        "keyframe_threshold",
        "max_keyframes",
        "crop",
        "paste_into",
        "crop_scale",
        "feather",
        "resize",
        "max_frames",
    } <= seen


def test_model_folder_registered(N):
    import folder_paths

    paths, extensions = folder_paths.folder_names_and_paths["personalive"]
    assert os.path.join(folder_paths.models_dir, "personalive") in paths
    assert {".pth", ".safetensors"} <= set(extensions)


def test_model_folder_keeps_extra_model_paths(N, tmp_path):
    """A `personalive:` entry of extra_model_paths.yaml (added before the extension loads) is kept."""
    import folder_paths

    saved = folder_paths.folder_names_and_paths.pop("personalive")
    try:
        folder_paths.add_model_folder_path("personalive", str(tmp_path))  # what the yaml loader does
        N.common.register_model_folder()
        paths, extensions = folder_paths.folder_names_and_paths["personalive"]
        assert paths == [str(tmp_path), os.path.join(folder_paths.models_dir, "personalive")]
        assert ".safetensors" in extensions and ".txt" not in extensions
    finally:
        folder_paths.folder_names_and_paths["personalive"] = saved
        folder_paths.filename_list_cache.pop("personalive", None)


def test_weight_sets_lists_subfolders(N, tiny_weights, tmp_path, weights_folder):
    root = tmp_path / "personalive"
    shutil.copytree(os.path.join(tiny_weights, "personalive"), root / "v2")
    shutil.copy(os.path.join(tiny_weights, "personalive", "pose_guider.pth"), root / "stray.pth")
    weights_folder.set(root)
    assert N.common.weight_sets() == ["personalive/v2"]
    assert set(N.load_model.resolve_files("personalive/v2")) == set(N.load_model.PERSONALIVE_FILES)
    weights_folder.set(tmp_path / "empty")
    assert N.common.weight_sets() == ["personalive"]  # still a valid combo value; loading then explains


# -- loading -------------------------------------------------------------------------------------------
def test_load_model_gives_a_managed_patcher(N, model):
    import comfy.model_management as mm
    import comfy.model_patcher

    assert isinstance(model, comfy.model_patcher.ModelPatcher)
    assert model.model.info.dtype == torch.float32  # auto on the CPU
    m = N.common.load_networks(model, SIZE)
    assert any(lm.model is model for lm in mm.current_loaded_models)
    assert m.device.type == "cpu" and m.dtype == torch.float32


def test_missing_files_error_lists_files_and_folders(N, tiny_weights, tmp_path, weights_folder):
    folder = tmp_path / "personalive"
    folder.mkdir()
    shutil.copy(os.path.join(tiny_weights, "personalive", "denoising_unet.pth"), folder)
    weights_folder.set(folder)
    with pytest.raises(FileNotFoundError) as e:  # the first-use download: tests/test_nodes_download.py
        N.load_model.PersonaLiveLoadModel.execute("personalive", dtype="auto", download_missing=False)
    message = str(e.value)
    for name in (
        "temporal_module",
        "reference_unet",
        "pose_guider",
        "motion_encoder",
        "motion_extractor",
        str(folder),
        "models/clip_vision",
        "models/vae",
        "huaichang/PersonaLive",
    ):
        assert name in message, message


def test_wrong_file_error_names_it(N, tiny_weights, tmp_path, weights_folder):
    folder = tmp_path / "personalive"
    shutil.copytree(os.path.join(tiny_weights, "personalive"), folder)
    shutil.copy(folder / "motion_encoder.pth", folder / "pose_guider.pth")  # a wrong file under a right name
    weights_folder.set(folder)
    with pytest.raises(ValueError) as e:
        N.load_model.PersonaLiveLoadModel.execute("personalive", dtype="auto")
    assert "pose_guider.pth" in str(e.value) and "PoseGuider" in str(e.value), str(e.value)


def test_fp16_on_cpu_is_refused(N, weights_folder):
    with pytest.raises(ValueError, match="fp16 is not supported on the CPU"):
        N.load_model.PersonaLiveLoadModel.execute("personalive", dtype="fp16")


# -- the graph against the core ------------------------------------------------------------------------
def test_graph_matches_core_render(N, model, host_models, tiny_models, reference_u8):
    """26 driving frames (last chunk partial, 10 chunks so the historical-keyframe test runs; threshold 0
    so a keyframe is taken): the sampler's frames equal the core's render_stream frames."""
    driving = moving_frames(26, 80)
    clip, vae = host_models
    reference, motion, preview, images, latent = run_graph(
        N, model, clip, vae, reference_u8, driving, keyframe_threshold=0.0
    )
    expected = core_render(tiny_models, reference_u8, driving, threshold=0.0)
    assert images.shape == (26, SIZE, SIZE, 3) and images.dtype == torch.float32
    np.testing.assert_allclose(images.numpy(), expected, atol=1e-5)
    assert len(motion.track.chunks) == 10 and motion.track.frames == 26
    # LATENT: unscaled SD latents that decode to the same frames
    assert latent["samples"].shape == (26, 4, SIZE // 8, SIZE // 8)
    with torch.no_grad():
        decoded = vae.decode(latent["samples"])
    np.testing.assert_allclose(decoded.numpy(), images.numpy(), atol=1e-5)
    assert preview.shape == (26, SIZE, SIZE, 3)


def test_keep_warmup_outputs_the_interpolation_frames(N, model, host_models, tiny_models, reference_u8):
    driving = moving_frames(3, 64)
    clip, vae = host_models
    *_, images, latent = run_graph(N, model, clip, vae, reference_u8, driving, seed=5, keep_warmup=True)
    expected = core_render(tiny_models, reference_u8, driving, seed=5, keep_warmup=True)
    assert images.shape[0] == 12 + 3 == latent["samples"].shape[0]
    np.testing.assert_allclose(images.numpy(), expected, atol=1e-5)


def test_reference_is_reused_across_runs(N, model, host_models, reference_u8):
    """One encoded reference, two sampler runs (other seed), no re-encoding; same seed → same frames."""
    clip, vae = host_models
    driving = moving_frames(4, 64)
    reference, motion, _, first, _ = run_graph(N, model, clip, vae, reference_u8, driving, seed=1)
    again = sample(N, model, reference, motion, vae, 1)[0]
    other = sample(N, model, reference, motion, vae, 2)[0]
    assert torch.equal(first, again) and not torch.equal(first, other)


# -- driving input -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def driving_video(tmp_path_factory):
    from test_comfy_host import make_media

    return make_media(str(tmp_path_factory.mktemp("media")), frames=9, fps=12)


def test_video_input_streams_like_the_image_batch(N, model, reference_u8, driving_video):
    from comfy_api.latest import InputImpl

    video = InputImpl.VideoFromFile(driving_video[1])
    parts = video.get_components()
    ref = as_image([reference_u8])
    a, prev_a, fps_a, audio_a = extract(N, model, ref, driving_images=parts.images, preview="side by side")
    b, prev_b, fps_b, audio_b = extract(N, model, ref, driving_video=video, preview="side by side")
    assert a.track.frames == b.track.frames == 9 and len(a.track.chunks) == len(b.track.chunks)
    for x, y in zip(a.track.chunks, b.track.chunks):
        assert torch.equal(x.keypoints, y.keypoints) and torch.equal(x.tokens, y.tokens)
    assert torch.equal(prev_a, prev_b) and prev_a.shape == (9, SIZE, 2 * SIZE, 3)
    assert fps_b == float(parts.frame_rate) == 12.0 and fps_a == 25.0  # an IMAGE batch carries no rate
    assert audio_a is None and audio_b["sample_rate"] == 16000
    assert torch.equal(audio_b["waveform"], parts.audio["waveform"])


def test_max_frames_cuts_frames_and_audio(N, model, reference_u8, driving_video):
    from comfy_api.latest import InputImpl

    video = InputImpl.VideoFromFile(driving_video[1])
    motion, preview, fps, audio = extract(
        N, model, as_image([reference_u8]), driving_video=video, max_frames=5, preview="none"
    )
    assert motion.track.frames == 5 and len(motion.track.chunks) == 2 + 3
    assert preview.shape == (1, 64, 64, 3)
    assert audio["waveform"].shape[-1] == round(5 / 12 * 16000)


# -- mistakes ------------------------------------------------------------------------------------------
def test_mismatched_reference_and_motion_are_refused(N, model, host_models, reference_u8):
    from personalive_core import InputError

    clip, vae = host_models
    ref = as_image([reference_u8])
    other = as_image([moving_frames(1, 96, seed=9)[0]])
    reference = encode(N, model, clip, vae, ref)
    driving = as_image(moving_frames(4, 64))
    with pytest.raises(InputError, match="different reference picture"):
        sample(N, model, reference, extract(N, model, other, driving_images=driving)[0], vae)
    with pytest.raises(InputError, match="different reference picture"):
        sample(N, model, reference, extract(N, model, ref, resize="center crop", driving_images=driving)[0], vae)
    with pytest.raises(InputError, match="size 128"):
        sample(N, model, reference, extract(N, model, ref, 128, driving_images=driving)[0], vae)
    with pytest.raises(InputError, match="PersonaLive Encode Reference"):
        sample(N, model, "not a reference", None, vae)


def test_bad_inputs_are_explained(N, model, host_models, reference_u8):
    from personalive_core import InputError

    clip, vae = host_models
    ref = as_image([reference_u8])
    with pytest.raises(InputError, match="batch of 2"):
        encode(N, model, clip, vae, ref.repeat(2, 1, 1, 1))
    with pytest.raises(InputError, match="size 100: must be a multiple of 64"):
        encode(N, model, clip, vae, ref, 100)
    with pytest.raises(InputError, match="exactly one driving input"):
        extract(N, model, ref)
    with pytest.raises(InputError, match="no frames"):
        extract(N, model, ref, driving_images=ref[:0])
    with pytest.raises(InputError, match="preview 'movie': use one of keypoints"):
        extract(N, model, ref, preview="movie", driving_images=as_image(moving_frames(4, 64)))

    class WideClip(FakeClipVision):
        def encode_image(self, image, crop=True):
            out = type("Output", (), {})()
            out.image_embeds = torch.zeros(1, 1024)
            return out

    with pytest.raises(InputError, match="1024-d image embeddings but the PersonaLive UNets expect 16-d"):
        encode(N, model, WideClip(None), vae, ref)

    class FluxVAE(FakeVAE):
        latent_channels = 16

    with pytest.raises(InputError, match="SD 1.x latent space"):
        encode(N, model, clip, FluxVAE(None), ref)


def test_extract_motion_applies_the_motion_controls(N, model, reference_u8):
    """expression 0: every driving frame carries the reference's own motion tokens (the first warm-up row);
    the defaults given explicitly change nothing; a value out of range is refused, named."""
    from personalive_core import InputError

    ref, driving = as_image([reference_u8]), as_image(moving_frames(8, 80))
    plain = extract(N, model, ref, driving_images=driving)[0].track
    explicit = extract(N, model, ref, driving_images=driving, expression=1.0, head_pose=1.0, smoothness=0.0)[0].track
    still = extract(N, model, ref, driving_images=driving, expression=0.0)[0].track
    assert all(
        torch.equal(a.tokens, b.tokens) and torch.equal(a.keypoints, b.keypoints)
        for a, b in zip(plain.chunks, explicit.chunks)
    )
    ref_tokens = still.chunks[0].tokens[:1]
    assert all(torch.equal(c.tokens[-4:], ref_tokens.expand(4, -1, -1)) for c in still.chunks)
    assert not torch.equal(plain.chunks[1].tokens, still.chunks[1].tokens)
    with pytest.raises(InputError, match="head_pose 3.0: must be between 0 and 2"):
        extract(N, model, ref, driving_images=driving, head_pose=3.0)


# -- host integration: progress, previews, interrupt ---------------------------------------------------
def test_progress_previews_and_interrupt(N, model, host_models, reference_u8):
    import comfy.model_management as mm
    import comfy.utils

    clip, vae = host_models
    ref = as_image([reference_u8])
    reference = encode(N, model, clip, vae, ref)
    motion = extract(N, model, ref, driving_images=as_image(moving_frames(5, 64)))[0]
    calls = []
    saved = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(
        lambda value, total, preview, node_id=None: calls.append((value, total, preview))
    )
    try:
        sample(N, model, reference, motion, vae)
        assert [c[:2] for c in calls] == [(k, 5) for k in range(1, 6)]
        previews = [c[2] for c in calls if c[2] is not None]
        assert len(previews) == 2 and previews[0][0] == "JPEG" and previews[0][1].size == (SIZE, SIZE)
        mm.interrupt_current_processing(True)
        with pytest.raises(mm.InterruptProcessingException):
            sample(N, model, reference, motion, vae)
        assert not mm.processing_interrupted()
    finally:
        mm.interrupt_current_processing(False)
        comfy.utils.set_progress_bar_global_hook(saved)


# -- shipped workflows ---------------------------------------------------------------------------------
def workflow_pairs():
    """(UI file title, API file name) of every shipped template (scripts/dev/make_workflows.py names them)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_workflows", os.path.join(REPO, "scripts", "dev", "make_workflows.py")
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return sorted((graph["template"], name) for name, graph in tool.GRAPHS.items())


@pytest.mark.parametrize("title,name", workflow_pairs())
def test_ui_and_api_workflows_are_the_same_graph(ext, title, name):
    """Links of the UI file = node references of the API file; PersonaLive widget values = API inputs."""
    from comfy_api.latest import io

    with open(os.path.join(REPO, "workflows", title + ".json")) as f:
        ui = json.load(f)
    with open(os.path.join(REPO, "workflows", "api", name + ".json")) as f:
        api = json.load(f)
    nodes = {n["id"]: n for n in ui["nodes"] if n["type"] not in ("Note", "MarkdownNote")}
    assert {str(i): n["type"] for i, n in nodes.items()} == {k: v["class_type"] for k, v in api.items()}
    linked = set()
    for link_id, src, slot, dst, dst_slot, kind in ui["links"]:
        entry = nodes[dst]["inputs"][dst_slot]
        assert entry["link"] == link_id and link_id in nodes[src]["outputs"][slot]["links"]
        assert api[str(dst)]["inputs"][entry["name"]] == [str(src), slot]
        assert nodes[src]["outputs"][slot]["type"] == kind == entry["type"]
        linked.add((dst, entry["name"]))
    schemas = {n.define_schema().node_id: n.define_schema() for n in ext.NODES}
    for nid, node in nodes.items():
        if node["type"] not in schemas:
            continue
        widgets = [i for i in schemas[node["type"]].inputs if isinstance(i, io.WidgetInput)]
        values = list(node["widgets_values"])
        for item in widgets:
            value = values.pop(0)
            if getattr(item, "control_after_generate", False):
                assert values.pop(0) in ("fixed", "randomize", "increment", "decrement")
            if (nid, item.id) not in linked:
                assert api[str(nid)]["inputs"][item.id] == value, (name, nid, item.id)
        assert not values


# -- compile ---------------------------------------------------------------------------------------------
def test_compiled_model_follows_the_host_moving_its_weights(N, weights_folder, host_models, reference_u8):
    """The loader's compile option, with the host's model management (CPU) and graph capture without code
    generation (backend eager, counted by dynamo): streams on the compiled model give the frames of the same
    model's eager static step; unloading and reloading the networks recompiles nothing and changes nothing;
    a weight the host replaces (a new Parameter, as when it patches weights) is read by the compiled step;
    another dtype compiles anew."""
    import comfy.model_management as mm
    import comfy.utils
    from torch._dynamo.utils import counters
    from personalive_core.pipelines import sample_motion

    RENDER = N.options.RENDER
    torch._dynamo.reset()
    counters.clear()
    load = N.load_model.PersonaLiveLoadModel.execute
    compiled, plain = (
        load("personalive", dtype="auto", compile=True).result[0],
        load("personalive", dtype="auto").result[0],
    )
    assert compiled.model.info.compile and not plain.model.info.compile
    clip, vae = host_models
    ref = as_image([reference_u8])
    reference = encode(N, compiled, clip, vae, ref)
    motion = extract(N, compiled, ref, driving_images=as_image(moving_frames(12, 64)))[0]
    eager = RENDER.replace(compile_backend="eager")

    def stream(patcher, config):
        config = N.common.stream_config(patcher, {}, config)
        return torch.cat(
            list(
                sample_motion(
                    N.common.load_networks(patcher, SIZE),
                    reference.reference,
                    motion.track,
                    config.replace(keep_warmup=True),
                )
            )
        )

    want = stream(plain, eager.replace(static_step=True))
    assert torch.equal(stream(compiled, eager), want)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 2  # the chunk step and the pose guider
    mm.unload_all_models()
    assert torch.equal(stream(compiled, eager), want) and counters["stats"]["unique_graphs"] == graphs
    for patcher in (compiled, plain):  # the host swaps in a changed weight
        unet = patcher.model.denoising_unet
        comfy.utils.set_attr_param(unet, "conv_in.weight", unet.conv_in.weight.detach() * 1.5)
    changed = stream(plain, eager.replace(static_step=True))
    assert not torch.equal(changed, want) and torch.equal(stream(compiled, eager), changed)
    bf16 = load("personalive", dtype="bf16", compile=True).result[0]
    assert stream(bf16, eager).dtype == torch.bfloat16
    assert counters["stats"]["unique_graphs"] > graphs  # new dtype, new graphs
