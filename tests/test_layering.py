"""Dependencies between pipeline stages point one way (DESIGN.md section 2)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "mechscope"

# package -> mechscope packages it may import (shared leaf modules are allowed everywhere)
ALLOWED: dict[str, set[str]] = {
    "viz": set(),
    "models": {"viz"},
    "data": {"models"},
    "tasks": {"models", "data"},
    "interventions": {"models", "tasks", "report", "viz"},
    "dictionary": {"models", "data"},
    "explain": set(),
    "steering": {"models", "dictionary"},
    "features": {"models", "data", "dictionary", "interventions", "explain", "steering", "report", "viz"},
    "circuits": {"models", "tasks", "interventions", "dictionary", "viz"},
    "toys": {"models"},
    "report": {"viz"},
    "server": {"report"},
}
SHARED = {"errors", "_fs", "_version"}


def _imports(path: Path, package: str) -> set[str]:
    """Top-level mechscope subpackages imported by one module."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    rel_parts = path.relative_to(SRC).parts
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package path
                base = list(rel_parts[:-1])[: len(rel_parts) - node.level]
                target = [*base, *(node.module.split(".") if node.module else [])]
                if target:
                    found.add(target[0])
                else:
                    found.update(a.name for a in node.names)
            elif node.module and node.module.startswith("mechscope."):
                found.add(node.module.split(".")[1])
            elif node.module == "mechscope":
                found.add("<root>")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("mechscope."):
                    found.add(a.name.split(".")[1])
                elif a.name == "mechscope":
                    found.add("<root>")
    return found - {package} - SHARED


def test_import_direction():
    bad = []
    for package, allowed in ALLOWED.items():
        pkg_dir = SRC / package
        if not pkg_dir.exists():
            continue
        for path in pkg_dir.rglob("*.py"):
            extra = _imports(path, package) - allowed
            if extra:
                bad.append(f"{path.relative_to(SRC)} imports {sorted(extra)}")
    assert not bad, "\n".join(bad)


def test_report_never_touches_torch_models():
    for path in (SRC / "report").rglob("*.py"):
        text = path.read_text()
        assert "transformers" not in text and "load_model" not in text, path
