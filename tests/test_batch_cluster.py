"""The batch past one machine, on a simulated two-node Ray cluster (`ray.cluster_utils.Cluster`: two raylets on
this machine): a node removed while it renders loses no job, the outputs arrive in the driver's --out, and no
worker reads a path of the driver (the inputs are moved away once the driver has read them all)."""

import os

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # read when ray is imported: clusters on loopback

import numpy as np
import pytest
from PIL import Image

from conftest import SIZE, moving_frames
from test_batch import Driver, by_out, common, visible_files, write_manifest
from test_cli import write_video

FRAMES = 32
JOBS = 4


@pytest.fixture()
def cluster():
    """A head node and a second node, one CPU (one worker) each."""
    from ray.cluster_utils import Cluster

    store = {"object_store_memory": 80 << 20}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False, **store})
    try:
        cluster.second = cluster.add_node(num_cpus=1, **store)
        yield cluster
    finally:
        cluster.shutdown()


def test_a_removed_node_loses_no_job_and_workers_read_no_driver_path(cluster, tiny_weights, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    Image.fromarray(moving_frames(1, 96, seed=3)[0]).save(inputs / "ref.png")
    for i in range(JOBS):
        write_video(inputs / f"clip{i}.mp4", moving_frames(FRAMES, size=80, seed=i), audio=False)
    manifest = write_manifest(
        inputs / "jobs.csv",
        [{"reference": "ref.png", "driving": f"clip{i}.mp4", "out": f"c{i}.npy", "seed": i} for i in range(JOBS)],
    )
    out = tmp_path / "out"
    driver = Driver(
        manifest,
        "--out",
        out,
        "--address",
        cluster.address,
        "--workers",
        2,
        "--in-flight",
        2 * JOBS,
        *common(tiny_weights),
    )
    driver.wait_for("every job's inputs are read and shipped")
    os.rename(inputs, tmp_path / "moved-away")  # from now on a worker reading the driver's paths would fail
    second = cluster.second.node_id[:8]
    key = driver.wait_for(rf"^(\S+): started on worker \d \(pid \d+, node 127\.0\.0\.1 {second}\)").group(1)
    driver.wait_for(rf"^{key}: \d+/{FRAMES} frames")  # it is rendering on the second node
    cluster.remove_node(cluster.second)
    code, summary, log = driver.finish()
    assert code == 0 and summary["done"] == JOBS and summary["retried"] >= 1, log
    done = by_out(out)
    assert done[key]["attempts"] == 2 and second not in done[key]["worker"], done[key]
    assert visible_files(out) == [f"c{i}.npy" for i in range(JOBS)]
    for i in range(JOBS):
        assert np.load(out / f"c{i}.npy").shape == (FRAMES, SIZE, SIZE, 3)
