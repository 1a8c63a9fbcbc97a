"""kinder-iem-mvtec on data it was not written for: a data root holding only an unseen real-layout
category with masks (here a tiny "carpet"), no category at all (the synthetic fallback, with a notice),
and a run stopped by ``--max-minutes`` inside a category that resumes to the uninterrupted numbers."""
import dataclasses
import json

import pytest
import torch

from energyad.data.synthetic import write_synthetic_mvtec
from energyad.experiments import kinder_iem as exp
from energyad.experiments import STAND_IN_NOTICE, resume, runner

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny_quick(monkeypatch, **changes):
    """The quick profile's category selection (real with masks, capped; bottle if present; synthetic
    fallback) with a tiny model: 32 px, 2 epochs, batches of 2, masks at 64 px."""
    q = exp.IEM_MVTEC_QUICK
    s = dataclasses.replace(q, synthetic=False, mask_size=64,
                            iem=dataclasses.replace(q.iem, image_size=32, epochs=2, batch_size=2), **changes)
    monkeypatch.setattr(exp, "IEM_MVTEC_QUICK", s)
    return s


@pytest.fixture
def carpet_root(make_data_root):
    """The conftest's carpet-only data root at 48 px (3 good and 1 defective test image)."""
    return make_data_root(size=48, n_test_good=3, n_test_defect=1, seed=5)


def _numbers(res: dict) -> dict:
    m = dict(res["metrics"])
    m.pop("seconds_per_category")
    return m


def test_quick_profile_runs_on_an_unseen_category_with_pixel_numbers(tmp_path, carpet_root, monkeypatch):
    _tiny_quick(monkeypatch)
    res = runner.run("kinder-iem-mvtec", "quick", tmp_path / "out", "cpu")
    m = res["metrics"]
    assert m["real_categories_with_masks"] == ["carpet"] and not m["stand_in_only"]
    assert set(m["image_auroc"]) | set(m["withheld"]) == {"carpet"}       # nothing assumes bottle/screw/transistor
    assert set(m["health"]) == {"carpet"} and "energy_spread" in m["health"]["carpet"]["checks"]
    if m["health"]["carpet"]["ok"]:
        assert 0 <= m["pixel_auroc"]["carpet"] <= 100 and 0 <= m["aupro"]["carpet"] <= 100
        assert m["mask_size"]["carpet"] == 64 and m["sizes"] == {"image": 32, "masks": 64}
        assert set(m["image_auroc_by_normalisation"]["carpet"]) == set(exp.NORMALISATIONS)
    text = (tmp_path / "out" / "kinder-iem-mvtec.json").read_text()
    assert str(carpet_root) not in text and "$ENERGYAD_DATA/mvtec_ad" in json.loads(text)["provenance"]["data"]
    assert (tmp_path / "out" / "kinder-iem-mvtec-maps-carpet.png").is_file()


def test_no_real_category_falls_back_to_the_synthetic_ones_with_a_notice(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ENERGYAD_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("ENERGYAD_CACHE", str(tmp_path / "cache"))
    s = _tiny_quick(monkeypatch)
    cats = exp._mvtec_categories(s, announce=True)
    assert set(cats) == {"synthetic_texture", "synthetic_object"}
    assert STAND_IN_NOTICE.format(id="kinder-iem-mvtec") in capsys.readouterr().out
    from energyad.data import DataError
    with pytest.raises(DataError, match="No MVTec AD category"):
        exp._mvtec_categories(dataclasses.replace(s, synthetic_fallback=False))


def test_real_categories_capped_and_image_level_ones_added(tmp_path, monkeypatch):
    root = tmp_path / "data" / "mvtec_ad"
    for c, seed in (("grid", 1), ("tile", 2), ("wood", 3)):
        write_synthetic_mvtec(root, c, "texture", n_train=1, n_test_good=1, n_test_defect=1, size=16, seed=seed)
    write_synthetic_mvtec(root, "bottle", "object", n_train=1, n_test_good=1, n_test_defect=1, size=16)
    import shutil
    shutil.rmtree(root / "bottle" / "ground_truth")                         # like the shared copy's bottle
    monkeypatch.setenv("ENERGYAD_DATA", str(tmp_path / "data"))
    s = dataclasses.replace(exp.IEM_MVTEC_QUICK, synthetic=False)
    assert list(exp._mvtec_categories(s)) == ["grid", "tile", "bottle"]     # 2 with masks (MVTec order), bottle
    assert list(exp._mvtec_categories(dataclasses.replace(s, max_real_categories=None))) == \
        ["grid", "tile", "wood", "bottle"]


def test_a_run_stopped_inside_a_category_resumes_to_the_uninterrupted_numbers(tmp_path, carpet_root, monkeypatch,
                                                                                stop_after_steps):
    _tiny_quick(monkeypatch)
    straight = runner.run("kinder-iem-mvtec", "quick", tmp_path / "a", "cpu")
    # 6 training images, batches of 2: 3 steps per epoch, 2 epochs, 3 layers = 18 steps; stop at step 8
    # (layer 1, epoch 0, last batch: mid-epoch, after layer 0 finished)
    stop_after_steps(8)
    with pytest.raises(resume.StopForResume, match="carpet-iem-fit: stopped at step 8 of 18"):
        runner.run("kinder-iem-mvtec", "quick", tmp_path / "b", "cpu", max_minutes=1)
    partial = next((tmp_path / "b" / "checkpoints").rglob("carpet-iem-fit.partial.pt"))
    saved = torch.load(partial, weights_only=False)
    assert saved["progress"] == 8 and saved["state"]["schedule"]["history"][0] and \
        not saved["state"]["schedule"]["history"][1]                          # layer 0 done, layer 1 under way
    assert not (tmp_path / "b" / "kinder-iem-mvtec.json").exists()
    monkeypatch.setattr(resume, "deadline_reached", lambda: False)
    res = runner.run("kinder-iem-mvtec", "quick", tmp_path / "b", "cpu", max_minutes=1)
    assert res["provenance"]["resumed_units"] == ["carpet-iem-fit@8"] and res["provenance"]["calls"] == 2
    assert _numbers(res) == _numbers(straight)                                 # to the last bit, health included
    assert not partial.exists()
