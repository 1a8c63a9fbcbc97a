"""The all-convolutional energy network of Genc et al. (2021), Table 3.

Table 3 (for 128 x 128 inputs; ELU between all layers, no activation after the last)::

    kernel  stride  padding  f_in       f_out
    3x3     1       1        n_c=1,3    32
    4x4     2       1        32         64
    4x4     2       1        64         128
    4x4     2       1        128        256
    4x4     2       1        256        256
    4x4     2       1        256        256
    4x4     1       0        256        1

Each 4x4/stride-2 layer halves the size (128 -> 64 -> 32 -> 16 -> 8 -> 4) and the last 4x4
convolution without padding maps the 4x4 map to one number, the energy. :class:`EnergyNet` builds
the same design for any input size: it halves until the map is at most 4 pixels wide, then closes
with a convolution as large as what remains (for 28 x 28: 28 -> 14 -> 7 -> 3, closing 3x3).
"""
from __future__ import annotations

import torch
from torch import nn

TABLE3_WIDTHS = (32, 64, 128, 256, 256, 256)   # the paper's channels for 128 x 128 inputs
SMALL_WIDTHS = (16, 32, 64, 64)                # our small variant for 28 x 28 and 32 x 32 inputs


class EnergyNet(nn.Module):
    """E_theta(x): images (N, C, H, W) in [0, 1] -> energies (N,)."""

    def __init__(self, in_channels: int = 1, image_size: int = 128, widths=TABLE3_WIDTHS):
        super().__init__()
        layers = [nn.Conv2d(in_channels, widths[0], 3, 1, 1), nn.ELU()]
        size, c = image_size, widths[0]
        for w in widths[1:]:
            if size <= 4:
                break
            layers += [nn.Conv2d(c, w, 4, 2, 1), nn.ELU()]
            size, c = size // 2, w
        layers.append(nn.Conv2d(c, 1, size, 1, 0))                   # (N, 1, 1, 1)
        self.net = nn.Sequential(*layers)
        self.in_channels, self.image_size, self.widths = in_channels, image_size, tuple(widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()                                 # (N,)


def table3_net(in_channels: int = 3) -> EnergyNet:
    """The paper's network for 128 x 128 inputs."""
    return EnergyNet(in_channels, 128, TABLE3_WIDTHS)


def small_net(in_channels: int = 1, image_size: int = 28) -> EnergyNet:
    """The same design, narrower and shallower, for 28 x 28 and 32 x 32 inputs."""
    return EnergyNet(in_channels, image_size, SMALL_WIDTHS)
