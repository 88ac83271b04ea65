"""gpt-tui inside the user's own script: `gpt_tui.watch(model)` and `gpt_tui.inspect(model)`.

import gpt_tui

with gpt_tui.watch(model, optimizer=optimizer) as watch:
    for step in range(max_iters):
        logits, loss = model(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

gpt_tui.inspect(model, x)  # the debugger on the live model; returns when you quit
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn as nn

from .engine.training.watch import Finding, NonFiniteError, Watch
from .engine.training.watch_ranks import rank_folder, write_ranks_case
from .engine.training.watch_report import run_tokenizer, write_case
from .errors import GptTuiError, tell, with_only

if TYPE_CHECKING:
    from textual.app import App

    from .engine.debugger import Debugger
    from .listener import Listener

OnFinding = Literal["raise", "report", "open"]
LISTEN_OPTIONS = {"path", "tcp", "host", "allow_remote", "every"}
LEAVE_GRACE_S = 0.05  # after the barrier that ends a watched block under torchrun


class NoTerminalError(GptTuiError):
    """The debugger needs an interactive terminal, and this process has none."""


def has_terminal() -> bool:
    """Textual reads keys from stdin and draws on stderr: stdout may be piped (`| tee log`)."""
    err = sys.__stderr__
    return sys.stdin.isatty() and err is not None and err.isatty()


def _require_terminal(what: str) -> None:
    if not has_terminal():
        raise NoTerminalError(
            f"{what} opens the debugger, which needs an interactive terminal, and this "
            "process has none (a batch job or a pipe): use gpt_tui.watch(model, "
            "on='report') and open the report later"
        )


class WatchHandle:
    """What `watch` yields: the finding once there is one, and `close()`."""

    def __init__(
        self,
        model: nn.Module,
        *,
        optimizer: torch.optim.Optimizer | None,
        every: int,
        on: OnFinding,
        report: str | Path | None,
        tokenizer: Any = None,
    ) -> None:
        if on not in ("raise", "report", "open"):
            raise GptTuiError(f"on={on!r}: one of 'raise', 'report', 'open'")
        if report is not None and not isinstance(report, (str, Path)):
            raise GptTuiError(f"report={report!r}: give a folder (a str or Path), or None")
        self.model, self.optimizer, self.on = model, optimizer, on
        self.tokenizer = tokenizer
        self.report = None if report is None else Path(report)
        self.listener: Listener | None = None  # with listen=: gpt-tui attach's endpoint
        self._watch = Watch(model, self._found, optimizer=optimizer, every=every)
        # A finding made off the main thread, whose app opens once its error reaches `watch`.
        self._deferred: tuple[Finding, tuple[Any, ...], str | None] | None = None
        for note in self._watch.notes:
            tell(self._prefix + note)

    @property
    def _prefix(self) -> str:
        group = self._watch.group
        return "gpt-tui: " if group is None else f"gpt-tui (rank {group[0]}): "

    @property
    def finding(self) -> Finding | None:
        return self._watch.finding

    def close(self) -> None:
        try:
            self._watch.close()
        finally:
            if self._deferred is not None:  # its error was caught inside the block: say it
                finding, _, warning = self._deferred
                self._deferred = None
                self._say(finding, warning)

    def leave_together(self) -> None:
        """Under a process group, the ranks leave a block that ended normally through one
        barrier. DDP's all-reduce launched in backward holds a Python object (the context
        torch stashes for backward); gloo's worker drops it after the work ends, taking the
        GIL. Were the script to exit first, that thread would meet interpreter shutdown and
        abort the process ("terminate called without an active exception"). Waiting in the
        barrier releases the GIL to it. The watch's exchange after each checked update did
        the same, but after a finding under on="report" there is none."""
        dist = torch.distributed
        if self._watch.group is None or not dist.is_initialized():
            return
        try:
            dist.barrier()
        except RuntimeError as err:  # a peer gone: its own error says why, not ours
            tell(f"{self._prefix}warning: the ranks could not leave the watch together: {err}")
            return
        # The barrier may run on another gloo worker than the last all-reduce: a short
        # wait with the GIL released lets that one finish too (it needs microseconds).
        time.sleep(LEAVE_GRACE_S)

    def health(self) -> dict[str, Any]:
        """The watch's figures, as `gpt-tui attach` shows them."""
        w = self._watch
        finding = w.finding
        every = "every step" if w.every == 1 else f"one step in {w.every}"
        micro = f", {w.micro_steps} micro-steps a step" if (w.micro_steps or 1) > 1 else ""
        rank = "" if w.group is None else f" on rank {w.group[0]} of {w.group[1]}"
        found = "no non-finite value so far" if finding is None else finding.summary
        return {
            "summary": f"checks {every}{rank}, at step {w.step}{micro}: {found}",
            "step": w.step,
            "every": w.every,
            "micro_steps": w.micro_steps,
            "compiled": w.compiled,
            "finding": None if finding is None else finding.summary,
        }

    def _found(self, finding: Finding, batch: tuple[Any, ...]) -> None:
        group = self._watch.group
        written = None
        if self.report is not None:
            # Under torchrun every rank writes its own case, and rank 0 the top case.json.
            folder = self.report if group is None else rank_folder(self.report, group[0])
            before = self._watch.before_update if finding.phase == "optimizer" else None
            written = write_case(
                folder, self._watch.model, finding, batch, self.optimizer,
                meta=self.tokenizer, before=before,
            )  # fmt: skip
            if group is not None and group[0] == 0:
                failed = write_ranks_case(self.report, finding, group[1])
                if failed:
                    tell(f"{self._prefix}warning: {failed}")
            if written.path is not None:
                finding = dataclasses.replace(
                    finding, report=str(written.path), command=written.command
                )
                self._watch.finding = finding
        self._watch.before_update = None  # the case has it: its memory goes back to the run
        warning = None if written is None else written.error
        # Under torchrun every rank would open its own app in one terminal: raise instead.
        terminal = group is None and has_terminal()
        if self.on == "open" and terminal:
            if threading.current_thread() is not threading.main_thread():
                # A CUDA backward runs the hooks in autograd's device thread, and the app
                # needs the main thread: the error goes there first, and `watch` opens it.
                self._deferred = (finding, batch, warning)
                raise self._error(finding, warning)
            self._open(finding, batch)  # the summary follows, on the screen the app gives back
        self._say(finding, warning)
        if self.on == "open" and not terminal:
            why = "no terminal" if group is None else "one terminal for every rank"
            tell(f"{self._prefix}{why}: raising instead of opening the debugger")
        if self.on in ("raise", "open"):
            # After the app too: the step stops before the optimizer applies a NaN.
            raise self._error(finding, warning)

    def open_deferred(self) -> None:
        """The app of a finding made off the main thread, once its error has reached the
        loop's thread (`watch` calls it there), then the summary."""
        if self._deferred is None:
            return
        finding, batch, warning = self._deferred
        self._deferred = None
        if threading.current_thread() is threading.main_thread():
            self._open(finding, batch)
        else:
            tell(f"{self._prefix}the debugger opens only in the main thread: not opened")
        self._say(finding, warning)

    def _say(self, finding: Finding, warning: str | None) -> None:
        tell(self._prefix + finding.summary)
        if warning is not None:
            tell(f"{self._prefix}warning: {warning}")

    @staticmethod
    def _error(finding: Finding, warning: str | None) -> NonFiniteError:
        error = NonFiniteError(finding)
        if warning is not None:
            error.add_note(warning)
        return error

    def _open(self, finding: Finding, batch: tuple[Any, ...]) -> None:
        """The app on the model and the finding's batch, the finding its note on opening."""
        tensors = [t for t in batch if isinstance(t, torch.Tensor)]
        idx, targets = (tensors + [None, None])[:2]
        note = f"gpt_tui.watch stopped your run: {finding.summary}"
        try:
            run_inspector(
                self.model, idx, tokenizer=run_tokenizer(self._watch.model, self.tokenizer),
                targets=targets, notes=(note,),
                batch_name=f"your batch of {finding.when}", run=lambda app: app.run(),
            )  # fmt: skip
        except GptTuiError as err:  # the finding still raises, below
            tell(f"{self._prefix}cannot open the debugger: {err}")


@with_only("gpt_tui.watch")
@contextmanager
def watch(
    model: nn.Module,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    every: int = 1,
    on: OnFinding = "raise",
    report: str | Path | None = "gpt-tui-report",
    tokenizer: Any = None,
    listen: bool | dict[str, Any] = False,
) -> Iterator[WatchHandle]:
    """Watch a training loop for its first non-finite value (see `engine/training/watch.py`).

    At the first one it names the phase (forward, loss, backward, optimizer) and the
    module, saves a reproducible case into a new folder inside `report` (`report/latest`
    names it; None: no report; a report that cannot be written is a warning), then acts on `on`:
    "raise" raises `NonFiniteError` from inside the step (before the optimizer's update
    when the NaN arose in forward, loss or backward), "report" goes on, "open" opens the
    debugger on the model and that batch when a terminal is present (not under torchrun),
    the finding its note, and raises as "raise" does once you quit (without one: at once).
    The hooks are removed when the block ends. `tokenizer` (a meta.pkl's path or a
    `CharTokenizer`) is saved with the case, so that its batch reads as text.

    Given `optimizer`, steps are counted as the loop counts them: the optimizer's step
    ends one, and the forwards between two steps are its micro-steps (gradient
    accumulation). Under torchrun (torch.distributed initialised, `optimizer` needed) the
    ranks agree at each checked step on the first finding, act together (raise on every
    rank), and write one case per rank into `report/rank<N>/`. A DDP-wrapped or compiled
    model is watched inside (a compiled one recompiles once, and says so).

    `listen=True` also opens `gpt_tui.listen`'s endpoint (optimizer needed), whose
    `gpt-tui attach` shows the watch's figures too; a dict gives listen's keyword
    arguments (`{"tcp": 7000}`). The handle's `listener` is then that listener.
    """
    if not isinstance(listen, (bool, dict)) or (
        isinstance(listen, dict) and not set(listen) <= LISTEN_OPTIONS
    ):
        raise GptTuiError(
            f"listen={listen!r}: True, or a dict of gpt_tui.listen's arguments "
            f"({', '.join(sorted(LISTEN_OPTIONS))})"
        )
    handle = WatchHandle(
        model, optimizer=optimizer, every=every, on=on, report=report, tokenizer=tokenizer
    )
    try:
        if listen is False:
            yield handle
            handle.leave_together()
            return
        if optimizer is None:
            raise GptTuiError("watch(..., listen=True) needs optimizer=: its step is where "
                              "the loop pauses for gpt-tui attach")  # fmt: skip
        from .listener import listen as open_endpoint

        options = {} if listen is True else listen
        with open_endpoint(model, optimizer=optimizer, watch_health=handle.health,
                           **options) as listener:  # fmt: skip
            handle.listener = listener
            yield handle
        handle.leave_together()
    except NonFiniteError:
        handle.open_deferred()
        raise
    finally:
        handle.close()


def inspect(
    model: nn.Module,
    idx: torch.Tensor | None = None,
    *,
    tokenizer: Any = None,
    targets: torch.Tensor | None = None,
) -> None:
    """Open the debugger on the live model, in this process; return when the user quits.

    `idx` (B, T) is the batch, its first row the prompt. The model keeps its device and
    dtype. On return everything is as it was: the parameters bit-identical, the training
    flag and grad mode restored, every hook removed, no thread left behind.
    """
    _require_terminal("gpt_tui.inspect")
    run_inspector(model, idx, tokenizer=tokenizer, targets=targets, run=lambda app: app.run())


def _inspect_tokenizer(model: nn.Module, tokenizer: Any) -> Any:
    """A meta.pkl path read as its char vocabulary; none given: the `data/*/meta.pkl` of the
    model's size that nanoGPT's train.py reads from this folder, if there is one."""
    from .io.batches import read_meta

    if tokenizer is None:
        return run_tokenizer(model, None)
    if not isinstance(tokenizer, (str, Path)):
        return tokenizer
    return read_meta(Path(tokenizer))  # a file it cannot read: one line naming it


def run_inspector(
    model: nn.Module,
    idx: torch.Tensor | None,
    *,
    tokenizer: Any,
    targets: torch.Tensor | None = None,
    run: Callable[[App], object],
    notes: Sequence[str] = (),
    batch_name: str = "your batch",
) -> None:
    """`inspect` without the terminal check: `run(app)` runs the app to its end (a test
    drives it with Textual's Pilot). `notes` are shown as the app opens; `batch_name`
    is what the Train tab calls the batch."""
    from .engine.core.live_session import live_session
    from .engine.core.session import ModelSpec
    from .io.batches import FixedBatch
    from .ui.app import GptTuiApp

    grad_mode, training = torch.is_grad_enabled(), model.training
    threads = set(threading.enumerate())
    session, prompt = live_session(model, idx, tokenizer=_inspect_tokenizer(model, tokenizer))
    session.notes.extend(notes)

    def setup(debugger: Debugger) -> None:
        if prompt:
            debugger.set_prompt(prompt)
        if idx is not None and targets is not None:  # the Train tab steps the user's batch
            x, y = (t if t.dim() == 2 else t[None] for t in (idx, targets))
            debugger.set_batch(FixedBatch(x, y, session.decode_token, batch_name))

    try:
        run(GptTuiApp(ModelSpec(), session=session, setup=setup))
    finally:
        session.close()
        model.train(training)
        torch.set_grad_enabled(grad_mode)
    for thread in set(threading.enumerate()) - threads:
        thread.join(timeout=10)  # the app's workers end with it: nothing outlives the call


__all__ = ["NonFiniteError", "NoTerminalError", "Finding", "watch", "inspect"]
