"""Numbers, shapes and bytes as people read them: shared by the CLI and the panes."""

from __future__ import annotations

import math

BAR_EIGHTHS = " ▏▎▍▌▋▊▉█"
# Where the stepper is paused, in the tree and the stats rows (▶ is the tree's "collapsed").
PAUSED_MARK = "→ "


def count(n: int) -> str:
    """A parameter count the way people say it: 10.75M, 590K, 1.56B, 384."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            value = n / scale
            return f"{value:.2f}{unit}" if value < 100 else f"{value:.1f}{unit}"
    return str(n)


def nbytes(n: float) -> str:
    """Bytes in binary units, named as such: 3.1 MiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def shape(dims: tuple[int, ...] | None) -> str:
    if dims is None:
        return ""
    return "(" + ", ".join(map(str, dims)) + ")"


def short_shape(dims: tuple[int, ...] | None) -> str:
    """A shape for narrow columns: `1×6×128` (`(1, 6, 128)` takes four more cells)."""
    if dims is None:
        return ""
    return "×".join(map(str, dims)) if dims else "()"


def _short_exponent(text: str) -> str:
    """`4.75e-04` -> `4.75e-4`, `1.5e+03` -> `1.5e3`."""
    mantissa, _, exponent = text.partition("e")
    if not exponent:
        return text
    sign = "-" if exponent.startswith("-") else ""
    return f"{mantissa}e{sign}{exponent.lstrip('+-').lstrip('0') or '0'}"


def num(x: float, width: int = 8) -> str:
    """A statistic in at most `width` (>= 7) characters, three significant digits where
    they fit: 0.111, -0.00311, 4.75e-4, 1.51e3; nan/inf spelled out."""
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    for spec in (".3g", ".2e", ".2g", ".1e"):
        text = _short_exponent(format(x, spec))
        if len(text) <= width:
            return text
    return _short_exponent(f"{x:.0e}")


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


# What the prompt box shows for characters a one-line input cannot hold, and back.
_PROMPT_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\t": "\\t"}
_PROMPT_UNESCAPES = {v: k for k, v in _PROMPT_ESCAPES.items()}


def escape_prompt(text: str) -> str:
    r"""A prompt as one line: a backslash, newline and tab written as \\, \n, \t, any other
    character a terminal cannot show (a control character) as \xNN, \uNNNN or \UNNNNNNNN."""
    return "".join(_PROMPT_ESCAPES.get(ch, ch if ch.isprintable() else _code(ch)) for ch in text)


def _code(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


_HEX_ESCAPES = {"\\x": 2, "\\u": 4, "\\U": 8}  # the digits each takes


def unescape_prompt(line: str) -> str:
    r"""The prompt a line means: \n a newline, \t a tab, \\ a backslash, \xNN, \uNNNN and
    \UNNNNNNNN the character of that code; any other backslash stays as typed."""
    out, i = [], 0
    while i < len(line):
        pair = line[i : i + 2]
        digits = line[i + 2 : i + 2 + _HEX_ESCAPES.get(pair, 0)]
        if pair in _PROMPT_UNESCAPES:
            out.append(_PROMPT_UNESCAPES[pair])
            i += 2
        elif pair in _HEX_ESCAPES and (code := _code_point(digits, _HEX_ESCAPES[pair])) is not None:
            out.append(chr(code))
            i += 2 + len(digits)
        else:
            out.append(line[i])
            i += 1
    return "".join(out)


def _code_point(digits: str, count: int) -> int | None:
    """The code `count` hex digits write, or None (too few, not hex, beyond Unicode)."""
    if len(digits) != count or not all(c in "0123456789abcdefABCDEF" for c in digits):
        return None
    code = int(digits, 16)
    return code if code <= 0x10FFFF else None
