"""`gpt-tui attach [PATH|PID|HOST:PORT]`: look into a training run that called
`gpt_tui.listen`.

It connects to the run's endpoint, waits for the next step boundary (the run pauses there),
prints the run's state, its health figures (and its watch's) and what `--do` asks for (each
reads the run and never changes it), then detaches and the run goes on. `--app` opens the
inspector on a copy of the live state; with `--allow-changes`, the tensors changed in that
copy are sent back at the end and the run applies them before it goes on.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any

from ..listener.wire import WireError, receive, receive_blob, send
from .arg_types import whole
from .attach_checks import DEFAULT_DEVICE, check_attach_args
from .attach_endpoint import connect, find_endpoint
from .common import UserError

if TYPE_CHECKING:
    from textual.app import App

OPS = ("state", "forward", "train-step")
CASE_LIMIT = 1 << 40  # a case file's size as the run announces it


def add_attach_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "target",
        nargs="?",
        help="the run's socket, process id, or HOST:PORT of its TCP endpoint "
        "(default: the only run listening)",
    )
    p.add_argument(
        "--do",
        action="append",
        choices=OPS[1:],
        default=[],
        help="also run the last batch forward, or a training step on a copy (repeatable)",
    )
    p.add_argument(
        "--rank", type=whole(0), metavar="N", help="under torchrun: the rank to attach to"
    )
    p.add_argument(
        "--token",
        help="a TCP endpoint's token (default: $GPT_TUI_ATTACH_TOKEN, which ps does not "
        "show to other users; a local run's is found on its own)",
    )
    p.add_argument("--wait", type=float, default=120.0, help="seconds to wait for a step boundary")
    p.add_argument(
        "--app",
        action="store_true",
        help="open the inspector on a copy of the run's state (its weights and last batch); "
        "the run waits until you quit",
    )
    p.add_argument(
        "--allow-changes",
        action="store_true",
        help="with --app: send the weights you changed in the copy back to the run, which "
        "applies them before it goes on (default: read-only)",
    )
    p.add_argument("--device", help=f"with --app: where the copy opens (default {DEFAULT_DEVICE})")
    p.add_argument("--meta", metavar="PATH", help="with --app: the run's nanoGPT meta.pkl")
    p.add_argument("--tokenizer", metavar="PATH", help="with --app: the run's tokenizer")
    p.add_argument("--json", action="store_true")


def cmd_attach(args: argparse.Namespace) -> int:
    return run_attach(args)


class _Client:
    """The connection, one request and its answer at a time."""

    def __init__(self, conn: socket.socket, reader: IO[bytes]) -> None:
        self.conn, self.reader = conn, reader

    def ask(self, op: str, **fields: Any) -> dict[str, Any]:
        send(self.conn, {"op": op, **fields})
        return receive(self.reader)


def run_attach(args: argparse.Namespace, run: Callable[[App], object] | None = None) -> int:
    """The command, with `run(app)` running the app of --app to its end (a test drives it
    with Pilot); by default the app runs in this process's terminal, which must be one.
    Everything checkable without the run is checked before connecting: that pauses it."""
    check_attach_args(args)
    if run is None:
        run = _in_terminal(args.app)
    endpoint = find_endpoint(args.target, args.rank, args.token)
    conn, reader = connect(endpoint, args.wait)
    client = _Client(conn, reader)
    answers: dict[str, Any] = {}
    refused = None
    try:
        first = receive(reader)
        if "error" in first:
            raise UserError(f"the run refused: {first['error']}")
        if not isinstance(first.get("attached"), dict):
            raise UserError(f"{endpoint} is not a gpt-tui run listening (it said {first!r:.60})")
        answers["state"] = first["attached"]
        answers["health"] = client.ask("health")
        for op in args.do:
            answers[op] = client.ask(op)
        if args.app:
            refused = _app_session(client, args, run, answers)
        client.ask("detach")  # the run has let go of this client
    except TimeoutError:
        raise UserError(f"the run reached no step boundary in {args.wait:g} s") from None
    except WireError as err:
        raise UserError(f"the run's connection broke: {err}") from None
    finally:
        reader.close()
        conn.close()
    if refused is not None:
        raise UserError(f"the run refused the changes, and goes on unchanged: {refused}")
    if args.json:
        print(json.dumps(answers, indent=2))
        return 0
    state = answers["state"]
    loss = "none yet" if state["loss"] is None else f"{state['loss']:.4f}"
    print(
        f"attached to pid {state['pid']} at step {state['step']}: last loss {loss}, batch "
        f"{' + '.join('×'.join(map(str, s)) for s in state['batch'])}, {state['model']} "
        f"({state['parameters']:,} parameters)"
    )
    for line in health_lines(answers["health"]):
        print(line)
    for op in args.do:
        print(f"{op}: " + ", ".join(f"{k} {_show(v)}" for k, v in answers[op].items()))
    for line in answers.get("changes", []):
        print(line)
    print("detached: the run goes on")
    return 0


def _in_terminal(app: bool) -> Callable[[App], object]:
    if app:
        from .app_cmd import require_terminal

        require_terminal(
            "gpt-tui attach --app",
            "to read the run without one, gpt-tui attach --do forward --do train-step "
            "(add --json for a script)",
        )
    return lambda app: app.run()


def health_lines(health: dict[str, Any]) -> list[str]:
    """The run's figures at the boundary, and its watch's when it has one."""
    run = health.get("run", {})
    losses = run.get("losses") or []
    parts = []
    if losses:
        parts.append(f"last {len(losses)} losses {min(losses):.4f}..{max(losses):.4f}")
    if "grad_norm" in run:
        parts.append(f"grad norm {run['grad_norm']:.4g}")
    parts.append(f"weight norm {run['weight_norm']:.4g}")
    bad = run.get("nonfinite_weights", 0) + run.get("nonfinite_grads", 0)
    parts.append("all finite" if not bad else f"{bad:,} non-finite weights and gradients")
    lines = ["health: " + ", ".join(parts)]
    watch = health.get("watch")
    if watch is not None:
        lines.append("watch: " + watch["summary"])
    return lines


def _app_session(
    client: _Client, args: argparse.Namespace, run: Callable, answers: dict[str, Any]
) -> str | None:
    """The inspector on the run's copy (the run waits, paused, until it ends); with
    --allow-changes, what changed in the copy is sent back. Returns the run's refusal."""
    header = client.ask("case")
    if "error" in header:
        raise UserError(f"the run could not write its state: {header['error']}")
    folder = Path(tempfile.mkdtemp(prefix="gpt-tui-attach-"))  # 0700
    try:
        _receive_case(client.reader, header["case"]["files"], folder)
        summary = header["case"]["summary"]
        answers["case"] = summary
        layout = client.ask("layout")["tensors"] if args.allow_changes else None
        print(f"paused: {summary}; q in the app detaches and the run goes on")
        changed = _open_app(folder, summary, args, run, answers["health"], layout is not None)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if layout is None:
        return None
    if not changed:
        answers["changes"] = ["changes: none made in the app: nothing sent"]
        return None
    blob = _tensor_file(changed, layout)
    send(client.conn, {"op": "apply", "bytes": len(blob)}, blob)
    answer = receive(client.reader)
    if "error" in answer:
        return answer["error"]
    answers["applied"] = answer["applied"]
    answers["changes"] = [
        f"applied in the run: {name} ({n:,} of {total:,} elements changed)"
        for name, n, total in answer["applied"]
    ]
    return None


def _receive_case(reader: IO[bytes], files: Any, folder: Path) -> None:
    """The case's files as the run sends them, each name checked to stay in `folder`."""
    if not isinstance(files, list) or not all(
        isinstance(f, list) and len(f) == 2 and isinstance(f[0], str) for f in files
    ):
        raise UserError("the run sent a malformed list of case files: refused")
    for name, size in files:
        parts = PurePosixPath(name).parts
        if not parts or PurePosixPath(name).is_absolute() or ".." in parts:
            raise UserError(f"the run sent a file named {name!r}: refused")
        path = folder.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(receive_blob(reader, size, CASE_LIMIT))


def _open_app(
    folder: Path,
    summary: str,
    args: argparse.Namespace,
    run: Callable,
    health: dict[str, Any],
    track: bool,
) -> dict[str, Any]:
    """Run the app on the case in `folder`; returns the tensors changed in the copy (when
    `track`), by name, as the app's model holds them."""
    from ..engine.training.watch_case import read_case
    from .app_cmd import case_app
    from .attach_changes import ChangeTracker

    tracker = ChangeTracker() if track else None
    app = case_app(
        read_case(folder),
        args.device or DEFAULT_DEVICE,
        meta=args.meta,
        tokenizer=args.tokenizer,
        notice="\n".join(health_lines(health)),
        on_open=tracker.opened if tracker else None,
    )
    run(app)
    if app.open_error:
        raise UserError(f"the run's copy could not be opened: {app.open_error}")
    return tracker.changed() if tracker else {}


def _tensor_file(changed: dict[str, Any], layout: dict[str, Any]) -> bytes:
    """The changed tensors, in the run's dtypes, as a torch tensor file."""
    import torch

    out = {}
    for name, tensor in changed.items():
        dtype = layout.get(name, [None, None])[1]
        want = getattr(torch, dtype.removeprefix("torch."), None) if dtype else None
        out[name] = tensor.to(want) if isinstance(want, torch.dtype) else tensor
    buffer = io.BytesIO()
    torch.save(out, buffer)
    return buffer.getvalue()


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return "(" + ", ".join(f"{k} {_show(v)}" for k, v in value.items()) + ")"
    return str(value)
