"""The architecture drawn from the model's config: boxes and arrows with live shapes.

The residual stream runs down a rail on the left; one block is expanded with its two
branches (norm -> attention, norm -> MLP) leaving the rail and adding back into it at ⊕.
What each box says comes from the config (heads, GQA, rotary, QK norm, bias, softcap, the
MLP's activation), what sits beside it from the last run's output shapes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.style import Style
from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from ... import formatting as fmt

if TYPE_CHECKING:
    from ...engine.core.debug_state import ModelInfo

RAIL = 3  # column of the residual rail
INNER = 6  # left edge of the boxes inside a block
BOX = Style(color="bright_blue")
ARROW = Style(color="yellow", bold=True)
SHAPE = Style(color="cyan")
NOTE = Style(dim=True)


class _Canvas:
    """Lines of styled text, drawn top to bottom."""

    def __init__(self, width: int) -> None:
        self.width = width  # inner text width of every box
        self.lines: list[Text] = []

    def text(self, *parts: tuple[str, Style | str]) -> None:
        line = Text(no_wrap=True)
        for content, style in parts:
            line.append(content, style=style)
        self.lines.append(line)

    def rail(self, note: str = "", glyph: str = "│") -> None:
        self.text((" " * RAIL + glyph, ARROW), (f"  {note}" if note else "", NOTE))

    def box(
        self,
        rows: list[str],
        shape: tuple[int, ...] | None = None,
        inner: bool = False,
    ) -> None:
        """A box whose top joins the line above at its connector and bottom the line below."""
        left = INNER if inner else RAIL - 2
        prefix = " " * RAIL + "│" + " " * (INNER - RAIL - 1) if inner else " " * left
        join = 2  # connector offset inside the box
        span = self.width + 2
        top = "┌" + "─" * (join - 1) + "┴" + "─" * (span - join) + "┐"
        bottom = "└" + "─" * (join - 1) + "┬" + "─" * (span - join) + "┘"
        self.text((prefix, ARROW), (top, BOX))
        for i, row in enumerate(rows):
            side = fmt.shape(shape) if i == 0 and shape is not None else ""
            self.text(
                (prefix, ARROW),
                ("│ ", BOX),
                (row[: self.width].ljust(self.width), "bold" if i == 0 else ""),
                (" │", BOX),
                (f" {side}", SHAPE),
            )
        self.text((prefix, ARROW), (bottom, BOX))

    def branch(self, note: str = "") -> None:
        """The residual stream forks: one copy goes into the block's branch."""
        self.text((" " * RAIL + "├" + "─" * (INNER + 1 - RAIL) + "┐", ARROW), (f" {note}", NOTE))

    def merge(self, note: str = "residual add") -> None:
        self.text((" " * RAIL + "⊕◀" + "─" * (INNER - RAIL) + "┘", ARROW), (f" {note}", NOTE))


def _shape(shapes: dict[str, tuple[int, ...]], path: str) -> tuple[int, ...] | None:
    return shapes.get(path)


def diagram_lines(info: ModelInfo, shapes: dict[str, tuple[int, ...]]) -> list[Text]:
    """The whole picture for either family, from the config and the last run's shapes."""
    cfg = info.summary.config
    C, V, L = info.n_embd, info.vocab_size, info.n_layer
    nh, nkv = info.n_head, info.n_kv_head
    hs = C // nh if nh else 0
    chat = info.family == "nanochat"
    tied = any(r.tied_with and r.name.startswith("lm_head") for r in info.summary.parameters)
    params = info.summary.modules
    block_params = params.get("transformer.h.0")
    per_block = fmt.count(block_params.params) if block_params else "?"
    canvas = _Canvas(width=38)
    canvas.text(("   tokens", "bold"), (f"  {fmt.shape(shapes.get('tokens'))}", SHAPE))
    canvas.rail()
    canvas.box(
        [f"wte  token embedding  {V}×{C}", "Embedding" + (", tied to lm_head" if tied else "")],
        _shape(shapes, "transformer.wte"),
    )
    if chat:
        canvas.rail()
        canvas.box(["norm  RMSNorm (no parameters)"], None)
        extras = []
        if cfg.get("smear"):
            extras.append("smear: + gated previous-token embedding")
        if cfg.get("resid_x0_lambdas"):
            extras.append("x = λ_resid·x + λ_x0·x0 before each block")
        for note in extras:
            canvas.rail(note)
    else:
        ctx = info.context_len or 0
        canvas.text(
            (" " * RAIL + "⊕◀── ", ARROW),
            (f"wpe  position embedding {ctx}×{C}", "bold"),
            (f"  {fmt.shape(_shape(shapes, 'transformer.wpe'))}", SHAPE),
        )
    canvas.rail(f"residual stream (B, T, {C})")
    canvas.branch(f"block 0 of {L}  ({per_block} params each)")
    norm = (
        "RMSNorm (no parameters)"
        if chat
        else ("LayerNorm" + ("" if cfg.get("bias", True) else " (no bias)"))
    )
    canvas.box(
        [f"{'norm' if chat else 'ln_1'}  {norm}"],
        _shape(shapes, "transformer.h.0.ln_1"),
        inner=True,
    )
    if chat:
        gqa = (
            f"GQA: {nh} query heads share {nkv} kv heads"
            if nkv != nh
            else f"MHA: n_kv_head = n_head = {nh}"
        )
        window = cfg.get("window_pattern", "L")
        attn_rows = [
            f"attn  {nh} heads × {hs}",
            gqa,
            f"c_q {C}→{nh * hs}  c_k,c_v {C}→{nkv * hs}",
            f"rotary (base {cfg.get('rope_base', 10000):g}), QK norm",
            "causal SDPA" + (f", window pattern {window}" if window.upper() != "L" else ""),
            f"c_proj {C}→{C}",
        ]
        if cfg.get("value_embeds"):
            attn_rows.insert(5, "+ gated value embeds (alternate layers)")
    else:
        attn_rows = [
            f"attn  {nh} heads × {hs}",
            f"c_attn {C}→{3 * C} (q, k, v)",
            "causal SDPA, softmax(q·kᵀ/√hs)·v",
            f"c_proj {C}→{C}",
        ]
    canvas.box(attn_rows, _shape(shapes, "transformer.h.0.attn"), inner=True)
    canvas.merge()
    canvas.branch()
    canvas.box(
        [f"{'norm' if chat else 'ln_2'}  {norm}"],
        _shape(shapes, "transformer.h.0.ln_2"),
        inner=True,
    )
    act = "ReLU²" if chat else "GELU"
    canvas.box(
        [f"mlp  4x wide, {act}", f"c_fc {C}→{4 * C}  {act}  c_proj {4 * C}→{C}"],
        _shape(shapes, "transformer.h.0.mlp"),
        inner=True,
    )
    canvas.merge()
    if L > 1:
        canvas.rail(f"blocks 1‥{L - 1}: the same", glyph="┆")
    if chat and cfg.get("backout"):
        canvas.rail(f"backout: − λ·(residual after block {L // 2})")
    canvas.box(
        ["norm  RMSNorm (no parameters)"] if chat else [f"ln_f  {norm}"],
        _shape(shapes, "transformer.ln_f"),
    )
    head = [f"lm_head  Linear {C}→{V}"]
    head.append("tied to wte (same tensor)" if tied else "untied")
    softcap = cfg.get("softcap", 0) if chat else 0
    if softcap:
        head.append(f"softcap {softcap:g}·tanh(logits/{softcap:g}), fp32")
    canvas.box(head, _shape(shapes, "lm_head"))
    canvas.text(
        (" " * RAIL + "▼", ARROW),
        (" logits", "bold"),
        (f"  {fmt.shape(shapes.get('logits'))}", SHAPE),
    )
    return canvas.lines


class Diagram(Static):
    """The architecture picture; redrawn when the model or the last run's shapes change."""

    info: reactive[ModelInfo | None] = reactive(None, always_update=True)
    shapes: reactive[dict[str, tuple[int, ...]]] = reactive(dict, always_update=True)

    def _redraw(self) -> None:
        if self.info is None:
            self.update("no model yet")
            return
        self.update(Text("\n").join(diagram_lines(self.info, self.shapes)))

    def watch_info(self) -> None:
        self._redraw()

    def watch_shapes(self) -> None:
        self._redraw()
