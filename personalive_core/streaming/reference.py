"""Reference attention: appearance from the reference UNet injected into the denoising UNet.

The reference UNet is run on a clean latent (the reference image, or later a historical keyframe)
at t=0; each of its spatial transformer blocks records the normalised tokens it self-attends over.
Every denoising-UNet block at the same position then self-attends over its own tokens followed by
the recorded reference tokens and, after them, the historical keyframes' tokens.

Two layouts of those extra keys/values: grown by concatenation at every keyframe (the default, the
official arithmetic), or *static*: one preallocated buffer of 1 + max_keyframes slots per block,
the empty slots hidden by an additive −inf mask, so every denoiser pass of a stream has the same
shapes (one compiled graph, one CUDA graph) whatever the keyframe count. A hidden key gets weight
exp(−inf) = 0 exactly, so the static layout computes the same attention up to the kernel's
rounding (a masked SDPA call may take another kernel than an unmasked one).
"""

from dataclasses import dataclass

import torch

from ..models.unet import transformer_blocks


@dataclass
class Reference:
    """Everything the streaming needs from the reference portrait, computed once."""

    image: torch.Tensor  # (3, H, W) in [-1, 1]: face crop source for the reference motion
    cond: torch.Tensor  # (1, 3, 256, 256) in [0, 1]: motion extractor input
    context: torch.Tensor | None  # (1, 1, D) CLIP image embedding (None: motion extraction only)
    latents: torch.Tensor | None  # (1, 4, h, w) scaled VAE latents (None: motion extraction only)
    tokens: dict  # reference attention tokens per transformer block

    @property
    def size(self):
        return self.image.shape[-2], self.image.shape[-1]

    def to(self, device):
        moved = {k: v.to(device) for k, v in self.tokens.items()}

        def move(t):
            return None if t is None else t.to(device)

        return Reference(self.image.to(device), self.cond.to(device), move(self.context), move(self.latents), moved)


class _Slot:
    """Recorded tokens of one block position, with their projected keys/values cached."""

    def __init__(self, cache_kv):
        self.features = []  # [reference, keyframe 1, keyframe 2, ...], each (B, L, C)
        self.cache_kv = cache_kv
        self._kv = None

    def append(self, feature):
        self.features.append(feature)
        self._kv = None

    def kv(self, attn, dtype):
        if self._kv is not None:
            return self._kv
        tokens = torch.cat([f.to(dtype) for f in self.features], dim=1)
        kv = attn.project_kv(tokens)
        if self.cache_kv:
            self._kv = kv
        return kv

    def __call__(self, block, n, frames):
        k_self, v_self = block.attn1.project_kv(n)
        k_ref, v_ref = self.kv(block.attn1, n.dtype)
        rep = n.shape[0] // k_ref.shape[0]
        k = torch.cat([k_self, k_ref.repeat_interleave(rep, dim=0)], dim=2)
        v = torch.cat([v_self, v_ref.repeat_interleave(rep, dim=0)], dim=2)
        return block.attn1.attend(n, k, v)


class _StaticSlot:
    """Keys/values of the reference and up to `keyframes` historical keyframes in one preallocated
    buffer (B, heads, (1 + keyframes)·L, d), projected once when a slot is filled; the additive
    mask hides the empty slots. Tensor shapes never change; filling a slot writes in place."""

    @torch.no_grad()
    def __init__(self, attn, feature, keyframes, dtype):
        self.attn = attn
        self.dtype = dtype
        k, v = attn.project_kv(feature.to(dtype))
        b, heads, length, d = k.shape
        self.length, self.filled = length, 1
        slots = 1 + keyframes
        # zeros, not empty: a masked key's value is multiplied by weight 0, and 0·NaN would be NaN
        self.k = k.new_zeros((b, heads, slots * length, d))
        self.v = v.new_zeros((b, heads, slots * length, d))
        self.k[:, :, :length], self.v[:, :, :length] = k, v
        self.mask = None
        if keyframes:
            # own tokens first (always visible), then the slots
            self.mask = k.new_full((1, 1, 1, (1 + slots) * length), float("-inf"))
            self.mask[..., : 2 * length] = 0

    @torch.no_grad()
    def append(self, feature):
        if self.mask is None or (self.filled + 1) * self.length > self.k.shape[2]:
            raise RuntimeError("every keyframe slot is filled")
        k, v = self.attn.project_kv(feature.to(self.dtype))
        i = self.filled * self.length
        self.k[:, :, i : i + self.length], self.v[:, :, i : i + self.length] = k, v
        self.mask[..., self.length + i : self.length + i + self.length] = 0
        self.filled += 1

    def __call__(self, block, n, frames):
        k_self, v_self = block.attn1.project_kv(n)
        rep = n.shape[0] // self.k.shape[0]
        k = torch.cat([k_self, self.k.repeat_interleave(rep, dim=0)], dim=2)
        v = torch.cat([v_self, self.v.repeat_interleave(rep, dim=0)], dim=2)
        return block.attn1.attend(n, k, v, self.mask)


class _Recorder:
    def __init__(self, out):
        self.out = out

    def __call__(self, block, n, frames):
        self.out.append(n)
        return block.attn1(n)


@torch.no_grad()
def record_tokens(reference_unet, latents, context):
    """Run the reference UNet at t=0 on clean latents (B, 4, h, w); return the normalised tokens
    each transformer block self-attended over, by block name."""
    writers = dict(transformer_blocks(reference_unet))
    tokens = {name: [] for name in writers}
    for name, block in writers.items():
        block.reference = _Recorder(tokens[name])
    try:
        dtype = reference_unet.dtype
        t = torch.zeros(latents.shape[0], device=latents.device, dtype=dtype)
        reference_unet(latents.to(dtype), t, context.to(dtype))
    finally:
        for block in writers.values():
            block.reference = None
    return {name: feats[0] for name, feats in tokens.items()}


@torch.no_grad()
def encode_reference(models, image, size):
    """Everything the stream needs from a reference portrait (PIL RGB), at generation size `size`."""
    from ..models.preprocess import clip_pixels, vae_pixels
    from ..models.vae import encode_mean

    device, dtype = models.device, models.dtype
    context = models.image_encoder(clip_pixels(image).to(device, dtype))[:, None]
    pixels = vae_pixels(image, size, size).to(device, dtype)
    latents = encode_mean(models.vae, pixels).to(dtype)
    cond = vae_pixels(image, 256, 256).to(device, models.motion_extractor.dtype) / 2 + 0.5
    tokens = record_tokens(models.reference_unet, latents, context)
    return Reference(pixels[0], cond, context, latents, tokens)


class ReferenceAttention:
    """Owns the reference bank of a (reference UNet, denoising UNet) pair.

    `bank_dtype`: the official code stores the recorded tokens as float16 whatever the model
    dtype (so an fp32 run sees fp16-rounded reference tokens); parity keeps that (None: keep the
    model dtype). `cache_kv`: project each block's bank to keys/values once per reference/keyframe
    instead of at every chunk (same numbers, less work). `static_keyframes`: None for the growing
    layout; else the static layout with that many keyframe slots (keys/values always cached).
    """

    def __init__(self, reference_unet, denoising_unet, bank_dtype=torch.float16, cache_kv=True, static_keyframes=None):
        self.reference_unet = reference_unet
        self.readers = dict(transformer_blocks(denoising_unet))
        if self.readers.keys() != dict(transformer_blocks(reference_unet)).keys():
            raise ValueError("reference and denoising UNets have different transformer layouts")
        self.bank_dtype = bank_dtype
        self.cache_kv = cache_kv
        self.static_keyframes = static_keyframes
        self.slots = {}
        self.keyframes = 0

    def _stored(self, feature):
        return feature.to(self.bank_dtype) if self.bank_dtype else feature

    def set_tokens(self, tokens):
        """Use recorded reference tokens (from `record_tokens`) for later denoiser passes."""
        self.clear()
        for name, feature in tokens.items():
            if self.static_keyframes is None:
                self.slots[name] = _Slot(self.cache_kv)
                self.slots[name].append(self._stored(feature))
            else:
                attn = self.readers[name].attn1
                self.slots[name] = _StaticSlot(
                    attn, self._stored(feature), self.static_keyframes, attn.to_k.weight.dtype
                )

    def bind(self):
        """Point the denoising UNet's blocks at this bank. Several streams may share one UNet
        (one pass at a time), so every pass binds its own bank first."""
        for name, block in self.readers.items():
            block.reference = self.slots.get(name)

    def add_keyframe(self, latents, context):
        """Historical keyframe: a past clean output frame becomes extra reference tokens."""
        for name, feature in record_tokens(self.reference_unet, latents, context).items():
            self.slots[name].append(self._stored(feature))
        self.keyframes += 1

    def clear(self):
        for block in self.readers.values():
            block.reference = None
        self.slots = {}
        self.keyframes = 0
