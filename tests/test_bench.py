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
