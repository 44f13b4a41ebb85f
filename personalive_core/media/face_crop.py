"""Face crop for real-world footage (any size and aspect ratio): the square around a face, cut out
at the generation size, and where it came from.

Boxes are `(x0, y0, x1, y1)` in image pixels, ends exclusive, as in `keypoints.face_boxes`. A *crop
box* is the square fed to the model, `scale` × the face box (`face_detect`) around its centre. The
default scale 1.75 is the median ratio measured on PersonaLive's own demo portraits, i.e. the
framing the model was trained on. Tracking through a video is `face_track`, the way back into the
original picture `paste_back`.

Images are HWC RGB, uint8 or float in [0, 1] (ComfyUI IMAGE frames); outputs keep the dtype.
"""

from dataclasses import asdict, dataclass

import cv2

from ..config import DEFAULT_CROP_SCALE
from .face_detect import detect_face

DEFAULT_SCALE = DEFAULT_CROP_SCALE


# ----------------------------------------------------------------------------- boxes


def box_center_side(box):
    x0, y0, x1, y1 = box
    return (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0)


def box_from_center(cx, cy, side):
    h = side / 2
    return (cx - h, cy - h, cx + h, cy + h)


def center_box(image_hw):
    """The largest centred square: the crop box when no face was ever found."""
    h, w = image_hw
    return box_from_center(w / 2, h / 2, min(h, w))


def square_crop_box(face_box, scale=DEFAULT_SCALE, shift=0.0):
    """Square crop box `scale` × the face box, centre moved up by `shift` × face height.

    It may extend past the image: `crop` pads there instead of shrinking, so the face stays
    centred and keeps its size in the crop.
    """
    cx, cy, side = box_center_side(face_box)
    return box_from_center(cx, cy - shift * (face_box[3] - face_box[1]), scale * side)


# ----------------------------------------------------------------------------- crop


@dataclass(frozen=True)
class CropInfo:
    """Where a crop came from: `box` (square, integer pixels of the original), the original
    `image_hw` and the crop's `size`. `to_dict()` is JSON-serialisable."""

    box: tuple
    image_hw: tuple
    size: int

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        return cls(tuple(int(v) for v in d["box"]), tuple(int(v) for v in d["image_hw"]), int(d["size"]))

    def box_to_image(self, box):
        """A box in crop pixels → original-image pixels."""
        k = (self.box[2] - self.box[0]) / self.size
        x0, y0 = self.box[:2]
        return (x0 + box[0] * k, y0 + box[1] * k, x0 + box[2] * k, y0 + box[3] * k)


def _integer_box(box):
    """Snap a square box to whole pixels (side ≥ 1) so that crop and paste-back agree exactly."""
    cx, cy, side = box_center_side(box)
    side = max(1, round(side))
    x0, y0 = round(cx - side / 2), round(cy - side / 2)
    return (x0, y0, x0 + side, y0 + side)


def resize_square(image, size):
    shrink = size < image.shape[0]
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def crop(image, box, size=512, pad="replicate"):
    """Square crop of `box` resized to size×size → (crop, CropInfo).

    Parts of the box outside the image are padded ("replicate" edge pixels or "constant" black).
    """
    h, w = image.shape[:2]
    x0, y0, x1, y1 = _integer_box(box)
    if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
        raise ValueError(f"crop box {box} does not overlap the {w}x{h} image")
    inside = image[max(y0, 0) : min(y1, h), max(x0, 0) : min(x1, w)]
    border = cv2.BORDER_REPLICATE if pad == "replicate" else cv2.BORDER_CONSTANT
    region = cv2.copyMakeBorder(inside, max(-y0, 0), max(y1 - h, 0), max(-x0, 0), max(x1 - w, 0), border, value=0)
    return resize_square(region, size), CropInfo((x0, y0, x1, y1), (h, w), size)


def find_crop_box(image, scale=DEFAULT_SCALE, shift=0.0, refine=None, refine_size=256, **detect_kw):
    """Crop box for one image (e.g. the reference portrait), or None when no face is found.

    refine: optional callable, crop (refine_size², same dtype as `image`) → face box in crop
    pixels or None; it sees the crop around the detected face and may return a better face box.
    """
    face = detect_face(image, **detect_kw)
    if face is not None and refine is not None:
        patch, info = crop(image, square_crop_box(face, scale, shift), refine_size)
        better = refine(patch)
        if better is not None:
            face = info.box_to_image(better)
    return None if face is None else square_crop_box(face, scale, shift)
