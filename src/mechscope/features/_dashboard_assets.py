"""Inline CSS and JavaScript of the feature dashboards (:mod:`mechscope.features.dashboard`).

Every page carries its own copy, so a page works from ``file://``, offline, and in any iframe.
The script uses no globals other pages set and reads nothing but the page's own DOM.
"""

from __future__ import annotations

CSS = """\
:root{color-scheme:light}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d1d1f;margin:0;background:#fafafa}
main{max-width:1100px;margin:0 auto;padding:18px 24px 40px}
h1{font-size:20px;margin:4px 0 6px}
h2{font-size:16px;margin:26px 0 8px;border-bottom:1px solid #ddd;padding-bottom:3px}
h3{font-size:14px;margin:14px 0 4px}
a{color:#1f5fa8}
.muted{color:#6b6b70}
.nav{margin:0 0 8px}
.meta{display:flex;flex-wrap:wrap;gap:4px 18px;margin:6px 0 0;padding:0;list-style:none}
.meta b{font-weight:600}
table{border-collapse:collapse;background:#fff;margin:6px 0}
th,td{border:1px solid #e2e2e6;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f3;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.notice{padding:12px 16px;border:1px solid #e0c36a;background:#fff8e0;border-radius:4px;margin:14px 0}
.hist{background:#fff;border:1px solid #e2e2e6}
.hist .bar{fill:#4a78b5}
.hist .bar:hover{fill:#f0a020}
.hist .qedge{stroke:#c0392b;stroke-width:1.5;stroke-dasharray:4 3}
.hist .axis{stroke:#888}
.hist text{font-size:11px;fill:#444}
.ex{font:13px/1.9 ui-monospace,"SF Mono",Menlo,Consolas,monospace;margin:2px 0;display:flex;gap:10px}
.ex .act{flex:0 0 5.5em;text-align:right;color:#6b6b70;font-variant-numeric:tabular-nums}
.ex .toks{flex:1;overflow-wrap:anywhere}
.tok{white-space:pre;padding:1px 1px;margin:0 1px;border-radius:2px;box-shadow:inset 0 -1px #dcdce2}
.tok.target{outline:2px solid #1d1d1f;outline-offset:-1px}
.ws{color:#9a9aa0}
.ltok{font:13px ui-monospace,"SF Mono",Menlo,Consolas,monospace;white-space:pre}
.logits td{min-width:10em}
.card table{margin:2px 0}
.verdict{font-weight:700;padding:1px 8px;border-radius:3px}
.good{color:#1b7a35;background:#e3f4e8;font-weight:600}
.bad{color:#b3261e;background:#fbe6e4;font-weight:600}
.mid{color:#8a5a00;background:#fdf0d5;font-weight:600}
.card td{white-space:pre-wrap}
.search{display:flex;gap:12px;align-items:center;margin:12px 0 4px}
.search input{font:inherit;padding:5px 8px;width:min(34em,70vw);border:1px solid #b8b8c0;border-radius:4px}
#features th{cursor:pointer;user-select:none;white-space:nowrap}
#features th[aria-sort=ascending]::after{content:" \\25B2"}
#features th[aria-sort=descending]::after{content:" \\25BC"}
#features tr[hidden]{display:none}
#features td.expl{max-width:36em}
"""
"""Style shared by the index and the feature pages."""

INDEX_JS = """\
(function () {
  "use strict";
  var table = document.getElementById("features");
  var body = table.tBodies[0];
  var rows = Array.prototype.slice.call(body.rows);
  var input = document.getElementById("search");
  var count = document.getElementById("count");
  // what each row can be found by, read once: id, explanation (lower case), top tokens (trimmed, lower case)
  var keys = rows.map(function (r) {
    var toks = JSON.parse(r.getAttribute("data-tokens") || "[]");
    return {
      id: r.getAttribute("data-id"),
      text: (r.getAttribute("data-explanation") || "").toLowerCase(),
      toks: toks.map(function (t) { return t.trim().toLowerCase(); })
    };
  });
  function matches(k, q) {
    if (q.indexOf("tok:") === 0) { return k.toks.indexOf(q.slice(4).trim()) >= 0; }
    if (q.indexOf("id:") === 0) { return k.id === q.slice(3).trim(); }
    return k.id === q || k.toks.indexOf(q) >= 0 || k.text.indexOf(q) >= 0;
  }
  function filter() {
    var q = input.value.trim().toLowerCase();
    var shown = 0;
    for (var i = 0; i < rows.length; i++) {
      var ok = q === "" || matches(keys[i], q);
      rows[i].hidden = !ok;
      if (ok) { shown++; }
    }
    count.textContent = shown + " of " + rows.length + " features";
  }
  function sortBy(th) {
    var col = th.cellIndex;
    var numeric = th.getAttribute("data-type") === "num";
    var dir = th.getAttribute("aria-sort") === "descending" ? 1 : -1;
    if (!th.hasAttribute("aria-sort")) { dir = numeric ? -1 : 1; }
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (c) { c.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
    var order = rows.map(function (r, i) { return i; });
    function key(i) {
      var cell = rows[i].cells[col];
      var v = cell.getAttribute("data-sort");
      if (v === null) { v = cell.textContent; }
      return numeric ? (v === "" ? -Infinity : parseFloat(v)) : v.toLowerCase();
    }
    var keyed = order.map(function (i) { return [key(i), i]; });
    keyed.sort(function (a, b) {
      var c = numeric ? a[0] - b[0] : a[0].localeCompare(b[0]);
      return (c || a[1] - b[1]) * (c ? dir : 1);
    });
    var frag = document.createDocumentFragment();
    keyed.forEach(function (k) { frag.appendChild(rows[k[1]]); });
    body.appendChild(frag);
  }
  input.addEventListener("input", filter);
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
    th.addEventListener("click", function () { sortBy(th); });
    th.addEventListener("keydown", function (e) { if (e.key === "Enter") { sortBy(th); } });
  });
  filter();
})();
"""
"""The index page's search box and sortable columns.

Search: ``tok:X`` keeps features whose top-activating tokens include ``X`` (trimmed, case
folded); ``id:N`` keeps feature ``N``; any other text keeps features whose id is that text, whose
top tokens include it, or whose explanation contains it.
"""
