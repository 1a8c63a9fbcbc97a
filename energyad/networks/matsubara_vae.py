"""The convolutional VAE (and AE) of Matsubara et al., Sec. V-A.

Encoder: ``N_conv`` convolutions, the n-th with a 4x4 kernel, stride 2 and ``N_c * 2**(n-1)``
output channels, each followed by batch normalisation and ReLU; then one fully-connected layer with
``2 * N_z`` outputs: the mean and the log-variance of q(z|x). The decoder mirrors it (a
fully-connected layer, then 4x4 stride-2 transposed convolutions with batch normalisation and ReLU)
and outputs two images: the mean and the log-variance of p(x|z). The paper uses N_conv = 4 and
N_c = 32 on the 32x32 toy data. The AE has the same encoder/decoder with point outputs.
"""
from __future__ import annotations

import torch
from torch import nn


def _encoder(in_channels: int, n_conv: int, n_c: int) -> tuple[nn.Sequential, int]:
    layers, c = [], in_channels
    for n in range(1, n_conv + 1):
        out = n_c * 2 ** (n - 1)
        layers += [nn.Conv2d(c, out, 4, 2, 1), nn.BatchNorm2d(out), nn.ReLU()]
        c = out
    return nn.Sequential(*layers), c


def _decoder(out_channels: int, n_conv: int, n_c: int) -> nn.Sequential:
    layers = []
    for n in range(n_conv, 1, -1):
        c_in, c_out = n_c * 2 ** (n - 1), n_c * 2 ** (n - 2)
        layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1), nn.BatchNorm2d(c_out), nn.ReLU()]
    layers.append(nn.ConvTranspose2d(n_c, out_channels, 4, 2, 1))   # last layer: no BN, identity output
    return nn.Sequential(*layers)


class MatsubaraVAE(nn.Module):
    """q(z|x) = N(mu_z, diag sigma_z^2), p(x|z) = N(mu_x, diag sigma_x^2), p(z) = N(0, I)."""

    def __init__(self, in_channels: int = 3, image_size: int = 32, n_conv: int = 4, n_c: int = 32, n_z: int = 10,
                 logvar_min: float = -9.0):
        super().__init__()
        if image_size % 2 ** n_conv:
            raise ValueError(f"image_size {image_size} must be divisible by 2**n_conv = {2 ** n_conv}")
        self.config = dict(in_channels=in_channels, image_size=image_size, n_conv=n_conv, n_c=n_c, n_z=n_z)
        self.enc, c = _encoder(in_channels, n_conv, n_c)
        self.s = image_size // 2 ** n_conv
        self.c = c
        self.fc_enc = nn.Linear(c * self.s * self.s, 2 * n_z)
        self.fc_dec = nn.Sequential(nn.Linear(n_z, c * self.s * self.s), nn.ReLU())
        self.dec = _decoder(2 * in_channels, n_conv, n_c)
        self.in_channels, self.n_z = in_channels, n_z
        self.logvar_min = logvar_min   # floor on log sigma_x^2 (not in the paper; keeps flat pixels finite)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.fc_enc(self.enc(x).flatten(1))                   # (N, 2 N_z)
        mu, logvar = h.chunk(2, dim=1)                            # (N, N_z) each
        return mu, logvar

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.fc_dec(z).view(-1, self.c, self.s, self.s)       # (N, c, s, s)
        out = self.dec(h)                                         # (N, 2C, H, W)
        mu_x, logvar_x = out.chunk(2, dim=1)                      # (N, C, H, W) each
        return mu_x, logvar_x.clamp(min=self.logvar_min)

    def forward(self, x: torch.Tensor, sample: bool = True):
        mu_z, logvar_z = self.encode(x)
        z = mu_z + torch.randn_like(mu_z) * (0.5 * logvar_z).exp() if sample else mu_z
        mu_x, logvar_x = self.decode(z)
        return mu_z, logvar_z, mu_x, logvar_x


class MatsubaraAE(nn.Module):
    """The AE baseline: the same encoder and decoder, point estimates, MSE loss."""

    def __init__(self, in_channels: int = 3, image_size: int = 32, n_conv: int = 4, n_c: int = 32, n_z: int = 10):
        super().__init__()
        self.config = dict(in_channels=in_channels, image_size=image_size, n_conv=n_conv, n_c=n_c, n_z=n_z)
        self.enc, c = _encoder(in_channels, n_conv, n_c)
        self.s, self.c = image_size // 2 ** n_conv, c
        self.fc_enc = nn.Linear(c * self.s * self.s, n_z)
        self.fc_dec = nn.Sequential(nn.Linear(n_z, c * self.s * self.s), nn.ReLU())
        self.dec = _decoder(in_channels, n_conv, n_c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.fc_enc(self.enc(x).flatten(1))
        return self.dec(self.fc_dec(z).view(-1, self.c, self.s, self.s))
