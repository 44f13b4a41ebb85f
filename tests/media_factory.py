"""Hostile media as phones and downloads deliver it, built by the tests themselves (nothing downloaded).

- `exif_photo`: a JPEG stored sideways/mirrored with the EXIF orientation (1-8) that makes it upright;
  the stored pixels follow the EXIF specification's table (written out here, not taken from PIL).
- `mode_pictures`: 16-bit, float, CMYK, palette, alpha, grey and bilevel pictures with the RGB each
  should load as.
- `write_video`: H.264 with optional display-matrix rotation (PyAV's `set_display_rotation`, the
  side data phones write), irregular presentation times (variable frame rate), exact rational rates,
  an AAC track as long as the video.
- `truncate`, `corrupt`: a file cut off mid-stream, a file with garbage bytes in the middle.
"""

from fractions import Fraction

import av
import cv2
import numpy as np
from PIL import Image

QUADRANTS = np.array([[230, 30, 30], [30, 200, 40], [40, 60, 220], [240, 220, 40]], np.uint8)  # TL TR BL BR


def quadrant_picture(h, w):
    """uint8 (h, w, 3): four flat colours (top-left red, top-right green, bottom-left blue,
    bottom-right yellow), so any rotation or mirror shows."""
    out = np.empty((h, w, 3), np.uint8)
    out[: h // 2, : w // 2], out[: h // 2, w // 2 :] = QUADRANTS[0], QUADRANTS[1]
    out[h // 2 :, : w // 2], out[h // 2 :, w // 2 :] = QUADRANTS[2], QUADRANTS[3]
    return out


def quadrant_colours(image):
    """Mean colour of the centre of each quadrant (TL, TR, BL, BR) of an (H, W, 3) image."""
    a = np.asarray(image, np.float32)
    h, w = a.shape[:2]
    ys, xs = (
        (slice(h // 8, 3 * h // 8), slice(5 * h // 8, 7 * h // 8)),
        (slice(w // 8, 3 * w // 8), slice(5 * w // 8, 7 * w // 8)),
    )
    return np.array([a[y, x].reshape(-1, 3).mean(0) for y in ys for x in xs])


def stored_for_orientation(upright, orientation):
    """The pixels a camera stores for an `upright` picture with EXIF `orientation` (EXIF 2.3, tag
    0x0112: where the stored 0th row and 0th column lie in the upright picture)."""
    return {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],  # row 0 = top, column 0 = right
        3: lambda a: a[::-1, ::-1],  # bottom, right
        4: lambda a: a[::-1],  # bottom, left
        5: lambda a: a.transpose(1, 0, 2),  # row 0 = left side, column 0 = top
        6: lambda a: np.rot90(a, 1),  # row 0 = right side, column 0 = top
        7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),  # right side, bottom
        8: lambda a: np.rot90(a, -1),  # left side, bottom
    }[orientation](upright).copy()


def exif_photo(path, orientation, upright, quality=95):
    """Save `upright` as a JPEG stored in `orientation`, with that EXIF Orientation tag."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored_for_orientation(upright, orientation)).save(path, quality=quality, exif=exif)
    return path


def mode_pictures(folder, h=48, w=64):
    """Pictures in unusual modes → {name: (path, expected uint8 (h, w, 3) RGB, tolerance)}."""
    folder.mkdir(parents=True, exist_ok=True)
    ramp16 = np.linspace(0, 65535, h * w).reshape(h, w).astype(np.uint16)
    grey = lambda a: np.repeat(a[..., None], 3, -1)
    colour = quadrant_picture(h, w)
    alpha = np.zeros((h, w), np.uint8)
    alpha[:, w // 2 :] = 255  # left half transparent (→ white), right half opaque
    on_white = colour.copy()
    on_white[:, : w // 2] = 255
    out = {}

    def save(name, image, expected, tol=0, **kw):
        path = folder / name
        image.save(path, **kw)
        out[name.replace(".", "_")] = (path, expected, tol)

    save("grey16.png", Image.fromarray(ramp16), grey((ramp16 / 257 + 0.5).astype(np.uint8)), 1)
    rgb16 = np.stack([ramp16, ramp16[::-1], ramp16[:, ::-1]], -1)
    cv2.imwrite(str(folder / "rgb16.png"), rgb16[..., ::-1])  # PIL cannot write 48-bit PNG; OpenCV can
    out["rgb16_png"] = (folder / "rgb16.png", (rgb16 >> 8).astype(np.uint8), 1)
    save("grey16.tif", Image.fromarray(ramp16), grey((ramp16 / 257 + 0.5).astype(np.uint8)), 1)
    ramp = ramp16.astype(np.float32) / 65535
    save("float.tif", Image.fromarray(ramp), grey((ramp * 255 + 0.5).astype(np.uint8)), 1)
    cmyk = Image.fromarray(colour).convert("CMYK")
    save("cmyk.jpg", cmyk, colour, 12, quality=95)
    save("cmyk.tif", cmyk, colour, 0)
    palette = Image.fromarray(colour).quantize(colors=4, method=Image.Quantize.MEDIANCUT)
    save("palette.png", palette, colour, 2)
    pal_t = palette.copy()
    pal_t.info["transparency"] = int(np.asarray(palette)[0, 0])  # the top-left colour is see-through
    expected = colour.copy()
    expected[: h // 2, : w // 2] = 255
    save("palette_alpha.png", pal_t, expected, 2, transparency=pal_t.info["transparency"])
    save("rgba.png", Image.fromarray(np.dstack([colour, alpha])), on_white)
    save("rgba.webp", Image.fromarray(np.dstack([colour, alpha])), on_white, 0, lossless=True)
    grey8 = (ramp16 >> 8).astype(np.uint8)
    save(
        "grey_alpha.png",
        Image.merge("LA", [Image.fromarray(grey8), Image.fromarray(alpha)]),
        np.where(alpha[..., None] > 0, grey(grey8), 255).astype(np.uint8),
    )
    save("grey.png", Image.fromarray(grey8), grey(grey8))
    bits = (np.indices((h, w)).sum(0) // 8) % 2 == 0
    save("bilevel.png", Image.fromarray(bits), grey(np.where(bits, 255, 0).astype(np.uint8)))
    return out


def write_video(
    path,
    frames,
    fps=Fraction(25),
    times=None,
    rotation=0,
    audio=True,
    fmt=None,
    options=None,
    time_base=None,
    gop=None,
    hflip=False,
    beeps=None,
    preset=None,
):
    """H.264 of `frames` (an iterable of uint8 (H, W, 3); generated lazily for big sizes).

    times: presentation time of every frame in seconds (Fractions; None = i / fps) — irregular
    times make a variable-frame-rate file. rotation: display-matrix rotation in degrees
    counter-clockwise (what a phone writes; players and our readers turn the picture by it).
    hflip: mirror after the rotation (a front camera). audio: a 440 Hz AAC track lasting until the
    end of the last frame; with `beeps` (times in seconds) silence except 40 ms tones at those times,
    for checking lip sync. preset: libx264 preset (ultrafast for 8K)."""
    fps = Fraction(fps)
    tb = time_base or (Fraction(1, 90000) if times is not None else 1 / fps)
    end = Fraction(0)
    with av.open(str(path), "w", format=fmt, options=options or {}) as c:
        v = None
        for i, f in enumerate(frames):
            if v is None:
                v = c.add_stream("libx264", rate=fps)
                v.width, v.height, v.pix_fmt = f.shape[1], f.shape[0], "yuv420p"
                v.codec_context.time_base = tb
                if gop:
                    v.codec_context.gop_size = gop
                if preset:
                    v.options = {"preset": preset}
                if rotation or hflip:
                    v.set_display_rotation(rotation, hflip=hflip)
                a = c.add_stream("aac", rate=16000) if audio else None
            t = Fraction(times[i]) if times is not None else i / fps
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            frame.pts, frame.time_base = round(t / tb), tb
            for p in v.encode(frame):
                c.mux(p)
            end = t + (Fraction(times[i]) - Fraction(times[i - 1]) if times is not None and i else 1 / fps)
        for p in v.encode():
            c.mux(p)
        if a is not None:
            t = np.arange(int(16000 * end)) / 16000
            wave = 0.3 * np.sin(2 * np.pi * 440 * t)
            if beeps is not None:
                wave *= np.any([(t >= b) & (t < b + 0.04) for b in beeps], axis=0)
            wave = wave.astype(np.float32)[None]
            for i in range(0, wave.shape[1], 1024):
                fr = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(wave[:, i : i + 1024]), format="fltp", layout="mono"
                )
                fr.sample_rate, fr.pts = 16000, i
                for p in a.encode(fr):
                    c.mux(p)
            for p in a.encode():
                c.mux(p)
    return path


def audio_onsets(path, threshold=0.05):
    """Presentation times (s) where the tones of a file's audio track start (after ≥ 0.1 s of quiet)."""
    times, wave = [], []
    with av.open(str(path)) as c:
        for f in c.decode(audio=0):
            samples = f.to_ndarray().reshape(len(f.layout.channels) if f.format.is_planar else 1, -1)[0]
            times.append(float(f.time) + np.arange(samples.size) / f.sample_rate)
            wave.append(samples)
    times, wave = np.concatenate(times), np.concatenate(wave)
    loud = np.flatnonzero(np.abs(wave) > threshold)
    gap = np.diff(times[loud], prepend=-1.0)
    return times[loud[gap > 0.1]]


def noisy_frames(n, h, w, seed=0):
    """Frames that do not compress to nothing (so a cut at x % of the bytes is x % of the video)."""
    rng = np.random.default_rng(seed)
    base = quadrant_picture(h, w).astype(np.int16)
    for _ in range(n):
        yield np.clip(base + rng.integers(-40, 40, (h, w, 3)), 0, 255).astype(np.uint8)


def truncate(src, dst, fraction):
    """The first `fraction` of the bytes of `src`: a recording or download cut off."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def corrupt(src, dst, at=0.5, nbytes=2000, seed=0):
    """`src` with `nbytes` random bytes written over the middle (a damaged packet)."""
    data = bytearray(src.read_bytes())
    i = int(len(data) * at)
    data[i : i + nbytes] = np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))
    return dst
