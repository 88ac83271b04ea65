"""The tabs of the right pane, registered in one table.

Each tab names its id, label, key, the widget it builds the first time it is shown, the
widget that takes the focus, and how it is fed from a `DebugState`. A tab that shows one
of the snapshot's views (`view`, a DebugState field) says which Debugger call computes it
when the snapshot lacks it (`request`); the app makes that call. To add a pane: write the
widget, then add a `Tab` here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.containers import ScrollableContainer
from textual.widget import Widget

from .widgets.attention_heatmap import AttentionPanel
from .widgets.code_pane import CodePane
from .widgets.compare import ComparePanel
from .widgets.cost import CostPanel
from .widgets.diagram import Diagram
from .widgets.generation import GeneratePanel
from .widgets.layer_stats import StatsPanel
from .widgets.param_table import ParamTable
from .widgets.train import TrainPanel

if TYPE_CHECKING:
    from ..engine.analysis.init_rules import ModelFacts
    from ..engine.core.debug_state import DebugState, ModelInfo


@dataclass(frozen=True)
class TabContext:
    """What a tab's builder and feeder may read: the open model and the last snapshot."""

    info: ModelInfo
    state: DebugState | None
    shapes: dict[str, tuple[int, ...]]
    seed: int
    facts: ModelFacts | None = None  # init rows, mode, a line to break at (read after open)


@dataclass(frozen=True)
class Tab:
    id: str
    title: str  # in help and the palette
    label: str  # on the tab itself (short enough for 80 columns)
    key: str
    focus: str  # selector of the widget that takes the focus when the tab is shown
    make: Callable[[TabContext], Widget]
    feed: Callable[[Widget, TabContext], None]
    view: str | None = None  # the DebugState field the tab shows, computed on demand
    # The Debugger method and arguments that compute it, given the tab's widget.
    request: Callable[[Widget], tuple[str, tuple] | None] = lambda widget: None


def _feed_stats(widget: Widget, ctx: TabContext) -> None:
    assert isinstance(widget, StatsPanel)
    state = ctx.state
    if state is None:
        return
    if state.stepping is not None:  # the paused pass, compared with the last whole run
        widget.previous, widget.run = state.run, state.stepping
    else:
        widget.previous, widget.run = state.previous_run, state.run


def _feed_params(widget: Widget, ctx: TabContext) -> None:
    assert isinstance(widget, ParamTable)
    widget.summary = ctx.info.summary
    widget.facts = ctx.facts


def _feed_diagram(widget: Widget, ctx: TabContext) -> None:
    diagram = widget.query_one(Diagram)
    diagram.info = ctx.info
    diagram.shapes = ctx.shapes


def _feed_attention(widget: Widget, ctx: TabContext) -> None:
    assert isinstance(widget, AttentionPanel)
    view = ctx.state.attention if ctx.state else None
    if view is not None and widget.view is not view:
        widget.view = view


def _feed_generation(widget: Widget, ctx: TabContext) -> None:
    assert isinstance(widget, GeneratePanel)
    view = ctx.state.generation if ctx.state else None
    if view is not None and widget.view is not view:
        widget.view = view
    compare = ctx.state.compare if ctx.state else None
    if compare is not None and compare.kind == "attribute" and widget.why is not compare:
        widget.why = compare


def _request_generation(widget: Widget) -> tuple[str, tuple] | None:
    assert isinstance(widget, GeneratePanel)
    settings = widget.settings()  # None after saying what is wrong with them
    return None if settings is None else ("reset_generation", (settings,))


def _feed_train(widget: Widget, ctx: TabContext) -> None:
    assert isinstance(widget, TrainPanel)
    state = ctx.state
    if state is None:
        return
    widget.ablations = state.ablations
    widget.mode = ctx.facts.mode if ctx.facts is not None else None
    if widget.view is not state.training:  # None too: a new prompt's step is not made yet
        widget.view = state.training


def _feed_code(widget: Widget, ctx: TabContext) -> None:
    assert isinstance(widget, CodePane)
    if ctx.facts is not None:
        widget.set_example(ctx.facts.break_example, ctx.facts.break_function)
    state = ctx.state
    if state is not None:
        frame = state.frame if state.status == "paused" else None
        line = (state.line_breakpoints, state.evaluations, state.tensor_view, state.displays)
        widget.show(frame, *line, state.line_table, state.hit if frame else None)


def _feed_compare(widget: Widget, ctx: TabContext) -> None:
    assert isinstance(widget, ComparePanel)
    state = ctx.state
    if state is not None and state.compare is not None and widget.view is not state.compare:
        widget.view = state.compare


def _feed_cost(widget: Widget, ctx: TabContext) -> None:
    assert isinstance(widget, CostPanel)
    view = ctx.state.measures if ctx.state else None
    if view is not None and widget.view is not view:
        widget.view = view


TABS: tuple[Tab, ...] = (
    Tab(
        "stats",
        "Stats",
        "Stats",
        "1",
        "#stats-table",
        lambda ctx: StatsPanel(id="stats-panel"),
        _feed_stats,
    ),
    Tab(
        "params",
        "Params",
        "Params",
        "2",
        "ParamTable",
        lambda ctx: ParamTable(id="params-table"),
        _feed_params,
    ),
    Tab(
        "attention",
        "Attention",
        "Attn",
        "3",
        "AttentionHeatmap",
        lambda ctx: AttentionPanel(ctx.info.n_layer, id="attention-panel"),
        _feed_attention,
        "attention",
        lambda w: ("attention", (w.view.pattern.layer if w.view is not None else 0,)),
    ),
    Tab(
        "generate",
        "Generate",
        "Generate",
        "4",
        "#gen-candidates",
        lambda ctx: GeneratePanel(
            seed=ctx.seed,
            heads=(ctx.info.n_layer, ctx.info.n_kv_head, ctx.info.n_embd // ctx.info.n_head),
            id="generate-panel",
        ),
        _feed_generation,
        "generation",
        _request_generation,
    ),
    Tab(
        "diagram",
        "Diagram",
        "Diagram",
        "5",
        "#diagram-scroll",
        lambda ctx: ScrollableContainer(Diagram(id="diagram-view"), id="diagram-scroll"),
        _feed_diagram,
    ),
    Tab(
        "train",
        "Train",
        "Train",
        "6",
        "#train-grads",
        lambda ctx: TrainPanel(id="train-panel"),
        _feed_train,
        "training",
        lambda w: ("train_step", ("into",)),
    ),
    Tab(
        "code",
        "Code",
        "Code",
        "7",
        "#code-source",
        lambda ctx: CodePane(id="code-panel"),
        _feed_code,
    ),
    Tab(
        "compare",
        "Compare",
        "Diff",
        "8",
        ".compare-shown",
        lambda ctx: ComparePanel(id="compare-panel"),
        _feed_compare,
    ),
    Tab(
        "cost",
        "Numerics & cost",
        "Cost",
        "9",
        "#cost-table",
        lambda ctx: CostPanel(id="cost-panel"),
        _feed_cost,
        "measures",
        lambda w: w.request_numerics(),
    ),
)

TAB_BY_ID = {tab.id: tab for tab in TABS}
