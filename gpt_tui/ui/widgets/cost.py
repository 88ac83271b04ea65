"""The Cost tab: what a dtype would do to each module (Numerics, Heads) and what a training
step costs (Memory, FLOPs), as sorted bars with totals. Every number comes from
`engine.measures` (the `numerics`, `memory` and `cost` commands print the same)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.widgets import Button, Input, Static

from ... import formatting as fmt
from ..messages import IntentFailed, IntentRequested
from .tables import RowTable

if TYPE_CHECKING:
    from ...engine.analysis.measures import MeasuresView

BAR = 10
FORMATS = (("bf16", "bfloat16"), ("fp16", "float16"), ("e4m3", "float8_e4m3fn"),
           ("e5m2", "float8_e5m2"))  # fmt: skip
VIEWS = ("numerics", "heads", "memory", "flops")
Shown = tuple[tuple[str, ...], list[tuple[object, ...]], Text]  # columns, rows, the head


def _pct(x: float) -> str:
    return "0" if x == 0 else f"{x:.1%}" if x >= 1e-3 else f"{x:.0e}"


def _flops(n: float) -> str:
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.0f}"


def _bar(fraction: float, value: str, style: str = "cyan") -> Text:
    return Text.assemble((fmt.bar(fraction, BAR), style), f" {value}")


def _share(fraction: float, style: str) -> Text:
    """A share with its bar after it, so the value sits under its column's header."""
    return Text.assemble(f"{_pct(fraction):>6} ", (fmt.bar(fraction, BAR), style))


class CostPanel(Vertical):
    """Four views of one `MeasuresView`; the dtype and view switch without recomputing."""

    DEFAULT_CSS = """
    CostPanel #cost-views, CostPanel #cost-controls { height: 1; }
    CostPanel Button { width: auto; min-width: 0; margin-right: 1; }
    CostPanel Input { width: 7; margin-right: 1; }
    CostPanel .cost-label { width: auto; color: $text-muted; margin-right: 1; }
    CostPanel #cost-head { height: auto; padding: 0 1; }
    CostPanel #cost-table { height: 1fr; }
    """

    view: reactive[MeasuresView | None] = reactive(None, always_update=True)
    dtype: reactive[str] = reactive("bfloat16")
    shown: reactive[str] = reactive("numerics")

    def compose(self) -> ComposeResult:
        with Horizontal(id="cost-views"):
            for name in VIEWS:
                yield Button(name.capitalize(), id=f"cost-view-{name}", compact=True)
            yield Button("Measure", id="cost-measure", compact=True)
        with Horizontal(id="cost-controls"):
            for short, name in FORMATS:
                yield Button(short, id=f"cost-dtype-{name}", compact=True)
            # Labels of their own: a box's placeholder hides behind its value
            yield Static("batch", classes="cost-label")
            yield Input("1", placeholder="1", id="cost-batch", compact=True)
            yield Static("block", classes="cost-label")
            yield Input("", placeholder="T", id="cost-block", compact=True)
        yield Static("", id="cost-head")
        yield RowTable(id="cost-table")

    def request_numerics(self) -> tuple[str, tuple]:
        return "measure", ("numerics", self.dtype)

    def _say(self, message: str) -> None:
        self.query_one("#cost-head", Static).update(Text(message, style="bold yellow"))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        bid = event.button.id or ""
        if bid.startswith("cost-dtype-"):
            self.dtype = bid.removeprefix("cost-dtype-")
        elif bid.startswith("cost-view-"):
            self.shown = bid.removeprefix("cost-view-")
            if self.shown == "numerics":  # on the prompt as it is now
                self.post_message(IntentRequested("measure", *self.request_numerics()))
        elif bid == "cost-measure":
            self._measure()

    def on_intent_failed(self, event: IntentFailed) -> None:
        if event.worker == "measure":  # else "measuring…" would stay up for good
            self.query_one("#cost-head", Static).update(Text(event.error, style="bold red"))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._measure()

    def _measure(self) -> None:
        batch = self.query_one("#cost-batch", Input).value.strip() or "1"
        block = self.query_one("#cost-block", Input).value.strip()
        if not batch.isdigit() or not block.isdigit() or int(batch) < 1 or int(block) < 1:
            self._say("Measure needs a batch and a block (sequence length), whole numbers >= 1")
            return
        self.shown = "memory" if self.shown in ("numerics", "heads") else self.shown
        self._say(f"measuring a training step at batch {batch} x {block} tokens…")
        self.post_message(IntentRequested("measure", "measure", ("cost", int(batch), int(block))))

    def watch_view(self) -> None:
        self._show()

    def watch_dtype(self) -> None:
        self._show()

    def watch_shown(self) -> None:
        self._show()

    def _show(self) -> None:
        if not self.is_mounted:
            return
        for name in VIEWS:
            self.query_one(f"#cost-view-{name}", Button).variant = (
                "primary" if name == self.shown else "default"
            )
        for _, name in FORMATS:
            self.query_one(f"#cost-dtype-{name}", Button).variant = (
                "primary" if name == self.dtype else "default"
            )
        view = self.view
        shown = getattr(self, f"_show_{self.shown}")(view) if view is not None else None
        columns, rows, head = shown or ((), [], None)
        self.query_one("#cost-table", RowTable).fill(columns, rows)
        if head is None:
            head = Text(
                "Numerics: press Numerics (the prompt's pass). Memory and FLOPs: a batch and "
                "block, then Measure.",
                style="dim",
            )
        self.query_one("#cost-head", Static).update(head)

    def _show_numerics(self, view: MeasuresView) -> Shown | None:
        report = view.numerics
        if report is None:
            return None
        facts = next(f for f in report.facts if f.name == self.dtype)
        rows = []
        for m in report.modules:
            f = m.formats[self.dtype]
            small = f.underflow + f.subnormal
            style = "bold red" if f.overflow else ("yellow" if small > 0.01 else "")
            rows.append((
                Text(m.name, style=style),
                Text(fmt.num(m.absmax), justify="right"),
                _share(f.overflow, "red"),
                _share(small, "yellow"),
            ))  # fmt: skip
        head = Text(f"{facts.short}: max {facts.max:.4g}, normal from "
                    f"{facts.smallest_normal:.3g} · on {report.prompt[:24]!r}\n")  # fmt: skip
        if report.what_if is not None:
            w = report.what_if
            style = "bold red" if w.first else ("yellow" if w.crossed else "green")
            head.append(f"fp32 vs {fmt_short(w.dtype)}: {w.message}", style=style)
            if w.dtype != self.dtype:
                head.append(" (press Numerics to check this dtype)", style="dim")
        return ("module", "absmax", "overflow", "flush+subnormal"), rows, head

    def _show_heads(self, view: MeasuresView) -> Shown | None:
        report = view.numerics
        if report is None:
            return None
        top = max((h.max_logit or 0.0 for h in report.heads), default=0.0) or 1.0
        rows = []
        for h in sorted(report.heads, key=lambda h: -(h.max_logit or 0.0)):
            logit = "-" if h.max_logit is None else f"{h.max_logit:.3g}"
            rows.append((
                str(h.layer), str(h.head), _bar((h.max_logit or 0.0) / top, logit, "magenta"),
                Text(f"{h.entropy:.3f}", justify="right"),
            ))  # fmt: skip
        head = Text("largest pre-softmax logit per head (q·kᵀ·scale), softmax entropy in nats")
        if report.softcap is not None:
            s = report.softcap
            head.append(f"\nsoftcap {s.cap:g}: raw logits to {s.raw_absmax:.3g}, capped to "
                        f"{s.capped_absmax:.3g}; {s.beyond:.1%} beyond ±{s.cap:g}")  # fmt: skip
        return ("layer", "head", "max logit", "entropy"), rows, head

    def _show_memory(self, view: MeasuresView) -> Shown | None:
        report = view.memory
        if report is None:
            return None
        modules = sorted(report.modules, key=lambda m: -m.total)
        top = max((m.total for m in modules), default=1) or 1
        rows = [
            (
                m.name or "(model)", _bar(m.total / top, fmt.nbytes(m.total)),
                *(Text(fmt.nbytes(n), justify="right")
                  for n in (m.params, m.grads, m.optimizer, m.activations)),
            )
            for m in modules
        ]  # fmt: skip
        fit = report.fit
        head = Text(f"batch {report.batch} x {report.block}, {report.optimizer}: forecast peak ",
                    style="bold")  # fmt: skip
        head.append(fmt.nbytes(report.forecast), style="bold yellow")
        head.append(f" (fit off by {fit.check_error:.1%} at {fit.check[0]}x{fit.check[1]})")
        if report.budget is not None and report.largest_batch is not None:
            head.append(f"\nlargest batch in {fmt.nbytes(report.budget)}: {report.largest_batch}")
        return ("module", "total", "params", "grads", "optim", "activations"), rows, head

    def _show_flops(self, view: MeasuresView) -> Shown | None:
        report = view.cost
        if report is None:
            return None
        total = max(report.forward_flops, 1)
        rows = []
        for m in sorted(report.modules, key=lambda m: -m.forward_flops):
            share = m.forward_flops / total
            rows.append((
                m.name or "(model)",
                _bar(share, f"{_flops(m.forward_flops)} {share:.0%}"),
                Text("-" if m.forward_ms is None else f"{m.forward_ms:.2f}", justify="right"),
            ))  # fmt: skip
        tokens = report.batch * report.block
        head = Text(f"forward {_flops(report.forward_flops)} · step {_flops(report.train_flops)} "
                    f"({_flops(report.train_flops / tokens)}/token) in "
                    f"{report.step_seconds * 1e3:.0f} ms · MFU ", style="bold")  # fmt: skip
        head.append("unknown" if report.mfu is None else f"{report.mfu:.1%}", style="bold yellow")
        if report.formula is not None:
            f = report.formula
            head.append(f"\n{f.name}: {_flops(f.per_token)}/token at T={f.context}")
            if f.model_says is not None:
                head.append(f" (the model's own: {_flops(f.model_says)})")
            head.append(f"; at T={f.block} {_flops(f.at_block)}, {f.difference:+.1%} measured")
            for part in f.parts:  # the gap, part by part, as `gpt-tui cost` prints it
                head.append(f"\n  {part.label} {part.per_token:+,.0f}/token")
        return ("module", "forward FLOPs", "ms"), rows, head


def fmt_short(name: str) -> str:
    return dict((n, s) for s, n in FORMATS).get(name, name)
