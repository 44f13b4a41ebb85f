"""A render cut short leaves a playable mp4: Ctrl-C (KeyboardInterrupt, and a real SIGINT), an
exception mid-run, a second Ctrl-C while the audio is added, and a process killed outright."""

import os
import shutil
import signal
import subprocess
import sys

import av
import numpy as np
import pytest
from PIL import Image

from conftest import SIZE, moving_frames
from test_cli import write_video
from personalive_core.streaming import render as render_mod
from personalive_core.media import video_io
from personalive_core.cli.main import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    Image.fromarray(moving_frames(1, 96, seed=3)[0]).save(d / "ref.png")
    write_video(d / "drive.mp4", moving_frames(16))  # 12 fps, with audio
    write_video(d / "long.mp4", moving_frames(40))  # time to spare between the signal and the end
    return d


def decoded(path):
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with av.open(str(path)) as c:
        return frames, bool(c.streams.audio)


def fail_at_decode(monkeypatch, call, exc):
    """Raise `exc` in the render loop at the `call`-th chunk (chunks 1-3 are warm-up only)."""
    real, count = render_mod.decode, [0]

    def decode(vae, latents):
        count[0] += 1
        if count[0] == call:
            raise exc
        return real(vae, latents)

    monkeypatch.setattr(render_mod, "decode", decode)


@pytest.mark.parametrize(
    "exc, second_interrupt",
    [
        (KeyboardInterrupt(), False),
        (RuntimeError("boom"), False),
        (KeyboardInterrupt(), True),  # Ctrl-C again while the audio is being added: video only
    ],
)
def test_cut_short_render_leaves_playable_mp4(
    tiny_weights, inputs, tmp_path, monkeypatch, capsys, exc, second_interrupt
):
    fail_at_decode(monkeypatch, 7, exc)  # chunks 4, 5, 6 wrote driving frames 0-11
    if second_interrupt:

        def mux(*args):
            raise KeyboardInterrupt

        monkeypatch.setattr(video_io, "_mux", mux)
    out = tmp_path / "o.mp4"
    argv = [
        "render",
        "--weights",
        tiny_weights,
        "--reference",
        str(inputs / "ref.png"),
        "--size",
        str(SIZE),
        "--driving",
        str(inputs / "drive.mp4"),
        "--out",
        str(out),
    ]
    if isinstance(exc, KeyboardInterrupt):
        assert main(argv) == 130
        assert "interrupted after 12 frames" in capsys.readouterr().err
    else:
        with pytest.raises(RuntimeError, match="boom"):
            main(argv)
    frames, audio = decoded(out)
    assert len(frames) == 12 and frames[0].shape == (SIZE, SIZE, 3)
    assert audio == (not second_interrupt)
    assert os.listdir(tmp_path) == ["o.mp4"]  # no .partial / .audio leftovers


def test_sigint_leaves_playable_mp4(tiny_weights, inputs, tmp_path):
    """A real SIGINT to a running `python -m personalive_core render`."""
    out = tmp_path / "o.mp4"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "personalive_core",
            "render",
            "--weights",
            tiny_weights,
            "--reference",
            str(inputs / "ref.png"),
            "--size",
            str(SIZE),
            "--driving",
            str(inputs / "long.mp4"),
            "--out",
            str(out),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # if ours is ignored
    try:
        for line in p.stderr:
            if line.startswith("chunk 5 "):  # driving frames 0-3 are out; interrupt during chunk 6
                p.send_signal(signal.SIGINT)
                break
        rest = p.stderr.read()
        assert p.wait(timeout=60) == 130, rest
    finally:
        if p.poll() is None:
            p.kill()
    assert "interrupted after" in rest
    frames, audio = decoded(out)
    assert 4 <= len(frames) < 40 and audio


def test_killed_writer_leaves_decodable_fragments(tmp_path):
    """No close() at all (SIGKILL, power loss): the fragments already on disk decode."""
    path = str(tmp_path / "o.mp4")
    w = video_io.VideoWriter(path, 12, (48, 64))
    frames = moving_frames(100, size=64)
    for f in frames:
        w.write(f[:48])
    shutil.copy(path, tmp_path / "copy.mp4")  # what a killed process leaves behind
    partial, _ = decoded(tmp_path / "copy.mp4")
    assert len(partial) >= 2 * 12 and partial[0].shape == (48, 64, 3)  # ≥ 2 s of 100 frames at 12 fps
    w.close()
    assert len(decoded(path)[0]) == 100


def test_failed_audio_mux_keeps_the_video(inputs, tmp_path, monkeypatch):
    def mux(*args):
        raise OSError("disk full")

    monkeypatch.setattr(video_io, "_mux", mux)
    path = str(tmp_path / "o.mp4")
    w = video_io.VideoWriter(path, 12, (SIZE, SIZE), audio_from=str(inputs / "drive.mp4"))
    for f in moving_frames(10):
        w.write(f)
    messages = []
    w.close(messages.append)
    frames, audio = decoded(path)
    assert len(frames) == 10 and not audio
    assert "disk full" in messages[0] and os.listdir(tmp_path) == ["o.mp4"]
    assert np.abs(frames[0].astype(int) - moving_frames(1)[0]).mean() < 8
