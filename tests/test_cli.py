import os
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from conftest import SIZE, moving_frames
from personalive_core.cli.main import main


def write_video(path, frames, fps=12, audio=True):
    """A small H.264 mp4, with a 440 Hz AAC track if `audio`."""
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        a = c.add_stream("aac", rate=16000) if audio else None
        for f in frames:
            for p in v.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
        if a:
            t = np.arange(int(16000 * len(frames) / fps)) / 16000
            wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
            for i in range(0, wave.shape[1], 1024):
                fr = av.AudioFrame.from_ndarray(wave[:, i : i + 1024].copy(), format="fltp", layout="mono")
                fr.sample_rate = 16000
                for p in a.encode(fr):
                    c.mux(p)
            for p in a.encode():
                c.mux(p)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    Image.fromarray(moving_frames(1, 96, seed=3)[0]).save(d / "ref.png")
    frames = moving_frames(6, size=80)  # not square-sized: centre-cropped and resized
    write_video(d / "drive.mp4", frames)
    (d / "frames").mkdir()
    for i, f in enumerate(moving_frames(5)):
        Image.fromarray(f).save(d / "frames" / f"{i:03d}.png")
    return d


def render(weights, inputs, out, *extra):
    return main(
        [
            "render",
            "--weights",
            weights,
            "--reference",
            str(inputs / "ref.png"),
            "--size",
            str(SIZE),
            "--out",
            str(out),
            *extra,
        ]
    )


def test_render_npy_is_float_frames_aligned_with_driving(tiny_weights, inputs, tmp_path):
    out = tmp_path / "o.npy"
    assert render(tiny_weights, inputs, out, "--driving", str(inputs / "frames")) == 0
    a = np.load(out)
    assert a.shape == (5, SIZE, SIZE, 3) and a.dtype == np.float32
    assert render(tiny_weights, inputs, tmp_path / "w.npy", "--driving", str(inputs / "frames"), "--keep-warmup") == 0
    w = np.load(tmp_path / "w.npy")
    assert w.shape[0] == 17 and np.array_equal(w[12:], a)


def test_render_motion_controls(tiny_weights, inputs, tmp_path):
    """The defaults given explicitly change nothing, bit for bit; other values reach the frames."""
    frames = ["--driving", str(inputs / "frames")]
    outs = {}
    for name, extra in (
        ("plain", []),
        ("defaults", ["--expression", "1", "--head-pose", "1", "--smoothness", "0"]),
        ("controlled", ["--expression", "0", "--head-pose", "0.5", "--smoothness", "0.5"]),
    ):
        assert render(tiny_weights, inputs, tmp_path / f"{name}.npy", *frames, *extra) == 0
        outs[name] = np.load(tmp_path / f"{name}.npy")
    assert np.array_equal(outs["plain"], outs["defaults"])
    assert outs["controlled"].shape == outs["plain"].shape and not np.array_equal(outs["controlled"], outs["plain"])


def test_render_mp4_keeps_fps_and_audio(tiny_weights, inputs, tmp_path):
    out = tmp_path / "o.mp4"
    assert render(tiny_weights, inputs, out, "--driving", str(inputs / "drive.mp4")) == 0
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        assert Fraction(v.average_rate) == 12 and (v.width, v.height) == (SIZE, SIZE)
        assert c.streams.audio
        assert sum(1 for _ in c.decode(video=0)) == 6


def test_render_png_folder_and_frame_limit(tiny_weights, inputs, tmp_path):
    out = tmp_path / "pngs"
    assert render(tiny_weights, inputs, out, "--driving", str(inputs / "drive.mp4"), "--max-frames", "4") == 0
    assert sorted(os.listdir(out)) == [f"{i:06d}.png" for i in range(4)]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--driving", "nope.mp4"], "driving video not found: nope.mp4"),
        (["--driving", "{frames}", "--size", "100"], "--size 100"),
        (["--driving", "{frames}", "--max-frames", "-1"], "--max-frames -1: must be between 0 and"),
        (["--driving", "{frames}", "--expression", "3"], "--expression 3.0: must be between 0 and 2"),
        (["--driving", "{frames}", "--head-pose", "-1"], "--head-pose -1.0: must be between 0 and 2"),
        (["--driving", "{frames}", "--smoothness", "2"], "--smoothness 2.0: must be between 0 and 1"),
        (["--driving", "{empty}"], "no images"),
        (["--driving", "{bad}"], "cannot open driving video"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(tiny_weights, inputs, tmp_path, capsys, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    args = [a.format(frames=inputs / "frames", empty=tmp_path / "empty", bad=tmp_path / "bad.mp4") for a in args]
    argv = [
        "render",
        "--weights",
        tiny_weights,
        "--reference",
        str(inputs / "ref.png"),
        "--out",
        str(tmp_path / "o.npy"),
    ]
    if "--size" not in args:
        argv += ["--size", str(SIZE)]
    assert main(argv + args) == 2
    assert message in capsys.readouterr().err


def test_missing_reference_and_weights(tiny_weights, inputs, tmp_path, capsys):
    assert (
        main(
            [
                "render",
                "--weights",
                tiny_weights,
                "--reference",
                "none.png",
                "--driving",
                str(inputs / "frames"),
                "--out",
                str(tmp_path / "o.npy"),
            ]
        )
        == 2
    )
    assert "reference image not found: none.png" in capsys.readouterr().err
    assert (
        main(
            [
                "render",
                "--weights",
                str(tmp_path),
                "--reference",
                str(inputs / "ref.png"),
                "--driving",
                str(inputs / "frames"),
                "--out",
                str(tmp_path / "o.npy"),
            ]
        )
        == 2
    )
    assert "missing personalive/denoising_unet.pth" in capsys.readouterr().err


def test_check_weights_exit_codes(tiny_weights, tmp_path, capsys):
    assert main(["check-weights", tiny_weights]) == 0
    assert "ok      personalive/motion_extractor" in capsys.readouterr().out
    assert main(["check-weights", str(tmp_path)]) == 1
    assert "MISSING personalive/denoising_unet" in capsys.readouterr().out


def test_bench_prints_json_metrics_last(capsys):
    import json

    assert main(["bench", "--random-weights", "tiny", "--size", str(SIZE), "--chunks", "2", "--warmup", "1"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("fps", "chunk_ms_p50", "chunk_ms_p95", "first_output_ms", "peak_mem_mb"):
        assert result[key] > 0
    assert result["weights"] == "random-tiny" and result["chunks"] == 2
    # per-stage wall time on the CPU, each stage inside the chunk time
    stages = result["stage_ms"]
    assert {
        "motion",
        "keypoints",
        "motion_encoder",
        "pose_guider",
        "denoiser",
        "scheduler",
        "decode",
        "to_host",
    } <= set(stages)
    assert all(v >= 0 for v in stages.values()) and stages["keypoints"] <= stages["motion"]
    assert sum(v for k, v in stages.items() if k not in ("keypoints", "motion_encoder")) <= 2 * result["chunk_ms_p95"]


def test_render_with_taesd_and_channels_last(tiny_weights, inputs, tmp_path, capsys):
    from personalive_core.devtools.random_weights import write_taesd

    taesd = write_taesd(tmp_path / "taesd_decoder.pth")
    full, fast = tmp_path / "full.npy", tmp_path / "fast.npy"
    assert render(tiny_weights, inputs, full, "--driving", str(inputs / "frames")) == 0
    assert (
        render(
            tiny_weights, inputs, fast, "--driving", str(inputs / "frames"), "--taesd", str(taesd), "--channels-last"
        )
        == 0
    )
    assert "decoding with TAESD" in capsys.readouterr().err
    a, b = np.load(full), np.load(fast)
    assert b.shape == a.shape and b.min() >= 0 and b.max() <= 1 and not np.allclose(a, b)
    assert (
        render(
            tiny_weights,
            inputs,
            tmp_path / "x.npy",
            "--driving",
            str(inputs / "frames"),
            "--taesd",
            str(tmp_path / "none.pth"),
        )
        == 2
    )
    assert "TAESD weights not found" in capsys.readouterr().err


def test_bench_taesd_channels_last_compile(capsys):
    """Every speed option together; compilation captured by the "eager" backend (no code
    generation) so the test stays fast — the real compiler is tested in test_compiled.py."""
    import json
    import torch

    try:
        assert (
            main(
                [
                    "bench",
                    "--random-weights",
                    "tiny",
                    "--size",
                    str(SIZE),
                    "--chunks",
                    "1",
                    "--warmup",
                    "0",
                    "--vae",
                    "taesd",
                    "--channels-last",
                    "--compile",
                    "--compile-backend",
                    "eager",
                ]
            )
            == 0
        )
    finally:
        torch._dynamo.reset()
    out, err = capsys.readouterr()
    result = json.loads(out.strip().splitlines()[-1])
    assert result["vae"] == "taesd" and result["decoder"] == "taesd (random weights)"
    assert result["channels_last"] is True and result["compile"] == "eager" and result["static_step"] is True
    assert result["compile_ms"] > 0 and result["fps"] > 0
    assert "compile warm-up, call 1" in err  # one set of shapes compiled before timing


def test_bench_decoder_choice(tiny_weights, tmp_path, capsys):
    import json
    from personalive_core.devtools.random_weights import write_taesd

    base = ["bench", "--size", str(SIZE), "--chunks", "1", "--warmup", "0"]
    assert main(base + ["--random-weights", "tiny", "--vae", "full", "--taesd", "x.pth"]) == 2
    assert "use it with --vae taesd" in capsys.readouterr().err
    assert main(base + ["--weights", tiny_weights, "--vae", "taesd"]) == 2
    assert "give --taesd PATH" in capsys.readouterr().err
    taesd = write_taesd(tmp_path / "taesd" / "taesd_decoder.safetensors")
    assert main(base + ["--weights", tiny_weights, "--taesd", str(taesd)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["vae"] == "taesd" and result["decoder"] == f"taesd ({taesd})" and result["compile_ms"] is None
    assert main(base + ["--random-weights", "tiny"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["vae"] == "full" and result["decoder"] == "sd-vae (AutoencoderKL)"
    assert result["compile"] is None
    # the CPU defaults (float32): every option but compile on
    assert result["channels_last"] is result["onednn_linear"] is result["reuse_memory"] is True
    assert main(base + ["--random-weights", "tiny", "--no-channels-last", "--no-onednn-linear", "--dtype", "bf16"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["channels_last"] is result["onednn_linear"] is False and result["dtype"] == "bfloat16"


def test_bench_forced_keyframes_and_overlap_on_cpu(capsys):
    """--keyframes forces historical keyframes into the timed chunks; --overlap is the plain loop on
    the CPU."""
    import json

    assert (
        main(
            [
                "bench",
                "--random-weights",
                "tiny",
                "--size",
                str(SIZE),
                "--chunks",
                "3",
                "--warmup",
                "1",
                "--keyframes",
                "2",
                "--overlap",
                "--static-step",
                "--no-stages",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["keyframes_added"] == 2 and result["overlap"] is True and result["static_step"] is True
    assert "stage_ms" not in result
