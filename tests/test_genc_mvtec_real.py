"""genc-mvtec on real-layout data: any category with masks (here carpet, none of the three we ship) gets
pixel numbers in the quick and the full profile; with no real category the quick profile falls back to
the synthetic stand-in with a notice; a full run stopped by --max-minutes inside the training loop resumes
to the numbers of an uninterrupted one; the CUDA-only speed options leave CPU results bit-identical to the
code before them."""
import ast
import dataclasses
import math
import shutil

import pytest
import torch

from energyad.data import synthetic
from energyad.experiments import genc as exp
from energyad.experiments import resume, runner
from energyad.methods import genc
from energyad.networks.genc import EnergyNet

LAX = genc.HealthRules(max_clamped_fraction=1.0, max_energy_vs_reg=math.inf, min_noise_gap=-math.inf)


def _tiny(s, **kw):
    """A few updates of a width-4 network at 16 px: these tests check the code paths, not the models."""
    kw = {"image_size": 16, "mask_size": 32, "widths": (4, 4, 4), "health": LAX,
          "train": genc.TrainSettings(iterations=6, batch_size=4, lr=1e-3, sgld=genc.SGLDSettings(steps=3)), **kw}
    return dataclasses.replace(s, **kw)


@pytest.fixture
def carpet_only(make_data_root, monkeypatch):
    """The conftest's carpet-only data root (32 px, 2 good and 1 defective test image), tiny settings."""
    root = make_data_root(size=32, n_test_good=2, n_test_defect=1)
    monkeypatch.setattr(exp, "MVTEC_QUICK", _tiny(exp.MVTEC_QUICK))
    monkeypatch.setattr(exp, "MVTEC_FULL", _tiny(exp.MVTEC_FULL))
    return root


def _pixel_numbers(res, cat):
    m = res["metrics"][cat]
    assert set(m["detection"]) == {"energy", "raw", "std"}
    for key in ("localization", "aupro"):
        assert set(m[key]) == {"raw", "std"} and all(0.0 <= v <= 1.0 for v in m[key].values())
    assert res["metrics"]["health"][cat]["ok"]


@pytest.mark.parametrize("profile", ["quick", "full"])
def test_an_unseen_category_with_masks_gets_pixel_numbers(tmp_path, carpet_only, profile, one_thread):
    res = runner.run("genc-mvtec", profile, tmp_path / "out", "cpu")
    assert [c for c in res["metrics"] if c != "health"] == ["carpet"]
    _pixel_numbers(res, "carpet")
    assert res["provenance"]["data"].startswith("MVTec AD (real), categories carpet")
    assert res["paper"]["carpet"]["localization"] == {"raw": 0.53, "std": 0.63}
    assert (tmp_path / "out" / "genc-mvtec-carpet.png").is_file()


def test_quick_caps_real_categories_and_skips_those_without_masks(tmp_path, monkeypatch):
    root = tmp_path / "mvtec_ad"
    for cat in ("carpet", "grid", "tile", "bottle"):
        synthetic.write_synthetic_mvtec(root, cat, "texture", n_train=2, n_test_good=1, n_test_defect=1, size=32)
    shutil.rmtree(root / "bottle" / "ground_truth")            # like the shared copy's bottle: no masks
    monkeypatch.setenv("ENERGYAD_DATA", str(tmp_path))
    cats, s, data = exp.select_categories(exp.MVTEC_QUICK)
    assert list(cats) == ["carpet", "grid"] and not s.synthetic and "real" in data
    cats, _, _ = exp.select_categories(exp.MVTEC_FULL)          # the full profile: all, bottle for detection
    assert set(cats) == {"carpet", "grid", "tile", "bottle"}


def test_no_real_category_falls_back_to_the_stand_in_with_a_notice(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ENERGYAD_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("ENERGYAD_CACHE", str(tmp_path / "cache"))
    cats, s, data = exp.select_categories(exp.MVTEC_QUICK)
    assert set(cats) == {"synthetic_texture", "synthetic_object"} and s.synthetic and data.startswith("stand-in")
    assert "notice: no real MVTec AD category" in capsys.readouterr().out
    with pytest.raises(Exception, match="No MVTec AD category"):   # the full profile does not fall back
        exp.select_categories(exp.MVTEC_FULL)


def test_a_stopped_full_run_resumes_to_the_uninterrupted_result(tmp_path, carpet_only, monkeypatch, stop_after_steps,
                                                                one_thread):
    straight = runner.run("genc-mvtec", "full", tmp_path / "a", "cpu")["metrics"]
    stop_after_steps(3)
    with pytest.raises(resume.StopForResume, match="stopped at step 3 of 6"):
        runner.run("genc-mvtec", "full", tmp_path / "b", "cpu", max_minutes=1)
    partial = next((tmp_path / "b" / "checkpoints").rglob("genc-carpet-training.partial.pt"))
    assert torch.load(partial, weights_only=False)["progress"] == 3
    monkeypatch.setattr(resume, "deadline_reached", lambda: False)
    res = runner.run("genc-mvtec", "full", tmp_path / "b", "cpu", max_minutes=1)
    assert res["provenance"]["resumed_units"] == ["genc-carpet-training@3"]
    for m in (straight, res["metrics"]):
        m["carpet"].pop("train_seconds")
        for v in m["health"]["carpet"].get("checks", {}).values():
            v.pop("seconds", None)
    assert res["metrics"] == straight                            # same seed, same numbers, to the last bit


def test_trainer_state_round_trips_with_the_replay_buffer_and_the_guard(one_thread):
    """Stopping after any step and loading the state into a fresh trainer continues identically,
    also with a persistent buffer and a guard event before the stop."""
    def make(g):
        torch.manual_seed(0)
        net = EnergyNet(1, 16, (4, 8, 8))
        s = genc.TrainSettings(iterations=10, batch_size=4, lr=1e-3, snapshot_every=3, persistent=True,
                               buffer_size=20, sgld=genc.SGLDSettings(steps=3))
        return genc.EBMTrainer(net, imgs, s, g, inject_spike_at=4)

    imgs = torch.rand(12, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(0)
    a = make(g)
    for i in range(10):
        a.step(i)
    g2 = torch.Generator().manual_seed(0)
    b = make(g2)
    for i in range(6):
        b.step(i)
    saved, gstate = b.state_dict(), g2.get_state()
    g3 = torch.Generator().manual_seed(99)
    c = make(g3)
    c.load_state_dict(saved)
    g3.set_state(gstate)
    for i in range(6, 10):
        c.step(i)
    assert len(a.log.events) == 1 and c.log.events == a.log.events
    assert c.log.loss == a.log.loss and c.log.clamped == a.log.clamped
    assert torch.equal(c.buffer.data, a.buffer.data)
    for p, q in zip(a.net.parameters(), c.net.parameters()):
        assert torch.equal(p, q)


def test_cpu_results_equal_the_code_before_the_speed_options(one_thread):
    """Recorded with the training loop as it was before the device-side clamp counting, the single
    read per update, the EBMTrainer and the CUDA options (tf32, channels_last, bf16 off): on the CPU
    all are no-ops and the log, the guard's event and the weights agree to the last bit."""
    expected, param_sum = ast.literal_eval(REFERENCE_LOG), REFERENCE_PARAM_SUM
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(40, 1, 16, 16, generator=g)
    net = EnergyNet(1, 16, (4, 8, 8))
    s = genc.TrainSettings(iterations=12, batch_size=8, lr=1e-3, snapshot_every=5,
                           sgld=genc.SGLDSettings(steps=5, grad_clamp=0.002))
    assert s.tf32 and s.channels_last and not s.autocast_bf16       # the defaults are the ones compared
    log = genc.train_ebm(net, imgs, s, generator=g, progress=False, inject_spike_at=7)
    got = [log.e_data, log.e_sample, log.loss, log.clamped, log.drift, log.events]
    assert got == expected
    assert float(sum(p.detach().double().sum() for p in net.parameters())) == param_sum


# Printed by the training loop before this change (git 0a65cbe, energyad/methods/genc.py) for the
# configuration of test_cpu_results_equal_the_code_before_the_speed_options: [e_data, e_sample, loss,
# clamped, drift, events], and the sum of the trained weights.
REFERENCE_LOG = (
    '[[0.07559847831726074, 0.04698442667722702, 0.05346430093050003, 0.06118548661470413, '
    '0.05203859508037567, 0.04242362082004547, 0.05033061280846596, 0.05585814639925957, '
    '0.05174795538187027, 0.03955060988664627, 0.03846374899148941], [0.051740724593400955, '
    '0.04254418611526489, 0.04766460135579109, 0.04669693857431412, 0.04132678359746933, '
    '0.05329987034201622, 0.04233510047197342, 0.04207533597946167, 0.04128972813487053, '
    '0.038173891603946686, 0.03927445411682129], [0.02394646406173706, 0.004486575722694397, '
    '0.0058576492592692375, 0.014553252607584, 0.010763230733573437, -0.010826194658875465, '
    '0.00804616417735815, 0.01383743342012167, 0.010509722866117954, 0.0014119887491688132, '
    '-0.0007748132920823991], [0.644921875, 0.65185546875, 0.65, 0.63486328125, 0.64482421875, '
    '0.64462890625, 0.66181640625, 0.33037109375, 0.31748046875, 0.3140625, 0.31142578125], '
    '[0.003429707372561097, 0.0034293832257390024, 0.003418301558122039, 0.0034025923348963262, '
    '0.0033572290558367968, 0.0033053772523999212, 0.003401881456375122, 0.0016610503662377596, '
    "0.0016271593514829874, 0.001616232981905341, 0.0016163000836968422], [(7, 'energy spike (loss "
    "6.67e+26): restored the last good state, SGLD step size -> 0.5, noise -> 0.00354')]]"
)
REFERENCE_PARAM_SUM = -1.9944114214595174
