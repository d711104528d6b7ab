"""Every Python example in the README and docs/ runs, so the docs never rot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks(page: Path) -> list[str]:
    return FENCE.findall(page.read_text())


@pytest.mark.real
@pytest.mark.parametrize("page", [p for p in PAGES if _blocks(p)], ids=lambda p: p.name)
def test_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict[str, object] = {"__name__": f"docs:{page.name}"}
    for i, code in enumerate(_blocks(page)):
        exec(compile(code, f"{page.name} (example {i + 1})", "exec"), namespace)


def test_hook_table_lists_every_site_with_its_shape():
    from mechscope.models.names import BLOCK_SITES, GLOBAL_POST_SITES, GLOBAL_PRE_SITES

    text = (ROOT / "docs" / "hooks.md").read_text()
    for site in GLOBAL_PRE_SITES + GLOBAL_POST_SITES:
        assert f"| `{site.suffix}` | `[{site.shape}]` |" in text, site.suffix
    for site in BLOCK_SITES:
        assert f"| `blocks.{{L}}.{site.suffix}` | `[{site.shape}]` |" in text, site.suffix


def test_readme_gives_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert "make demo" in text and "make test" in text
    assert "make test" in (ROOT / ".ci" / "run").read_text()
