"""`gpt-tui serve`: the same inspector in a web browser, through textual-serve.

Each browser connection starts its own `gpt-tui` app process on the model arguments given
here. Whoever drives that app can run code (a `--model-file` is imported; expressions are
evaluated at line pauses), so serve binds to the loopback interface unless `--allow-remote`
says otherwise, and every request needs the launch's token and the server's own Host and
Origin (serve_guard). docs/security.md tells the whole story.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

from .common import UserError, model_spec

DEFAULT_PORT = 8000
DEFAULT_MAX_CLIENTS = 2
DEFAULT_IDLE = 1800.0


def port(text: str) -> int:
    """An argparse type: a TCP port, 1..65535."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a whole number from 1 to 65535, not {text!r}")
    return int(text)


def clients(text: str) -> int:
    """An argparse type: how many app processes may run at once, 1..64."""
    if not text.isdigit() or not 1 <= int(text) <= 64:
        raise argparse.ArgumentTypeError(f"a whole number from 1 to 64, not {text!r}")
    return int(text)


def seconds(text: str) -> float:
    """An argparse type: a timeout in seconds; 0 for none."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"seconds, 0 or more (0: no timeout), not {text!r}")
    return value


def add_serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=port, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host other than this machine's loopback (anyone who reaches the port "
        "with the token drives the app)",
    )
    p.add_argument(
        "--token",
        metavar="TEXT",
        help="the token every request needs (default: a new random one each launch, "
        "printed in the URL)",
    )
    p.add_argument(
        "--max-clients",
        type=clients,
        default=DEFAULT_MAX_CLIENTS,
        metavar="N",
        help=f"app processes at once, one per browser tab (default {DEFAULT_MAX_CLIENTS}; "
        "each holds the model)",
    )
    p.add_argument(
        "--idle-timeout",
        type=seconds,
        default=DEFAULT_IDLE,
        metavar="SECONDS",
        help=f"end a tab's app after this long without input (default {DEFAULT_IDLE:g}; 0: never)",
    )


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
    from ..engine.core.session import check_spec

    check_spec(model_spec(args))  # a mistyped preset or path: one line now, not per browser
    try:
        from . import serve_server
        from .serve_guard import (
            WILDCARDS,
            Guard,
            allowed_names,
            check_token,
            is_loopback,
            new_token,
            url_host,
        )
    except ImportError:
        raise UserError("gpt-tui serve needs textual-serve: pip install textual-serve") from None
    remote = not is_loopback(args.host)
    if remote and not args.allow_remote:
        raise UserError(
            f"--host {args.host} is not this machine's loopback: anyone who can reach it "
            "would drive the app; add --allow-remote if that is what you want"
        )
    token = new_token() if args.token is None else check_token(args.token)
    sock = serve_server.bind(args.host, args.port)  # a busy port: one line, before the banner
    bound = sock.getsockname()[1]
    guard = Guard(token=token, port=bound, names=frozenset(allowed_names(args.host)))
    shown = socket.gethostname() if args.host in WILDCARDS else args.host
    url = f"http://{url_host(shown)}:{bound}"
    if remote:
        print(
            f"gpt-tui: warning: serving on {args.host}:{bound}: anyone who can reach this "
            "port and has the token drives the app (and the code it runs)",
            file=sys.stderr,
        )
    idle = args.idle_timeout or None

    def banner() -> None:
        print(f"Serving gpt-tui on {url}/?token={token}", flush=True)
        print(
            f"  one app per browser tab, at most {args.max_clients} at once"
            + (f"; a tab idle for {idle:g} s is closed" if idle else "")
            + "\n  Ctrl+C to stop",
            flush=True,
        )

    argv = [sys.executable, "-m", "gpt_tui.cli.serve_child", str(os.getpid()), *app_argv(args)]
    server = serve_server.GuardedServer(
        argv,
        guard=guard,
        public_url=url,
        max_clients=args.max_clients,
        idle_timeout=idle,
        banner=banner,
    )
    server.serve_on(sock)
    return 0
