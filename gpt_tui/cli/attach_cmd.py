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
from pathlib import Path
from typing import Any

from .common import UserError

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
    p.add_argument("--wait", type=float, default=120.0, help="seconds to wait for a step boundary")
    p.add_argument("--json", action="store_true")


def find_socket(target: str | None) -> Path:
    from ..listener import socket_folder

    folder = socket_folder()
    if target is None:
        found = sorted(p for p in folder.glob("*.sock") if _alive(p.stem))
        if len(found) != 1:
            what = "no run is listening" if not found else f"{len(found)} runs are listening"
            pids = ", ".join(p.stem for p in found)
            raise UserError(
                f"{what} in {folder}{f' ({pids})' if pids else ''}: give its process id "
                "(gpt-tui attach PID); a run listens after gpt_tui.listen(model, optimizer=opt)"
            )
        return found[0]
    return folder / f"{target}.sock" if target.isdigit() else Path(target)


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
    if not (math.isfinite(args.wait) and args.wait > 0):
        raise UserError(f"--wait {args.wait:g}: give a number of seconds above 0")
    path = find_socket(args.target)
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


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return "(" + ", ".join(f"{k} {_show(v)}" for k, v in value.items()) + ")"
    return str(value)
