"""Per-stage timing of a stream: where a chunk's time goes.

A `StageTimer` is handed to a session (and to whatever decodes its output); each stage is timed by
`with timer("name"):`. On CUDA the stages are bracketed by CUDA events, read only by `totals()` at
the end of a run (which waits for the device), so timing adds no synchronisation inside a chunk;
stages report device time, and work queued on a second CUDA stream is timed on that stream. On the CPU, work is
synchronous and the stages are wall time. Nested stages are allowed (the motion stage holds the
keypoint and MotEncoder stages). Timing changes no result: it only records events or reads a clock.

Without a timer a session uses `NO_TIMER`, which does nothing.
"""

import time
from collections import defaultdict
from contextlib import contextmanager, nullcontext

import torch

# the stages of a chunk, in the order of a table
STAGES = (
    "motion",
    "keypoints",
    "motion_encoder",
    "pose_guider",
    "denoiser",
    "scheduler",
    "keyframe",
    "decode",
    "to_host",
)


class _NoTimer:
    def __call__(self, name):
        return nullcontext()

    def hooks(self, module, name):
        return []


NO_TIMER = _NoTimer()


class StageTimer:
    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"
        self.pending = []  # CUDA: (name, start event, end event)
        self.wall = defaultdict(float)  # CPU: seconds per stage of the chunk in progress
        self._open = {}

    @contextmanager
    def __call__(self, name):
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            try:
                yield
            finally:
                end.record()
                self.pending.append((name, start, end))
        else:
            t = time.perf_counter()
            try:
                yield
            finally:
                self.wall[name] += time.perf_counter() - t

    def hooks(self, module, name):
        """Time every forward call of `module` as stage `name` (for stages inside code the timer
        does not reach). Returns the hook handles; `.remove()` them when done."""

        def pre(_module, _args):
            stage = self(name)
            stage.__enter__()
            self._open.setdefault(name, []).append(stage)

        def post(_module, _args, _out):
            self._open[name].pop().__exit__(None, None, None)

        return [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]

    def reset(self):
        """Forget what was timed so far (e.g. warm-up chunks)."""
        self.pending, self.wall = [], defaultdict(float)

    def totals(self):
        """Milliseconds per stage since the last reset (waits for the device on CUDA)."""
        out = defaultdict(float)
        for name, start, end in self.pending:
            end.synchronize()
            out[name] += start.elapsed_time(end)
        for name, seconds in self.wall.items():
            out[name] += seconds * 1e3
        return dict(out)
