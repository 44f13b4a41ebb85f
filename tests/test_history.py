import torch

from personalive_core.config import Keyframes
from personalive_core.streaming.history import HistoricalKeyframes


def tokens(v):
    return torch.full((32, 16), float(v))


def test_not_tested_before_tenth_chunk():
    h = HistoricalKeyframes(tokens(0)[None])
    assert h.distance(tokens(100), 8) is None
    assert h.distance(tokens(100), 9) is not None


def test_distance_is_l2_to_nearest_bank_entry_and_bank_grows_on_accept():
    h = HistoricalKeyframes(tokens(0)[None])
    d = h.distance(tokens(0.5), 9)
    assert abs(float(d) - 0.5 * (32 * 16) ** 0.5) < 1e-4  # ‖0.5‖ over 512 entries = 11.3
    assert not h.accept(tokens(0.5), d) and len(h.bank) == 1  # under the threshold of 17
    far = h.distance(tokens(1), 9)  # 22.6 > 17
    assert h.accept(tokens(1), far) and len(h.bank) == 2
    near = h.distance(tokens(1.1), 10)  # nearest is the new entry: 2.3
    assert abs(float(near) - 0.1 * (32 * 16) ** 0.5) < 1e-3 and not h.accept(tokens(1.1), near)


def test_at_most_three_keyframes():
    h = HistoricalKeyframes(tokens(0)[None], Keyframes(keyframe_threshold=1.0, max_keyframes=3))
    added = [h.accept(tokens(10 * i), h.distance(tokens(10 * i), 9 + i)) for i in range(1, 6)]
    assert added == [True, True, True, False, False] and len(h.bank) == 4
