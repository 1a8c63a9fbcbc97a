"""``python -m energyad bench``: throughput of each method at its full-profile size, and how close the
hardware comes to its own dense-matmul peak.

For each method the bench times the step that dominates its full profile:

- Genc et al.: one SGLD step of the Table 3 network (128 px, batch 32) — a forward pass and the
  gradient with respect to the input — in channels_last memory format (measured here: 0.59 s against
  0.68 s in the default format on 2 CPU threads; the Genc trainer uses it on CUDA only). Its FLOPs are counted as twice the forward convolutions'
  FLOPs (the input-gradient pass costs about one more forward), so ``flop_per_s`` and
  ``fraction_of_peak`` (against a square fp32 matmul timed on the same device in the same run)
  say how well the step uses the machine.
- Dehaene et al.: one projection iteration of the Bergmann VAE (128 px; forward + input gradient),
  and one training update (forward + backward + Adam).
- Matsubara et al.: one training update and one scoring pass of the VAE.
- Kinder: the Table 4 forward pass (the IEM's training reads its layers) and the pixel Bayesian
  network's counting (MNIST size).

Each figure is the median of several timed repetitions after a warm-up; CUDA work is synchronised
only around the timed block. ``--size tiny`` runs everything at toy sizes (for tests).
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn

SIZES = {
    # name: (genc size, batch, dehaene size, matsubara size, kinder size, matmul n)
    "full": {"genc": 128, "batch": 32, "dehaene": 128, "matsubara": 96, "kinder": 300, "matmul": 2048},
    "tiny": {"genc": 32, "batch": 4, "dehaene": 32, "matsubara": 32, "kinder": 64, "matmul": 256},
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn, device: torch.device, reps: int = 5, warmup: int = 1, min_seconds: float = 0.0) -> float:
    """Median seconds of one call of ``fn`` over ``reps`` timed calls after ``warmup`` calls (more
    calls if the reps take under ``min_seconds`` in all)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    while len(times) < reps or sum(times) < min_seconds:
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
        if len(times) >= 100:
            break
    return statistics.median(times)


def forward_flops(net: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward pass (2 per multiply-add) of every Conv2d, ConvTranspose2d and Linear."""
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.in_channels // mod.groups)
            total += 2 * k * out.numel()
        elif isinstance(mod, nn.ConvTranspose2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.out_channels // mod.groups)
            total += 2 * k * inp[0].numel()
        elif isinstance(mod, nn.Linear):
            total += 2 * mod.in_features * out.numel()

    handles = [m.register_forward_hook(hook) for m in net.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in handles:
            h.remove()
    return total


def matmul_peak(device: torch.device, n: int = 2048) -> float:
    """FLOP/s of a dense fp32 ``n x n`` matmul on ``device``: the reference for ``fraction_of_peak``."""
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device)
    b = torch.randn(n, n, generator=g).to(device)
    sec = timeit(lambda: a @ b, device, reps=5, warmup=2, min_seconds=0.5)
    return 2 * n ** 3 / sec


def _input_grad_step(net: nn.Module, x: torch.Tensor):
    def step():
        xi = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(net(xi).sum(), xi)
        return g
    return step


def bench_genc(device, size: int, batch: int, peak: float) -> dict:
    from .networks.genc import EnergyNet, TABLE3_WIDTHS

    net = EnergyNet(3, size, TABLE3_WIDTHS).to(device, memory_format=torch.channels_last)
    for p in net.parameters():
        p.requires_grad_(False)                     # SGLD needs the input gradient only
    x = torch.rand(batch, 3, size, size, device=device).to(memory_format=torch.channels_last)
    sec = timeit(_input_grad_step(net, x), device)
    flops = 2 * forward_flops(net, x)
    return {"what": f"SGLD step, Table 3 network, {size} px, batch {batch}, channels_last",
            "sgld_steps_per_s": 1 / sec, "images_per_s": batch / sec, "seconds_per_step": sec,
            "flop_per_step": flops, "flop_per_s": flops / sec, "fraction_of_peak": flops / sec / peak}


def bench_dehaene(device, size: int, batch: int, peak: float) -> dict:
    from .networks.bergmann_ae import BergmannAE

    net = BergmannAE(3, size, 100, True, 32).to(device)
    x = torch.rand(batch, 3, size, size, device=device)
    rec = lambda v: ((v - net(v)) ** 2).sum()        # noqa: E731  (a reconstruction energy)

    def projection():
        xi = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(rec(xi), xi)
        return g

    opt = torch.optim.Adam(net.parameters(), 1e-4)

    def train():
        opt.zero_grad(set_to_none=True)
        rec(x).backward()
        opt.step()

    flops = 2 * forward_flops(net, x)
    p_sec, t_sec = timeit(projection, device), timeit(train, device)
    return {"what": f"Bergmann VAE, {size} px, batch {batch}", "projection_iterations_per_s": 1 / p_sec,
            "projection_images_per_s": batch / p_sec, "training_images_per_s": batch / t_sec,
            "flop_per_s": flops / p_sec, "fraction_of_peak": flops / p_sec / peak}


def bench_matsubara(device, size: int, batch: int, peak: float) -> dict:
    from .networks.matsubara_vae import MatsubaraVAE

    net = MatsubaraVAE(3, size, 4, 32, 100).to(device)
    x = torch.rand(batch, 3, size, size, device=device)
    opt = torch.optim.Adam(net.parameters(), 1e-3)

    def loss():                                      # the negative ELBO's terms, up to constants
        mu_z, logvar_z, mu_x, logvar_x = net(x)
        nll = 0.5 * (logvar_x + (x - mu_x) ** 2 / logvar_x.exp()).sum()
        return nll + 0.5 * (mu_z ** 2 + logvar_z.exp() - 1 - logvar_z).sum()

    def train():
        opt.zero_grad(set_to_none=True)
        loss().backward()
        opt.step()

    def score():
        with torch.no_grad():
            net(x, sample=False)

    t_sec, s_sec = timeit(train, device), timeit(score, device)
    return {"what": f"Matsubara VAE, {size} px patches, batch {batch}", "training_images_per_s": batch / t_sec,
            "scoring_images_per_s": batch / s_sec}


def bench_kinder(device, size: int, batch: int, peak: float) -> dict:
    from .networks.kinder import TABLE4, IEMForward

    net = IEMForward(3, TABLE4).to(device)
    x = torch.rand(max(1, batch // 4), 3, size, size, device=device)

    def fwd():
        with torch.no_grad():
            net(x)

    sec = timeit(fwd, device)
    from .methods.kinder_bn import PixelBN

    imgs = (torch.rand(1000, 28, 28, generator=torch.Generator().manual_seed(0)) > 0.7).to(torch.uint8)
    c_sec = timeit(lambda: PixelBN().fit(imgs), torch.device("cpu"), reps=3)
    return {"what": f"IEM Table 4 forward, {size} px, batch {len(x)}", "forward_images_per_s": len(x) / sec,
            "pixel_bn_counting_images_per_s": len(imgs) / c_sec}


def run(device=None, out: str | Path = "bench", size: str = "full", log=print) -> dict:
    """Time every method at ``size`` ("full" or "tiny") on ``device``; write ``out/bench.json``."""
    from .config import get_device
    from .experiments.runner import _device_name, _git_commit

    device = get_device(device)
    z = SIZES[size]
    peak = matmul_peak(device, z["matmul"])
    res = {"device": _device_name(device), "torch": torch.__version__, "commit": _git_commit(), "size": size,
           "threads": torch.get_num_threads(),
           "matmul_peak": {"n": z["matmul"], "dtype": "float32", "flop_per_s": peak}, "methods": {}}
    for name, fn, key in (("genc", bench_genc, "genc"), ("dehaene", bench_dehaene, "dehaene"),
                          ("matsubara", bench_matsubara, "matsubara"), ("kinder", bench_kinder, "kinder")):
        t0 = time.perf_counter()
        res["methods"][name] = fn(device, z[key], z["batch"], peak)
        res["methods"][name]["bench_seconds"] = time.perf_counter() - t0
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(res, indent=2) + "\n")
    log(table(res))
    return res


def table(res: dict) -> str:
    """The bench as a plain-text table."""
    lines = [f"bench on {res['device']} (torch {res['torch']}, {res['size']} size); "
             f"fp32 matmul {res['matmul_peak']['n']}^2: {res['matmul_peak']['flop_per_s'] / 1e9:.1f} GFLOP/s"]
    for name, m in res["methods"].items():
        figures = ", ".join(f"{k} {v:.3g}" for k, v in m.items()
                            if isinstance(v, (int, float)) and k not in ("bench_seconds", "flop_per_step"))
        lines.append(f"  {name:<10} {m['what']}: {figures}")
    return "\n".join(lines)
