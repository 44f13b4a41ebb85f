"""Writing result frames as they come: an mp4 (with the driving audio), a .npy array or PNG frames."""

import os

import numpy as np

from .video_io import VideoWriter, to_uint8


class Output:
    """Writes frames to .mp4, .npy or a PNG folder as they come; a cut-short run keeps what it wrote.

    Frames are float in [0, 1] or uint8, of any size; the first frame fixes the size (later frames of
    another size are resized to it). H.264 in yuv420p needs even sides: an odd side gets one
    replicated row or column."""

    def __init__(self, path, fps, audio_from, log=None, time_base=None, audio_start=0):
        self.path, self.fps, self.audio_from, self.log = path, fps, audio_from, log or (lambda msg: None)
        self.time_base, self.audio_start = time_base, audio_start  # see VideoWriter
        self.frames, self.writer, self.hw, self.count = [], None, None, 0
        self.kind = (
            "mp4"
            if path.lower().endswith((".mp4", ".mov", ".mkv"))
            else ("npy" if path.lower().endswith(".npy") else "png")
        )
        if self.kind == "png":
            os.makedirs(path, exist_ok=True)

    def _fit(self, frame):
        if self.hw is None:
            self.hw = frame.shape[:2]
            if self.kind == "mp4":
                h, w = self.hw
                if h % 2 or w % 2:
                    self.log(
                        f"note: {w}x{h} has an odd side; the video is {w + w % 2}x{h + h % 2} "
                        "(H.264 4:2:0 needs even sides; the last row/column is repeated)"
                    )
                self.writer = VideoWriter(
                    self.path,
                    self.fps,
                    (h + h % 2, w + w % 2),
                    self.audio_from,
                    time_base=self.time_base,
                    audio_start=self.audio_start,
                )
        elif frame.shape[:2] != self.hw:
            import cv2

            frame = cv2.resize(frame, self.hw[::-1], interpolation=cv2.INTER_AREA)
        return frame

    def write(self, frame, time=None):
        """`time`: the frame's presentation time in seconds (mp4 only; None: 1/fps after the previous)."""
        frame = self._fit(frame)
        if self.kind == "npy":
            self.frames.append(frame.astype(np.float32) / 255 if frame.dtype == np.uint8 else frame.astype(np.float32))
        else:
            u8 = frame if frame.dtype == np.uint8 else to_uint8(frame)
            if self.kind == "mp4":
                h, w = self.hw
                if h % 2 or w % 2:
                    u8 = np.pad(u8, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
                self.writer.write(u8, time)
            else:
                from PIL import Image

                Image.fromarray(u8).save(os.path.join(self.path, f"{self.count:06d}.png"))
        self.count += 1

    def close(self):
        if self.kind == "npy":
            np.save(self.path, np.stack(self.frames) if self.frames else np.zeros((0, 0, 0, 3), np.float32))
        elif self.writer is not None:
            self.writer.close(self.log)
