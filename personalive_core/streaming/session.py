"""Micro-chunk streaming: a reference once, then 4 driving frames in → 4 clean frames out.

Order of work per chunk (the official online wrapper's, so that the same weights and noise give
the same frames):
  hybrid motion of the 4 frames (3D keypoints rendered → PoseGuider; face crops → MotEncoder)
  → a fresh latent chunk at t=999 joins the window → one denoiser pass over the 16 frames
  → DDIM step; the oldest chunk leaves as its predicted clean latents
  → historical keyframe test on that chunk's first frame.
The first chunk also fills the warm-up part of the window by motion-interpolated initialisation
(MII): keypoints and motion tokens interpolated from the reference to the first driving frame.

Noise contract: one `torch.Generator("cpu")` seeded once; `torch.randn` in float32, then cast:
(1, 4, 12, h, w) when the reference is set, then (1, 4, 4, h, w) per chunk.

Static step (`SpeedOptions.static_step`, always on when the chunk step is compiled): every tensor
shape of a chunk step is fixed from the first chunk on. The reference keys/values live in
1 + max_keyframes masked slots (reference.py), and the pose guider always sees 4 frames (the first
chunk's 16 in 4 calls). The denoiser pass with its DDIM step, and the keypoint drawing with the pose
guider, are then each one function of fixed shapes, which `compile_function` compiles once
per stream shape (compiled.py; CUDA graphs on a GPU) and a new keyframe only refills a slot.

Host synchronisation: one per chunk, the keyframe decision. Its distance is computed before the
denoiser pass is queued and copied to the host right away, so reading it waits for that copy only,
not for the denoiser.
"""

from __future__ import annotations

import torch

from ..config import StreamConfig
from ..errors import InputError
from ..models.keypoints import draw_keypoints
from ..models.taesd import TAESDDecoder, decode as taesd_decode
from ..models.vae import decode as vae_decode
from .compiled import compile_function, compile_options
from .history import HistoricalKeyframes
from .hybrid_motion import WARMUP, HybridMotion
from .reference import ReferenceAttention
from .scheduler import DistilledDDIM, ddim_step
from .timing import NO_TIMER
from .window import CHUNK, MicroChunkWindow, window_timesteps


def denoise_step(unet, alphas, latents, t, context, motion, pose):
    """One denoiser pass over the window and its DDIM step: (window for the next pass with the
    finishing chunk's clean latents first, the finishing chunk's first clean latent), model dtype."""
    eps = unet(latents, t, context, frames=latents.shape[0], motion=motion, pose=pose)
    return ddim_update(alphas, eps, t, latents)


def ddim_update(alphas, eps, t, latents):
    """The DDIM step of `denoise_step`, on the denoiser's output `eps`."""
    prev, x0 = ddim_step(alphas, eps, t, latents)
    return torch.cat([x0[:CHUNK], prev[CHUNK:]]).to(latents.dtype), x0[:1].to(latents.dtype)


def pose_features(pose_guider, keypoints, size, dtype):
    """Keypoints (n, K, 3) → PoseGuider features (n, C, h, w): the rendered dots, encoded."""
    return pose_guider(draw_keypoints(keypoints, size).to(dtype))


def _late_scalar(value):
    """Start copying a device scalar to the host now; `_read` it later without waiting for the
    work queued in between. None and CPU values pass through."""
    if value is None or value.device.type != "cuda":
        return value
    host = value.to("cpu", non_blocking=True)
    done = torch.cuda.Event()
    done.record()
    return host, done


def _read(late):
    if isinstance(late, tuple):
        host, done = late
        done.synchronize()
        return host
    return late


class StreamingSession:
    """One stream on `models` (a PersonaLiveModels) animating `reference`, under `config` (its seed,
    keyframes, motion controls, quirks and speed options; the default config when None)."""

    def __init__(self, models, reference, config: StreamConfig | None = None):
        self.models = models
        self.config = config or StreamConfig()
        speed = self.config.speed
        bank_dtype = torch.float16 if self.config.official_quirks else None
        self.static = speed.static
        slots = self.config.keyframes.max_keyframes if self.static else None
        self.attention = ReferenceAttention(
            models.reference_unet, models.denoising_unet, bank_dtype, speed.cache_reference_kv, slots
        )
        self.scheduler = DistilledDDIM()
        self.step, self.pose = None, pose_features
        if speed.compile:
            options = compile_options(models.device, speed)
            self.step = compile_function(denoise_step, options)
            self.pose = compile_function(pose_features, options)
        self.timer = NO_TIMER  # a timing.StageTimer: per-stage times (bench)
        self.window = MicroChunkWindow()
        self.seed = self.config.seed
        self.set_reference(reference)

    # -- reference ---------------------------------------------------------------------------
    def set_reference(self, reference):
        """(Re)start the stream on `reference`: clears the window, keyframes and noise stream."""
        m = self.models
        self.reference = reference.to(m.device)
        self.generator = torch.Generator("cpu").manual_seed(self.seed)
        self.window.clear()
        self.attention.set_tokens(self.reference.tokens)
        self.motion = HybridMotion(m.motion_extractor, m.motion_encoder, self.reference, self.config.controls)
        self.history = None
        self.chunks_done = 0
        t = window_timesteps(m.device)[:WARMUP]
        self.window.latents.extend(self._noised_reference(WARMUP, t))

    def reset(self):
        self.set_reference(self.reference)

    def _noised_reference(self, frames, timesteps):
        m = self.models
        h, w = self.reference.latents.shape[-2:]
        noise = torch.randn((1, 4, frames, h, w), generator=self.generator, dtype=torch.float32)
        noise = noise.to(m.device, m.dtype)[0].transpose(0, 1)  # (b c f h w) → (f, c, h, w)
        clean = self.reference.latents.to(m.dtype).expand(frames, -1, -1, -1)
        coef = None if self.config.official_quirks else torch.float32
        return self.scheduler.add_noise(clean, noise, timesteps, coef).to(m.dtype)

    # -- streaming ---------------------------------------------------------------------------
    @torch.no_grad()
    def push(self, frames):
        """frames: (4, 3, H, W) driving frames in [-1, 1] at the reference size.
        Returns the 4 finished latents (4, 4, h, w), scaled, in the model dtype."""
        return self.push_motion(self.extract_motion(frames))

    @torch.no_grad()
    def extract_motion(self, frames):
        """The MotionChunk of 4 driving frames (the first part of `push`; may run ahead of the
        denoiser, in stream order)."""
        if frames.ndim != 4 or frames.shape[0] != CHUNK or tuple(frames.shape[-2:]) != self.reference.size:
            raise InputError(
                f"expected a chunk of {CHUNK} frames of size {self.reference.size}, got {tuple(frames.shape)}"
            )
        with self.timer("motion"):
            return self.motion(frames.to(self.models.device, torch.float32))

    def _add_pose(self, keypoints):
        m = self.models
        if not self.static:
            self.window.pose.extend(self.pose(m.pose_guider, keypoints, self.reference.size, m.dtype))
            return
        # fixed shapes: 4 frames a call (the first chunk's 16 in 4 calls), each result copied into
        # the window before the next call (a CUDA graph's output is overwritten by its next replay)
        for i in range(0, keypoints.shape[0], CHUNK):
            self.window.pose.append(self.pose(m.pose_guider, keypoints[i : i + CHUNK], self.reference.size, m.dtype))

    @torch.no_grad()
    def push_motion(self, chunk):
        """Like `push`, from a precomputed MotionChunk (from this stream's HybridMotion)."""
        m = self.models
        chunk = chunk.to(m.device)
        if self.history is None:
            # the first MII frame is exactly the reference's motion (interpolation weight 0)
            self.history = HistoricalKeyframes(chunk.tokens[:1], self.config.keyframes)
        with self.timer("pose_guider"):
            self._add_pose(chunk.keypoints)
        self.window.motion.extend(chunk.tokens)
        t999 = window_timesteps(m.device)[-1:]
        self.window.latents.append(self._noised_reference(CHUNK, t999))
        latents, pose, motion = self.window.inputs()
        self.attention.bind()
        with self.timer("keyframe"):
            distance = _late_scalar(self.history.distance(motion[0], self.chunks_done))
        t = window_timesteps(m.device)
        alphas, context = self.scheduler._alphas(latents.device), self.reference.context.to(m.dtype)
        tokens = motion.to(m.dtype)
        if self.step:  # compiled: one graph, the DDIM step included
            with self.timer("denoiser"):
                denoised, x0 = self.step(m.denoising_unet, alphas, latents, t, context, tokens, pose)
        else:
            with self.timer("denoiser"):
                eps = m.denoising_unet(latents, t, context, frames=latents.shape[0], motion=tokens, pose=pose)
            with self.timer("scheduler"):
                denoised, x0 = ddim_update(alphas, eps, t, latents)
        with self.timer("keyframe"):
            if self.history.accept(motion[0], _read(distance)):
                self.attention.add_keyframe(x0, self.reference.context.to(m.dtype))
        self.chunks_done += 1
        return self.window.advance(denoised)


@torch.no_grad()
def decode(vae, latents):
    """Scaled latents (N, 4, h, w) → frames (N, H, W, 3) in [0, 1], float32. `vae`: the SD VAE,
    or a TAESD decoder (models/taesd.py: much faster, lower quality)."""
    if isinstance(vae, TAESDDecoder):
        return taesd_decode(vae, latents)
    return vae_decode(vae, latents).float()
