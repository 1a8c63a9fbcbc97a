"""Rows of the comparison chapter's tables (for :func:`energyad.tables.table`), read from the result
files of ``compare-mnist`` and ``compare-mvtec``; rankings only where the paired intervals allow."""
from __future__ import annotations

from .compare import LABELS, REFERENCES


def _ci_text(mean, low, high, scale=100.0):
    return f"{scale * mean:.1f} [{scale * low:.1f}, {scale * high:.1f}]"


def verdict(d: dict, a: str, b: str) -> str:
    """"a ahead" / "b ahead" only when the paired interval of a - b excludes 0, else "tie"."""
    if d["low"] > 0:
        return f"{a} ahead"
    if d["high"] < 0:
        return f"{b} ahead"
    return "tie (the interval contains 0)"


def mnist_rows(m: dict) -> list[dict]:
    """One row per method of a compare-mnist result: mean AUROC with its paired bootstrap interval,
    the spread over seeds, the hardest digit, times, and what the method got to train on."""
    rows = []
    for meth, iv in m["intervals"]["methods"].items():
        a = m["auroc"][meth]
        worst = min(a["by_unit"], key=a["by_unit"].get)
        rows.append({"method": LABELS[meth], "mean AUROC % [95% interval]": _ci_text(iv["mean"], iv["low"], iv["high"]),
                     "std over seeds": f"{100 * a['std_over_seeds']:.1f}",
                     "hardest digit": f"{worst} ({100 * a['by_unit'][worst]:.1f})",
                     "training per digit (s)": f"{m['fit_seconds'][meth]['mean']:.1f}",
                     "scoring per image (ms)": f"{1000 * m['score_seconds_per_image'][meth]['mean']:.2f}",
                     "what it trained with": m["budget"][meth]})
    for meth, why in m["intervals"].get("excluded", {}).items():
        rows.append({"method": LABELS[meth], "mean AUROC % [95% interval]":
                     f"no number: failed its health checks on {', '.join(sorted(why))}",
                     "what it trained with": m["budget"][meth]})
    return rows


def pair_rows(intervals: dict) -> list[dict]:
    """Every pair of methods: the paired difference of mean AUROC with its interval, and the verdict."""
    rows = []
    for key, d in intervals["differences"].items():
        a, b = key.split(" - ")
        rows.append({"pair": f"{a} − {b}", "difference (points) [95% interval]":
                     f"{100 * d['difference']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]",
                     "verdict": verdict(d, a, b)})
    return rows


def mvtec_rows(m: dict) -> list[dict]:
    """One row per (category, method) of a compare-mvtec result: image AUROC [interval], pixel AUROC
    [interval over images, seed 0] and AUPRO, where the category has masks."""
    rows = []
    for c, iv in m["image_intervals"].items():
        for meth, v in iv["methods"].items():
            px = m["pixel_ci_seed0"].get(meth, {}).get(c)
            au = m["aupro"].get(meth, {}).get("by_unit", {}).get(c)
            rows.append({"category": c, "method": LABELS[meth],
                         "image AUROC % [95% interval]": _ci_text(v["mean"], v["low"], v["high"]),
                         "pixel AUROC % [95% interval]": "—" if px is None else _ci_text(px["auroc"], px["low"], px["high"]),
                         "AUPRO %": "—" if au is None else f"{100 * au:.1f}"})
        for meth, why in iv.get("excluded", {}).items():
            rows.append({"category": c, "method": LABELS[meth], "image AUROC % [95% interval]":
                         "no number: failed its health checks (" + _reason(why[c]) + ")"})
    return rows


def _reason(message: str) -> str:
    """The failing figures of a DegenerateModelError message: "output_dependence = 0.019 (rule: >= 0.3)"."""
    import re

    body = message.split("failed its health checks: ", 1)[-1].split(". Its scores", 1)[0]
    return re.sub(r"(\d+\.\d{3})\d+", r"\1", body)


def separated(ci_a: dict, ci_b: dict) -> bool:
    """True when interval a lies wholly above interval b (unpaired intervals: a conservative test)."""
    return ci_a["low"] > ci_b["high"]


def reference_rows(kind: str) -> list[dict]:
    """The outside reference numbers, quoted (not run), in rows of their own."""
    return [{"reference (quoted, not run)": name, "value %": v, "source": key}
            for name, (v, key) in REFERENCES[kind].items()]
