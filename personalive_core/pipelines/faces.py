"""Face crops of pictures and video frames of any size and aspect, and the way back: the Crop Face and
Paste Back stages of a graph (the streaming path does the same inside `footage.Reframer`).

`crop_boxes` finds the face in each frame (a video's frames: tracked and smoothed), `cut_face` cuts the
square around it at the generation size and says where the crop came from (`CropInfo`); `paste_face` warps
generated frames back into the originals with a feathered round mask, the originals untouched outside it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..config import DEFAULT_CROP_SCALE
from ..errors import InputError
from ..media import face_crop as fc
from ..media.face_crop import CropInfo
from ..media.face_detect import available_detectors
from ..media.face_track import crop_video_boxes
from ..media.paste_back import paste_back

DETECTORS = ("auto", "cascade", "template")


@dataclass
class FaceCrops:
    """One `CropInfo` per cropped picture (square box in original pixels, original size, crop size), and
    the indices of pictures in which no face was found."""

    infos: list[CropInfo]
    missing: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.infos)

    def to_dict(self) -> dict[str, list[object]]:
        return {"infos": [i.to_dict() for i in self.infos], "missing": list(self.missing)}

    def report(self) -> str | None:
        """One line naming the pictures without a face, or None when every picture had one."""
        if not self.missing:
            return None
        shown = ", ".join(map(str, self.missing[:10])) + (", …" if len(self.missing) > 10 else "")
        return f"no face found in {len(self.missing)} of {len(self.infos)} images ({shown})"


def check_detector(name: str) -> str:
    """`name` if this OpenCV offers that detector ("auto" always); InputError naming the others."""
    if name == "auto" or name in available_detectors():
        return name
    raise InputError(
        f"detector {name!r} is not available with this OpenCV (no bundled Haar cascades); use one of "
        f"{', '.join(['auto', *available_detectors()])}"
    )


def crop_boxes(
    frames: Iterable[np.ndarray],
    scale: float = DEFAULT_CROP_SCALE,
    shift: float = 0.0,
    smoothing: bool = True,
    detector: str = "auto",
) -> tuple[list[tuple[float, ...]], list[int]]:
    """A crop box per frame (float or uint8 (H, W, 3)) and the indices without a face. `smoothing`: track
    the face through the frames (one-euro smoothing, outliers ignored); off: every frame on its own."""
    detector = check_detector(detector)
    if smoothing:
        tracked: tuple[list[tuple[float, ...]], list[int]] = crop_video_boxes(
            frames, scale=scale, shift=shift, detector=detector
        )
        return tracked
    boxes, missing = [], []
    for i, frame in enumerate(frames):
        box = fc.find_crop_box(frame, scale=scale, shift=shift, detector=detector)
        if box is None:
            missing.append(i)
            box = fc.center_box(frame.shape[:2])
        boxes.append(box)
    return boxes, missing


def cut_face(frame: np.ndarray, box: tuple[float, ...], size: int) -> tuple[np.ndarray, CropInfo]:
    """The square `box` of `frame` at size × size (padded where it leaves the picture), and its CropInfo."""
    patch, info = fc.crop(frame, box, size)
    return patch, info


def paste_plan(generated: int, crops: int, originals: int) -> list[tuple[int, int]]:
    """(crop info, original) index pairs for `generated` frames: one crop info or one original is shared
    by all frames, otherwise they go frame for frame; InputError saying how otherwise."""
    if crops not in (1, generated) or originals not in (1, generated):
        hint = (
            " (12 more generated frames than crops: turn 'keep_warmup' off in the sampler)"
            if generated == max(crops, originals) + 12
            else ""
        )
        raise InputError(
            f"Paste Back: {generated} generated frames, {crops} crop infos and {originals} original "
            f"images; give one crop info and one original for all frames, or one of each per frame{hint}"
        )
    return [(i if crops > 1 else 0, i if originals > 1 else 0) for i in range(generated)]


def check_originals(infos: Sequence[CropInfo], height: int, width: int) -> None:
    """InputError unless every crop came from a picture of the originals' size."""
    for info in infos:
        if tuple(info.image_hw) != (height, width):
            raise InputError(
                f"crop_info is for {info.image_hw[1]}x{info.image_hw[0]} pictures, the original is "
                f"{width}x{height}; connect the image(s) that went into 'PersonaLive Crop Face'"
            )


def paste_face(generated: np.ndarray, original: np.ndarray, info: CropInfo, feather: float) -> np.ndarray:
    """One generated square warped back into its original picture (`media.paste_back`)."""
    pasted: np.ndarray = paste_back(generated, original, info, feather)
    return pasted
