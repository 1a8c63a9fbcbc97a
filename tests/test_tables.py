"""Result tables: real HTML tables with a caption, no index, status cells coloured."""
import pytest

from energyad import tables


def test_table_renders_html_with_caption_and_coloured_status():
    rows = [{"item": "Table 1", "ours": 0.8861, "status": "reproduced"},
            {"item": "Fig. 5", "ours": 0.5, "status": "did not reproduce"},
            {"item": "Fig. 9", "ours": None, "status": "not run"}]
    html = tables.table(rows, caption="quick profile, MNIST", status="status").to_html()
    assert html.count("<tr>") == 4 and "<caption>quick profile, MNIST</caption>" in html
    assert "0.886" in html and "—" in html                    # precision 3; missing value
    assert tables.STATUS_COLOURS["did not reproduce"] in html and tables.STATUS_COLOURS["reproduced"] in html
    assert ">0<" not in html                                   # no index column


def test_status_colour_picks_the_longest_match():
    assert tables.STATUS_COLOURS["did not reproduce"] in tables._status_css("did not reproduce (3 of 4)")
    assert tables.STATUS_COLOURS["reproduced"] in tables._status_css("reproduced")
    assert tables._status_css("something else") == ""


def test_bad_columns_are_named():
    with pytest.raises(KeyError, match="'x'"):
        tables.frame([{"a": 1}], columns=["a", "x"])
    with pytest.raises(KeyError, match="status column"):
        tables.table([{"a": 1}], status="status")
    assert list(tables.frame([(1, 2)], columns=["a", "b"]).columns) == ["a", "b"]
