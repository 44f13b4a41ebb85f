"""`python -m personalive_core batch` on a local Ray (tiny random weights, short synthetic clips, CPU workers).

The drivers run as their own processes, as a user runs them, reading their log line by line: the parity run
starts its embedded Ray (no --address); the others join one local Ray head shared by this module (--address).
The manifest and the results file are also checked on their own, without Ray.
"""

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import tomllib

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # read when ray is imported: clusters on loopback

import av
import numpy as np
import pytest
from PIL import Image

from conftest import SIZE, moving_frames
from personalive_core.batch.ledger import Ledger
from personalive_core.batch.manifest import Entry, Row, RowChecker, manifest_rows, pair_rows
from personalive_core.cli.main import main
from test_cli import write_video
from test_download import DENOISING, hub_layout

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMES = 6  # a short clip: 3 chunks
LONG = 40  # a clip that is still rendering well after its first chunk
LINE_WAIT_S = 300  # a driver that says nothing for this long has hung: the test fails instead of waiting


# -- driving the command -------------------------------------------------------------------------------
class Driver:
    """`python -m personalive_core batch ARGS` in a process of its own; its log (stderr) read line by line."""

    def __init__(self, *args):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "personalive_core", "batch", *map(str, args)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines, self.log = queue.Queue(), []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, pattern):
        """The match of the first log line matching `pattern` (waiting for it if it has not come yet)."""
        for line in self.log:
            if found := re.search(pattern, line):
                return found
        while True:
            line = self.lines.get(timeout=LINE_WAIT_S)
            if line is None:
                raise AssertionError(f"the driver ended before {pattern!r}:\n" + "\n".join(self.log))
            self.log.append(line)
            if found := re.search(pattern, line):
                return found

    def finish(self):
        """(exit code, the JSON summary of the last stdout line, the whole log)."""
        out = self.proc.stdout.read()
        code = self.proc.wait(LINE_WAIT_S)
        while (line := self.lines.get(timeout=LINE_WAIT_S)) is not None:
            self.log.append(line)
        log = "\n".join(self.log)
        assert out.strip(), f"no summary on stdout (exit {code}):\n{log}"
        return code, json.loads(out.strip().splitlines()[-1]), log


def batch(*args):
    return Driver(*args).finish()


def records(out):
    with open(os.path.join(out, "results.jsonl")) as f:
        return [json.loads(line) for line in f]


def by_out(out):
    return {r["out"]: r for r in records(out)}


def visible_files(out):
    """What the output folder holds besides results.jsonl; a hidden name would be a partial file."""
    return sorted(f for f in os.listdir(out) if f != "results.jsonl")


def write_manifest(path, rows):
    """A CSV manifest of `rows` (dicts; the columns of all of them)."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = [",".join(columns)] + [",".join(str(row.get(c, "")) for c in columns) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def decoded(path):
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]), bool(c.streams.audio)


# -- fixtures ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """ref.png, clip0..5.mp4 (FRAMES frames; clip0 with sound), long.mp4 (LONG frames), corrupt.mp4."""
    d = tmp_path_factory.mktemp("batch-media")
    Image.fromarray(moving_frames(1, 96, seed=3)[0]).save(d / "ref.png")
    for i in range(6):
        write_video(d / f"clip{i}.mp4", moving_frames(FRAMES, size=80, seed=i), audio=i == 0)
    write_video(d / "long.mp4", moving_frames(LONG, size=80, seed=9), audio=False)
    (d / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    return d


@pytest.fixture(scope="module")
def head():
    """One local Ray head (2 CPUs) for the module's drivers to join."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "object_store_memory": 96 << 20, "include_dashboard": False},
    )
    yield cluster.address
    cluster.shutdown()


def common(weights):
    return ["--weights", weights, "--size", SIZE]


# -- the manifest and the results file, without Ray ----------------------------------------------------
def test_manifest_rows_are_typed_checked_and_relative_to_the_manifest(media, tmp_path, monkeypatch):
    (tmp_path / "m").mkdir()
    manifest = tmp_path / "m" / "jobs.csv"
    manifest.write_text(
        "reference,driving,out,seed,keep_warmup,expression,channels_last\n"
        f"{media}/ref.png,../../{os.path.basename(media)}/clip1.mp4,,7,yes,0.5,auto\n"
        "# a comment row,,,,,,\n"
        f"{media}/ref.png,{media}/clip2.mp4,two.npy,,,,\n"
        f"{media}/ref.png,{media}/clip2.mp4,sub/x.npy,,,,\n"
        f"{media}/ref.png,{media}/clip2.mp4,x.png,,,,\n"
        f"{media}/ref.png,{media}/clip2.mp4,x.npy,seven,,,\n"
        f"{media}/ref.png,{media}/clip2.mp4,x.npy,,maybe,,\n"
    )
    monkeypatch.chdir(tmp_path)  # the relative path is the manifest folder's, not the working folder's
    checker = RowChecker(str(manifest.parent), {"size": SIZE})
    entries = [checker.check(row) for row in manifest_rows(str(manifest))]
    assert [e.number for e in entries] == [2, 4, 5, 6, 7, 8]
    first = entries[0]
    assert first.error is None and first.driving == str(media / "clip1.mp4") and first.out == "ref__clip1.mp4"
    assert first.options == {"size": SIZE, "seed": 7, "keep_warmup": True, "expression": 0.5, "channels_last": None}
    assert entries[1].error is None and entries[1].out == "two.npy" and entries[1].options == {"size": SIZE}
    errors = [e.error for e in entries[2:]]
    assert "jobs.csv row 5: out 'sub/x.npy': a file name in the output folder" in errors[0]
    assert "jobs.csv row 6: out 'x.png': use a file ending in .mp4, .mov, .mkv, .npy" in errors[1]
    assert "jobs.csv row 7: seed 'seven': must be a whole number" in errors[2]
    assert "jobs.csv row 8: keep_warmup 'maybe': must be true or false" in errors[3]


def test_manifest_jsonl_errors_and_engines(media, tmp_path):
    manifest = tmp_path / "jobs.jsonl"
    rows = [
        {"reference": "ref.png", "driving": "clip1.mp4", "head_pos": 0.5},
        {"reference": "ref.png", "driving": "clip1.mp4", "expression": 5},
        {"reference": "ref.png", "driving": "clip1.mp4", "dtype": "bf16"},
        {"reference": "ref.png", "driving": "clip1.mp4", "PersonaLiveStreamSampler.seed": 3},
        {"reference": "nope.png", "driving": "clip1.mp4"},
        ["not", "an", "object"],
        {"driving": "clip1.mp4"},
    ]
    manifest.write_text("\n".join(map(json.dumps, rows)) + "\n{not json\n")
    core = RowChecker(str(media), {})
    errors = [core.check(row).error for row in manifest_rows(str(manifest))]
    assert "row 1: unknown option 'head_pos'; did you mean 'head_pose'?" in errors[0]
    assert "row 2: expression 5.0: must be between 0 and 2" in errors[1]
    assert "row 3: dtype 'bf16': the workers load their models once with the batch's dtype" in errors[2]
    assert "row 4: 'PersonaLiveStreamSampler.seed': a workflow input (Node.input) needs --engine comfyui" in errors[3]
    assert f"row 5: reference {media / 'nope.png'} not found" in errors[4]
    assert "row 6: expected a JSON object, got list" in errors[5]
    assert "row 7: no 'reference'" in errors[6]
    assert "row 8: not JSON" in errors[7]
    comfy = RowChecker(str(media), {}, engine="comfyui").check(Row(4, "row 4", rows[3]))
    assert comfy.error is None and comfy.inputs == {"PersonaLiveStreamSampler.seed": 3} and comfy.out.endswith(".mp4")


def test_pairs_are_every_portrait_times_every_video(media):
    rows = list(pair_rows(str(media / "ref.png"), str(media)))
    assert [os.path.basename(r.values["driving"]) for r in rows] == [
        "clip0.mp4",
        "clip1.mp4",
        "clip2.mp4",
        "clip3.mp4",
        "clip4.mp4",
        "clip5.mp4",
        "corrupt.mp4",
        "long.mp4",
    ]
    assert rows[0].label == "pair 1 (ref.png × clip0.mp4)"


def test_results_file_one_line_per_row_and_nothing_lost(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    earlier = {"row": 9, "out": "gone.mp4", "status": "done", "output": "gone.mp4", "hash": "h0"}
    (out / "results.jsonl").write_text(
        json.dumps(earlier) + "\n" + json.dumps({**earlier, "out": "a.mp4"}) + '\n{"row": 3, "out": "cut off by a cr'
    )
    ledger = Ledger(str(out))
    assert ledger.unreadable == 1 and ledger.previous("a.mp4")["hash"] == "h0"
    ledger.begin()
    a = ledger.add(Entry(2, "m row 2", "r", "d", "a.mp4"))
    bad = ledger.add(Entry(3, "m row 3", error="m row 3: driving video x not found"))
    dup = ledger.add(Entry(4, "m row 4", "r", "d", "a.mp4"))
    b = ledger.add(Entry(5, "m row 5", "r", "d", "b.mp4"))
    ledger.commit()
    assert a.error is None and bad.error and b.error is None
    assert dup.error == "m row 4: out 'a.mp4' is also the output of m row 2; give one of them another 'out'"
    assert [e.out for e in ledger.entries()] == ["a.mp4", "b.mp4"]
    ledger.record({"row": 5, "out": "b.mp4", "status": "failed", "error": "no"})
    ledger.close()
    lines = records(out)
    assert [(r["row"], r["out"], r["status"]) for r in lines] == [
        (9, "a.mp4", "done"),
        (3, None, "invalid"),
        (4, "a.mp4", "invalid"),
        (5, "b.mp4", "failed"),
        (9, "gone.mp4", "done"),
    ]  # a.mp4 kept from the earlier run; gone.mp4 kept though no row names it


def test_batch_extra_is_requirements_batch_and_never_the_nodes():
    def lines(name):
        with open(os.path.join(REPO, name)) as f:
            return [x.split("#")[0].strip() for x in f if x.split("#")[0].strip() and not x.startswith("-r")]

    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    assert project["optional-dependencies"]["batch"] == lines("requirements-batch.txt")
    assert any(x.startswith("ray") for x in lines("requirements-batch.txt"))
    for name in ("requirements.txt", "requirements-cli.txt"):
        assert not any(x.startswith("ray") for x in lines(name)), name


# -- on Ray ----------------------------------------------------------------------------------------------
def test_two_workers_render_what_render_renders(tiny_weights, media, tmp_path):
    """6 jobs on 2 workers of an embedded Ray: every output equals the single-process `render` of its job,
    bit for bit (both render with one thread: conftest's, and one CPU per worker)."""
    jobs = [
        {
            "reference": "ref.png",
            "driving": f"clip{i}.mp4",
            "out": f"j{i}.{'mp4' if i == 0 else 'npy'}",
            "seed": 10 + i,
            "head_pose": 0.5 if i == 3 else "",
        }
        for i in range(6)
    ]
    manifest = write_manifest(media / "parity.csv", jobs)
    out = tmp_path / "out"
    code, summary, log = batch(manifest, "--out", out, "--workers", 2, "--object-store-mb", 96, *common(tiny_weights))
    assert code == 0 and summary["done"] == 6 and summary["workers"] == 2, log
    assert "ray: embedded on this machine, 2 CPU workers" in log
    assert len({r["worker"].split(" (")[0] for r in records(out)}) == 2, log  # both workers rendered
    assert visible_files(out) == sorted(job["out"] for job in jobs)
    for job in jobs:
        expected = tmp_path / f"render-{job['out']}"
        extra = ["--head-pose", str(job["head_pose"])] if job["head_pose"] else []
        assert (
            main(
                [
                    "render",
                    "--reference",
                    str(media / "ref.png"),
                    "--driving",
                    str(media / job["driving"]),
                    "--out",
                    str(expected),
                    "--seed",
                    str(job["seed"]),
                    *map(str, common(tiny_weights)),
                    *extra,
                ]
            )
            == 0
        )
        if job["out"].endswith(".npy"):
            assert np.array_equal(np.load(out / job["out"]), np.load(expected)), job
        else:
            (frames, audio), (want, want_audio) = decoded(out / job["out"]), decoded(expected)
            assert np.array_equal(frames, want) and audio and want_audio, job


def test_a_killed_worker_loses_no_job(head, tiny_weights, media, tmp_path):
    """os.kill of a worker's process while it renders: its job is rendered again elsewhere, every output is
    complete, and no file of the killed job ever has a final name."""
    manifest = write_manifest(
        tmp_path / "kill.csv",
        [
            {"reference": str(media / "ref.png"), "driving": str(media / "long.mp4"), "out": f"k{i}.npy", "seed": i}
            for i in range(3)
        ],
    )
    out = tmp_path / "out"
    driver = Driver(manifest, "--out", out, "--address", head, "--workers", 2, *common(tiny_weights))
    key, pid = driver.wait_for(r"^(\S+): started on worker \d \(pid (\d+),").groups()
    driver.wait_for(rf"^{re.escape(key)}: \d+/{LONG} frames")  # it is rendering: the first chunk is out
    os.kill(int(pid), signal.SIGKILL)
    code, summary, log = driver.finish()
    assert code == 0 and summary["done"] == 3 and summary["retried"] == 1, log
    assert f"{key}: worker" in log and "was lost" in log
    done = by_out(out)
    assert done[key]["attempts"] == 2 and f"pid {pid}," not in done[key]["worker"], done[key]
    assert all(r["status"] == "done" for r in done.values())
    assert visible_files(out) == ["k0.npy", "k1.npy", "k2.npy"] and not [f for f in os.listdir(out) if f[0] == "."]
    for name in visible_files(out):
        assert np.load(out / name).shape == (LONG, SIZE, SIZE, 3)


def test_interrupt_resume_and_rerun(head, tiny_weights, media, tmp_path):
    """Ctrl-C keeps what finished; the same command finishes the rest; a third run renders nothing (and starts
    no cluster); a changed option renders that job again."""
    rows = [{"reference": "ref.png", "driving": f"clip{i}.mp4", "out": f"r{i}.npy", "seed": i} for i in range(4)]
    manifest = write_manifest(media / "resume.csv", rows)
    out = tmp_path / "out"
    args = (manifest, "--out", out, "--address", head, "--workers", 1, *common(tiny_weights))
    driver = Driver(*args)
    driver.wait_for(r": done in ")
    driver.proc.send_signal(signal.SIGINT)
    code, summary, log = driver.finish()
    assert code == 130 and summary["interrupted"] and 1 <= summary["done"] < 4, log
    assert "run the same command again to resume" in log
    finished = {r["out"] for r in records(out) if r["status"] == "done"}
    assert visible_files(out) == sorted(finished) and len(finished) == summary["done"]
    code, summary, log = batch(*args)
    assert code == 0 and summary["skipped"] == len(finished) and summary["done"] == 4 - len(finished), log
    code, summary, log = batch(*args)
    assert code == 0 and (summary["done"], summary["skipped"]) == (0, 4) and "ray:" not in log, log
    assert [r["row"] for r in records(out)] == [2, 3, 4, 5]
    write_manifest(manifest, [{**row, "seed": 7 if row["out"] == "r2.npy" else row["seed"]} for row in rows])
    code, summary, log = batch(*args)
    assert code == 0 and (summary["done"], summary["skipped"]) == (1, 3) and "r2.npy: done" in log, log


def test_shared_out_workers_write_the_clips_themselves(head, tiny_weights, media, tmp_path):
    """--shared-out (--out on storage every machine mounts): the workers write the clips there, no output byte
    goes to the driver, the files equal those the driver writes without it, and a re-run renders nothing."""
    rows = [{"reference": "ref.png", "driving": f"clip{i}.mp4", "out": f"s{i}.npy", "seed": i} for i in (1, 2)]
    manifest = write_manifest(media / "shared.csv", rows)
    plain, shared = tmp_path / "plain", tmp_path / "shared"
    cluster = ("--address", head, "--workers", 2, *common(tiny_weights))
    code, summary, log = batch(manifest, "--out", plain, *cluster)
    assert code == 0 and summary["done"] == 2 and summary["output_bytes_to_driver"] > 0, log
    code, summary, log = batch(manifest, "--out", shared, "--shared-out", *cluster)
    assert code == 0 and summary["done"] == 2 and summary["output_bytes_to_driver"] == 0, log
    assert visible_files(shared) == ["s1.npy", "s2.npy"] and not [f for f in os.listdir(shared) if f[0] == "."]
    for name in visible_files(shared):
        assert np.array_equal(np.load(shared / name), np.load(plain / name)), name
    assert [r["output"] for r in records(shared)] == ["s1.npy", "s2.npy"]
    code, summary, log = batch(manifest, "--out", shared, "--shared-out", *cluster)
    assert code == 0 and (summary["done"], summary["skipped"]) == (0, 2), log


def test_a_ray_client_address_joins_through_the_client_port(tiny_weights, media, tmp_path, monkeypatch):
    """--address ray://host:port (Ray Client, from the ray[client] requirement): the jobs run on the cluster
    behind the client port and the outputs arrive in the driver's --out."""
    from ray.cluster_utils import Cluster

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 2,
            "object_store_memory": 96 << 20,
            "include_dashboard": False,
            "ray_client_server_port": port,
        },
    )
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # what a `ray start` cluster asks of a client; harmless without
    rows = [{"reference": "ref.png", "driving": f"clip{i}.mp4", "out": f"c{i}.npy", "seed": i} for i in (1, 2)]
    out = tmp_path / "out"
    try:
        manifest = write_manifest(media / "client.csv", rows)
        address = f"ray://127.0.0.1:{port}"
        code, summary, log = batch(manifest, "--out", out, "--address", address, "--workers", 2, *common(tiny_weights))
    finally:
        cluster.shutdown()
    assert code == 0 and summary["done"] == 2 and f"ray: {address}, 2 CPU workers" in log, log
    assert visible_files(out) == ["c1.npy", "c2.npy"]
    for name in visible_files(out):
        assert np.load(out / name).shape == (FRAMES, SIZE, SIZE, 3)


def test_a_ray_client_timeout_says_what_to_set():
    from personalive_core.batch.driver import _client_hint

    hint = _client_hint("ray://head:10001", ConnectionError("ray client connection timeout"))
    assert "RAY_AUTH_MODE=token" in hint and "~/.ray/auth_token" in hint and "10001" in hint
    assert _client_hint("head:6379", ConnectionError("timeout")) == ""  # a GCS address: Ray's own message
    assert _client_hint("ray://head:10001", ConnectionError("refused")) == ""


def test_bad_rows_and_a_failing_job_are_reported_and_the_rest_finish(head, tiny_weights, media, tmp_path):
    rows = [
        {"reference": "ref.png", "driving": "clip1.mp4", "out": "good.npy", "seed": 3},
        {"reference": "ref.png", "driving": "missing.mp4"},
        {"reference": "ref.png", "driving": "clip2.mp4", "head_pos": 0.5},
        {"reference": "ref.png", "driving": "clip1.mp4", "out": "good.npy"},
        {"reference": "ref.png", "driving": "corrupt.mp4"},
    ]
    manifest = media / "mixed.jsonl"
    manifest.write_text("\n".join(map(json.dumps, rows)) + "\n")
    out = tmp_path / "out"
    args = (manifest, "--out", out, "--address", head, "--workers", 1, *common(tiny_weights))
    code, summary, log = batch(*args, "--strict")
    assert code == 2 and "3 bad rows: nothing started (--strict)" in log and "ray:" not in log, log
    code, summary, log = batch(*args)
    assert code == 1 and (summary["done"], summary["failed"], summary["invalid"]) == (1, 1, 3), log
    start = log.index("ray:")
    for n, what in ((2, "missing.mp4 not found"), (3, "did you mean 'head_pose'"), (4, "also the output of")):
        assert log.index(f"bad row: mixed.jsonl row {n}: ") < start and what in log
    failed = by_out(out)["ref__corrupt.mp4"]
    assert failed["status"] == "failed" and failed["attempts"] == 1, failed
    assert f"cannot open driving video {media / 'corrupt.mp4'}" in failed["error"]  # the driver's path
    assert [(r["row"], r["status"]) for r in records(out)] == [
        (1, "done"),
        (2, "invalid"),
        (3, "invalid"),
        (4, "invalid"),
        (5, "failed"),
    ]
    assert visible_files(out) == ["good.npy"]
    code, summary, log = batch(*args)
    assert code == 1 and (summary["done"], summary["failed_before"]) == (0, 1) and "ray:" not in log, log
    code, summary, log = batch(*args, "--retry-failed")
    assert code == 1 and (summary["failed"], summary["skipped"]) == (1, 1), log
    assert by_out(out)["ref__corrupt.mp4"]["attempts"] == 1


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory):
    return hub_layout(tmp_path_factory)


def test_download_fetches_the_weights_once_on_each_machine(hub_root, media, tmp_path, monkeypatch):
    """`--download`: a worker fetches what --weights lacks from the hub (the stand-in, through HF_ENDPOINT in
    the workers' environment) before it loads the models; 2 workers on one machine fetch each file once."""
    from hub_standin import HubStandIn

    hub = HubStandIn(hub_root).start()
    try:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "no-cache"))
        weights = tmp_path / "weights"
        manifest = write_manifest(
            tmp_path / "d.csv",
            [
                {"reference": str(media / "ref.png"), "driving": str(media / f"clip{i}.mp4"), "out": f"d{i}.npy"}
                for i in range(2)
            ],
        )
        code, summary, log = batch(
            manifest,
            "--out",
            tmp_path / "out",
            "--workers",
            2,
            "--object-store-mb",
            96,
            "--download",
            *common(str(weights)),
        )
        assert code == 0 and summary["done"] == 2, log
        assert main(["check-weights", str(weights)]) == 0
        assert len(hub.hits("cdn", "GET", DENOISING)) == 1  # the second worker waited on the lock, then found it
    finally:
        hub.stop()
    assert (
        main(
            [
                "batch",
                str(manifest),
                "--out",
                str(tmp_path / "o2"),
                "--engine",
                "comfyui",
                "--download",
                "--workflow",
                "w.json",
                "--server",
                "127.0.0.1:1",
            ]
        )
        == 2
    )  # the comfyui engine fetches its own
