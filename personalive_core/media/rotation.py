"""Upright video frames: the display matrix (rotation and mirror) that phones write.

A phone stores the sensor's picture and records how to turn it for display: an mp4/mov display
matrix (FFmpeg's DISPLAYMATRIX side data, what an older FFmpeg showed as the `rotate` tag). Players
apply it, and so must we, or a portrait video arrives sideways. The eight cases (four rotations,
each optionally mirrored) are told apart as FFmpeg's own command line tells them apart (its
autorotate filters: transpose, hflip, vflip), so our frames match what `ffmpeg -i` shows.
"""

import numpy as np


def display_matrix(frame):
    """The frame's 3×3 display matrix as 9 ints (FFmpeg's layout), or None without one."""
    for data in frame.side_data:
        if data.type.name == "DISPLAYMATRIX":
            return np.frombuffer(bytes(data), dtype="<i4")[:9].tolist()
    return None


def rotate_tag(metadata):
    """A stream's `rotate` tag in degrees clockwise (any letter case: Matroska writes ROTATE), or 0."""
    value = next((v for k, v in metadata.items() if k.lower() == "rotate"), 0)
    try:
        return round(float(value))
    except ValueError:
        return 0


def upright_steps(frame, rotate_tag=0):
    """What turns `frame` (a PyAV VideoFrame) upright: a tuple of steps for `apply`, () if nothing.

    rotate_tag: the stream's `rotate` metadata (degrees clockwise), used only when the frame carries
    no display matrix (FFmpeg builds before 5 exposed only the tag)."""
    m = display_matrix(frame)
    if m is None:
        degrees = rotate_tag % 360
        return {90: ("clock",), 180: ("hflip", "vflip"), 270: ("cclock",)}.get(degrees, ())
    theta = -frame.rotation % 360  # degrees clockwise for display, as FFmpeg's get_rotation
    if abs(theta - 90) < 1:
        return ("transpose",) if m[3] > 0 else ("clock",)
    if abs(theta - 270) < 1:
        return ("antitranspose",) if m[3] < 0 else ("cclock",)
    if abs(theta - 180) < 1:
        return tuple(step for step, flip in (("hflip", m[0] < 0), ("vflip", m[4] < 0)) if flip)
    if abs(theta) < 1 or abs(theta - 360) < 1:
        return ("vflip",) if m[4] < 0 else ()
    return ()  # not a multiple of 90°: rare enough to leave as stored


_STEPS = {
    "clock": lambda a: np.rot90(a, -1),
    "cclock": lambda a: np.rot90(a, 1),
    "transpose": lambda a: a.transpose(1, 0, 2),
    "antitranspose": lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    "hflip": lambda a: a[:, ::-1],
    "vflip": lambda a: a[::-1],
}


def apply(image, steps):
    """(H, W, C) array with `steps` applied, contiguous (a fresh copy only when something turned)."""
    for step in steps:
        image = _STEPS[step](image)
    return np.ascontiguousarray(image)
