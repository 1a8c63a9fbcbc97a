"""matsubara-mvtec on real-layout data: any category with masks (none of the three we ship), the pixel maps
of the patch scores against a loop, the synthetic fallback with its notice, and a run stopped by
--max-minutes that resumes to the numbers of an uninterrupted one."""
import dataclasses
import json

import pytest
import torch

from energyad.data import synthetic
from energyad.experiments import matsubara as exp
from energyad.experiments import STAND_IN_NOTICE, resume, runner
from energyad.methods import matsubara as mt

TINY = dataclasses.replace(exp.PATCH_QUICK, patch=16, stride=8, image_size=32, mask_size=64, n_crops=48,
                           n_conv=2, n_c=4, n_z=3, map_stride=8, vae=mt.VAESettings(epochs=4, batch_size=16))


@pytest.fixture
def tolerate_untrained(monkeypatch):
    """Four epochs of a tiny VAE may not pass every health check; these tests check the code paths."""
    monkeypatch.setattr(mt.Health, "raise_if_failed", lambda self, where="": None)


@pytest.fixture
def carpet_only(carpet_data_root, monkeypatch):
    """The conftest's carpet-only data root, with this chapter's tiny settings."""
    monkeypatch.setattr(exp, "PATCH_QUICK", TINY)
    return carpet_data_root


def test_patch_pixel_map_is_the_mean_of_the_covering_patches():
    torch.manual_seed(0)
    H, W, p, st = 13, 11, 5, 3                     # (13 - 5) % 3 = 2 and (11 - 5) % 3 = 0: a bottom edge uncovered
    _, (nh, nw) = mt.patch_grid(torch.zeros(1, 1, H, W), p, st)
    maps = torch.randn(2, nh, nw)
    got = mt.patch_pixel_map(maps, p, st, (H, W))
    assert got.shape == (2, 1, H, W)
    h = p + (nh - 1) * st
    for n in range(2):
        for y in range(H):
            for x in range(W):
                yy = min(y, h - 1)                 # uncovered rows take the last covered row's value
                cover = [maps[n, i, j] for i in range(nh) for j in range(nw)
                         if i * st <= yy < i * st + p and j * st <= x < j * st + p]
                assert got[n, 0, y, x] == pytest.approx(float(torch.stack(cover).mean()), abs=1e-6)
    const = mt.patch_pixel_map(torch.full((1, nh, nw), 2.5), p, st, (H, W))
    assert torch.allclose(const, torch.full_like(const, 2.5))


def test_patch_categories_takes_real_categories_with_masks_and_caps_them(three_categories):
    cats, stand_in = exp.patch_categories(dataclasses.replace(TINY, max_real_categories=None))
    assert set(cats) == {"carpet", "grid"} and not stand_in
    cats, _ = exp.patch_categories(dataclasses.replace(TINY, max_real_categories=1))
    assert list(cats) == ["carpet"]                            # MVTec AD's order: textures first


def test_an_unseen_real_category_gets_pixel_numbers(carpet_only, tmp_path, tolerate_untrained, one_thread):
    res = runner.run("matsubara-mvtec", "quick", tmp_path / "out", "cpu")
    m = res["metrics"]
    assert list(m["auroc"]) == ["carpet"] and m["stand_in"] is False
    assert set(m["auroc"]["carpet"]) == set(m["pixel_auroc"]["carpet"]) == {"L", "D", "A", "M"}
    assert set(m["aupro"]["carpet"]) == {"L", "M"}
    assert all(0 <= v <= 1 for v in m["pixel_auroc"]["carpet"].values())
    assert m["mask_size"]["carpet"] == 64 and m["test_images"]["carpet"] == {"good": 3, "defect": 6}
    assert {"image_mean_intensity", "image_patch_std", "pixel_patch_std"} <= set(m["controls"]["carpet"])
    assert m["m_minus_l"]["carpet"]["low"] <= m["m_minus_l"]["carpet"]["difference"] <= m["m_minus_l"]["carpet"]["high"]
    assert "active_latent_dims" in m["health"]["carpet"]["checks"]
    assert (tmp_path / "out" / "matsubara-mvtec-heatmap-carpet.png").is_file()
    text = (tmp_path / "out" / "matsubara-mvtec.json").read_text()
    assert str(carpet_only) not in text and "$ENERGYAD_DATA/mvtec_ad/carpet" in json.loads(text)["provenance"]["data"]


def test_without_real_categories_the_synthetic_ones_with_a_notice(tmp_path, monkeypatch, capsys,
                                                                  tolerate_untrained, one_thread):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("ENERGYAD_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("ENERGYAD_CACHE", str(tmp_path / "cache"))
    synthetic.synthetic_mvtec_root(size=32)                    # small stand-ins, written once into the cache
    monkeypatch.setattr(exp, "PATCH_QUICK", dataclasses.replace(TINY, mask_size=None, vae=mt.VAESettings(epochs=2)))
    res = exp.matsubara_mvtec("quick", tmp_path, torch.device("cpu"))
    assert STAND_IN_NOTICE.format(id="matsubara-mvtec") in capsys.readouterr().out
    assert res["metrics"]["stand_in"] is True and res["data"].startswith("stand-in: synthetic")
    assert set(res["metrics"]["pixel_auroc"]) == {"synthetic_texture", "synthetic_object"}
    with pytest.raises(Exception, match="No MVTec AD category"):   # the full profile does not fall back
        exp.patch_categories(exp.PATCH_FULL)


def test_a_stopped_category_resumes_to_the_uninterrupted_numbers(carpet_only, tmp_path, monkeypatch, stop_after_steps,
                                                                 tolerate_untrained, one_thread):
    straight = runner.run("matsubara-mvtec", "quick", tmp_path / "a", "cpu")["metrics"]
    stop_after_steps(2)  # one step per epoch
    with pytest.raises(resume.StopForResume, match="stopped at step 2 of 4"):
        runner.run("matsubara-mvtec", "quick", tmp_path / "b", "cpu", max_minutes=1)
    partial = tmp_path / "b" / "checkpoints" / "matsubara-mvtec-quick-seed0" / "vae-carpet.partial.pt"
    saved = torch.load(partial, weights_only=False)
    assert saved["progress"] == 2 and len(saved["state"]["history"]["values"]) == 2
    monkeypatch.setattr(resume, "deadline_reached", lambda: False)
    res = runner.run("matsubara-mvtec", "quick", tmp_path / "b", "cpu", max_minutes=1)
    resumed = res["metrics"]
    assert res["provenance"]["resumed_units"] == ["vae-carpet@2"] and res["provenance"]["calls"] == 2
    for key in ("auroc", "pixel_auroc", "aupro", "m_minus_l", "controls", "health"):
        assert resumed[key] == straight[key], key              # same seed, same numbers, to the last bit
    assert straight["health"]["carpet"]["checks"]["loss_first_last"]["value"] == \
        resumed["health"]["carpet"]["checks"]["loss_first_last"]["value"]
