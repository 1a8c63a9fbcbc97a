r"""Forward passes of Kinder's introspective energy model (IEM) (Kinder, 2023, Secs. 4.1 and 5.1).

The forward pass is a stack of *transitions* ``a[l] = conv(a[l-1])``: convolution, max pooling and
ReLU (Sec. 4.1), with ``a[0]`` the image. Two stacks are used in the thesis:

Table 4 (trained from scratch, MVTec images resized to 300 x 300; "size" is the kernel side)::

    layer  convolution                          receptive field  neighbour distance  sideward model
    0      -                                    1                1                   [32, 32, 12, 1]
    1      conv n=15, size=3; max-pool 2, s 2   4                3                   [384, 32, 16, 1]
    2      conv n=25, size=5; max-pool 2, s 2   14               3                   [624, 32, 16, 1]
    3      conv n=35, size=5; max-pool 2, s 2   34               3                   [864, 32, 16, 1]
    4      conv n=60, size=3; max-pool 2, s 2   66               2                   [976, 32, 32, 16, 1]

Table 6 (the first four convolutions of AlexNet, frozen, images resized to 224 x 224)::

    layer  convolution                                   receptive field  neighbour distance  sideward model
    0      -                                             1                1                   [32, 32, 16, 1]
    1      conv n=64, size=11, stride=4; max-pool 3, s 2 19               1                   [512, 32, 16, 1]
    2      conv n=192, size=5; max-pool 3, s 2           83               1                   [1536, 54, 64, 32, 1]
    3      conv n=384, size=3                            114              3                   [9984, 64, 64, 16, 1]
    4      conv n=256, size=3                            147              1                   [2048, 64, 64, 32, 1]

Notes on the tables. The thesis gives no padding; we pad convolutions by ``size // 2`` ("same") for
Table 4 and use torchvision's AlexNet paddings (2, 2, 1, 1) for Table 6. With stride-1 3x3 and 5x5
convolutions Table 4's receptive fields follow as 4, 14, 34 and 58 (the table prints 66 for layer 4);
Table 6's as 19, 67, 99 and 131 (the table prints 19, 83, 114 and 147): :func:`receptive_fields`.
Table 4's input counts assume RGB (layer 0: 8 x (3 + 1) = 32); a grayscale category (grid, screw,
zipper) loaded with its own single channel has 8 x (1 + 1) = 16 inputs there.
Table 6's input counts omit the presence mask (the text, Sec. 4.1, adds it) and its layer-3 entry
(9984 = 26 x 384) does not match 24 neighbour positions at distance 3; we build the sideward inputs
from the stated neighbour distance and the mask (see :mod:`energyad.methods.kinder_iem`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


@dataclass(frozen=True)
class Transition:
    """One forward transition: ``kernels`` convolutions of side ``size`` (``stride``, ``padding``,
    None = size // 2), then max pooling ``pool`` x ``pool`` with stride ``pool_stride`` (``pool`` 0 =
    none), then ReLU."""
    kernels: int
    size: int
    stride: int = 1
    padding: int | None = None
    pool: int = 2
    pool_stride: int = 2


def receptive_fields(transitions) -> list[int]:
    """Side of each layer's receptive field in pixels, [1, r_1, ..., r_L], by the usual recursion: a
    window of side k at stride s on a layer whose nodes are ``jump`` pixels apart adds (k - 1) * jump
    pixels and multiplies ``jump`` by s (convolution, then pooling)."""
    rf, jump, out = 1, 1, [1]
    for t in transitions:
        rf, jump = rf + (t.size - 1) * jump, jump * t.stride
        if t.pool:
            rf, jump = rf + (t.pool - 1) * jump, jump * t.pool_stride
        out.append(rf)
    return out


# Table 4: the cold-start architecture for MVTec at 300 x 300.
TABLE4 = (Transition(15, 3), Transition(25, 5), Transition(35, 5), Transition(60, 3))
# Table 6: AlexNet's first four convolutions (torchvision paddings).
TABLE6 = (Transition(64, 11, stride=4, padding=2, pool=3, pool_stride=2),
          Transition(192, 5, padding=2, pool=3, pool_stride=2),
          Transition(384, 3, padding=1, pool=0),
          Transition(256, 3, padding=1, pool=0))


class ConvTransition(nn.Module):
    """conv -> max-pool -> ReLU (Sec. 4.1). Max pooling and ReLU commute, so this equals AlexNet's
    conv -> ReLU -> max-pool."""

    def __init__(self, in_channels: int, t: Transition):
        super().__init__()
        pad = t.size // 2 if t.padding is None else t.padding
        self.conv = nn.Conv2d(in_channels, t.kernels, t.size, stride=t.stride, padding=pad)
        self.pool = nn.MaxPool2d(t.pool, t.pool_stride) if t.pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.pool(self.conv(x)))


class IEMForward(nn.Module):
    """The forward pass: ``forward(x)`` returns the activations of every layer ``[a0, a1, ..., aL]``
    with ``a0`` the (optionally normalised) image. ``mean``/``std`` (per channel) normalise the input
    of the first convolution only (AlexNet was trained on ImageNet-normalised images); layer 0 stays
    the raw image in [0, 1]."""

    def __init__(self, in_channels: int, transitions=TABLE4, mean=None, std=None):
        super().__init__()
        self.specs = tuple(transitions)
        chans = [in_channels] + [t.kernels for t in self.specs]
        self.transitions = nn.ModuleList(ConvTransition(c, t) for c, t in zip(chans[:-1], self.specs))
        self.channels = tuple(chans)
        self.register_buffer("mean", torch.zeros(in_channels) if mean is None else torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.ones(in_channels) if std is None else torch.as_tensor(std, dtype=torch.float32))

    @property
    def n_layers(self) -> int:
        """Number of node layers including the pixel layer 0."""
        return len(self.transitions) + 1

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """The input of the first convolution: (x - mean) / std per channel."""
        return (x - self.mean.view(1, -1, 1, 1).to(x)) / self.std.view(1, -1, 1, 1).to(x)

    def forward(self, x: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        upto = len(self.transitions) if upto is None else upto
        acts = [x]
        h = self.normalise(x)
        for t in self.transitions[:upto]:
            h = t(h)
            acts.append(h)
        return acts


# --- AlexNet (Table 6) ---------------------------------------------------------------------------
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"   # torchvision's published weights
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
ALEXNET_CONV_KEYS = ("features.0", "features.3", "features.6", "features.8")   # first four convolutions


def alexnet_forward() -> IEMForward:
    """Table 6: AlexNet's first four convolutions as an IEM forward pass (random until loaded)."""
    return IEMForward(3, TABLE6, IMAGENET_MEAN, IMAGENET_STD)


def load_alexnet_convs(net: IEMForward, state_dict_or_path) -> IEMForward:
    """Copy ``features.{0,3,6,8}.{weight,bias}`` of torchvision's AlexNet state dict into ``net``.

    ``state_dict_or_path``: a dict or the path of a ``.pth`` file holding one (torchvision's
    ``alexnet-owt-7be5be79.pth``, or a full ``torchvision.models.alexnet().state_dict()``).
    Raises ``ValueError`` naming the file and the fix when keys are missing or shapes differ (e.g. a
    checkpoint of another model)."""
    src = str(state_dict_or_path) if not isinstance(state_dict_or_path, dict) else "the given state dict"
    sd = state_dict_or_path
    if not isinstance(sd, dict):
        sd = torch.load(Path(sd), map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    fix = (f"Fix: pass torchvision's AlexNet weights ({ALEXNET_URL}), i.e. the state dict of "
           "torchvision.models.alexnet(weights='IMAGENET1K_V1').")
    if len(net.transitions) != len(ALEXNET_CONV_KEYS):
        raise ValueError(f"load_alexnet_convs needs the 4-transition net of alexnet_forward(), got "
                         f"{len(net.transitions)} transitions.")
    new = {}
    for t, key in zip(net.transitions, ALEXNET_CONV_KEYS):
        for part in ("weight", "bias"):
            name = f"{key}.{part}"
            if name not in sd:
                raise ValueError(f"{src} has no key {name!r} (it has e.g. {list(sd)[:4]}): it is not an AlexNet "
                                 f"state dict. {fix}")
            want = getattr(t.conv, part).shape
            if tuple(sd[name].shape) != tuple(want):
                raise ValueError(f"{src}: {name} has shape {tuple(sd[name].shape)}, AlexNet's is {tuple(want)}; "
                                 f"this checkpoint is from another model. {fix}")
            new[name] = sd[name]
    with torch.no_grad():
        for t, key in zip(net.transitions, ALEXNET_CONV_KEYS):
            t.conv.weight.copy_(new[f"{key}.weight"])
            t.conv.bias.copy_(new[f"{key}.bias"])
    return net


def find_alexnet_weights(path=None, download: bool = False) -> Path:
    """The AlexNet weight file: ``path``, else ``$ENERGYAD_ALEXNET``, else ``<data root>/alexnet/`` or
    torch's hub cache (``~/.cache/torch/hub/checkpoints``); with ``download`` it is fetched into the
    hub cache (checked by torch's hash prefix). Raises ``DataError`` with the fix when absent."""
    from ..config import data_root
    from ..data.errors import DataError

    hub = Path(torch.hub.get_dir()) / "checkpoints"
    candidates = [Path(p) for p in (path, os.environ.get("ENERGYAD_ALEXNET")) if p]
    candidates.append(data_root() / "alexnet" / ALEXNET_FILE)
    candidates.append(hub / ALEXNET_FILE)
    for c in candidates:
        if c.is_file():
            return c
    if download:
        hub.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(ALEXNET_URL, str(hub / ALEXNET_FILE), hash_prefix="7be5be79")
        return hub / ALEXNET_FILE
    raise DataError("AlexNet weights not found (looked at: " + ", ".join(str(c) for c in candidates) + "). "
                    f"Fix: download {ALEXNET_URL} and put it at one of these paths or set ENERGYAD_ALEXNET to the "
                    "file; with a network, find_alexnet_weights(download=True) fetches it.")
