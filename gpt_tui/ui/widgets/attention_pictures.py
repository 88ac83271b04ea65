"""The attention pane's pictures: the colour ramp and its legend, all heads at a glance,
and the keys a query row looks at most."""

from __future__ import annotations

import numpy as np
from rich.style import Style
from rich.text import Text

# A dark-to-bright ramp (magma-like); probabilities are shown on a √p scale so that the
# small weights of long rows stay visible.
RAMP = [
    (0, 0, 4),
    (28, 16, 68),
    (79, 18, 123),
    (129, 37, 129),
    (181, 54, 122),
    (229, 80, 100),
    (251, 135, 97),
    (254, 194, 135),
    (252, 253, 191),
]
MASKED = (70, 10, 10)
ALLOWED = (90, 90, 90)


def ramp(p: float) -> tuple[int, int, int]:
    x = min(max(p, 0.0), 1.0) ** 0.5 * (len(RAMP) - 1)
    i = min(int(x), len(RAMP) - 2)
    t = x - i
    a, b = RAMP[i], RAMP[i + 1]
    return (
        round(a[0] + (b[0] - a[0]) * t),
        round(a[1] + (b[1] - a[1]) * t),
        round(a[2] + (b[2] - a[2]) * t),
    )


def rgb(c: tuple[int, int, int]) -> str:
    return f"#{c[0]:02x}{c[1]:02x}{c[2]:02x}"


def legend_text(mode: str, cells: int = 6) -> Text:
    """What the colours mean: the ramp with ticks at p = 0, .25 and 1 (the colours are
    spaced evenly in √p, so .25 sits in the middle), and the mask's colours where the
    mode shows them."""
    text = Text(no_wrap=True)
    if mode != "mask":
        text.append("p 0 ", style="dim")
        for i in range(2 * cells):
            if i == cells:
                text.append(" .25 ", style="dim")
            text.append("█", style=Style(color=rgb(ramp(((i + 0.5) / (2 * cells)) ** 2))))
        text.append(" 1", style="dim")
    if mode != "pattern":
        if mode == "mask":
            text.append("█", style=Style(color=rgb(ALLOWED)))
            text.append(" may attend ", style="dim")
        else:
            text.append("  ")
        text.append("█", style=Style(color=rgb(MASKED)))
        text.append(" masked", style="dim")
    return text


def _spans(n: int, cells: int) -> list[tuple[int, int]]:
    """The matrix range each of `cells` cells covers: whole repeats of each index when
    n <= cells (every row / column equally tall / wide), else near-equal pools."""
    if n <= cells:
        per = cells // n
        return [(i // per, i // per + 1) for i in range(n * per)]
    edges = np.linspace(0, n, cells + 1).astype(int)
    return [(int(a), int(max(b, a + 1))) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def overview_text(weights: np.ndarray, width: int, cell: int = 12, current: int = -1) -> Text:
    """All heads as small multiples, left to right and wrapped to `width`, each labelled
    with its number (the `current` head highlighted): each head max-pooled to at most
    `cell` columns and `cell` rows (two rows per line), every query row equally tall."""
    n_head, tq, tk = weights.shape
    rows, cols = _spans(tq, cell), _spans(tk, cell)
    if len(rows) % 2:
        rows.append((tq, tq))  # an empty lower half on the last line
    grid_w = len(cols)
    per_row = max(1, (width + 2) // (grid_w + 2))

    def pooled(h: int) -> np.ndarray:
        out = np.zeros((len(rows), grid_w), dtype=np.float32)
        for i, (r0, r1) in enumerate(rows):
            for j, (c0, c1) in enumerate(cols):
                block = weights[h, r0:r1, c0:c1]
                out[i, j] = float(block.max()) if block.size else 0.0
        return out

    text = Text()
    for start in range(0, n_head, per_row):
        heads = list(range(start, min(n_head, start + per_row)))
        grids = [pooled(h) for h in heads]
        for h in heads:
            style = "bold reverse" if h == current else "bold"
            text.append(f"head {h}"[:grid_w], style=style)
            text.append(" " * (grid_w + 2 - min(grid_w, len(f"head {h}"))))
        text.append("\n")
        for line in range(len(rows) // 2):
            for grid in grids:
                for j in range(grid_w):
                    up, lo = ramp(grid[2 * line, j]), ramp(grid[2 * line + 1, j])
                    text.append("▀", style=Style(color=rgb(up), bgcolor=rgb(lo)))
                text.append("  ")
            text.append("\n")
    return text


def top_keys(row: np.ndarray, k: int = 3) -> list[tuple[int, float]]:
    """The `k` keys a query row attends to most: (key index, probability), largest first."""
    order = np.argsort(-row, kind="stable")[:k]
    return [(int(i), float(row[i])) for i in order if row[i] > 0]
