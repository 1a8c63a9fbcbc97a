"""The convolutional autoencoder of Bergmann et al. (2018), used by all baselines of Dehaene et al.

Encoder for 128 x 128 inputs (LeakyReLU 0.2 after every layer but the last)::

    layer  kernel stride  out        size
    1      4x4    2       32         64
    2      4x4    2       32         32
    3      3x3    1       32         32
    4      4x4    2       64         16
    5      3x3    1       64         16
    6      4x4    2       128        8
    7      3x3    1       64         8
    8      3x3    1       32         8
    9      8x8    1       latent d   1     (d = 100 in Dehaene et al.)

The decoder mirrors it with transposed convolutions and, as Bergmann et al.'s, has no output
activation (``out_sigmoid=False``). An earlier version of ours ended in a sigmoid; with MNIST's black
background the squared-error loss drives the sigmoid into saturation at 0, its gradient vanishes, and
the L2AE got stuck at one output image for every input (see the Dehaene chapter). For
64 x 64 (32 x 32) inputs the first one (two) stride-2 layers are left out, so every size reaches the same
8 x 8 map. With ``variational=True`` the last encoder layer outputs 2d channels: mean and log-variance.
Initialisation (ours; the papers give none): He et al.'s normal init for LeakyReLU(0.2), zero biases.
With PyTorch's default init the signal shrinks at every one of the 18 layers, and the output at
initialisation depends on the input only by a factor ~1e-7 (:func:`energyad.health.output_dependence`).
``width`` scales every channel count (32 = the paper's; the quick profile uses a narrower net).
"""
from __future__ import annotations

import math

import torch
from torch import nn

ENCODER_128 = [(4, 2, 32), (4, 2, 32), (3, 1, 32), (4, 2, 64), (3, 1, 64), (4, 2, 128), (3, 1, 64), (3, 1, 32)]


def _spec(image_size: int, width: int = 32):
    n_skip = 4 - int(math.log2(image_size // 8))
    if image_size not in (32, 64, 128):
        raise ValueError(f"BergmannAE supports 32, 64 or 128 pixel inputs, not {image_size}")
    spec, skipped = [], 0
    for k, s, c in ENCODER_128:
        if s == 2 and skipped < n_skip:
            skipped += 1
            continue
        spec.append((k, s, max(1, c * width // 32)))
    return spec


class BergmannAE(nn.Module):
    def __init__(self, in_channels: int = 3, image_size: int = 128, latent: int = 100, variational: bool = False,
                 width: int = 32, out_sigmoid: bool = False):
        super().__init__()
        spec = _spec(image_size, width)
        enc, c = [], in_channels
        for k, s, out in spec:
            enc += [nn.Conv2d(c, out, k, s, padding=1 if k == 4 else 1), nn.LeakyReLU(0.2)]
            c = out
        enc.append(nn.Conv2d(c, latent * (2 if variational else 1), 8, 1, 0))     # (N, d, 1, 1)
        self.encoder = nn.Sequential(*enc)
        dec = [nn.ConvTranspose2d(latent, c, 8, 1, 0), nn.LeakyReLU(0.2)]           # (N, c, 8, 8)
        rev = list(reversed(spec))
        for i, (k, s, out) in enumerate(rev):
            nxt = rev[i + 1][2] if i + 1 < len(rev) else width
            last = i + 1 == len(rev)
            target = in_channels if last else nxt
            if s == 2:
                dec.append(nn.ConvTranspose2d(c, target, 4, 2, 1))
            else:
                dec.append(nn.Conv2d(c, target, 3, 1, 1))
            if not last:
                dec.append(nn.LeakyReLU(0.2))
            elif out_sigmoid:
                dec.append(nn.Sigmoid())
            c = target
        self.decoder = nn.Sequential(*dec)
        self.variational, self.latent = variational, latent
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, a=0.2, nonlinearity="leaky_relu")
                nn.init.zeros_(m.bias)
        self.config = dict(in_channels=in_channels, image_size=image_size, latent=latent, variational=variational,
                           width=width, out_sigmoid=out_sigmoid)

    def encode(self, x: torch.Tensor):
        h = self.encoder(x).flatten(1)                                               # (N, d) or (N, 2d)
        return h.chunk(2, dim=1) if self.variational else (h, None)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z[:, :, None, None])                                     # (N, C, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic reconstruction (the mean latent for the VAE variants)."""
        return self.decode(self.encode(x)[0])
