"""A bounded live soak (tests/live_soak.py): more clients than sessions, misbehaving for a while on
loopback. The server keeps serving the admitted sessions, refuses the rest with the documented error,
frees every session and socket on disconnect, and its memory stays flat. The bounds are on memory and
counts, not on time; a longer run: `python tests/live_soak.py --seconds 180` (README, Reliability)."""

import pytest

from live_soak import BEHAVIOURS, run_soak
from personalive_core.pipelines import LiveTarget
from personalive_core.pipelines import encode_reference, prepare_reference
from personalive_core.streaming.session import decode

from conftest import SIZE

TRACED_GROWTH_MIB = 0.5  # Python allocations between the two quiet points (measured: +0.04 MiB in 180 s;
#                         the socket leak fixed here grew it by 1.4 MiB in this test)
RSS_GROWTH_MIB = 64.0  # process RSS between the two quiet points (allocator noise is a few MiB)


@pytest.mark.parametrize("handler_cancellation", [False, True], ids=["comfyui-runner", "test-server"])
def test_soak_many_misbehaving_clients(tiny_models, reference_image, handler_cancellation):
    target = LiveTarget(
        lambda: tiny_models,
        encode_reference(tiny_models, prepare_reference(reference_image, SIZE)),
        lambda z: decode(tiny_models.vae, z),
    )
    r = run_soak(
        lambda: target,
        clients=8,
        max_sessions=2,
        seconds=6,
        chunks=(2, 3),
        handler_cancellation=handler_cancellation,
        seed=int(handler_cancellation),
    )
    assert r["problems"] == []
    assert all(r[f"round_{name}"] > 0 for name in BEHAVIOURS), r
    assert r["refused"] > 0 and r["admitted"] > r["max_sessions"]
    assert r["error_not_started"] + r["error_bad_message"] > 0 and r["closed_1009"] > 0 and r["closed_protocol"] > 0
    assert r["streams_alive"] == r["sessions_alive"] == r["sockets_alive"] == r["viewers_left"] == r["tasks_left"] == 0
    assert r["threads_during"] == ["personalive-live"] and r["threads_after_shutdown"] == []
    assert r["traced_mib_end"] - r["traced_mib_start"] < TRACED_GROWTH_MIB, r
    assert r["rss_mib_end"] - r["rss_mib_start"] < RSS_GROWTH_MIB, r
