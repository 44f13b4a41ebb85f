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
"""
from dataclasses import dataclass, field

import torch

from .history import HistoricalKeyframes, KeyframeSettings
from .hybrid_motion import WARMUP, HybridMotion
from .motion_controls import MotionControls
from ..models.keypoints import draw_keypoints
from .reference import ReferenceAttention
from .scheduler import DistilledDDIM
from ..models.taesd import TAESDDecoder, decode as taesd_decode
from ..models.vae import decode as vae_decode
from .window import CHUNK, MicroChunkWindow, window_timesteps


@dataclass
class Settings:
    """`official_quirks`: reproduce the official wrapper's numerical oddities, needed for
    frame-exact parity: reference tokens rounded to float16 whatever the model dtype, and noise
    coefficients rounded to the latent dtype. Off, the same maths without those roundings.
    `controls`: expression / head-pose strength and smoothing (motion_controls.py)."""
    official_quirks: bool = True
    cache_reference_kv: bool = True
    keyframes: KeyframeSettings = field(default_factory=KeyframeSettings)
    controls: MotionControls = field(default_factory=MotionControls)


class StreamingSession:
    def __init__(self, models, reference, seed=0, settings=None):
        self.models = models
        self.settings = settings or Settings()
        bank_dtype = torch.float16 if self.settings.official_quirks else None
        self.attention = ReferenceAttention(models.reference_unet, models.denoising_unet,
                                            bank_dtype, self.settings.cache_reference_kv)
        self.scheduler = DistilledDDIM()
        self.window = MicroChunkWindow()
        self.seed = seed
        self.set_reference(reference)

    # -- reference ---------------------------------------------------------------------------
    def set_reference(self, reference):
        """(Re)start the stream on `reference`: clears the window, keyframes and noise stream."""
        m = self.models
        self.reference = reference.to(m.device)
        self.generator = torch.Generator("cpu").manual_seed(self.seed)
        self.window.clear()
        self.attention.set_tokens(self.reference.tokens)
        self.motion = HybridMotion(m.motion_extractor, m.motion_encoder, self.reference, self.settings.controls)
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
        coef = None if self.settings.official_quirks else torch.float32
        return self.scheduler.add_noise(clean, noise, timesteps, coef).to(m.dtype)

    # -- streaming ---------------------------------------------------------------------------
    @torch.no_grad()
    def push(self, frames):
        """frames: (4, 3, H, W) driving frames in [-1, 1] at the reference size.
        Returns the 4 finished latents (4, 4, h, w), scaled, in the model dtype."""
        if frames.ndim != 4 or frames.shape[0] != CHUNK or tuple(frames.shape[-2:]) != self.reference.size:
            raise ValueError(f"expected a chunk of {CHUNK} frames of size {self.reference.size}, "
                             f"got {tuple(frames.shape)}")
        return self.push_motion(self.motion(frames.to(self.models.device, torch.float32)))

    @torch.no_grad()
    def push_motion(self, chunk):
        """Like `push`, from a precomputed MotionChunk (from this stream's HybridMotion)."""
        m = self.models
        chunk = chunk.to(m.device)
        if self.history is None:
            # the first MII frame is exactly the reference's motion (interpolation weight 0)
            self.history = HistoricalKeyframes(chunk.tokens[:1], self.settings.keyframes)
        pose = m.pose_guider(draw_keypoints(chunk.keypoints, self.reference.size).to(m.dtype))
        self.window.pose.extend(pose)
        self.window.motion.extend(chunk.tokens)
        t999 = window_timesteps(m.device)[-1:]
        self.window.latents.append(self._noised_reference(CHUNK, t999))
        latents, pose, motion = self.window.inputs()
        self.attention.bind()
        distance = self.history.distance(motion[0], self.chunks_done)
        t = window_timesteps(m.device)
        eps = m.denoising_unet(latents, t, self.reference.context.to(m.dtype), frames=latents.shape[0],
                               motion=motion.to(m.dtype), pose=pose)
        prev, x0 = self.scheduler.step(eps, t, latents)
        denoised = torch.cat([x0[:CHUNK], prev[CHUNK:]]).to(m.dtype)
        if self.history.accept(motion[0], distance):
            self.attention.add_keyframe(x0[:1].to(m.dtype), self.reference.context.to(m.dtype))
        self.chunks_done += 1
        return self.window.advance(denoised)


@torch.no_grad()
def decode(vae, latents):
    """Scaled latents (N, 4, h, w) → frames (N, H, W, 3) in [0, 1], float32. `vae`: the SD VAE,
    or a TAESD decoder (personalive_core.taesd: much faster, lower quality)."""
    if isinstance(vae, TAESDDecoder):
        return taesd_decode(vae, latents)
    return vae_decode(vae, latents).float()
