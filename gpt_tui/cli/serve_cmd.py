"""`gpt-tui serve`: the same inspector in a web browser, through textual-serve.

Each browser connection starts its own `gpt-tui` app process on the model arguments given
here. Whoever reaches the port drives that app, and the app can run code (a `--model-file`
is imported; expressions are evaluated at line pauses), so it binds to the loopback
interface unless `--allow-remote` says otherwise.
"""

from __future__ import annotations

import argparse
import ipaddress
import shlex
import sys
from pathlib import Path

from .common import UserError, model_spec

DEFAULT_PORT = 8000


def port(text: str) -> int:
    """An argparse type: a TCP port, 1..65535."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a whole number from 1 to 65535, not {text!r}")
    return int(text)


def add_serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=port, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host other than this machine's loopback (anyone who reaches the port "
        "drives the app)",
    )


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def app_argv(args: argparse.Namespace) -> list[str]:
    """The model arguments again, for the app process each connection starts."""
    argv: list[str] = []
    paths = {"checkpoint", "meta", "tokenizer", "model_file"}
    for name in (
        "config", "arch", "checkpoint", "meta", "tokenizer", "sample", "model_file",
        "model_class", "config_class", "device", "dtype",
    ):  # fmt: skip
        value = getattr(args, name)
        if value is not None:
            value = str(Path(value).expanduser().resolve()) if name in paths else value
            argv += [f"--{name.replace('_', '-')}", str(value)]
    for override in args.overrides:
        argv += ["--set", override]
    return argv + ["--seed", str(args.seed)]


def cmd_serve(args: argparse.Namespace) -> int:
    from ..engine.session import check_spec

    check_spec(model_spec(args))  # a mistyped preset or path: one line now, not per browser
    if not is_loopback(args.host):
        if not args.allow_remote:
            raise UserError(
                f"--host {args.host} is not this machine's loopback: anyone who can reach it "
                "would drive the app; add --allow-remote if that is what you want"
            )
        print(
            f"gpt-tui: warning: serving on {args.host}:{args.port}: anyone who can reach this "
            "port drives the app (and the code it runs)",
            file=sys.stderr,
        )
    try:
        from textual_serve.server import Server
    except ImportError:
        raise UserError("gpt-tui serve needs textual-serve: pip install textual-serve") from None
    command = shlex.join([sys.executable, "-m", "gpt_tui", *app_argv(args)])
    Server(command, host=args.host, port=args.port, title="gpt-tui").serve()
    return 0
