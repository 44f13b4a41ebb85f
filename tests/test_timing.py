import time

import torch

from personalive_core.streaming.timing import NO_TIMER, StageTimer


def test_cpu_stages_are_wall_time_nested_and_reset():
    timer = StageTimer("cpu")
    with timer("outer"), timer("inner"):
        time.sleep(0.02)
    with timer("inner"):
        pass
    totals = timer.totals()
    assert totals["inner"] >= 19 and totals["outer"] >= totals["inner"] - 1
    timer.reset()
    assert timer.totals() == {}


def test_module_hooks_time_every_call_and_come_off():
    timer = StageTimer("cpu")
    net = torch.nn.Linear(4, 4)
    handles = timer.hooks(net, "linear")
    net(torch.ones(2, 4))
    net(torch.ones(2, 4))
    assert set(timer.totals()) == {"linear"}
    for h in handles:
        h.remove()
    timer.reset()
    net(torch.ones(2, 4))
    assert timer.totals() == {}


def test_no_timer_does_nothing():
    with NO_TIMER("anything"):
        pass
    assert NO_TIMER.hooks(torch.nn.Linear(2, 2), "x") == []
