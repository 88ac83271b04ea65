"""Text pieces of the training debugger: the phase line, the batch, where the step is, and
sparklines over the health run. Plain functions of a `TrainingView`, no widgets."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from rich.text import Text

from ... import formatting as fmt

if TYPE_CHECKING:
    from ...engine.core.debug_state import TrainingBatch, TrainingView
    from ...engine.core.trace import TensorStats
    from ...engine.training.health import Health
    from ...engine.training.step import StepOptions

SPARKS = "▁▂▃▄▅▆▇█"
BATCH_ROWS = 2  # rows of the batch shown; the CLI's --json has them all
MAX_LAYER_LINES = 4


def head_text(view: TrainingView, ablations: tuple[str, ...], mode: str = "") -> Text:
    """The phase line, the mode the step runs in (`mode`: train/eval and dropout), the loss,
    and what is wrong if anything is."""
    text = Text()
    text.append(view.phase_line, style="bold")
    if mode:
        text.append(f"\n{mode}", style="cyan")
    report = view.report
    if report is not None:
        text.append("\nloss ", style="dim")
        style = "bold yellow" if math.isfinite(report.loss) else "bold red"
        text.append(f"{report.loss:.4f}", style=style)
        text.append(f" over {report.scored_targets} targets", style="dim")
        if math.isfinite(report.grad_norm):
            text.append(
                f" · ‖g‖ {fmt.num(report.grad_norm).strip()} → "
                f"{fmt.num(report.grad_norm_clipped).strip()}",
                style="dim",
            )
        hit = report.first_nonfinite
        if hit is not None:
            text.append(f"\nfirst non-finite: {hit.text}", style="bold red")
        elif report.loss_note:
            text.append(f"\n{report.loss_note}", style="yellow")
    else:
        text.append("\ns into forward · n next phase · c continue · h health (20 steps)")
    if ablations:  # the loss and gradients are those of the ablated model
        text.append(f"\n⊘ ablations active: {'; '.join(ablations)}", style="bold yellow")
    return text


def batch_text(batch: TrainingBatch | None, width: int) -> Text:
    """Each row's input over its target, aligned token by token, cut to `width`."""
    text = Text()
    if batch is None:
        return text
    text.append(
        f"batch {len(batch.rows)}×{batch.block} from {batch.source} · "
        f"{batch.ignored_targets} ignored",
        style="dim",
    )
    room = max(8, width - 5)
    for row in batch.rows[:BATCH_ROWS]:
        pairs = list(zip(row.input_text, row.target_text, strict=True))
        widths = [max(len(a), len(b)) for a, b in pairs]
        top = "".join(a.ljust(w) for (a, _), w in zip(pairs, widths, strict=True))
        bottom = "".join(b.ljust(w) for (_, b), w in zip(pairs, widths, strict=True))
        text.append("\nin  ", style="dim")
        text.append(top[:room])
        text.append("\nout ", style="dim")
        text.append(bottom[:room], style="cyan")
    if len(batch.rows) > BATCH_ROWS:
        text.append(f"\n… {len(batch.rows) - BATCH_ROWS} more rows", style="dim")
    return text


def _norm(s: TensorStats | None) -> str:
    if s is None:
        return "—"
    finite = s.numel - s.nan_count - s.inf_count
    value = s.rms * math.sqrt(finite) if finite else math.nan
    bad = s.nan_count + s.inf_count
    return fmt.num(value).strip() + (f" ({bad} NaN/Inf)" if bad else "")


def current_text(view: TrainingView) -> Text:
    """What the step shows at its position: a module's output or gradients, the loss, the
    optimizer's update."""
    report = view.report
    text = Text()
    if report is None or not view.timeline:
        return text
    phase, i = view.timeline[view.position]
    if phase == "forward":
        r = view.forward_outputs[i]
        text.append(f"forward {r.name}", style="bold")
        text.append(
            f"  {fmt.shape(r.shape)} rms {fmt.num(r.stats.rms).strip()} "
            f"NaN {r.stats.nan_count} Inf {r.stats.inf_count}"
        )
    elif phase == "backward":
        e = report.backward[i]
        text.append(f"backward {e.name}", style="bold")
        text.append(f"  ‖grad out‖ {_norm(e.grad_output)}  ‖grad in‖ ")
        text.append(_norm(e.grad_input) if e.grad_input is not None else "— (token ids)")
    elif phase == "loss":
        rows = " ".join(f"{x:.3f}" for x in report.row_losses[:4])
        text.append("loss", style="bold")
        text.append(f"  {report.loss:.4f} mean · per row {rows}")
    elif phase == "optimizer":
        opts = view.options
        top = max(
            (p for p in report.params if p.update_ratio is not None),
            key=lambda p: p.update_ratio or 0.0,
            default=None,
        )
        text.append(f"{opts.optimizer} lr {opts.lr:g}", style="bold")
        if top is not None:
            text.append(f"  largest ‖Δw‖/‖w‖ {top.update_ratio:.1e} {top.name}")
        text.append("  · weights put back" if not report.kept else "  · weights kept")
    elif phase == "done":
        text.append("step done · s starts it again", style="dim")
    else:
        text.append("the batch · s steps into forward", style="dim")
    return text


def sparkline(values: list[float], width: int) -> str:
    """Block characters scaled between the finite min and max; `×` marks a NaN/Inf."""
    values = values[-width:]
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "×" * len(values)
    lo, hi = min(finite), max(finite)
    span = hi - lo or 1.0
    return "".join(
        SPARKS[round((v - lo) / span * (len(SPARKS) - 1))] if math.isfinite(v) else "×"
        for v in values
    )


# The health flags advise the CLI's `--lr`; the Train tab has no learning-rate setting of
# its own, so here the advice says what it steps with and where another is set.
_LR_ADVICE = re.compile(r"\b(lower|raise) --lr\)$")


def app_flag(flag: str, options: StepOptions) -> str:
    """A health flag in the app's terms."""
    return _LR_ADVICE.sub(
        lambda m: (
            f"{m[1]} the learning rate: this tab steps {options.optimizer} at lr "
            f"{options.lr:g}; try another with gpt-tui train-step --lr)"
        ),
        flag,
    )


def clip_names(names: list[str], width: int) -> str:
    """`h.3, h.4, …`: the names that fit in `width`."""
    text = ", ".join(names)
    return text if len(text) <= width else text[: width - 1].rpartition(",")[0] + ", …"


def health_text(
    health: Health | None, width: int, options: StepOptions, max_layers: int = MAX_LAYER_LINES
) -> Text:
    """Sparklines of loss, grad norm and the largest update ratio per layer (log10), in
    `max_layers` lines: when there are more layers, the last says `+N more` and names them."""
    text = Text()
    if health is None or not health.steps:
        return text
    room = max(8, width - 26)
    steps = health.steps

    def line(label: str, values: list[float], last: str) -> None:
        text.append(f"{label:<11}", style="dim")
        text.append(sparkline(values, room), style="magenta")
        text.append(f" {last}\n")

    line("loss", [s.loss for s in steps], f"{steps[0].loss:.3f}→{steps[-1].loss:.3f}")
    line("‖grad‖", [s.grad_norm for s in steps], fmt.num(steps[-1].grad_norm).strip())
    layers = [k for k, _ in steps[0].layer_ratios]
    shown = layers if len(layers) <= max_layers else layers[: max(max_layers - 1, 1)]
    for layer in shown:
        values = [dict(s.layer_ratios).get(layer, math.nan) for s in steps]
        logs = [math.log10(v) if v > 0 else math.nan for v in values]
        line(f"Δw/w {layer}", logs, f"{values[-1]:.1e}")
    rest = layers[len(shown) :]
    if rest:  # in the line the last of them would take
        names = clip_names(rest, max(width - 50, 8))
        text.append(
            f"Δw/w +{len(rest)} more ({names}: a taller terminal shows them)\n", style="dim"
        )
    for flag in health.flags:
        text.append(f"⚑ {app_flag(flag, options)}\n", style="yellow")
    if health.stopped is not None:
        where = health.stopped
        text.append(
            f"stopped at step {health.stopped_step}: {where.text}\n",
            style="bold red",
        )
    text.rstrip()
    return text
