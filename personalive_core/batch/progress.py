"""What a batch shows while it runs: a bar over the jobs with the frames of the running ones (on a terminal),
or one line per event (in a log), and the summary at the end."""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TextIO

BAR = 24
DRAW_EVERY_S = 0.1
FRAMES_EVERY_S = 10.0  # in a log, a running job's frames at most this often (and once at its first chunk)


class Progress:
    """Jobs done out of `total` (the bar shows from the first job on), and the frames of each running job; the
    batch's messages go through `log`, above the bar."""

    def __init__(self, total: int, log: Callable[[str], None], stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty, self.say = self.stream.isatty(), log
        self.total, self.finished = total, 0
        self.running: dict[str, tuple[int, int | None]] = {}
        self.said: dict[str, float] = {}  # key → when its frames were last logged
        self.over: deque[str] = deque(maxlen=256)  # jobs just finished: their late messages are dropped
        self.drawn = 0.0

    def log(self, message: str) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
        self.say(message)
        self._draw(force=True)

    def started(self, key: str, worker: str) -> None:
        if key in self.over:
            return
        self.running[key] = (0, None)
        self.log(f"{key}: started on {worker}")

    def frames(self, key: str, read: int, total: int | None) -> None:
        if key not in self.running:
            return  # a late message of a job already finished
        self.running[key] = (read, total)
        now = time.monotonic()
        if not self.tty and now - self.said.get(key, -FRAMES_EVERY_S) >= FRAMES_EVERY_S:
            self.said[key] = now
            self.log(f"{key}: {read}{f'/{total}' if total else ''} frames")
        self._draw()

    def done(self, key: str, message: str | None = None) -> None:
        """A job is over (done, failed, skipped); `message` for the log."""
        self.running.pop(key, None)
        self.said.pop(key, None)
        self.over.append(key)
        self.finished += 1
        if message:
            self.log(message)
        else:
            self._draw()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.tty or not self.total or (not force and now - self.drawn < DRAW_EVERY_S):
            return
        self.drawn = now
        filled = BAR * self.finished // max(self.total, 1)
        jobs = " · ".join(f"{k} {r}{f'/{t}' if t else ''}" for k, (r, t) in list(self.running.items())[:3])
        more = f" +{len(self.running) - 3}" if len(self.running) > 3 else ""
        line = f"[{'#' * filled}{'-' * (BAR - filled)}] {self.finished}/{self.total} jobs  {jobs}{more}"
        self.stream.write("\r\033[K" + line[:160])
        self.stream.flush()


def summary_lines(s: dict[str, Any]) -> list[str]:
    """The summary for people (the JSON line carries the same numbers)."""
    per_clip = s.get("gpu_seconds_per_clip") or s.get("worker_seconds_per_clip")
    kind = "GPU" if s.get("gpu_seconds_per_clip") else "worker"
    state = "stopped" if s.get("error") else "interrupted" if s["interrupted"] else "finished"
    lines = [
        f"batch {state} in {s['seconds']:.1f} s: {s['done']} done, "
        f"{s['skipped']} skipped, {s['failed']} failed, {s['invalid']} bad rows, {s['retried']} retried"
        + (f", {s['cancelled']} cancelled" if s["cancelled"] else "")
    ]
    if s["done"]:
        lines.append(
            f"{s['clips_per_s']:.3f} clips/s on {s['workers']} workers; {per_clip:.1f} {kind}-seconds per clip"
        )
    if s["failed_before"]:
        lines.append(
            f"{s['failed_before']} jobs failed in an earlier run and were left out: --retry-failed runs them again"
        )
    lines.append(f"results: {s['results']}")
    return lines


def print_summary(s: dict[str, Any], log: Callable[[str], None]) -> None:
    for line in summary_lines(s):
        log(line)
