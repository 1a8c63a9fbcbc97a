"""Check the built book as a reader with no network would see it.

    python .ci/check_html.py [_build/html]

Static checks (always): every chapter page references the MathJax copy shipped in ``_static`` and no
script or stylesheet of another host; the report page holds a table with one row per result item
(``energyad.report.items()``); the comparison page's generated tables are HTML tables; no page shows a
Markdown table as text (a paragraph of pipes). Rendered checks (when Chromium is installed): each
chapter is loaded headless with the network off, and the DOM after MathJax has run must hold typeset
math containers and no raw ``\\(`` or ``\\[`` left in the text. Exit 1 on any failure, with the reasons.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

CHAPTERS = ("foundations", "genc", "dehaene", "matsubara", "kinder", "compare", "report", "performance")
MATH_CHAPTERS = ("foundations", "genc", "dehaene", "matsubara", "kinder")


class _Scan(HTMLParser):
    def __init__(self):
        super().__init__()
        self.external, self.scripts, self.tables, self._table, self._in_script = [], [], [], None, False
        self._pre = 0                                   # inside <pre>: code, not prose
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        url = a.get("src") if tag in ("script", "img", "iframe") else a.get("href") if tag == "link" else None
        if tag == "script":
            self._in_script = True
            if a.get("src"):
                self.scripts.append(a["src"])
        if url and re.match(r"^(https?:)?//", url) and (tag != "link" or a.get("rel", "") in ("stylesheet", "preload")
                                                         or "stylesheet" in str(a.get("rel"))):
            self.external.append(f"<{tag}> {url}")
        if tag == "pre":
            self._pre += 1
        if tag == "table":
            self._table = {"rows": 0, "caption": ""}
        if tag == "tr" and self._table is not None:
            self._table["rows"] += 1

    def handle_endtag(self, tag):
        if tag == "table" and self._table is not None:
            self.tables.append(self._table)
            self._table = None
        if tag == "script":
            self._in_script = False
        if tag == "pre":
            self._pre = max(0, self._pre - 1)

    def handle_data(self, data):
        if not self._in_script and not self._pre:
            self.text.append(data)


def scan(path: Path) -> _Scan:
    s = _Scan()
    s.feed(path.read_text(encoding="utf-8"))
    return s


def static_checks(html: Path) -> list[str]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from energyad.report import items

    fails = []
    if not (html / "_static" / "mathjax" / "tex-chtml.js").is_file():
        fails.append("_static/mathjax/tex-chtml.js is missing: the build ships no MathJax")
    for name in CHAPTERS:
        page = html / "book" / f"{name}.html"
        if not page.is_file():
            fails.append(f"{page} is missing")
            continue
        s = scan(page)
        if s.external:
            fails.append(f"{name}: fetches from another host: {', '.join(sorted(set(s.external))[:5])}")
        if name in MATH_CHAPTERS and not any("mathjax/tex-chtml.js" in src for src in s.scripts):
            fails.append(f"{name}: does not load the local MathJax (_static/mathjax/tex-chtml.js)")
        text = "".join(s.text)
        if re.search(r"\|\s*-{3,}\s*\|", text):
            fails.append(f"{name}: a Markdown table is shown as text (a paragraph of pipes and dashes)")
        if name == "report":
            n = len(items())
            if not any(t["rows"] == n + 1 for t in s.tables):
                fails.append(f"report: no table with one row per result item ({n} items + header); "
                             f"tables have {[t['rows'] for t in s.tables]} rows")
        if name == "performance" and len(s.tables) < 3:
            fails.append(f"performance: expected the bench's three tables as HTML tables, found {len(s.tables)}")
        if name == "compare" and len(s.tables) < 2:
            fails.append(f"compare: expected its generated tables as HTML tables, found {len(s.tables)}")
    return fails


def rendered_checks(html: Path) -> tuple[list[str], str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        return [], "Chromium not found: rendered checks skipped (apt-get install chromium to run them)"
    fails = []
    for name in MATH_CHAPTERS:
        page = (html / "book" / f"{name}.html").resolve()
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--proxy-server=127.0.0.1:9",
               "--proxy-bypass-list=<-loopback>", "--virtual-time-budget=20000", "--dump-dom", page.as_uri()]
        try:
            dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
        except subprocess.TimeoutExpired:
            fails.append(f"{name}: Chromium timed out")
            continue
        typeset = dom.count("<mjx-container")
        body = re.sub(r"<script.*?</script>|<mjx-container.*?</mjx-container>", "", dom, flags=re.S)
        body = re.sub(r"<(pre|code)\b.*?</\1>", "", body, flags=re.S)   # code may contain backslashes
        raw = len(re.findall(r"\\\(|\\\[", re.sub(r"<[^>]+>", "", body)))
        if typeset == 0:
            fails.append(f"{name}: no typeset math in the rendered page")
        if raw:
            fails.append(f"{name}: {raw} raw \\( or \\[ left in the rendered text")
        print(f"  {name}: {typeset} typeset expressions, {raw} raw")
    return fails, f"rendered checks with {browser} (network off)"


def main(argv=None) -> int:
    html = Path((argv or sys.argv[1:] or ["_build/html"])[0])
    fails = static_checks(html)
    more, how = rendered_checks(html)
    print(how)
    fails += more
    for f in fails:
        print("FAIL", f)
    print("html check:", "ok" if not fails else f"{len(fails)} failures")
    return 1 if fails else 0


if __name__ == "__main__":
    raise SystemExit(main())
