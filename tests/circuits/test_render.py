"""Circuit rendering (``mechscope.circuits.render``): SVG, PNG and HTML from a circuit dict alone."""

from __future__ import annotations

import copy
import html
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from mechscope.circuits import render
from mechscope.circuits.render import layout, to_html, to_html_fragment, to_png, to_svg

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _circuit(n_layers: int = 2, n_heads: int = 2) -> dict:
    """A synthetic split-attention graph: every forward edge, a handful of them in the circuit."""
    nodes = [{"name": "input", "kind": "input", "layer": -1, "head": None}]
    for layer in range(n_layers):
        nodes += [
            {"name": f"a{layer}.h{h}", "kind": "head", "layer": layer, "head": h} for h in range(n_heads)
        ]
        nodes.append({"name": f"m{layer}", "kind": "mlp", "layer": layer, "head": None})
    nodes.append({"name": "logits", "kind": "logits", "layer": n_layers, "head": None})
    edges = []
    for i, src in enumerate(nodes):
        for dst in nodes[i + 1 :]:
            if src["kind"] == dst["kind"] == "head" and src["layer"] == dst["layer"]:
                continue  # heads of one layer do not read each other
            ports = ["q", "k", "v"] if dst["kind"] == "head" else [None]
            for port in ports:
                name = f"{src['name']}->{dst['name']}" + (f"<{port}>" if port else "")
                edges.append(
                    {"name": name, "source": src["name"], "target": dst["name"], "port": port, "score": 0.0}
                )
    # deterministic scores of both signs; every fifth edge in the circuit
    for i, e in enumerate(edges):
        e["score"] = round(((i * 37) % 23 - 11) / 10.0, 3)
        e["in_circuit"] = i % 5 == 0
    return {
        "kind": "circuit",
        "schema_version": 1,
        "model": "toy/compiled_induction",
        "task": "induction",
        "method": "eap-ig",
        "settings": {"steps": 5},
        "ablation": "corrupted",
        "metric": "logit_diff",
        "n_layers": n_layers,
        "n_heads": n_heads,
        "nodes": nodes,
        "edges": edges,
    }


def _edge_elements(svg: str) -> list[ET.Element]:
    root = ET.fromstring(svg)
    return [el for el in root.iter() if "data-edge" in el.attrib]


def _path(el: ET.Element) -> ET.Element:
    paths = [c for c in el.iter() if c.tag.endswith("path")]
    assert len(paths) == 1
    return paths[0]


def _width(el: ET.Element) -> float:
    return float(_path(el).attrib["stroke-width"])


def _embedded(page: str) -> object:
    m = re.search(r'<script type="application/json" id="([^"]+)-data">(.*?)</script>', page, re.S)
    assert m, "no embedded JSON"
    return json.loads(m.group(2))


# ----------------------------------------------------------------------------- SVG


def test_svg_parses_and_draws_exactly_the_circuit_edges():
    data = _circuit()
    svg = to_svg(data)
    els = _edge_elements(svg)
    expected = {e["name"] for e in data["edges"] if e["in_circuit"]}
    assert 0 < len(expected) < len(data["edges"])
    assert len(els) == len(expected)
    assert {el.attrib["data-edge"] for el in els} == expected
    assert len(_edge_elements(to_svg(data, only_circuit=False))) == len(data["edges"])
    # every edge carries its score and a native tooltip "name: score"
    by_name = {e["name"]: e for e in data["edges"]}
    for el in els:
        e = by_name[el.attrib["data-edge"]]
        assert float(el.attrib["data-score"]) == e["score"]
        title = next(c for c in el if c.tag.endswith("title"))
        assert title.text == f"{e['name']}: {e['score']:.4g}"
    nodes = {el.attrib["data-node"] for el in ET.fromstring(svg).iter() if "data-node" in el.attrib}
    assert {"input", "logits"} <= nodes


def test_svg_widths_follow_abs_score_and_colour_follows_sign():
    data = _circuit()
    els = _edge_elements(to_svg(data, only_circuit=False))
    scored = sorted(els, key=lambda el: abs(float(el.attrib["data-score"])))
    widths = [_width(el) for el in scored]
    assert widths == sorted(widths)
    assert widths[-1] > widths[0]
    top = max(abs(float(el.attrib["data-score"])) for el in els)
    assert _width(scored[-1]) == pytest.approx(render.MAX_WIDTH, abs=0.01)
    assert abs(float(scored[-1].attrib["data-score"])) == top
    seen = set()
    for el in els:
        s = float(el.attrib["data-score"])
        stroke = _path(el).attrib["stroke"]
        if s > 0:
            assert stroke == render.POSITIVE_COLOR
        elif s < 0:
            assert stroke == render.NEGATIVE_COLOR
        seen.add(s > 0)
    assert seen == {True, False}


def test_all_zero_scores_draw_thin_edges():
    data = _circuit()
    for e in data["edges"]:
        e["score"] = 0.0
    els = _edge_elements(to_svg(data))
    assert els
    assert {_width(el) for el in els} == {render.MIN_WIDTH}


def test_max_edges_keeps_the_largest_abs_scores():
    data = _circuit()
    pool = [e for e in data["edges"] if e["in_circuit"]]
    k = 7
    assert len(pool) > k
    els = _edge_elements(to_svg(data, max_edges=k))
    assert len(els) == k
    kept = sorted((abs(float(el.attrib["data-score"])) for el in els), reverse=True)
    assert kept == sorted((abs(e["score"]) for e in pool), reverse=True)[:k]
    assert sorted(int(el.attrib["data-rank"]) for el in els) == list(range(k))
    assert _edge_elements(to_svg(data, max_edges=0)) == []


def test_ports_are_labelled_and_hidden_nodes_dropped():
    data = _circuit()
    svg = to_svg(data, only_circuit=False)
    for el in _edge_elements(svg):
        texts = [c.text for c in el.iter() if c.tag.endswith("text")]
        assert texts == ([el.attrib["data-port"]] if el.attrib["data-port"] else [])
    for e in data["edges"]:
        e["in_circuit"] = e["name"] == "input->a1.h0<k>"
    root = ET.fromstring(to_svg(data))
    shown = {el.attrib["data-node"] for el in root.iter() if "data-node" in el.attrib}
    assert shown == {"input", "a1.h0", "logits"}


# ----------------------------------------------------------------------------- layout


def test_layout_orders_layers_bottom_to_top():
    data = _circuit(n_layers=3, n_heads=3)
    pos = layout(data)
    assert set(pos) == {n["name"] for n in data["nodes"]}
    ys = {name: y for name, (_, y) in pos.items()}
    assert ys["input"] < min(y for n, y in ys.items() if n != "input")
    assert ys["logits"] > max(y for n, y in ys.items() if n != "logits")
    for layer in range(3):
        heads = [pos[f"a{layer}.h{h}"] for h in range(3)]
        assert len({y for _, y in heads}) == 1
        assert [x for x, _ in heads] == sorted(x for x, _ in heads) and heads[0][0] < heads[-1][0]
        assert ys[f"m{layer}"] > heads[0][1]
        if layer:
            assert heads[0][1] > ys[f"m{layer - 1}"]
    assert ys["a1.h0"] > ys["a0.h0"]
    assert layout(data) == pos


# ----------------------------------------------------------------------------- HTML


def test_html_embeds_json_without_requests(tmp_path: Path):
    data = _circuit()
    page = to_html(data, tmp_path / "c.html", only_circuit=False, max_edges=None)
    assert (tmp_path / "c.html").read_text(encoding="utf-8") == page
    assert _embedded(page) == json.loads(json.dumps(data))
    for bad in ("http://", "https://", 'src="//', 'href="//', "url("):
        assert bad not in page, bad
    for key in ("toy/compiled_induction", "induction", "eap-ig", "corrupted", "logit_diff", "steps"):
        assert key in page
    # the default view embeds only the drawn edges, in input order
    page = to_html(data, max_edges=5)
    embedded = _embedded(page)
    assert isinstance(embedded, dict)
    drawn = sorted((e for e in data["edges"] if e["in_circuit"]), key=lambda e: -abs(e["score"]))[:5]
    assert sorted(e["name"] for e in embedded["edges"]) == sorted(e["name"] for e in drawn)
    assert 'max="5"' in page


def test_html_renders_have_distinct_scoped_ids():
    data = _circuit()
    a, b = to_html_fragment(data), to_html_fragment(data)
    pa = re.search(r'<section class="mscirc" id="([^"]+)"', a)
    pb = re.search(r'<section class="mscirc" id="([^"]+)"', b)
    assert pa and pb and pa.group(1) != pb.group(1)
    both = a + b
    ids = re.findall(r'\bid="([^"]+)"', both)
    assert len(ids) == len(set(ids))
    for p, frag in ((pa.group(1), a), (pb.group(1), b)):
        assert all(i.startswith(p) for i in re.findall(r'\bid="([^"]+)"', frag))
        css = re.search(r"<style>(.*?)</style>", frag, re.S)
        assert css
        rules = [r.strip() for r in re.findall(r"(?:^|})([^{}]+)\{", css.group(1))]
        assert rules and all(r.startswith(f"#{p}") for r in rules), rules


def test_html_escapes_hostile_names():
    data = _circuit()
    evil = 'x</script><img src=x onerror="alert(1)">&<'
    data["nodes"][1]["name"] = evil
    for e in data["edges"]:
        e["source"] = evil if e["source"] == "a0.h0" else e["source"]
        e["target"] = evil if e["target"] == "a0.h0" else e["target"]
        e["in_circuit"] = True
    data["model"] = "<i>model</i>"
    page = to_html(data, only_circuit=False, max_edges=None)
    # the only script-closing tags are the two the page writes itself
    assert page.count("</script>") == 2
    assert "<img" not in page and "<i>model" not in page
    assert "&lt;i&gt;model" in page
    assert _embedded(page) == json.loads(json.dumps(data))
    assert html.escape(evil, quote=True) in page
    svg = to_svg(data, only_circuit=False)
    root = ET.fromstring(svg)
    assert evil in {el.attrib.get("data-node") for el in root.iter()}


# ----------------------------------------------------------------------------- PNG


def test_png_is_written(tmp_path: Path):
    out = to_png(_circuit(), tmp_path / "sub" / "c.png")
    assert out == tmp_path / "sub" / "c.png"
    raw = out.read_bytes()
    assert raw[:8] == PNG_MAGIC
    assert len(raw) > 2048
    assert [p.name for p in out.parent.iterdir()] == ["c.png"]  # no temporary left behind


# ----------------------------------------------------------------------------- errors


def _broken(kind: str) -> dict:
    data = _circuit()
    if kind == "no-nodes":
        del data["nodes"]
    elif kind == "no-edges":
        del data["edges"]
    elif kind == "unknown-node":
        data["edges"][3]["target"] = "a9.h9"
    elif kind in ("nan", "inf"):
        data["edges"][4]["score"] = float(kind)
    elif kind == "string-score":
        data["edges"][4]["score"] = "0.5"
    elif kind == "bad-kind":
        data["nodes"][2]["kind"] = "resid"
    return data


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("no-nodes", "has no 'nodes' list"),
        ("no-edges", "has no 'edges' list"),
        ("unknown-node", "unknown target node 'a9.h9'"),
        ("nan", "non-finite score"),
        ("inf", "non-finite score"),
        ("string-score", "expected a number"),
        ("bad-kind", "kind 'resid'"),
    ],
)
def test_bad_input_raises_value_error(kind: str, message: str, tmp_path: Path):
    data = _broken(kind)
    for fn in (to_svg, layout, lambda d: to_html(d), lambda d: to_png(d, tmp_path / "x.png")):
        with pytest.raises(ValueError, match=re.escape(message)):
            fn(copy.deepcopy(data))
    assert not (tmp_path / "x.png").exists()


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="must be a dict"):
        to_svg([])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_edges"):
        to_svg(_circuit(), max_edges=-1)
