"""Recorded takes: the generated frames of a live stream written to an mp4 as they come.

Each frame is stamped with the time its driving camera frame reached the server (variable frame
rate), so the take plays at the pace it was performed: camera frames the server dropped show as
the previous frame held longer, and the device's speed does not change the take's duration. The
warm-up frames (no camera frame behind them) are not recorded. The file is fragmented
(media.video_io.VideoWriter): a crash leaves every frame up to about a second before it playable.
Encoding runs on a thread of its own, so the stream never waits for the encoder. The first frame
fixes the take's size (the live square, a camera frame, a reference picture: sides made even for
H.264); a later frame of another size (a portrait swapped in while pasting into the reference, the
output switched) is scaled into it, letterboxed.
"""

import os
import queue
import re
import threading
from fractions import Fraction

import numpy as np

from ..pipelines import VideoWriter

RATE_HINT = 25  # the encoder's rate-control hint (frame times come from the timestamps)
TIME_BASE = Fraction(1, 1000)  # frame times in milliseconds


class TakeFolder:
    """Numbered take files under `folder`: `<prefix>_00001_.mp4`, the next free number, as ComfyUI
    numbers its outputs (the prefix may name a subfolder: 'PersonaLive/live')."""

    def __init__(self, folder, prefix="PersonaLive/live"):
        self.folder, self.prefix = folder, prefix
        self.lock = threading.Lock()

    def next(self):
        """Reserve the next file: (absolute path, path relative to the folder)."""
        sub, name = os.path.split(self.prefix)
        directory = os.path.join(self.folder, sub)
        with self.lock:
            os.makedirs(directory, exist_ok=True)
            pattern = re.compile(re.escape(name) + r"_(\d+)_\.mp4$")
            taken = [int(m.group(1)) for f in os.listdir(directory) if (m := pattern.match(f))]
            file = f"{name}_{max(taken, default=0) + 1:05}_.mp4"
            path = os.path.join(directory, file)
            open(path, "xb").close()  # reserved: a second take started meanwhile gets the next number
        return path, os.path.join(sub, file).replace(os.sep, "/")


def fit(image, hw):
    """uint8 `image` scaled into an (h, w) frame, its aspect kept, black around it (`hw` itself: unchanged)."""
    import cv2

    h, w = hw
    ih, iw = image.shape[:2]
    if (ih, iw) == (h, w):
        return image
    k = min(h / ih, w / iw)
    nh, nw = max(1, round(ih * k)), max(1, round(iw * k))
    out = np.zeros((h, w, 3), np.uint8)
    top, left = (h - nh) // 2, (w - nw) // 2
    out[top : top + nh, left : left + nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
    return out


class TakeRecorder:
    """Frames with their capture times (seconds, any clock) in; an mp4 at `path` out. `size`: the
    take's side (int) or (h, w); None: the first frame's size, sides made even."""

    def __init__(self, path, size=None):
        self.path = path
        self.hw = (size, size) if isinstance(size, int) else size
        self.frames, self.first, self.last = 0, None, None
        self.error = None
        self.queue = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="personalive-take", daemon=True)
        self.thread.start()

    def add(self, image, t):
        """uint8 (H, W, 3) frame captured at time `t` (seconds, increasing). Returns at once."""
        if self.first is None:
            self.first = t
        self.last = t
        self.frames += 1
        self.queue.put((image, t - self.first))

    def _run(self):
        writer = None
        try:
            while (item := self.queue.get()) is not None:
                image, seconds = item
                if writer is None:
                    h, w = self.hw or image.shape[:2]
                    self.hw = (h + h % 2, w + w % 2)
                    writer = VideoWriter(self.path, RATE_HINT, self.hw, time_base=TIME_BASE, low_latency=True)
                writer.write(fit(image, self.hw), Fraction(seconds))
        except Exception as e:  # reported by close(); the frames written so far stay playable
            self.error = e
            while self.queue.get() is not None:
                pass
        finally:
            if writer is not None:
                writer.close()

    def close(self):
        """Finish the file; returns {"path", "frames", "seconds"} (seconds: first to last frame). A take
        without frames leaves no file (path None)."""
        self.queue.put(None)
        self.thread.join()
        if self.frames == 0:
            if os.path.exists(self.path):
                os.remove(self.path)
            return {"path": None, "frames": 0, "seconds": 0.0}
        if self.error is not None:
            raise RuntimeError(f"recording to {self.path} failed: {self.error}") from self.error
        span = 0.0 if self.first is None else self.last - self.first
        return {"path": self.path, "frames": self.frames, "seconds": round(span, 3)}
