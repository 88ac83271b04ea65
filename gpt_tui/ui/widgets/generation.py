"""The generation pane: sampling settings, the text so far, the current step's candidates
and its logit lens (the next token as each layer's residual stream predicts it).

The pane never calls the engine: it asks for the Debugger's generation intents with
`IntentRequested` (the settings it parsed applied first), and the app hands back a
`GenerationView` through `view`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.geometry import Size
from textual.reactive import reactive
from textual.widgets import Button, DataTable, Input, Label, Static

from ... import formatting as fmt
from ...engine.core.debug_state import GenerationSettings, GenerationView
from ...errors import GptTuiError
from ..messages import IntentRequested
from .tables import RowTable

if TYPE_CHECKING:
    from ...engine.analysis.attribution import Attribution
    from ...engine.core.debug_state import CompareView

BAR_WIDTH = 12
WHY_PARTS = 4  # components shown for "why this token and not that one"


class SettingsError(GptTuiError, ValueError):
    """A sampling setting the user typed cannot be used; the message says which."""


def parse_settings(temperature: str, top_k: str, top_p: str, seed: str) -> GenerationSettings:
    """Settings from the pane's inputs; an empty top-k / top-p means off."""
    try:
        t = float(temperature or "1")
    except ValueError:
        raise SettingsError(f"temperature {temperature!r} is not a number") from None
    if not t >= 0:
        raise SettingsError("temperature must be >= 0 (0 is greedy)")
    k = None
    if top_k.strip():
        if not top_k.strip().isdigit() or int(top_k) == 0:
            raise SettingsError(f"top-k {top_k!r}: a positive whole number, or empty for off")
        k = int(top_k)
    p = None
    if top_p.strip():
        try:
            p = float(top_p)
        except ValueError:
            raise SettingsError(f"top-p {top_p!r} is not a number") from None
        if not 0 < p <= 1:
            raise SettingsError("top-p must be in (0, 1], or empty for off")
    try:
        s = int(seed or "0")
    except ValueError:
        raise SettingsError(f"seed {seed!r} is not a whole number") from None
    return GenerationSettings(temperature=t, top_k=k, top_p=p, seed=s)


def generated_text(view: GenerationView) -> Text:
    """The prompt dim, the generated tokens plain, the newest one highlighted."""
    text = Text()
    text.append(view.prompt, style="dim")
    for piece in view.pieces[:-1]:
        text.append(piece)
    if view.pieces:
        newest = view.pieces[-1]
        shown = fmt.printable_token(newest) if newest.isspace() else newest
        text.append(shown, style="bold black on yellow")
        if "\n" in newest:
            text.append("\n")
    return text


def kv_text(
    view: GenerationView, heads: tuple[int, int, int] | None = None, width: int = 0
) -> Text:
    """The KV cache: its fill, then each layer's key and value shapes and memory, layers
    of one shape together: `KV ▌ 7/128 · L0–3 K 1×4×128×32 V 1×4×128×32 128.0 KiB each ·
    512.0 KiB, 28.0 KiB used`. Without a cache (a model from --model-file), the keys and
    values each layer recomputes per step, from `heads`: (n_layer, n_kv_head, head size).
    Given a `width`, a line breaks between the ` · ` parts, never inside one."""
    parts: list[Text] = []
    if view.cache_fill is None:
        if heads is None:
            return Text()
        n_layer, n_kv, hs = heads
        step = view.step
        t = step.context_len if step is not None else None
        shape = fmt.short_shape((1, n_kv, t, hs)) if t else f"1×{n_kv}×T×{hs}"
        head = Text("KV ", style="dim")
        head.append("no cache: each step recomputes every position", style="yellow")
        layer = Text(f"L0–{n_layer - 1} K ", style="dim")
        layer.append(shape, style="cyan")
        layer.append(" V ", style="dim")
        layer.append(shape, style="cyan")
        return _join_parts([head, layer], width)
    used, size = view.cache_fill
    head = Text("KV ", style="dim")
    head.append(fmt.bar(used / size if size else 0, 8), style="magenta")
    head.append(f" {used}/{size}")
    parts.append(head)
    layers = view.cache_layers
    groups: list[tuple[int, int, tuple]] = []  # first layer, last layer, (k, v, bytes)
    for i, layer in enumerate(layers):
        if groups and groups[-1][2] == layer:
            groups[-1] = (groups[-1][0], i, layer)
        else:
            groups.append((i, i, layer))
    for first, last, (k, v, nbytes) in groups:
        part = Text(f"L{first}" + (f"–{last}" if last > first else ""), style="bold")
        part.append(" K ", style="dim")
        part.append(fmt.short_shape(k), style="cyan")
        part.append(" V ", style="dim")
        part.append(fmt.short_shape(v), style="cyan")
        part.append(f" {fmt.nbytes(nbytes)}" + (" each" if last > first else ""))
        parts.append(part)
    total = sum(nbytes for _, _, nbytes in layers)
    if total:
        parts.append(Text(f"{fmt.nbytes(total)}, {fmt.nbytes(total * used / size)} used"))
    return _join_parts(parts, width)


def _join_parts(parts: list[Text], width: int) -> Text:
    """`a · b · c`, a part that would cross `width` (if given) starting a new line."""
    text, line = Text(), 0
    for part in parts:
        if line and width and line + 3 + part.cell_len > width:
            text.append("\n")
            line = 0
        elif line:
            text.append(" · ")
            line += 3
        text.append_text(part)
        line += part.cell_len
    return text


class KvLine(Static):
    """The KV line, laid out for the width it has (see `kv_text`)."""

    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self._args: tuple[GenerationView, tuple[int, int, int] | None] | None = None

    def show(self, view: GenerationView, heads: tuple[int, int, int] | None) -> None:
        self._args = (view, heads)
        self.refresh(layout=True)

    def _text(self, width: int) -> Text:
        return kv_text(*self._args, width=width) if self._args is not None else Text()

    def render(self) -> Text:
        return self._text(self.content_size.width or self.app.size.width)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return len(self._text(width).wrap(self.app.console, max(width, 1)))


def token_text(label: str) -> str:
    """A token label as the engine writes it for the CLI too (already one printable line:
    `<0x8D>` for a byte, ⏎ for a newline), and an empty one as ␣."""
    return label or "␣"


def lens_line(view: GenerationView) -> Text:
    """`lens  emb 'R' 3%  h0 'e' 12%  h1 'e' 31%`: each layer's top token for the next
    position; green where it already is the model's final choice."""
    line = Text()
    line.append("lens", style="bold")
    if view.lens is None:
        line.append(f"  {view.lens_error or 'not computed'}", style="dim")
        return line
    for layer in view.lens.layers:
        top = layer.tokens[0]
        line.append("  ")
        line.append("emb" if layer.layer < 0 else f"h{layer.layer}", style="dim")
        line.append(" ")
        line.append(token_text(top.label), style="bold green" if layer.final_rank == 0 else "bold")
        line.append(f" {top.prob:.0%}", style="dim")
    return line


class GeneratePanel(Vertical):
    """Settings row, buttons, text so far, step line, lens line, candidates table, and
    (y) why the top candidate and not the highlighted one."""

    DEFAULT_CSS = """
    GeneratePanel #gen-why { height: auto; max-height: 5; }
    """

    BINDINGS = [
        Binding(
            "f",
            "force",
            "Force token",
            id="gen.force",
            tooltip="Append the highlighted candidate as the next token",
        ),
        Binding(
            "y",
            "why",
            "Why not",
            id="gen.why",
            tooltip="Why the top candidate and not the highlighted one: what writes the "
            "difference of their logits",
        ),
    ]

    view: reactive[GenerationView | None] = reactive(None, always_update=True)
    why: reactive[CompareView | None] = reactive(None)  # the snapshot's last attribution

    def __init__(self, seed: int = 0, heads: tuple[int, int, int] | None = None, **kwargs) -> None:
        """`heads`: (n_layer, n_kv_head, head size), for the keys and values a model
        without a KV cache recomputes."""
        super().__init__(**kwargs)
        self.seed = seed
        self.heads = heads
        # The (top, highlighted) token ids asked about, and the generation they were
        # asked of: an attribution is shown only for these.
        self._asked: tuple[int, int, GenerationView] | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(id="gen-settings"):
            yield Label("T")
            yield Input(
                "1.0", id="gen-temperature", compact=True, tooltip="temperature (0 = greedy)"
            )
            yield Label("top-k")
            yield Input("", id="gen-top-k", compact=True, placeholder="off", tooltip="top-k")
            yield Label("top-p")
            yield Input("", id="gen-top-p", compact=True, placeholder="off", tooltip="top-p")
            yield Label("seed")
            yield Input(str(self.seed), id="gen-seed", compact=True, tooltip="sampling seed")
            yield Label("N")
            yield Input("20", id="gen-n", compact=True, tooltip="tokens for 'run N' (G)")
        with Horizontal(id="gen-buttons"):
            yield Button("step (g)", id="gen-step", compact=True)
            yield Button("run N (G)", id="gen-run", compact=True)
            yield Button("reset", id="gen-reset", compact=True)
        with VerticalScroll(id="gen-text-scroll"):
            yield Static("press g to generate one token, G for N tokens", id="gen-text")
        yield Static("", id="gen-step-line")
        yield KvLine(id="gen-kv")
        yield Static("", id="gen-lens")
        yield Static("", id="gen-why")
        table = RowTable(id="gen-candidates")
        table.add_columns("#", "next token", "id", "prob", "", "logit")
        yield table

    def on_mount(self) -> None:
        self.query_one("#gen-why").display = False

    # -- intents -------------------------------------------------------------------------

    def settings(self) -> GenerationSettings | None:
        """The parsed settings, or None after telling the user what is wrong."""
        values = [
            self.query_one(f"#gen-{name}", Input).value
            for name in ("temperature", "top-k", "top-p", "seed")
        ]
        try:
            return parse_settings(*values)
        except SettingsError as err:
            self.notify(str(err), title="sampling settings", severity="error")
            return None

    def run_length(self) -> int | None:
        """N for `G`, or None after saying what is wrong with it."""
        raw = self.query_one("#gen-n", Input).value.strip() or "20"
        if not raw.isdigit() or int(raw) == 0:
            self.notify(f"N {raw!r}: a positive whole number", title="generation", severity="error")
            return None
        return int(raw)

    def request(self, n: int = 1, force_token: int | None = None) -> None:
        """Generate n tokens (or force one) with the settings typed, applied first."""
        settings = self.settings()
        if settings is not None:
            self._apply(settings)  # intents run in order: before the step
            kwargs = {"force_token": force_token}
            self.post_message(
                IntentRequested("generating", "generate", (n,), kwargs, progress=True)
            )

    def _apply(self, settings: GenerationSettings) -> None:
        """New sampling settings apply from the next step; the text so far stays."""
        if self.view is None or self.view.settings != settings:
            args = (settings,)
            self.post_message(IntentRequested("generation", "set_generation_settings", args))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id in ("gen-temperature", "gen-top-k", "gen-top-p", "gen-seed"):
            event.stop()
            settings = self.settings()
            if settings is not None:
                self._apply(settings)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "gen-step":
            self.request(1)
        elif event.button.id == "gen-run":
            n = self.run_length()
            if n is not None:
                self.request(n)
        elif event.button.id == "gen-reset":
            settings = self.settings()
            if settings is not None:
                self.post_message(IntentRequested("generation", "reset_generation", (settings,)))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.request(force_token=int(event.row_key.value))

    def action_force(self) -> None:
        table = self.query_one("#gen-candidates", DataTable)
        if table.row_count:
            row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
            if row_key.value is not None:
                self.request(force_token=int(row_key.value))

    def action_why(self) -> None:
        view = self.view
        table = self.query_one("#gen-candidates", DataTable)
        if view is None or not view.next_candidates or not table.row_count:
            return
        top = view.next_candidates[0].token_id
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        other = int(row_key.value) if row_key.value is not None else top
        if other == top:
            self.notify("highlight another candidate to compare with the top one", timeout=3)
            return
        self._asked = (top, other, view)
        # Attribute logit(top) - logit(other) at the next token of the generation.
        args, kwargs = (top, other, -1), {"generation": True}
        self.post_message(IntentRequested("compare", "attribute_logit", args, kwargs))

    def watch_why(self, why: CompareView | None) -> None:
        if not self.is_mounted:
            return
        shown = self.query_one("#gen-why", Static)
        asked = self._asked
        result = why.attribution if why is not None else None
        if result is None or asked is None or self.view is not asked[2]:
            shown.display = False
            return
        if (result.answer, result.wrong) != asked[:2]:
            return  # an attribution asked elsewhere (the Compare tab)
        shown.update(why_text(result, self._label(asked[0]), self._label(asked[1])))
        shown.display = True

    def _label(self, token_id: int) -> str:
        view = self.view
        found = [c.label for c in view.next_candidates if c.token_id == token_id] if view else []
        return token_text(found[0]) if found else str(token_id)

    # -- data down -----------------------------------------------------------------------

    def watch_view(self, view: GenerationView | None) -> None:
        if not self.is_mounted:
            return
        text = self.query_one("#gen-text", Static)
        line = self.query_one("#gen-step-line", Static)
        table = self.query_one("#gen-candidates", DataTable)
        table.clear()
        if self._asked is not None and view is not self._asked[2]:
            self._asked = None  # a new step: the attribution was of the last one
            self.query_one("#gen-why", Static).display = False
        if view is None:
            return
        self.query_one("#gen-lens", Static).update(lens_line(view))
        text.update(generated_text(view))
        self.query_one("#gen-text-scroll", VerticalScroll).scroll_end(animate=False)
        step = view.step
        self.query_one(KvLine).show(view, self.heads)
        info = Text()
        # Bars are relative to the most likely candidate; the number is the probability.
        top = max((c.prob for c in view.next_candidates), default=0.0)
        for rank, cand in enumerate(view.next_candidates, 1):
            table.add_row(
                str(rank),
                Text(token_text(cand.label), style="bold"),
                str(cand.token_id),
                Text(f"{cand.prob:.4f}", justify="right"),
                Text(fmt.bar(cand.prob / top if top else 0.0, BAR_WIDTH), style="green"),
                Text(fmt.num(cand.logit), justify="right", style="dim"),
                key=str(cand.token_id),
            )
        if step is None:
            info.append(f"next token: {view.next_kept} candidates kept", style="dim")
            line.update(info)
            return
        how = "forced" if step.forced else ("greedy" if step.greedy else "sampled")
        info.append(f"step {step.index + 1} ")
        info.append(token_text(step.token_label), style="bold black on yellow")
        info.append(f" {how} p={step.token_prob:.3f} H={step.entropy:.2f} nats kept {step.kept}")
        if step.note:
            info.append(f"  {step.note}", style="italic yellow")
        line.update(info)


def why_text(result: Attribution, top: str, other: str) -> Text:
    """`why 'e' and not 'a': logit difference +1.23, largest parts`, then those parts,
    each with a bar (green: for the top token, red: for the other)."""
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append("why ", style="bold")
    text.append(f"'{top}'", style="bold green")
    text.append(" and not ", style="bold")
    text.append(f"'{other}'", style="bold red")
    text.append(f": logit difference {result.logit_diff:+.4g}, largest parts", style="dim")
    ranked = result.ranked()[:WHY_PARTS]
    scale = max((abs(c.value) for c in ranked), default=0.0) or 1.0
    width = max((len(c.name) for c in ranked), default=0)
    for c in ranked:
        text.append(f"\n  {c.name:<{width}} {c.value:+8.4f} ")
        text.append(
            fmt.bar(abs(c.value) / scale, BAR_WIDTH), style="green" if c.value > 0 else "red"
        )
    return text
