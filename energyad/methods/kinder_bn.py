r"""A Bayesian network over binarised image pixels (Kinder, 2023, Sec. 3.1), its energy and Gibbs sampling.

Every pixel :math:`X_{h,w}\in\{0,1\}` (MNIST grey value above 0.3) has four neighbouring pixels as
parents. Which four is a named setting (:data:`PARENT_SETS`):

- ``"code"`` (default): north-west, west, south-west and north, :math:`(h-1,w-1), (h,w-1), (h+1,w-1),
  (h-1,w)`. This is what the thesis's C code computes (``convolutionalBN``, ``addAllDependencies``,
  images indexed [row][col]): Fig. 9's layout transposed. It reproduces Table 1 (mean AUROC 88.6
  against the thesis's 89.4, measured by the issue's author; our full run is in the chapter).
- ``"fig9"``: north-west, north, north-east and west, as the text and Fig. 9 describe.
- ``"none"``: no parents, an independent Bernoulli per pixel: the baseline that tells what the
  parents add.

Both orientations keep the graph acyclic (``fig9``: every parent comes earlier in row-major order;
``code``: earlier in column-major order), so the joint factorises without a normalising constant,

.. math::  p(x) = \prod_{h,w} P(x_{h,w}\mid \mathrm{pa}(h,w)),

with parents outside the image read as 0 (each pixel has its own CPT, so any fixed value for outside
parents gives the same counts and the same likelihood). A pixel with :math:`m` parents has a
conditional probability table (CPT) of :math:`2^m` rows, estimated by counting with a pseudo-count
:math:`\lambda` (Eq. 2; the posterior mean under a Beta(:math:`\lambda, \lambda`) prior per row):

.. math::  P(X_i = x_i\mid P = p) = \frac{\#(X_i = x_i, P = p) + \lambda}{\#(P = p) + n\lambda},\quad n = 2 .

The energy of an image is its negative log-likelihood, :math:`E(x) = -\log p(x)`. Samples come from
single-site Gibbs updates (Algorithm 1): flip a random pixel to get :math:`x'` and keep the flip with
probability :math:`p(x')/(p(x) + p(x'))`. The ratio involves only the CPTs of the flipped pixel and of
its children (its Markov blanket); :func:`gibbs_flips` recomputes the whole log p for simplicity.
Everything is vectorised: fitting is one ``bincount``, scoring one gather, and Gibbs sampling runs
many chains at once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# Parent offsets (dy, dx) per orientation; the first parent is the most significant bit of the row index.
PARENT_SETS = {
    "code": ((-1, -1), (0, -1), (1, -1), (-1, 0)),    # NW, W, SW, N: the thesis's C code ([row][col])
    "fig9": ((-1, -1), (-1, 0), (-1, 1), (0, -1)),    # NW, N, NE, W: the text and Fig. 9
    "none": (),                                       # independent Bernoulli pixels (baseline)
}
N_PARENTS = 4
N_CONFIGS = 2 ** N_PARENTS


@dataclass
class BNSettings:
    threshold: float = 0.3       # Sec. 3.1: pixels above 0.3 (of 1) are on
    pseudo_count: float = 1.0    # Sec. 3.1: "pseudo-counts of 1 were used for each row" (lambda)
    gibbs_iterations: int = 100_000  # Sec. 3.1: 100,000 iterations between samples
    parents: str = "code"        # key of PARENT_SETS; "code" reproduces Table 1, "fig9" is the text's layout


def binarize(images, threshold: float = 0.3) -> torch.Tensor:
    """uint8 (N, H, W) or float in [0, 1] (N, [1,] H, W) -> uint8 {0, 1} (N, H, W)."""
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.array(images))
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    if x.ndim == 4:
        x = x[:, 0]
    return (x > threshold).to(torch.uint8)


def parent_offsets(parents) -> tuple:
    """A key of :data:`PARENT_SETS` or a tuple of offsets (dy, dx) -> tuple of offsets."""
    if isinstance(parents, str):
        if parents not in PARENT_SETS:
            raise ValueError(f"parents must be one of {sorted(PARENT_SETS)} or a tuple of (dy, dx), not {parents!r}")
        return PARENT_SETS[parents]
    return tuple(tuple(o) for o in parents)


def parent_configs(x: torch.Tensor, parents="code") -> torch.Tensor:
    """Index 0..2^m-1 of each pixel's parent state (first parent = most significant bit), parents
    outside the image read as 0: binary (N, H, W) -> (N, H, W). ``"code"``: NW*8 + W*4 + SW*2 + N;
    ``"fig9"``: NW*8 + N*4 + NE*2 + W; ``"none"``: 0 everywhere."""
    offs = parent_offsets(parents)
    cfg = torch.zeros(x.shape, dtype=torch.long, device=x.device)
    for dy, dx in offs:
        cfg = cfg * 2 + shift(x.long(), dy, dx)
    return cfg


@torch.no_grad()
def gibbs_flips(log_prob, n_chains: int, shape: tuple, iterations: int, generator: torch.Generator | None = None,
                x0: torch.Tensor | None = None, progress: bool = False) -> torch.Tensor:
    """Algorithm 1, vectorised over chains: each iteration flips one random pixel per chain and keeps the
    flip with probability p(x') / (p(x) + p(x')), the single-site Gibbs update of a binary variable.
    ``log_prob`` maps binary images (N, H, W) to log p up to a constant; returns (n_chains, H, W)."""
    from tqdm.auto import tqdm

    H, W = shape
    x = torch.randint(0, 2, (n_chains, H, W), generator=generator, dtype=torch.uint8) if x0 is None else x0.clone()
    rows = torch.arange(n_chains)
    lp = log_prob(x)
    for _ in tqdm(range(iterations), desc="Gibbs", disable=not progress, leave=False):
        i = torch.randint(0, H * W, (n_chains,), generator=generator)
        x_new = x.clone()
        flat = x_new.view(n_chains, -1)
        flat[rows, i] = 1 - flat[rows, i]
        lp_new = log_prob(x_new)
        accept = torch.rand(n_chains, generator=generator, dtype=torch.float64) < torch.sigmoid(lp_new - lp)
        x = torch.where(accept.view(-1, 1, 1), x_new, x)
        lp = torch.where(accept, lp_new, lp)
    return x


class PixelBN:
    """The fixed-structure Bayesian network of Sec. 3.1 with one CPT per pixel: ``cpt`` (H, W, 2^m) =
    P(X=1 | parents), m = 4 parents (``settings.parents``: "code" or "fig9") or 0 ("none")."""

    def __init__(self, settings: BNSettings | None = None):
        self.s = settings or BNSettings()
        self.offsets = parent_offsets(self.s.parents)
        self.n_configs = 2 ** len(self.offsets)
        self.cpt: torch.Tensor | None = None

    def fit(self, x: torch.Tensor) -> "PixelBN":
        """``x``: binary uint8 (N, H, W). Counting with a pseudo-count (Eq. 2)."""
        N, H, W = x.shape
        cfg = parent_configs(x, self.offsets)                    # (N, H, W)
        counts = family_counts(x, cfg, self.n_configs)           # (H, W, 2^m, 2)
        lam = self.s.pseudo_count
        self.cpt = (counts[..., 1] + lam) / (counts.sum(-1) + 2 * lam)   # (H, W, 2^m)
        return self

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) for binary images (N, H, W), shape (N,)."""
        if self.cpt is None:
            raise RuntimeError("PixelBN.fit must be called first")
        cfg = parent_configs(x, self.offsets)                    # (N, H, W)
        H, W = x.shape[-2:]
        p1 = self.cpt[torch.arange(H).view(1, H, 1), torch.arange(W).view(1, 1, W), cfg]  # (N, H, W)
        p = torch.where(x.bool(), p1, 1 - p1)
        return p.log().flatten(1).sum(1)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """E(x) = -log p(x): the anomaly score."""
        return -self.log_prob(x)

    def flip_log_ratio(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """log p(x') - log p(x) for x' = x with pixel (h, w) flipped, from the pixel's Markov blanket only:
        its own CPT term and those of its children (the pixels that have (h, w) as a parent); every other
        factor of the product is the same in x and x'. x binary (N, H, W) -> (N,)."""
        H, W = x.shape[-2:]
        x_new = x.clone()
        x_new[:, h, w] = 1 - x_new[:, h, w]
        sites = [(h, w)] + [(h - dy, w - dx) for dy, dx in self.offsets if 0 <= h - dy < H and 0 <= w - dx < W]

        def local(z):
            cfg = parent_configs(z, self.offsets)                       # (N, H, W)
            total = 0
            for i, j in sites:
                p1 = self.cpt[i, j, cfg[:, i, j]]
                total = total + torch.where(z[:, i, j].bool(), p1, 1 - p1).log()
            return total
        return local(x_new) - local(x)

    # -- the shared interface (images as floats in [0, 1])
    def score(self, images) -> torch.Tensor:
        return self.energy(binarize(images, self.s.threshold)).float()

    def gibbs(self, n_chains: int, iterations: int, generator: torch.Generator | None = None,
              x0: torch.Tensor | None = None, progress: bool = False) -> torch.Tensor:
        """Algorithm 1 (:func:`gibbs_flips`) on this network's log p. Returns binary images (n_chains, H, W)."""
        H, W = self.cpt.shape[:2]
        return gibbs_flips(self.log_prob, n_chains, (H, W), iterations, generator, x0, progress)


# --- Hidden layers (Sec. 3.2) -----------------------------------------------------------------------
r"""Hidden layers. A transition makes binary hidden nodes from the layer below: convolution, then a
threshold at 0, then 2x2 max pooling (of binary values: an OR). Within a hidden layer, relations obey
the restrictions of Sec. 3.2: only within the layer; from north-west, north, north-east or west; the
same directions for all nodes of a kernel; from the node ``dist`` positions away, where ``dist`` is the
smallest offset whose receptive field does not overlap (adjacent fields). A relation ``(k2, dir)`` of
kernel ``k1`` makes every node of ``k1`` a child of the node of ``k2`` ``dist`` away in direction ``dir``.
The structure is chosen greedily by BIC (Algorithm 2, OPTIMIZESTRUCTURE):

.. math::  \mathrm{BIC} = -\log L(D \mid \hat\theta_{ML}) + \tfrac{1}{2}\,\#\theta\,\log N,

which decomposes over kernels (one free parameter per CPT row, one CPT per node). This is half of the
thesis's Eq. (3), :math:`k\ln n - 2\ln P(D\mid B^*)`: the same minimiser, the same greedy choices.
Sec. 3.2 says relations "can come from 5 directions" (5n candidates per kernel) but lists four; we use
the four listed (4n candidates), and keep the text's orientation for hidden relations. The kernels are
trained (OPTIMIZEKERNELS) by gradient ascent on Eq. (8)'s log-likelihood gain
:math:`\log L(D\mid BN) - \log L(D\mid BN')` of the network over the one without relations, with the
threshold replaced by :math:`1/(1+e^{-8x})` in the backward pass (Eq. 9, Fig. 12). The CPTs are the ML
(pseudo-count) estimates of the current binary data and enter the gradient as constants (at the ML
estimate their own derivative vanishes); a node's parents enter through the multilinear interpolation of
its CPT, which equals the table at binary parents. With ML CPTs, Eq. (8) is :math:`N` times the sum over
nodes of the empirical mutual information :math:`\hat I(Z_i; \mathrm{Pa}_i)` between a node and its
parents (:func:`family_loglik` minus the marginal log-likelihood; tested). ``hard + soft - soft.detach()``
in :meth:`HiddenLayer.forward` is a straight-through estimator: its value is ``hard`` and its gradient
that of ``soft``.

Why this is no longer a Bayesian network (Sec. 3.2): a hidden node is a deterministic function of the
pixels under its receptive field, yet the graph has no edges between layers and none between kernels
at the same position, so the local Markov property (a node is independent of the rest given its Markov
blanket) fails; the energy :math:`E(x) = -\sum_l \log p_l(z_l(x))` is a sum of per-layer
log-likelihoods, not the log-probability of one joint distribution.
"""
DIRECTIONS = {"NW": (-1, -1), "N": (-1, 0), "NE": (-1, 1), "W": (0, -1)}   # Algorithm 2 (its "east" is a typo)


@dataclass
class HiddenBNSettings:
    kernels: tuple = (5, 5)          # Sec. 3.2: "two convolutional transitions ... five kernels"
    kernel_size: int = 3             # "of size 3 by 3"
    pool: int = 2                    # "2 by 2 max pooling with a stride of 2"
    surrogate_slope: float = 8.0     # Eq. (9) surrogate 1/(1+e^{-8x}) (Fig. 12)
    em_iterations: int = 50          # "The EM-algorithm was run for 50 iterations each"
    lr: float = 0.008                # alpha of Algorithm 2 (on the gain per image and node, see fit)
    pseudo_count: float = 1.0        # as Sec. 3.1
    threshold: float = 0.3           # pixel binarisation (Sec. 3.1)
    parents: str = "code"            # the pixel network's parents (PARENT_SETS), as BNSettings


def shift(z: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """out[..., h, w] = z[..., h+dy, w+dx], 0 outside: the node ``(dy, dx)`` away. z (..., H, W)."""
    H, W = z.shape[-2:]
    p = max(abs(dy), abs(dx))
    zp = torch.nn.functional.pad(z, (p, p, p, p))
    return zp[..., p + dy:p + dy + H, p + dx:p + dx + W]


def family_counts(child: torch.Tensor, cfg: torch.Tensor, n_cfg: int) -> torch.Tensor:
    """Counts #(X=x, P=p) per node: child (N, H, W) binary, cfg (N, H, W) in [0, n_cfg) -> (H, W, n_cfg, 2)."""
    N, H, W = child.shape
    pix = torch.arange(H * W, device=child.device).view(1, H, W)
    idx = ((pix * n_cfg + cfg.long()) * 2 + child.long()).flatten()
    return torch.bincount(idx, minlength=H * W * n_cfg * 2).view(H, W, n_cfg, 2).double()


def family_loglik(counts: torch.Tensor) -> torch.Tensor:
    """Maximum-likelihood log-likelihood sum n log(n / n_row) of a family's counts (0 log 0 = 0)."""
    rows = counts.sum(-1, keepdim=True)
    return torch.where(counts > 0, counts * (counts / rows.clamp_min(1)).log(), torch.zeros_like(counts)).sum()


def bic(counts: torch.Tensor, n: int) -> float:
    """BIC of one kernel's nodes: -LL_ML + 0.5 * (#rows, one free parameter each) * log N."""
    H, W, n_cfg, _ = counts.shape
    return float(-family_loglik(counts) + 0.5 * H * W * n_cfg * np.log(n))


def parent_config(z: torch.Tensor, parents, dist: int) -> torch.Tensor:
    """Index of each node's parent state for a kernel with ``parents`` [(k2, dir), ...] (first parent
    = most significant bit): z (N, K, H, W) -> (N, H, W)."""
    cfg = torch.zeros(z.shape[0], *z.shape[-2:], dtype=torch.long, device=z.device)
    for k2, d in parents:
        dy, dx = DIRECTIONS[d]
        cfg = cfg * 2 + shift(z[:, k2], dist * dy, dist * dx).long()
    return cfg


def search_structure(z: torch.Tensor, dist: int, progress: bool = False):
    """OPTIMIZESTRUCTURE of Algorithm 2 on binary nodes z (N, K, H, W): for each kernel, add the
    relation (k2, dir) that lowers the BIC most until none does. Returns a list of parent lists.
    All candidates of a step are counted with one batched matrix product (counts of value 1 of the
    candidate parent per node, parent row and child value; value 0 by subtraction)."""
    N, K, H, W = z.shape
    P = H * W
    cands = [(k2, d) for k2 in range(K) for d in DIRECTIONS]
    C = len(cands)
    vals = torch.stack([shift(z[:, k2], dist * DIRECTIONS[d][0], dist * DIRECTIONS[d][1]) for k2, d in cands], 1)
    B = vals.float().reshape(N, C, P).permute(2, 0, 1)                          # (P, N, C)
    structure = []
    for k1 in range(K):
        parents: list = []
        child = z[:, k1].long()
        best = bic(family_counts(child, parent_config(z, parents, dist), 1), N)
        while len(parents) < C:
            R = 2 ** len(parents)                                                # rows before adding a parent
            rx = parent_config(z, parents, dist) * 2 + child                     # (N, H, W): row and child value
            A = torch.nn.functional.one_hot(rx.reshape(N, P), 2 * R).float().permute(1, 2, 0)   # (P, 2R, N)
            c1 = torch.bmm(A, B)                                                 # (P, 2R, C): candidate = 1
            c0 = A.sum(-1, keepdim=True) - c1                                    # candidate = 0
            counts = torch.stack([c0, c1], -1).view(P, R, 2, C, 2)               # (P, row, x, cand, v)
            counts = counts.permute(3, 0, 1, 4, 2).reshape(C, P, 2 * R, 2).double()   # new row = 2 row + v
            rows = counts.sum(-1, keepdim=True)
            ll = torch.where(counts > 0, counts * (counts / rows.clamp_min(1)).log(), torch.zeros_like(counts))
            scores = -ll.flatten(1).sum(1) + 0.5 * P * 2 * R * np.log(N)         # BIC of every candidate
            taken = torch.tensor([c in parents for c in cands], device=z.device)
            scores = torch.where(taken, torch.full_like(scores, float("inf")), scores)
            i = int(scores.argmin())
            if scores[i] >= best:
                break
            parents.append(cands[i])
            best = float(scores[i])
        structure.append(parents)
    return structure


class HiddenLayer(torch.nn.Module):
    """One transition (convolution -> threshold -> max pool) and the CPTs of its nodes."""

    def __init__(self, in_channels: int, kernels: int, size: int, pool: int, dist: int, slope: float):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, kernels, size, padding=size // 2)
        self.pool, self.dist, self.slope = pool, dist, slope
        self.structure: list = [[] for _ in range(kernels)]
        self.cpts: list = []          # per kernel (H, W, 2^|parents|) = P(z=1 | parents)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Binary states (N, K, H/2, W/2); gradients through the surrogate sigmoid (Eq. 9)."""
        s = self.conv(z.float())
        soft = torch.sigmoid(self.slope * s)
        hard = (s > 0).to(s.dtype)
        st = hard + soft - soft.detach()                           # forward: threshold; backward: sigmoid
        return torch.nn.functional.max_pool2d(st, self.pool)

    @torch.no_grad()
    def init_bias(self, z: torch.Tensor) -> None:
        """Ours (the thesis: "initialize n convolutional kernels randomly"): set each kernel's bias so
        that its pooled node is on for half of the nodes of ``z`` (the layer below); random kernels
        with a zero threshold otherwise give nodes that are almost always on after the OR of pooling."""
        s = torch.nn.functional.max_pool2d(self.conv(z.float()), self.pool)       # (N, K, h, w)
        self.conv.bias -= s.transpose(0, 1).flatten(1).median(1).values

    def fit_cpts(self, z: torch.Tensor, pseudo_count: float) -> None:
        zb = z.detach().round()
        self.cpts = []
        for k, parents in enumerate(self.structure):
            c = family_counts(zb[:, k], parent_config(zb, parents, self.dist), 2 ** len(parents))
            self.cpts.append(((c[..., 1] + pseudo_count) / (c.sum(-1) + 2 * pseudo_count)).float())

    def log_prob(self, z: torch.Tensor, relations: bool = True) -> torch.Tensor:
        """Per image sum over nodes of log P(z | parents) (N,); differentiable in soft z through a
        multilinear interpolation of the CPT rows (exact for binary z). ``relations=False``: the
        network BN' without relations (per-node marginals of the same data, ML with pseudo-count)."""
        total = 0
        for k, parents in enumerate(self.structure):
            cpt = self.cpts[k].to(z)                                             # (H, W, R)
            if not relations:
                cpt = self.marginals[k].to(z).unsqueeze(-1)                      # (H, W, 1)
                parents = []
            w = torch.ones(z.shape[0], *z.shape[-2:], 1, dtype=z.dtype, device=z.device)   # (N, H, W, 1)
            for k2, d in parents:                                                # bit order as parent_config
                dy, dx = DIRECTIONS[d]
                v = shift(z[:, k2], self.dist * dy, self.dist * dx).unsqueeze(-1)
                w = torch.stack([w * (1 - v), w * v], -1).flatten(-2)            # (N, H, W, 2^j), new bit last
            p1 = (w * cpt).sum(-1).clamp(1e-12, 1 - 1e-12)                       # (N, H, W)
            x = z[:, k]
            total = total + (x * p1.log() + (1 - x) * (1 - p1).log()).flatten(1).sum(1)
        return total

    def fit_marginals(self, z: torch.Tensor, pseudo_count: float) -> None:
        zb = z.detach().round()
        self.marginals = [((zb[:, k].sum(0) + pseudo_count) / (len(zb) + 2 * pseudo_count)).float()
                          for k in range(zb.shape[1])]


class HiddenBN(torch.nn.Module):
    """The pixel network of Sec. 3.1 plus hidden layers (Sec. 3.2, Algorithm 2). ``fit`` on binary
    images (N, H, W); energy = -(log p_0(x) + sum_l log p_l(z_l)); ``gibbs`` per Algorithm 1."""

    def __init__(self, settings: HiddenBNSettings | None = None):
        super().__init__()
        self.s = settings or HiddenBNSettings()
        self.pixels = PixelBN(BNSettings(self.s.threshold, self.s.pseudo_count, parents=self.s.parents))
        self.layers = torch.nn.ModuleList()
        chans, rf, stride = 1, 1, 1
        for k in self.s.kernels:
            rf = rf + (self.s.kernel_size - 1) * stride + (self.s.pool - 1) * stride   # receptive field
            stride *= self.s.pool
            dist = -(-rf // stride)                          # smallest node offset with non-overlapping fields
            self.layers.append(HiddenLayer(chans, k, self.s.kernel_size, self.s.pool, dist, self.s.surrogate_slope))
            chans = k
        self.history: list = []

    def states(self, x: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        """[z_1, z_2, ...] for binary images x (N, H, W)."""
        z, out = x.float().unsqueeze(1), []
        for layer in self.layers[:upto]:
            z = layer(z)
            out.append(z)
        return out

    def fit(self, x: torch.Tensor, progress: bool = True) -> "HiddenBN":
        """Algorithm 2 once per hidden layer: EM alternation of structure search and a kernel step
        (deterministic given the kernels' random initialisation at construction)."""
        from tqdm.auto import tqdm

        self.pixels.fit(x)
        for l, layer in enumerate(self.layers):
            with torch.no_grad():
                below = self.states(x, l)[-1] if l > 0 else x.float().unsqueeze(1)
            layer.init_bias(below)
            opt = torch.optim.SGD(layer.parameters(), lr=self.s.lr)
            hist = []
            for _ in tqdm(range(self.s.em_iterations), desc=f"hidden layer {l + 1}", disable=not progress, leave=False):
                with torch.no_grad():
                    z = layer(below)
                layer.structure = search_structure(z.round(), layer.dist)             # OPTIMIZESTRUCTURE
                layer.fit_cpts(z, self.s.pseudo_count)
                layer.fit_marginals(z, self.s.pseudo_count)
                z = layer(below)                                                     # OPTIMIZEKERNELS
                # Eq. (8), averaged over images and nodes (ours: the thesis gives no scale for alpha)
                gain = (layer.log_prob(z) - layer.log_prob(z, relations=False)).mean() / z[0].numel()
                opt.zero_grad()
                (-gain).backward()                                                   # ascent on the gain
                opt.step()
                hist.append(gain.item())
            with torch.no_grad():                                                    # final structure and CPTs
                z = layer(below)
                layer.structure = search_structure(z.round(), layer.dist)
                layer.fit_cpts(z, self.s.pseudo_count)
                layer.fit_marginals(z, self.s.pseudo_count)
            self.history.append(hist)
        return self

    @torch.no_grad()
    def layer_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1 + L): log p_0(x) and log p_l(z_l(x)) for binary images x (N, H, W)."""
        cols = [self.pixels.log_prob(x).float()]
        for layer, z in zip(self.layers, self.states(x)):
            cols.append(layer.log_prob(z))
        return torch.stack(cols, 1)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        return -self.layer_log_probs(x).sum(1)

    def score(self, images) -> torch.Tensor:
        return self.energy(binarize(images, self.s.threshold))

    @torch.no_grad()
    def gibbs(self, n_chains: int, iterations: int, generator: torch.Generator | None = None,
              progress: bool = False) -> torch.Tensor:
        """Algorithm 1 with the energy of all layers (:func:`gibbs_flips` on -E), vectorised over chains (Fig. 13)."""
        H, W = self.pixels.cpt.shape[:2]
        return gibbs_flips(lambda x: -self.energy(x), n_chains, (H, W), iterations, generator, progress=progress)
