"""Real-world footage around the model: face crops in, pasted-back frames out, streaming.

The model works on `size × size` squares. `Reframer` sits between the footage and the stream:
- `reference(image)`: the reference picture the model sees (with `crop="auto"` the square around
  the detected face; with `crop="center"` the picture unchanged, which `encode_reference` resizes);
- `driving(frames)`: the driving frames the model sees (with `crop="auto"` a `FaceTracker` follows
  the face and every frame is cropped to its smoothed square; with `crop="center"` the centred
  square, resized);
- `output(frame, warmup)`: one generated frame → what is written (with `paste_into` the frame
  warped back into the original reference or driving frame at its original resolution, with the
  feathered mask of `paste_back.paste_back`; else the generated frame itself).

Memory stays flat: the tracker is O(1), and for `paste_into="driving"` the original frames are
read a second time in step with the output (only their crop boxes wait for it). `render_footage` is
the whole way from a driving source to a written file (the Render Video node), `render_video` the
same from a reference picture and a driving path (the `render` command and batch jobs).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from ..config import StreamConfig
from ..errors import InputError
from ..media import face_crop as fc
from ..media.driving import DrivingSource
from ..media.face_crop import CropInfo
from ..media.face_track import FaceTracker
from ..media.images import load_image
from ..media.output import Output
from ..media.paste_back import paste_back
from ..media.video_io import square
from ..models.loader import PersonaLiveModels
from ..streaming.render import chunks_needed, render_stream
from ..streaming.hybrid_motion import WARMUP
from ..streaming.reference import Reference
from .reference import encode_reference, prepare_reference

MISSING_SHOWN = 10  # frame indices kept for the report; the count is exact
Frame = np.ndarray  # (H, W, 3): uint8, or float32 in [0, 1]
Log = Callable[[str], None]
Decoder = Callable[[Any], Any]  # scaled latents (4, 4, h, w) → frames (4, H, W, 3) in [0, 1]


class Reframer:
    """Between the footage and the stream, as `config.framing` says (crop, paste_into, crop_scale,
    feather) at `config.size`."""

    def __init__(
        self, config: StreamConfig | None = None, detector: str = "auto", log: Log | None = None, **tracker_kw: Any
    ) -> None:
        config = config or StreamConfig()
        framing = config.framing
        self.size, self.crop, self.paste_into, self.feather = (
            config.size,
            framing.crop,
            framing.paste_into,
            framing.feather,
        )
        self.scale, self.detector, self.tracker_kw = framing.crop_scale, detector, tracker_kw
        self.log = log or (lambda msg: None)
        self.reference_found: bool | None = None  # after `reference()` with crop "auto"
        self.reference_original: Frame | None = None
        self.reference_info: CropInfo | None = None
        self.pending: deque[tuple[Frame | None, CropInfo]] = deque()  # driving crops awaiting their output
        self.originals: Iterator[Frame] | None = None  # a second read of the driving frames, for paste-back
        self.current: Frame | None = None
        self.frames = 0  # driving frames read
        self.missing = 0
        self.missing_first: list[int] = []

    # -- inputs ----------------------------------------------------------------------------------
    def reference(self, image: Image.Image) -> Image.Image:
        """PIL RGB → the PIL image to encode as the reference."""
        if self.crop == "center":
            return image
        arr = np.asarray(image.convert("RGB"))
        box = fc.find_crop_box(arr, scale=self.scale, detector=self.detector)
        self.reference_found = box is not None
        if box is None:
            box = fc.center_box(arr.shape[:2])
            self.log("warning: no face found in the reference; using its centred square")
        patch, self.reference_info = fc.crop(arr, box, self.size)
        if self.paste_into == "reference":
            self.reference_original = arr
        return Image.fromarray(patch)

    def set_reference_crop(self, original: Frame, info: CropInfo) -> None:
        """For `paste_into="reference"` when the reference was cropped elsewhere: the original
        picture (uint8 or float (H, W, 3)) and the CropInfo of its crop."""
        if tuple(info.image_hw) != tuple(original.shape[:2]):
            raise InputError(
                f"the reference crop is for a {info.image_hw[1]}x{info.image_hw[0]} picture, the original "
                f"reference is {original.shape[1]}x{original.shape[0]}"
            )
        self.reference_original, self.reference_info = original, info

    def driving(self, frames: Iterable[Frame], originals: Iterable[Frame] | None = None) -> Iterator[Frame]:
        """Iterable of uint8 (H, W, 3) original frames → uint8 (size, size, 3) model frames.

        originals: the same frames once more (e.g. `DrivingSource.again()`), for paste_into "driving":
        read in step with the output, so no original frame waits in memory for its output (which
        comes ~20 frames later: 2 GB of 8K frames). Without it those frames are held."""
        self.originals = iter(originals) if originals is not None and self.paste_into == "driving" else None
        tracker = (
            FaceTracker(scale=self.scale, detector=self.detector, **self.tracker_kw) if self.crop == "auto" else None
        )
        for frame in frames:
            i = self.frames
            self.frames += 1
            if tracker is None:
                yield (
                    frame
                    if frame.shape[:2] == (self.size, self.size)
                    else np.asarray(square(Image.fromarray(frame), self.size))
                )
                continue
            box = tracker.update(frame)
            if not tracker.found:
                self.missing += 1
                if len(self.missing_first) < MISSING_SHOWN:
                    self.missing_first.append(i)
            patch, info = fc.crop(frame, box, self.size)
            if self.paste_into == "driving":
                self.pending.append((None if self.originals is not None else frame, info))
            yield patch

    # -- output ----------------------------------------------------------------------------------
    def check(self) -> None:
        """InputError when pasting into the reference without knowing where its face crop came from."""
        if self.paste_into == "reference" and self.reference_info is None:
            raise InputError(
                "paste_into 'reference' needs the reference picture's face crop: use crop 'auto' "
                "(the reference is cropped with the driving frames), or give the crop of the "
                "reference picture (Render Video: 'reference_crop' and 'reference_image')"
            )

    def output(self, frame: Frame, warmup: bool = False) -> Frame:
        """A generated float frame (size, size, 3) in [0, 1] → the frame to write: float (unchanged)
        or uint8 (pasted into the original). Call once per stream output, in order; warm-up
        frames (no driving frame of their own) are pasted into the first driving frame."""
        if self.paste_into == "none":
            return frame
        if self.paste_into == "reference":
            self.check()
            pasted: Frame = paste_back(frame, self.reference_original, self.reference_info, self.feather)
            return pasted
        if not self.pending:
            raise RuntimeError("an output frame arrived before its driving frame")
        original, info = self.pending[0] if warmup else self.pending.popleft()
        if self.originals is not None:
            original = self._original(warmup)
        result: Frame = paste_back(frame, original, info, self.feather)
        return result

    def _original(self, warmup: bool) -> Frame:
        """The original of the oldest pending frame from the second read (warm-up frames reuse the first)."""
        if self.current is None:
            self.current = next(self.originals, None) if self.originals is not None else None
            if self.current is None:
                raise RuntimeError("the second read of the driving frames ended early")
        original = self.current
        if not warmup:
            self.current = None
        return original

    def report(self) -> str | None:
        """One line about driving frames without a face, or None when every frame had one."""
        if self.crop != "auto" or not self.missing:
            return None
        shown = ", ".join(map(str, self.missing_first)) + (", …" if self.missing > len(self.missing_first) else "")
        return (
            f"no face found in {self.missing} of {self.frames} driving frames (frames {shown}); "
            "they reuse the last face box (the centred square before the first face)"
        )


def render_footage(
    out: Output,
    models: PersonaLiveModels,
    reference: Reference,
    source: Iterable[Frame],
    reframer: Reframer,
    config: StreamConfig | None = None,
    on_chunk: Callable[[int, Any], None] | None = None,
    decoder: Decoder | None = None,
) -> None:
    """Render the driving frames of `source` (a DrivingSource or any iterable of uint8 frames) through
    `reframer` into `out` (a media.output.Output), frame by frame. `out` is closed at the end, also
    when the run stops early (an exception, an interrupt), so what was written stays playable.
    The other arguments are `render_stream`'s.

    Each frame is written at its driving frame's presentation time (`source.times`, where the source
    has them), warm-up frames before them at the source's rate."""
    config = config or StreamConfig()
    reframer.check()  # a missing reference crop is said before any work, not after the first chunk
    again = getattr(source, "again", None)
    originals = again() if again is not None and reframer.paste_into == "driving" else None
    if hasattr(source, "keep_times"):
        source.keep_times = True
    frames = render_stream(models, reference, reframer.driving(source, originals), config, on_chunk, decoder)
    try:
        for j, frame in enumerate(frames):
            warmup = config.keep_warmup and j < WARMUP
            times = getattr(source, "times", None)
            time_ = times.popleft() if times is not None and not warmup else None
            out.write(reframer.output(frame, warmup=warmup), time_)
    finally:
        out.close()


@dataclass
class RenderResult:
    """What `render_video` wrote: `frames` to `path` in `seconds`, and the face report (or None)."""

    path: str
    frames: int
    seconds: float
    report: str | None


def render_video(
    models: PersonaLiveModels,
    reference: str | Image.Image,
    driving: str | DrivingSource,
    out: str,
    config: StreamConfig | None = None,
    decoder: Decoder | None = None,
    on_chunk: Callable[[int, int | None], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> RenderResult:
    """The main job: a reference portrait (a picture or its file) animated by a driving video (a path or a
    DrivingSource), written to `out` (.mp4 with the driving audio, .npy or a PNG folder) frame by frame,
    as `config` says (size, seed, framing, controls, keyframes). `on_chunk(done, total or None)` after every
    chunk. What was written before an error or an interrupt stays in `out`, playable."""
    config = config or StreamConfig()
    log = log or (lambda message: None)
    reframer = Reframer(config, log=log)
    picture = load_image(reference) if isinstance(reference, str) else reference
    source = driving if isinstance(driving, DrivingSource) else DrivingSource(driving, config.max_frames, log=log)
    cropped = reframer.reference(picture)
    reframer.check()
    encoded = encode_reference(models, prepare_reference(cropped, config.size, config.framing.resize))
    output = Output(out, source.fps, source.audio_file(), log, source.time_base, source.start)
    total = chunks_needed(config.max_frames) if config.max_frames else None
    t0 = time.perf_counter()

    def progress(n: int, _frames: Any) -> None:
        if on_chunk is not None:
            on_chunk(n, total)

    try:
        render_footage(output, models, encoded, source, reframer, config, progress, decoder)
    except KeyboardInterrupt:
        log(f"interrupted after {output.count} frames: {out} holds them")
        raise
    finally:
        report = reframer.report()
        if report:
            log(report)
    return RenderResult(out, output.count, time.perf_counter() - t0, report)
