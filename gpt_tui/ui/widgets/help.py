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
        "≠ first divergence of the last diff, red: NaN/Inf output. / filters by name",
    ),
    (
        "Stats",
        "one row per probe in execution order: shape, NaN, Inf, mean, std, min, max, "
        "|max|, rms, zero %; sparkline of the residual rms across layers; "
        "d shows the change against the previous run. A focused tab takes the width: "
        "the tree narrows (or steps aside below 100 columns) until Esc",
    ),
    (
        "Params",
        "every parameter grouped per block with subtotals, share bars, bytes; "
        "tied weights marked; t sorts by size; i: each parameter's std beside the init "
        "rule that set it, and the model's mode (train / eval, dropout)",
    ),
    (
        "Attention",
        "one layer and head as a heatmap (two query rows per line); arrows move "
        "the cursor; [ ] layer, , . head, m mode (pattern / mask / overlay), v all heads",
    ),
    (
        "Generate",
        "the text so far with the newest token highlighted, the next token's "
        "candidates (enter or f forces one), the KV cache fill, the logit lens; "
        "y: why the top candidate and not the highlighted one (attribution bars)",
    ),
    ("Diagram", "the architecture drawn from the config with the last run's shapes"),
    (
        "Train",
        "a training step by phase (s n o c): the batch, forward, the loss, backward module "
        "by module, the optimizer's update ratios, the mode the step runs in (train / eval, "
        "dropout); h: health over 20 steps",
    ),
    (
        "Code",
        "the pass paused at a line of the model's code (N S U C): the function's source "
        "(→ current line, ● line breakpoint), the stack, the locals, expressions and a "
        "tensor viewer (colour-scaled values, row / column norms, histogram; probabilities "
        "open at the largest, g goes to an index)",
    ),
]


# Human names for Textual's key names.
KEY_NAMES = {
    "question_mark": "?",
    "slash": "/",
    "escape": "Esc",
    "enter": "Enter",
    "space": "Space",
    "tab": "Tab",
    "home": "Home",
    "end": "End",
    "up": "↑",
    "down": "↓",
    "left": "←",
    "right": "→",
    "left_square_bracket": "[",
    "right_square_bracket": "]",
    "comma": ",",
    "full_stop": ".",
    "left_curly_bracket": "{",
    "right_curly_bracket": "}",
    "ctrl+p": "Ctrl+P",
}


def key_name(keys: str) -> str:
    """`escape,q` -> `Esc q`; `left_square_bracket` -> `[`."""
    return " ".join(KEY_NAMES.get(k.strip(), k.strip()) for k in keys.split(","))


# One row of the keys table: (keys as the user presses them, what, more detail).
KeyRow = tuple[str, str, str]


def binding_rows(bindings: list[Binding], titles: dict[str, str] | None = None) -> list[KeyRow]:
    titles = titles or {}
    return [(key_name(b.key), titles.get(b.action, b.description), b.tooltip) for b in bindings]


class HelpScreen(ModalScreen[None]):
    """Panes and every key, by the pane they work in; escape, q or ? closes it."""

    BINDINGS = [
        Binding("escape,q,question_mark", "app.pop_screen", "Close help", id="help.close"),
    ]

    def __init__(self, sections: list[tuple[str, list[KeyRow]]]) -> None:
        super().__init__()
        self.sections = sections  # (pane, rows): what the screen lists, for tests too

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
        for section, rows in self.sections:
            keys.add_row(Text(section, style="bold cyan underline"), "", "")
            for key, title, detail in rows:
                keys.add_row(key, title, detail)
        with VerticalScroll(id="help-body"):
            yield Static(Text("gpt-tui help", style="bold reverse"), classes="help-title")
            yield Static(panes)
            yield Static(Text("\nKeys by pane (the engine keys also in the palette, Ctrl+P)"))
            yield Static(keys)
            yield Static(Text("\nEsc, q or ? closes this screen", style="dim"))

    def on_mount(self) -> None:
        self.query_one("#help-body").focus()  # arrows and PageDown scroll at once
