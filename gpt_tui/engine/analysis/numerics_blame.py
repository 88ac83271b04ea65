"""Which module made a low-precision pass part from fp32: the one that amplified the error.

Errors are the diff engine's relative distance ‖Δ‖/‖a‖ over the whole tensor (an rms ratio,
so values near zero do not blow it up as an elementwise ratio would). Every op rounds, so
the error creeps up module by module and crosses any tolerance somewhere; the module that
first crosses it need not have done anything wrong (a GELU whose output is smaller than its
input crosses with the error it was given). A module is blamed only when its output's error
is beyond the tolerance and more than `AMPLIFY` times both its input's error and the
tolerance: it amplified what it got. When none did, the error grew gradually and the line
says where it crossed the tolerance without blaming that module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .compare import Comparison, ProbeDiff

AMPLIFY = 2.0  # a module that more than doubles the relative error it was given amplified it


@dataclass(frozen=True)
class Blame:
    amplifier: str | None  # the first module that amplified the error beyond the tolerance
    crossed: str | None  # the first probe whose error is beyond the tolerance
    message: str


def _beyond(rel: float, tol: float) -> bool:
    return not rel <= tol  # NaN (a non-finite value) is beyond


def amplified(out_rel: float, in_rel: float | None, tol: float) -> bool:
    """True when a module's output error is beyond `tol` and it multiplied its input's."""
    if in_rel is None or not _beyond(out_rel, tol):
        return False
    if math.isnan(out_rel):
        return not math.isnan(in_rel)
    return out_rel > AMPLIFY * max(in_rel, tol)


def _rel(x: float) -> str:
    return "NaN/inf" if not math.isfinite(x) else f"{x:.2g}"


def blame(result: Comparison) -> Blame:
    """The amplifier, where the error crossed the tolerance, and one sentence for both."""
    tol = result.tolerance
    inputs = result.input_rel
    records: list[ProbeDiff] = list(result.records)
    crossed = next((r for r in records if _beyond(r.rel_diff, tol)), None)
    if crossed is None:
        return Blame(None, None, f"agrees with fp32 within {tol:g} relative at every probe")
    amp = next((r for r in records if amplified(r.rel_diff, inputs.get(r.name), tol)), None)
    last = records[-1]
    where = _where(crossed, inputs.get(crossed.name))
    if amp is None:
        return Blame(
            None,
            crossed.name,
            f"the error grew gradually (no module multiplied the relative error it was given "
            f"by more than {AMPLIFY:g}): it first exceeds {tol:g} at {crossed.name} ({where}) "
            f"and is {_rel(last.rel_diff)} at {last.name}",
        )
    inp = inputs[amp.name]
    message = (
        f"diverges at {amp.name}: its output's relative error {_rel(amp.rel_diff)} is "
        f"{_ratio(amp.rel_diff, inp)} its input's {_rel(inp)} (tolerance {tol:g}; "
        f"max |Δ| {amp.max_abs_diff:.3g})"
    )
    if crossed is not amp:
        message += f"; the error had crossed {tol:g} gradually before, at {crossed.name} ({where})"
    return Blame(amp.name, crossed.name, message)


def _where(r: ProbeDiff, in_rel: float | None) -> str:
    if in_rel is None:
        return f"relative error {_rel(r.rel_diff)}"
    return f"input {_rel(in_rel)} -> output {_rel(r.rel_diff)} relative"


def _ratio(out_rel: float, in_rel: float) -> str:
    if not math.isfinite(out_rel) or in_rel == 0:
        return "far beyond"
    return f"{out_rel / in_rel:.3g}x"
