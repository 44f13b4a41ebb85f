"""PersonaLive Live: the reference built in the graph becomes a live target that the node's widget
(web/js/personalive_live.js) streams a webcam through, over /personalive/live on the host's server.
Output pages (/personalive/view/<node id>) and recorded takes (output/PersonaLive/live_NNNNN_.mp4)
are served by the same routes; the node layer only hands the core ComfyUI's output folder, and for
portraits dropped onto the widget the host's CLIP vision and VAE to encode them with."""

import os
import threading
from contextlib import contextmanager

import torch

import comfy.utils
import folder_paths
from comfy_api.latest import io

from ..personalive_core.live import LiveEngine, TakeFolder, add_live_routes
from ..personalive_core.pipelines import LiveTarget, encode_reference, host_decoder, warm_up
from .common import (
    host_server,
    CATEGORY,
    EncodedReference,
    PersonaLiveModel,
    PersonaLiveReference,
    check_compatible,
    expect,
    load_networks,
    log,
    model_info,
    stream_config,
)
from .host_models import check_vae, image_embedder
from .options import LIVE, config_inputs

MAX_SESSIONS = int(os.environ.get("PERSONALIVE_LIVE_MAX_SESSIONS", "2"))
TAKE_PREFIX = "PersonaLive/live"  # recorded takes: output/PersonaLive/live_00001_.mp4, …


class QueueTurn:
    """Live chunks and prompts take turns on the device, so a prompt never offloads the networks
    under a chunk in flight: a chunk starts only while the prompt queue is empty, and a prompt that
    the queue hands out waits for the chunk in flight (at most one chunk) before it runs."""

    def __init__(self, queue):
        self.queue = queue
        self.lock = threading.Lock()
        get = queue.get

        def get_after_live_chunk(*args, **kwargs):
            item = get(*args, **kwargs)
            if item is not None:
                with self.lock:
                    pass
            return item

        queue.get = get_after_live_chunk

    @contextmanager
    def __call__(self):
        with self.lock:
            yield self.queue.get_tasks_remaining() == 0


def make_engine():
    """The pack's engine; inside a running ComfyUI its routes are added to the PromptServer."""
    server = host_server()
    turn = QueueTurn(server.prompt_queue) if server is not None else None
    engine = LiveEngine(max_streams=MAX_SESSIONS, turn=turn)
    if server is not None:
        add_live_routes(server.routes, engine, takes=TakeFolder(folder_paths.get_output_directory(), TAKE_PREFIX))
    return engine


ENGINE = make_engine()


def host_target(model, reference, vae, config, clip_vision=None):
    """A live target on the host's model management: networks (re)loaded through `load_models_gpu`
    before every chunk (the same ModelPatcher as the sampler: no second copy of the weights), frames
    decoded by the graph's VAE, and portraits swapped in from the widget encoded with the graph's CLIP
    vision and VAE (no swaps without a CLIP vision)."""
    size = reference.size
    return LiveTarget(
        prepare=lambda: load_networks(model, size),
        reference=reference.reference,
        decode=host_decoder(vae, size),
        config=config,
        model_key=model_info(model).key,
        encode=host_encoder(model, clip_vision, vae, size) if clip_vision is not None else None,
    )


def host_encoder(model, clip_vision, vae, size):
    """ReferencePicture → Reference (on the CPU, as Encode Reference keeps it), with the host's encoders."""
    embed = image_embedder(clip_vision, model.model.reference_unet.config.cross_attention_dim)

    def encode(picture):
        return encode_reference(load_networks(model, size), picture, embed, vae).to("cpu")

    return encode


def prepare_target(name, target):
    """Prepare on the prompt's own thread (the live worker waits while a prompt runs), with the node's
    progress bar; skipped when this node is already prepared for these networks and this size."""
    if ENGINE.is_prepared(target):
        return
    bar = comfy.utils.ProgressBar(1)
    report = warm_up(target, on_progress=lambda done, total: bar.update_absolute(done, total))
    ENGINE.mark_prepared(name, report)
    log.info(
        f"PersonaLive Live {name}: prepared at {target.size}² in {report['seconds']:.1f} s "
        f"(chunks {report['chunk_ms']} ms)"
    )


class PersonaLiveLive(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PersonaLiveLive",
            display_name="PersonaLive Live",
            category=CATEGORY,
            description="Live webcam animation. Queue the workflow once to hand this node its reference, then press "
            "Start in the node: the browser's camera drives the portrait and the generated frames show "
            "next to it. Drop or paste a portrait onto the node (or pick a recent one) to swap it while "
            "live; queueing again with the graph's reference brings that back. The camera's face is "
            "tracked (crop 'auto'); paste_into 'driving' puts the avatar into the whole camera picture. "
            "Expression, head pose, smoothness, crop and paste_into apply while live. 'Output page' "
            "opens the generated frames alone (for an OBS Browser Source); 'Record' writes the take "
            "to output/PersonaLive/.",
            is_output_node=True,
            inputs=[
                PersonaLiveModel.Input("model", tooltip="From 'Load PersonaLive Model'."),
                PersonaLiveReference.Input(
                    "reference",
                    tooltip="From 'PersonaLive Encode Reference' (its size is "
                    "the live size; 256 runs faster than 512).",
                ),
                io.Vae.Input("vae", tooltip="The SD 1.x VAE (sd-vae-ft-mse) that decodes each chunk."),
                *config_inputs(
                    "seed",
                    "keyframe_threshold",
                    "max_keyframes",
                    "expression",
                    "head_pose",
                    "smoothness",
                    base=LIVE,
                    notes={"seed": "A stream restarts from it on a new reference."},
                ),
                io.Boolean.Input(
                    "prepare",
                    default=True,
                    tooltip="Warm up when queued: load the networks, run a few chunks of the reference "
                    "at the live size (compiling them if the model is compiled), so the first "
                    "live chunk after Start is as fast as the rest. Done once per model and "
                    "size; the Prepare button in the node does the same without queueing.",
                ),
                *config_inputs(
                    "compile",
                    base=LIVE,
                    optional=("compile",),
                    notes={"compile": "Live: 'prepare' compiles before Start."},
                ),
                *config_inputs(
                    "crop",
                    "paste_into",
                    base=LIVE,
                    optional=("crop", "paste_into"),
                    notes={"paste_into": "Live: 'driving' pastes into the whole camera picture."},
                ),
                io.ClipVision.Input(
                    "clip_vision",
                    optional=True,
                    tooltip="The CLIP vision model of 'PersonaLive Encode Reference': with it, "
                    "portraits dropped onto the node are encoded and swapped in while "
                    "live.",
                ),
            ],
            outputs=[],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    @torch.no_grad()
    def execute(cls, model, reference, vae, prepare, clip_vision=None, **options) -> io.NodeOutput:
        expect(reference, EncodedReference, "reference", "PersonaLive Encode Reference")
        check_compatible(model, reference)
        check_vae(vae)
        name = str(cls.hidden.unique_id)
        target = host_target(model, reference, vae, stream_config(model, options, LIVE), clip_vision)
        ENGINE.set_target(name, target)
        if prepare:
            prepare_target(name, target)
        return io.NodeOutput(ui={"personalive_live": [{"target": name, "size": reference.size}]})
