"""The cli package's layering: only the module that launches the app imports gpt_tui.ui."""

from __future__ import annotations

import ast
from pathlib import Path

import gpt_tui.cli

CLI = Path(gpt_tui.cli.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """Absolute names of what a module of gpt_tui.cli imports (relative imports resolved)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ["gpt_tui", "cli"]  # the package every module here lives in
            prefix = ".".join(base[: len(base) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (prefix, node.module or "") if p)
            names.add(module)
            names |= {f"{module}.{a.name}" for a in node.names}
    return names


def test_only_app_cmd_imports_the_ui():
    modules = sorted(CLI.glob("*.py"))
    assert {p.stem for p in modules} >= {"parser", "render", "app_cmd", "forward_cmds"}
    importers = {
        p.stem
        for p in modules
        if any(n == "gpt_tui.ui" or n.startswith("gpt_tui.ui.") for n in imported_modules(p))
    }
    assert importers == {"app_cmd"}


def test_every_cli_module_is_short():
    for path in CLI.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 300, path.name
