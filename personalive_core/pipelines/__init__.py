"""The public API every front end calls (the ComfyUI nodes, the command line, live, batch): the
diffusers idea of pipelines that orchestrate the models (`models/`) and the streaming algorithm
(`streaming/`) for one job each.

- loading: `load_models` (a weights folder, the config's device, dtype and rewrites), `build_networks`
  (the five PersonaLive networks for a host bringing its own image encoder and VAE), `taesd_decoder`,
  `check_weights`, `convert_to_safetensors`;
- the reference: `prepare_reference` (squared, fingerprinted), `encode_reference` (core or host encoders);
- a driving video: `render_video` (reference + driving path → file), `render_footage` with `Reframer`
  (face crop in, paste-back out), and for a split graph `extract_motion` / `motion_preview` /
  `sample_motion`;
- faces: `crop_boxes`, `cut_face`, `paste_face` (Crop Face / Paste Back);
- live: `LiveTarget`, `LiveSession`, `warm_up` (Prepare), `square_frame`;
- host adapters: `host_decoder`, `scaled_latents`, `unscaled`, `clip_pixels`.
"""
from ..media.driving import DEFAULT_FPS, DrivingSource, image_to_uint8
from ..media.face_crop import CropInfo
from ..media.images import load_image
from ..media.output import Output
from ..media.video_io import VideoWriter
from ..models.loader import PERSONALIVE_FILES, PersonaLiveModels
from ..streaming.hybrid_motion import WARMUP, MotionChunk
from ..streaming.reference import Reference
from ..streaming.render import chunks_needed
from ..streaming.session import StreamingSession
from ..streaming.window import CHUNK
from .faces import DETECTORS, FaceCrops, check_detector, check_originals, crop_boxes, cut_face, paste_face, paste_plan
from .footage import Reframer, RenderResult, render_footage, render_video
from .host import CLIP_INPUT, LATENT_SCALE, HostVAE, clip_pixels, host_decoder, scaled_latents, unscaled
from .live import WARM_CHUNKS, WARMUP_CHUNKS, FrameError, LiveSession, LiveTarget, square_frame, warm_up
from .loading import (Placement, build_networks, check_weights, convert_to_safetensors, load_models,
                      personalive_files, placement, taesd_decoder)
from .motion import PREVIEWS, MotionTrack, extract_motion, motion_preview, sample_motion
from .reference import ReferencePicture, encode_reference, prepare_reference

__all__ = [
    "CHUNK", "CLIP_INPUT", "DEFAULT_FPS", "DETECTORS", "LATENT_SCALE", "PERSONALIVE_FILES", "PREVIEWS", "WARMUP",
    "WARMUP_CHUNKS", "WARM_CHUNKS", "CropInfo", "DrivingSource", "FaceCrops", "FrameError", "HostVAE", "LiveSession",
    "LiveTarget", "MotionChunk", "MotionTrack", "Output", "PersonaLiveModels", "Placement", "Reference",
    "ReferencePicture", "Reframer", "RenderResult", "StreamingSession", "build_networks", "check_detector",
    "check_originals", "check_weights", "chunks_needed", "clip_pixels", "convert_to_safetensors", "crop_boxes",
    "cut_face", "encode_reference", "extract_motion", "host_decoder", "image_to_uint8", "load_image", "load_models",
    "motion_preview", "paste_face", "paste_plan", "personalive_files", "placement", "prepare_reference",
    "render_footage", "render_video", "sample_motion", "scaled_latents", "square_frame", "taesd_decoder",
    "unscaled", "warm_up", "VideoWriter",
]
