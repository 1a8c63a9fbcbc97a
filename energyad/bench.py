"""``python -m energyad bench``: throughput of each method at its full-profile size, and how close the
hardware comes to its own dense-matmul peak.

For each method the bench times the step that dominates its full profile:

- Genc et al.: one SGLD step of the Table 3 network (128 px, batch 32) — a forward pass and the
  gradient with respect to the input — in channels_last memory format (the default format is timed
  too; the Genc trainer uses channels_last on CUDA only). Its FLOPs are counted as twice the forward convolutions'
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

The SGLD step is also timed in bfloat16 autocast and through ``torch.compile`` (with the seconds the
first, compiling call took), the three variants taking turns (:func:`interleaved`), so that a
device's bench says whether either pays there.

``precision`` says what the faster number formats do to Genc's SGLD step on the same device: the
energies and input gradients of the Table 3 network in float32, in bfloat16 autocast and (on CUDA)
with TF32 matmuls and convolutions, each against float64, and where a 20-step Langevin chain with the
same noise ends. This is the per-step numerical effect; whether it changes a trained model's AUROC
is a question for a full run (``TrainSettings.autocast_bf16`` stays off until one has answered it).
"""
from __future__ import annotations

import copy
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn

TINY = {"genc": 32, "batch": 4, "dehaene": 32, "matsubara": 32, "kinder": 64, "matmul": 256}


def full_sizes() -> dict:
    """Each method's image (or patch) size in its full profile, read from the experiments' settings."""
    from .experiments import dehaene, genc, kinder_iem, matsubara

    return {"genc": genc.MVTEC_FULL.image_size, "batch": genc.MVTEC_FULL.train.batch_size,
            "dehaene": dehaene.MVTEC_FULL.image_size, "matsubara": matsubara.PATCH_FULL.patch,
            "kinder": kinder_iem.IEM_MVTEC_FULL.iem.image_size, "matmul": 2048}


COMMITTED = Path(__file__).resolve().parents[1] / "book" / "results" / "bench" / "bench.json"


def load(path=None) -> dict:
    """A bench result: ``path``, else the committed one (``book/results/bench/bench.json``)."""
    path = Path(path or COMMITTED)
    if not path.exists():
        raise FileNotFoundError(f"no bench result at {path}. Fix: python -m energyad bench --device cpu "
                                f"--out {path.parent}")
    return json.loads(path.read_text())


def full_profile_work() -> dict:
    """What dominates each MVTec experiment's full profile, per category: ``{id: (what, count, method,
    rate key of the bench)}``, read from the settings (training only; scoring comes on top)."""
    from .experiments import dehaene, genc, matsubara

    g, d, m = genc.MVTEC_FULL, dehaene.MVTEC_FULL, matsubara.PATCH_FULL
    return {"genc-mvtec": ("SGLD steps", g.train.iterations * g.train.sgld.steps, "genc", "sgld_steps_per_s"),
            "dehaene-mvtec": ("training images (4 baselines)", len(d.kinds) * d.train.epochs * d.train.n_train,
                              "dehaene", "training_images_per_s"),
            "matsubara-mvtec": ("training patches", m.vae.epochs * m.n_crops, "matsubara", "training_images_per_s")}


def training_hours(res: dict) -> dict:
    """``{id: hours}`` one category's full-profile training takes at the rates of a bench result ``res``."""
    return {k: count / res["methods"][method][key] / 3600 for k, (_, count, method, key) in full_profile_work().items()}


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


def interleaved(fns: dict, device: torch.device, rounds: int = 3, reps: int = 3) -> dict:
    """``{name: seconds}``: the median over ``rounds`` of each function's :func:`timeit`, the functions
    taking turns in every round, so that a change in the machine's load falls on all of them alike."""
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            times[k].append(timeit(fn, device, reps=reps))
    return {k: statistics.median(v) for k, v in times.items()}


def bench_genc(device, size: int, batch: int, peak: float) -> dict:
    from .networks.genc import EnergyNet, TABLE3_WIDTHS

    net = EnergyNet(3, size, TABLE3_WIDTHS).to(device, memory_format=torch.channels_last)
    for p in net.parameters():
        p.requires_grad_(False)                     # SGLD needs the input gradient only
    x = torch.rand(batch, 3, size, size, device=device).to(memory_format=torch.channels_last)
    flops = 2 * forward_flops(net, x)
    step = _input_grad_step(net, x)

    def bf16_step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return step()
    plain_net = copy.deepcopy(net).to(memory_format=torch.contiguous_format)   # the default memory format
    plain = _input_grad_step(plain_net, x.contiguous())
    variants = {"float32": step, "contiguous": plain, "bf16": bf16_step}
    t0 = time.perf_counter()
    try:
        compiled = _input_grad_step(torch.compile(net), x)
        compiled()                                   # the first call compiles
        compile_sec = time.perf_counter() - t0
        variants["compiled"] = compiled
    except Exception as err:                         # a machine without a working compiler: say so, go on
        compile_sec = None
        print(f"torch.compile failed on {device}: {type(err).__name__}: {str(err)[:200]}")
    t = interleaved(variants, device)
    sec = t["float32"]
    return {"what": f"SGLD step, Table 3 network, {size} px, batch {batch}, channels_last",
            "sgld_steps_per_s": 1 / sec, "images_per_s": batch / sec, "seconds_per_step": sec,
            "flop_per_step": flops, "flop_per_s": flops / sec, "fraction_of_peak": flops / sec / peak,
            "contiguous_seconds_per_step": t["contiguous"], "bf16_autocast_seconds_per_step": t["bf16"], "compiled_seconds_per_step": t.get("compiled"),
            "compile_seconds": compile_sec}


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


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a.double() - ref).norm() / ref.norm().clamp_min(1e-300))


def precision_effect(device, size: int, batch: int, chain_steps: int = 20) -> dict:
    """Genc's SGLD step in each number format against float64 (see the module docstring)."""
    from scipy.stats import spearmanr

    from .methods.genc import SGLDSettings, sgld_sample
    from .networks.genc import EnergyNet, TABLE3_WIDTHS

    torch.manual_seed(0)
    ref_net = EnergyNet(3, size, TABLE3_WIDTHS).double().to(device)
    for p in ref_net.parameters():
        p.requires_grad_(False)
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(device)
    sgld = SGLDSettings(steps=chain_steps)

    def energy_and_grad(net, v, dtype, autocast=False):
        xi = v.to(dtype).detach().requires_grad_(True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            e = net(xi).float()
        (g,) = torch.autograd.grad(e.sum(), xi)
        return e.detach().double(), g.double()

    def chain(net, dtype, autocast=False):        # float32 states and noise; the energy in each format
        fn = lambda v: net(v.to(dtype)).float()                      # noqa: E731
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            return sgld_sample(fn, x.float(), sgld, generator=torch.Generator(device).manual_seed(2)).double()

    e64, g64 = energy_and_grad(ref_net, x, torch.float64)
    end64 = chain(ref_net, torch.float64)
    moved = float((end64 - x).norm())
    net32 = EnergyNet(3, size, TABLE3_WIDTHS).to(device)
    net32.load_state_dict({k: v.float() for k, v in ref_net.state_dict().items()})
    for p in net32.parameters():
        p.requires_grad_(False)
    formats = {"float32": (torch.float32, False, False), "bfloat16_autocast": (torch.float32, True, False)}
    if device.type == "cuda":
        formats["tf32"] = (torch.float32, False, True)
    out = {"what": f"Table 3 network, {size} px, batch {batch}, random weights; errors relative to float64",
           "chain_steps": chain_steps, "chain_movement": moved}
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        for name, (dtype, autocast, tf32) in formats.items():
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
            e, g = energy_and_grad(net32, x, dtype, autocast)
            end = chain(net32, dtype, autocast)
            out[name] = {"energy_rel_error": _rel(e, e64), "gradient_rel_error": _rel(g, g64),
                         "energy_rank_correlation": float(spearmanr(e.cpu().numpy(), e64.cpu().numpy())[0])
                         if batch > 2 else None,
                         "chain_end_distance_over_movement": float((end - end64).norm()) / max(moved, 1e-300)}
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags
    return out


def run(device=None, out: str | Path = "bench", size: str = "full", log=print) -> dict:
    """Time every method at ``size`` ("full" or "tiny") on ``device``; write ``out/bench.json``."""
    from .config import get_device
    from .experiments.runner import _device_name, _git_commit

    device = get_device(device)
    z = full_sizes() if size == "full" else TINY
    peak = matmul_peak(device, z["matmul"])
    res = {"device": _device_name(device), "torch": torch.__version__, "commit": _git_commit(), "size": size,
           "threads": torch.get_num_threads(),
           "matmul_peak": {"n": z["matmul"], "dtype": "float32", "flop_per_s": peak}, "methods": {}}
    for name, fn, key in (("genc", bench_genc, "genc"), ("dehaene", bench_dehaene, "dehaene"),
                          ("matsubara", bench_matsubara, "matsubara"), ("kinder", bench_kinder, "kinder")):
        t0 = time.perf_counter()
        res["methods"][name] = fn(device, z[key], z["batch"], peak)
        res["methods"][name]["bench_seconds"] = time.perf_counter() - t0
    res["precision"] = precision_effect(device, z["genc"], z["batch"])
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
    p = res.get("precision")
    if p:
        lines.append(f"  precision  {p['what']}:")
        for fmt, v in p.items():
            if isinstance(v, dict):
                lines.append(f"    {fmt:<18} " + ", ".join(f"{k} {x:.2g}" for k, x in v.items() if x is not None))
    return "\n".join(lines)
