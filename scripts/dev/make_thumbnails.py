#!/usr/bin/env python3
"""Draw the Templates-browser thumbnail of each shipped workflow: workflows/<template title>.jpg.

ComfyUI's frontend shows a custom node's template `X.json` with the picture `X.jpg` beside it (served from
/api/workflow_templates/<folder>/X.jpg); without one it shows a broken placeholder. Each card is a small
drawing of what the workflow does (portrait → video, keypoints, long strip, crop and paste back, webcam)
with its title, drawn with Pillow's built-in font, so the output is the same on every machine:

    python scripts/dev/make_thumbnails.py [--out workflows]
"""

import argparse
import os
import sys

from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_workflows import GRAPHS

SIDE = 384  # square: the browser's cards crop to a square
QUALITY = 85
BG_TOP, BG_BOTTOM = (31, 36, 48), (52, 60, 82)
SKIN, HAIR, INK, ACCENT, FILM = (232, 186, 150), (70, 48, 36), (30, 30, 36), (255, 196, 64), (18, 18, 22)
KEYPOINT = (80, 220, 255)


def font(size):
    return ImageFont.load_default(size=size)


def background():
    img = Image.new("RGB", (SIDE, SIDE))
    d = ImageDraw.Draw(img)
    for y in range(SIDE):
        t = y / (SIDE - 1)
        d.line([(0, y), (SIDE, y)], fill=tuple(round(a + (b - a) * t) for a, b in zip(BG_TOP, BG_BOTTOM)))
    return img, d


def face(d, cx, cy, r, tilt=0.0, dots=False):
    """A cartoon head of radius r; `tilt` shifts the features sideways (a turned head); `dots`: keypoints only."""
    if dots:
        points = [
            (cx + r * x, cy + r * y)
            for x, y in [
                (-0.9, -0.1),
                (0.9, -0.1),
                (-0.7, 0.5),
                (0.7, 0.5),
                (0, 0.95),
                (-0.35, -0.15),
                (0.35, -0.15),
                (0, 0.2),
                (-0.25, 0.55),
                (0.25, 0.55),
                (0, 0.62),
                (-0.5, -0.45),
                (0.5, -0.45),
                (0, -0.9),
                (-0.85, -0.6),
                (0.85, -0.6),
            ]
        ]
        for x, y in points:
            d.ellipse([x + tilt * r * 0.3 - 4, y - 4, x + tilt * r * 0.3 + 4, y + 4], fill=KEYPOINT)
        return
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=SKIN)
    d.chord([cx - r * 1.05, cy - r * 1.1, cx + r * 1.05, cy + r * 0.5], 180, 360, fill=HAIR)
    fx = cx + tilt * r * 0.3
    for side in (-1, 1):
        ex = fx + side * r * 0.35
        d.ellipse([ex - r * 0.12, cy - r * 0.05 - r * 0.12, ex + r * 0.12, cy - r * 0.05 + r * 0.12], fill="white")
        d.ellipse([ex - r * 0.06, cy - r * 0.05 - r * 0.06, ex + r * 0.06, cy - r * 0.05 + r * 0.06], fill=INK)
    d.arc(
        [fx - r * 0.35, cy + r * 0.2, fx + r * 0.35, cy + r * 0.65], 20, 160, fill=(150, 60, 60), width=max(2, r // 12)
    )


def film(d, x0, y0, x1, y1, frames, dots=False):
    """A film strip with sprocket holes and one head per frame, turning a little from frame to frame."""
    d.rectangle([x0, y0, x1, y1], fill=FILM)
    h = y1 - y0
    for x in range(x0 + 6, x1 - 6, 14):
        for y in (y0 + 4, y1 - 10):
            d.rectangle([x, y, x + 7, y + 6], fill=(200, 200, 200))
    w = (x1 - x0) / frames
    for i in range(frames):
        fx0, fy0 = x0 + i * w + 3, y0 + 14
        fx1, fy1 = x0 + (i + 1) * w - 3, y1 - 14
        d.rectangle([fx0, fy0, fx1, fy1], fill=(96, 120, 150))
        r = int(min(fx1 - fx0, fy1 - fy0) * 0.36)
        face(d, (fx0 + fx1) / 2, (fy0 + fy1) / 2 + r * 0.1, r, tilt=((i % 5) - 2) / 2, dots=dots)
    return h


def arrow(d, x0, y, x1, colour=ACCENT):
    d.line([(x0, y), (x1 - 10, y)], fill=colour, width=6)
    d.polygon([(x1, y), (x1 - 16, y - 11), (x1 - 16, y + 11)], fill=colour)


def portrait(d, x0, y0, x1, y1):
    d.rectangle([x0, y0, x1, y1], fill=(236, 236, 240))
    d.rectangle([x0 + 6, y0 + 6, x1 - 6, y1 - 6], fill=(120, 150, 190))
    r = int((x1 - x0) * 0.3)
    face(d, (x0 + x1) / 2, (y0 + y1) / 2 + r * 0.15, r)


def draw_portrait_to_video(d):
    portrait(d, 24, 40, 134, 180)
    film(d, 24, 196, 134, 262, 2)
    arrow(d, 146, 150, 200)
    film(d, 208, 70, 364, 230, 2)


def draw_motion_inspection(d):
    film(d, 24, 60, 184, 220, 2)
    d.rectangle([200, 60, 360, 220], fill=FILM)
    face(d, 240, 140, 30, tilt=-1, dots=True)
    face(d, 322, 140, 30, tilt=1, dots=True)
    d.rectangle([212, 100, 268, 180], outline=ACCENT, width=2)


def draw_long_video(d):
    film(d, 16, 40, 368, 120, 6)
    arrow(d, 150, 142, 230)
    film(d, 16, 166, 368, 246, 6)


def draw_crop_paste_back(d):
    d.rectangle([24, 36, 360, 256], fill=(236, 236, 240))
    d.rectangle([30, 42, 354, 250], fill=(150, 170, 120))
    d.rectangle([40, 150, 140, 250], fill=(110, 90, 70))
    d.rectangle([250, 60, 340, 130], fill=(180, 200, 230))
    face(d, 200, 150, 44, tilt=0.5)
    for i in range(0, 132, 12):  # the dashed crop square around the face
        for a, b in (
            ((136 + i, 86), (142 + i, 86)),
            ((136 + i, 214), (142 + i, 214)),
            ((136, 86 + i), (136, 92 + i)),
            ((264, 86 + i), (264, 92 + i)),
        ):
            d.line([a, b], fill=ACCENT, width=4)


def draw_live_webcam(d):
    d.rounded_rectangle([30, 110, 130, 180], 12, fill=(60, 64, 72))
    d.ellipse([58, 120, 108, 170], fill=(20, 20, 24), outline=(160, 160, 170), width=4)
    d.rectangle([70, 180, 90, 200], fill=(60, 64, 72))
    arrow(d, 140, 145, 196)
    d.rectangle([206, 58, 360, 214], fill=FILM)
    d.rectangle([214, 66, 352, 206], fill=(96, 120, 150))
    face(d, 283, 140, 46, tilt=-0.5)
    d.ellipse([222, 74, 238, 90], fill=(230, 40, 40))
    d.text((244, 72), "LIVE", fill="white", font=font(18))


PICTURES = {
    "personalive_portrait_to_video": draw_portrait_to_video,
    "personalive_motion_inspection": draw_motion_inspection,
    "personalive_long_video": draw_long_video,
    "crop_paste_back": draw_crop_paste_back,
    "personalive_live_webcam": draw_live_webcam,
}


def card(template, picture):
    img, d = background()
    picture(d)
    brand, title = template.split(" - ", 1)
    d.text((24, 282), brand, fill=ACCENT, font=font(22))
    d.text((24, 312), title, fill="white", font=font(34 if len(title) < 18 else 28))
    return img


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--out",
        default=os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "workflows"),
    )
    a = p.parse_args(argv)
    for name, graph in GRAPHS.items():
        path = os.path.join(a.out, graph["template"] + ".jpg")
        card(graph["template"], PICTURES[name]).save(path, quality=QUALITY, optimize=True)
        print("wrote", path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
