"""`gpt-tui attach [PATH|PID]`: look into a training run that called `gpt_tui.listen`.

It connects to the run's socket, waits for the next step boundary (the run pauses there),
prints the run's state and what `--do` asks for (each reads the run and never changes
it), then detaches and the run goes on.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import UserError

if TYPE_CHECKING:
    from textual.app import App

OPS = ("state", "forward", "train-step")


def add_attach_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "target", nargs="?", help="the run's socket or process id (default: the only one)"
    )
    p.add_argument(
        "--do",
        action="append",
        choices=OPS[1:],
        default=[],
        help="also run the last batch forward, or a training step on a copy (repeatable)",
    )
    p.add_argument("--rank", type=int, metavar="N", help="under torchrun: the rank to attach to")
    p.add_argument("--wait", type=float, default=120.0, help="seconds to wait for a step boundary")
    p.add_argument(
        "--app",
        action="store_true",
        help="open the inspector on a copy of the run's state (its weights and last batch); "
        "the run waits until you quit",
    )
    p.add_argument("--device", default="cpu", help="with --app: where the copy opens")
    p.add_argument("--meta", metavar="PATH", help="with --app: the run's nanoGPT meta.pkl")
    p.add_argument("--tokenizer", metavar="PATH", help="with --app: the run's tokenizer")
    p.add_argument("--json", action="store_true")


def find_socket(target: str | None, rank: int | None = None) -> Path:
    from ..listener import socket_folder

    folder = socket_folder()
    suffix = ".sock" if rank is None else f".rank{rank}.sock"
    if target is None:
        pattern = "*.sock" if rank is None else f"*{suffix}"
        found = sorted(p for p in folder.glob(pattern) if _alive(p.name.split(".")[0]))
        if len(found) != 1:
            what = "no run is listening" if not found else f"{len(found)} runs are listening"
            pids = ", ".join(p.stem for p in found)
            ranks = rank is None and any(".rank" in p.name for p in found)
            which = "a rank (gpt-tui attach --rank N)" if ranks else "its process id"
            raise UserError(
                f"{what} in {folder}{f' ({pids})' if pids else ''}: give {which} "
                "(gpt-tui attach PID); a run listens after gpt_tui.listen(model, optimizer=opt)"
            )
        return found[0]
    return folder / f"{target}{suffix}" if target.isdigit() else Path(target)


def _alive(pid: str) -> bool:
    """Whether the process that made a socket still runs (a killed run leaves its socket)."""
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _receive(reader: Any) -> dict[str, Any]:
    line = reader.readline()
    if not line:
        raise UserError("the run closed the connection")
    return json.loads(line)


def cmd_attach(args: argparse.Namespace) -> int:
    return run_attach(args, run=lambda app: app.run())


def run_attach(args: argparse.Namespace, run: Callable[[App], object]) -> int:
    """The command, with `run(app)` running the app of --app to its end (a test drives it
    with Pilot)."""
    if not (math.isfinite(args.wait) and args.wait > 0):
        raise UserError(f"--wait {args.wait:g}: give a number of seconds above 0")
    path = find_socket(args.target, args.rank)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(args.wait)
    try:
        conn.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError):
        conn.close()
        raise UserError(f"no run listens on {path}: is it still running?") from None
    except PermissionError:
        conn.close()
        raise UserError(f"{path} belongs to another user: attach as that user") from None
    answers: dict[str, Any] = {}
    try:
        reader = conn.makefile("r", encoding="utf-8")
        first = _receive(reader)
        if "error" in first:
            raise UserError(f"the run refused: {first['error']}")
        answers["state"] = first["attached"]
        for op in args.do:
            conn.sendall((json.dumps({"op": op}) + "\n").encode())
            answers[op] = _receive(reader)
        if args.app:
            conn.sendall(b'{"op": "case"}\n')
            answers["case"] = _open_app(_receive(reader), args, run)
        conn.sendall(b'{"op": "detach"}\n')
        _receive(reader)  # the run has let go of this client
    except TimeoutError:
        raise UserError(f"the run reached no step boundary in {args.wait:g} s") from None
    finally:
        conn.close()
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
    for op in args.do:
        print(f"{op}: " + ", ".join(f"{k} {_show(v)}" for k, v in answers[op].items()))
    print("detached: the run goes on")
    return 0


def _open_app(answer: dict[str, Any], args: argparse.Namespace, run: Callable) -> str:
    """The inspector on the run's copy; the run waits, paused, until it ends."""
    from ..engine.training.watch_case import read_case
    from .app_cmd import case_app

    if "error" in answer:
        raise UserError(f"the run could not write its state: {answer['error']}")
    print(f"paused: {answer['summary']}; q in the app detaches and the run goes on")
    app = case_app(read_case(answer["case"]), args.device, meta=args.meta, tokenizer=args.tokenizer)
    run(app)
    if app.open_error:
        raise UserError(f"the run's copy could not be opened: {app.open_error}")
    return answer["summary"]


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return "(" + ", ".join(f"{k} {_show(v)}" for k, v in value.items()) + ")"
    return str(value)
