"""The training debugger: one training step on a batch, walked phase by phase.

The phase line and loss, the batch (input over target, aligned), where the step is (a
module's forward output, its gradients in backward, the loss, the optimizer's update),
the gradient and update table, and sparklines over a health run. With the focus here the
step keys drive the training step: s into the next event, n / o to the next phase, c to
the first non-finite value (with the NaN watch, w) or the end; h runs 20 steps of health.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.reactive import reactive
from textual.widgets import Static

from ... import formatting as fmt
from ..messages import IntentFailed, IntentRequested
from .tables import RowTable
from .train_parts import MAX_LAYER_LINES, batch_text, current_text, head_text, health_text

if TYPE_CHECKING:
    from ...engine.analysis.init_rules import ModeFacts
    from ...engine.core.debug_state import TrainingView

BAR_WIDTH = 10
HEALTH_STEPS = 20
LOADING = "the training step: loading the batch…"


class TrainPanel(Vertical):
    """The Train tab. It asks for the Debugger's `train_step` and `train_health` intents
    and shows the `TrainingView` it is fed."""

    DEFAULT_CSS = """
    TrainPanel > #train-head { height: auto; padding: 0 1; }
    TrainPanel > #train-batch { height: auto; max-height: 6; padding: 0 1; }
    TrainPanel > #train-current { height: auto; padding: 0 1; background: $boost; }
    TrainPanel > #train-grads { height: 1fr; }
    TrainPanel > #train-health { height: auto; padding: 0 1; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "train('into')", "Into", tooltip="the next event of the training step"),
        Binding(
            "n", "train('over')", "Phase", tooltip="over the rest of this phase, to the next one"
        ),
        Binding(
            "o",
            "train('out')",
            "Phase",
            show=False,
            tooltip="out of this phase, to the next one (as n: the phases do not nest)",
        ),
        Binding("c", "train('continue')", "Cont", tooltip="to the first NaN/Inf or the end"),
        Binding("h", "health", "Health", tooltip=f"{HEALTH_STEPS} training steps: the curves"),
    ]

    view: reactive[TrainingView | None] = reactive(None, always_update=True)
    ablations: reactive[tuple[str, ...]] = reactive(tuple)
    mode: reactive[ModeFacts | None] = reactive(None)  # the model's dropout, read once

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._shown: list[tuple[str, float, float | None]] | None = None  # the table's rows
        self._failed = False  # the head says the step failed, until a step is shown

    def compose(self) -> ComposeResult:
        yield Static(LOADING, id="train-head")
        yield Static(id="train-batch")
        yield Static(id="train-current")
        # The sparklines above the table: the table scrolls, they stay in view at 80x24.
        yield Static(id="train-health")
        table = RowTable(id="train-grads")
        table.add_columns("parameter", "‖grad‖", "", "‖Δw‖/‖w‖")
        yield table

    def action_train(self, how: str) -> None:
        self.post_message(IntentRequested("training", "train_step", (how,)))

    def action_health(self) -> None:
        self.post_message(IntentRequested("training", "train_health", (HEALTH_STEPS,)))

    def on_intent_failed(self, event: IntentFailed) -> None:
        """The step failed (a batch it could not make, as from a one-token prompt): said
        here at once, in place of "loading the batch…", with what to do."""
        if event.worker == "training":
            head = Text(f"Training step failed: {event.error}", style="bold red")
            head.append("\np changes the prompt (the batch) · s tries the step again", style="dim")
            self.query_one("#train-head", Static).update(head)
            self._failed = True

    def watch_ablations(self) -> None:
        self.watch_view(self.view)

    def watch_mode(self) -> None:
        self.watch_view(self.view)

    def on_resize(self, event: events.Resize) -> None:
        self.watch_view(self.view)

    def watch_view(self, view: TrainingView | None) -> None:
        """The step's parts, or none: with no view (a new prompt, a failed step) an older
        batch's step is not left up under the head."""
        if not self.is_mounted:
            return
        for part in ("#train-batch", "#train-current", "#train-health", "#train-grads"):
            self.query_one(part).display = view is not None
        if view is None:
            if not self._failed:
                self.query_one("#train-head", Static).update(LOADING)
            return
        self._failed = False
        width = max(40, self.size.width - 2)
        mode = self.mode.line(view.options.train_mode) if self.mode is not None else ""
        self.query_one("#train-head", Static).update(head_text(view, self.ablations, mode))
        self.query_one("#train-batch", Static).update(batch_text(view.batch, width))
        self.query_one("#train-current", Static).update(current_text(view))
        health = self.query_one("#train-health", Static)
        layers = max(MAX_LAYER_LINES, (self.app.size.height - 24) // 2)  # more when tall
        health.styles.max_height = layers + 5  # loss, ‖grad‖ and the flags
        health.update(health_text(view.health, width, view.options, layers))
        health.display = view.health is not None and bool(view.health.steps)
        self._fill_table(view)

    def _fill_table(self, view: TrainingView) -> None:
        table = self.query_one("#train-grads", RowTable)
        report = view.report
        rows = report.params if report is not None else ()
        shown = [(r.name, r.grad_norm, r.update_ratio) for r in rows]
        if self._shown == shown:
            return  # the same step: keep the cursor where the user left it
        self._shown = shown
        table.clear()
        finite = [g for _, g, _ in shown if math.isfinite(g)]
        top = max(finite, default=0.0)
        for name, grad, ratio in sorted(shown, key=lambda r: -_finite_or_inf(r[1])):
            bar = fmt.bar(grad / top if top and math.isfinite(grad) else 0, BAR_WIDTH)
            table.add_row(
                name,
                Text(fmt.num(grad), justify="right", style="" if math.isfinite(grad) else "red"),
                Text(bar, style="magenta"),
                Text("—" if ratio is None else f"{ratio:.1e}", justify="right", style="dim"),
                key=name,
            )


def _finite_or_inf(x: float) -> float:
    """Sort key: NaN/Inf gradients first, then the largest."""
    return x if math.isfinite(x) else math.inf
