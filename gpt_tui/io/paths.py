"""The checks every path argument shares: a folder given for a file is named as a folder
(not "no such file"), with what to give instead; an output folder that is a file is caught
before any work is done."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import GptTuiError


class PathError(GptTuiError):
    """A path argument names the wrong kind of thing, or nothing; one line with the fix."""


def check_file(
    value: str | os.PathLike[str],
    flag: str,
    want: str,
    inside: tuple[str, ...] = (),
    error: type[GptTuiError] = PathError,
) -> Path:
    """The existing file `flag` names, else `error`. A folder is `FLAG DIR is a folder, not a
    file`, with the first of `inside` it holds as the fix (`use --meta DIR/meta.pkl`), else
    `want` (`give a text file`)."""
    path = Path(value).expanduser()
    if path.is_dir():
        found = next((path / name for name in inside if (path / name).is_file()), None)
        fix = f"use {flag} {found}" if found is not None else f"give {want}"
        raise error(f"{flag} {value} is a folder, not a file: {fix}")
    if not path.is_file():
        raise error(f"{flag} {value}: no such file (give {want})")
    return path


def check_out_folder(value: str | os.PathLike[str], flag: str = "--out") -> Path:
    """A folder that may be written, made if missing: checked before the work that fills it.
    A file at the path (or at a folder above it) is named; nothing is created."""
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise PathError(
            f"{flag} {value} is a file, not a folder: give a folder (it is made if missing)"
        )
    above = path
    while not above.exists():
        above = above.parent
    if not above.is_dir():
        raise PathError(f"{flag} {value}: {above} is a file, so no folder can be made inside it")
    if not os.access(above, os.W_OK | os.X_OK):
        raise PathError(f"{flag} {value}: {above} is not writable; give a folder you can write to")
    return path
