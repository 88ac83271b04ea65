"""The module tree: every module with its class, last output shape and parameter count.

Data comes down as reactive attributes (the summary, the last run's shapes, the paused
module, breakpoints, non-finite modules, a name filter); the cursor's module goes up as
`ModuleTree.ModuleHighlighted`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.text import Text
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from ... import formatting as fmt

if TYPE_CHECKING:
    from ...engine.analysis.summary import ModelSummary
    from ...engine.core.debug_state import DebugState

# Modules expanded when the tree is first built: the path down to the blocks.
OPEN_PATHS = ("", "transformer", "transformer.h")
# What a label holds at the tree's width: the name always, then what fits of the parameter
# count, the last output shape and (wide trees only) the class.
WIDE = 44  # and wider: name, class, shape, params
NARROW = 22  # narrower: the name only (the tree is a rail beside a focused tab)
DIVERGED_MARK = "≠ "  # where the Compare tab's last diff first parts ways


class ModuleTree(Tree[str]):
    """Tree of module paths; node data is the path ("" for the root)."""

    BINDINGS = [("slash", "app.filter_tree", "Filter")]

    summary: reactive[ModelSummary | None] = reactive(None, always_update=True)
    shapes: reactive[dict[str, tuple[int, ...]]] = reactive(dict, always_update=True)
    paused: reactive[str | None] = reactive(None)
    breakpoints: reactive[frozenset[str]] = reactive(frozenset)
    nonfinite: reactive[frozenset[str]] = reactive(frozenset)
    ablated: reactive[frozenset[str]] = reactive(frozenset)
    diverged: reactive[str | None] = reactive(None)  # the last diff's first divergence
    name_filter: reactive[str] = reactive("")

    @dataclass
    class ModuleHighlighted(Message):
        """The cursor moved to the module at `path`."""

        path: str

    def __init__(self, **kwargs) -> None:
        super().__init__("model", **kwargs)
        self.show_root = True
        self._path_nodes: dict[str, TreeNode[str]] = {}
        self._detail = "wide"
        self._width = 0  # the width the labels were fitted to

    @property
    def selected_path(self) -> str | None:
        node = self.cursor_node
        return None if node is None else node.data

    # -- building ------------------------------------------------------------------------

    def _visible_paths(self) -> set[str] | None:
        """Paths that pass the filter, with their ancestors; None when not filtering."""
        summary = self.summary
        needle = self.name_filter.strip().lower()
        if summary is None or not needle:
            return None
        keep: set[str] = {""}
        for path in summary.modules:
            if needle in path.lower():
                parts = path.split(".")
                keep.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
        return keep

    def match_count(self) -> int | None:
        """Modules whose path holds the filter text; None when not filtering."""
        needle = self.name_filter.strip().lower()
        if self.summary is None or not needle:
            return None
        return sum(needle in path.lower() for path in self.summary.modules if path)

    def _rebuild(self) -> None:
        summary = self.summary
        self.clear()
        self._path_nodes.clear()
        if summary is None:
            return
        visible = self._visible_paths()
        root = self.root
        root.data = ""
        self._path_nodes[""] = root

        def add(parent: TreeNode[str], path: str) -> None:
            for child in summary.modules[path].children:
                if visible is not None and child not in visible:
                    continue
                has_children = bool(summary.modules[child].children)
                node = parent.add("", data=child, allow_expand=has_children)
                self._path_nodes[child] = node
                add(node, child)
                if visible is not None or child in OPEN_PATHS:
                    node.expand()

        add(root, "")
        root.expand()
        self._relabel()

    def _label(self, path: str) -> Text:
        summary = self.summary
        assert summary is not None
        node = summary.modules[path]
        text = Text(no_wrap=True)
        if path in self.breakpoints:
            text.append("● ", style="bold red")
        if path in self.ablated:
            text.append("⊘ ", style="bold magenta")
        if path == self.diverged:
            text.append(DIVERGED_MARK, style="bold cyan")
        paused = path == self.paused
        bad = path in self.nonfinite
        name_style = "bold red" if bad else ("bold" if node.kind else "")
        if paused:  # not ▶, which the tree draws for a collapsed node
            text.append(fmt.PAUSED_MARK, style="bold yellow")
            name_style = "bold black on yellow"
        text.append(node.name, style=name_style)
        if bad:
            text.append(" NaN/Inf", style="bold red")
        if self._detail == "rail":
            return text
        # Beside the name, what fits on the line: the parameter count first (it must never
        # be cut), then the shape, then the class (wide trees only); shown in that order.
        room = self._room(node.depth, bool(node.children)) - text.cell_len
        shape = self.shapes.get(path)
        extras = {
            "params": (f" {fmt.count(node.params)}" if node.params else "", "green"),
            "shape": (f" {fmt.short_shape(shape)}" if shape is not None else "", "cyan"),
            "class": (f" {node.class_name}" if path and self._detail == "wide" else "", "dim"),
        }
        shown = set()
        for key, (extra, _) in extras.items():  # in the order they are kept
            if extra and len(extra) <= room:
                shown.add(key)
                room -= len(extra)
        for key in ("class", "shape", "params"):  # in the order they are drawn
            if key in shown:
                text.append(*extras[key])
        return text

    def _room(self, depth: int, expandable: bool) -> int:
        """Cells left for a label after the guides, the ▼ of a node with children and
        the scrollbar's column (kept free whether or not the bar is shown)."""
        return self.size.width - 1 - self.guide_depth * depth - (2 if expandable else 0)

    def on_resize(self) -> None:
        width = self.size.width
        detail = "wide" if width >= WIDE else ("narrow" if width >= NARROW else "rail")
        self.guide_depth = 4 if detail == "wide" else 2
        self._detail = detail
        if width != self._width:
            self._width = width
            self._relabel()

    def show_state(self, state: DebugState) -> None:
        """Marks and shapes from a snapshot: the last whole run's output shapes (a paused
        pass's outputs so far are newer), non-finite outputs, the paused module,
        breakpoints and ablations."""
        self.shapes = state.shapes()
        bad = {e.name for e in state.events if e.phase == "out" and not e.stats.finite}
        if state.run is not None and state.status != "paused":
            bad |= {r.name for r in state.run.records if not r.stats.finite}
        self.nonfinite = frozenset(bad)
        training = state.training
        # A stepped training step marks the module forward or backward stands at.
        self.paused = state.paused_at or (training.current_module if training else None)
        self.breakpoints = state.breakpoints
        self.ablated = frozenset(state.ablated_modules)
        comparison = state.compare.comparison if state.compare is not None else None
        first = comparison.first_divergence if comparison is not None else None
        self.diverged = self._tree_path(first.name) if first is not None else None

    def _tree_path(self, name: str) -> str | None:
        """The tree's module for a probe name: itself, or the nearest module holding it
        (a point such as `transformer.h.0.resid_mid` is not a module of its own)."""
        summary = self.summary
        if summary is None:
            return None
        parts = name.split(".")
        while parts and ".".join(parts) not in summary.modules:
            parts.pop()
        return ".".join(parts) if parts else None

    def _relabel(self) -> None:
        # Labels fit the width they were made at; a tree hidden at narrow widths has none,
        # so the next resize (shown again) must make them anew.
        self._width = self.size.width
        for path, node in self._path_nodes.items():
            node.set_label(self._label(path))

    # -- reactive watchers ---------------------------------------------------------------

    def watch_summary(self) -> None:
        self._rebuild()

    def watch_name_filter(self) -> None:
        self._rebuild()

    def watch_shapes(self) -> None:
        self._relabel()

    def watch_breakpoints(self) -> None:
        self._relabel()

    def watch_nonfinite(self) -> None:
        self._relabel()

    def watch_ablated(self) -> None:
        self._relabel()

    def watch_paused(self, old: str | None, new: str | None) -> None:
        self._show_mark(old, new)

    def watch_diverged(self, old: str | None, new: str | None) -> None:
        self._show_mark(old, new)

    def _show_mark(self, old: str | None, new: str | None) -> None:
        """Relabel a mark's old and new module and bring the new one into view."""
        for path in (old, new):
            if path is not None and path in self._path_nodes:
                self._path_nodes[path].set_label(self._label(path))
        if new is None or new not in self._path_nodes:
            return
        node = self._path_nodes[new]
        parent = node.parent
        while parent is not None:
            parent.expand()
            parent = parent.parent
        # Line numbers exist only after the tree lays out its newly expanded nodes.
        self.call_after_refresh(self.scroll_to_node, node, animate=False)

    def select_first_match(self) -> str | None:
        """Move the cursor to the first module (in tree order) whose path contains the
        filter, not its ancestors that are shown for context; the path, None if none."""
        needle = self.name_filter.strip().lower()
        summary = self.summary
        if not needle or summary is None:
            return None
        path = next((p for p in summary.modules if p and needle in p.lower()), None)
        if path is None:
            return None
        # Line numbers exist only after the tree lays out the filtered nodes.
        self.call_after_refresh(self._move_to, path)
        return path

    def _move_to(self, path: str) -> None:
        node = self._path_nodes.get(path)
        if node is not None:
            self.move_cursor(node, animate=False)

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted[str]) -> None:
        event.stop()
        if event.node.data is not None:
            self.post_message(self.ModuleHighlighted(event.node.data))
