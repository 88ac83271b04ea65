"""Health over N training steps: is this loss curve normal?

Each step is a full hooked step (training.py) on the next seeded batch, with one optimizer
kept across the steps. Per step: loss, global grad norm, the largest update ratio per layer,
the non-finite count, tokens/s and memory. Flags: a loss spike (more than k sigma above the
window before it), update ratios far from ~1e-3, a growing gradient norm. The run stops at
the first non-finite value, naming the phase and where. The weights come back unless kept.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from ...io.batches import Batch
from ..core.model_access import find_block_list, model_device, unwrap_model
from .step import NonFinite, StepOptions, Stepper, StepReport, restored

SPIKE_SIGMAS = 3.0
SPIKE_WINDOW = 10
RATIO_LOW, RATIO_HIGH = 1e-4, 1e-2  # a decade either side of the usual ~1e-3
GROWTH_STEPS = 5  # grad norm rising every step for this many steps, and doubling


@dataclass(frozen=True)
class HealthStep:
    step: int
    loss: float
    grad_norm: float
    max_update_ratio: float
    layer_ratios: tuple[tuple[str, float], ...]  # (layer, largest ratio in it)
    nonfinite: int  # non-finite gradient elements (and the loss, if it is)
    tokens_per_s: float
    memory: tuple[tuple[str, int], ...]  # cuda_allocated / cuda_peak, or rss


@dataclass(frozen=True)
class Health:
    steps: tuple[HealthStep, ...]
    flags: tuple[str, ...]
    stopped: NonFinite | None  # where the first non-finite value appeared
    stopped_step: int | None = None
    last: StepReport | None = None  # the last step's full report


def memory_now(device: torch.device) -> tuple[tuple[str, int], ...]:
    if device.type == "cuda":
        return (
            ("cuda_allocated", torch.cuda.memory_allocated(device)),
            ("cuda_peak", torch.cuda.max_memory_allocated(device)),
        )
    import psutil

    return (("rss", psutil.Process().memory_info().rss),)


def layer_of(model: nn.Module) -> Callable[[str], str]:
    """Parameter name -> `h.3` for block parameters, `other` for the rest."""
    found = find_block_list(unwrap_model(model))
    prefix = f"{found[0]}." if found else None

    def name(param: str) -> str:
        if prefix and param.startswith(prefix):
            return "h." + param[len(prefix) :].split(".", 1)[0]
        return "other"

    return name


def layer_ratios(report: StepReport, layer: Callable[[str], str]) -> tuple[tuple[str, float], ...]:
    best: dict[str, float] = {}
    for p in report.params:
        if p.update_ratio is not None:
            key = layer(p.name)
            best[key] = max(best.get(key, 0.0), p.update_ratio)
    return tuple(best.items())


def flags(steps: tuple[HealthStep, ...]) -> tuple[str, ...]:
    out: list[str] = []
    losses = [s.loss for s in steps]
    for i in range(len(steps)):
        window = losses[max(0, i - SPIKE_WINDOW) : i]
        if len(window) >= 3 and math.isfinite(losses[i]):
            mean, sd = statistics.fmean(window), statistics.pstdev(window)
            if sd > 0 and losses[i] > mean + SPIKE_SIGMAS * sd:
                out.append(
                    f"loss spike at step {steps[i].step}: {losses[i]:.4f} is "
                    f"{(losses[i] - mean) / sd:.1f} sigma above the {len(window)} steps before"
                )
    for s in steps:
        far = [(k, r) for k, r in s.layer_ratios if r > RATIO_HIGH or 0 < r < RATIO_LOW]
        if far:
            k, r = max(far, key=lambda kr: abs(math.log10(kr[1] / 1e-3)))
            side = "high" if r > RATIO_HIGH else "low"
            out.append(
                f"update ratio {side} at step {s.step}: {k} {r:.1e} (about 1e-3 is usual; "
                f"{'lower' if side == 'high' else 'raise'} --lr)"
            )
            break  # once is enough: it names the step where it starts
    norms = [s.grad_norm for s in steps]
    for i in range(GROWTH_STEPS, len(norms)):
        run = norms[i - GROWTH_STEPS : i + 1]
        rising = all(b > a for a, b in zip(run, run[1:], strict=False))
        if rising and run[-1] > 2 * run[0]:
            out.append(
                f"growing gradient norm: {run[0]:.3g} -> {run[-1]:.3g} over steps "
                f"{steps[i - GROWTH_STEPS].step}..{steps[i].step}"
            )
            break
    return tuple(out)


def train_health(
    model: nn.Module,
    batches: Callable[[int], Batch],
    n: int,
    opts: StepOptions | None = None,
    check: Callable[[], None] | None = None,
    progress: Callable[[HealthStep], None] | None = None,
) -> Health:
    """`n` steps on `batches(step)`; stops early at the first non-finite value."""
    opts = opts or StepOptions()
    device = model_device(model)
    layer = layer_of(model)
    steps: list[HealthStep] = []
    stopped: NonFinite | None = None
    stopped_step = None
    report = None
    with torch.inference_mode(False), restored(model, opts.keep, check):
        stepper = Stepper(model, opts)
        for i in range(n):
            if check is not None:
                check()
            batch = batches(i)
            start = time.perf_counter()
            report = stepper.step(batch, check)
            seconds = time.perf_counter() - start
            bad = report.nonfinite_grads + (0 if math.isfinite(report.loss) else 1)
            step = HealthStep(
                step=i,
                loss=report.loss,
                grad_norm=report.grad_norm,
                max_update_ratio=report.max_update_ratio,
                layer_ratios=layer_ratios(report, layer),
                nonfinite=bad,
                tokens_per_s=batch.x.numel() / seconds if seconds > 0 else math.inf,
                memory=memory_now(device),
            )
            steps.append(step)
            if progress is not None:
                progress(step)
            hit = report.first_nonfinite
            # An fp16 overflow in backward that the gradient scaler caught (it skipped the
            # step and lowered its scale) is how mixed precision works: not a stop.
            handled = report.scaler is not None and hit is not None and hit.phase == "backward"
            if hit is not None and not handled:
                stopped, stopped_step = hit, i
                break
    done = tuple(steps)
    return Health(done, flags(done), stopped, stopped_step, report)
