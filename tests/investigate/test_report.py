"""The self-contained ``report.html`` of ``mechscope investigate``: sections, a link for every
measured number, no external references, robustness to missing artifacts and hostile text,
and a clean render in headless Chromium."""

from __future__ import annotations

import copy
import html
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from browser import page, serve
from mechscope.investigate.report_html import SECTIONS, render_report

IDS = [sid for sid, _ in SECTIONS]
HOSTILE = "<script>alert(1)</script>"


class _Tags(HTMLParser):
    """Every start tag with its attributes, and the section each ``a.num`` / ``p`` sits in."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.sections: list[str] = []
        self.nums: list[str] = []
        self.notes: dict[str, list[str]] = {}
        self._section, self._note, self._text = "", "", ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append((tag, a))
        if tag == "section":
            self._section = a.get("id", "")
            self.sections.append(self._section)
        if tag == "a" and "num" in a.get("class", "").split():
            self.nums.append(a.get("href", ""))
        if tag == "p" and a.get("class") in ("error", "not-run"):
            self._note = a["class"]

    def handle_data(self, data: str) -> None:
        if self._note:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "p" and self._note:
            self.notes.setdefault(self._section, []).append(f"{self._note}: {self._text}")
            self._note, self._text = "", ""


def parse(text: str) -> _Tags:
    p = _Tags()
    p.feed(text)
    return p


def measurements(obj: Any) -> list[dict[str, Any]]:
    """Every ``{"value", "source"}`` in the summary."""
    if isinstance(obj, dict):
        if set(obj) == {"value", "source"}:
            return [obj]
        return [m for v in obj.values() for m in measurements(v)]
    if isinstance(obj, list):
        return [m for v in obj for m in measurements(v)]
    return []


def render(run: Path, summary: dict[str, Any], title: str = "tiny") -> str:
    return render_report(run, summary, config_toml=(run / "config.toml").read_text(), title=title)


@pytest.fixture(scope="module")
def report(tiny_run) -> str:
    return (tiny_run / "report.html").read_text(encoding="utf-8")


def test_report_has_every_section_and_links_every_number(tiny_run, report):
    assert report == (tiny_run / "report" / "report.html").read_text(encoding="utf-8")
    tags = parse(report)
    assert tags.sections == IDS
    summary = json.loads((tiny_run / "summary.json").read_text())
    sources = {m["source"] for m in measurements(summary)}
    assert len(sources) >= 10  # every stage contributed
    assert sources <= set(tags.nums)
    assert len(tags.nums) >= len(measurements(summary))
    for href in set(tags.nums):  # every linked number names a file of the run
        assert (tiny_run / href).is_file(), href
    assert not tags.notes.get("summary"), tags.notes  # a complete run: no error or not-run notes
    for line in summary["headline"]:
        assert html.escape(line) in report


def test_report_makes_no_external_reference(report):
    tags = parse(report)
    imgs = [a["src"] for t, a in tags.tags if t == "img"]
    assert len(imgs) >= 5  # heat maps, graph, faithfulness curve, density
    assert all(src.startswith("data:image/png;base64,") for src in imgs)
    for tag, attrs in tags.tags:
        for name, value in attrs.items():
            if value.startswith("data:"):
                continue  # inlined: nothing to fetch
            assert not re.search(r"https?:|^//|url\(", value), (tag, name, value[:80])
        assert not (tag == "script" and "src" in attrs)
        assert not (tag == "link" and attrs.get("rel") != "icon")
    assert ("link", {"rel": "icon", "href": "data:,"}) in tags.tags
    for style in re.findall(r"<style>(.*?)</style>", report, re.S):
        assert "@import" not in style and not re.search(r"url\(\s*['\"]?(?!data:)", style)


def test_missing_artifacts_render_as_notes(tiny_run, tmp_path):
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    summary = json.loads((run / "summary.json").read_text())
    (run / summary["circuit"]["graph_png"]).unlink()
    (run / "localise" / "heads" / "values.safetensors").unlink()
    (run / "dictionaries" / "L0" / "density.png").write_bytes(b"not a png")
    summary["features"] = []  # the features stage did not run
    shutil.rmtree(run / "features")
    summary["checks"], summary["steering_examples"], summary["check_counts"] = [], [], None
    summary["environment"] = None
    out = render(run, summary)
    notes = parse(out).notes
    assert 'id="ms-circuit-graph"' in out and 'id="ms-result-0"' in out  # the rest still drawn
    assert not any("could not be drawn" in n for ns in notes.values() for n in ns), notes
    assert any("graph.png" in n and n.startswith("error") for n in notes["circuit"]), notes
    assert any("heat map unavailable" in n for n in notes["localise"]), notes
    assert any("not a PNG" in n for n in notes["dictionaries"]), notes
    assert any(n.startswith("not-run") and "features" in n for n in notes["features"]), notes
    assert any(n.startswith("not-run") and "checks" in n for n in notes["checks"]), notes
    assert len(notes["summary"]) == 2  # features and checks tables
    assert "evaluate" not in notes and "config" not in notes


def test_empty_summary_renders_every_section_as_not_run(tmp_path):
    (tmp_path / "config.toml").write_text("seed = 0\n")
    tags = parse(render(tmp_path, {"headline": [], "components": []}))
    assert tags.sections == IDS
    for sid in IDS[1:-2]:
        assert any(n.startswith("not-run") for n in tags.notes[sid]), sid


def test_hostile_text_is_escaped(tiny_run):
    summary = json.loads((tiny_run / "summary.json").read_text())
    hostile = copy.deepcopy(summary)
    hostile["features"][0]["explanation"] = HOSTILE
    hostile["checks"][0]["name"] = HOSTILE
    hostile["headline"].append(HOSTILE)
    hostile["components"][0]["component"] = HOSTILE
    hostile["steering_examples"][0]["after"][0] = HOSTILE
    hostile["components"][0]["effect"]["source"] = "javascript:alert(1)"
    hostile["features"][0]["page"] = "https://example.com/x.html"
    out = render(tiny_run, hostile, title=HOSTILE)
    assert HOSTILE not in out
    assert out.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 7  # title twice, and each field
    hrefs = [a.get("href", "") for t, a in parse(out).tags if t == "a"]
    assert not any(h.startswith(("javascript:", "https:")) for h in hrefs)


def test_report_in_chromium(tiny_run):
    with serve(tiny_run) as url, page() as pg:
        pg.goto(f"{url}/report.html")
        pg.wait_for_function(
            "document.querySelectorAll('#localise [data-component=heatmap] canvas').length >= 1"
            " && document.querySelectorAll('#circuit [data-component=graph] svg').length >= 1",
            timeout=15_000,
        )
        pg.wait_for_load_state("networkidle")
        assert pg.errors == []
        assert [r for r in pg.requests if not r.startswith("data:")] == [f"{url}/report.html"]
        for sid in IDS:
            assert pg.locator(f"section#{sid}").is_visible(), sid
        n_sweeps = len(json.loads((tiny_run / "summary.json").read_text())["localisation"])
        assert pg.locator("#localise [data-component=heatmap]").count() == n_sweeps
        assert pg.locator("#localise .error, #circuit .error").count() == 0
