"""Opening progress on the CLI: rich's progress bar on stderr, on a terminal only.

Piped or redirected stderr gets nothing, so scripts and `--json` output stay clean.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from ..models.progress import OpenProgress, ProgressFn


@contextlib.contextmanager
def open_progress(stream=None) -> Iterator[ProgressFn | None]:
    """A ProgressFn drawing one bar per phase on `stream` (stderr) if it is a TTY, else None."""
    stream = stream if stream is not None else sys.stderr
    if not stream.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

    bars = Progress(
        TextColumn("{task.description:<17}"),
        BarColumn(),
        TaskProgressColumn(),
        console=Console(file=stream),
        transient=True,
    )
    tasks: dict[str, int] = {}

    def show(event: OpenProgress) -> None:
        if event.phase not in tasks:
            tasks[event.phase] = bars.add_task(event.phase, total=event.total)
        bars.update(tasks[event.phase], completed=event.done, total=event.total)

    with bars:
        yield show


@contextlib.contextmanager
def working(message: str, stream=None) -> Iterator[None]:
    """`message` beside a spinner on stderr while a long measurement runs, on a terminal only.
    It is transient: once done, the report (or a one-line error) is all that stays."""
    stream = stream if stream is not None else sys.stderr
    if not stream.isatty():
        yield
        return
    from rich.console import Console
    from rich.text import Text

    console = Console(file=stream)
    text = Text(message)
    text.truncate(console.width - 2, overflow="ellipsis")  # one line beside the spinner
    with console.status(text):
        yield
