"""`gpt-tui train-step`'s output: the step's report and the health table as text, and
the same as JSON."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

from . import render

if TYPE_CHECKING:
    from ..engine.core.debug_state import TrainingView
    from ..engine.core.trace import TensorStats
    from ..engine.training.health import Health
    from ..io.batches import BatchView

TOP_PARAMS = 12  # rows of the gradient table in text output
TEXT_WIDTH = 56  # characters of a decoded row shown in text output


def _stats(s: TensorStats | None) -> dict[str, Any] | None:
    if s is None:
        return None
    finite = s.numel - s.nan_count - s.inf_count
    return dict(norm=s.rms * math.sqrt(finite) if finite else math.nan, nan=s.nan_count,
                inf=s.inf_count)  # fmt: skip


def step_json(view: TrainingView, health: Health) -> dict[str, Any]:
    report, batch = view.report, view.batch
    assert report is not None and batch is not None
    hit = report.first_nonfinite
    first = None
    if hit is not None:
        held = [dataclasses.asdict(h) for h in hit.held]
        first = dict(phase=hit.phase, where=hit.where, text=hit.text, held=held)
    return dict(
        batch=dict(
            rows=len(batch.rows),
            block=batch.block,
            source=batch.source,
            seed=batch.seed,
            ignored_targets=batch.ignored_targets,
            decoded=[
                dict(
                    offset=r.offset,
                    input="".join(r.input_text),
                    target="".join(r.target_text),
                    input_ids=r.input_ids,
                    target_ids=r.target_ids,
                    ignored=r.ignored,
                )
                for r in batch.rows
            ],
        ),  # fmt: skip
        loss=report.loss,
        row_losses=report.row_losses,
        loss_note=report.loss_note,
        first_nonfinite=first,
        phases=report.phases_run,
        backward=[
            dict(name=e.name, grad_output=_stats(e.grad_output), grad_input=_stats(e.grad_input))
            for e in report.backward
        ],
        grads=[dict(name=p.name, norm=p.grad_norm) for p in report.params],
        grad_norm=report.grad_norm,
        grad_norm_clipped=report.grad_norm_clipped,
        updates=[dict(name=p.name, ratio=p.update_ratio) for p in report.params],
        steps=[
            dict(
                step=s.step,
                loss=s.loss,
                grad_norm=s.grad_norm,
                max_update_ratio=s.max_update_ratio,
                nonfinite=s.nonfinite,
                tokens_per_s=s.tokens_per_s,
                layer_ratios=dict(s.layer_ratios),
                memory=dict(s.memory),
            )
            for s in health.steps
        ],  # fmt: skip
        flags=health.flags,
        stopped=None
        if health.stopped is None
        else dict(
            step=health.stopped_step, phase=health.stopped.phase, where=health.stopped.where
        ),  # fmt: skip
    )


def _clip(text: str, width: int = TEXT_WIDTH) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def batch_lines(batch: BatchView, rows: int = 4) -> list[str]:
    """Each row's input over its target, one character per token when they fit."""
    lines = [
        f"batch: {len(batch.rows)} × {batch.block} tokens from {batch.source} "
        f"(seed {batch.seed}) · {render.plural(batch.ignored_targets, 'ignored target')}"
    ]
    for i, r in enumerate(batch.rows[:rows]):
        at = f"@{r.offset}" if r.offset is not None else ""
        pieces = list(zip(r.input_text, r.target_text, strict=True))
        width = [max(len(a), len(b)) for a, b in pieces]
        top = "".join(a.ljust(w) for (a, _), w in zip(pieces, width, strict=True))
        bottom = "".join(b.ljust(w) for (_, b), w in zip(pieces, width, strict=True))
        lines.append(f"  row {i} {at:<8} in  {_clip(top)}")
        lines.append(f"  {'':14} out {_clip(bottom)}")
        if r.ignored:
            lines.append(f"  {'':14} {r.ignored} ignored")
    if len(batch.rows) > rows:
        lines.append(f"  ... {len(batch.rows) - rows} more rows (--json has them all)")
    return lines


def print_report(view: TrainingView) -> None:
    """The step laid open: its batch, loss, backward, gradients and updates."""
    report, batch = view.report, view.batch
    assert report is not None and batch is not None
    console = render.console()
    for line in batch_lines(batch):
        console.print(line, markup=False, highlight=False)
    rows = " ".join(f"{x:.3f}" for x in report.row_losses[:6])
    more = " …" if len(report.row_losses) > 6 else ""
    console.print(f"loss {report.loss:.4f}  (per row {rows}{more})", markup=False)
    if report.loss_note:
        console.print(f"  {report.loss_note}", markup=False, style="yellow")
    hit = report.first_nonfinite
    console.print(
        "first non-finite: " + ("none" if hit is None else hit.text),
        markup=False, style="bold red" if hit else None,
    )  # fmt: skip
    console.print(f"phases run: {' → '.join(report.phases_run)}", markup=False)
    back = render.table("backward, in the order autograd ran it")
    for col in ("module", "‖grad out‖", "‖grad in‖", "NaN/Inf in"):
        back.add_column(col, justify="left" if col == "module" else "right")
    for e in report.backward:
        go, gi = _stats(e.grad_output), _stats(e.grad_input)
        back.add_row(
            e.name,
            render.fmt_stat(go["norm"]) if go else "—",
            render.fmt_stat(gi["norm"]) if gi else "— (ids)",
            str(gi["nan"] + gi["inf"]) if gi else "",
        )
    if report.backward:
        console.print(back)
    if report.params:
        grads = render.table(f"gradients, largest {min(TOP_PARAMS, len(report.params))}")
        for col in ("parameter", "‖grad‖", "‖param‖", "‖Δw‖/‖w‖"):
            grads.add_column(col, justify="left" if col == "parameter" else "right")
        top = sorted(report.params, key=lambda p: -p.grad_norm if math.isfinite(p.grad_norm)
                     else -math.inf)[:TOP_PARAMS]  # fmt: skip
        for p in top:
            ratio = "—" if p.update_ratio is None else f"{p.update_ratio:.1e}"
            grads.add_row(p.name, render.fmt_stat(p.grad_norm), render.fmt_stat(p.param_norm),
                          ratio)  # fmt: skip
        console.print(grads)
        console.print(
            f"global grad norm {report.grad_norm:.4g} → {report.grad_norm_clipped:.4g} after "
            f"clipping · weights {'kept' if report.kept else 'put back'}",
            markup=False,
        )
    if report.scaler:
        console.print(report.scaler, markup=False)


_MEMORY_KINDS = {"rss": "process RSS", "cuda_allocated": "CUDA allocated", "cuda_peak": "peak"}


def print_health(health: Health) -> None:
    console = render.console()
    steps = render.table(f"health over {render.plural(len(health.steps), 'step')}")
    # what the figures are (the whole process's RSS on a CPU: not the step's own memory,
    # which `gpt-tui memory` measures)
    kinds = [_MEMORY_KINDS.get(k, k) for k, _ in health.steps[0].memory] if health.steps else []
    for col in ("step", "loss", "grad norm", "max Δw/w", "NaN/Inf", "tok/s"):
        steps.add_column(col, justify="right")
    steps.add_column(" / ".join(kinds) or "memory", justify="right")
    for s in health.steps:
        memory = " ".join(render.fmt_count(v // 2**20) + "M" for _, v in s.memory)
        steps.add_row(str(s.step), f"{s.loss:.4f}", render.fmt_stat(s.grad_norm),
                      f"{s.max_update_ratio:.1e}", str(s.nonfinite), f"{s.tokens_per_s:,.0f}",
                      memory)  # fmt: skip
    console.print(steps)
    for flag in health.flags:
        console.print(f"flag: {flag}", markup=False, style="yellow")
    if health.stopped is not None:
        console.print(
            f"stopped at step {health.stopped_step}: non-finite in {health.stopped.text}",
            markup=False,
        )
