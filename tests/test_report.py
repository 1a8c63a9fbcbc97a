"""The reproduction report is generated from result files: statuses from the judges, "not run" without a
file, full results before quick ones, quick results never more than "partly"."""
import json

from energyad import report


def _write(folder, id, profile, metrics):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{id}.json").write_text(json.dumps({
        "experiment": id, "profile": profile, "metrics": metrics, "paper": {}, "config": {},
        "provenance": {"device": "cpu: test", "seconds": 1.0, "date": "2026-01-01T00:00:00", "commit": "abcdef012345",
                       "data": "test data"}}))


def _row(rows, ref, paper):
    return next(r for r in rows if r["ref"] == ref and r["paper"] == paper)


def test_without_result_files_everything_is_not_run_with_a_reason(tmp_path):
    rows = report.rows([tmp_path], committed=False)
    assert len(rows) == len(report.items()) and all(r["status"] == "not run" for r in rows)
    assert "SVHN" in _row(rows, "Sec. V-C", "Matsubara et al.")["provenance"]
    assert all(r["status"] in report.STATUSES for r in rows)


def test_judges_read_the_result_files(tmp_path):
    z = {"rec": 0.8, "grad": 0.7, "rec_x_grad": 0.8, "grad_kl": 0.6, "rec_x_grad_kl": 0.75}
    _write(tmp_path, "dehaene-zimmerer", "quick", {"a": {**z, "projection": 0.9}})
    _write(tmp_path, "kinder-bn-mnist", "full", {"mean_auroc": 86.7})
    _write(tmp_path, "kinder-bn-hidden-mnist", "full", {"mean_auroc": 85.0})
    rows = report.rows([tmp_path], committed=False)
    zr = _row(rows, "Table 2", "Dehaene et al.")
    assert zr["status"] == "partly" and zr["profile"] == "quick"          # beaten, but only in the quick profile
    assert "projection 0.900, best single score 0.800" in zr["ours"] and "test data" in zr["provenance"]
    assert _row(rows, "Table 1", "Kinder")["status"] == "reproduced"     # 86.7 is within 3 points of 89.4
    assert _row(rows, "Table 2", "Kinder")["status"] == "did not reproduce"   # 85.0 is 8 points below 93.0
    _write(tmp_path, "dehaene-zimmerer", "full", {"a": {**z, "projection": 0.7}})
    zr = _row(report.rows([tmp_path], committed=False), "Table 2", "Dehaene et al.")
    assert zr["profile"] == "full" and zr["status"] == "did not reproduce"   # full results take precedence


def test_paper_values_are_computed_from_the_tables_and_markdown_has_every_row(tmp_path):
    rows = report.rows([tmp_path], committed=False)
    assert _row(rows, "Table 1", "Dehaene et al.")["paper_value"] == "projection better in 54 of 60 cells"
    md = report.markdown([tmp_path], committed=False)
    assert md.count("\n") == len(rows) + 1 and md.count("**not run**") == len(rows)


def test_qualitative_figures_are_at_most_partly_and_context_is_listed(tmp_path):
    (tmp_path / "x.png").write_bytes(b"")
    _write(tmp_path, "kinder-bn-mnist", "full", {"mean_auroc": 89.0})
    data = json.loads((tmp_path / "kinder-bn-mnist.json").read_text())
    data["provenance"]["figures"] = ["kinder-bn-mnist-samples-1.png"]
    (tmp_path / "kinder-bn-mnist.json").write_text(json.dumps(data))
    rows = report.rows([tmp_path], committed=False)
    assert _row(rows, "Fig. 10", "Kinder")["status"] == "partly"
    assert _row(rows, "Table 1", "Kinder")["status"] == "reproduced"
    assert "Tables 4, 6" in report.context_markdown()
