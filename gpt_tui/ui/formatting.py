"""Small number and shape formatters shared by the panes (no Textual, no torch)."""

from __future__ import annotations

import math

BAR_EIGHTHS = " ▏▎▍▌▋▊▉█"


def count(n: int) -> str:
    """A parameter count the way people say it: 10.75M, 590K, 1.56B, 384."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            value = n / scale
            return f"{value:.2f}{unit}" if value < 100 else f"{value:.1f}{unit}"
    return str(n)


def nbytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def shape(dims: tuple[int, ...] | None) -> str:
    if dims is None:
        return ""
    return "(" + ", ".join(map(str, dims)) + ")"


def num(x: float, width: int = 9) -> str:
    """A statistic in at most `width` characters; nan/inf spelled out."""
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    if 1e-3 <= abs(x) < 1e5:
        text = f"{x:.4f}"
        return text[:width].rstrip(".")
    return f"{x:.2e}"


def bar(fraction: float, width: int) -> str:
    """A horizontal bar of `width` cells filled to `fraction` (0..1), in eighths."""
    fraction = min(max(fraction, 0.0), 1.0) if math.isfinite(fraction) else 0.0
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    text = "█" * full + (BAR_EIGHTHS[part] if part else "")
    return text.ljust(width)


def printable_token(label: str) -> str:
    """A token label safe for one terminal cell run: newlines and tabs made visible."""
    return label.replace("\n", "⏎").replace("\t", "⇥").replace("\r", "␍")
