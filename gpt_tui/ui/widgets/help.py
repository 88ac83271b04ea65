"""The help screen: what each pane shows and every key, generated from the live bindings."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

PANES = [
    (
        "Status",
        "model, family, device, dtype, parameters, memory, weights source; "
        "the stepper: idle, paused at a module (in/out), running",
    ),
    (
        "Module tree",
        "every module with its class, last output shape and parameters; "
        "→ paused module (▶ ▼ collapsed / expanded), ● breakpoint, ⊘ ablated, "
        "red: NaN/Inf output. / filters by name",
    ),
    (
        "Stats",
        "one row per probe in execution order: shape, mean, std, rms, min, max, "
        "|max|, zero %, NaN, Inf; sparkline of the residual rms across layers; "
        "d shows the change against the previous run",
    ),
    (
        "Params",
        "every parameter grouped per block with subtotals, share bars, bytes; "
        "tied weights marked; t sorts by size",
    ),
    (
        "Attention",
        "one layer and head as a heatmap (two query rows per line); arrows move "
        "the cursor; [ ] layer, , . head, m mode (pattern / mask / overlay), v all heads",
    ),
    (
        "Generate",
        "the text so far with the newest token highlighted, the next token's "
        "candidates (enter or f forces one), the KV cache fill, the logit lens",
    ),
    ("Diagram", "the architecture drawn from the config with the last run's shapes"),
    ("Train", "loss on the prompt and gradient norms per parameter"),
]


class HelpScreen(ModalScreen[None]):
    """Panes and keys; any of escape, q or ? closes it."""

    BINDINGS = [
        Binding("escape,q,question_mark", "app.pop_screen", "Close help", id="help.close"),
    ]

    def __init__(self, bindings: list[Binding], titles: dict[str, str] | None = None) -> None:
        super().__init__()
        self._keys = bindings
        self._titles = titles or {}

    def compose(self) -> ComposeResult:
        panes = Table.grid(padding=(0, 2))
        panes.add_column(style="bold cyan", no_wrap=True)
        panes.add_column()
        for name, text in PANES:
            panes.add_row(name, text)
        keys = Table.grid(padding=(0, 2))
        keys.add_column(style="bold yellow", no_wrap=True)
        keys.add_column(style="bold", no_wrap=True)
        keys.add_column(style="dim")
        for b in self._keys:
            keys.add_row(
                b.key_display or b.key, self._titles.get(b.action, b.description), b.tooltip
            )
        with VerticalScroll(id="help-body"):
            yield Static(Text("gpt-tui help", style="bold reverse"), classes="help-title")
            yield Static(panes)
            yield Static(Text("\nKeys (also in the command palette, ctrl+p)", style="bold"))
            yield Static(keys)
            yield Static(Text("\nescape closes this screen", style="dim"))
