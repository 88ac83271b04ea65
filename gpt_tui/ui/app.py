"""The gpt-tui app: a module tree on the left, tabs on the right, the prompt at the bottom.

The app is the router. Panes get data as reactive attributes and report intent as
messages; the app turns intent into one engine call at a time in a thread worker (group
"engine"), and the worker posts the frozen result back as a message. Keys pressed while
the engine is busy are ignored with a short note. torch loads inside the first worker,
so the screen paints before the model exists.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, ClassVar

from textual import events, on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, ScrollableContainer, Vertical
from textual.widgets import Input, Label, Static, TabbedContent, TabPane
from textual.worker import Worker, WorkerState

from .commands import GptTuiCommands
from .driver import (
    Driver,
    GenerationSettings,
    ModelInfo,
    OpenError,
    describe_error,
    open_driver,
)
from .messages import (
    AblationsUpdated,
    AttentionUpdated,
    GenerationUpdated,
    RunUpdated,
    SessionFailed,
    SessionOpened,
    StepUpdated,
    TrainUpdated,
)
from .widgets.attention_heatmap import AttentionPanel
from .widgets.diagram import Diagram
from .widgets.footer import KeyFooter
from .widgets.generation import GeneratePanel
from .widgets.help import HelpScreen, KeyRow, binding_rows
from .widgets.layer_stats import StatsPanel
from .widgets.module_tree import ModuleTree
from .widgets.param_table import ParamTable
from .widgets.status import StatusBar
from .widgets.tables import RowTable
from .widgets.train import TrainPanel

if TYPE_CHECKING:
    from ..engine.session import ModelSpec

# Below this width a focused tab takes the whole width (the tree comes back with escape);
# wider, the tree shrinks to a rail of names beside it.
NARROW_WIDTH = 100

# Set to 1 to leave out the memory figure (it changes between runs): snapshots, demos.
HIDE_MEMORY_ENV = "GPT_TUI_HIDE_MEMORY"
MEMORY_INTERVAL = 2.0


def _key(key: str, action: str, description: str, tooltip: str, show: bool = True) -> Binding:
    return Binding(key, action, description, show=show, tooltip=tooltip, id=action)


class GptTuiApp(App[int]):
    """The inspector for one model: `GptTuiApp(ModelSpec(...)).run()`."""

    CSS_PATH = "app.tcss"
    TITLE = "gpt-tui"
    COMMANDS = App.COMMANDS | {GptTuiCommands}
    ENABLE_COMMAND_PALETTE = True

    TABS: ClassVar[list[tuple[str, str]]] = [
        ("stats", "Stats"),
        ("params", "Params"),
        ("attention", "Attention"),
        ("generate", "Generate"),
        ("diagram", "Diagram"),
        ("train", "Train"),
    ]

    # Shorter tab labels where the full title would push "Train" off an 80-column screen.
    TAB_LABELS: ClassVar[dict[str, str]] = {"attention": "Attn"}

    # What gets the keyboard focus when a tab is shown.
    TAB_FOCUS: ClassVar[dict[str, str]] = {
        "stats": "#stats-table",
        "params": "ParamTable",
        "attention": "AttentionHeatmap",
        "generate": "#gen-candidates",
        "diagram": "#diagram-scroll",
        "train": "#train-grads",
    }

    # The engine keys, most important first: the footer shows them in this order, with
    # these short descriptions, as many as fit; help and the palette use KEY_TITLES.
    KEY_BINDINGS: ClassVar[list[Binding]] = [
        _key("r", "run", "Run", "run the whole forward pass on the prompt"),
        _key("s", "step_into", "Into", "stop at the next probe, going into submodules"),
        _key("n", "step_over", "Over", "run to the end of the current module"),
        _key("o", "step_out", "Out", "run until the enclosing module finishes"),
        _key("c", "continue", "Cont", "run to the next breakpoint or watchpoint"),
        _key("b", "toggle_breakpoint", "Break", "toggle a breakpoint on the selected module"),
        _key("w", "toggle_watch", "NaN", "stop at the first module producing NaN/Inf"),
        _key(
            "l",
            "toggle_leaves",
            "Leaves",
            "also probe and stop at every Linear, norm and activation",
            show=False,
        ),
        _key("g", "generate", "Gen", "sample one token"),
        _key("q", "quit", "Quit", "leave gpt-tui"),
        _key("question_mark", "help", "Help", "the panes and keys explained"),
        _key("x", "abort", "Abort", "abort the paused or running forward pass"),
        _key("G", "generate_n", "Gen N", "sample N tokens (N in the Generate tab)"),
        _key("a", "ablate", "Ablate", "toggle ablation of the selected MLP / attention head"),
    ]
    KEY_TITLES: ClassVar[dict[str, str]] = {
        "run": "Run",
        "step_into": "Step into",
        "step_over": "Step over",
        "step_out": "Step out",
        "continue": "Continue",
        "toggle_breakpoint": "Breakpoint",
        "toggle_watch": "NaN watch",
        "generate": "Generate 1",
        "quit": "Quit",
        "help": "Help",
        "abort": "Abort",
        "generate_n": "Generate N",
        "ablate": "Ablate",
    }
    BINDINGS: ClassVar[list[Binding]] = [
        *KEY_BINDINGS,
        _key("slash", "filter_tree", "Filter", "filter the module tree by name", show=False),
        _key("escape", "focus_tree", "Tree", "back to the module tree", show=False),
        _key("p", "focus_prompt", "Prompt", "edit the prompt", show=False),
        *(
            _key(str(i), f"show_tab('{tab}')", title, f"show the {title} tab", show=False)
            for i, (tab, title) in enumerate(TABS, 1)
        ),
    ]

    # Actions that need an open model.
    ENGINE_ACTIONS = frozenset(
        {
            "step_over",
            "step_into",
            "step_out",
            "continue",
            "toggle_breakpoint",
            "toggle_watch",
            "toggle_leaves",
            "run",
            "abort",
            "generate",
            "generate_n",
            "ablate",
        }
    )

    def __init__(self, spec: ModelSpec, *, show_memory: bool | None = None) -> None:
        super().__init__()
        self.spec = spec
        if show_memory is None:
            show_memory = os.environ.get(HIDE_MEMORY_ENV, "") in ("", "0")
        self.show_memory = show_memory
        self.driver: Driver | None = None
        self.info: ModelInfo | None = None
        self.busy = False
        self.prompt = ""
        self.selected_path: str | None = None
        self.open_error: str | None = None
        self._mounted_tabs: set[str] = set()
        self._queued: tuple[Any, tuple] | None = None
        self._generation: Any = None
        self._train: Any = None
        self._train_prompt: str | None = None
        self._run: Any = None
        self._previous_run: Any = None
        self._stepping_run: Any = None  # the paused pass's records so far
        self._attention: Any = None
        self.attention_layer = 0
        self.attention_head = 0
        self.breakpoints: frozenset[str] = frozenset()
        self.watch_nonfinite = False
        self.leaf_probes = False
        self.paused_at: str | None = None
        self.stepping = False  # a step / continue is running in the engine now
        self.ablations: tuple[str, ...] = ()

    # -- layout --------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        with Horizontal(id="body"):
            with Vertical(id="left"):
                yield Input(placeholder="filter modules…", id="tree-filter", compact=True)
                yield ModuleTree(id="tree")
            with Vertical(id="right"):
                yield Static("", id="message")
                with TabbedContent(id="tabs"):
                    for tab, title in self.TABS:
                        yield TabPane(self.TAB_LABELS.get(tab, title), id=tab)
        with Horizontal(id="prompt-bar"):
            yield Label("prompt ›", id="prompt-label")
            # Enabled once a model is open, so that keys never land in it before.
            yield Input(
                id="prompt", compact=True, placeholder="the text the model reads", disabled=True
            )
        yield KeyFooter([b.action for b in self.KEY_BINDINGS])

    def on_mount(self) -> None:
        self.query_one("#tree").loading = True
        self.query_one("#tabs").loading = True
        self.query_one("#tree-filter").display = False
        self.query_one("#message").display = False
        self._open_session(self.spec)

    # -- opening the model ---------------------------------------------------------------

    @work(thread=True, group="open", exit_on_error=False)
    def _open_session(self, spec: ModelSpec) -> None:
        try:
            driver = open_driver(spec)
        except OpenError as err:
            self.post_message(SessionFailed(str(err)))
            return
        self.post_message(SessionOpened(driver, driver.info()))

    async def on_session_opened(self, message: SessionOpened) -> None:
        self.driver = message.driver
        self.info = info = message.info
        self.prompt = info.default_prompt
        prompt = self.query_one("#prompt", Input)
        prompt.value = info.default_prompt
        prompt.disabled = False
        self.query_one("#tree").loading = False
        self.query_one("#tabs").loading = False
        status = self.query_one(StatusBar)
        status.info = info
        if info.notes:
            self.notify("; ".join(info.notes), title="note")
        tree = self.query_one(ModuleTree)
        tree.summary = info.summary
        tree.focus()
        if self.show_memory:
            self._update_memory()
            self.set_interval(MEMORY_INTERVAL, self._update_memory)
        self._update_detail()
        active = self.query_one(TabbedContent).active
        await self._mount_tab(active)
        self._feed_tab(active)
        self.refresh_bindings()

    def on_session_failed(self, message: SessionFailed) -> None:
        self._show_open_error(message.error)

    def _show_open_error(self, error: str) -> None:
        self.open_error = error
        self.query_one("#tree").loading = False
        self.query_one("#tabs").loading = False
        self.query_one(StatusBar).loading_text = "no model"
        box = self.query_one("#message", Static)
        box.update(
            f"[b red]Could not open the model[/]\n\n{error}\n\n"
            "[dim]Quit with q and start again with other model arguments "
            "(gpt-tui --help).[/]"
        )
        box.display = True
        self.query_one("#tabs").display = False
        self.query_one(ModuleTree).focus()

    # -- keys ----------------------------------------------------------------------------

    async def on_event(self, event: events.Event) -> None:
        """Escape and then a key, pressed quickly, arrive as one `alt+<key>`: the terminal
        sends ESC and the key back to back, and Textual reads the pair as Alt (within
        ESCDELAY, 100 ms). Both keys were lost (`Esc 1` did not reach the Stats tab); this
        app binds no Alt keys, so it replays them as the two keys the user pressed."""
        if isinstance(event, events.Key) and event.key.startswith("alt+"):
            char = event.key.removeprefix("alt+")
            if len(char) == 1 and char.isalnum():
                if self.screen is self.screen_stack[0]:
                    # Escape's work done now (replayed, it would still be bubbling up from
                    # the focused widget when the key arrived), then the key.
                    self.action_focus_tree(now=True)
                else:  # a modal screen or the palette: escape closes it
                    await super().on_event(events.Key("escape", "\x1b"))
                await super().on_event(events.Key(char, char))
                return
        await super().on_event(event)

    # -- layout: the focused side gets the room -----------------------------------------

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        self._update_layout()

    def on_resize(self, event: events.Resize) -> None:
        self._update_layout()

    def _update_layout(self) -> None:
        """A tab with the focus gets the width its columns need: the tree becomes a rail
        of names (or, below NARROW_WIDTH columns, steps aside) until it has the focus."""
        focused = self.focused
        if focused is None or focused.screen is not self.screen:
            return
        body = self.query_one("#body")
        right = self.query_one("#right")
        if focused in right.walk_children() or focused is right:
            body.add_class("-tabs-focused")
        elif focused in self.query_one("#left").walk_children():
            body.remove_class("-tabs-focused")
        body.set_class(self.size.width < NARROW_WIDTH, "-narrow")

    def _update_memory(self) -> None:
        if self.driver is not None:
            self.query_one(StatusBar).memory = self.driver.memory()

    def _update_detail(self) -> None:
        status = self.query_one(StatusBar)
        status.prompt = self.prompt
        status.breakpoints = len(self.breakpoints)
        status.watch = self.watch_nonfinite
        status.leaves = self.leaf_probes
        status.ablations = len(self.ablations)
        status.busy = self.busy

    # -- tabs ----------------------------------------------------------------------------

    async def action_show_tab(self, tab: str) -> None:
        """Switch tabs and put the keyboard focus in the tab (escape goes back to the tree)."""
        if self.info is None:
            return
        await self._mount_tab(tab)
        self.query_one(TabbedContent).active = tab
        self.query_one(f"#{tab}", TabPane).query_one(self.TAB_FOCUS[tab]).focus()

    @on(TabbedContent.TabActivated)
    async def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id is not None and self.info is not None:
            await self._mount_tab(event.pane.id)
            self._feed_tab(event.pane.id)

    async def _mount_tab(self, tab: str) -> None:
        """Tabs are built the first time they are shown."""
        if tab not in self._mounted_tabs:
            self._mounted_tabs.add(tab)
            await self.query_one(f"#{tab}", TabPane).mount(self._make_tab(tab))

    def _make_tab(self, tab: str):
        if tab == "params":
            return ParamTable(id="params-table")
        if tab == "diagram":
            return ScrollableContainer(Diagram(id="diagram-view"), id="diagram-scroll")
        if tab == "generate":
            return GeneratePanel(seed=self.spec.seed, id="generate-panel")
        if tab == "train":
            panel = TrainPanel(id="train-panel")
            panel.ablations = self.ablations
            return panel
        if tab == "stats":
            return StatsPanel(id="stats-panel")
        assert tab == "attention"
        assert self.info is not None
        return AttentionPanel(self.info.n_layer, id="attention-panel")

    def _feed_tab(self, tab: str) -> None:
        info = self.info
        if info is None:
            return
        if tab == "params":
            self.query_one(ParamTable).summary = info.summary
        elif tab == "diagram":
            diagram = self.query_one(Diagram)
            diagram.info = info
            diagram.shapes = self.query_one(ModuleTree).shapes
        elif tab == "generate":
            panel = self.query_one(GeneratePanel)
            if self._generation is None:
                settings = panel.settings()
                if settings is not None:
                    self._start(self._reset_generation, self.prompt, settings)
            else:
                panel.view = self._generation
        elif tab == "stats":
            self._feed_tab_now("stats")
        elif tab == "attention":
            view = self._attention
            if view is None or view.prompt != self.prompt:
                self._start(self._attention_worker, self.prompt, self.attention_layer)
            else:
                self.query_one(AttentionPanel).view = view
        elif tab == "train":
            if self._train_prompt != self.prompt:
                self._start(self._train_worker, self.prompt)
            else:
                self.query_one(TrainPanel).view = self._train

    # -- engine calls --------------------------------------------------------------------

    def _start(self, worker_fn, *args: Any) -> None:
        """Run one engine call in a worker. While one runs, the next call waits (one only:
        a third request meanwhile is dropped with a note)."""
        if self.driver is None:
            return
        if self.busy:
            if self._queued is not None:
                self.notify("the engine is busy: key ignored", timeout=1.5)
            else:
                self._queued = (worker_fn, args)
            return
        self.busy = True
        self._update_detail()
        worker_fn(*args)
        return True

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if worker.name == "stepper":
            self.stepping = event.state == WorkerState.RUNNING
            if self.stepping:
                self.query_one(StatusBar).stepper = "running…"
            self.refresh_bindings()
        if event.state == WorkerState.ERROR:
            error = describe_error(worker.error) if worker.error else "unknown error"
            if worker.group == "open":
                self._show_open_error(error)
            else:
                self.notify(
                    error, title=f"{worker.name or 'engine'} failed", severity="error", timeout=8
                )
                self._after_failure(worker.name, error)
        elif event.state == WorkerState.CANCELLED and worker.name == "stepper":
            self._after_failure(worker.name, "cancelled")
        if worker.group == "engine" and event.state in (
            WorkerState.SUCCESS,
            WorkerState.ERROR,
            WorkerState.CANCELLED,
        ):
            self.busy = False
            self._update_detail()
            self.refresh_bindings()
            if self._queued is not None:
                worker_fn, args = self._queued
                self._queued = None
                self._start(worker_fn, *args)

    def _after_failure(self, name: str, error: str) -> None:
        """Every failed engine call leaves the display true: a failed step (or a run that
        gave up the paused pass first) shows the stepper as idle, with the reason."""
        driver = self.driver
        if name == "stepper" or (self.paused_at is not None and not driver.pass_open):
            self._stepping_run = None
            if "stats" in self._mounted_tabs:
                self._feed_tab_now("stats")
            self._set_paused(None, f"error · {error}")

    # -- forward pass and stepping ------------------------------------------------------

    @work(thread=True, group="engine", exit_on_error=False, name="forward pass")
    def _run_worker(self, prompt: str) -> None:
        assert self.driver is not None
        self.driver.abort()  # a paused stepped pass gives way to the whole run
        self.post_message(RunUpdated(self.driver.run(prompt)))

    @work(thread=True, group="engine", exit_on_error=False, name="stepper")
    def _step_worker(self, how: str, prompt: str, breakpoints: frozenset[str], watch: bool) -> None:
        assert self.driver is not None
        self.post_message(StepUpdated(self.driver.step(how, prompt, breakpoints, watch)))

    @work(thread=True, group="engine", exit_on_error=False, name="abort")
    def _abort_worker(self) -> None:
        assert self.driver is not None
        self.post_message(StepUpdated(self.driver.abort()))

    def action_run(self) -> None:
        self._start(self._run_worker, self.prompt)

    def _step(self, how: str) -> None:
        self._start(self._step_worker, how, self.prompt, self.breakpoints, self.watch_nonfinite)

    def action_step_over(self) -> None:
        self._step("over")

    def action_step_into(self) -> None:
        self._step("into")

    def action_step_out(self) -> None:
        self._step("out")

    def action_continue(self) -> None:
        self._step("continue")

    def action_abort(self) -> None:
        # A running continue is stopped at its next module without waiting for the
        # engine; its worker then reports the aborted pass. Else abort the paused one.
        if self.stepping and self.driver is not None and self.driver.request_abort():
            self.query_one(StatusBar).stepper = "aborting…"
            return
        self._start(self._abort_worker)

    def on_run_updated(self, message: RunUpdated) -> None:
        self._set_run(message.run)
        self._set_paused(None, f"idle · forward pass recorded {len(message.run.records)} probes")

    def _set_run(self, run) -> None:
        self._previous_run, self._run = self._run, run
        self._stepping_run = None
        self._set_shapes(run.shapes())
        tree = self.query_one(ModuleTree)
        tree.nonfinite = frozenset(r.name for r in run.records if not r.stats.finite)
        if "stats" in self._mounted_tabs:
            self._feed_tab_now("stats")
        if "attention" in self._mounted_tabs and self._attention is not None:
            # The pattern belongs to the previous pass (prompt or interventions changed).
            self._attention = None
            if self.query_one(TabbedContent).active == "attention":
                self._queue_or_start(self._attention_worker, self.prompt, self.attention_layer)

    def _feed_tab_now(self, tab: str) -> None:
        if tab == "stats":
            panel = self.query_one(StatsPanel)
            if self._stepping_run is not None:  # compared with the last whole run
                panel.previous = self._run
                panel.run = self._stepping_run
            else:
                panel.previous = self._previous_run
                panel.run = self._run

    def _queue_or_start(self, worker_fn, *args: Any) -> None:
        if self.busy:
            self._queued = (worker_fn, args)
        else:
            self._start(worker_fn, *args)

    def _set_shapes(self, shapes: dict[str, tuple[int, ...]]) -> None:
        self.query_one(ModuleTree).shapes = shapes
        if "diagram" in self._mounted_tabs:
            self.query_one(Diagram).shapes = shapes

    def on_step_updated(self, message: StepUpdated) -> None:
        state = message.state
        tree = self.query_one(ModuleTree)
        shapes = dict(tree.shapes)
        shapes.update({e.name: e.shape for e in state.events if e.phase == "out"})
        self._set_shapes(shapes)
        bad = {e.name for e in state.events if e.phase == "out" and not e.stats.finite}
        tree.nonfinite = frozenset(bad)
        if state.status == "paused" and state.event is not None:
            e = state.event
            why = {"breakpoint": " · breakpoint", "watch": " · NaN/Inf appeared here"}
            text = f"paused at {e.name} ({e.phase}) #{e.index}{why.get(state.reason or '', '')}"
            if state.reason == "watch":
                text = "non-finite: " + text
            self._set_paused(e.name, text)
            self._stepping_run = state.run
            if "stats" in self._mounted_tabs:
                self._feed_tab_now("stats")
            return
        if state.status == "finished" and state.run is not None:
            self._set_run(state.run)
            self._set_paused(None, f"idle · pass finished after {len(state.events)} events")
        else:
            self._set_paused(None, "idle · pass aborted")
            self._stepping_run = None
            if "stats" in self._mounted_tabs:
                self._feed_tab_now("stats")

    def _set_paused(self, name: str | None, text: str) -> None:
        self.paused_at = name
        self.query_one(ModuleTree).paused = name
        self.query_one(StatusBar).stepper = text
        self.refresh_bindings()

    def action_toggle_breakpoint(self) -> None:
        path = self.selected_path
        if not path:
            self.notify("select a module in the tree first", timeout=2)
            return
        self.breakpoints = self.breakpoints ^ {path}
        self.query_one(ModuleTree).breakpoints = self.breakpoints
        self._update_detail()

    def action_toggle_watch(self) -> None:
        self.watch_nonfinite = not self.watch_nonfinite
        self._update_detail()
        state = "on: c stops where NaN/Inf first appears" if self.watch_nonfinite else "off"
        self.notify(f"NaN/Inf watchpoint {state}", timeout=2)

    @work(thread=True, group="engine", exit_on_error=False, name="leaf probes")
    def _leaves_worker(self, on: bool) -> None:
        assert self.driver is not None
        state = self.driver.set_leaf_probes(on)
        if state is not None:
            self.post_message(StepUpdated(state))

    def action_toggle_leaves(self) -> None:
        self.leaf_probes = not self.leaf_probes
        self._update_detail()
        self._start(self._leaves_worker, self.leaf_probes)
        state = "on: s and the NaN watch stop at every Linear, norm and activation"
        self.notify(f"leaf probes {state if self.leaf_probes else 'off'}", timeout=2)

    # -- attention -----------------------------------------------------------------------

    @work(thread=True, group="engine", exit_on_error=False, name="attention")
    def _attention_worker(self, prompt: str, layer: int) -> None:
        assert self.driver is not None
        self.post_message(AttentionUpdated(self.driver.attention(prompt, layer)))

    def on_attention_updated(self, message: AttentionUpdated) -> None:
        self._attention = message.view
        self.attention_layer = message.view.pattern.layer
        if "attention" in self._mounted_tabs:
            self.query_one(AttentionPanel).view = message.view

    @on(AttentionPanel.LayerRequested)
    def _layer_requested(self, event: AttentionPanel.LayerRequested) -> None:
        self._start(self._attention_worker, self.prompt, event.layer)

    @on(AttentionPanel.HeadChanged)
    def _head_changed(self, event: AttentionPanel.HeadChanged) -> None:
        self.attention_head = event.head

    # -- interventions -------------------------------------------------------------------

    def _selected_kind(self) -> str | None:
        if self.info is None or self.selected_path is None:
            return None
        node = self.info.summary.modules.get(self.selected_path)
        return node.kind if node is not None else None

    @work(thread=True, group="engine", exit_on_error=False, name="ablation")
    def _ablate_worker(self, path: str, kind: str, head: int, prompt: str | None) -> None:
        driver = self.driver
        assert driver is not None
        active = driver.toggle_ablation(path, kind, head)
        self.post_message(AblationsUpdated(active, driver.ablated_modules))
        state = driver.current_step()  # a paused pass re-ran to where it was
        if state is not None:
            self.post_message(StepUpdated(state))
        if prompt is not None:
            self.post_message(RunUpdated(driver.run(prompt)))
        view = driver.generation_view()  # the next token's candidates and lens, re-peeked
        if view is not None:
            self.post_message(GenerationUpdated(view))

    def action_ablate(self) -> None:
        kind = self._selected_kind()
        if kind not in ("attn", "mlp") or self.selected_path is None:
            self.notify("select an attention or MLP module in the tree", timeout=2)
            return
        rerun = self.prompt if self._run is not None else None
        self._start(self._ablate_worker, self.selected_path, kind, self.attention_head, rerun)

    def on_ablations_updated(self, message: AblationsUpdated) -> None:
        self.ablations = message.active
        self.query_one(ModuleTree).ablated = frozenset(message.modules)
        self._update_detail()
        self.notify("; ".join(message.active) or "no ablations active", title="interventions")
        # What the panes computed before describes the model without (or with) them.
        self._train_prompt = None
        if "train" in self._mounted_tabs:
            self.query_one(TrainPanel).ablations = message.active
        if self._run is None:  # else the rerun's RunUpdated refreshes the attention
            self._attention = None
        active = self.query_one(TabbedContent).active
        if active in ("train", "attention"):
            self._feed_tab(active)

    # -- generation ----------------------------------------------------------------------

    @work(thread=True, group="engine", exit_on_error=False, name="generation")
    def _reset_generation(self, prompt: str, settings: GenerationSettings) -> None:
        assert self.driver is not None
        self.post_message(GenerationUpdated(self.driver.reset_generation(prompt, settings)))

    @work(thread=True, group="engine", exit_on_error=False, name="generation")
    def _generate_worker(
        self, prompt: str, settings: GenerationSettings, n: int, force: int | None
    ) -> None:
        assert self.driver is not None
        self.post_message(GenerationUpdated(self.driver.generate(prompt, settings, n, force)))

    def on_generation_updated(self, message: GenerationUpdated) -> None:
        self._generation = message.view
        if "generate" in self._mounted_tabs:
            self.query_one(GeneratePanel).view = message.view

    @on(GeneratePanel.StepRequested)
    def _step_requested(self, event: GeneratePanel.StepRequested) -> None:
        self._start(self._generate_worker, self.prompt, event.settings, event.n, event.force_token)

    @on(GeneratePanel.ResetRequested)
    def _reset_requested(self, event: GeneratePanel.ResetRequested) -> None:
        self._start(self._reset_generation, self.prompt, event.settings)

    async def _generate_panel(self) -> GeneratePanel:
        if self.query_one(TabbedContent).active != "generate":
            await self.action_show_tab("generate")
        return self.query_one(GeneratePanel)

    async def action_generate(self) -> None:
        (await self._generate_panel()).request(1)

    async def action_generate_n(self) -> None:
        panel = await self._generate_panel()
        panel.request(panel.run_length())

    # -- training view -------------------------------------------------------------------

    @work(thread=True, group="engine", exit_on_error=False, name="training view")
    def _train_worker(self, prompt: str) -> None:
        assert self.driver is not None
        self.post_message(TrainUpdated(prompt, self.driver.train_view(prompt)))

    def on_train_updated(self, message: TrainUpdated) -> None:
        self._train, self._train_prompt = message.view, message.prompt
        if "train" in self._mounted_tabs:
            self.query_one(TrainPanel).view = message.view

    # -- prompt, tree, filter ------------------------------------------------------------

    @on(Input.Submitted, "#prompt")
    def _prompt_submitted(self, event: Input.Submitted) -> None:
        self.prompt = event.value
        self._update_detail()
        self.query_one(ModuleTree).focus()
        active = self.query_one(TabbedContent).active
        if active in ("train", "generate"):
            self._generation = None if active == "generate" else self._generation
            self._feed_tab(active)

    @on(ModuleTree.ModuleHighlighted)
    def _module_highlighted(self, event: ModuleTree.ModuleHighlighted) -> None:
        self.selected_path = event.path
        self.refresh_bindings()

    def action_filter_tree(self) -> None:
        box = self.query_one("#tree-filter", Input)
        box.display = True
        box.focus()

    @on(Input.Changed, "#tree-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.query_one(ModuleTree).name_filter = event.value

    @on(Input.Submitted, "#tree-filter")
    def _filter_submitted(self) -> None:
        tree = self.query_one(ModuleTree)
        tree.select_first_match()
        tree.focus()

    def action_focus_tree(self, now: bool = False) -> None:
        box = self.query_one("#tree-filter", Input)
        if box.has_focus and not box.value:
            box.display = False
        tree = self.query_one(ModuleTree)
        if now:  # before the next key is handled, not after the pending messages
            self.screen.set_focus(tree)
        else:
            tree.focus()

    def action_focus_prompt(self) -> None:
        self.query_one("#prompt", Input).focus()

    def help_sections(self) -> list[tuple[str, list[KeyRow]]]:
        """Every key, by the pane where it works, from the live bindings."""
        tables = binding_rows(RowTable.BINDINGS)  # Home / End in every table
        tab_names = " ".join(self.TAB_LABELS.get(tab, title) for tab, title in self.TABS)
        moves = ("filter_tree", "focus_tree", "focus_prompt")
        extra = [b for b in self.BINDINGS if b.action in moves]
        return [
            (
                "Anywhere",
                binding_rows(self.KEY_BINDINGS, self.KEY_TITLES)
                + binding_rows(extra)
                + [
                    (f"1–{len(self.TABS)}", "Tabs", tab_names),
                    ("Ctrl+P", "Palette", "every command by name"),
                ],
            ),
            (
                "Module tree",
                [
                    ("↑ ↓", "Move", "select a module (b and a act on it)"),
                    ("Space Enter", "Expand", "expand or collapse the module"),
                    ("Tab", "Next pane", "to the tabs (the tree narrows to a rail)"),
                ],
            ),
            ("Stats", binding_rows(StatsPanel.BINDINGS) + tables),
            ("Params", binding_rows(ParamTable.BINDINGS) + tables),
            (
                "Attention",
                [("← → ↑ ↓", "Cursor", "the query row / key column under the cursor")]
                + binding_rows(AttentionPanel.BINDINGS),
            ),
            (
                "Generate",
                [("f Enter", "Force", "append the highlighted candidate as the next token")]
                + [("g G", "Step / run N", "one token / N tokens (N in the pane)")]
                + tables,
            ),
            ("Train", tables),
        ]

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.help_sections()))

    def action_quit(self) -> None:
        if self.driver is not None:
            self.driver.close()
        self.exit(0)

    # -- which keys apply now ------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self.ENGINE_ACTIONS and self.driver is None:
            return False
        if action == "abort":
            return self.paused_at is not None or self.stepping
        if action == "step_out":
            return self.paused_at is not None
        if action == "ablate":
            return self._selected_kind() in ("attn", "mlp")
        return True
