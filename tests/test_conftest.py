"""tests/conftest.py's PERSONALIVE_NO_SKIP=1 (set by CI): every skipped test fails instead, whether it skips
through a skipif mark (at set-up) or by calling pytest.skip (in the test)."""

import os
import subprocess
import sys

TESTS = os.path.dirname(os.path.abspath(__file__))
PROBE = """import pytest

def test_calls_skip():
    pytest.skip("no browser here")

@pytest.mark.skipif(True, reason="no ComfyUI here")
def test_marked():
    pass

def test_runs():
    pass
"""


def run_probe(tmp_path, no_skip):
    (tmp_path / "conftest.py").write_text(open(os.path.join(TESTS, "conftest.py")).read())
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = {**os.environ, "PYTHONPATH": os.path.dirname(TESTS), "PERSONALIVE_NO_SKIP": "1" if no_skip else "0"}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_probe.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return run.returncode, run.stdout.strip().splitlines()[-1], run.stdout


def test_skips_pass_by_default(tmp_path):
    code, summary, out = run_probe(tmp_path, no_skip=False)
    assert code == 0 and "1 passed, 2 skipped" in summary, out


def test_no_skip_turns_both_kinds_of_skip_into_failures(tmp_path):
    code, summary, out = run_probe(tmp_path, no_skip=True)
    assert code == 1 and "skipped" not in summary and "1 passed" in summary, out
    assert out.count("PERSONALIVE_NO_SKIP=1 forbids") >= 2 and "no browser here" in out and "no ComfyUI here" in out
