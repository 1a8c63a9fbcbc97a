r"""The neural introspective energy model (IEM) of Kinder (2023, Secs. 4 and 5).

A forward pass (convolution, max pooling, ReLU; :mod:`energyad.networks.kinder`) maps an image to
layers of nodes :math:`a^{[0]}` (the pixels), :math:`a^{[1]}, \dots`. In the *sideward pass* a small
MLP predicts every node from its neighbours in the same layer (Eq. 10),

.. math::  \hat a_i^{[l]} = \mathrm{model}_i^{[l]}\big([a_j^{[l]} \mid n_j^{[l]} \in \mathrm{neigh}(n_i^{[l]})]\big),

where node :math:`(x', y')` neighbours :math:`(x, y)` iff :math:`\max(|x-x'|, |y-y'|)` equals the layer's
*neighbour distance* :math:`d` (all kernels at those :math:`8d` positions). Missing neighbours at the
border read 0 and a presence mask of :math:`8d` bits is appended (Sec. 4.1: "24 of these inputs are the
activations of the neighbours and another 8 inputs is the mask"). The error of a node is
:math:`err_i = \hat a_i - a_i` (Eq. 11); training minimises :math:`\mathcal L^l = \sum_i err_i^2` (Eq. 12)
**with the target detached** (Eq. 13), so the forward kernels learn to be good predictors of their
neighbours, not to be easily predictable (an all-zero layer would otherwise be a perfect solution).
Layers are trained one after the other (Algorithm 3; its update :math:`\theta = \theta + \alpha\,
\partial\mathcal L/\partial\theta` would ascend the loss, a sign slip: we descend). After training the
errors are normalised per node by their training mean and standard deviation (Eq. 14), summed to a layer
energy (Eq. 15) and the layer energies weighted (Eq. 16):

.. math::  \tilde e_{i,x} = \frac{|err_{i,x} - \mathrm{mean}(err_i)|}{\mathrm{std}(err_i)},\quad
           E^{[l]}(x) = \sum_i \tilde e_{i,x},\quad E(x) = \sum_l w_l E^{[l]}(x).

Eqs. 14-15 are an L1 version of the "M" term of Matsubara et al. (a sum of standardised squared
errors); a Gaussian negative log-likelihood of the errors would add :math:`\sum_i \log \mathrm{std}(err_i)`,
their "A" term, which does not depend on the image and so cannot change a ranking. The thesis gives no
floor for std; a node that is constant in training (a dead ReLU, an always-black pixel) has std 0, and a
fixed floor of 1e-6 turns any error there into ~1e6. :data:`STD_FLOORS` names our choices; the default
floors every std at a tenth of the layer's median node std (no node weighs more than ten typical ones).

Weight sharing (Fig. 15). Each sideward MLP layer is *shared* (one weight for all nodes of the layer),
*per kernel* (one per convolution kernel) or *per node*:

=====  ==============================  ================  =======================
design hidden layers                   last layer         extra inputs
=====  ==============================  ================  =======================
a      shared                          per kernel         -
b      shared                          per node           -   (the thesis's choice)
c      per kernel                      per node           -
d      per node                        per node           -
e      shared                          per kernel         x, y of the node
f      shared                          shared             x, y, one-hot kernel
=====  ==============================  ================  =======================

Everything is vectorised: the neighbours come from :math:`8d` shifted views of a zero-padded map, and
the MLPs are batched matrix products whose weight tensors broadcast over positions and kernels.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..networks.kinder import IEMForward

DESIGNS = {  # design -> (sharing of the hidden layers, sharing of the last layer, xy input, kernel input)
    "a": ("shared", "kernel", False, False),
    "b": ("shared", "node", False, False),
    "c": ("kernel", "node", False, False),
    "d": ("node", "node", False, False),
    "e": ("shared", "kernel", True, False),
    "f": ("shared", "shared", True, True),
}


def ring_offsets(d: int) -> list[tuple[int, int]]:
    """Offsets (dy, dx) with max(|dy|, |dx|) == d in raster order: 8d of them."""
    return [(dy, dx) for dy in range(-d, d + 1) for dx in range(-d, d + 1) if max(abs(dy), abs(dx)) == d]


def neighbour_features(a: torch.Tensor, d: int) -> torch.Tensor:
    """The sideward inputs of every node position: (B, K, H, W) -> (B, H*W, 8d*K + 8d).

    Entry ``o*K + k`` is kernel ``k`` at offset ``ring_offsets(d)[o]`` (0 outside the map); the last
    ``8d`` entries are the presence mask (1 where that neighbour exists)."""
    B, K, H, W = a.shape
    offs = ring_offsets(d)
    ap = F.pad(a, (d, d, d, d))                                                  # (B, K, H+2d, W+2d)
    ones = F.pad(torch.ones(1, 1, H, W, dtype=a.dtype, device=a.device), (d, d, d, d))
    acts = torch.stack([ap[:, :, d + dy:d + dy + H, d + dx:d + dx + W] for dy, dx in offs], 1)  # (B, 8d, K, H, W)
    mask = torch.cat([ones[:, :, d + dy:d + dy + H, d + dx:d + dx + W] for dy, dx in offs], 1)  # (1, 8d, H, W)
    feats = torch.cat([acts.reshape(B, len(offs) * K, H, W), mask.expand(B, -1, -1, -1)], 1)   # (B, F, H, W)
    return feats.flatten(2).transpose(1, 2)                                      # (B, H*W, F)


class SidewardMLP(nn.Module):
    """The sideward models of one layer of ``kernels`` x ``height`` x ``width`` nodes (Eq. 10).

    ``hidden``: the hidden widths, e.g. (32, 16) for Table 4's [384, 32, 16, 1]. ``forward(a)``
    returns the predictions, the same shape as ``a`` (B, K, H, W)."""

    def __init__(self, kernels: int, height: int, width: int, distance: int, hidden=(32, 16), design: str = "b"):
        super().__init__()
        if design not in DESIGNS:
            raise ValueError(f"design must be one of {sorted(DESIGNS)} (Fig. 15), not {design!r}")
        self.K, self.H, self.W, self.d, self.design = kernels, height, width, distance, design
        hid_share, last_share, self.xy, self.kin = DESIGNS[design]
        n_in = 8 * distance * (kernels + 1) + 2 * self.xy + kernels * self.kin
        sizes = [n_in, *hidden, 1]
        shares = [hid_share] * len(hidden) + [last_share]
        P = height * width
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        for (i, o), s in zip(zip(sizes[:-1], sizes[1:]), shares):
            g = {"shared": (1, 1), "kernel": (1, kernels), "node": (P, kernels)}[s]
            bound = i ** -0.5                                                    # nn.Linear's initialisation
            self.weights.append(nn.Parameter(torch.empty(*g, i, o).uniform_(-bound, bound)))   # (P|1, K|1, in, out)
            self.biases.append(nn.Parameter(torch.empty(*g, 1, o).uniform_(-bound, bound)))    # (P|1, K|1, 1, out)
        self.n_inputs = n_in

    def inputs(self, a: torch.Tensor) -> torch.Tensor:
        """(B, K, H, W) -> (B, P, K|1, n_in): neighbour activations, mask and, for designs e/f, the
        node's x, y in [0, 1] and its one-hot kernel."""
        B, K, H, W = a.shape
        if (K, H, W) != (self.K, self.H, self.W):
            raise ValueError(f"SidewardMLP built for ({self.K}, {self.H}, {self.W}) nodes, got {(K, H, W)}")
        h = neighbour_features(a, self.d)[:, :, None, :]                        # (B, P, 1, F)
        if self.xy:
            ys, xs = torch.meshgrid(torch.linspace(0, 1, H, dtype=a.dtype, device=a.device),
                                    torch.linspace(0, 1, W, dtype=a.dtype, device=a.device), indexing="ij")
            xy = torch.stack([xs, ys], -1).view(1, H * W, 1, 2)
            h = torch.cat([h, xy.expand(B, -1, -1, -1)], -1)
        if self.kin:
            onehot = torch.eye(K, dtype=a.dtype, device=a.device).view(1, 1, K, K)
            h = torch.cat([h.expand(-1, -1, K, -1), onehot.expand(B, H * W, -1, -1)], -1)
        return h

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        B, K, H, W = a.shape
        h = self.inputs(a)                                                       # (B, P, K|1, in)
        n = len(self.weights)
        for j, (w, b) in enumerate(zip(self.weights, self.biases)):
            if w.shape[0] > 1:                                                   # per node: w (P, K, in, out)
                h = torch.einsum("bpki,pkio->bpko", h.expand(-1, -1, K, -1), w) + b[:, :, 0]
            elif w.shape[1] > 1:                                                 # per kernel: w (1, K, in, out)
                h = torch.einsum("bpki,kio->bpko", h.expand(-1, -1, K, -1), w[0]) + b[0, :, 0]
            else:                                                                # shared: one GEMM
                h = h @ w[0, 0] + b[0, 0, 0]                                     # (B, P, K|1, out)
            if j < n - 1:
                h = torch.relu(h)
        h = h.expand(B, H * W, K, 1)                                             # design f: shared output
        return h[..., 0].transpose(1, 2).reshape(B, K, H, W)

    def node_layers(self, k: int, y: int, x: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The (weight (in, out), bias (out,)) pairs of the model of node (kernel k, row y, column x)."""
        p = y * self.W + x
        return [(w[p if w.shape[0] > 1 else 0, k if w.shape[1] > 1 else 0],
                 b[p if b.shape[0] > 1 else 0, k if b.shape[1] > 1 else 0, 0]) for w, b in zip(self.weights, self.biases)]


@dataclass
class IEMSettings:
    """Table 4 defaults (cold start, MVTec at 300 x 300); :data:`ALEXNET_SETTINGS` holds Table 6's."""
    distances: tuple = (1, 3, 3, 3, 2)                                       # Table 4 "neighbour distance"
    hidden: tuple = ((32, 12), (32, 16), (32, 16), (32, 16), (32, 32, 16))  # Table 4 sideward models
    design: str = "b"                     # Fig. 15: "type (b) was chosen for the following experiments"
    lr_sideward: float = 1e-3             # alpha_s (Sec. 4.1)
    lr_forward: float = 1e-3              # alpha_f (Sec. 4.1)
    batch_size: int = 8                   # N (Sec. 4.1)
    image_size: int = 300                 # "resized to 300 by 300 pixels"
    layer_weights: tuple | None = None    # w_l of Eq. 16; None = 1 for every layer (Secs. 4.2, 5.1)
    train_forward: bool = True            # False: frozen transferred kernels (Sec. 5.1)
    # Not given by the thesis (ours):
    epochs: int = 10                      # Algorithm 3 trains "while no convergence"
    optimizer: str = "adam"               # the thesis says "stochastic gradient descent"; "sgd" available
    std_floor: str = "relative"           # Eq. 14's floor of std(err_i): see STD_FLOORS
    std_floor_ratio: float = 0.1          # "relative"/"drop": a fraction of the layer's median node std
    std_eps: float = 1e-6                 # "absolute": the fixed floor (our earlier default)


STD_FLOORS = {
    "relative": "std_i floored at std_floor_ratio x the median std of the layer's nodes (default)",
    "drop": "nodes with std_i below std_floor_ratio x the layer's median std are left out of Eq. 15",
    "absolute": "std_i floored at std_eps = 1e-6: a node constant in training weighs up to 1e6",
}


def floored_std(std: torch.Tensor, floor: str, ratio: float = 0.1, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 14's denominator for one layer's per-node training std (K, H, W): returns (std used, weight
    of each node in Eq. 15: 1, or 0 for nodes left out). The *typical spread* of a layer is the median
    std over its nodes (over the nodes that vary at all, if any do)."""
    if floor not in STD_FLOORS:
        raise ValueError(f"std_floor must be one of {sorted(STD_FLOORS)}, not {floor!r}")
    keep = torch.ones_like(std)
    if floor == "absolute":
        return std.clamp_min(eps), keep
    varying = std[std > 0]
    typical = varying.median() if varying.numel() else std.new_tensor(1.0)
    low = ratio * typical
    if floor == "relative":
        return torch.maximum(std, low).clamp_min(eps), keep
    keep = (std >= low).to(std.dtype)                                  # "drop"
    return std.clamp_min(eps), keep


ALEXNET_SETTINGS = IEMSettings(distances=(1, 1, 1, 3, 1),                       # Table 6
                               hidden=((32, 16), (32, 16), (54, 64, 32), (64, 64, 16), (64, 64, 32)),
                               image_size=224, train_forward=False)


class IntrospectiveEnergyModel(nn.Module):
    """Forward net + one :class:`SidewardMLP` per layer; ``fit`` / ``score`` / ``anomaly_map``.

    Images are float (N, C, S, S) in [0, 1] with S = ``settings.image_size``."""

    def __init__(self, forward_net: IEMForward, settings: IEMSettings | None = None):
        super().__init__()
        self.s = settings or IEMSettings()
        self.net = forward_net
        L = forward_net.n_layers
        if len(self.s.distances) != L or len(self.s.hidden) != L:
            raise ValueError(f"settings give {len(self.s.distances)} distances and {len(self.s.hidden)} sideward "
                             f"models but the forward net has {L} layers (pixels + {L - 1} transitions)")
        with torch.no_grad():
            shapes = [a.shape[1:] for a in forward_net(torch.zeros(1, forward_net.channels[0],
                                                                   self.s.image_size, self.s.image_size))]
        self.shapes = [tuple(s) for s in shapes]
        self.sideward = nn.ModuleList(SidewardMLP(K, H, W, d, hid, self.s.design)
                                      for (K, H, W), d, hid in zip(self.shapes, self.s.distances, self.s.hidden))
        for l, (K, H, W) in enumerate(self.shapes):                             # Eq. 14 statistics
            self.register_buffer(f"err_mean{l}", torch.zeros(K, H, W))
            self.register_buffer(f"err_std{l}", torch.ones(K, H, W))
        self.calibrated = False

    @property
    def n_layers(self) -> int:
        return len(self.shapes)

    @property
    def weights_l(self) -> tuple:
        return tuple(self.s.layer_weights) if self.s.layer_weights is not None else (1.0,) * self.n_layers

    def _device(self):
        return next(self.parameters()).device

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        C, S = self.net.channels[0], self.s.image_size
        if x.ndim != 4 or x.shape[1] != C or tuple(x.shape[-2:]) != (S, S):
            raise ValueError(f"expected images (N, {C}, {S}, {S}) in [0, 1], got {tuple(x.shape)}; resize them to "
                             f"settings.image_size = {S}")
        return x.to(self._device(), torch.float32)

    # -- sideward pass --------------------------------------------------------------------------
    def predictions(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``[(a_l, a_hat_l)]`` for every layer (Eq. 10)."""
        acts = self.net(self._check(x))
        return [(a, m(a)) for a, m in zip(acts, self.sideward)]

    def errors(self, x: torch.Tensor) -> list[torch.Tensor]:
        """err_l = a_hat_l - a_l (Eq. 11), each (B, K_l, H_l, W_l)."""
        return [ah - a for a, ah in self.predictions(x)]

    def layer_loss(self, x: torch.Tensor, l: int) -> torch.Tensor:
        """Eq. 12 with the stop-gradient of Eq. 13, summed over the batch (Algorithm 3). Earlier
        layers are fixed inputs; gradients reach the sideward model of layer l and (through the
        neighbour inputs only) the transition that makes layer l."""
        x = self._check(x)
        if l == 0:
            a = x
        else:
            with torch.no_grad():
                prev = self.net(x, upto=l - 1)[-1]                               # a[l-1], fixed
            a = self.net.transitions[l - 1](self.net.normalise(prev) if l == 1 else prev)   # a[l]
        err = self.sideward[l](a) - a.detach()                                   # Eq. 13
        self._target_energy = (a.detach() ** 2).sum().double()                   # for the scale-free curve
        return (err ** 2).sum()

    # -- training (Algorithm 3) ------------------------------------------------------------------
    def _optimiser(self, l: int) -> torch.optim.Optimizer:
        opt_cls = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}[self.s.optimizer]
        return opt_cls([{"params": self.sideward[l].parameters(), "lr": self.s.lr_sideward}]
                       + ([{"params": self.net.transitions[l - 1].parameters(), "lr": self.s.lr_forward}]
                          if l > 0 and self.s.train_forward else []))

    def fit_layer(self, images: torch.Tensor, l: int, generator: torch.Generator | None = None,
                  progress: bool = True) -> list[float]:
        """Train layer ``l``'s sideward models (and its transition, if ``train_forward``); returns the
        mean loss per image of every epoch."""
        plan = _FitPlan(len(images), self.s.batch_size, self.s.epochs, (l,))
        opt = self._optimiser(l)
        for i in range(plan.total):
            self._fit_step(images, plan, {l: opt}, i, generator)
        self.relative_history = getattr(self, "relative_history", {})
        self.relative_history[l] = plan.relative[l]
        return plan.history[l]

    def _fit_step(self, images, plan: "_FitPlan", opts: dict, i: int, generator) -> None:
        """Step ``i`` of Algorithm 3's schedule: one batch of one epoch of one layer (a new epoch
        draws its permutation from ``generator``)."""
        l, epoch, b = plan.where(i)
        if b == 0:
            plan.perm = torch.randperm(plan.n, generator=generator)
            plan.total_loss, plan.target = 0.0, 0.0
        loss = self.layer_loss(images[plan.perm[b * plan.batch:(b + 1) * plan.batch]], l)
        opts[l].zero_grad()
        loss.backward()
        opts[l].step()
        plan.total_loss = plan.total_loss + loss.detach().double()      # summed on the device: no sync
        plan.target = plan.target + self._target_energy                  # per batch, one per epoch
        if b == plan.batches - 1:
            total, target = float(plan.total_loss), float(plan.target)
            plan.history[l].append(total / plan.n)
            plan.relative[l].append(total / max(target, 1e-12))

    def fit(self, images: torch.Tensor, generator: torch.Generator | None = None, progress: bool = True,
            loop=None):
        """Algorithm 3: layer 0, then each new transition with its sideward models; then Eq. 14 statistics.

        The whole schedule (layers x epochs x batches) runs as ``loop(key, total, state, step, generator)``:
        by default a plain loop; :func:`energyad.experiments.resume.resumable_loop` makes it stop at a
        deadline and continue later (``state`` holds the model, every layer's optimiser and the
        schedule's progress: permutation of the epoch, loss sums, histories)."""
        from tqdm.auto import tqdm

        plan = _FitPlan(len(images), self.s.batch_size, self.s.epochs, tuple(range(self.n_layers)))
        opts = {l: self._optimiser(l) for l in range(self.n_layers)}
        bar = tqdm(total=plan.total, desc="IEM (Algorithm 3)", disable=not progress, leave=False)

        def step(i):
            self._fit_step(images, plan, opts, i, generator)
            bar.update(1)

        state = {"model": self, "schedule": plan, **{f"optimiser{l}": o for l, o in opts.items()}}
        (loop or _plain_loop)("iem-fit", plan.total, state, step, generator)
        bar.close()
        self.history = [plan.history[l] for l in range(self.n_layers)]
        self.relative_history = {l: plan.relative[l] for l in range(self.n_layers)}
        self.calibrate(images)
        return self

    @torch.no_grad()
    def calibrate(self, images: torch.Tensor, batch_size: int = 32) -> None:
        """Per-node mean and standard deviation of the errors on the training images (Eq. 14)."""
        errs = [torch.cat(e) for e in zip(*[self.errors(images[i:i + batch_size])
                                            for i in range(0, len(images), batch_size)])]
        for l, e in enumerate(errs):
            getattr(self, f"err_mean{l}").copy_(e.mean(0))
            getattr(self, f"err_std{l}").copy_(e.std(0, unbiased=len(e) > 1))   # raw; floored when used
        self.calibrated = True

    def node_std(self, l: int, floor: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(std used in Eq. 14, node weights in Eq. 15) of layer ``l`` under ``floor`` (default
        ``settings.std_floor``; see :data:`STD_FLOORS`)."""
        return floored_std(getattr(self, f"err_std{l}"), floor or self.s.std_floor, self.s.std_floor_ratio,
                           self.s.std_eps)

    def constant_nodes(self, l: int) -> int:
        """Nodes of layer ``l`` whose training error never varied (std 0): the ones a 1e-6 floor blows up."""
        return int((getattr(self, f"err_std{l}") <= 0).sum())

    # -- energies ---------------------------------------------------------------------------------
    def normalised_errors(self, x: torch.Tensor, floor: str | None = None) -> list[torch.Tensor]:
        """|err - mean| / std per node (Eq. 14), times the node's weight (0 for nodes the ``"drop"`` floor
        leaves out), each (B, K_l, H_l, W_l)."""
        if not self.calibrated:
            raise RuntimeError("IntrospectiveEnergyModel: call fit (or calibrate) before computing energies")
        out = []
        for l, e in enumerate(self.errors(x)):
            std, keep = self.node_std(l, floor)
            out.append((e - getattr(self, f"err_mean{l}")).abs() / std * keep)
        return out

    @torch.no_grad()
    def layer_energies(self, x: torch.Tensor, normalise: bool = True, floor: str | None = None) -> torch.Tensor:
        """(B, L): energy^[l] = sum_i |err_norm_i| (Eq. 15); ``normalise=False``: sum_i |err_i| (Fig. 16)."""
        errs = self.normalised_errors(x, floor) if normalise else [e.abs() for e in self.errors(x)]
        return torch.stack([e.flatten(1).sum(1) for e in errs], 1)

    def energy(self, x: torch.Tensor, normalise: bool = True, floor: str | None = None) -> torch.Tensor:
        """Eq. 16: sum_l w_l energy^[l], shape (B,)."""
        w = torch.tensor(self.weights_l, dtype=torch.float32, device=self._device())
        return self.layer_energies(x, normalise, floor) @ w

    @torch.no_grad()
    def energy_maps(self, x: torch.Tensor, floor: str | None = None) -> list[torch.Tensor]:
        """Per-layer maps (B, 1, H_l, W_l): the sum over kernels of Eq. 14; each sums to energy^[l]."""
        return [e.sum(1, keepdim=True) for e in self.normalised_errors(x, floor)]

    # -- the shared interface ----------------------------------------------------------------------
    @torch.no_grad()
    def score(self, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        return torch.cat([self.energy(images[i:i + batch_size]).cpu() for i in range(0, len(images), batch_size)])

    @torch.no_grad()
    def anomaly_map(self, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """(N, 1, S, S): sum_l w_l * (each layer's map upsampled, divided by the pixels per node)."""
        S = self.s.image_size
        out = []
        for i in range(0, len(images), batch_size):
            maps = self.energy_maps(images[i:i + batch_size])
            m = sum(w * F.interpolate(mp, size=(S, S), mode="bilinear", align_corners=False)
                    * (mp.shape[-2] * mp.shape[-1]) / (S * S) for w, mp in zip(self.weights_l, maps))
            out.append(m.cpu())
        return torch.cat(out)

    # -- health -------------------------------------------------------------------------------------
    @torch.no_grad()
    def health(self, images: torch.Tensor, name: str = "IEM", batch_size: int = 32):
        """Health figures of a fitted model (:mod:`energyad.health`) on ``images`` (e.g. test images):
        per layer, the training loss fell where its target is fixed (layer 0, or frozen kernels; where the
        kernels train, the target moves and may grow, so the curve is only noted), the forward layer is not
        dead (share of non-zero activations), and the energy depends on the image (its spread over
        ``images``). Noted without a rule: how much the predictions vary with the input
        (:func:`~energyad.health.output_dependence`; small for a good predictor where images differ by noise
        no neighbour predicts), R^2 of the predictions against each node's mean over ``images`` (on aligned
        objects that mean is a strong predictor no sideward model is asked to beat) and the number of
        constant nodes."""
        from ..health import Health, loss_drop, output_dependence

        h = Health(name)
        preds = [torch.cat(p, 1) for p in zip(*[[torch.stack([a, ah]) for a, ah in self.predictions(images[i:i + batch_size])]
                                                for i in range(0, len(images), batch_size)])]   # per layer (2, N, K, H, W)
        for l, pa in enumerate(preds):
            a, ah = pa[0].cpu(), pa[1].cpu()
            hist, rel = getattr(self, "history", None), getattr(self, "relative_history", {}).get(l)
            if hist and len(hist[l]) >= 2:
                drop = loss_drop(hist[l])
                if l == 0 or not self.s.train_forward:                      # a fixed target: the loss must fall
                    h.check(f"layer{l}_loss_drop", drop, drop > 0, "1 - last epoch / first epoch loss > 0")
                else:                                                       # the target moves with the kernels
                    h.note(f"layer{l}_loss_drop", drop)
            if rel and len(rel) >= 2:
                h.note(f"layer{l}_relative_loss_drop", loss_drop(rel))
            r2 = 1 - float(((ah - a) ** 2).sum() / ((a - a.mean(0)) ** 2).sum().clamp_min(1e-12))
            h.note(f"layer{l}_r2", r2)    # 1 - sum (a_hat - a)^2 / sum (a - mean over images of a)^2
            # noted, not a rule: where images differ by noise that no neighbour predicts, the best sideward
            # model predicts the mean and this ratio is small without anything being broken
            h.note(f"layer{l}_prediction_dependence", output_dependence(a, ah) if a.std(0).mean() > 0 else 0.0)
            if l > 0:
                alive = float((a > 0).float().mean())
                h.check(f"layer{l}_active_share", alive, alive > 0.01, "share of non-zero activations > 0.01")
            if self.calibrated:
                h.note(f"layer{l}_constant_nodes", self.constant_nodes(l))
        if self.calibrated and len(images) > 1:
            e = self.score(images, batch_size).double()
            spread = float(e.std() / e.abs().mean().clamp_min(1e-12))
            h.check("energy_spread", spread, spread > 0.01, "std(E) / mean|E| over the images > 0.01: the energy "
                    "depends on the image")
        return h

    # -- checkpoints -------------------------------------------------------------------------------
    def save(self, path) -> None:
        torch.save({"kind": "kinder-iem", "settings": asdict(self.s), "shapes": self.shapes,
                    "calibrated": self.calibrated, "state_dict": self.state_dict()}, path)

    def load(self, path) -> "IntrospectiveEnergyModel":
        ckpt = torch.load(path, map_location=self._device(), weights_only=False)
        if not isinstance(ckpt, dict) or ckpt.get("kind") != "kinder-iem":
            raise ValueError(f"{path} is not a checkpoint of IntrospectiveEnergyModel.save (no kind 'kinder-iem'). "
                             "Fix: pass a file written by IntrospectiveEnergyModel.save, or delete it and train anew.")
        if [tuple(s) for s in ckpt["shapes"]] != self.shapes:
            raise ValueError(f"{path} holds a model with node layers {ckpt['shapes']}, this one has {self.shapes}. "
                             "Fix: build the model with the settings and forward net it was saved with "
                             f"({ckpt['settings']}), or delete the file and train anew.")
        self.load_state_dict(ckpt["state_dict"])
        self.calibrated = ckpt["calibrated"]
        return self


def _plain_loop(key, total, state, step, generator=None):
    for i in range(total):
        step(i)
    return total


class _FitPlan:
    """Algorithm 3's schedule as numbered steps (layer, epoch, batch) and its running sums; has
    ``state_dict``/``load_state_dict`` so that a resumable loop can save and restore it mid-epoch."""

    def __init__(self, n: int, batch: int, epochs: int, layers: tuple):
        self.n, self.batch, self.epochs, self.layers = n, batch, epochs, layers
        self.batches = -(-n // batch)
        self.total = len(layers) * epochs * self.batches
        self.perm, self.total_loss, self.target = None, 0.0, 0.0
        self.history = {l: [] for l in layers}
        self.relative = {l: [] for l in layers}

    def where(self, i: int) -> tuple[int, int, int]:
        per_layer = self.epochs * self.batches
        return self.layers[i // per_layer], (i % per_layer) // self.batches, i % self.batches

    def state_dict(self) -> dict:
        return {"perm": self.perm, "total_loss": self.total_loss, "target": self.target,
                "history": {l: list(h) for l, h in self.history.items()},
                "relative": {l: list(h) for l, h in self.relative.items()}}

    def load_state_dict(self, d: dict) -> None:
        self.perm, self.total_loss, self.target = d["perm"], d["total_loss"], d["target"]
        self.history = {l: list(h) for l, h in d["history"].items()}
        self.relative = {l: list(h) for l, h in d["relative"].items()}
