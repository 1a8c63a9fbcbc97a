"""The Dehaene MVTec experiments on real-layout data: any category with masks (here carpet, none of the
three we ship) gets pixel numbers in every experiment, the synthetic fallback comes with its notice, masks
finer than the images are tiled like them, and a run stopped by --max-minutes inside a training loop
resumes to the numbers of an uninterrupted one."""
import dataclasses
import json

import pytest
import torch

from energyad.data import synthetic
from energyad.experiments import dehaene as exp
from energyad.experiments import STAND_IN_NOTICE, resume, runner
from energyad.methods import dehaene as dh
from energyad.networks.bergmann_ae import BergmannAE

LAX = dh.HealthRules(min_output_dependence=0.0, min_active_dims=0, min_loss_drop=-float("inf"))


def _tiny(s, **kw):
    """A few epochs of width-4 networks at 32 px: these tests check the code paths, not the models."""
    kw = {"image_size": 32, "mask_size": 64, "width": 4, "health": LAX,
          "train": dh.AETrainSettings(lr=1e-3, epochs=3, n_train=16, kl_warmup=1),
          "projection": dataclasses.replace(s.projection, steps=3), **kw}
    return dataclasses.replace(s, **kw)


@pytest.fixture
def carpet_only(make_data_root, monkeypatch):
    """The conftest's carpet-only data root (64 px, 2 good and 1 defective test image), tiny settings."""
    root = make_data_root(size=64, n_test_good=2, n_test_defect=1)
    monkeypatch.setattr(exp, "MVTEC_QUICK", _tiny(exp.MVTEC_QUICK, kinds=("l2ae", "vae")))
    monkeypatch.setattr(exp, "ZIMMERER_QUICK", _tiny(exp.ZIMMERER_QUICK))
    monkeypatch.setattr(exp, "CONVERGENCE_QUICK", _tiny(exp.CONVERGENCE_QUICK))
    return root


def test_categories_for_takes_real_categories_with_masks_and_caps_them(three_categories):
    cats, stand_in = exp.categories_for(dataclasses.replace(exp.MVTEC_QUICK, max_real_categories=None))
    assert set(cats) == {"carpet", "grid"} and not stand_in
    cats, _ = exp.categories_for(exp.CONVERGENCE_QUICK)         # at most one
    assert list(cats) == ["carpet"]                            # MVTec AD's order: textures first
    cats, stand_in = exp.categories_for(exp.MVTEC_STAND_IN)     # the chapter's teaching run: stand-ins only
    assert list(cats) == ["synthetic_object"] and stand_in


def test_test_tiles_cut_finer_masks_into_the_same_grid():
    x = torch.arange(2 * 8 * 8, dtype=torch.float32).view(2, 1, 8, 8)
    m = torch.zeros(2, 1, 16, 16)
    m[1, 0, 9, 3] = 1                                           # tile row 2 (rows 8-11), column 0 of image 1
    xt, mt, yt, d = exp.test_tiles(x, m, torch.tensor([0, 1]), ["good", "crack"], 4)
    assert xt.shape == (8, 1, 4, 4) and mt.shape == (8, 1, 8, 8)
    assert torch.equal(xt[4 + 2], x[1, :, 4:8, 0:4])            # raster order: image 1, tile (1, 0)
    assert yt.tolist() == [0, 0, 0, 0, 0, 0, 1, 0] and mt[6, 0, 1, 3] == 1
    assert d == ["good"] * 4 + ["crack"] * 4


def test_every_experiment_reports_pixel_numbers_for_an_unseen_real_category(carpet_only, tmp_path, one_thread):
    out = tmp_path / "out"
    mv = runner.run("dehaene-mvtec", "quick", out, "cpu")
    m = mv["metrics"]
    assert set(m) == {"carpet", "stand_in"} and m["stand_in"] is False
    for kind, v in m["carpet"].items():
        assert 0 <= v["reconstruction"] <= 1 and 0 <= v["projection"] <= 1 and 0 <= v["aupro_projection"] <= 1
        assert v["health"]["model"] == f"{kind} on carpet"
        # 2 good + 3 defect images (one per synthetic defect type), each cut into 4 x 4 tiles; masks at 128 px (4 x 32)
        assert v["test"]["good"] + v["test"]["defect"] == 5 * 16 and v["test"]["mask_size"] == 32
    text = (out / "dehaene-mvtec.json").read_text()
    assert str(carpet_only) not in text
    assert "$ENERGYAD_DATA/mvtec_ad/carpet" in json.loads(text)["provenance"]["data"]

    zm = runner.run("dehaene-zimmerer", "quick", out, "cpu")["metrics"]
    assert set(zm) == {"carpet", "stand_in"}
    assert set(exp.TABLE2_COLUMNS) <= set(zm["carpet"])
    assert all(0 <= zm["carpet"][k] <= 1 for k in exp.TABLE2_COLUMNS)
    assert zm["carpet"]["ablation_identity_covariance"]["model"] == "vae (identity covariance) on carpet"

    cv = runner.run("dehaene-convergence", "quick", out, "cpu")["metrics"]
    assert cv["carpet"]["steps"] == [0, 2] and len(cv["carpet"]["none"]) == len(cv["carpet"]["error"]) == 2
    assert cv["carpet"]["none"][0] == cv["carpet"]["error"][0]          # both start from x_0
    assert (out / "dehaene-convergence-carpet.png").is_file()


def test_without_real_categories_the_stand_ins_with_a_notice(tmp_path, monkeypatch, capsys, one_thread):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("ENERGYAD_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("ENERGYAD_CACHE", str(tmp_path / "cache"))
    synthetic.synthetic_mvtec_root(size=32)                    # small stand-ins, written once into the cache
    monkeypatch.setattr(exp, "MVTEC_QUICK", _tiny(exp.MVTEC_QUICK, kinds=("l2ae",), mask_size=None))
    res = exp.dehaene_mvtec("quick", tmp_path, torch.device("cpu"))
    assert STAND_IN_NOTICE.format(id="dehaene-mvtec") in capsys.readouterr().out
    assert res["metrics"]["stand_in"] is True and res["data"].startswith("stand-in: synthetic")
    assert set(res["metrics"]) == {"synthetic_object", "stand_in"}
    with pytest.raises(Exception, match="No MVTec AD category"):   # the full profile does not fall back
        exp.categories_for(exp.MVTEC_FULL)


def test_a_stopped_training_loop_resumes_to_the_uninterrupted_numbers(carpet_only, tmp_path, monkeypatch,
                                                                      stop_after_steps, one_thread):
    straight = runner.run("dehaene-mvtec", "quick", tmp_path / "a", "cpu")["metrics"]
    stop_after_steps(5)  # 3 epochs of the L2AE, then 2 of the VAE
    with pytest.raises(resume.StopForResume, match="stopped at step 2 of 3"):
        runner.run("dehaene-mvtec", "quick", tmp_path / "b", "cpu", max_minutes=1)
    partial = tmp_path / "b" / "checkpoints" / "dehaene-mvtec-quick-seed0" / "train-carpet-vae.partial.pt"
    saved = torch.load(partial, weights_only=False)
    assert saved["progress"] == 2 and len(saved["state"]["history"]["values"]) == 2
    assert set(saved["state"]) == {"model", "optimizer", "history"}
    monkeypatch.setattr(resume, "deadline_reached", lambda: False)
    res = runner.run("dehaene-mvtec", "quick", tmp_path / "b", "cpu", max_minutes=1)
    assert res["provenance"]["resumed_units"] == ["train-carpet-vae@2"] and res["provenance"]["calls"] == 2
    assert res["metrics"] == straight                          # same seed, same numbers, to the last bit
    assert not partial.exists()


def test_the_training_loop_is_pluggable_and_the_default_runs_every_epoch(one_thread):
    torch.manual_seed(0)
    net = exp.BergmannAE(1, 32, 4, False, 4)
    model = dh.AutoencoderModel(net, "l2ae")
    x = torch.rand(8, 1, 32, 32)
    seen = []

    def loop(total, state, step, generator):
        assert set(state) == {"model", "optimizer", "history"} and state["model"] is model
        for i in range(total):
            step(i)
            seen.append(len(state["history"]))

    hist = dh.train_autoencoder(model, x, dh.AETrainSettings(lr=1e-3, epochs=3, batch_size=4), progress=False, loop=loop)
    assert seen == [1, 2, 3] and len(hist) == 3 and all(h > 0 for h in hist)


@pytest.mark.parametrize("kind", ["l2ae", "dsae"])
def test_the_training_curve_is_the_error_each_model_lowers(kind, one_thread):
    """The health check's loss curve: the squared error per pixel for the L2AE, the mean DSSIM for the DSAE
    (recomputed here from the trained model, after the last epoch)."""
    torch.manual_seed(1)
    model = dh.AutoencoderModel(exp.BergmannAE(3, 32, 4, False, 4), kind)
    x = torch.rand(6, 3, 32, 32)
    hist = dh.train_autoencoder(model, x, dh.AETrainSettings(lr=1e-3, epochs=2, batch_size=3), progress=False)
    with torch.no_grad():
        rec = model.reconstruct(x)
    want = dh.dssim_map(x, rec).mean() if kind == "dsae" else (x - rec).pow(2).mean()
    assert hist[-1] == pytest.approx(want.item(), rel=1e-5)


def test_projecting_in_chunks_gives_the_numbers_of_one_batch(one_thread):
    """Each image is projected on its own: chunks (which bound a GPU's memory) change no number."""
    torch.manual_seed(0)
    model = dh.AutoencoderModel(BergmannAE(1, 32, latent=4, width=4), "l2ae")
    x = torch.rand(5, 1, 32, 32)
    masks = (torch.rand(5, 1, 32, 32) > 0.8).float()
    s = dh.ProjectionSettings(steps=4, stop_loss=float(model.loss_r(x).median()))
    whole, info = dh.project(model, x, s)
    parts, stopped = exp.project_in_chunks(model, x, s, chunk=2)
    assert torch.allclose(whole, parts, atol=1e-6) and torch.equal(info["stopped_at"], stopped)
    one = exp.convergence_curves(model, x, masks, s, record_every=2, chunk=128)
    two = exp.convergence_curves(model, x, masks, s, record_every=2, chunk=2)
    assert one["steps"] == two["steps"] == [0, 2, 4]
    for k in ("none", "error", "pixel_none", "pixel_error"):
        assert one[k] == pytest.approx(two[k], abs=1e-6)
