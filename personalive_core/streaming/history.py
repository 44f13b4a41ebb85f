"""Historical keyframe mechanism (HKM).

A motion bank starts with the reference's motion tokens. From the 10th chunk on, the oldest frame
of the window (the one finishing this pass) is compared with the bank; when its motion is farther
than `keyframe_threshold` (L2 over the 32×16 tokens) from every bank entry, that frame's clean latent is run
through the reference UNet and its tokens join the reference attention as a historical keyframe,
and its motion joins the bank. At most `max_keyframes` are added.
"""

import torch

from ..config import Keyframes


class HistoricalKeyframes:
    def __init__(self, reference_motion, settings=None):
        self.settings = settings or Keyframes()
        self.bank = [reference_motion.reshape(-1).float()]
        self.added = 0

    def distance(self, motion, chunk_index):
        """Min distance of `motion` (tokens of one frame) to the bank, as a device tensor, or None
        when this chunk is not tested. Kept lazy so the caller reads it only at its next sync."""
        s = self.settings
        if chunk_index < s.first_keyframe_chunk or self.added >= s.max_keyframes:
            return None
        bank = torch.stack(self.bank)
        return torch.cdist(motion.reshape(1, -1).float(), bank).min()

    def accept(self, motion, distance):
        """True if the tested frame becomes a keyframe (its motion then joins the bank)."""
        if distance is None or float(distance) <= self.settings.keyframe_threshold:
            return False
        self.bank.append(motion.reshape(-1).float())
        self.added += 1
        return True
