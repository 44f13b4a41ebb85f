"""Recorded takes: numbered files, frames at their capture times, playable after a crash."""

import os
import subprocess
import sys
import textwrap

import av
import numpy as np
import pytest

from personalive_core.live.recorder import TakeFolder, TakeRecorder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def frame(i, size=64):
    image = np.zeros((size, size, 3), np.uint8)
    image[:, : (i * 7) % size] = 200  # a bar that grows: every frame differs
    return image


def decoded_times(path):
    with av.open(path) as c:
        return [f.time for f in c.decode(video=0)]


def test_take_folder_numbers_like_comfyui(tmp_path):
    takes = TakeFolder(str(tmp_path), "PersonaLive/live")
    (tmp_path / "PersonaLive").mkdir()
    (tmp_path / "PersonaLive" / "live_00007_.mp4").write_bytes(b"")
    (tmp_path / "PersonaLive" / "other_00020_.mp4").write_bytes(b"")
    first, second = takes.next(), takes.next()
    assert first == (str(tmp_path / "PersonaLive" / "live_00008_.mp4"), "PersonaLive/live_00008_.mp4")
    assert second[1] == "PersonaLive/live_00009_.mp4" and os.path.exists(second[0])


def test_frames_play_at_their_capture_times(tmp_path):
    """Variable frame rate: a frame lasts until the next one was captured (dropped camera frames and
    a slow device make longer gaps), so the take lasts as long as the performance."""
    captured = [100.0, 100.04, 100.08, 100.35, 100.39, 101.2, 101.24, 101.28]
    recorder = TakeRecorder(str(tmp_path / "take.mp4"), 64)
    for i, t in enumerate(captured):
        recorder.add(frame(i), t)
    result = recorder.close()
    assert result == {"path": str(tmp_path / "take.mp4"), "frames": 8, "seconds": 1.28}
    times = decoded_times(result["path"])
    assert len(times) == 8
    np.testing.assert_allclose(times, np.array(captured) - captured[0], atol=1e-3)


def test_an_empty_take_leaves_no_file(tmp_path):
    path = str(tmp_path / "empty.mp4")
    assert TakeRecorder(path, 64).close() == {"path": None, "frames": 0, "seconds": 0.0}
    assert not os.path.exists(path)


def test_a_crash_leaves_a_playable_take(tmp_path):
    """The process dies (os._exit, no close) 3 s into a 25 fps take: the frames up to about a second
    before the end play."""
    path = str(tmp_path / "crash.mp4")
    child = textwrap.dedent(f"""
        import os, time, sys
        sys.path.insert(0, {REPO!r}); sys.path.insert(0, {os.path.join(REPO, "tests")!r})
        from personalive_core.live.recorder import TakeRecorder
        from test_recorder import frame
        r = TakeRecorder({path!r}, 64)
        for i in range(75):
            r.add(frame(i), i / 25)
        while not r.queue.empty():
            time.sleep(0.05)
        time.sleep(0.5)
        os._exit(0)
    """)
    subprocess.run([sys.executable, "-c", child], check=True, timeout=120)
    times = decoded_times(path)
    assert len(times) >= 45 and times == sorted(times)  # measured 55 of 75 (2.16 of 3 s)
    assert times[1] == pytest.approx(0.04, abs=1e-3)
