"""What every command that opens a model shares: the user-error type and the session."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..errors import GptTuiError

if TYPE_CHECKING:
    from ..engine.core.session import ModelSpec, Session
    from ..engine.debugger import Debugger


class UserError(GptTuiError):
    """A problem with what the user asked for; printed as one line, exit status 2."""


def model_spec(args: argparse.Namespace) -> ModelSpec:
    from ..engine.core.session import ModelSpec

    return ModelSpec(
        config=args.config,
        arch=args.arch,
        overrides=list(args.overrides),
        checkpoint=args.checkpoint,
        meta=args.meta,
        tokenizer=args.tokenizer,
        sample=args.sample,
        model_file=args.model_file,
        model_class=args.model_class,
        config_class=args.config_class,
        device=args.device,
        dtype=args.dtype,
        seed=args.seed,
    )


# Notes said on stderr once the command has run (`say_notes`): a mistake it meets on the
# way is then still the one line it prints.
_NOTES: list[str] = []


def say_notes() -> None:
    """Print the notes the command left, once each, and forget them."""
    notes = list(dict.fromkeys(_NOTES))
    _NOTES.clear()
    for note in notes:
        print(f"gpt-tui: note: {note}", file=sys.stderr)


def drop_notes() -> None:
    _NOTES.clear()


def open_session(args: argparse.Namespace, reads_text: bool = True) -> Session:
    """The command's model; one note on stderr, when the command has run, when text is
    read through a guessed or fallback tokenizer (`reads_text` False: the command shows no
    text, or says it itself)."""
    from ..engine.core.session import Session
    from .open_progress import open_progress

    with open_progress() as progress:
        session = Session.open(model_spec(args), progress)
    if reads_text and session.tokenizer_note:
        _NOTES.append(session.tokenizer_note)
    return session


def open_debugger(args: argparse.Namespace, prompt: str) -> Debugger:
    """The same Debugger the app drives, on the command's model and prompt."""
    from ..engine.debugger import Debugger

    debugger = Debugger(open_session(args), seed=args.seed)
    try:
        debugger.set_prompt(prompt)
    except BaseException:
        debugger.close()
        raise
    return debugger


def require_weights(session: Session, what: str) -> None:
    if session.device.type == "meta":
        raise UserError(f"{what} needs real weights; --device meta has none (use cpu or cuda)")


def json_notes(session: Session, notes: Iterable[str | None]) -> list[str]:
    """A --json output's notes: the tokenizer note (said on stderr too) first."""
    return [n for n in (session.tokenizer_note, *notes) if n]
