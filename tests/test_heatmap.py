"""Heat maps (``mechscope.report.heatmap``): PNG and self-contained HTML from a spec alone.

No model is involved: every spec is built here with numpy, the way ``PatchResult._plot_spec``
builds one.
"""

from __future__ import annotations

import ast
import html
import json
import re
import struct
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from mechscope.errors import ArtifactError
from mechscope.report import heatmap, heatmap_spec
from mechscope.report import heatmap_png as heatmap_png_module
from mechscope.report.heatmap import heatmap_html, heatmap_png

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TOKENS = ["<|im_start|>", " When", " Mary", " and", " John", " went", " to", " the", " store", ",", " John"]
POS = [f"{i}: {t!r}" for i, t in enumerate(TOKENS)]


def _spec(values, *axes, centered: bool = True, title: str = "test map", value_label: str = "metric"):
    return {
        "values": np.asarray(values),
        "axes": [(name, list(labels)) for name, labels in axes],
        "title": title,
        "value_label": value_label,
        "centered": centered,
    }


def _layers(n: int) -> tuple[str, list[str]]:
    return ("layer", [str(i) for i in range(n)])


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _rgb(path: Path) -> np.ndarray:
    from matplotlib.image import imread

    return np.asarray(imread(path))[..., :3]  # [H W 3] floats in 0..1


def _titles(page: str) -> list[str]:
    """Unescaped text of every SVG ``<title>`` (the no-JS tooltips)."""
    return [html.unescape(t) for t in re.findall(r"<title>(.*?)</title>", page, re.S)][
        1:
    ]  # [0] is the page's


def _json_block(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="hm-data">(.*?)</script>', page, re.S)
    assert m, "no JSON data block"
    return json.loads(m.group(1))


class _Structure(HTMLParser):
    """Checks that every non-void element is closed in order."""

    VOID = frozenset({"meta", "input", "br", "img", "link", "hr", "wbr"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.seen: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.seen.append(tag)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def _check_structure(page: str) -> _Structure:
    assert page.startswith("<!DOCTYPE html>")
    parser = _Structure()
    parser.feed(page)
    parser.close()
    assert not parser.errors, parser.errors[:5]
    assert not parser.stack, f"unclosed: {parser.stack}"
    return parser


# ------------------------------------------------------------------------------ PNG


def test_png_2d_layer_position_puts_layer_zero_on_top(tmp_path):
    values = -np.ones((12, len(POS)), dtype=np.float32)
    values[0] = 1.0  # only layer 0 is positive: red in the diverging map
    out = heatmap_png(_spec(values, _layers(12), ("pos", POS)), tmp_path / "lp.png")
    assert out == tmp_path / "lp.png"
    width, height = _png_size(out)
    assert 500 <= width <= 4000 and 300 <= height <= 4000
    rgb = _rgb(out)[:, : int(width * 0.75)]  # leave out the colour bar on the right
    red = (rgb[..., 0] > 0.35) & (rgb[..., 1] < 0.15) & (rgb[..., 2] < 0.2)  # the dark red end of RdBu_r
    blue = (rgb[..., 2] > 0.3) & (rgb[..., 0] < 0.1)
    assert red.sum() > 500 and blue.sum() > 10 * red.sum()
    red_rows, blue_rows = np.nonzero(red)[0], np.nonzero(blue)[0]
    assert red_rows.max() < blue_rows.min(), "layer 0 is not the top row"


def test_png_1d_components_and_long_vector(tmp_path):
    names = ["embed"] + [f"L{i // 2} {'attn' if i % 2 == 0 else 'mlp'}" for i in range(60)]
    rng = np.random.default_rng(0)
    short = heatmap_png(_spec(rng.normal(size=61), ("component", names)), tmp_path / "c.png")
    long = heatmap_png(_spec(rng.normal(size=1536), ("neuron", map(str, range(1536)))), tmp_path / "n.png")
    for path in (short, long):
        width, height = _png_size(path)
        assert width <= 4000 and height <= 4000


def test_png_3d_panels_and_large_last_axis(tmp_path):
    rng = np.random.default_rng(1)
    heads = ("head", [str(h) for h in range(12)])
    small = heatmap_png(
        _spec(rng.normal(size=(12, len(POS), 12)), _layers(12), ("pos", POS), heads), tmp_path / "a.png"
    )
    many = ("head", [str(h) for h in range(40)])
    large = heatmap_png(
        _spec(rng.normal(size=(4, 5, 40)), _layers(4), ("pos", POS[:5]), many), tmp_path / "b.png"
    )
    for path in (small, large):
        width, height = _png_size(path)
        assert width <= 4000 and height <= 4000
    # twelve panels need more room than the one reduced panel
    assert _png_size(small)[0] * _png_size(small)[1] > 1.5 * _png_size(large)[0] * _png_size(large)[1]


def test_png_nans_and_infs_render(tmp_path):
    values = np.linspace(-1, 1, 30).reshape(5, 6)
    values[1, 2] = np.nan
    values[0, 0] = np.inf
    values[4, 5] = -np.inf
    _png_size(heatmap_png(_spec(values, _layers(5), ("head", map(str, range(6)))), tmp_path / "nan.png"))
    all_nan = np.full((3, 4), np.nan)
    _png_size(heatmap_png(_spec(all_nan, _layers(3), ("head", map(str, range(4)))), tmp_path / "all.png"))
    _png_size(heatmap_png(_spec([np.nan, 1.0, -2.0], ("component", ["a", "b", "c"])), tmp_path / "bars.png"))


def test_png_nan_cell_is_grey_not_a_colour(tmp_path):
    values = np.full((3, 3), 0.5)
    values[1, 1] = np.nan
    out = heatmap_png(
        _spec(values, _layers(3), ("head", ["0", "1", "2"]), centered=False), tmp_path / "g.png"
    )
    rgb = _rgb(out)
    grey = (np.abs(rgb[..., 0] - rgb[..., 1]) < 0.02) & (np.abs(rgb[..., 1] - rgb[..., 2]) < 0.02)
    grey &= (rgb[..., 0] > 0.7) & (rgb[..., 0] < 0.85)  # the NaN grey, neither white nor text
    assert grey.sum() > 400


def test_png_wide_neuron_grid_stays_bounded(tmp_path):
    values = np.random.default_rng(2).normal(size=(30, 1536)).astype(np.float32)
    out = heatmap_png(_spec(values, _layers(30), ("neuron", map(str, range(1536)))), tmp_path / "n.png")
    width, height = _png_size(out)
    assert 1536 < width <= 4000 and height <= 4000  # wide enough that every neuron gets a pixel
    huge = np.random.default_rng(3).normal(size=(2, 20000))
    width, height = _png_size(
        heatmap_png(_spec(huge, _layers(2), ("neuron", map(str, range(20000)))), tmp_path / "h.png")
    )
    assert width <= 4000 and height <= 4000


def test_pooling_keeps_the_peak():
    a = np.zeros((2, 10))
    a[1, 7] = -5.0
    a[0, 2] = np.nan
    pooled, labels = heatmap_png_module._pool(a, tuple(map(str, range(10))), 1, 4)
    assert pooled.shape == (2, 3)
    assert pooled[1, 1] == -5.0  # signed value of the largest |value| in block 4..7
    assert labels == ("0–3", "4–7", "8–9")
    assert pooled[0, 0] == 0.0  # a NaN does not win over a value


def test_png_labels_with_mathtext_characters(tmp_path):
    labels = ["$", "$\\frac{$", "a_b^c", "50% & $x$"]
    out = heatmap_png(
        _spec(np.eye(4), ("pos", labels), ("head", labels), title="$\\frac{"), tmp_path / "m.png"
    )
    _png_size(out)


# ----------------------------------------------------------------------------- HTML


def test_html_escapes_labels_and_title(tmp_path):
    nasty = "<b>&'x\""
    spec = _spec(
        np.arange(4.0).reshape(2, 2),
        ("layer", ["0", nasty]),
        ("pos", ["<|im_start|>", "a&b"]),
        title="<i>t</i>",
        value_label="<v>",
    )
    page = heatmap_html(spec, tmp_path / "e.html").read_text(encoding="utf-8")
    assert html.escape(nasty, quote=True) in page
    for raw in (nasty, "<b>", "<|im_start|>", "<i>t</i>", "<v>"):
        assert raw not in page, raw
    assert "&lt;|im_start|&gt;" in page
    _check_structure(page)
    assert _json_block(page)["axes"][0]["labels"] == ["0", nasty]


def test_html_every_cell_value_in_its_tooltip(tmp_path):
    values = (np.arange(12, dtype=np.float32) * 0.125 - 0.75).reshape(3, 4)
    values[2, 3] = np.nan
    rows, cols = ["0", "1", "2"], POS[:4]
    page = heatmap_html(_spec(values, ("layer", rows), ("pos", cols)), tmp_path / "v.html").read_text()
    titles = _titles(page)
    assert len(titles) == 12
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            text = "NaN" if np.isnan(values[i, j]) else str(values[i, j])
            assert f"layer {r}\npos {c}\nmetric = {text}" in titles, (i, j, text)
    data = _json_block(page)
    assert data["shape"] == [3, 4]
    assert data["values"][:3] == [-0.75, -0.625, -0.5] and data["values"][-1] == "NaN"


def test_html_rows_top_to_bottom_and_diverging_colours(tmp_path):
    values = np.array([[1.0, 0.0], [-1.0, np.nan]])
    page = heatmap_html(_spec(values, _layers(2), ("head", ["0", "1"])), tmp_path / "c.html").read_text()
    rects = re.findall(
        r'<rect x="([\d.]+)" y="([\d.]+)"[^>]*fill="#(\w{6})"><title>(.*?)</title>', page, re.S
    )
    assert len(rects) == 4
    cells = {
        html.unescape(t).split("\n")[-1]: (float(y), tuple(int(f[k : k + 2], 16) for k in (0, 2, 4)))
        for _, y, f, t in rects
    }
    (y_pos, red), (y_neg, blue) = cells["metric = 1.0"], cells["metric = -1.0"]
    _, white = cells["metric = 0.0"]
    _, grey = cells["metric = NaN"]
    assert y_pos < y_neg, "layer 0 must be drawn above layer 1"
    assert red[0] > 90 and red[0] > 2 * red[2] and red[1] < 40, red
    assert blue[2] > 80 and blue[0] < 40, blue
    assert min(white) > 230, white
    assert max(grey) - min(grey) < 5 and 150 < grey[0] < 230, grey


def test_html_is_self_contained_and_well_formed(tmp_path):
    rng = np.random.default_rng(4)
    for name, spec in {
        "2d": _spec(rng.normal(size=(5, 4)), _layers(5), ("head", map(str, range(4)))),
        "1d": _spec(rng.normal(size=7), ("component", map(str, range(7)))),
        "1d_long": _spec(rng.normal(size=300), ("neuron", map(str, range(300))), centered=False),
        "3d": _spec(rng.normal(size=(2, 3, 4)), _layers(2), ("pos", POS[:3]), ("head", map(str, range(4)))),
    }.items():
        page = heatmap_html(spec, tmp_path / f"{name}.html").read_text(encoding="utf-8")
        assert "http://" not in page and "https://" not in page, name
        assert "<link" not in page and " src=" not in page, name
        parser = _check_structure(page)
        assert parser.seen.count("h1") == 1 and "svg" in parser.seen and "table" in parser.seen, name
        assert page.count("<script") == 2 and page.count("</script>") == 2, name


def test_html_label_cannot_close_the_script_block(tmp_path):
    evil = "</script><script>alert(1)</script>"
    spec = _spec([0.5, -0.25], ("pos", [evil, "</SCRIPT >"]))
    page = heatmap_html(spec, tmp_path / "s.html").read_text(encoding="utf-8")
    assert page.lower().count("</script") == 2  # the JSON block's and the script's own
    assert "<script>alert" not in page
    assert _json_block(page)["axes"][0]["labels"] == [evil, "</SCRIPT >"]
    _check_structure(page)


def test_html_top_cells_table_is_sorted_by_magnitude(tmp_path):
    values = np.arange(30, dtype=np.float64).reshape(5, 6) / 10 - 1.0
    values[3, 1] = -9.0
    values[0, 0] = np.nan
    page = heatmap_html(
        _spec(values, _layers(5), ("head", map(str, range(6)))), tmp_path / "t.html"
    ).read_text()
    table = re.search(r'<table class="hm-table">(.*?)</table>', page, re.S).group(1)
    rows = re.findall(r"<tr><td class=\"num\">(\d+)</td>(.*?)</tr>", table, re.S)
    assert len(rows) == heatmap_spec.TOP_CELLS
    shown = [float(html.unescape(re.findall(r"</span>(.*?)</td>", r)[0])) for _, r in rows]
    assert shown[0] == -9.0 and re.findall(r'class="lab">(.*?)</td>', rows[0][1]) == ["3", "1"]
    assert [abs(v) for v in shown] == sorted((abs(v) for v in shown), reverse=True)
    finite = values[np.isfinite(values)]
    assert sorted(np.abs(finite))[::-1][: heatmap_spec.TOP_CELLS] == [abs(v) for v in shown]


def test_html_3d_one_grid_per_head_or_a_reduction(tmp_path):
    rng = np.random.default_rng(5)
    few = _spec(rng.normal(size=(3, 4, 6)), _layers(3), ("pos", POS[:4]), ("head", map(str, range(6))))
    page = heatmap_html(few, tmp_path / "few.html").read_text()
    assert page.count('<svg class="hm-grid"') == 6
    assert "head 5" in page and _json_block(page)["reduced"] is None

    values = np.zeros((3, 4, 40))
    values[1, 2, 33] = -7.0
    many = _spec(values, _layers(3), ("pos", POS[:4]), ("head", map(str, range(40))))
    page = heatmap_html(many, tmp_path / "many.html").read_text()
    assert page.count('<svg class="hm-grid"') == 1
    assert "max |value| over head" in html.unescape(page)
    assert "layer 1\npos " + POS[2] + "\nmax |value| over head at head 33\nmetric = -7.0" in _titles(page)
    reduced = _json_block(page)["reduced"]
    assert reduced["values"][1 * 4 + 2] == -7.0 and reduced["argmax"][1 * 4 + 2] == 33


def test_html_large_grid_is_one_image_and_stays_small(tmp_path):
    values = np.random.default_rng(6).normal(size=(30, 1536)).astype(np.float32)
    out = heatmap_html(_spec(values, _layers(30), ("neuron", map(str, range(1536)))), tmp_path / "n.html")
    page = out.read_text()
    assert page.count("data:image/png;base64,") == 1
    assert "<rect x" not in page.split('class="hm-grid"')[1].split("</svg>")[0].split("<image")[0]
    assert out.stat().st_size < 3_000_000
    assert len(_json_block(page)["values"]) == 30 * 1536


# ------------------------------------------------------------------ validation, files


@pytest.mark.parametrize(
    ("values", "axes", "match"),
    [
        (
            np.zeros((2, 3)),
            [("layer", ["0", "1"]), ("pos", ["a", "b"])],
            r"axis 1 \('pos'\) has 2 labels .* 3",
        ),
        (np.zeros((2, 2, 2, 2)), [("a", ["0", "1"])] * 4, "1, 2 or 3 dimensions"),
        (np.zeros((0, 3)), [("layer", []), ("pos", ["a", "b", "c"])], "empty"),
        (
            np.zeros(3),
            [("layer", ["0", "1", "2"]), ("pos", ["a"])],
            "one \\(name, labels\\) pair per dimension",
        ),
        (np.array(["a", "b"]), [("x", ["0", "1"])], "numeric"),
        (np.zeros(2), [("x", "ab")], "labels must be a list"),
        (np.float64(1.0), [], "1, 2 or 3 dimensions"),
    ],
)
def test_bad_specs_raise_and_write_nothing(tmp_path, values, axes, match):
    spec = {"values": values, "axes": axes, "title": "t", "value_label": "v", "centered": True}
    for fn, name in ((heatmap_png, "x.png"), (heatmap_html, "x.html")):
        with pytest.raises(ArtifactError, match=match):
            fn(spec, tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_missing_keys_raise(tmp_path):
    with pytest.raises(ArtifactError, match="values"):
        heatmap_png({"axes": []}, tmp_path / "x.png")
    with pytest.raises(ArtifactError, match="dict"):
        heatmap_html([1, 2], tmp_path / "x.html")  # type: ignore[arg-type]


def test_writes_are_atomic_and_leave_no_temp_files(tmp_path):
    spec = _spec(np.eye(3), _layers(3), ("head", ["0", "1", "2"]))
    (tmp_path / "old.png").write_bytes(b"previous")
    with pytest.raises(ArtifactError):
        heatmap_png({**spec, "values": np.zeros((3, 4))}, tmp_path / "old.png")
    assert (tmp_path / "old.png").read_bytes() == b"previous"  # a failed render keeps the old file
    heatmap_png(spec, tmp_path / "old.png")
    heatmap_html(spec, tmp_path / "sub" / "map.html")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["map.html", "old.png", "sub"]
    assert (tmp_path / "old.png").read_bytes().startswith(PNG_MAGIC)


def test_heatmap_module_imports_no_torch():
    tree = ast.parse(Path(heatmap.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            imported.add(node.module.split(".")[0])
    assert not imported & {"torch", "transformers", "mechscope"}, imported
