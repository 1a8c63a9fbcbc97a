"""The comparison: every method behind one interface, worst cases against a brute-force ranking, the
summary's mean and standard deviation over seeds against numpy."""
import numpy as np
import pytest
import torch

from energyad.experiments import compare as cmp
from energyad.experiments import compare_tables as ct

TINY = cmp.MethodSettings(genc_iterations=2, genc_sgld_steps=2, ae_epochs=1, projection_steps=2, vae_epochs=1,
                          iem_epochs=1)


@pytest.mark.parametrize("method", cmp.METHODS)
def test_every_method_fits_scores_and_maps_through_the_interface(method):
    g = torch.Generator().manual_seed(0)
    x_tr, x_te = torch.rand(16, 1, 28, 28, generator=g), torch.rand(10, 1, 28, 28, generator=g)
    y = torch.tensor([0, 1] * 5)
    m = torch.zeros(10, 1, 28, 28)
    m[1::2, :, 5:9, 5:9] = 1
    r = cmp.evaluate(method, x_tr, x_te, y, m, TINY, "cpu", require_health=False)   # tiny: health only recorded
    assert len(r["scores"]) == 10 and 0 <= r["image_auroc"] <= 1 and r["fit_seconds"] >= 0
    assert r["image_ci"]["low"] <= r["image_auroc"] <= r["image_ci"]["high"]
    assert ("pixel_auroc" in r) == (method != "kinder-bn")          # the pixel BN has no anomaly map
    assert ("health" in r) == (method != "kinder-bn")                # counting has nothing to go wrong


def test_build_refuses_what_a_method_cannot_do():
    with pytest.raises(ValueError, match="binary grayscale"):
        cmp.build("kinder-bn", 3, 32, TINY)
    with pytest.raises(ValueError, match="unknown method"):
        cmp.build("patchcore", 1, 28, TINY)
    with pytest.raises(ValueError, match="32, 64 or 128"):
        cmp.build("dehaene", 1, 48, TINY)


def test_worst_cases_against_sorting_by_hand():
    scores = torch.tensor([0.1, 0.9, 0.5, 0.3, 0.8, 0.2, 0.7])
    y = torch.tensor([0, 0, 1, 0, 1, 1, 0])
    fp, fn = cmp.worst_cases(scores, y, k=2)
    assert fp.tolist() == [1, 6] and fn.tolist() == [5, 2]      # normals by falling score, anomalies by rising


def test_summary_means_over_units_then_seeds():
    per_unit = {"a": {"m": [{"x": 0.6}, {"x": 0.8}]}, "b": {"m": [{"x": 1.0}, {"x": 0.4}]}}
    s = cmp._summarise(per_unit, ("m",), "x")["m"]
    per_seed = [np.mean([0.6, 1.0]), np.mean([0.8, 0.4])]
    assert s["mean"] == pytest.approx(np.mean(per_seed)) and s["std_over_seeds"] == pytest.approx(np.std(per_seed))
    assert s["by_unit"] == {"a": pytest.approx(0.7), "b": pytest.approx(0.7)}


def test_run_mnist_reports_paired_intervals_and_budgets_and_drops_the_scores(one_thread):
    import dataclasses

    rng = np.random.default_rng(1)
    x = ((rng.random((120, 28, 28)) > 0.7) * 255).astype(np.uint8)
    yl = np.arange(120) % 3
    s = dataclasses.replace(cmp.COMPARE_MNIST_QUICK, digits=(0, 1), n_train=20, n_test=30, seeds=(0, 1),
                            methods=("kinder-bn", "matsubara"), method_settings=TINY)
    s = dataclasses.replace(s, methods=("kinder-bn", "kinder-iem"))
    res = cmp.run_mnist(s, "cpu", None, ((x, yl), (x, yl)))
    iv = res["intervals"]
    assert set(iv["methods"]) == {"kinder-bn", "kinder-iem"} and list(iv["differences"]) == ["kinder-bn - kinder-iem"]
    for m, v in iv["methods"].items():
        assert v["low"] <= v["mean"] <= v["high"]
        assert v["mean"] == pytest.approx(res["auroc"][m]["mean"], abs=1e-9)   # seed-averaged, as the summary
    assert "counting" in res["budget"]["kinder-bn"] and "1 epochs" in res["budget"]["kinder-iem"]
    assert "scores" not in str(res)


def test_a_model_that_fails_its_health_checks_stops_the_comparison(one_thread):
    from energyad.health import DegenerateModelError

    g = torch.Generator().manual_seed(0)
    x_tr, x_te = torch.rand(16, 1, 32, 32, generator=g), torch.rand(10, 1, 32, 32, generator=g)
    with pytest.raises(DegenerateModelError, match="in the comparison"):
        cmp.evaluate("dehaene", x_tr, x_te, torch.tensor([0, 1] * 5), None, TINY, "cpu")   # one epoch: no curve


def test_verdicts_follow_the_intervals_and_rows_carry_them():
    assert ct.verdict({"low": 0.01, "high": 0.05}, "a", "b") == "a ahead"
    assert ct.verdict({"low": -0.05, "high": -0.01}, "a", "b") == "b ahead"
    assert ct.verdict({"low": -0.01, "high": 0.02}, "a", "b").startswith("tie")
    iv = {"methods": {}, "differences": {"genc - dehaene": {"difference": 0.03, "low": -0.01, "high": 0.07}}}
    assert ct.pair_rows(iv) == [{"pair": "genc − dehaene", "difference (points) [95% interval]": "+3.0 [-1.0, +7.0]",
                                  "verdict": "tie (the interval contains 0)"}]
    assert {r["source"] for r in ct.reference_rows("mvtec")} == {"roth2022patchcore", "defard2021padim"}


def test_a_failing_model_is_recorded_and_the_others_go_on(monkeypatch, one_thread):
    import dataclasses

    from energyad.health import DegenerateModelError

    real_evaluate = cmp.evaluate

    def evaluate(method, *a, **k):
        if method == "kinder-iem":
            raise DegenerateModelError("kinder-iem (test) failed its health checks: energy_spread = 0.0")
        return real_evaluate(method, *a, **k)

    monkeypatch.setattr(cmp, "evaluate", evaluate)
    rng = np.random.default_rng(1)
    x = ((rng.random((120, 28, 28)) > 0.7) * 255).astype(np.uint8)
    yl = np.arange(120) % 3
    s = dataclasses.replace(cmp.COMPARE_MNIST_QUICK, digits=(0, 1), n_train=20, n_test=30, seeds=(0,),
                            methods=("kinder-bn", "kinder-iem"), method_settings=TINY)
    res = cmp.run_mnist(s, "cpu", None, ((x, yl), (x, yl)))
    assert set(res["failed_health"]["kinder-iem"]) == {"0", "1"}
    assert list(res["intervals"]["methods"]) == ["kinder-bn"] and "kinder-iem" in res["intervals"]["excluded"]
    rows = ct.mnist_rows(res)
    assert any("failed its health checks on 0, 1" in r["mean AUROC % [95% interval]"] for r in rows)


def test_compare_mvtec_runs_on_an_unseen_category_with_pixel_numbers(carpet_data_root, monkeypatch, one_thread):
    from energyad import health

    monkeypatch.setattr(health.Health, "raise_if_failed", lambda self, where="": None)   # tiny: code path only
    s = cmp.CompareMvtecSettings(image_size=32, synthetic=False, seeds=(0,), methods=("kinder-iem", "matsubara"),
                                 n_train=16, mask_size=64, method_settings=TINY)
    res = cmp.run_mvtec(s, "cpu")
    assert list(res["image_intervals"]) == ["carpet"] and res["masks"]["carpet"] == "ground truth at 64 px"
    for m in s.methods:
        assert 0 <= res["pixel_auroc"][m]["by_unit"]["carpet"] <= 1 and 0 <= res["aupro"][m]["by_unit"]["carpet"] <= 1
        assert res["pixel_ci_seed0"][m]["carpet"]["low"] <= res["pixel_ci_seed0"][m]["carpet"]["high"]


def test_failure_reasons_are_short_and_separation_is_strict():
    msg = ("VAE (matsubara in the comparison, seed 1) failed its health checks: output_dependence = "
           "0.037512 (rule: > 0.1). Its scores are not reported. Fix: train longer")
    assert ct._reason(msg) == "output_dependence = 0.037 (rule: > 0.1)"
    assert ct.separated({"low": 0.8, "high": 0.9}, {"low": 0.6, "high": 0.79})
    assert not ct.separated({"low": 0.8, "high": 0.9}, {"low": 0.6, "high": 0.8})
