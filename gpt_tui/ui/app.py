"""The gpt-tui app: a module tree on the left, tabs on the right, the prompt at the bottom.

The app renders `DebugState` snapshots and posts intents. Each key is one intent of the
engine's `Debugger`, run in a thread worker in the order the keys were pressed (see
`intents.py`); the worker posts the snapshot back and `_render` shows it everywhere: the
tree, the status bar (its stepper field: `stepper_line.py`) and the tabs (`tab_views.py`).
torch loads inside the first worker, so the screen paints before the model exists.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from textual import events, on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, Static, TabbedContent, TabPane
from textual.worker import Worker, WorkerState

from ..config_file import AppConfig
from ..errors import describe_error
from . import keys
from .commands import GptTuiCommands
from .daemon import in_daemon
from .export import copy_focused, export_screen
from .help_sections import help_sections
from .intents import Intents
from .key_queue import KeyQueue
from .messages import IntentRequested, SessionFailed, SessionOpened, StateUpdated
from .opening import NARROW_WIDTH, TreeHint, open_debugger, show_open_error, update_layout
from .quit_guard import QuitGuard
from .settings import UserSettings
from .stepper_line import StepperLine
from .tab_views import TEXT_BOXES, TabViews
from .tabs import TABS
from .type_ahead import SubmitGate, open_box_now
from .widgets.attention_heatmap import AttentionPanel
from .widgets.code_pane import CodePane
from .widgets.footer import KeyFooter
from .widgets.generation import GeneratePanel
from .widgets.help import HelpScreen
from .widgets.loading import LoadingPanel
from .widgets.module_pane import ModulePane
from .widgets.module_tree import ModuleTree
from .widgets.prompt_bar import PromptBar
from .widgets.status import StatusBar
from .worker_titles import failed_title

if TYPE_CHECKING:
    from ..engine.analysis.init_rules import ModelFacts
    from ..engine.core.debug_state import DebugState, ModelInfo
    from ..engine.core.session import ModelSpec, ProgressFn, Session
    from ..engine.debugger import Debugger

# Set to 1 to leave out the memory figure (it changes between runs): snapshots, demos.
HIDE_MEMORY_ENV = "GPT_TUI_HIDE_MEMORY"
MEMORY_INTERVAL = 2.0


class GptTuiApp(App[int]):
    """The inspector for one model: `GptTuiApp(ModelSpec(...)).run()`."""

    CSS_PATH = "app.tcss"
    TITLE = "gpt-tui"
    COMMANDS = App.COMMANDS | {GptTuiCommands}
    ENABLE_COMMAND_PALETTE = True
    AUTO_FOCUS = "ModuleTree"
    BINDINGS: ClassVar[list[Binding]] = keys.BINDINGS

    def __init__(
        self,
        spec: ModelSpec,
        *,
        show_memory: bool | None = None,
        session: Session | None = None,
        setup: Callable[[Debugger], object] | None = None,
        config: AppConfig | None = None,
        config_warnings: Sequence[str] = (),
        config_file: Path | None = None,
    ) -> None:
        """`session`: an open one to inspect (a live model) instead of opening `spec`;
        `setup(debugger)` runs before the first frame (a prompt, a batch to start on);
        `config`: the user's config file read (`config_file`, where a theme picked in the
        palette is kept), with its warnings shown once the screen is up."""
        super().__init__()
        self.settings = UserSettings(config or AppConfig(), config_warnings, config_file)
        self.spec = spec
        self._session, self._setup = session, setup
        if show_memory is None:
            show_memory = os.environ.get(HIDE_MEMORY_ENV, "") in ("", "0")
        self.show_memory = show_memory
        self.debugger: Debugger | None = None
        self.info: ModelInfo | None = None
        self.state: DebugState | None = None  # the last snapshot rendered
        self.selected_path: str | None = None
        self.open_error: str | None = None
        self._intents = Intents(self, lambda: self.debugger)
        self._tabs = TabViews(self, self._intents)  # built tabs and the views they asked for
        self._stepper = StepperLine(self, self._intents)  # the status field, and x
        self._waiting = KeyQueue(self)  # keys pressed while the model opens
        self._quit_guard = QuitGuard(self, self._intents)  # q asks before losing a pause
        self._submits = SubmitGate(self)  # keys behind a box's Enter wait for its intent
        self._pressed = False  # a mouse button is down: the layout waits for its release
        self.facts: ModelFacts | None = None  # init rows, mode: read once the model is open

    # -- what the snapshot says ----------------------------------------------------------

    @property
    def prompt(self) -> str:
        return self.state.prompt if self.state else ""

    @property
    def stepping(self) -> bool:
        """A step move is queued or running."""
        return self._stepper.stepping

    @property
    def paused_at(self) -> str | None:
        return self.state.paused_at if self.state else None

    @property
    def ablations(self) -> tuple[str, ...]:
        return self.state.ablations if self.state else ()

    # -- layout --------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        with Horizontal(id="body"):
            yield ModulePane(id="left")
            with Vertical(id="right"):
                yield LoadingPanel(id="loading")
                yield Static("", id="message")
                with TabbedContent(id="tabs"):
                    for tab in TABS:
                        yield TabPane(tab.label, id=tab.id)
                yield TreeHint()
        yield PromptBar(id="prompt-bar")
        yield KeyFooter(keys.FOOTER_RANK)

    def on_mount(self) -> None:
        self.settings.apply(self)
        self.query_one("#tree").loading = True
        self.query_one("#tabs").loading = True
        self.query_one("#message").display = False
        progress = self.query_one(LoadingPanel).listener()
        self.run_worker(self._opening(progress), group="open", exit_on_error=False)

    # -- opening the model ---------------------------------------------------------------

    async def _opening(self, progress: ProgressFn) -> None:
        spec, session, setup = self.spec, self._session, self._setup
        self.post_message(await in_daemon(lambda: open_debugger(spec, session, setup, progress)))

    async def _fetch_facts(self, debugger: Debugger) -> None:
        """Init rows, train/eval mode and a line to break at, read from the model once."""
        from ..engine.analysis.init_rules import model_facts

        session = debugger.session
        self.facts = await in_daemon(lambda: model_facts(session.model, session.family))
        self._tabs.feed_all()

    async def on_session_opened(self, message: SessionOpened) -> None:
        self.debugger = message.debugger
        self.info = info = message.info
        self.query_one(LoadingPanel).display = False
        bar = self.query_one(PromptBar)
        bar.prompt = message.state.prompt
        bar.enable()
        self.query_one("#tree").loading = False
        self.query_one("#tabs").loading = False
        self.query_one(StatusBar).info = info
        self.state = message.state
        self._update_detail()  # the prompt in the status line from the first frame on
        if info.notes:
            note = "; ".join(info.notes)
            # Long enough to read (a watch's finding, in gpt_tui.watch(on="open"), is long).
            self.notify(note, title="note", timeout=max(5.0, len(note) / 15))
        tree = self.query_one(ModuleTree)
        tree.summary = info.summary
        if self.show_memory:
            self._update_memory()
            self.set_interval(MEMORY_INTERVAL, self._update_memory)
        await self._tabs.mount(self.query_one(TabbedContent).active)
        # The first focus is set here, at once, not deferred: a key that arrives while
        # this handler awaits (Esc, pressed as the first frame shows) acts after it.
        if self.size.width < NARROW_WIDTH:  # the tree steps aside so every tab name shows
            await self.action_show_tab(self.query_one(TabbedContent).active)
        else:
            self.screen.set_focus(tree)
        self._render(message.state)
        self.refresh_bindings()
        self.run_worker(self._fetch_facts(message.debugger), group="facts", exit_on_error=False)
        self._waiting.replay()

    def on_session_failed(self, message: SessionFailed) -> None:
        show_open_error(self, message.error)

    # -- intents -------------------------------------------------------------------------

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if worker.name == "stepper":
            self._stepper.show()
        if event.state == WorkerState.ERROR:
            error = describe_error(worker.error) if worker.error else "unknown error"
            if worker.group == "open":
                show_open_error(self, error)
                return
            self.notify(error, title=failed_title(worker.name), severity="error", timeout=8)
            self._tabs.failed(worker.name, error)
            if worker.name in ("stepper", "run") or self.paused_at is not None:
                self._stepper.failed(error)
            debugger = self.debugger
            if debugger is not None:  # bring the display in line with what is true now
                self._intents.start("refresh", lambda move: debugger.state())
        if worker.group == "engine":  # the busy mark, and keys that apply now
            self._update_detail()
            self.refresh_bindings()

    def on_intent_requested(self, message: IntentRequested) -> None:
        """A pane asks for a Debugger intent; the snapshot it returns is rendered."""
        self._tabs.ask_again(message.worker)
        kwargs = dict(message.kwargs)
        if message.progress:
            kwargs["progress"] = self._progress
        self._intents.call(message.worker, message.method, *message.args, **kwargs)

    def on_state_updated(self, message: StateUpdated) -> None:
        state = message.state
        if self.state is not None and state.seq < self.state.seq:
            return  # taken before the one shown
        self._stepper.arrived(state, message.name)
        if message.name == "prompt" and self.query_one("#prompt", Input).has_focus:
            self.query_one(ModuleTree).focus()
        if message.name == "ablation" and state.message:
            self.notify(state.message, title="interventions")
        if message.name in ("breakpoint", "generating") and state.message:
            self.notify(state.message, timeout=4)
        self._render(state)

    def _render(self, state: DebugState) -> None:
        """Show a snapshot everywhere: tree, status, and every mounted tab."""
        self.state = state
        self.query_one(ModuleTree).show_state(state)
        self.query_one(PromptBar).prompt = state.prompt
        self._stepper.show()
        self._update_detail()
        self._tabs.render(state)
        self.refresh_bindings()

    def _update_memory(self) -> None:
        if self.debugger is not None:
            self.query_one(StatusBar).memory = self.debugger.memory()

    def _update_detail(self) -> None:
        if self.state is not None:
            self.query_one(StatusBar).show_state(self.state, busy=self._intents.pending > 0)

    # -- keys ----------------------------------------------------------------------------

    async def on_event(self, event: events.Event) -> None:
        """Esc and a key pressed quickly arrive as `alt+<key>` (see `keys.after_escape`):
        replayed as the two keys the user pressed."""
        if self.info is None and not self.open_error and self._waiting.hold(event):
            return
        if isinstance(event, events.Key) and not event.is_forwarded:  # not bubbled back up
            if self._submits.hold(event):
                return
            self._quit_guard.key(event)
            if await open_box_now(self, event):
                return
            self._submits.submitting(event)
        char = keys.after_escape(event.key) if isinstance(event, events.Key) else None
        if char is None:
            pressed = isinstance(event, events.MouseDown) and not event.is_forwarded
            released = isinstance(event, events.MouseUp) and not event.is_forwarded
            self._pressed = pressed or (self._pressed and not released)
            await super().on_event(event)  # a release makes the click here
            if released:
                update_layout(self)
            return
        if self.screen is self.screen_stack[0]:
            # Escape's work done now (replayed, it would still be bubbling up from the
            # focused widget when the key arrived), then the key.
            self.action_focus_tree(now=True)
        else:  # a modal screen or the palette: escape closes it
            await super().on_event(events.Key("escape", "\x1b"))
        await super().on_event(events.Key(char, char))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in keys.ENGINE_ACTIONS and self.debugger is None:
            return False
        if action == "abort":
            return self.paused_at is not None or self._intents.running_move() is not None
        if action == "step_out":
            return self.paused_at is not None
        if action == "step_line" and parameters == ("return",):
            return self.state is not None and self.state.frame is not None
        if action == "ablate":
            return self._selected_kind() in ("attn", "mlp")
        return True

    # -- layout: the focused side gets the room -----------------------------------------

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        # Focused by a press: the layout changes once it is released, so the click
        # lands on the widget the press began on, not on what moved under the pointer.
        if not self._pressed:
            update_layout(self)

    def on_resize(self, event: events.Resize) -> None:
        update_layout(self, event.size.width)  # app.size is still the old size here

    # -- tabs ----------------------------------------------------------------------------

    async def action_show_tab(self, tab: str) -> None:
        """Switch tabs and put the keyboard focus in the tab (escape goes back to the tree)."""
        if self.info is not None:
            await self._tabs.show(tab)

    @on(TabbedContent.TabActivated)
    async def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id is not None and self.info is not None:
            await self._tabs.mount(event.pane.id)
            self._tabs.fetch(event.pane.id)
        boxed = event.pane.id in TEXT_BOXES
        rank = keys.FOOTER_RANK_BOX if boxed else keys.FOOTER_RANK
        self.query_one(KeyFooter).rank = {action: i for i, action in enumerate(rank)}
        self.refresh_bindings()

    # -- the forward pass and stepping ----------------------------------------------------

    def action_run(self) -> None:
        note = self._stepper.run_note()  # once: r runs past the breakpoints, the NaN watch
        if note is not None:
            self.notify(note)
        self._intents.call("run", "run")

    def _step(self, how: str) -> None:
        self._intents.call("stepper", "step", how)

    def action_step_over(self) -> None:
        self._step("over")

    def action_step_into(self) -> None:
        self._step("into")

    def action_step_out(self) -> None:
        self._step("out")

    def action_continue(self) -> None:
        self._step("continue")

    async def action_step_line(self, how: str) -> None:
        """A line move; the Code tab comes up to show where it stops."""
        self._intents.call("stepper", "step_line", how)
        await self._show_code()

    async def action_step_token(self) -> None:
        """Step into the next token's forward and sampling; stops in the Code tab."""
        self._intents.call("stepper", "step_token")
        await self._show_code()

    async def _show_code(self) -> None:
        focused = self.focused
        if focused is None or not any(isinstance(w, CodePane) for w in focused.ancestors):
            await self.action_show_tab("code")

    def action_abort(self) -> None:
        """A running move is cancelled at its next module, without waiting for the
        engine; a paused pass is ended by the abort intent."""
        self._stepper.abort()

    def action_toggle_breakpoint(self) -> None:
        path = self.selected_path
        if not path:
            self.notify("select a module in the tree first", timeout=2)
            return
        self._intents.call("breakpoint", "toggle_breakpoint", path)

    def action_toggle_watch(self) -> None:
        on = not (self.state.watch_nonfinite if self.state else False)
        self._intents.call("watch", "set_watch", on)
        state = "on: c stops where NaN/Inf first appears" if on else "off"
        self.notify(f"NaN/Inf watchpoint {state}", timeout=2)

    def action_toggle_leaves(self) -> None:
        on = not (self.state.leaves if self.state else False)
        self._intents.call("leaves", "set_leaves", on)
        state = "on: s and the NaN watch stop at every Linear, norm and activation"
        self.notify(f"leaf probes {state if on else 'off'}", timeout=2)

    # -- interventions -------------------------------------------------------------------

    def _selected_kind(self) -> str | None:
        if self.info is None or self.selected_path is None:
            return None
        node = self.info.summary.modules.get(self.selected_path)
        return node.kind if node is not None else None

    def action_ablate(self) -> None:
        kind = self._selected_kind()
        path = self.selected_path
        if kind not in ("attn", "mlp") or path is None:
            self.notify("select an attention or MLP module in the tree", timeout=2)
            return
        head = self.query_one(AttentionPanel).head if "attention" in self._tabs.mounted else 0
        self._intents.call("ablation", "toggle_ablation", path, kind, head)

    # -- generation ----------------------------------------------------------------------

    def _progress(self, state: DebugState) -> None:
        """Called in the worker after each of N tokens: show the text as it grows."""
        self.post_message(StateUpdated(state, "progress"))

    async def _generate_panel(self) -> GeneratePanel:
        if self.query_one(TabbedContent).active != "generate":
            await self.action_show_tab("generate")
        return self.query_one(GeneratePanel)

    async def action_generate(self) -> None:
        (await self._generate_panel()).request(1)

    async def action_generate_n(self) -> None:
        panel = await self._generate_panel()
        n = panel.run_length()
        if n is not None:
            panel.request(n)

    # -- prompt, tree, filter ------------------------------------------------------------

    @on(PromptBar.Submitted)
    def _prompt_submitted(self, event: PromptBar.Submitted) -> None:
        self._tabs.forget()
        # The box keeps the focus until the prompt is taken: a refused one is mended there.
        self._intents.call("prompt", "set_prompt", event.text)

    @on(ModuleTree.ModuleHighlighted)
    def _module_highlighted(self, event: ModuleTree.ModuleHighlighted) -> None:
        self.selected_path = event.path
        self.refresh_bindings()

    def action_filter_tree(self) -> None:
        self.query_one(ModulePane).open_filter()

    def action_focus_tree(self, now: bool = False) -> None:
        self.query_one(ModulePane).close_empty_filter()
        tree = self.query_one(ModuleTree)
        if now:  # before the next key is handled, not after the pending messages
            self.screen.set_focus(tree)
        else:
            tree.focus()

    def action_focus_prompt(self) -> None:
        self.query_one(PromptBar).edit()

    def action_focus_text_box(self) -> None:
        """The shown tab's own text box (Code: where to break, or the expression when paused
        at a line; Diff: B's prompt), else the prompt: typing there can never set off a
        one-letter key."""
        box = self._tabs.text_box(self.query_one(TabbedContent).active)
        if box is None:
            self.action_focus_prompt()
        else:  # at once: keys typed right after `e` (a paste, a fast typist over SSH) go in
            self.screen.set_focus(box)

    # -- copy and export (ui/export.py) -------------------------------------------------

    def action_copy(self) -> None:
        copy_focused(self)

    def action_export(self) -> None:
        export_screen(self, self.settings.export_dir, self.settings.file)

    # -- help and quit -------------------------------------------------------------------

    def action_help(self) -> None:
        self.push_screen(HelpScreen(help_sections()))

    async def action_quit(self) -> None:
        """Leave at once: the running intent is cancelled at its next check and waiting
        ones are dropped; its hooks and threads go when it has unwound (see close). With
        a pass paused or a move running, only a second q in a row (quit_guard.py)."""
        if not self._quit_guard.should_quit():
            return
        await self._close_debugger()
        self.exit(0)

    async def on_unmount(self) -> None:
        await self._close_debugger()  # however the app ends: no thread or hook left

    async def _close_debugger(self) -> None:
        """Never waits for the engine: the running work is cancelled and unwinds in the
        background. Inside `gpt_tui.inspect` the user's model must be put back first, so
        there it waits for the work's next cancel check, and says so."""
        self._intents.close()
        debugger = self.debugger
        if debugger is None or debugger.close() or self._session is None:
            return
        self.notify("putting your model back: waiting for the running work to stop", timeout=5)
        await asyncio.to_thread(debugger.closed.wait)
