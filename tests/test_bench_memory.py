"""`bench-memory` end to end on tiny lengths (the real check is 200 vs 2000 frames, see README)."""

import json

from conftest import SIZE
from personalive_core.devtools.bench_memory import count_frames, write_driving_video
from personalive_core.cli.main import main


def test_streamed_driving_video_has_the_frames_and_audio(tmp_path):
    import av

    path = str(tmp_path / "d.mp4")
    write_driving_video(path, 30, (36, 48), fps=10)
    assert count_frames(path) == 30
    with av.open(path) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (48, 36)
        assert abs(float(c.duration / 1e6) - 3.0) < 0.2 and c.streams.audio


def test_bench_memory_reports_peak_rss_per_length(tiny_weights, tmp_path, capsys):
    rc = main(
        [
            "bench-memory",
            "--weights",
            tiny_weights,
            "--frames",
            "3",
            "6",
            "--size",
            str(SIZE),
            "--threads",
            "1",
            "--workdir",
            str(tmp_path),
            "--tolerance",
            "10",
        ]
    )
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    assert rc == 0 and result["flat"]
    assert [r["frames"] for r in result["runs"]] == [3, 6]
    assert [r["frames_written"] for r in result["runs"]] == [3, 6]
    assert all(r["peak_rss_mb"] > 50 for r in result["runs"])
    assert out[0].split()[:3] == ["frames", "peak", "RSS"]
