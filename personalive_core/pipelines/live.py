"""The live pipeline: what a camera stream animates (`LiveTarget`), the session of one camera feed
(`LiveSession`: 4 camera frames in, 4 generated frames out), the camera frame's way into the model's
square and back out (`CameraFramer`, `LiveSession.output`), portraits swapped in while live
(`read_portrait`, `frame_portrait`), and Prepare (`warm_up`). The serving around it (newest frames only,
several viewers, the websocket, takes) is the front end `personalive_core.live`.

Framing: with `crop="auto"` a camera frame of any size (the widget sends the whole picture, up to
1280×720) goes through the footage face tracker (`media.face_track`: causal, one-euro smoothed, the last
box held through frames without a face), here stepped in camera time, so dropped frames and a changing
camera rate do not change the smoothing; the model, the keypoints and the motion tokens all see that
crop. With `paste_into` the generated square is warped back, with the footage path's feathered mask,
into its camera frame ("driving") or into the reference picture ("reference").
"""

from __future__ import annotations

import dataclasses
import io
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..config import Framing, MotionControls, StreamConfig, preset
from ..media import face_crop as fc
from ..media.face_crop import CropInfo
from ..media.face_track import FaceTracker
from ..media.images import to_rgb
from ..media.paste_back import paste_back
from ..media.video_io import square
from ..models.loader import PersonaLiveModels
from ..streaming.hybrid_motion import WARMUP
from ..streaming.reference import Reference
from ..streaming.render import to_model_frames
from ..streaming.session import StreamingSession, decode
from ..streaming.window import CHUNK, CHUNKS
from .reference import ReferencePicture, encode_reference, prepare_reference

MIN_SIDE, MAX_SIDE = 64, 4096  # accepted camera frame sides (pixels)
CAMERA_MAX = (1280, 720)  # what the widget sends: the whole camera frame, long side ≤ 1280, short side ≤ 720
PORTRAIT_MAX_SIDE = 1280  # a swapped-in portrait is kept (and pasted into) at most this long
LIVE_FRAMING = ("crop", "paste_into", "crop_scale", "feather")  # the Framing fields a live stream takes
TRACK_FPS = 30.0  # the footage tracker's smoothing is tuned per frame of 30 fps video: camera time is scaled to it
WARM_CHUNKS = CHUNKS + 1  # prepare: the first chunk's path, then steady chunks through a full window
WARMUP_CHUNKS = WARMUP // CHUNK  # chunks a fresh window emits before the first camera frame comes out


class FrameError(ValueError):
    """A camera frame or portrait that cannot be used; `code` names the kind (for a client)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Portrait:
    """A reference picture as given (`original`, uint8 (H, W, 3)) and where the model's square was cut
    from it (`info`): what `paste_into="reference"` pastes into."""

    original: np.ndarray
    info: CropInfo

    @classmethod
    def whole(cls, picture: np.ndarray) -> Portrait:
        """A square picture that is its own crop (the reference square itself)."""
        h, w = picture.shape[:2]
        return cls(picture, CropInfo((0, 0, w, h), (h, w), w))


@dataclass
class LiveTarget:
    """What a stream animates. `prepare()` → PersonaLiveModels on their device (called before every
    chunk: a host may have offloaded them in between); `decode(latents)`: scaled latents (4, 4, h, w) →
    frames (4, H, W, 3) float in [0, 1]; `config`: seed, keyframes, controls, framing, speed (the live
    preset by default); `encode(picture)` → the Reference of a portrait swapped in while live (None: no
    swaps); `portrait`: the reference picture and its crop, for `paste_into="reference"` (None: the
    reference square itself)."""

    prepare: Callable[[], PersonaLiveModels]
    reference: Reference
    decode: Callable[[torch.Tensor], torch.Tensor]
    config: StreamConfig = field(default_factory=lambda: preset("live"))
    model_key: str = ""  # the networks' identity: a prepared target stays prepared for the same key and size
    encode: Callable[[ReferencePicture], Reference] | None = None
    portrait: Portrait | None = None

    @property
    def size(self) -> int:
        return int(self.reference.size[0])

    @property
    def warm_key(self) -> tuple[str, int]:
        return self.model_key, self.size

    def picture(self) -> np.ndarray:
        """The reference square the model sees, uint8 (S, S, 3)."""
        image = self.reference.image.detach().float().cpu().clamp(-1, 1)
        return ((image.permute(1, 2, 0).numpy() + 1) * 127.5 + 0.5).astype(np.uint8)

    @cached_property
    def paste_target(self) -> Portrait:
        """What `paste_into="reference"` pastes into: the portrait, or the reference square."""
        return self.portrait or Portrait.whole(self.picture())

    def with_reference(self, reference: Reference, portrait: Portrait | None) -> LiveTarget:
        """This target animating another portrait (same networks, decoder and config)."""
        return dataclasses.replace(self, reference=reference, portrait=portrait)


def warm_up(
    target: LiveTarget, chunks: int = WARM_CHUNKS, on_progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """Prepare: `chunks` chunks of the target's reference as a still driving picture through a
    throwaway session and the decoder, at the live size. `on_progress(done, total)` after each.
    A compiled chunk step (`config.speed.compile`) compiles in the first of these chunks: that is the
    compile step of Prepare. Returns {"chunks", "seconds", "chunk_ms": [per chunk], "compiled"}."""
    t0 = time.perf_counter()
    times = []
    session = None
    for i in range(chunks):
        t = time.perf_counter()
        models = target.prepare()
        if session is None:
            session = StreamingSession(models, target.reference, target.config)
        session.models = models
        still = target.reference.image.to(models.device, torch.float32)[None].expand(CHUNK, -1, -1, -1)
        target.decode(session.push(still))
        times.append(round((time.perf_counter() - t) * 1e3, 1))
        if on_progress:
            on_progress(i + 1, chunks)
    return {
        "chunks": chunks,
        "seconds": round(time.perf_counter() - t0, 3),
        "chunk_ms": times,
        "compiled": target.config.speed.compile,
    }


def check_frame(image: np.ndarray) -> np.ndarray:
    """`image` if it is a usable camera frame (uint8 RGB, each side 64–4096), else FrameError."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise FrameError("bad_frame", f"expected an RGB image, got an array of shape {image.shape} ({image.dtype})")
    h, w = image.shape[:2]
    if not (MIN_SIDE <= h <= MAX_SIDE and MIN_SIDE <= w <= MAX_SIDE):
        raise FrameError(
            "bad_size",
            f"frame of {w}×{h} pixels: each side must be between {MIN_SIDE} and {MAX_SIDE}; "
            "send camera frames such as 1280×720",
        )
    return image


def square_frame(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W, 3) camera frame → the centred square at size × size, prepared as `render` prepares
    driving frames (`video_io.square`); FrameError for a frame that is not RGB or of a wrong size."""
    return np.asarray(square(Image.fromarray(check_frame(image)), size))


def _centre_info(hw: tuple[int, int], size: int) -> CropInfo:
    """Where `video_io.square` cuts its centred square (offsets floored)."""
    h, w = hw
    side = min(h, w)
    left, top = (w - side) // 2, (h - side) // 2
    return CropInfo((left, top, left + side, top + side), (h, w), size)


class CameraFramer:
    """One camera feed's frames → the model's squares, as `framing.crop` says: "auto" follows the face
    with the footage tracker stepped in camera time (`TRACK_FPS`), "center" cuts the centred square.
    `info` is the last frame's crop, `found` whether a face was found in it."""

    def __init__(self, framing: Framing, size: int, detector: str = "auto") -> None:
        self.crop, self.scale, self.size = framing.crop, framing.crop_scale, size
        self.tracker = FaceTracker(scale=self.scale, detector=detector) if self.crop == "auto" else None
        self.last_time: float | None = None
        self.info: CropInfo | None = None
        self.found = False

    def matches(self, framing: Framing, size: int) -> bool:
        """Whether this framer cuts as `framing` says at `size` (else a new one starts: a new first frame)."""
        return (self.crop, self.scale, self.size) == (framing.crop, framing.crop_scale, size)

    def frame(self, image: np.ndarray, t: float) -> tuple[np.ndarray, CropInfo]:
        """Camera frame `image` captured at `t` (seconds, increasing) → uint8 (size, size, 3) and its crop."""
        if self.tracker is None:
            self.info = _centre_info(image.shape[:2], self.size)
            return square_frame(image, self.size), self.info
        steps = 1.0 if self.last_time is None else max((t - self.last_time) * TRACK_FPS, 1e-3)
        self.last_time = t
        box = self.tracker.update(image, steps)
        self.found = self.tracker.found
        patch, self.info = fc.crop(image, box, self.size)
        return np.asarray(patch), self.info


def read_portrait(payload: bytes, max_side: int = PORTRAIT_MAX_SIDE) -> np.ndarray:
    """Encoded picture bytes (JPEG, PNG, WebP, …; any orientation, mode or depth, as `render` reads a
    reference) → upright uint8 RGB, scaled down to `max_side` at most; FrameError "bad_image"."""
    try:
        with Image.open(io.BytesIO(payload)) as im:
            im.load()
            picture = to_rgb(im)
    except Exception as e:
        raise FrameError(
            "bad_image", f"{len(payload)} bytes that are not a picture ({e}); send a JPEG, PNG or WebP portrait"
        ) from None
    if max(picture.size) > max_side:
        picture.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return np.asarray(picture)


def frame_portrait(
    image: np.ndarray, config: StreamConfig, need_face: bool = True, log: Callable[[str], None] | None = None
) -> tuple[ReferencePicture, Portrait]:
    """A portrait (uint8 RGB, any size) → the square around its face at the config's size and crop scale,
    prepared for encoding, and where it was cut. Without a face: FrameError "no_face" (`need_face`), or
    the centred square with a note to `log`."""
    box = fc.find_crop_box(image, scale=config.framing.crop_scale)
    if box is None:
        if need_face:
            raise FrameError(
                "no_face",
                f"no face found in the {image.shape[1]}×{image.shape[0]} portrait; use a picture with one "
                "face seen from the front, at least a tenth of the picture high",
            )
        if log:
            log("warning: no face found in the reference; using its centred square")
        box = fc.center_box(image.shape[:2])
    patch, info = fc.crop(image, box, config.size)
    picture = prepare_reference(Image.fromarray(np.asarray(patch)), config.size, config.framing.resize)
    return picture, Portrait(image, info)


def core_target(
    models: PersonaLiveModels, image: np.ndarray, config: StreamConfig, log: Callable[[str], None] | None = None
) -> LiveTarget:
    """A live target on the core's own networks and encoders (the standalone server): the portrait
    `image` face-cropped (its centred square when it has no face), portraits swapped in encoded by
    the same models, frames decoded by the core VAE."""
    picture, portrait = frame_portrait(image, config, need_face=False, log=log)

    def encode(p: ReferencePicture) -> Reference:
        return encode_reference(models, p)

    return LiveTarget(
        prepare=lambda: models,
        reference=encode(picture),
        decode=lambda latents: decode(models.vae, latents),
        config=config,
        model_key="core",
        encode=encode,
        portrait=portrait,
    )


Held = list[tuple[np.ndarray, CropInfo]]  # one chunk's camera frames and their crops


class LiveSession:
    """The streaming session of one camera feed: 4 camera frames in, 4 generated uint8 frames out.
    A new reference (or networks, or framing) restarts the window (`restarted` tells after `step`)."""

    def __init__(self) -> None:
        self.session: StreamingSession | None = None
        self.target: LiveTarget | None = None
        self.framer: CameraFramer | None = None
        self.restarted = False
        self.held: deque[Held | None] = deque()  # per chunk in the window: its camera frames (None: warm-up)
        self.leaving: Held = []  # where the frames that came out last go back: their camera frames and crops

    def step(
        self,
        target: LiveTarget,
        frames: list[np.ndarray],
        times: list[float],
        controls: MotionControls,
        framing: Framing | None = None,
    ) -> np.ndarray:
        """One chunk: 4 camera frames (uint8, any size; captured at `times`, seconds) framed as `framing`
        says (the target's by default) and through the target's networks and decoder → uint8
        (4, S, S, 3), the oldest chunk of the window (the first `WARMUP_CHUNKS` after a restart: warm-up)."""
        framing = framing or target.config.framing
        models = target.prepare()
        framer = self.framer
        new_framing = framer is None or not framer.matches(framing, target.size)
        if framer is None or new_framing:
            framer = self.framer = CameraFramer(framing, target.size)
        framed = [framer.frame(image, t) for image, t in zip(frames, times)]
        session = self._session_for(target, models, new_framing)
        if self.restarted:
            self.held = deque([None] * WARMUP_CHUNKS)
        self.held.append([(image, info) for image, (_, info) in zip(frames, framed)])
        if session.motion.filter.controls is not controls:
            session.motion.set_controls(controls)
        latents = session.push(to_model_frames([patch for patch, _ in framed], models.device))
        newest = (frames[-1], framed[-1][1])
        self.leaving = self.held.popleft() or [newest] * len(frames)  # warm-up frames: into the newest
        out = target.decode(latents).clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
        return np.asarray(out)

    def _session_for(self, target: LiveTarget, models: PersonaLiveModels, new_framing: bool) -> StreamingSession:
        """The streaming session on these networks and this reference (restarted when either changed,
        or the framing did: the motion is relative to the first framed frame)."""
        self.restarted = False
        session = self.session
        if session is None or session.models.denoising_unet is not models.denoising_unet:
            session = self.session = StreamingSession(models, target.reference, target.config)
            self.restarted = True
        elif new_framing or self.target is None or target.reference is not self.target.reference:
            session.set_reference(target.reference)
            self.restarted = True
        self.target = target
        session.models = models
        return session

    def output(self, images: np.ndarray, framing: Framing) -> list[np.ndarray]:
        """The last step's generated squares as `framing.paste_into` says: the squares ("none"), pasted
        into their camera frames ("driving"; warm-up frames into the newest camera frame) or into the
        reference picture ("reference"), with the footage path's feathered mask."""
        if framing.paste_into == "none" or self.target is None:
            return list(images)
        if framing.paste_into == "reference":
            into = self.target.paste_target
            return [paste_back(image, into.original, into.info, framing.feather) for image in images]
        return [paste_back(image, orig, info, framing.feather) for image, (orig, info) in zip(images, self.leaving)]
