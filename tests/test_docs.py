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


SHELL_FENCE = re.compile(r"^```(?:sh|console|bash)\n(.*?)^```", re.S | re.M)


def _cli_lines(page: Path) -> list[str]:
    """Every ``mechscope ...`` command in the page's shell blocks, continuation lines joined."""
    lines: list[str] = []
    for block in SHELL_FENCE.findall(page.read_text()):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith("mechscope "):
                lines.append(line.split("  #")[0].split(" # ")[0])
    return lines


@pytest.mark.parametrize("page", [p for p in PAGES if _cli_lines(p)], ids=lambda p: p.name)
def test_documented_commands_parse(page):
    """Each documented command line names real subcommands and options (parsed, not run)."""
    import shlex

    from mechscope.cli import _parser

    parser = _parser()
    for line in _cli_lines(page):
        try:
            parser.parse_args(shlex.split(line)[1:])
        except SystemExit as e:
            pytest.fail(f"{page.name}: {line!r} does not parse (exit {e.code})")
