"""The bench: FLOP counting against a hand computation, and a tiny run end to end."""
import json

import pytest
import torch
from torch import nn

from energyad import bench
from energyad.__main__ import main


def test_forward_flops_against_a_hand_count():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.ELU(), nn.Conv2d(8, 4, 4, 2, 1), nn.Flatten(),
                        nn.Linear(4 * 8 * 8, 10), nn.Unflatten(1, (10, 1, 1)), nn.ConvTranspose2d(10, 2, 4, 2, 1))
    x = torch.rand(2, 3, 16, 16)
    hand = 2 * 2 * (3 * 9 * 8 * 16 * 16      # conv 3x3: (in * k * k) MACs per output element
                    + 8 * 16 * 4 * 8 * 8     # conv 4x4 stride 2
                    + 256 * 10               # linear
                    + 10 * 1 * 1 * 2 * 16)   # transposed conv: each input element feeds out * k * k outputs
    assert bench.forward_flops(net, x) == hand


def test_tiny_bench_writes_its_figures(tmp_path, capsys, one_thread):
    assert main(["bench", "--device", "cpu", "--size", "tiny", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "bench.json").read_text())
    g = res["methods"]["genc"]
    assert g["fraction_of_peak"] == pytest.approx(g["flop_per_s"] / res["matmul_peak"]["flop_per_s"])
    assert g["sgld_steps_per_s"] > 0 and 0 < g["fraction_of_peak"] < 2
    assert set(res["methods"]) == {"genc", "dehaene", "matsubara", "kinder"}
    assert "fp32 matmul 256^2" in capsys.readouterr().out
    assert set(res["precision"]) >= {"float32", "bfloat16_autocast", "chain_movement"}


def test_precision_section_sees_bfloat16_and_not_float32(tmp_path, one_thread):
    """float32 agrees with float64 to about 1e-6; bfloat16 autocast (8 bits of mantissa) is off by
    about 1e-2 in energy and gradient: if autocast did not engage, the two would be equal."""
    p = bench.precision_effect(torch.device("cpu"), 32, 4)
    f32, bf16 = p["float32"], p["bfloat16_autocast"]
    assert f32["energy_rel_error"] < 1e-4 and f32["gradient_rel_error"] < 1e-4
    assert bf16["energy_rel_error"] > 1e-3 and bf16["gradient_rel_error"] > 1e-3
    assert f32["chain_end_distance_over_movement"] < bf16["chain_end_distance_over_movement"] < 0.1
    assert "tf32" not in p                                           # CUDA only


def test_full_profile_work_counts_and_hours():
    work = bench.full_profile_work()
    assert work["genc-mvtec"][1] == 3000 * 100                       # Sec. 3.2: 3,000 updates x 100 SGLD steps
    assert work["dehaene-mvtec"][1] == 4 * 300 * 10_000              # Sec. 4.1: 300 epochs over 10,000 images
    fake = {"methods": {"genc": {"sgld_steps_per_s": 100.0}, "dehaene": {"training_images_per_s": 1e4},
                        "matsubara": {"training_images_per_s": 50.0}}}
    hours = bench.training_hours(fake)
    assert hours["genc-mvtec"] == pytest.approx(300_000 / 100 / 3600)
    assert hours["matsubara-mvtec"] == pytest.approx(work["matsubara-mvtec"][1] / 50 / 3600)
