"""What `gpt-tui attach` checks before it connects. A connection pauses the run at its next
step boundary, so every mistake that can be found without the run is said first (one line,
exit status 2), and the run never waits for it."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..errors import GptTuiError, describe_error
from .common import UserError

APP_ONLY = ("device", "meta", "tokenizer")  # they say how the app opens the run's copy
DEFAULT_DEVICE = "cpu"  # the copy's device: the run's own GPU memory is in use


def check_attach_args(args: argparse.Namespace) -> None:
    """Raise UserError for the first argument that is wrong whatever the run is."""
    if not (math.isfinite(args.wait) and args.wait > 0):
        raise UserError(f"--wait {args.wait:g}: give a number of seconds above 0")
    if not args.app:
        if args.allow_changes:
            raise UserError("--allow-changes sends what you change in the app: give --app too")
        for name in APP_ONLY:
            if getattr(args, name) is not None:
                raise UserError(
                    f"--{name} says how the app opens the run's copy: give --app too, or "
                    f"drop --{name}"
                )
        return
    if args.meta is not None and args.tokenizer is not None:
        raise UserError("--meta and --tokenizer both name a vocabulary; give only one")
    from ..engine.core.session import resolve_device

    resolve_device(args.device or DEFAULT_DEVICE)  # e.g. cuda on a machine without one
    if args.meta is not None:
        _check_vocabulary("--meta", args.meta, folder=False)
    if args.tokenizer is not None:
        _check_vocabulary("--tokenizer", args.tokenizer, folder=True)


def _check_vocabulary(flag: str, value: str, *, folder: bool) -> None:
    """The file is there and reads as a vocabulary (whether it fits the run's model is
    known only once the copy opens)."""
    from ..io.tokenizer_files import load_tokenizer_file, load_tokenizer_path

    path = Path(value).expanduser()
    if not (path.exists() if folder else path.is_file()):
        raise UserError(f"{flag} {value}: no such file{' or folder' if folder else ''}")
    try:
        (load_tokenizer_path if folder else load_tokenizer_file)(path)
    except GptTuiError as err:
        message = describe_error(err)
        where = "" if path.name in message else f" {value}"
        raise UserError(f"{flag}{where}: {message}") from None
