"""The parser class every command uses (a mistake is one line, exit status 2) and the
argparse types that check a number's range."""

from __future__ import annotations

import argparse
import difflib
import math
from collections.abc import Callable, Sequence
from typing import NoReturn

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse, except that a mistake prints one line naming it and where help is."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self._words = list(args or [])  # for error(): a misspelt option is the likelier fault
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        message = self._misspelt_option() or " ".join(message.split())
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")

    def _misspelt_option(self) -> str | None:
        """`--promt`: an unknown option close to a known one (argparse's suggest_on_error)."""
        known = [s for action in self._actions for s in action.option_strings]
        for word in getattr(self, "_words", []):
            flag = word.split("=", 1)[0]
            if not flag.startswith("--") or any(k.startswith(flag) for k in known):
                continue  # not an option, or one argparse accepts (abbreviations too)
            close = difflib.get_close_matches(flag, known, n=1)
            if close:
                return f"unknown option {flag} (did you mean {close[0]}?)"
        return None


def whole(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be {low} or more, not {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high}, not {value}")
        return value

    return parse


def real(low: float, *, above: bool = False, high: float | None = None) -> Callable[[str], float]:
    """An argparse type: a finite number >= low (> low with `above`) and <= high."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, not {text}")
        if value < low or (above and value == low):
            raise argparse.ArgumentTypeError(
                f"must be {'above' if above else 'at least'} {low:g}, not {text}"
            )
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high:g}, not {text}")
        return value

    return parse


SEED = whole(0, 2**63 - 1)
