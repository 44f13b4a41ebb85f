"""One stream in two precisions: PSNR per chunk, non-finite frames, drift (personalive_core.tools.precision).

bfloat16 against float32 on the damped tiny models (conftest), 24 chunks at 64 px. Measured: the
first (warm-up) chunk 15.6 dB, then 34–42 dB with no trend. Bars: every chunk after the first
≥ 30 dB, and the last tenth of the driven stream within 3 dB of its first tenth (a precision that
drifts loses PSNR chunk after chunk as its errors stay in the window and the keyframes).
"""

import copy
import json
import math

import torch

from conftest import moving_frames
from personalive_core.config import StreamConfig
from personalive_core.devtools import precision
from personalive_core.cli.main import main

SIZE = 64
CHUNKS = 24


def test_bf16_stream_stays_close_without_drift(damped, reference_image):
    bf16 = copy.deepcopy(damped).to("cpu", torch.bfloat16)
    gaps = list(
        precision.compare_streams(
            damped, bf16, reference_image, moving_frames(4 * CHUNKS, SIZE), SIZE, StreamConfig(seed=5)
        )
    )
    result = precision.summarize(gaps)
    print(result)
    assert result["chunks"] == CHUNKS and result["nonfinite_chunks"] == 0
    assert min(g.psnr for g in gaps[1:]) >= 30
    assert result["psnr_min"] < 25  # really computed in another precision
    assert result["drift_db"] <= 3


def test_nan_is_reported(damped, reference_image):
    broken = copy.deepcopy(damped)
    with torch.no_grad():
        broken.vae.decoder.conv_out.bias[0] = float("nan")
    gaps = list(precision.compare_streams(damped, broken, reference_image, moving_frames(8, SIZE), SIZE))
    result = precision.summarize(gaps)
    assert result["nonfinite_chunks"] == 2 and result["psnr_min"] == -math.inf


def test_summary_means_errors_not_decibels():
    # 3 warm-up chunks (left out of first/last), then 9 exact chunks and one at 40 dB
    gaps = [precision.ChunkGap(i, p, 0.0, True) for i, p in enumerate([10.0] * 3 + [math.inf] * 9 + [40.0])]
    result = precision.summarize(gaps)
    assert result["psnr_first"] == math.inf and result["psnr_last"] == 40.0 and result["psnr_min"] == 10.0
    # the mean of zero errors and one 40 dB error over 10 chunks is a 50 dB error, not inf or 40
    assert precision.summarize(gaps[3:])["psnr_mean"] == 50.0


def test_cli_same_precision_is_identical(capsys):
    assert main(["precision", "--random-weights", "tiny", "--size", "64", "--chunks", "3", "--test", "cpu:fp32"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out.strip().splitlines()[-1])
    assert result["psnr_min"] == math.inf and result["max_abs"] == 0 and result["chunks"] == 3
    assert result["test"] == "cpu:fp32" and "against cpu:fp32" in err


def test_cli_bad_side(capsys):
    assert main(["precision", "--random-weights", "tiny", "--test", "gpu:fp16"]) == 2
    assert "'gpu:fp16': expected DEVICE:DTYPE" in capsys.readouterr().err
    assert main(["precision", "--random-weights", "tiny", "--size", "100"]) == 2
    assert "size 100: must be a multiple of 64" in capsys.readouterr().err
