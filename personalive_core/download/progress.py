"""A text progress bar (tqdm-free) for the command line."""

from __future__ import annotations

import sys
import time
from typing import TextIO


from .report import human_size


class TextProgress:
    """A `progress` callback drawing one bar per file on a stream (stderr): bytes, rate and ETA.

    On a terminal the bar is redrawn in place at most every `interval_s`; elsewhere (logs, CI) one line per
    file every `log_interval_s` and when it completes."""

    def __init__(
        self, stream: TextIO | None = None, width: int = 24, interval_s: float = 0.1, log_interval_s: float = 10.0
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval_s = interval_s if self.tty else log_interval_s
        self._file: str | None = None
        self._start = self._last = 0.0
        self._first_done = 0
        self._open_line = False

    def __call__(self, file: str, done: int, total: int) -> None:
        now = time.monotonic()
        if file != self._file:
            self._end_line()
            self._file, self._start, self._last, self._first_done = file, now, 0.0, done
        finished = total > 0 and done >= total
        if not finished and now - self._last < self.interval_s:
            return
        self._last = now
        line = self.format(file, done, total, now - self._start, done - self._first_done)
        if self.tty:
            self.stream.write("\r" + line.ljust(100))
            self._open_line = not finished
            if finished:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        if finished:
            self._file = None

    def _end_line(self) -> None:
        if self._open_line:
            self.stream.write("\n")
            self._open_line = False

    def format(self, file: str, done: int, total: int, elapsed: float, transferred: int) -> str:
        name = file if len(file) <= 40 else "…" + file[-39:]
        rate = transferred / elapsed if elapsed > 0 else 0.0
        if total > 0:
            frac = min(1.0, done / total)
            filled = int(frac * self.width)
            eta = (total - done) / rate if rate > 0 else None
            eta_text = (
                "--:--" if eta is None else time.strftime("%H:%M:%S" if eta >= 3600 else "%M:%S", time.gmtime(eta))
            )
            return (
                f"{name:<40} {frac * 100:5.1f}% [{'#' * filled}{'.' * (self.width - filled)}] "
                f"{human_size(done)}/{human_size(total)} {human_size(rate)}/s ETA {eta_text}"
            )
        return f"{name:<40} {human_size(done)} {human_size(rate)}/s"
