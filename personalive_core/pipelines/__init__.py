"""The public API every front end calls (the ComfyUI nodes, the command line, live, batch): the
diffusers idea of pipelines that orchestrate the models (`models/`) and the streaming algorithm
(`streaming/`) for one job each.

- loading: `load_models` (a weights folder, the config's device, dtype and rewrites), `build_networks`
  (the five PersonaLive networks for a host bringing its own image encoder and VAE), `taesd_decoder`,
  `check_weights` (with `weights_notes`), `convert_to_safetensors`, `lacking_weights` (what a download adds);
- the reference: `prepare_reference` (squared, fingerprinted), `encode_reference` (core or host encoders);
- a driving video: `render_video` (reference + driving path → file), `render_footage` with `Reframer`
  (face crop in, paste-back out), and for a split graph `extract_motion` / `motion_preview` /
  `sample_motion`;
- faces: `crop_boxes`, `cut_face`, `paste_face` (Crop Face / Paste Back);
- live: `LiveTarget` (`core_target`: on the core's own networks), `LiveSession`, `CameraFramer` (face-tracked
  or centred camera frames), `check_frame`, `square_frame`, portraits swapped in (`read_portrait`,
  `frame_portrait`, `Portrait`), `warm_up` (Prepare);
- host adapters: `host_decoder`, `scaled_latents`, `unscaled`, `clip_pixels`;
- batch jobs: `Job`, `render_job` (complete files only), `job_hash`, `file_digest`, `input_files`.
"""

from ..media.driving import DEFAULT_FPS, DrivingSource, image_to_uint8
from ..media.face_crop import CropInfo
from ..media.images import IMAGE_SUFFIXES, load_image
from ..media.output import Output
from ..media.video_io import VideoWriter
from ..models.loader import PERSONALIVE_FILES, PersonaLiveModels
from ..streaming.hybrid_motion import WARMUP, MotionChunk
from ..streaming.reference import Reference
from ..streaming.render import chunks_needed
from ..streaming.session import StreamingSession
from ..streaming.window import CHUNK, CHUNKS
from .faces import DETECTORS, FaceCrops, check_detector, check_originals, crop_boxes, cut_face, paste_face, paste_plan
from .footage import Reframer, RenderResult, render_footage, render_video
from .host import CLIP_INPUT, LATENT_SCALE, HostVAE, clip_pixels, host_decoder, scaled_latents, unscaled
from .job import OUTPUT_SUFFIXES, VIDEO_SUFFIXES, Job, file_digest, input_files, job_hash, partial_name, render_job
from .live import (
    CAMERA_MAX,
    LIVE_FRAMING,
    PORTRAIT_MAX_SIDE,
    WARM_CHUNKS,
    WARMUP_CHUNKS,
    CameraFramer,
    FrameError,
    LiveSession,
    LiveTarget,
    Portrait,
    check_frame,
    core_target,
    frame_portrait,
    read_portrait,
    square_frame,
    warm_up,
)
from .loading import (
    Placement,
    build_networks,
    check_weights,
    convert_to_safetensors,
    fetch_lacking_weights,
    lacking_weights,
    load_models,
    personalive_files,
    placement,
    taesd_decoder,
    weights_notes,
)
from .motion import PREVIEWS, MotionTrack, extract_motion, motion_preview, sample_motion
from .reference import ReferencePicture, encode_reference, prepare_reference

__all__ = [
    # live
    "CAMERA_MAX",
    "CHUNK",
    "CHUNKS",
    "CLIP_INPUT",
    "DEFAULT_FPS",
    "DETECTORS",
    # batch jobs
    "IMAGE_SUFFIXES",
    "LATENT_SCALE",
    "LIVE_FRAMING",
    "OUTPUT_SUFFIXES",
    "PERSONALIVE_FILES",
    "PORTRAIT_MAX_SIDE",
    "PREVIEWS",
    "VIDEO_SUFFIXES",
    "WARMUP",
    "WARMUP_CHUNKS",
    "WARM_CHUNKS",
    "CameraFramer",
    "CropInfo",
    "DrivingSource",
    "FaceCrops",
    "FrameError",
    "HostVAE",
    "Job",
    "LiveSession",
    "LiveTarget",
    "MotionChunk",
    "MotionTrack",
    "Output",
    "PersonaLiveModels",
    "Placement",
    "Portrait",
    "Reference",
    "ReferencePicture",
    "Reframer",
    "RenderResult",
    "StreamingSession",
    "VideoWriter",
    "build_networks",
    "check_detector",
    "check_frame",
    "check_originals",
    "check_weights",
    "chunks_needed",
    "clip_pixels",
    "convert_to_safetensors",
    "core_target",
    "crop_boxes",
    "cut_face",
    "encode_reference",
    "extract_motion",
    "fetch_lacking_weights",
    "file_digest",
    "frame_portrait",
    "host_decoder",
    "image_to_uint8",
    "input_files",
    "job_hash",
    "lacking_weights",
    "load_image",
    "load_models",
    "motion_preview",
    "partial_name",
    "paste_face",
    "paste_plan",
    "personalive_files",
    "placement",
    "prepare_reference",
    "read_portrait",
    "render_footage",
    "render_job",
    "render_video",
    "sample_motion",
    "scaled_latents",
    "square_frame",
    "taesd_decoder",
    "unscaled",
    "warm_up",
    "weights_notes",
]
