"""The layers import downward only, and no module imports itself back through others.

The graph is read from the source with `ast`: every `import` statement of gpt_tui that
runs (module level or inside a function), and for circles also what sits under
`if TYPE_CHECKING:` (a type-only circle still ties two modules into one).
"""

from __future__ import annotations

import ast
from pathlib import Path

import gpt_tui

ROOT = Path(gpt_tui.__file__).parent

# Each layer may import the ones listed (and itself); models <- io <- engine <- cli / ui.
ALLOWED = {
    "models": {"errors", "models"},
    "io": {"errors", "models", "io"},
    "engine": {"errors", "models", "io", "engine"},
    "formatting": set(),
    "config_file": {"io"},  # the user's config.toml; written with io's atomic helpers
    "errors": set(),
    "ui": {"errors", "formatting", "engine", "ui", "config_file"},
    "cli": {
        "errors",
        "formatting",
        "models",
        "io",
        "engine",
        "cli",
        "ui",
        "train",
        "listener",
        "config_file",
    },  # fmt: skip
    "train": {"errors", "models", "io", "engine"},
    # gpt_tui.watch / inspect: a face, like the CLI (watch(listen=True) opens the listener)
    "live": {"errors", "io", "engine", "ui", "listener"},
    "listener": {"errors", "io", "engine"},  # gpt_tui.listen: the run's end of `gpt-tui attach`
}


# engine/core is what every part uses: when it runs, it imports no part (analysis,
# generation, training) and not the Debugger. These modules still do; the list only shrinks.
CORE_STILL_IMPORTING_PARTS = {
    "gpt_tui.engine.core.session",  # the session holds the probes, lens and sampling
    "gpt_tui.engine.core.stepping",  # the stepper drives the probes
    "gpt_tui.engine.core.live_session",  # decodes with the sampling's tokenizer helper
    "gpt_tui.engine.core.views",  # token labels from sampling
}
_ENGINE_PARTS = tuple(
    f"gpt_tui.engine.{p}" for p in ("analysis", "generation", "training", "debugger")
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path, type_only: bool = False) -> set[str]:
    """The gpt_tui modules `path` imports when it runs (and for annotations, if
    `type_only`)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child) and not type_only:
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.startswith("gpt_tui"))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if target.startswith("gpt_tui"):
                    found.add(target)
                    # `from . import keys` names a module, not a symbol
                    found.update(f"{target}.{a.name}" for a in child.names)
            visit(child)

    visit(ast.parse(path.read_text()))
    modules = {module_name(p) for p in ROOT.rglob("*.py")}
    return {m for m in found if m in modules and m != name}


def graph(type_only: bool = False) -> dict[str, set[str]]:
    return {module_name(p): imports_of(p, type_only) for p in ROOT.rglob("*.py")}


def test_no_import_circles() -> None:
    edges = graph(type_only=True)
    assert "gpt_tui.engine.debugger" in edges and edges["gpt_tui.ui.app"]

    # A package's __init__ importing its own modules is how packages work, not a circle.
    def deps(m: str) -> set[str]:
        return {d for d in edges[m] if not (d.startswith(m + ".") or m.startswith(d + "."))}

    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    circles: list[list[str]] = []

    def walk(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(deps(m)):
            if state.get(d) == 1:
                circles.append(path[path.index(d) :] + [d])
            elif d not in state:
                walk(d, [*path, d])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            walk(m, [m])
    assert circles == [], "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_layers_import_downward_only() -> None:
    wrong = []
    for m, targets in graph().items():
        layer = m.split(".")[1] if m.count(".") else None
        if layer is None or layer in ("__main__",):
            continue
        for t in targets - {"gpt_tui"}:
            target_layer = t.split(".")[1]
            if target_layer != layer and target_layer not in ALLOWED[layer]:
                wrong.append(f"{m} -> {t}")
    assert wrong == []


def test_only_the_app_command_imports_the_ui() -> None:
    users = sorted(
        m for m, targets in graph().items()
        if m.startswith("gpt_tui.cli") and any(t.startswith("gpt_tui.ui") for t in targets)
    )  # fmt: skip
    assert users == ["gpt_tui.cli.app_cmd"]


def test_engine_core_imports_no_part() -> None:
    """frames.py, stats, tensors and model_access among them: a pause's values, the stats
    rows and the model's structure are core's own."""
    upward = {}
    for m, targets in graph().items():
        if m.startswith("gpt_tui.engine.core."):
            parts = sorted(t for t in targets if t.startswith(_ENGINE_PARTS))
            if parts:
                upward[m] = parts
    new = {m: t for m, t in upward.items() if m not in CORE_STILL_IMPORTING_PARTS}
    assert new == {}, "engine/core imports upward"
    stale = CORE_STILL_IMPORTING_PARTS - set(upward)
    assert stale == set(), "no longer imports a part: take it off CORE_STILL_IMPORTING_PARTS"
