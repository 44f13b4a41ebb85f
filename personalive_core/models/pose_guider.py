"""PoseGuider: encodes the rendered keypoint image into features added after the UNet's conv_in."""

from itertools import pairwise

import torch.nn.functional as F
from torch import nn


class PoseGuider(nn.Module):
    def __init__(self, out_channels=320, widths=(16, 32, 96, 256)):
        super().__init__()
        self.conv_in = nn.Conv2d(3, widths[0], 3, padding=1)
        blocks = []
        for cin, cout in pairwise(widths):
            blocks += [nn.Conv2d(cin, cin, 3, padding=1), nn.Conv2d(cin, cout, 3, padding=1, stride=2)]
        self.blocks = nn.ModuleList(blocks)
        self.conv_out_modify = nn.Conv2d(widths[-1], out_channels, 3, padding=1)

    @staticmethod
    def config_from_state_dict(sd):
        n = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
        widths = [sd["conv_in.weight"].shape[0]] + [sd[f"blocks.{i}.weight"].shape[0] for i in range(1, n, 2)]
        return dict(out_channels=sd["conv_out_modify.weight"].shape[0], widths=tuple(widths))

    def forward(self, x):
        """x: (N, 3, H, W) keypoint images in [0, 1] → (N, C, H/8, W/8)."""
        x = F.silu(self.conv_in(x))
        for block in self.blocks:
            x = F.silu(block(x))
        return self.conv_out_modify(x)
