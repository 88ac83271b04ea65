"""How commands print: rich tables on a terminal, plain aligned columns when piped, JSON
with --json. A terminal narrower than 120 columns gets the narrow layouts (fewer columns,
shorter names), so every table reads at 80.

Rich decides what a terminal is: a TTY, or `TTY_COMPATIBLE=1` / `FORCE_COLOR`, at the width
of `COLUMNS` when set; that is also how the tests render an 80-column terminal.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..engine.core.trace import FINITE_ONLY
from ..formatting import short_shape

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from ..engine.core.trace import AttentionPattern, ProbeRecord

NARROW_BELOW = 120  # columns


def console() -> Console:
    from rich.console import Console

    class PipeConsole(Console):
        def on_broken_pipe(self) -> None:
            # rich exits with status 1 here; the reader leaving (`| head`) is no failure:
            # the command's handler ends with status 0.
            raise BrokenPipeError

    terminal = PipeConsole(highlight=False)
    if terminal.is_terminal:
        return terminal
    # Piped output is for reading in files and scripts: wide enough that names never wrap.
    return PipeConsole(highlight=False, width=200)


def is_terminal() -> bool:
    return console().is_terminal


def narrow() -> bool:
    """An 80-column terminal: tables drop the less used columns and the common prefix."""
    out = console()
    return out.is_terminal and out.width < NARROW_BELOW


def table(title: str | None = None) -> Table:
    """A rich table: light rules on a terminal, plain aligned columns when piped."""
    from rich import box
    from rich.table import Table

    style = box.SIMPLE_HEAD if is_terminal() else None
    return Table(title=title, box=style, pad_edge=False, show_edge=False)


def print_json(data: Any) -> None:
    from ..engine.core.trace import to_jsonable

    json.dump(to_jsonable(data), sys.stdout, indent=2)
    sys.stdout.write("\n")


def plural(n: int, word: str, many: str | None = None) -> str:
    """`1 window`, `3 windows`, `1,024 tokens`."""
    return f"{n:,} {word if n == 1 else many or word + 's'}"


def fmt_count(n: int) -> str:
    return f"{n:,}"


def fmt_stat(x: float) -> str:
    """At most 8 characters: 0.0481, -3.9e-04, 1.23e+05."""
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
        return f"{x:.1e}"
    return f"{x:.3g}"


def stats_table(title: str, records: Iterable[ProbeRecord]) -> Table:
    """Probe records in execution order; on a narrow terminal the columns that answer
    "what shape?" and "where is the NaN?" come first and rarely used ones are left out."""
    is_narrow = narrow()
    out = table(title)
    cols = ["name", "shape", "NaN", "Inf", "mean", "std", "min", "max"]
    if not is_narrow:
        cols += ["abs-max", "rms", "zero"]
    for col in cols:
        out.add_column(
            col,
            justify="left" if col in ("name", "shape") else "right",
            no_wrap=col != "name",
            overflow="fold",
        )
    for r in records:
        st = r.stats
        bad = "[bold red]" if not st.finite else ""
        stat = (lambda _x: "-") if r.device == "meta" else fmt_stat  # meta: shapes only
        name = r.name.removeprefix("transformer.") if is_narrow else r.name
        if r.phase == "in":
            name += " (in)"
        values = {
            "name": ("  " * max(0, r.depth - 2) if not is_narrow else "") + name,
            "shape": short_shape(r.shape),
            "NaN": f"{bad}{st.nan_count}",
            "Inf": f"{bad}{st.inf_count}",
            "mean": stat(st.mean),
            "std": stat(st.std),
            "min": stat(st.min),
            "max": stat(st.max),
            "abs-max": stat(st.abs_max),
            "rms": stat(st.rms),
            "zero": "-" if r.device == "meta" else f"{st.zero_frac:.0%}",
        }
        out.add_row(*(values[c] for c in cols))
        if not st.finite and r.device != "meta":
            out.caption = f"rows with NaN or Inf: {FINITE_ONLY}"
    return out


def pattern_table(pattern: AttentionPattern, tokens: tuple[str, ...]) -> Table:
    """Per head: where the last query looks most, and how spread out its attention is."""
    from ..engine.analysis.attention import head_summaries

    w = pattern.weights  # (nh, Tq, Tk)
    out = table(
        f"{pattern.name}: {w.shape[0]} heads, {w.shape[1]}×{w.shape[2]}, "
        f"max |W·V − y| = {pattern.max_abs_error:.2e}"
    )
    for col in ("head", "last query looks at", "weight", "mean entropy (nats)", "diag share"):
        out.add_column(col, justify="left" if col == "last query looks at" else "right")
    for s in head_summaries(pattern):
        k = s.last_query_argmax
        out.add_row(
            str(s.head),
            f"{k}: {tokens[k] if k < len(tokens) else k}",
            f"{s.last_query_weight:.3f}",
            f"{s.mean_entropy:.3f}",
            f"{s.diagonal_share:.3f}",
        )
    return out
