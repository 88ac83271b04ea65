"""The training view: the loss on the prompt and every parameter's gradient norm, sorted."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.reactive import reactive
from textual.widgets import Static

from ... import formatting as fmt
from .tables import RowTable

if TYPE_CHECKING:
    from ...engine.train_view import TrainView

BAR_WIDTH = 14


class TrainPanel(Vertical):
    """A headline with the loss and a table of gradient norms, largest first."""

    view: reactive[TrainView | None] = reactive(None, always_update=True)
    ablations: reactive[tuple[str, ...]] = reactive(tuple)

    def compose(self) -> ComposeResult:
        yield Static("the loss and gradients of one backward pass on the prompt", id="train-head")
        table = RowTable(id="train-grads")
        table.add_columns("parameter", "shape", "‖grad‖", "", "‖param‖", "ratio")
        yield table

    def watch_ablations(self) -> None:
        self.watch_view(self.view)

    def watch_view(self, view: TrainView | None) -> None:
        if view is None or not self.is_mounted:
            return
        head = Text()
        head.append("loss ", style="dim")
        head.append(f"{view.loss:.4f}", style="bold yellow")
        head.append(f" over {view.n_targets} next-token targets", style="dim")
        head.append(f"  ·  {view.trainable_params:,} trainable parameters", style="dim")
        if view.note:
            head.append(f"\n{view.note}", style="italic yellow")
        if self.ablations:  # the loss and gradients are those of the ablated model
            head.append(f"\n⊘ ablations active: {'; '.join(self.ablations)}", style="bold yellow")
        self.query_one("#train-head", Static).update(head)
        table = self.query_one("#train-grads", RowTable)
        table.clear()
        top = max((r.grad_norm for r in view.rows), default=0.0)
        for r in view.rows:
            table.add_row(
                r.name,
                fmt.shape(r.shape),
                Text(fmt.num(r.grad_norm), justify="right"),
                Text(fmt.bar(r.grad_norm / top if top else 0, BAR_WIDTH), style="magenta"),
                Text(fmt.num(r.param_norm), justify="right", style="dim"),
                Text("—" if r.ratio is None else f"{r.ratio:.2e}", justify="right", style="dim"),
                key=r.name,
            )
