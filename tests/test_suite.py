"""`bench --suite` on the CPU with tiny random weights: the end-to-end smoke test of the GPU suite.
Compilation is captured by the "eager" backend (no code generation), so it stays quick."""

import json

import pytest
import torch

from personalive_core.cli.main import main
from personalive_core.devtools.suite import PRECISION, configurations

SIZE = 64
SUITE = [
    "bench",
    "--suite",
    "--random-weights",
    "tiny",
    "--size",
    str(SIZE),
    "--device",
    "cpu",
    "--warmup",
    "1",
    "--chunks",
    "1",
    "--headline-chunks",
    "2",
    "--precision-chunks",
    "2",
    "--compile-backend",
    "eager",
]


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def records(out):
    lines = [json.loads(line) for line in out.strip().splitlines()]
    return {r["config"]: r for r in lines}


def test_suite_runs_and_reports_each_configuration(capsys):
    only = "eager,compiled,compiled-overlap,compiled-taesd,eager-static,eager-fp8,eager-sdpa-cudnn"
    assert main(SUITE + ["--only", only + "," + PRECISION]) == 0
    out, err = capsys.readouterr()
    got = records(out)
    names = [c if c == PRECISION else c.name for c in configurations("cpu")]
    assert set(got) == set(names) | {"summary"}
    for name in names:
        r = got[name]
        assert r["status"] in ("ran", "skipped"), r
        assert "elapsed_s" in r
        if r["status"] == "skipped":
            assert r["reason"]
    ran = {n for n in names if got[n]["status"] == "ran"}
    assert ran == {"eager", "compiled", "compiled-overlap", "compiled-taesd", "eager-static", PRECISION}
    assert "fp8" in got["eager-fp8"]["reason"] and "CUDA" in got["eager-sdpa-cudnn"]["reason"]
    for name in ran - {PRECISION}:
        r = got[name]
        assert r["fps"] > 0 and r["chunk_ms_p50"] > 0 and r["peak_mem_mb"] > 0 and r["stage_ms"]["denoiser"] > 0
        assert r["keyframes_added"] == min(3, r["chunks"])  # forced from the first timed chunk on
    assert got["compiled"]["compile_ms"] > 0 and got["compiled"]["compile_warm_ms"] > 0
    assert got["compiled"]["static_step"] is True and got["compiled-taesd"]["decoder"] == "taesd (random weights)"
    precision = got[PRECISION]
    assert precision["chunks"] == 2 and precision["nonfinite_chunks"] == 0 and precision["test"].startswith("compiled")
    summary = got["summary"]
    assert summary["fastest_full_vae"] in ran and summary["fastest_taesd"] == "compiled-taesd"
    assert "configuration" in err and "fastest with the SD VAE" in err


def test_suite_budget_skips_what_does_not_fit(capsys):
    assert main(SUITE + ["--budget-s", "0"]) == 0
    got = records(capsys.readouterr().out)
    assert got["summary"]["ran"] == 0
    for name, r in got.items():
        if name != "summary":
            assert r["status"] == "skipped" and r["reason"], r
    assert "budget" in got["eager"]["reason"]
