"""The Compare tab: the open run against a run B (diff), activation patching from the
prompt into a corrupted one, and direct logit attribution; one result table at a time."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.widgets import Button, Input, Static

from ... import formatting as fmt
from ...io.tokenizers import WHITESPACE_GLYPHS
from ..messages import IntentRequested
from .attention_heatmap import AttentionHeatmap
from .attention_pictures import ramp, rgb
from .tables import RowTable

if TYPE_CHECKING:
    from ...engine.analysis.attribution import Attribution
    from ...engine.analysis.compare import Comparison
    from ...engine.analysis.patching import PatchSweep
    from ...engine.core.debug_state import CompareView

BAR_WIDTH = 16
WHATS = ("resid_pre", "attn", "mlp", "heads")
B_BOXES = ("compare-b-prompt", "compare-b-dtype", "compare-b-checkpoint", "compare-b-model-file")
HINT = (
    "B is A with the changes above · Diff: probe by probe · Patch: the prompt (clean) into "
    "B's prompt (corrupted) · Attribute: which parts write the answer's logit · Enter: "
    "Diff in B's boxes, Patch in the others (Attribute without B's prompt) · B's prompt and "
    "the tokens as typed: a space is one, \\n a newline, ␣ alone a space"
)
GLYPH_CHARACTERS = {glyph: char for char, glyph in WHITESPACE_GLYPHS.items()}


class ComparePanel(Vertical):
    """The form for run B and the answer tokens, three buttons, and the result."""

    DEFAULT_CSS = """
    ComparePanel #compare-b, ComparePanel #compare-tokens { height: 1; margin-bottom: 1; }
    ComparePanel Input { width: 1fr; margin-right: 1; }
    ComparePanel Button { margin-right: 1; }
    ComparePanel #compare-head { height: auto; padding: 0 1; }
    ComparePanel #compare-table, ComparePanel #compare-heatmap { height: 1fr; }
    ComparePanel #compare-cell { height: auto; padding: 0 1; }
    """

    view: reactive[CompareView | None] = reactive(None, always_update=True)

    def compose(self) -> ComposeResult:
        with Horizontal(id="compare-b"):
            yield Input(placeholder="B prompt (A's)", id="compare-b-prompt", compact=True)
            yield Input(placeholder="B dtype", id="compare-b-dtype", compact=True)
            yield Input(placeholder="B checkpoint", id="compare-b-checkpoint", compact=True)
            yield Input(placeholder="B model file", id="compare-b-model-file", compact=True)
        with Horizontal(id="compare-tokens"):
            yield Input(placeholder="answer token", id="compare-answer", compact=True)
            yield Input(placeholder="wrong token", id="compare-wrong", compact=True)
            yield Input(placeholder="resid_pre", id="compare-what", compact=True)
            yield Button("Diff", id="compare-diff", compact=True)
            yield Button("Patch", id="compare-patch", compact=True)
            yield Button("Attribute", id="compare-attribute", compact=True)
        yield Static(Text(HINT, style="dim"), id="compare-head")
        yield RowTable(id="compare-table", classes="compare-shown")
        yield AttentionHeatmap(id="compare-heatmap")
        yield Static("", id="compare-cell")

    def on_mount(self) -> None:
        self._show_heatmap(False)

    def _show_heatmap(self, shown: bool) -> None:
        for name, on in (("table", not shown), ("heatmap", shown)):
            self.query_one(f"#compare-{name}").display = on
            self.query_one(f"#compare-{name}").set_class(on, "compare-shown")  # key 8 focuses
        self.query_one("#compare-cell").display = shown

    def _text(self, name: str) -> str:
        return self.query_one(f"#compare-{name}", Input).value.strip()

    def _typed(self, name: str) -> str:
        """A prompt or token box as meant: never stripped (a space is a token), with the
        prompt bar's escapes (\\n, \\t, \\xNN), and a glyph the tables draw for a space or
        a newline, alone in the box, read as that character."""
        value = fmt.unescape_prompt(self.query_one(f"#compare-{name}", Input).value)
        return GLYPH_CHARACTERS.get(value, value)

    def request(self, kind: str) -> tuple[str, tuple] | None:
        """The Debugger call for a button, or None after saying what is missing."""
        from ...engine.analysis.compare_intents import BSpec

        prompt = self._typed("b-prompt")
        answer, wrong = self._typed("answer"), self._typed("wrong")
        if kind == "diff":
            spec = BSpec(
                prompt=prompt or None,
                dtype=self._text("b-dtype") or None,
                checkpoint=self._text("b-checkpoint") or None,
                model_file=self._text("b-model-file") or None,
            )
            return "compare_runs", (spec,)
        if kind == "patch":
            what = self._text("what") or "resid_pre"
            if not prompt or not answer or not wrong or what not in WHATS:
                self._say(
                    "Patch needs B's prompt (the corrupted one), the answer and the wrong "
                    f"token; what to patch is one of {', '.join(WHATS)}"
                )
                return None
            return "patch_runs", (prompt, answer, wrong, what)
        if not answer:
            self._say("Attribute needs the answer token (and a wrong one to compare with)")
            return None
        return "attribute_logit", (answer, wrong or None)

    def _say(self, message: str) -> None:
        self.query_one("#compare-head", Static).update(Text(message, style="bold yellow"))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self._run((event.button.id or "").removeprefix("compare-"))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter runs the form its box belongs to, as a click on its button would."""
        event.stop()
        if event.input.id in B_BOXES:
            self._run("diff")
        elif event.input.id == "compare-what" or self._typed("b-prompt"):
            self._run("patch")
        else:  # the answer tokens alone: which parts write the answer's logit
            self._run("attribute")

    def _run(self, kind: str) -> None:
        request = self.request(kind)
        if request is not None:
            self.post_message(IntentRequested("compare", *request))

    def watch_view(self, view: CompareView | None) -> None:
        if view is None or not self.is_mounted:
            return
        table = self.query_one("#compare-table", RowTable)
        self._show_heatmap(view.sweep is not None)
        if view.sweep is not None:
            table.clear(columns=True)
            head = self._show_sweep(view.sweep, view.tokens)
        elif view.comparison is not None:
            head = _show_diff(table, view.comparison)
        elif view.attribution is not None:
            head = _show_attribution(table, view.attribution)
        else:
            table.clear(columns=True)
            return
        head.append(f"\n{view.label}", style="dim")
        for note in view.notes:
            head.append(f"\nnote: {note}", style="yellow")
        self.query_one("#compare-head", Static).update(head)

    def _show_sweep(self, sweep: PatchSweep, tokens: tuple[str, ...]) -> Text:
        """The sweep as a heatmap, layers down and positions (or heads) across."""
        heatmap = self.query_one("#compare-heatmap", AttentionHeatmap)
        heatmap.show(
            np.asarray(sweep.values, dtype=np.float64),
            None,
            _column_labels(sweep, tokens),
            "pattern",
            rows=tuple(f"L{layer}" for layer in sweep.layers),
            colour=signed_ramp,
            corner="layer \\ " + ("head" if sweep.what == "heads" else "pos"),
        )
        self._report_cell(*heatmap.cursor)
        return Text(
            f"{sweep.what} patched: clean logit diff {sweep.clean_diff:.4g}, corrupted "
            f"{sweep.corrupted_diff:.4g} (1 = clean restored, 0 = still corrupted)"
        )

    def on_attention_heatmap_cursor_moved(self, event: AttentionHeatmap.CursorMoved) -> None:
        event.stop()
        self._report_cell(event.row, event.col)

    def on_attention_heatmap_scrolled(self, event: AttentionHeatmap.Scrolled) -> None:
        event.stop()

    def _report_cell(self, row: int, col: int) -> None:
        """The legend, then the value under the heatmap's cursor (arrows move it)."""
        view = self.view
        if view is None or view.sweep is None:
            return
        sweep = view.sweep
        text = sweep_legend()
        if sweep.what == "heads":
            text.append(f"\nL{sweep.layers[row]} head {sweep.columns[col]}", style="dim")
        else:
            text.append(f"\nL{sweep.layers[row]} pos {sweep.columns[col]} ", style="dim")
            text.append(repr(_column_labels(sweep, view.tokens)[col]), style="bold")
        value = sweep.values[row][col]
        text.append(f"  {value:+.4f}", style="bold yellow")
        text.append(f" = {value:.0%} of the clean difference restored", style="dim")
        self.query_one("#compare-cell", Static).update(text)


def _show_diff(table: RowTable, result: Comparison) -> Text:
    first = result.first_divergence
    rows = []
    for r in result.records:
        mark = "◀ first" if first is not None and r.name == first.name else ""
        style = "bold red" if mark else ("yellow" if r.diverged else "")
        rows.append(
            (
                Text(r.name, style=style),
                Text(fmt.num(r.max_abs_diff), justify="right"),
                Text(fmt.num(r.rel_diff), justify="right"),
                Text(f"{r.cosine:.6f}", justify="right"),
                Text(mark or ("≠" if r.diverged else ""), style="bold red"),
            )
        )
    table.fill(("probe", "max |Δ|", "‖Δ‖/‖a‖", "cos", ""), rows)
    if first is None:
        return Text(f"no divergence: every probe agrees within {result.tolerance:g} relative")
    return Text(f"first divergence: {first.message}", style="bold red")


def _column_labels(sweep: PatchSweep, tokens: tuple[str, ...]) -> tuple[str, ...]:
    if sweep.what == "heads":
        return tuple(f"h{h}" for h in sweep.columns)
    return tuple(tokens[t] if t < len(tokens) else str(t) for t in sweep.columns)


def signed_ramp(v: float) -> tuple[int, int, int]:
    """The attention ramp for 0..1 (and beyond, clipped); blue, deepening, for a patch
    that moves the answer the wrong way."""
    if v >= 0:
        return ramp(v)
    x = min(-v, 1.0) ** 0.5
    return (round(20 * x), round(90 * x), round(40 + 215 * x))


def sweep_legend(cells: int = 6) -> Text:
    """The colour scale from -1 through 0 to 1."""
    text = Text(no_wrap=True)
    text.append("-1 ", style="dim")
    for i in range(cells):
        text.append(" ", style=f"on {rgb(signed_ramp(-1 + i / cells))}")
    text.append(" 0 ", style="dim")
    for i in range(cells + 1):
        text.append(" ", style=f"on {rgb(signed_ramp(i / cells))}")
    text.append(" 1", style="dim")
    return text


def _show_attribution(table: RowTable, result: Attribution) -> Text:
    ranked = result.ranked()
    top = max((abs(c.value) for c in ranked), default=0.0) or 1.0
    rows = [
        (
            c.name,
            Text(f"{c.value:+.4f}", justify="right"),
            Text(fmt.bar(abs(c.value) / top, BAR_WIDTH), style="green" if c.value > 0 else "red"),
        )
        for c in ranked
    ]
    table.fill(("component", "share", ""), rows)
    head = Text(
        f"sum {result.total:.6g}, pre-softcap logit difference {result.logit_diff:.6g} "
        f"(model output {result.model_logit_diff:.4g}) at position {result.position}"
    )
    for note in result.notes:
        head.append(f"\n{note}", style="yellow")
    return head
